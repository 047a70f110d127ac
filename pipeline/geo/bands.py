"""Sentinel-2 L2A band facts shared by every stage: names, native resolutions and their ratio
to the 10 m input, the ×4 scale to the 2.5 m product, asset aliases."""

from __future__ import annotations

from dataclasses import dataclass

#: Output pixel size in metres.
RESOLUTION = 2.5
#: Input pixel size in metres (the 10 m bands).
INPUT_RESOLUTION = 10.0
#: Super-resolution factor from input to output.
SCALE = 4


@dataclass(frozen=True)
class Band:
    name: str
    resolution: int  # native ground sampling distance in metres
    wavelength_um: float
    common_name: str | None
    aliases: tuple[str, ...]  # asset keys used by the common catalogs


BANDS: dict[str, Band] = {
    b.name: b
    for b in (
        Band("B01", 60, 0.443, "coastal", ("B01", "coastal", "b01")),
        Band("B02", 10, 0.490, "blue", ("B02", "blue", "b02")),
        Band("B03", 10, 0.560, "green", ("B03", "green", "b03")),
        Band("B04", 10, 0.665, "red", ("B04", "red", "b04")),
        Band("B05", 20, 0.704, "rededge", ("B05", "rededge1", "b05")),
        Band("B06", 20, 0.740, "rededge", ("B06", "rededge2", "b06")),
        Band("B07", 20, 0.783, "rededge", ("B07", "rededge3", "b07")),
        Band("B08", 10, 0.842, "nir", ("B08", "nir", "b08")),
        Band("B8A", 20, 0.865, "nir08", ("B8A", "nir08", "b8a")),
        Band("B09", 60, 0.945, "nir09", ("B09", "nir09", "b09")),
        Band("B11", 20, 1.610, "swir16", ("B11", "swir16", "b11")),
        Band("B12", 20, 2.190, "swir22", ("B12", "swir22", "b12")),
    )
}

#: The 12 L2A reflectance bands in the order used everywhere in the product.
REFLECTANCE_BANDS: tuple[str, ...] = tuple(BANDS)

#: The bands of the RGB diffusion stage, in the DiffFuSR order (red, green, blue).
RGB_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
#: Their positions in REFLECTANCE_BANDS.
RGB_INDEX: list[int] = [REFLECTANCE_BANDS.index(b) for b in RGB_BANDS]

#: Scene classification layer: asset aliases and the classes masked as not clear.
SCL_ALIASES: tuple[str, ...] = ("SCL", "scl")
SCL_NO_DATA, SCL_SATURATED, SCL_CLOUD_SHADOW = 0, 1, 3
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 8, 9, 10, 11

#: Each band's native pixel size in 10 m input pixels (1, 2 or 6).
NATIVE_RATIO: dict[str, int] = {b: int(BANDS[b].resolution // INPUT_RESOLUTION) for b in BANDS}
#: The coarsest native pixel, in 10 m pixels (60 m): the lattice every tile and block follows.
MAX_RATIO = max(NATIVE_RATIO.values())

#: The bands of each native resolution (10, 20, 60 m), in product order.
BANDS_BY_RESOLUTION: dict[int, tuple[str, ...]] = {
    res: tuple(b for b in REFLECTANCE_BANDS if BANDS[b].resolution == res) for res in (10, 20, 60)
}
#: The bands the fusion makes, all but the RGB stage's, in product order; and those of each
#: native resolution.
FUSED_BANDS: tuple[str, ...] = tuple(b for b in REFLECTANCE_BANDS if b not in RGB_BANDS)
FUSED_BY_RESOLUTION: dict[int, tuple[str, ...]] = {
    res: tuple(b for b in bands if b not in RGB_BANDS) for res, bands in BANDS_BY_RESOLUTION.items()
}


def validate_bands(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return the names in product order, or raise ValueError naming the unknown ones."""
    unknown = [n for n in names if n not in BANDS]
    if unknown:
        raise ValueError(f"unknown band(s) {', '.join(unknown)}; choose from {' '.join(BANDS)}")
    return tuple(b for b in REFLECTANCE_BANDS if b in names)

"""HR patch sources: an image folder (local and fsspec), and the Sentinel-2 Wald composite."""

from datetime import date
from pathlib import Path

import fsspec
import numpy as np
import pystac
import pytest
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rasterio.windows import from_bounds

from pipeline.demo import DEMO_CATALOG
from pipeline.errors import NoScenesError, UserError
from pipeline.geo.aoi import read_aoi
from pipeline.train.sources import FolderSource, SentinelWaldSource, TrainingDataError, augment

DEMO_AOI = Path(__file__).resolve().parents[1] / "examples" / "demo.geojson"
DATES = (date(2023, 1, 1), date(2023, 2, 1))

# PNGs have no georeferencing, and need none
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write(path: Path, data: np.ndarray, driver: str = "GTiff", **profile) -> None:
    with rasterio.open(
        path,
        "w",
        driver=driver,
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        **profile,
    ) as ds:
        ds.write(data)


def png_bytes(data: np.ndarray) -> bytes:
    with MemoryFile() as mem:
        with mem.open(
            driver="PNG",
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype,
        ) as ds:
            ds.write(data)
        return mem.read()


def windows_of(image: np.ndarray, patch: int) -> list[np.ndarray]:
    h, w = image.shape[1:]
    return [
        image[:, y : y + patch, x : x + patch]
        for y in range(h - patch + 1)
        for x in range(w - patch + 1)
    ]


def is_window_of(patch: np.ndarray, image: np.ndarray) -> bool:
    return any(np.array_equal(patch, w) for w in windows_of(image, patch.shape[-1]))


@pytest.fixture
def images(tmp_path):
    """A folder with an 8-bit RGB PNG and a 4-band uint16 GeoTIFF (in a subfolder)."""
    rows = np.random.default_rng(1)
    png = rows.integers(128, 256, size=(3, 40, 44), dtype=np.uint8)
    tif = rows.integers(0, 5000, size=(4, 36, 38), dtype=np.uint16)
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(png_bytes(png))
    write(
        tmp_path / "sub" / "b.TIF",
        tif,
        crs="EPSG:32632",
        transform=from_origin(500000, 5000000, 10, 10),
    )
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path, png, tif


def test_folder_source_reads_png_and_uint16_geotiff_with_their_scales(images):
    folder, png, tif = images
    source = FolderSource(str(folder), patch=32)
    assert [Path(f).name for f in source.files] == ["a.png", "b.TIF"]
    patches = source.sample(40, rng())
    assert patches.shape == (40, 3, 32, 32) and patches.dtype == np.float32
    from_png = [p for p in patches if p.min() >= 128 / 255 - 1e-6]
    from_tif = [p for p in patches if p.max() <= 0.5]
    assert from_png and from_tif and len(from_png) + len(from_tif) == 40
    png_scaled = (png / 255).astype(np.float32)
    tif_scaled = (tif[:3] / 10000).astype(np.float32)  # first three bands, /10000
    assert all(is_window_of(p, png_scaled) for p in from_png)
    assert all(is_window_of(p, tif_scaled) for p in from_tif)


def test_folder_source_bands_scale_and_seed(images):
    folder, png, tif = images
    swapped = FolderSource(str(folder / "sub"), patch=20, bands=(3, 2, 1), scale=1 / 5000)
    reference = np.clip(tif[[2, 1, 0]] / 5000, 0, 1).astype(np.float32)
    assert all(is_window_of(p, reference) for p in swapped.sample(4, rng()))
    source = FolderSource(str(folder), patch=16)
    np.testing.assert_array_equal(source.sample(5, rng(3)), source.sample(5, rng(3)))
    assert not np.array_equal(source.sample(5, rng(3)), source.sample(5, rng(4)))


def test_folder_source_on_an_fsspec_url():
    fs = fsspec.filesystem("memory")
    image = np.random.default_rng(2).integers(0, 256, size=(3, 24, 30), dtype=np.uint8)
    fs.pipe("/train-images/x/tile.png", png_bytes(image))
    try:
        source = FolderSource("memory://train-images", patch=24)
        patches = source.sample(3, rng())
        assert all(is_window_of(p, (image / 255).astype(np.float32)) for p in patches)
    finally:
        fs.rm("/train-images", recursive=True)


def test_folder_source_draws_no_window_touching_nodata(tmp_path):
    data = np.full((3, 32, 64), 1000, dtype=np.uint16)
    data[:, :, :30] = 0  # nodata west of column 30: only windows from column 30 on are clean
    write(tmp_path / "half.tif", data, nodata=0)
    patches = FolderSource(str(tmp_path), patch=32).sample(10, rng())
    np.testing.assert_array_equal(patches, np.float32(0.1))
    write(tmp_path / "half.tif", np.zeros((3, 32, 64), np.uint16), nodata=0)
    with pytest.raises(TrainingDataError, match="no 32 px window without nodata"):
        FolderSource(str(tmp_path), patch=32, max_tries=5).sample(1, rng())


def test_folder_source_errors_are_one_clear_line(tmp_path, images):
    folder, _, _ = images
    cases = [
        (lambda: FolderSource(str(tmp_path / "missing")), "image folder not found"),
        (lambda: FolderSource(str(folder), patch=64), "smaller than the 64 px patch"),
        (lambda: FolderSource(str(folder), 32, bands=(1, 2, 4)), "has 3 band"),
        (lambda: FolderSource(str(folder), bands=(1, 2)), "three bands"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((lambda: FolderSource(str(tmp_path / "empty")), "no .tif, .tiff, .png image"))
    gray = tmp_path / "gray"
    gray.mkdir()
    (gray / "g.png").write_bytes(png_bytes(np.zeros((1, 40, 40), np.uint8)))
    cases.append((lambda: FolderSource(str(gray), patch=32), "has 1 band"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.tif").write_bytes(b"not a tiff")
    cases.append((lambda: FolderSource(str(broken)), "cannot read image"))
    for make, message in cases:
        with pytest.raises((TrainingDataError, ValueError), match=message) as err:
            make()
        assert "\n" not in str(err.value)
    assert issubclass(TrainingDataError, UserError)


def test_augment_applies_one_of_the_eight_symmetries_per_patch():
    patches = np.random.default_rng(0).random((64, 3, 8, 8)).astype(np.float32)
    out = augment(patches, rng(1))
    np.testing.assert_array_equal(out, augment(patches, rng(1)))
    for before, after in zip(patches, out, strict=True):
        symmetries = [
            np.rot90(b, k, axes=(-2, -1)) for k in range(4) for b in (before, before[..., ::-1])
        ]
        assert any(np.array_equal(after, s) for s in symmetries)
    assert not np.array_equal(out, patches)


@pytest.fixture(scope="module")
def demo_aoi():
    return read_aoi(str(DEMO_AOI))


@pytest.fixture(scope="module")
def wald(demo_aoi):
    return {
        split: SentinelWaldSource(str(DEMO_CATALOG), demo_aoi, *DATES, patch=48, split=split)
        for split in ("train", "test")
    }


def test_wald_source_on_the_demo_catalog_yields_clear_rgb_reflectance(wald):
    source = wald["train"]
    assert source.epsg == 32719
    assert source.image.shape[0] == 3
    patches = source.sample(16, rng())
    assert patches.shape == (16, 3, 48, 48) and patches.dtype == np.float32
    assert np.isfinite(patches).all() and patches.min() >= 0 and patches.max() <= 1
    np.testing.assert_array_equal(patches, source.sample(16, rng()))
    assert 0.02 < patches.mean() < 0.4


def test_both_sides_of_the_cut_from_one_composite_are_those_made_apart(wald, demo_aoi):
    """The training command's pair: one search and composite for both, the same windows."""
    train, test = SentinelWaldSource.train_and_test(
        str(DEMO_CATALOG), demo_aoi, *DATES, patches=(48, 48)
    )
    assert train.image is test.image
    for made, apart in ((train, wald["train"]), (test, wald["test"])):
        assert (made.split, made.columns, made.bounds) == (apart.split, apart.columns, apart.bounds)
        np.testing.assert_array_equal(made.sample(8, rng()), apart.sample(8, rng()))


def test_wald_patches_are_the_clear_pixels_of_the_scenes(wald):
    """The demo ground never changes, so a clear pixel of any date is the composite's value."""
    source = wald["train"]
    item = pystac.read_file(
        str(
            DEMO_CATALOG.parent
            / "sentinel-2-l2a-demo"
            / "S2_L2A_DEMO_20230110_N0301"
            / "S2_L2A_DEMO_20230110_N0301.json"
        )
    )  # baseline 03.01: reflectance = DN / 10000
    folder = Path(item.get_self_href()).parent
    with rasterio.open(folder / "B04.tif") as ds:
        rows, cols = from_bounds(*source.bounds, ds.transform).round_offsets().toslices()
    bands = []
    for name in ("B04", "B03", "B02"):  # R, G, B
        with rasterio.open(folder / f"{name}.tif") as ds:
            bands.append(ds.read(1)[rows, cols].astype(np.float32) / 10000)
    with rasterio.open(folder / "SCL.tif") as ds:
        scl = ds.read(1).repeat(2, axis=0).repeat(2, axis=1)  # 20 m -> 10 m
    clear = np.isin(scl[rows, cols], (4, 5, 6))
    truth = np.stack(bands)
    p = source.patch
    for y, x in source.windows(8, rng(5)):
        seen = clear[y : y + p, x : x + p]
        assert seen.any()
        np.testing.assert_allclose(
            source.image[:, y : y + p, x : x + p][:, seen],
            truth[:, y : y + p, x : x + p][:, seen],
            atol=1e-6,
        )


def test_wald_train_and_test_windows_never_overlap(wald):
    train, test = wald["train"], wald["test"]
    width = train.image.shape[2]
    cut = train.columns[1]
    assert train.columns == (0, cut) and test.columns == (cut, width)
    assert cut == round(width * 0.75)
    p = train.patch
    train_x = train.windows(500, rng(1))[:, 1]
    test_x = test.windows(500, rng(1))[:, 1]
    assert (train_x + p <= cut).all() and (test_x >= cut).all()
    assert (test_x + p <= width).all()
    assert len(set(train_x)) > 10  # draws spread over the area


def test_wald_source_errors(demo_aoi):
    stac = str(DEMO_CATALOG)
    with pytest.raises(TrainingDataError, match="no cloud-free 128 px window in the test part"):
        SentinelWaldSource(stac, demo_aoi, *DATES, patch=128, split="test")
    with pytest.raises(NoScenesError):
        SentinelWaldSource(stac, demo_aoi, date(2020, 1, 1), date(2020, 2, 1))
    with pytest.raises(ValueError, match="split must be"):
        SentinelWaldSource(stac, demo_aoi, *DATES, split="validation")
    with pytest.raises(ValueError, match="test_fraction"):
        SentinelWaldSource(stac, demo_aoi, *DATES, test_fraction=1.0)

"""Band fusion against the baselines on held-out real Sentinel-2 (the demo's test strip).

    python -m benchmarks.fusion_wald [--weights W.safetensors] [--test-fraction 0.25]
        [--blur-sigma 0.39] [--threads 1] [--out benchmarks/results/fusion-wald-demo.json]

The data is the demo's 12-band clear-sky composite at 10 m on the 60 m lattice, cut as fusion
training cuts it: only the eastern ``--test-fraction`` of its columns, never sampled in
training, is scored, cropped to whole 240 m cells (24 px at 10 m) of clear pixels
(``pipeline.evaluation.data.held_out_strip``). In the demo B02 B03 B04 B08 B11 B12 are real
Sentinel-2 and B01 B05 B06 B07 B8A B09 are synthetic (derived from the real ones); every
table says which is which, as the demo catalog labels its assets.

* Wald (reduced resolution, ``pipeline.protocol.wald.wald_trial``): every band is degraded by
  4 from its native grid (``pipeline.protocol.sensor.degrade``: Gaussian of σ = blur-sigma · 4
  native pixels, then 4 × 4 mean) and laid on a 40 m grid the way the models read a 10 m block
  (20 m bands repeated over 2 × 2 pixels, 60 m ones over 6 × 6), so the networks see their
  training ratios (×4, ×8, ×24) one scale up. The real 10 m B04 B03 B02 stand in for the
  2.5 m super-resolved RGB. Each model's output at 10 m, averaged onto each band's native
  grid, is scored against that native grid.
* No-reference (full resolution, the paper's; ``no_reference_trial``): the strip itself is
  the input, the guide the bicubic ×4 RGB stage; the 2.5 m output, averaged over each band's
  native footprint, is scored against the input. The guarantee makes this exact by
  construction, so the fusion model is also run without it.

Scores per band group (``fusion_metrics``, data range 1 reflectance) for the learned fusion
with and without the guarantee, Gram–Schmidt and bicubic. Prints markdown tables, writes a
JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import write_json
from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.errors import UserError
from pipeline.evaluation.benchmark import run_trial
from pipeline.evaluation.data import band_labels, held_out_strip
from pipeline.evaluation.report import cell
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import FUSED_BANDS, NATIVE_RATIO, REFLECTANCE_BANDS, RGB_INDEX
from pipeline.geo.grid import LATTICE
from pipeline.inputs.catalog import search
from pipeline.inputs.memory import sentinel_composite
from pipeline.models import FusionModel, get_fusion_model, get_rgb_model
from pipeline.models.fusion.model import DEMO_WEIGHTS
from pipeline.plain import plain
from pipeline.protocol.scores import FUSION_METRICS, SCORED, SSIM_WINDOW
from pipeline.protocol.sensor import BLUR_SIGMA
from pipeline.protocol.wald import FusionTrial, no_reference_trial, wald_trial

#: Column headings of the tables.
HEADINGS = {
    "r2": "R²",
    "cross_correlation": "CC",
    "ssim": "SSIM",
    "psnr": "PSNR dB",
    "mse": "MSE",
    "ergas": "ERGAS",
}
#: Table title and what the protocol does, by protocol.
PROTOCOLS = {
    "wald": (
        "Wald",
        "reduced resolution: every band degraded ×4 from its native grid, the real "
        "10 m RGB as the guide (the 2.5 m super-resolved RGB one scale up), the output "
        "averaged onto each native grid against the strip's own native grid",
    ),
    "no_reference": (
        "No reference",
        "full resolution: the strip as the input, the bicubic ×4 "
        "RGB stage as the guide, the 2.5 m output averaged over each native "
        "footprint against the input",
    ),
}
NOTES = (
    "10 m group: B08 only; B04 B03 B02 are the guide itself, which every model returns unchanged.",
    "No reference: the guarantee makes difffusr-fusion exact by construction (only float "
    "rounding is left); the row without it shows what the networks alone keep of the input.",
    "PSNR and SSIM with data range 1 (reflectance); ERGAS h/l as stated above each table.",
    "Synthetic bands are derived from the real ones in the demo: only the real bands' scores "
    "say something about real imagery.",
)
NARROW_NOTE = (
    "SSIM n/a: the strip's {grids} narrower than SSIM's "
    f"{SSIM_WINDOW}-pixel window; the other metrics are unaffected."
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--weights",
        help="fusion weights (default: the shipped demo fusion weights; "
        "without any, the learned rows are skipped)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.25,
        help="eastern fraction of the composite held out from training (default 0.25)",
    )
    p.add_argument(
        "--blur-sigma",
        type=float,
        default=BLUR_SIGMA,
        help=f"Gaussian σ of the degradation per unit of ratio (default {BLUR_SIGMA})",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch (default 1)")
    p.add_argument("--out", default="benchmarks/results/fusion-wald-demo.json")
    return p.parse_args()


def default_weights() -> str | None:
    """The packaged demo fusion weights, if this install has them."""
    return DEMO_WEIGHTS if Path(DEMO_WEIGHTS).is_file() else None


def strip_where(image: np.ndarray, test_fraction: float) -> tuple[np.ndarray, dict[str, Any]]:
    """The held-out strip of the composite (``held_out_strip``) and where it lies in it."""
    try:
        strip, cut = held_out_strip(image, test_fraction)
    except UserError as err:
        raise SystemExit(str(err)) from None
    (top, left), (height, width) = strip.origin, strip.bands.shape[1:]
    return strip.bands, {
        "cut_column": cut,
        "row": top,
        "column": left,
        "height": height,
        "width": width,
        "composite_height": image.shape[1],
        "composite_width": image.shape[2],
        "native_grids": {
            f"{r} m": [height // NATIVE_RATIO[bands[0]], width // NATIVE_RATIO[bands[0]]]
            for r, bands in SCORED.items()
        },
    }


def fusion_models(weights: str | None) -> dict[str, FusionModel]:
    """The rows of every table: the learned fusion with and without the guarantee (when
    there are weights), then the baselines."""
    models: dict[str, FusionModel] = {}
    if weights:
        for label, consistent in (
            ("difffusr-fusion", True),
            ("difffusr-fusion, no guarantee", False),
        ):
            models[label] = get_fusion_model(
                "difffusr-fusion", weights=weights, device="cpu", consistent=consistent
            )
    models["gram-schmidt"] = get_fusion_model("gram-schmidt")
    models["bicubic"] = get_fusion_model("bicubic")
    return models


def run_protocol(
    name: str, models: dict[str, FusionModel], trial: FusionTrial, labels: dict[str, str]
) -> dict[str, Any]:
    """Every model on one trial, scored; one progress line per model."""
    rows = {}
    for label, model in models.items():
        _, groups, seconds = run_trial(model, trial, labels)
        rows[label] = {"seconds": seconds, "groups": groups}
        print(f"{name}: {label} ({seconds:.1f} s)", flush=True)
    return rows


def run_protocols(
    models: dict[str, FusionModel],
    strip: np.ndarray,
    origin: tuple[int, int],
    sigma: float,
    labels: dict[str, str],
) -> dict[str, Any]:
    """Wald: the truth is the strip's own native grids, which the models never see (ERGAS
    h/l 1/4 in every group). No reference: the 2.5 m output, its guide the bicubic RGB stage,
    must average back to the strip it came from (h/l 2.5 m over the native pixel)."""
    rgb = get_rgb_model("bicubic")(strip[RGB_INDEX], origin)
    return {
        "wald": run_protocol("wald", models, wald_trial(strip, (0, 0), sigma), labels),
        "no_reference": run_protocol(
            "no reference", models, no_reference_trial(strip, rgb, origin), labels
        ),
    }


def print_tables(protocol: str, rows: dict[str, Any], labels: dict[str, str]) -> None:
    """One model × metric table per group, then the PSNR of every band."""
    title, description = PROTOCOLS[protocol]
    print(f"\n## {title}: {description}")
    for group, first in next(iter(rows.values()))["groups"].items():
        bands = ", ".join(f"{b} ({labels[b]})" for b in first["bands"])
        print(f"\n{title}, {group}: {bands}; ERGAS h/l = 1/{round(1 / first['ergas_ratio'])}\n")
        print("| model | " + " | ".join(HEADINGS[m] for m in FUSION_METRICS) + " |")
        print("|---|" + "---:|" * len(FUSION_METRICS))
        for label, row in rows.items():
            values = row["groups"][group]["mean"]
            print(f"| {label} | " + " | ".join(cell(m, values[m]) for m in FUSION_METRICS) + " |")
    print(f"\n{title}, PSNR dB per band\n")
    print("| model | " + " | ".join(FUSED_BANDS) + " |")
    print("|---|" + "---:|" * len(FUSED_BANDS))
    print("| data | " + " | ".join(labels[b] for b in FUSED_BANDS) + " |")
    for label, row in rows.items():
        psnr = {
            b: v
            for g in row["groups"].values()
            for b, v in zip(g["bands"], g["per_band"]["psnr"], strict=True)
        }
        print(f"| {label} | " + " | ".join(cell("psnr", psnr[b]) for b in FUSED_BANDS) + " |")


def notes(where: dict[str, Any]) -> list[str]:
    """The caveats to print under the tables (the SSIM one only when it applies)."""
    narrow = [
        f"{name} grid ({h} × {w} px)"
        for name, (h, w) in where["native_grids"].items()
        if min(h, w) < SSIM_WINDOW
    ]
    verb = "is" if len(narrow) == 1 else "are"
    return [
        *NOTES,
        *([NARROW_NOTE.format(grids=f"{' and '.join(narrow)} {verb}")] if narrow else []),
    ]


def demo_strip(test_fraction: float) -> tuple[dict[str, str], np.ndarray, dict[str, Any]]:
    """The demo's band labels, its held-out strip and where that lies; says so."""
    aoi = read_aoi(str(DEMO_AOI))
    labels = band_labels(search(str(DEMO_CATALOG), aoi, *DEMO_DATES).items)
    composite = sentinel_composite(
        str(DEMO_CATALOG), aoi, *DEMO_DATES, REFLECTANCE_BANDS, lattice=LATTICE
    )
    strip, where = strip_where(composite.image, test_fraction)
    print(
        f"held-out strip: rows {where['row']}–{where['row'] + where['height']}, columns "
        f"{where['column']}–{where['column'] + where['width']} of the "
        f"{where['composite_height']} × {where['composite_width']} px composite "
        f"(training cut at column {where['cut_column']}): {where['height']} × "
        f"{where['width']} px at 10 m",
        flush=True,
    )
    return labels, strip, where


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    weights = args.weights or default_weights()
    if not weights:
        print(
            f"no --weights and no {Path(DEMO_WEIGHTS).name} in the package: "
            "skipping the learned rows"
        )
    labels, strip, where = demo_strip(args.test_fraction)
    models = fusion_models(weights)
    results = run_protocols(models, strip, (where["row"], where["column"]), args.blur_sigma, labels)
    for protocol, rows in results.items():
        print_tables(protocol, rows, labels)
    caveats = notes(where)
    print("\n" + "\n".join(f"* {line}" for line in caveats))
    learned = models.get("difffusr-fusion")
    result = {
        "settings": {
            **vars(args),
            "weights": weights,
            "data_range": 1.0,
            "device": "cpu",
            "threads": torch.get_num_threads(),
        },
        "weights_sha256": learned.weights_sha256 if learned else None,
        "bands": labels,
        "strip": where,
        "protocols": {k: v[1] for k, v in PROTOCOLS.items()},
        "notes": caveats,
        "results": results,
    }
    print()
    write_json(args.out, plain(result, strict=True))


if __name__ == "__main__":
    main()

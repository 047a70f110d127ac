"""The product's verdict: the rule on constructed summaries, then a product made with a model
known to be bad (the command's last line, the root attributes, the STAC Item, a resumed run)
against the demo made with the baselines."""

import json
import shutil

import xarray as xr

from pipeline.quality.layers import FLAGGED_FRACTION_LIMIT, risk_rule
from pipeline.quality.verdict import (
    HALLUCINATION_RISK,
    NOT_ASSESSED,
    OK,
    verdict,
    warning_line,
)
from tests.products import BAD_FUSION, SMALL_AOI, region, write


def summary(fraction: float | None) -> dict:
    """A product quality summary as ``QualitySummary`` makes it, with the verdict."""
    means = (
        {}
        if fraction is None
        else {
            "mean_consistency": 0.0312,
            "mean_spectral_angle": 6.24,
            "hallucination_risk_fraction": fraction,
        }
    )
    base = {"tiles_planned": 2, "tiles_done": 2, "tiles_failed": 0, **means}
    return {**base, **verdict(base)}


def test_the_verdict_turns_above_the_limit():
    assert FLAGGED_FRACTION_LIMIT == 0.05 and "flagged_fraction_limit" not in risk_rule()
    at = summary(FLAGGED_FRACTION_LIMIT)
    assert at["verdict"] == OK and warning_line(at) is None
    assert at["verdict_reason"] == (
        "5 % of the product's pixels are flagged as hallucination risk (limit 5 %)"
    )
    assert summary(0.0)["verdict"] == OK
    over = summary(0.234)
    assert over["verdict"] == HALLUCINATION_RISK
    assert warning_line(over) == (
        "warning: 23.4 % of the product's pixels are flagged as hallucination risk "
        "(limit 5 %), mean consistency 0.031, spectral angle 6.2°: see docs/quality.md"
    )


def test_a_product_without_data_is_not_assessed_and_not_warned_about():
    empty = summary(None)
    assert empty["verdict"] == NOT_ASSESSED and warning_line(empty) is None


def stac_item(out) -> dict:
    return json.loads((out / "stac" / "item.json").read_text())


def check_warned(done, out) -> None:
    """Exit 0 (every tile written), the warning the last line of stderr, and the summary's
    verdict in the root attributes and the STAC Item."""
    assert done.returncode == 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    quality = xr.open_zarr(out).attrs["quality_summary"]
    assert quality["verdict"] == HALLUCINATION_RISK
    assert quality["hallucination_risk_fraction"] > FLAGGED_FRACTION_LIMIT
    assert last == warning_line(quality)
    assert last.startswith(f"warning: {quality['verdict_reason']}, mean consistency ")
    properties = stac_item(out)["properties"]
    assert properties["s2sr:quality"] == quality
    assert properties["s2sr:quality_verdict"] == HALLUCINATION_RISK
    assert properties["s2sr:hallucination_risk_fraction"] == quality["hallucination_risk_fraction"]


def test_a_bad_model_ends_the_run_with_a_warning(flagged_product):
    out, done = flagged_product
    assert f"fusion={BAD_FUSION}" in done.stdout and "1 tiles written" in done.stdout
    check_warned(done, out)
    quality = xr.open_zarr(out).attrs["quality_summary"]
    # The cast moves every band by 30 to 50 %: every pixel is flagged, on both counts.
    assert quality["hallucination_risk_fraction"] == 1.0
    assert quality["mean_consistency"] > 0.01 and quality["mean_spectral_angle"] > 5


def test_a_resumed_run_warns_again(flagged_product, dask_client, tmp_path):
    copy = tmp_path / "flagged.zarr"
    shutil.copytree(flagged_product.out, copy)
    aoi = write(tmp_path, "small.geojson", SMALL_AOI)
    again = region(
        "--aoi",
        aoi,
        "--out",
        str(copy),
        "--fusion-model",
        BAD_FUSION,
        "--scheduler",
        dask_client.scheduler.address,
        bad_fusion=True,
    )
    assert "0 tiles written, 1 already finished" in again.stdout
    check_warned(again, copy)


def test_the_baselines_get_the_verdict_ok(demo_product):
    quality = xr.open_zarr(demo_product).attrs["quality_summary"]
    assert quality["verdict"] == OK and quality["hallucination_risk_fraction"] == 0
    assert quality["verdict_reason"].startswith("0 % of the product's pixels are flagged")
    properties = stac_item(demo_product)["properties"]
    assert properties["s2sr:quality_verdict"] == OK
    assert properties["s2sr:hallucination_risk_fraction"] == 0

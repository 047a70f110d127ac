"""The benchmarks' own helpers, which measure the flow as it runs."""

import dataclasses

from benchmarks._measure import TimedResolver
from pipeline.models import get_fusion_model, get_rgb_model
from pipeline.models.superresolve import SuperResolver


def test_the_timed_resolver_keeps_every_setting_of_the_plans() -> None:
    """A timed run writes what the plan's resolver would: with its quality layers, bands and
    guide context, not the defaults of a resolver built from its two models alone."""
    resolver = SuperResolver(
        get_rgb_model("bicubic"),
        get_fusion_model("gram-schmidt"),
        judged=True,
        bands=("B02", "B03", "B04"),
        guide_context=None,
    )
    timed = TimedResolver.of(resolver)
    assert isinstance(timed, TimedResolver)
    for field in dataclasses.fields(SuperResolver):
        assert getattr(timed, field.name) is getattr(resolver, field.name), field.name

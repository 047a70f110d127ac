"""The command lines read the models and their options from the registry: a model registered
with an option is offered, mapped and refused for the others without any command edit."""

import re

import pytest

from flows import benchmark, region
from flows._models import check_device, model_options
from pipeline.errors import UserError
from pipeline.models import RGB_MODELS, ModelSpec, Option
from pipeline.models.baselines import Bicubic


@pytest.fixture
def sharp(monkeypatch):
    """``--rgb-model sharp``: bicubic under another name, with one option of its own."""
    option = Option("amount", "--sharpen", "how much to sharpen", "1", float)
    spec = ModelSpec(lambda amount=1.0: Bicubic(), (option,), "sharpened RGB model")
    monkeypatch.setitem(RGB_MODELS, "sharp", spec)


def test_a_registered_model_and_its_option_are_offered(sharp):
    text = region.parser().format_help()
    assert "sharpened RGB model (--rgb-model sharp)" in text
    assert re.search(r"--sharpen SHARPEN\s+how much to sharpen \(default: 1\)", text)
    assert "sharp" in benchmark.parser().parse_args([]).rgb_models


def test_its_option_is_given_to_it_and_refused_with_another_model(sharp):
    args = region.parser().parse_args(["--rgb-model", "sharp", "--sharpen", "2"])
    assert model_options(args, "rgb", demo=True) == {"amount": 2.0}
    args = region.parser().parse_args(["--sharpen", "2"])
    with pytest.raises(UserError, match="^--sharpen apply to --rgb-model sharp only$"):
        model_options(args, "rgb", demo=True)


def test_a_learned_model_gets_its_default_weights_and_the_device():
    args = region.parser().parse_args(["--rgb-model", "difffusr", "--device", "cpu"])
    check_device(args)
    assert model_options(args, "rgb", demo=True) == {
        "consistent": True,
        "weights": "demo",
        "device": "cpu",
    }
    assert model_options(args, "fusion", demo=True) == {}

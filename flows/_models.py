"""The models on a command line, as the registry (``pipeline.models``) describes them: each
stage's models, a group of options for each model that takes any, and the options a model is
given. No command names a model, so registering one with its options needs no command edit."""

from __future__ import annotations

import argparse

from pipeline.errors import UserError
from pipeline.models import FUSION_MODELS, RGB_MODELS, ModelSpec, Option
from pipeline.models.published import default_weights

#: The registry of each stage, by the name its options carry (``--rgb-model``...).
STAGES: dict[str, dict[str, ModelSpec]] = {"rgb": RGB_MODELS, "fusion": FUSION_MODELS}


def dest(option: Option) -> str:
    """The attribute argparse gives the option's flag."""
    return option.flag.removeprefix("--").replace("-", "_")


def learned() -> list[tuple[str, str]]:
    """(stage, name) of every model that runs on a torch device with weights."""
    return [
        (stage, name) for stage, models in STAGES.items() for name in models if models[name].learned
    ]


def learned_models(stage: str | None = None) -> str:
    """The learned models (of ``stage``, or all) as a help text names them: ``a, b``."""
    return ", ".join(name for s, name in learned() if stage in (None, s))


def takers(stage: str, key: str) -> list[str]:
    """The models of ``stage`` that take the option of keyword ``key``."""
    return [name for name, spec in STAGES[stage].items() if spec.option(key)]


def add_option_groups(p: argparse.ArgumentParser, stage: str) -> None:
    """A group for each model of ``stage`` that takes options (a flag that several models
    take is offered once, in the first one's group)."""
    seen: set[str] = set()
    for name, spec in STAGES[stage].items():
        new = [o for o in spec.options if o.flag not in seen]
        if not new:
            continue
        group = p.add_argument_group(f"{spec.title} (--{stage}-model {name})")
        for option in new:
            seen.add(option.flag)
            if option.switch is None:
                group.add_argument(
                    option.flag,
                    type=option.type,
                    choices=option.choices,
                    metavar=option.metavar,
                    help=option.text,
                )
            else:
                group.add_argument(option.flag, action="store_true", default=None, help=option.text)


def model_options(args: argparse.Namespace, stage: str, demo: bool) -> dict:
    """The options given to the model of ``--<stage>-model``, under its keywords; a learned
    model's weights default to the demo's on the demo data (``demo``), else the published
    default. A flag that only other models of the stage take is refused."""
    name = getattr(args, f"{stage}_model")
    spec = STAGES[stage][name]
    _refuse_others(args, stage, spec)
    options = {}
    for option in spec.options:
        value = getattr(args, dest(option))
        if value is not None:
            options[option.key] = value if option.switch is None else option.switch
        elif option.otherwise is not None:
            options[option.key] = option.otherwise
    if spec.learned:
        options.setdefault("weights", default_weights(name, demo))
        if args.device is not None:
            options["device"] = args.device
    return options


def _refuse_others(args: argparse.Namespace, stage: str, spec: ModelSpec) -> None:
    taken = {o.flag for o in spec.options}
    offered = {o.flag: o for models in STAGES[stage].values() for o in models.options}
    refused = [
        flag
        for flag, option in offered.items()
        if flag not in taken and getattr(args, dest(option)) is not None
    ]
    if refused:
        owners = [n for n, s in STAGES[stage].items() if {o.flag for o in s.options} & set(refused)]
        models = " or ".join(f"--{stage}-model {n}" for n in owners)
        raise UserError(f"{', '.join(refused)} apply to {models} only")


def uses_learned(args: argparse.Namespace) -> bool:
    """Whether ``--rgb-model`` or ``--fusion-model`` is a learned model."""
    return any(STAGES[stage][getattr(args, f"{stage}_model")].learned for stage in STAGES)


def check_device(args: argparse.Namespace) -> None:
    """``--device`` is refused unless a learned model runs."""
    if args.device is not None and not uses_learned(args):
        models = " or ".join(f"--{stage}-model {name}" for stage, name in learned())
        raise UserError(f"--device applies to {models} only")

"""The DiffFuSR authors' published checkpoints by short name, pinned on first use.

``--weights naip-harm`` stands for a file of the Hugging Face model repository
:data:`HUB_REPO`; ``demo`` for the weights shipped with the package. The paths come from the
authors' README and from users' scripts and may be off by a folder name: an error then names
the exact path tried and how to pass another. A named checkpoint's sha256 is remembered in the
weights cache the first time it is used (trust on first use), and a later run refuses a
different file unless the new sha256 is given explicitly.

The weights module (and torch with it) is imported on demand: the command lines read the
names without loading torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.errors import WeightsError
from pipeline.models.base import flag_of

if TYPE_CHECKING:
    from pipeline.models.weights import LocalWeights

#: The authors' model repository on the Hugging Face hub (MIT licence).
HUB_REPO = "NorskRegnesentralSTI/DiffFuSR"
#: The name of the weights shipped inside the package for each learned model.
DEMO = "demo"
#: What each learned model uses without ``--weights`` on data other than the demo.
DEFAULTS = {"difffusr": "naip-harm", "difffusr-fusion": "gsd-v64"}
#: The licence of the published checkpoints.
LICENCE = "MIT"
#: Where the sha256 of each named checkpoint is remembered, in the weights cache.
TRUST_FILE = "published.json"


@dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint: where it lives on the hub and what it was trained on."""

    name: str
    #: The Lightning run folder in the repository (``…/version_<n>``) ...
    run: str
    #: ... and the checkpoint file inside it.
    file: str
    trained_on: str

    @property
    def path(self) -> str:
        return f"{self.run}/{self.file}"

    @property
    def hparams(self) -> str:
        """The run's ``hparams.yaml``: the network sizes, when the checkpoint lacks them."""
        return f"{self.run}/hparams.yaml"

    @property
    def source(self) -> str:
        return hub_reference(self.path)


def hub_reference(path: str) -> str:
    """The ``hf://`` reference of a file of the authors' repository."""
    return f"hf://{HUB_REPO}/{path}"


_SR = "logs/blindsrsnf_aniso_{}_large/version_{}"
_GSD = "logs/GSD/lightning_logs/version_{}"
#: The published checkpoints of each learned model, by name.
PUBLISHED: dict[str, dict[str, Checkpoint]] = {
    "difffusr": {
        c.name: c
        for c in (
            Checkpoint(
                "naip-harm",
                _SR.format("naip_degraded_harm", 1),
                "checkpoint/last.ckpt",
                "NAIP degraded to 10 m, harmonised to Sentinel-2",
            ),
            Checkpoint(
                "naip",
                _SR.format("naip_degraded_not_harm", 0),
                "checkpoints/last.ckpt",
                "NAIP degraded to 10 m, not harmonised",
            ),
            Checkpoint(
                "worldstrat",
                _SR.format("worldstrat_degraded_harmfac_10000", 7),
                "checkpoints/last.ckpt",
                "WorldStrat degraded to 10 m",
            ),
        )
    },
    "difffusr-fusion": {
        c.name: c
        for c in (
            Checkpoint(
                "gsd-v64",
                _GSD.format(64),
                "checkpoints/latest-GSD-epoch=45-metric_val=0.667-loss_train=0.0368.ckpt",
                "Sentinel-2, second fusion generation",
            ),
            Checkpoint(
                "gsd-v35",
                _GSD.format(35),
                "checkpoints/best-GSD-epoch=13-metric_val=4.695-loss_train=0.0329.ckpt",
                "Sentinel-2, first fusion generation",
            ),
        )
    },
}


def default_weights(model: str, demo_data: bool) -> str:
    """What a learned model uses without ``--weights``: the demo weights on the demo, the
    published default everywhere else (the demo weights know one small scene only)."""
    return DEMO if demo_data else DEFAULTS[model]


def names(model: str) -> list[str]:
    """The weight names ``model`` accepts."""
    return [*PUBLISHED.get(model, {}), DEMO]


def weight_source(model: str, weights: str | None, demo: str) -> str:
    """The file ``weights`` stands for: a published name's hub reference, the shipped
    ``demo`` file for ``demo`` or nothing, else ``weights`` itself (a path or URL).

    A bare word that names no published checkpoint and no existing file is refused with the
    names there are, rather than reported as a missing file.
    """
    if weights is None or weights == DEMO:
        return demo
    if checkpoint := PUBLISHED.get(model, {}).get(weights):
        return checkpoint.source
    if _looks_like_a_name(weights) and not Path(weights).exists():
        raise WeightsError(
            f"unknown weights name {weights!r} for {model}: the names are "
            f"{', '.join(names(model))}, or give a file path or URL"
        )
    return weights


def _looks_like_a_name(text: str) -> bool:
    return text.replace("-", "").replace("_", "").isalnum()


def published(source: str | None) -> Checkpoint | None:
    """The published checkpoint a hub reference points at, if it is one."""
    return next(
        (c for model in PUBLISHED.values() for c in model.values() if c.source == source), None
    )


def name_of(model: str, source: str | None) -> str | None:
    """The name of the weights a model resolved to, or None for a file given by path."""
    if source is not None and _shipped(source):
        return DEMO
    checkpoint = published(source)
    return checkpoint.name if checkpoint in PUBLISHED.get(model, {}).values() else None


def _shipped(source: str) -> bool:
    """Whether a file is one of the package's own (the demo weights are the only ones)."""
    from pipeline.models.weights import shipped_weights

    folder = Path(shipped_weights(DEMO)).parent
    return "://" not in source and Path(source).resolve().parent == folder.resolve()


def fetch(model: str, source: str, sha256: str | None) -> LocalWeights:
    """:func:`~pipeline.models.weights.resolve`, with trust on first use for published
    checkpoints and errors that say how to get them."""
    from pipeline.models.weights import (
        HubUnreachable,
        NotOnHub,
        Sha256Mismatch,
        resolve,
    )

    checkpoint = published(source)
    if checkpoint is None:
        return resolve(source, sha256)
    trust = _Trust()
    remembered = trust.get(source)
    try:
        local = resolve(source, sha256 or remembered)
    except Sha256Mismatch as err:
        if sha256:
            raise
        raise WeightsError(
            f"weights {checkpoint.name} ({source}) changed since first used: sha256 "
            f"{err.actual}, remembered {remembered} in {trust.path}; to use the new file, "
            f"give {flag_of(model, 'sha256')} {err.actual}"
        ) from None
    except HubUnreachable as err:
        raise WeightsError(_unreachable(model, checkpoint, err.why)) from None
    except NotOnHub:
        raise WeightsError(_not_on_hub(model, checkpoint)) from None
    if local.sha256 != remembered:
        trust.remember(source, checkpoint.name, local.sha256)
    return local


def _unreachable(model: str, checkpoint: Checkpoint, why: str) -> str:
    return (
        f"weights {checkpoint.name} are not in the local hub cache and the hub cannot be "
        f"reached ({why}): download them once with `hf download {HUB_REPO} "
        f"{checkpoint.path}` (or copy a hub cache and point HF_HOME at it), or give a "
        f"local file with {flag_of(model)} FILE"
    )


def _not_on_hub(model: str, checkpoint: Checkpoint) -> str:
    option = flag_of(model)
    return (
        f"weights {checkpoint.name}: {checkpoint.source} is not on the Hugging Face hub "
        "(the published paths may be off by a folder name); give the right one with "
        f"{option} hf://{HUB_REPO}/<path>, or a local file with {option} FILE"
    )


class _Trust:
    """The sha256 of each published checkpoint as first used, a small JSON in the cache."""

    def __init__(self) -> None:
        from pipeline.models.weights import default_cache_dir

        self.path = default_cache_dir() / TRUST_FILE

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            entries = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise WeightsError(
                f"cannot read {self.path}: {err}; remove it to start over "
                "(published weights are then trusted on first use again)"
            ) from None
        return entries if isinstance(entries, dict) else {}

    def get(self, source: str) -> str | None:
        entry = self._read().get(source)
        return entry.get("sha256") if isinstance(entry, dict) else None

    def remember(self, source: str, name: str, sha256: str) -> None:
        entries = self._read()
        entries[source] = {
            "name": name,
            "sha256": sha256,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise WeightsError(f"cannot write {self.path}: {err}") from None


class _Model(Protocol):
    name: str
    weights_sha256: str | None


def describe(model: _Model, demo_data: bool) -> list[str]:
    """Lines for the user about a model's named weights: what a published checkpoint is and
    its sha256, or a warning when the demo weights run on other data than the demo."""
    name = name_of(model.name, getattr(model, "weights", None))
    if name == DEMO:
        if demo_data:
            return []
        return [
            f"warning: {model.name} runs with the demo weights, trained on the demo "
            "scene only; expect poor results elsewhere (the published ones: "
            f"{flag_of(model.name)} {DEFAULTS[model.name]})"
        ]
    if name is None:
        return []
    checkpoint = PUBLISHED[model.name][name]
    return [
        f"weights {name}: sha256 {model.weights_sha256} ({checkpoint.trained_on}; "
        f"{LICENCE} licence)"
    ]

"""Fusion weight files: compact safetensors we write, and reference Lightning checkpoints.

Both hold the three group networks under the reference's key names, so one loader reads
either, of either generation (told apart by their keys: see :data:`GENERATION_MARKS`); the
network sizes are inferred from the tensor shapes (the reference does not store them). Our
files record the generation, the sizes, the format and what training produced them as
metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import reason
from pipeline.models.fusion.mtf import MTFFusionNetwork
from pipeline.models.fusion.network import FUSION_GROUPS, FusionNetwork, GroupedFusion
from pipeline.models.weights import LocalWeights, WeightsError, load_state_dict, write_safetensors

#: The ``format`` metadata entry of the fusion weight files we write.
FORMAT = "difffusr-fusion"
#: A key (after the group prefix) that only its generation has: the first generation's
#: guide branch, the second's pan mixer.
GENERATION_MARKS: dict[int, str] = {1: "rgb_conv_first.weight", 2: "pan_mixer.logits"}


def fusion_generations(state: Mapping[str, torch.Tensor]) -> list[int]:
    """The generations whose mark a fusion state dict holds: one, unless it is of neither
    or mixes both."""
    return [
        generation
        for generation, mark in GENERATION_MARKS.items()
        if any(f"{g.name}.{mark}" in state for g in FUSION_GROUPS)
    ]


def load_fusion_network(path: str | Path) -> tuple[GroupedFusion, dict[str, Any]]:
    """The fusion network of a local weight file (ours or a reference checkpoint, of either
    generation), in eval mode, and the file's metadata; a file of another model is refused
    in one line."""
    state, metadata = load_state_dict(path)
    fmt = metadata.get("format")
    if fmt not in (None, FORMAT):
        raise WeightsError(f"{path} holds {fmt} weights, not DiffFuSR fusion weights")
    missing = [g.name for g in FUSION_GROUPS if not any(k.startswith(g.name + ".") for k in state)]
    if missing:
        raise WeightsError(f"{path} is not a DiffFuSR fusion checkpoint: no {', '.join(missing)}")
    found = fusion_generations(state)
    if len(found) != 1:
        marks = " or ".join(f"{m} (generation {n})" for n, m in GENERATION_MARKS.items())
        what = "mixes both fusion generations" if found else "is of neither fusion generation"
        raise WeightsError(f"{path} {what}: its groups must hold {marks}")
    generation = found[0]
    sizes = _sizes(metadata)
    if sizes.get("generation", generation) != generation:
        raise WeightsError(
            f"{path} records generation {sizes['generation']} but holds the keys of "
            f"generation {generation}"
        )
    try:
        if generation == 1:
            net: GroupedFusion = FusionNetwork.from_state_dict(
                state, bool(sizes.get("residual", False))
            )
        else:
            net = MTFFusionNetwork.from_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise WeightsError(
            f"{path}: generation-{generation} fusion weights do not fit the network: {reason(err)}"
        ) from None
    return net.eval(), metadata


def _sizes(metadata: dict[str, Any]) -> dict[str, Any]:
    """The network settings a file records: ``config`` in our safetensors, ``network`` in our
    training checkpoints, nothing in a reference checkpoint (whose networks are not residual)."""
    sizes = metadata.get("config") or metadata.get("network") or {}
    return json.loads(sizes) if isinstance(sizes, str) else sizes


def save_fusion_network(
    net: GroupedFusion, dst: str | Path, metadata: dict[str, Any] | None = None
) -> LocalWeights:
    """Write ``net``'s weights (either generation) atomically as safetensors with sorted
    metadata (same weights, same bytes, same sha256); ``metadata`` values that are not
    strings are stored as JSON."""
    entries = {"format": FORMAT, "config": net.config(), **(metadata or {})}
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in entries.items()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return write_safetensors(tensors, dst, text)

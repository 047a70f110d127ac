"""Fusion weight files: compact safetensors we write, and reference Lightning checkpoints.

Both hold the three group networks under the reference's key names, so one loader reads
either; the network sizes are inferred from the tensor shapes (the reference does not store
them). Our files record the sizes, the format and what training produced them as metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import reason
from pipeline.models.fusion.network import FUSION_GROUPS, FusionNetwork
from pipeline.models.weights import LocalWeights, WeightsError, load_state_dict, write_safetensors

#: The ``format`` metadata entry of the fusion weight files we write.
FORMAT = "difffusr-fusion"


def load_fusion_network(path: str | Path) -> tuple[FusionNetwork, dict[str, Any]]:
    """The fusion network of a local weight file (ours or a reference checkpoint), in eval
    mode, and the file's metadata; a file of another model is refused in one line."""
    state, metadata = load_state_dict(path)
    fmt = metadata.get("format")
    if fmt not in (None, FORMAT):
        raise WeightsError(f"{path} holds {fmt} weights, not DiffFuSR fusion weights")
    missing = [g.name for g in FUSION_GROUPS if not any(k.startswith(g.name + ".") for k in state)]
    if missing:
        raise WeightsError(f"{path} is not a DiffFuSR fusion checkpoint: no {', '.join(missing)}")
    try:
        residual = bool(_sizes(metadata).get("residual", False))
        net = FusionNetwork.from_state_dict(state, residual)
    except (RuntimeError, KeyError) as err:
        raise WeightsError(f"{path}: fusion weights do not fit the network: "
                           f"{reason(err).splitlines()[0]}") from None
    return net.eval(), metadata


def _sizes(metadata: dict[str, Any]) -> dict[str, Any]:
    """The network settings a file records: ``config`` in our safetensors, ``network`` in our
    training checkpoints, nothing in a reference checkpoint (whose networks are not residual)."""
    sizes = metadata.get("config") or metadata.get("network") or {}
    return json.loads(sizes) if isinstance(sizes, str) else sizes


def save_fusion_network(
    net: FusionNetwork, dst: str | Path, metadata: dict[str, Any] | None = None
) -> LocalWeights:
    """Write ``net``'s weights atomically as safetensors with sorted metadata (same weights,
    same bytes, same sha256); ``metadata`` values that are not strings are stored as JSON."""
    entries = {
        "format": FORMAT,
        "config": {"features": net.features, "blocks": net.blocks, "growth": net.growth,
                   "residual": net.residual},
        **(metadata or {}),
    }
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in entries.items()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return write_safetensors(tensors, dst, text)

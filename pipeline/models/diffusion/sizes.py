"""The network sizes of DiffFuSR SR weights, wherever they are to be found.

In order: the sizes the file records (our safetensors header, a Lightning checkpoint's
hyper-parameters); the training run's ``hparams.yaml`` beside the checkpoint or one folder up
(a published checkpoint's own documented one first), which is how the reference loads its
checkpoints; else the shapes of the tensors, which fix every size the network has.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import reason
from pipeline.models.diffusion.network import DiffFuSRConfig
from pipeline.models.diffusion.unet import UNetConfig
from pipeline.models.published import hub_reference, published
from pipeline.models.weights import (
    WeightsError,
    missing_sr_parts,
    resolve,
    sibling,
    tensor_shapes,
)

#: Where a training run's hyper-parameters are, from its checkpoint: Lightning writes
#: ``hparams.yaml`` into the run folder and checkpoints into a folder below it.
HPARAMS = ("hparams.yaml", "../hparams.yaml")
#: The prefix of the U-Net sampling uses (see ``DiffFuSR.load_weights``).
UNET = "ema."


def network_config(source: str, path: str | Path) -> DiffFuSRConfig:
    """The sizes of the network the weights at ``path`` (fetched from ``source``) fit."""
    shapes, metadata = tensor_shapes(path)
    if missing := missing_sr_parts(shapes):  # a model error, not a question of sizes
        raise ValueError(f"{source} is not a DiffFuSR SR checkpoint: no {', '.join(missing)}")
    args = recorded_args(metadata)
    if args is None:
        args = hparams_args(source)
    if args is None:
        return config_from_shapes(shapes, source)
    try:
        return DiffFuSRConfig.from_lit_args(args)
    except (KeyError, TypeError) as err:
        raise WeightsError(
            f"{source}: the hyper-parameters lack the network size {reason(err)}"
        ) from None


def recorded_args(metadata: Mapping[str, Any]) -> dict | None:
    """``lit_model.args`` as a weight file records them (safetensors metadata or Lightning
    hyper-parameters), or None."""
    if "config" in metadata:
        args = metadata["config"]
        return json.loads(args) if isinstance(args, str) else args
    if "lit_model" in metadata:
        return metadata["lit_model"]["args"]
    return None


def hparams_args(source: str) -> dict | None:
    """``lit_model.args`` of the first ``hparams.yaml`` found for the weights at ``source``;
    a file that is there but unreadable is refused, not skipped."""
    checkpoint = published(source)
    candidates = [hub_reference(checkpoint.hparams)] if checkpoint else []
    candidates += [s for s in (sibling(source, h) for h in HPARAMS) if s is not None]
    for where in dict.fromkeys(candidates):
        try:
            path = resolve(where).path
        except WeightsError:
            continue
        return _lit_args(read_hparams(path, where), where)
    return None


class _HparamsLoader(yaml.SafeLoader):
    """YAML's safe loader and two tags that Lightning writes for the reference's
    hyper-parameters, read as the plain data they hold: an ``easydict.EasyDict`` as the dict
    of its items, a tuple as a list. No other object is ever constructed."""


def _easydict(loader: _HparamsLoader, node: yaml.Node) -> dict:
    fields = loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) else {}
    items = fields.get("dictitems", {})
    return items if isinstance(items, dict) else {}


_HparamsLoader.add_constructor("tag:yaml.org,2002:python/object/new:easydict.EasyDict", _easydict)
_HparamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", yaml.SafeLoader.construct_yaml_seq)


def read_hparams(path: str | Path, where: str) -> Any:
    """The data of an ``hparams.yaml`` (``where`` names it in errors)."""
    try:
        return yaml.load(Path(path).read_text(), Loader=_HparamsLoader)  # a safe loader
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        why = " ".join(reason(err).split())
        raise WeightsError(f"{where}: not a readable hparams.yaml: {why}") from None


def _lit_args(hparams: Any, where: str) -> dict:
    args = hparams.get("lit_model", {}) if isinstance(hparams, dict) else None
    args = args.get("args") if isinstance(args, dict) else None
    if not isinstance(args, dict):
        raise WeightsError(
            f"{where}: not the hparams.yaml of a DiffFuSR SR run (no lit_model.args)"
        )
    return args


def config_from_shapes(shapes: Mapping[str, Sequence[int]], source: str) -> DiffFuSRConfig:
    """The sizes read off the tensors: the U-Net's width from its first convolution, its
    levels, blocks per level and attention from the layout of ``ema.downs``, the encoder's
    blocks from ``encoder.body``, the schedule's length from its buffers. The RGB model's 3
    channels in and out and its ×4 scale are the model's own."""

    def shape(key: str, size: str) -> Sequence[int]:
        if key not in shapes:
            raise WeightsError(
                f"{source}: no network sizes recorded and none inferable from "
                f"the tensors: {size} needs {key}, which the weights lack"
            )
        return shapes[key]

    inner = shape(f"{UNET}first_conv_x.weight", "the U-Net width")[0]
    folded = shape(f"{UNET}first_conv_x.weight", "the fold")[1]
    fold = math.isqrt(folded // 3)
    if 3 * fold * fold != folded:
        raise WeightsError(
            f"{source}: the fold cannot be inferred: the U-Net takes {folded} "
            "channels, not 3 times a square"
        )
    levels = _levels(shapes, source)
    blocks = {len(level) for level in levels}
    if len(blocks) != 1:
        raise WeightsError(
            f"{source}: the blocks per level cannot be inferred: the U-Net's "
            f"levels hold {sorted(blocks)} blocks"
        )
    encoder = {m[1] for k in shapes if (m := re.match(r"encoder\.body\.(\d+)\.", k))}
    features = shape("encoder.conv_first.weight", "the encoder width")[0]
    unet = UNetConfig(
        inner_channel=inner,
        channel_mults=tuple(level[0][0] // inner for level in levels),
        res_blocks=blocks.pop(),
        attn_strides=tuple(2**i for i, level in enumerate(levels) if any(a for _, a in level)),
        fold=fold,
    )
    if features != 64 or not encoder:
        raise WeightsError(
            f"{source}: not the spatial encoder DiffFuSR's U-Net reads "
            f"({features} features, {len(encoder)} blocks)"
        )
    timesteps = shape("diffusion.alphas_cumprod", "the schedule length")[0]
    return DiffFuSRConfig(unet=unet, encoder_blocks=len(encoder), timesteps=timesteps)


def _levels(shapes: Mapping[str, Sequence[int]], source: str) -> list[list[tuple[int, bool]]]:
    """The U-Net's down path as levels of (output channels, has attention) per block:
    ``downs.0`` is the input convolution, then residual blocks, a downsampling convolution
    after every level but the last."""
    indices = sorted({int(m[1]) for k in shapes if (m := re.match(rf"{UNET}downs\.(\d+)\.", k))})
    levels: list[list[tuple[int, bool]]] = [[]]
    for i in indices[1:]:
        block = f"{UNET}downs.{i}."
        if f"{block}res_block.block1.block.3.weight" in shapes:
            channels = shapes[f"{block}res_block.block1.block.3.weight"][0]
            levels[-1].append((channels, f"{block}attn.qkv.weight" in shapes))
        elif f"{block}conv.weight" in shapes:
            levels.append([])
        else:
            raise WeightsError(
                f"{source}: the U-Net levels cannot be inferred: {block}* is "
                "neither a residual block nor a downsampling"
            )
    if not levels[0]:
        raise WeightsError(
            f"{source}: the U-Net levels cannot be inferred: no residual blocks under {UNET}downs"
        )
    return levels

"""Wald-protocol training of DiffFuSR's three band-fusion networks from Sentinel-2 alone.

At inference each group network reads the RGB guide at 2.5 m and every input band upsampled
from its native grid to 2.5 m: a 10 m band ×4, a 20 m band ×8, a 60 m band ×24. Training keeps
these ratios one scale up: group g (native resolution k × 10 m) learns on its own native grid
(the HR proxy), its inputs degraded by r = 4k from their native grids and brought back onto
that grid bilinearly, its guide the RGB block-averaged onto it and its target its own bands
there. docs/training-fusion.md states the protocol (its degradation and held-out cut are
:mod:`pipeline.protocol`'s, shared with evaluation); every random draw of step s is a function
of (seed, s), so a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.geo.bands import NATIVE_RATIO, REFLECTANCE_BANDS, RGB_BANDS, RGB_INDEX, SCALE
from pipeline.geo.grid import LATTICE_PIXELS
from pipeline.geo.resample import block_mean
from pipeline.models.fusion.network import (
    ATTENTION_REDUCTION,
    FUSION_GROUPS_BY_RESOLUTION,
    FusionGroup,
    FusionNetwork,
    denormalize,
    normalize,
    upsample,
)
from pipeline.models.fusion.weights import save_fusion_network
from pipeline.models.weights import LocalWeights
from pipeline.plain import plain
from pipeline.protocol.sensor import BLUR_SIGMA, degrade
from pipeline.protocol.split import Split, held_out_cut, split_columns
from pipeline.quality.fusion import fusion_metrics
from pipeline.train.runs import (
    TRAIN_STREAM,
    VALIDATION_STREAM,
    WEIGHTS,
    Run,
    TrainingDiverged,
    open_run_dir,
    step_rng,
)
from pipeline.train.sources import TrainingDataError, augment, clear_windows


@dataclass(frozen=True)
class NetworkSize:
    """The sizes of each group's FusionRRDBNet (all three share them)."""

    features: int
    blocks: int
    growth: int
    #: Predict a correction of the bilinear upsampling instead of the bands themselves
    #: (``FusionNetwork``): ours, not the reference's; learns far faster.
    residual: bool = False

    def __post_init__(self) -> None:
        if min(self.features, self.blocks, self.growth) < 1:
            raise ValueError("features, blocks and growth must be at least 1")
        if self.features % ATTENTION_REDUCTION:
            raise ValueError(
                f"features must be a multiple of {ATTENTION_REDUCTION} "
                f"(channel attention), got {self.features}"
            )


PRESETS: dict[str, NetworkSize] = {
    "small": NetworkSize(features=16, blocks=1, growth=8, residual=True),
    "paper": NetworkSize(features=64, blocks=5, growth=32),
}


def patch_multiple(group: FusionGroup) -> int:
    """The HR-proxy patch must divide into whole degraded pixels of every input band."""
    return SCALE * max(NATIVE_RATIO[b] for b in group.inputs)


@dataclass(frozen=True)
class FusionTrainConfig:
    """What and how the fusion networks learn; docs/training-fusion.md explains each."""

    steps: int = 1000
    batch_size: int = 4
    #: Groups trained, by native resolution in metres, ascending.
    groups: tuple[int, ...] = (10, 20, 60)
    #: HR-proxy patch edge per group, in pixels of the group's native grid.
    patch_10m: int = 64
    patch_20m: int = 32
    patch_60m: int = 24
    lr: float = 1e-4
    blur_sigma: float = BLUR_SIGMA
    seed: int = 0
    val_every: int = 100
    val_patches: int = 8
    ckpt_every: int = 500

    #: Settings a resumed run may change: they decide when things happen, not what is learnt.
    RESUMABLE: ClassVar[tuple[str, ...]] = ("steps", "val_every", "val_patches", "ckpt_every")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_every", "val_patches", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.groups or list(self.groups) != sorted(set(self.groups)):
            raise ValueError(f"groups must be distinct and ascending, got {list(self.groups)}")
        unknown = [g for g in self.groups if g not in FUSION_GROUPS_BY_RESOLUTION]
        if unknown:
            raise ValueError(f"no fusion group of {unknown[0]} m; choose from 10, 20, 60")
        for g in FUSION_GROUPS_BY_RESOLUTION.values():
            size, multiple = self.patch(g), patch_multiple(g)
            if size < multiple or size % multiple:
                raise ValueError(
                    f"patch of the {g.resolution} m group {size} is not a positive "
                    f"multiple of {multiple}"
                )
        if self.lr <= 0 or self.blur_sigma < 0 or self.seed < 0:
            raise ValueError("lr must be positive, blur_sigma and seed non-negative")

    def patch(self, group: FusionGroup) -> int:
        return int(getattr(self, f"patch_{group.resolution}m"))

    @property
    def selected(self) -> tuple[FusionGroup, ...]:
        return tuple(FUSION_GROUPS_BY_RESOLUTION[r] for r in self.groups)


# --- data -----------------------------------------------------------------------------------


class FusionWaldData:
    """The 12-band composite at 10 m and, per group, where its clear windows lie.

    ``image`` is float32 (12, H, W) reflectance in ``REFLECTANCE_BANDS`` order, NaN where
    unknown, H and W whole 60 m cells (``sentinel_composite(..., lattice=LATTICE)``). Its
    columns are cut once, on the 60 m lattice, at ``1 - test_fraction`` of the width: training
    windows of every group lie wholly west of the cut, validation windows wholly east. A group
    whose training part holds no clear window is refused; one whose held-out part holds none
    is trained without validation (``has_windows(group, "test")`` is false).
    """

    def __init__(self, image: np.ndarray, cfg: FusionTrainConfig, test_fraction: float) -> None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
        bands, height, width = image.shape
        if bands != len(REFLECTANCE_BANDS) or height % LATTICE_PIXELS or width % LATTICE_PIXELS:
            raise ValueError(
                f"the composite must be 12 bands of whole 60 m cells, not "
                f"{bands} × {height} × {width} px"
            )
        self.image = image
        self.cut = held_out_cut(width, test_fraction)
        self._starts: dict[tuple[int, Split], np.ndarray] = {}
        for g in cfg.selected:
            grid = block_mean(image, g.ratio_10m)  # NaN where any of its 10 m pixels is
            for split in ("train", "test"):
                columns = split_columns(grid.shape[2], self.cut // g.ratio_10m, split)
                starts = clear_windows(grid, cfg.patch(g), columns)
                self._starts[g.resolution, split] = np.stack(
                    np.divmod(starts, grid.shape[2]), axis=1
                )
            if not self.has_windows(g, "train"):
                raise TrainingDataError(
                    f"the {g.resolution} m group has no clear {cfg.patch(g)} px window in the "
                    f"training part of its grid (west of column {self.cut // g.ratio_10m} of "
                    f"{grid.shape[2]}); use a larger AOI, more dates or a smaller patch "
                    f"(a multiple of {patch_multiple(g)}), or leave the group out"
                )

    def has_windows(self, group: FusionGroup, split: Split) -> bool:
        return len(self._starts[group.resolution, split]) > 0

    def windows(
        self,
        group: FusionGroup,
        split: Split,
        n: int,
        rng: np.random.Generator,
        replace: bool = True,
    ) -> np.ndarray:
        """Top-left (row, column) on the group's grid of ``n`` random windows, int [n, 2];
        without ``replace``, distinct ones (fewer when there are fewer)."""
        starts = self._starts[group.resolution, split]
        if replace:
            return starts[rng.integers(len(starts), size=n)]
        return starts[rng.permutation(len(starts))[:n]]

    def footprints(self, group: FusionGroup, starts: np.ndarray, patch: int) -> np.ndarray:
        """The 10 m pixels under each window, float32 [n, 12, patch·k, patch·k]."""
        k = group.ratio_10m
        size = patch * k
        return np.stack(
            [self.image[:, y * k : y * k + size, x * k : x * k + size] for y, x in starts]
        )


@dataclass(frozen=True)
class GroupBatch:
    """One group's Wald triplet in reflectance, all on the group's HR-proxy grid [B, C, P, P]."""

    guide: torch.Tensor  # R G B
    ms: torch.Tensor  # the group's inputs, degraded and brought back bilinearly
    target: torch.Tensor  # the group's outputs

    def baseline(self, group: FusionGroup) -> torch.Tensor:
        """The bilinear upsampling of the degraded output bands (what the net must beat)."""
        return self.ms[:, group.own_inputs]

    def network_inputs(self, group: FusionGroup) -> tuple[torch.Tensor, torch.Tensor]:
        """(guide, MS) normalised as the network reads them."""
        return normalize(self.guide, RGB_BANDS), normalize(self.ms, group.inputs)


def wald_batch(footprints: np.ndarray, group: FusionGroup, sigma: float) -> GroupBatch:
    """The triplet of each 10 m footprint [n, 12, P·k, P·k] (see the module docstring).

    Each input band is block-averaged to its native grid (exact where the composite repeats
    native pixels), degraded by the group's ratio r, and upsampled bilinearly by
    (native size · r) / (group size), which lands on the group's grid.
    """
    x = torch.from_numpy(np.ascontiguousarray(footprints))
    k, r = group.ratio_10m, group.ratio_2p5m
    hr = F.avg_pool2d(x, k)
    upsampled: dict[str, torch.Tensor] = {}
    for n in sorted({NATIVE_RATIO[b] for b in group.inputs}):
        bands = [b for b in group.inputs if NATIVE_RATIO[b] == n]
        native = F.avg_pool2d(x[:, _index(bands)], n)
        upsampled.update(
            zip(bands, upsample(degrade(native, r, sigma), n * r // k).unbind(1), strict=True)
        )
    ms = torch.stack([upsampled[b] for b in group.inputs], 1)
    return GroupBatch(hr[:, RGB_INDEX], ms, hr[:, _index(group.outputs)])


def _index(bands: tuple[str, ...] | list[str]) -> list[int]:
    return [REFLECTANCE_BANDS.index(b) for b in bands]


def training_batch(
    data: FusionWaldData, group: FusionGroup, cfg: FusionTrainConfig, rng: np.random.Generator
) -> GroupBatch:
    """Random clear training windows of the group, each under one of its 8 symmetries."""
    patch = cfg.patch(group)
    starts = data.windows(group, "train", cfg.batch_size, rng)
    return wald_batch(augment(data.footprints(group, starts, patch), rng), group, cfg.blur_sigma)


def validation_sets(data: FusionWaldData, cfg: FusionTrainConfig) -> dict[int, GroupBatch]:
    """Fixed distinct held-out windows of every group that has some, drawn once per group
    from the seed (so one group's set does not depend on which others are trained)."""
    sets = {}
    for g in cfg.selected:
        if data.has_windows(g, "test"):
            rng = step_rng(cfg.seed, VALIDATION_STREAM, g.resolution)
            starts = data.windows(g, "test", cfg.val_patches, rng, replace=False)
            sets[g.resolution] = wald_batch(
                data.footprints(g, starts, cfg.patch(g)), g, cfg.blur_sigma
            )
    return sets


def ergas(prediction: torch.Tensor, truth: torch.Tensor, group: FusionGroup) -> float:
    """ERGAS (``pipeline.quality.fusion``) of windows [n, C, P, P] laid side by side, so
    errors and band means pool over all of them; h/l = 1 / r."""

    def side_by_side(x: torch.Tensor) -> np.ndarray:
        return torch.cat(x.detach().cpu().unbind(0), dim=-1).numpy()

    metrics = fusion_metrics(
        side_by_side(prediction), side_by_side(truth), ratio=1 / group.ratio_2p5m
    )
    return metrics.mean["ergas"]


# --- the run --------------------------------------------------------------------------------


class FusionTrainer(Run):
    """A run directory: ``last.ckpt``, ``log.jsonl``, at the end ``weights.safetensors``.
    Use :func:`open_fusion_run` to start or resume one."""

    def __init__(
        self,
        run_dir: Path,
        net: FusionNetwork,
        cfg: FusionTrainConfig,
        data: FusionWaldData,
        description: Mapping[str, Any],
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(run_dir, cfg, FusionTrainConfig.RESUMABLE)
        self.net, self.cfg, self.data = net.to(device).train(), cfg, data
        self.description, self.device = dict(description), torch.device(device)
        self.validation = validation_sets(data, cfg)
        self.optimizers = [
            torch.optim.Adam(net.group(g.name).parameters(), lr=cfg.lr) for g in cfg.selected
        ]

    @property
    def hyper_parameters(self) -> dict[str, Any]:
        size = NetworkSize(self.net.features, self.net.blocks, self.net.growth, self.net.residual)
        return plain({"network": asdict(size), "train": asdict(self.cfg), "data": self.description})

    @property
    def validates(self) -> bool:
        return bool(self.validation)

    def _predict(self, group: FusionGroup, batch: GroupBatch) -> torch.Tensor:
        """The network's output for a batch, normalised."""
        guide, ms = (t.to(self.device) for t in batch.network_inputs(group))
        return self.net.group_forward(group.name, guide, ms)

    def train_step(self) -> dict[str, float]:
        """One batch for every selected group, each through its own network and optimiser."""
        started = time.perf_counter()
        rng = step_rng(self.cfg.seed, TRAIN_STREAM, self.step)
        losses = {}
        for g, optimizer in zip(self.cfg.selected, self.optimizers, strict=True):
            batch = training_batch(self.data, g, self.cfg, rng)
            torch.manual_seed(int(rng.integers(2**63)))  # the guide branch's dropout
            target = normalize(batch.target, g.outputs).to(self.device)
            loss = F.l1_loss(self._predict(g, batch), target)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the {g.resolution} m group's loss is not finite at step {self.step + 1}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[f"loss_{g.resolution}m"] = loss.item()
        self.step += 1
        return {
            "step": self.step,
            "loss": float(np.mean(list(losses.values()))),
            **losses,
            "seconds": time.perf_counter() - started,
        }

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """ERGAS of the networks and of bilinear upsampling on the held-out windows."""
        started = time.perf_counter()
        record: dict[str, float] = {"step": self.step}
        self.net.eval()
        try:
            for resolution, batch in self.validation.items():
                g = FUSION_GROUPS_BY_RESOLUTION[resolution]
                prediction = denormalize(self._predict(g, batch), g.outputs)
                record[f"ergas_{resolution}m"] = ergas(prediction, batch.target, g)
                record[f"bilinear_ergas_{resolution}m"] = ergas(batch.baseline(g), batch.target, g)
        finally:
            self.net.train()
        return {**record, "seconds": time.perf_counter() - started}

    def state(self) -> dict[str, Any]:
        return {
            "state_dict": self.net.state_dict(),
            "optimizer_states": [o.state_dict() for o in self.optimizers],
        }

    def load_state(self, checkpoint: Mapping[str, Any]) -> None:
        self.net.load_state_dict(checkpoint["state_dict"])
        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            optimizer.load_state_dict(state)

    def export(self) -> LocalWeights:
        """The three networks as ``weights.safetensors`` for ``flows.region --fusion-weights``;
        groups left out of training keep their initial weights (``trained_groups`` says)."""
        return save_fusion_network(
            self.net,
            self.run_dir / WEIGHTS,
            {
                "steps": self.step,
                "trained_groups": list(self.cfg.groups),
                "train": asdict(self.cfg),
                "data": self.description,
            },
        )


def open_fusion_run(
    run_dir: str | Path,
    size: NetworkSize,
    cfg: FusionTrainConfig,
    data: FusionWaldData,
    description: Mapping[str, Any] | None = None,
    resume: bool = False,
    device: torch.device | str = "cpu",
) -> FusionTrainer:
    """A new run (initial weights from the seed) or, with ``resume``, the run in ``run_dir``.

    ``description`` says where the data came from; it is recorded, and a resumed run must
    match it.
    """
    run_dir = Path(run_dir)
    checkpoint = open_run_dir(run_dir, resume)
    torch.manual_seed(cfg.seed)
    net = FusionNetwork(size.features, size.blocks, size.growth, size.residual)
    trainer = FusionTrainer(run_dir, net, cfg, data, description or {}, device)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    return trainer


def parameter_count(net: FusionNetwork, groups: tuple[FusionGroup, ...]) -> int:
    """Trained parameters of the given groups' networks."""
    return sum(p.numel() for g in groups for p in net.group(g.name).parameters())

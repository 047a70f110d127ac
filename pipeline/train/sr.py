"""Training of the DiffFuSR RGB model: blind ×4 super-resolution by conditional diffusion.

One step follows the reference LightningModule (DiffBlindSR3AtomJIFModel, after BlindSRSNF):
two crops of each HR window share one degradation and become a MoCo positive pair; the
degradation encoder learns from InfoNCE on them, the RRDB encoder from an L1 loss through its
×4 head, and the U-Net from the x0-prediction loss at a continuous noise level. Every random
draw of step s is a function of (seed, s) alone, so a resumed run repeats an uninterrupted one
bit for bit. docs/training.md lists each choice against the published settings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.geo.resample import upsample_cubic
from pipeline.models.diffusion.network import DiffFuSR, DiffFuSRConfig
from pipeline.models.diffusion.schedule import NoiseSchedule
from pipeline.models.diffusion.unet import UNetConfig
from pipeline.models.weights import LocalWeights, convert_lightning_checkpoint
from pipeline.plain import plain
from pipeline.protocol.degradation import VALIDATION, DegradationConfig, degrade
from pipeline.quality.fusion import fusion_metrics
from pipeline.train.runs import (
    CHECKPOINT,
    TRAIN_STREAM,
    VALIDATION_STREAM,
    WEIGHTS,
    Run,
    TrainingDiverged,
    open_run_dir,
    step_rng,
    torch_generator,
)
from pipeline.train.sources import PatchSource, augment

#: Network sizes by name: the paper's, and the reference's own small test configuration.
PRESETS: dict[str, DiffFuSRConfig] = {
    "paper": DiffFuSRConfig(),
    "small": DiffFuSRConfig(
        unet=UNetConfig(inner_channel=32, channel_mults=(1, 2), res_blocks=1, attn_strides=(2,)),
        encoder_blocks=2,
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    """What and how the model learns; docs/training.md compares these with the paper's."""

    steps: int = 1000
    batch_size: int = 8
    #: HR patch edge (the LR input is patch / scale).
    patch: int = 64
    #: Edge of the HR window the two crops of a pair are cut from (default: 2 × patch).
    pair_window: int | None = None
    lr: float = 1e-4
    #: Steps after which the learning rate is multiplied by lr_gamma.
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.5
    ema_rate: float = 0.999
    #: EMA rate min(ema_rate, (1 + s) / (10 + s)) at step s, so short runs' EMA moves at all.
    ema_warmup: bool = True
    contrast_weight: float = 0.05
    aux_weight: float = 1.0
    seed: int = 0
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    val_every: int = 500
    val_patches: int = 4
    val_steps: int = 20
    ckpt_every: int = 500

    #: Settings a resumed run may change: they decide when things happen, not what is learnt.
    RESUMABLE: ClassVar[tuple[str, ...]] = (
        "steps",
        "val_every",
        "val_patches",
        "val_steps",
        "ckpt_every",
    )

    def __post_init__(self) -> None:
        counts = (
            "steps",
            "batch_size",
            "patch",
            "val_every",
            "val_patches",
            "val_steps",
            "ckpt_every",
        )
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patch % self.degradation.scale:
            raise ValueError(
                f"patch {self.patch} is not a multiple of the scale {self.degradation.scale}"
            )
        if self.window < self.patch:
            raise ValueError(f"pair_window {self.window} is smaller than the patch {self.patch}")
        if self.lr <= 0 or not 0 < self.ema_rate <= 1 or self.seed < 0:
            raise ValueError("lr must be positive, ema_rate in (0, 1], seed non-negative")

    @property
    def window(self) -> int:
        return self.pair_window or 2 * self.patch

    def learning_rate(self, step: int) -> float:
        """Step schedule: lr × lr_gamma per milestone passed (a function of the step alone)."""
        return self.lr * self.lr_gamma ** sum(step >= m for m in self.lr_milestones)

    def ema_decay(self, step: int) -> float:
        if not self.ema_warmup:
            return self.ema_rate
        return min(self.ema_rate, (1 + step) / (10 + step))


def check_patch(config: DiffFuSRConfig, cfg: TrainConfig) -> None:
    """The U-Net folds and halves the HR patch, so its edge must divide accordingly; the data
    must be degraded by the network's scale."""
    if cfg.degradation.scale != config.scale:
        raise ValueError(
            f"the degradation scale {cfg.degradation.scale} is not the network's {config.scale}"
        )
    multiple = config.unet.multiple
    if cfg.patch % multiple:
        raise ValueError(
            f"patch {cfg.patch} is not a multiple of {multiple}, which this network needs"
        )


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A training batch in network space ((x − 0.5) / 0.5)."""

    hr: torch.Tensor  # [B, 3, P, P]: the query crops' targets
    query: torch.Tensor  # [B, 3, P/s, P/s]
    key: torch.Tensor  # same degradation as query, other crop

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.hr.to(device), self.query.to(device), self.key.to(device))


def crop_pairs(windows: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
    """Two random patch × patch crops of every window: [N, 3, W, W] → [N, 2, 3, P, P]."""
    n, _, h, w = windows.shape
    ys = rng.integers(h - patch + 1, size=(n, 2))
    xs = rng.integers(w - patch + 1, size=(n, 2))
    return np.stack(
        [
            np.stack(
                [win[:, y : y + patch, x : x + patch] for y, x in zip(ys[i], xs[i], strict=True)]
            )
            for i, win in enumerate(windows)
        ]
    )


def training_batch(
    source: PatchSource, cfg: TrainConfig, step: int
) -> tuple[Batch, torch.Generator]:
    """Step ``step``'s batch, and the generator of its diffusion noise: a function of
    (seed, step), so any step can be replayed without the ones before it."""
    rng = step_rng(cfg.seed, TRAIN_STREAM, step)
    windows = augment(source.sample(cfg.batch_size, rng), rng)
    pairs = torch.from_numpy(crop_pairs(windows, cfg.patch, rng))
    degraded = degrade(pairs, cfg.degradation, torch_generator(rng))
    n = DiffFuSR.normalize
    batch = Batch(n(degraded.hr[:, 0]), n(degraded.lr[:, 0]), n(degraded.lr[:, 1]))
    return batch, torch_generator(rng)


# --- one step -------------------------------------------------------------------------------


def noise_levels(schedule: NoiseSchedule, n: int, generator: torch.Generator) -> torch.Tensor:
    """SR3's continuous noise levels [n]: t uniform in 1..T per sample, then γ uniform between
    √ᾱ_t and √ᾱ_(t−1) (√ᾱ_0 = 1), so γ covers [√ᾱ_T, 1] without gaps."""
    index = torch.randint(schedule.timesteps, (n,), generator=generator)
    low = schedule.sqrt_alphas_cumprod.cpu()[index]
    high = schedule.sqrt_alphas_cumprod_prev.cpu()[index]
    return low + (high - low) * torch.rand(n, generator=generator)


def losses(
    net: DiffFuSR, batch: Batch, generator: torch.Generator, cfg: TrainConfig
) -> dict[str, torch.Tensor]:
    """The three losses and their weighted sum ``loss``; gradients reach every trained part."""
    hr = batch.hr
    context = net.encoder.context(batch.query)
    embedding, logits, labels = net.E(batch.query, batch.key)
    gamma = noise_levels(net.diffusion, hr.shape[0], generator).to(hr)
    eps = torch.randn(hr.shape, generator=generator).to(hr)
    g = gamma.view(-1, 1, 1, 1)
    noisy = g * hr + (1 - g**2).sqrt() * eps
    parts = {
        "denoise": F.l1_loss(net.model(noisy, gamma[:, None], context, embedding), hr),
        "aux": F.l1_loss(net.encoder.reconstruct(context), hr),
        "contrast": F.cross_entropy(logits, labels),
    }
    parts["loss"] = (
        parts["denoise"] + cfg.aux_weight * parts["aux"] + cfg.contrast_weight * parts["contrast"]
    )
    return parts


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, m in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(m, 1 - decay)


# --- validation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationSet:
    """Fixed held-out pairs (reflectance) and the fixed initial noise of their sampling."""

    hr: torch.Tensor
    lr: torch.Tensor
    bicubic: torch.Tensor
    x_t: torch.Tensor


def validation_set(source: PatchSource, cfg: TrainConfig) -> ValidationSet:
    """``val_patches`` patches under the reference's validation degradation (isotropic blur
    σ 1.2, no noise), harmonised and quantised as the training inputs are."""
    d = cfg.degradation
    degradation = replace(
        VALIDATION,
        scale=d.scale,
        harmonize=d.harmonize,
        levels=d.levels,
        gamma_mean=d.gamma_mean,
        gamma_cov=d.gamma_cov,
    )
    rng = step_rng(cfg.seed, VALIDATION_STREAM)
    pairs = degrade(
        torch.from_numpy(source.sample(cfg.val_patches, rng)), degradation, torch_generator(rng)
    )
    bicubic = np.stack([upsample_cubic(x, d.scale) for x in pairs.lr.numpy()])
    x_t = torch.randn(pairs.hr.shape, generator=torch_generator(rng))
    return ValidationSet(pairs.hr, pairs.lr, torch.from_numpy(bicubic).clamp(0, 1), x_t)


def scores(prediction: torch.Tensor, truth: torch.Tensor, scale: int) -> tuple[float, float]:
    """(PSNR, SSIM) for data range 1, per band as the project's fusion metrics define them,
    averaged over bands and patches."""
    means = [
        fusion_metrics(p.numpy(), t.numpy(), ratio=1 / scale).mean
        for p, t in zip(prediction, truth, strict=True)
    ]
    return (float(np.mean([m["psnr"] for m in means])), float(np.mean([m["ssim"] for m in means])))


# --- the run --------------------------------------------------------------------------------


class Trainer(Run):
    """A run directory: ``last.ckpt`` (reference layout), ``log.jsonl``, at the end
    ``weights.safetensors``. Use :func:`open_run` to start or resume one."""

    def __init__(
        self,
        run_dir: Path,
        net: DiffFuSR,
        cfg: TrainConfig,
        source: PatchSource,
        validation: ValidationSet | None,
        data: Mapping[str, Any],
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(run_dir, cfg, TrainConfig.RESUMABLE)
        self.net, self.cfg = net.to(device).train(), cfg
        self.source, self.validation, self.data = source, validation, dict(data)
        self.device = torch.device(device)
        self.optimizer = torch.optim.Adam(
            [p for p in net.parameters() if p.requires_grad], lr=cfg.learning_rate(0)
        )

    @property
    def hyper_parameters(self) -> dict[str, Any]:
        return plain(
            {
                "lit_model": {"args": self.net.config.to_lit_args()},
                "train": asdict(self.cfg),
                "data": self.data,
            }
        )

    @property
    def validates(self) -> bool:
        return self.validation is not None

    def train_step(self) -> dict[str, float]:
        started = time.perf_counter()
        batch, generator = training_batch(self.source, self.cfg, self.step)
        lr = self.cfg.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        parts = losses(self.net, batch.to(self.device), generator, self.cfg)
        if not torch.isfinite(parts["loss"]):
            raise TrainingDiverged(f"the loss is not finite at step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        decay = self.cfg.ema_decay(self.step)
        ema_update(self.net.ema, self.net.model, decay)
        self.step += 1
        record = {k: v.item() for k, v in parts.items()}
        return {
            "step": self.step,
            **record,
            "lr": lr,
            "ema_decay": decay,
            "seconds": time.perf_counter() - started,
        }

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR/SSIM of EMA DDIM samples and of bicubic against the held-out HR patches."""
        v = self.validation
        assert v is not None
        started = time.perf_counter()
        net = self.net.eval()
        try:
            context, degradation = net.condition(net.normalize(v.lr).to(self.device))
            x0 = net.sample(context, degradation, v.x_t.to(self.device), self.cfg.val_steps)
        finally:
            net.train()
        scale = self.net.config.scale
        val_psnr, val_ssim = scores(net.denormalize(x0).clamp(0, 1).cpu(), v.hr, scale)
        bicubic_psnr, bicubic_ssim = scores(v.bicubic, v.hr, scale)
        return {
            "step": self.step,
            "val_psnr": val_psnr,
            "val_ssim": val_ssim,
            "bicubic_psnr": bicubic_psnr,
            "bicubic_ssim": bicubic_ssim,
            "seconds": time.perf_counter() - started,
        }

    def state(self) -> dict[str, Any]:
        """The reference LightningModule's layout."""
        return {
            "state_dict": self.net.state_dict(),
            "optimizer_states": [self.optimizer.state_dict()],
        }

    def load_state(self, checkpoint: Mapping[str, Any]) -> None:
        self.net.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer_states"][0])

    def export(self) -> LocalWeights:
        """The compact inference weights of the last checkpoint (EMA U-Net, encoders, schedule)."""
        return convert_lightning_checkpoint(self.run_dir / CHECKPOINT, self.run_dir / WEIGHTS)


def open_run(
    run_dir: str | Path,
    config: DiffFuSRConfig,
    cfg: TrainConfig,
    source: PatchSource,
    validation_source: PatchSource | None = None,
    data: Mapping[str, Any] | None = None,
    resume: bool = False,
    device: torch.device | str = "cpu",
) -> Trainer:
    """A new run (seeded initial weights) or, with ``resume``, the run in ``run_dir``.

    ``data`` describes the sources; it is recorded, and a resumed run must match it.
    """
    check_patch(config, cfg)
    run_dir = Path(run_dir)
    checkpoint = open_run_dir(run_dir, resume)
    torch.manual_seed(cfg.seed)
    net = DiffFuSR(config, training=True)
    validation = validation_set(validation_source, cfg) if validation_source else None
    trainer = Trainer(run_dir, net, cfg, source, validation, data or {}, device)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    return trainer


def parameter_count(net: DiffFuSR) -> int:
    """Trained parameters (U-Net, RRDB encoder, degradation query encoder)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)

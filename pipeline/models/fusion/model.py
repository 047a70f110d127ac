"""DiffFuSR's learned band fusion as the pipeline's fusion model (paper section III-B).

Per block: each band's native grid is recovered from the 10 m block (the mean of its native
pixel's 1, 2×2 or 6×6 10 m pixels, as the Gram–Schmidt baseline does), normalised and
upsampled bilinearly from that grid onto the 2.5 m grid (×4, ×8 or ×24, half-pixel centres),
as training degrades then upsamples; the guide is the RGB stage's 2.5 m output. Each of the
three group networks (10, 20, 60 m) predicts its bands; B04 B03 B02 stay the RGB stage's
output, so the 10 m group contributes B08 only. The second generation of the networks
(:mod:`pipeline.models.fusion.mtf`) is fed as the reference feeds it instead: every band
normalised and upsampled bilinearly ×4 from the 10 m block.

With ``consistent`` (the default) each fused band is then corrected so that its mean over
every native pixel's footprint (4×4, 8×8 or 24×24 output pixels) equals the native input
value (:mod:`pipeline.models.radiometry`: a smooth field, no steps at footprint edges, reaching a
few
native pixels, which the halo covers). The product is then radiometrically consistent with
the input at the input's own resolution.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.geo.bands import (
    FUSED_BANDS,
    MAX_RATIO,
    NATIVE_RATIO,
    REFLECTANCE_BANDS,
    RGB_BANDS,
    RGB_INDEX,
    SCALE,
)
from pipeline.geo.resample import block_mean
from pipeline.models.fusion.mtf import MTFFusionNetwork
from pipeline.models.fusion.network import (
    FUSION_GROUPS,
    GroupedFusion,
    denormalize,
    normalize,
    upsample,
)
from pipeline.models.fusion.weights import load_fusion_network
from pipeline.models.radiometry import correction_reach, make_consistent
from pipeline.models.resident import PinnedWeights
from pipeline.models.weights import shipped_weights

#: The weights we trained and ship for the demo (model card: difffusr-fusion-demo.md beside them).
DEMO_WEIGHTS = shipped_weights("difffusr-fusion-demo.safetensors")


def receptive_radius(blocks: int) -> int:
    """How far, in 2.5 m pixels, an output pixel of a group network sees its inputs.

    The longest path is the MS (or RGB) branch, then the fusion trunk and the head: its
    first conv (3×3), ``blocks`` RRDBs of 3 dense blocks whose longest chain is 5 3×3 convs,
    the spatial attention's 7×7 conv, the fusion conv, ``blocks`` more RRDBs, and the four
    3×3 convs of the head. Channel attention pools over the whole input, which no finite
    radius covers (see :attr:`DiffFuSRFusion.halo`).
    """
    rrdb = 3 * 5
    return 1 + blocks * rrdb + 3 + 1 + blocks * rrdb + 4


def fusion_halo(blocks: int) -> int:
    """The context in 10 m pixels: the network's reach, plus how far the bilinear upsampling
    of a 60 m band reaches (one native pixel) and the half-footprint of that native pixel."""
    network = math.ceil(receptive_radius(blocks) / SCALE)
    return network + MAX_RATIO + MAX_RATIO // 2


def mtf_halo(net: MTFFusionNetwork) -> int:
    """The second generation's context in 10 m pixels: its reach through the guide (the
    longest MTF low-pass, then the detail and refinement convs), or through its MS input
    (those convs, plus the next 10 m pixel that the bilinear ×4 lift reads), whichever is
    longer. It has no global pooling, so blocks equal a whole-array run to float rounding."""
    return max(math.ceil(net.guide_reach / SCALE), math.ceil(net.ms_reach / SCALE) + 1)


def network_halo(net: GroupedFusion) -> int:
    """The context in 10 m pixels that a network of either generation needs."""
    return mtf_halo(net) if isinstance(net, MTFFusionNetwork) else fusion_halo(net.blocks)


def _build(path: str) -> GroupedFusion:
    return load_fusion_network(path)[0]


@dataclass(frozen=True)
class DiffFuSRFusion(PinnedWeights):
    """The fusion stage by DiffFuSR's three group networks.

    ``weights``: the name of a published checkpoint (``gsd-v64``, ``gsd-v35``, ``demo``; see
    :mod:`pipeline.models.published`) or a fusion weight file of either generation (ours,
    written by ``save_fusion_network``, or a reference Lightning checkpoint) as a path,
    fsspec URL or ``hf://`` reference, by default the shipped demo weights;
    ``sha256`` pins it; ``consistent`` applies the mean-preserving correction.
    """

    weights: str | None = None
    sha256: str | None = None
    device: str | None = None
    consistent: bool = True
    name: str = "difffusr-fusion"

    def __post_init__(self) -> None:
        self._pin(DEMO_WEIGHTS)
        # A file that is not fusion weights is refused here, once; the halo follows its
        # generation and size.
        object.__setattr__(self, "_halo", network_halo(self._network()))

    @property
    def halo(self) -> int:
        """Context in 10 m pixels: everything within reach of the convolutions (see
        :func:`network_halo`). In the first generation channel attention pools over the
        whole block, so a block's result still depends slightly on the block's extent:
        blocks are close to a whole-array run, not bit-identical to it. The consistency
        correction, when on, adds its reach over the coarsest band's native pixels."""
        return self.own_halo + (correction_reach(MAX_RATIO) if self.consistent else 0)

    @property
    def own_halo(self) -> int:
        """The context of the networks' own output, before the guarantee."""
        return self._halo

    def _network(self) -> GroupedFusion:
        return self._resident(_build)

    def __call__(self, bands: np.ndarray, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """(12, h, w) reflectance at 10 m and the (3, 4h, 4w) RGB at 2.5 m → (12, 4h, 4w),
        with the radiometric guarantee when ``consistent``."""
        out = self.predict(bands, rgb, origin)
        return self.correct(out, bands) if self.consistent else out

    def predict(self, bands: np.ndarray, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """The networks' own (12, 4h, 4w) output, B04 B03 B02 being ``rgb``, before any
        guarantee."""
        h, w = bands.shape[1:]
        if h % MAX_RATIO or w % MAX_RATIO:
            raise ValueError(f"block of {h}×{w} pixels is not a whole number of 60 m pixels")
        if rgb.shape != (len(RGB_BANDS), h * SCALE, w * SCALE):
            raise ValueError(f"RGB of shape {rgb.shape} does not match bands of {h}×{w}")
        bands = np.asarray(bands, dtype=np.float32)
        rgb = np.asarray(rgb, dtype=np.float32)
        out = np.empty((len(REFLECTANCE_BANDS), h * SCALE, w * SCALE), np.float32)
        for band, value in self.fuse(bands, rgb).items():
            out[REFLECTANCE_BANDS.index(band)] = value
        out[RGB_INDEX] = rgb
        return out

    @staticmethod
    def correct(out: np.ndarray, bands: np.ndarray) -> np.ndarray:
        """``out`` (12, 4h, 4w) with every fused band averaging back to its native input over
        each native pixel that holds data (:mod:`pipeline.models.radiometry`); a copy."""
        bands = np.asarray(bands, dtype=np.float32)
        natives = native_grids(bands)
        data = (bands != 0).any(axis=0)  # 0 in every band is the fill of no-data
        out = out.copy()
        for band in FUSED_BANDS:
            i, ratio = REFLECTANCE_BANDS.index(band), NATIVE_RATIO[band]
            valid = block_mean(data[None].astype(np.float32), ratio)[0] > 0
            out[i] = make_consistent(out[i], natives[band], SCALE * ratio, valid)
        return out

    def fuse(self, bands: np.ndarray, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The networks' 2.5 m prediction of every fused band, from the (12, h, w) 10 m
        block and the 2.5 m RGB, before any consistency correction."""
        device = next(self._network().parameters()).device
        with torch.inference_mode():
            fused = self.fuse_tensors(
                torch.from_numpy(bands).to(device), torch.from_numpy(rgb).to(device)
            )
            return {b: value.float().cpu().numpy() for b, value in fused.items()}

    def fuse_tensors(
        self, bands: torch.Tensor, rgb: torch.Tensor, resolutions: Collection[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """:meth:`fuse` of tensors on the network's device, in the caller's autograd mode, so
        that an attribution can follow every fused band back to the inputs; only the groups
        of these native ``resolutions`` (metres) when given."""
        net = self._network()
        guide = normalize(rgb[None], RGB_BANDS)
        lifted = _lifted(net, bands)
        result: dict[str, torch.Tensor] = {}
        for g in FUSION_GROUPS:
            if resolutions is not None and g.resolution not in resolutions:
                continue
            wanted = [b for b in g.outputs if b in FUSED_BANDS]
            ms = net.ms_input(g.name, lifted)
            pred = denormalize(net.group_forward(g.name, guide, ms), g.outputs)[0]
            result.update({b: pred[g.outputs.index(b)] for b in wanted})
        return result


def native_grids(bands: np.ndarray | torch.Tensor) -> dict[str, np.ndarray | torch.Tensor]:
    """Each band's native pixels, (h / ratio, w / ratio), from the (12, h, w) 10 m block
    (an array or a tensor, :func:`~pipeline.geo.resample.block_mean` taking either)."""
    return {
        b: block_mean(bands[i : i + 1], NATIVE_RATIO[b])[0] for i, b in enumerate(REFLECTANCE_BANDS)
    }


def _lifted(net: GroupedFusion, bands: torch.Tensor) -> torch.Tensor:
    """The 12 bands (12, h, w) normalised on the 2.5 m grid, [1, 12, 4h, 4w], as each
    generation is fed: the first (which we train that way) from each band's native grid; the
    second the reference's way, every band bilinear ×4 from the common 10 m grid."""
    if isinstance(net, MTFFusionNetwork):
        return upsample(normalize(bands[None]))
    natives = native_grids(bands)
    return torch.cat([_lift(natives[b], b) for b in REFLECTANCE_BANDS], 1)


def _lift(native: torch.Tensor, band: str) -> torch.Tensor:
    """A band's native grid, normalised and bilinearly upsampled onto the 2.5 m grid."""
    return upsample(normalize(native[None, None], (band,)), SCALE * NATIVE_RATIO[band])


def consistency_error(
    high: np.ndarray, natives: dict[str, np.ndarray], bands: tuple[str, ...] = FUSED_BANDS
) -> dict[str, tuple[float, float]]:
    """Per band, (mean, max) of |footprint mean of the 2.5 m band − native input value|.

    ``high`` is (12, H, W) in ``REFLECTANCE_BANDS`` order; ``natives`` from
    :func:`native_grids` of the 10 m input.
    """
    errors = {}
    for band in bands:
        footprint = SCALE * NATIVE_RATIO[band]
        mean = block_mean(high[REFLECTANCE_BANDS.index(band)][None].astype(np.float64), footprint)[
            0
        ]
        diff = np.abs(mean - natives[band].astype(np.float64))
        errors[band] = (float(diff.mean()), float(diff.max()))
    return errors

"""Speed and arithmetic cost of the DiffFuSR RGB model, per tile and per output pixel.

    python -m benchmarks.sr_model [--config paper|small|demo] [--device cpu|cuda] [--tile 64]
        [--batch N] [--steps 20 10 5] [--precision fp32 bf16] [--repeats 3] [--threads N]
        [--out PATH]

A tile is one LR window of ``--tile`` 10 m pixels, i.e. (4·tile)² output pixels at 2.5 m;
``--batch`` windows are sampled together, as the pipeline does. Conditioning (RRDB context and
degradation embedding) and DDIM sampling are timed apart, because the pipeline conditions a whole
block once while it samples window by window. FLOPs are counted by PyTorch's FlopCounterMode on
meta tensors (shapes only, nothing computed): convolutions and matrix products at 2 FLOPs per
multiply-accumulate; elementwise work (norms, activations, softmax, resizing) is not counted.
Random weights time the same as trained ones, but only trained weights give a meaningful
bf16-vs-fp32 output change.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import statistics
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._common import device_name, timed, write_json
from pipeline.geo.bands import MAX_RATIO
from pipeline.models import get_fusion_model
from pipeline.models.diffusion.cost import executed_over_useful, tile_windows
from pipeline.models.diffusion.network import DiffFuSR, DiffFuSRConfig
from pipeline.models.diffusion.rgb import DEFAULT_WINDOW, device_defaults
from pipeline.models.diffusion.unet import UNetConfig
from pipeline.models.fusion.model import fusion_halo, mtf_halo
from pipeline.models.fusion.mtf import MTFFusionNetwork
from pipeline.models.fusion.network import FusionNetwork
from pipeline.models.radiometry import correction_reach
from pipeline.models.superresolve import (
    CPU_LAYOUT,
    GPU_LAYOUT,
    GUIDE_CONTEXT,
    Layout,
    guide_margin,
    region_halo,
)

SEED = 0
PAPER_STEPS = 20
CONFIGS = {
    "paper": DiffFuSRConfig(),
    "small": DiffFuSRConfig(
        unet=UNetConfig(inner_channel=32, channel_mults=(1, 2), res_blocks=1, attn_strides=(2,)),
        encoder_blocks=2,
    ),
}
#: Vendor dense peaks (no sparsity) in TFLOP/s by device-name fragment, most specific first.
PEAKS = (
    ("H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # the H100 SXM's compute
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)


def build(name: str, device: torch.device) -> tuple[DiffFuSR, str] | None:
    """The model under test and a description of its weights; None if unavailable."""
    if name == "demo":
        try:  # the demo weights and their loader are optional parts of the package
            from pipeline.models.diffusion.rgb import DEMO_WEIGHTS, load_network
        except ImportError as exc:
            print(f"demo: cannot load the RGB model module ({exc}); skipped")
            return None
        path = DEMO_WEIGHTS
        if not Path(path).is_file():
            print("demo: the package ships no demo weights; skipped")
            return None
        return load_network(path, str(device), False), "shipped demo weights"
    torch.manual_seed(SEED)
    net = DiffFuSR(CONFIGS[name]).to(device).eval().requires_grad_(False)
    return net, f"random weights, seed {SEED}: for timing only"


def count_flops(config: DiffFuSRConfig, tile: int, device: str = "meta") -> dict[str, Any]:
    """FLOPs of one window (batch 1): RRDB context, degradation encoder, one U-Net forward.

    Also cross-checks the counter against the closed form of one convolution, ``downs.0``:
    2·H·W·C_out·C_in·k² at the folded resolution H = W = 4·tile / fold.
    """
    with torch.device(device):
        net = DiffFuSR(config)
    net = net.to(device).eval()  # the schedule buffers are made from NumPy, on the CPU
    hr = config.scale * tile
    lr = torch.zeros(1, 3, tile, tile, device=device)
    x_t = torch.zeros(1, 3, hr, hr, device=device)
    gamma = torch.full((1, 1), 0.5, device=device)
    flops: dict[str, Any] = {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            context = net.encoder.context(lr)
        flops["context"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            degradation = net.E.embed(lr)
        flops["degradation"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            net.ema(x_t, gamma, context, degradation)
        flops["unet"] = counter.get_total_flops()
    conv = net.ema.downs[0]
    side = hr // config.unet.fold
    kh, kw = conv.kernel_size
    analytic = 2 * side * side * conv.out_channels * conv.in_channels * kh * kw
    counted = sum(counter.get_flop_counts()["DiffusionUNet.downs.0"].values())
    flops["cross_check"] = {"layer": "ema.downs.0", "counted": counted, "analytic": analytic}
    return flops


def flops_of(config: DiffFuSRConfig, tile: int) -> dict[str, Any]:
    """``count_flops`` on meta tensors, or by a real CPU forward where meta kernels are missing."""
    try:
        return count_flops(config, tile)
    except (NotImplementedError, RuntimeError) as exc:
        print(f"meta-device FLOP count failed ({exc}); counting with a real CPU forward")
        return count_flops(config, tile, "cpu")


def sample_flops(flops: dict[str, Any], steps: int) -> int:
    """One conditioning plus ``steps`` U-Net evaluations, for one window."""
    return flops["context"] + flops["degradation"] + steps * flops["unet"]


def print_flops(flops: dict[str, Any], tile: int, scale: int) -> dict[str, float]:
    pixels = (scale * tile) ** 2
    rows = {
        "RRDB context": flops["context"],
        "degradation encoder": flops["degradation"],
        "one U-Net forward": flops["unet"],
        f"{PAPER_STEPS}-step sample (+ conditioning)": sample_flops(flops, PAPER_STEPS),
    }
    for label, value in rows.items():
        print(
            f"  {label:<34} {value / 1e12:10.4g} TFLOP/tile {value / pixels / 1e9:10.4g} GFLOP/px"
        )
    check = flops["cross_check"]
    verdict = "agrees" if check["counted"] == check["analytic"] else "DISAGREES"
    print(
        f"  cross-check {check['layer']}: counted {check['counted']:,} FLOP, closed form "
        f"{check['analytic']:,} FLOP ({verdict})"
    )
    return {
        "unet_gflop_per_px": flops["unet"] / pixels / 1e9,
        "sample_gflop_per_px": sample_flops(flops, PAPER_STEPS) / pixels / 1e9,
        "sample_tflop_per_tile": sample_flops(flops, PAPER_STEPS) / 1e12,
    }


def layouts() -> list[tuple[str, Layout, int, int, str, int]]:
    """(label, layout, window, overlap, fusion, fusion halo) at the defaults and around them:
    the paper's 64-pixel windows and the demo weights' 16, the default fusion (Gram–Schmidt)
    and the learned ones at the paper's and the published sizes with their guarantee (on by
    default)."""
    fusions = {
        "gram-schmidt": get_fusion_model("gram-schmidt").halo,
        "difffusr-fusion (paper sizes)": fusion_halo(FusionNetwork().blocks)
        + correction_reach(MAX_RATIO),
        "difffusr-fusion 2nd gen (published)": mtf_halo(MTFFusionNetwork())
        + correction_reach(MAX_RATIO),
    }
    rows = []
    for window in (DEFAULT_WINDOW, 16):
        cpu = device_defaults(False, window)["overlap"]
        gpu = device_defaults(True, window)["overlap"]
        for fusion, halo in fusions.items():
            rows += [
                ("CPU defaults", CPU_LAYOUT, window, cpu, fusion, halo),
                ("GPU defaults", GPU_LAYOUT, window, gpu, fusion, halo),
            ]
    paper = fusions["difffusr-fusion (paper sizes)"]
    rows += [
        ("GPU, 7680-px tiles", Layout(7680, None), DEFAULT_WINDOW, 2, "difffusr-fusion", paper),
        ("GPU, overlap 1", GPU_LAYOUT, DEFAULT_WINDOW, 1, "difffusr-fusion", paper),
        ("GPU, blocks of 240", Layout(15360, 240), DEFAULT_WINDOW, 2, "difffusr-fusion", paper),
    ]
    return rows


def executed_vs_useful(flops: dict[str, Any], tile: int) -> list[dict[str, Any]]:
    """Executed / useful FLOPs of one tile for each layout of ``layouts``, over the tile's
    possible positions on the window lattice (its origin on the 60 m lattice), and the paper
    model's TFLOP per tile at ``PAPER_STEPS`` when the window is the ``tile`` counted. The
    RGB model has its guarantee (on by default); as the region flow runs it, it samples only
    the windows that the tile's pixels, the guarantee's reach and the fusion's guide over
    ``GUIDE_CONTEXT`` pixels need; ``whole_guide`` samples the guide over the fusion's whole
    reach, ``all_windows`` every window of the tile's region."""
    rows = []
    reach = correction_reach(1)
    for label, layout, window, overlap, fusion, fusion_reach in layouts():
        halo = region_halo(window + reach, fusion_reach)
        ratios, whole_guide = (
            _ratios(
                layout, window, overlap, halo, max(0, guide_margin(halo, fusion_reach, g) - reach)
            )
            for g in (GUIDE_CONTEXT, None)
        )
        every = _ratios(layout, window, overlap, halo, 0)
        row = {
            "layout": label,
            "tile_size": layout.tile_size,
            "block_size": layout.block_size,
            "window": window,
            "overlap": overlap,
            "fusion": fusion,
            "halo": halo,
            "executed_over_useful": _spread(ratios),
            "executed_over_useful_whole_guide": _spread(whole_guide),
            "executed_over_useful_all_windows": _spread(every),
        }
        if window == tile:
            useful = layout.tile_size**2 * sample_flops(flops, PAPER_STEPS) / (4 * window) ** 2
            row["paper_useful_tflop_per_tile"] = useful / 1e12
            row["paper_executed_tflop_per_tile"] = useful * statistics.fmean(ratios) / 1e12
        rows.append(row)
    return rows


def _ratios(layout: Layout, window: int, overlap: int, halo: int, inset: int) -> list[float]:
    """Executed / useful of a tile at each of its positions on the window lattice."""
    side = layout.tile_size // 4  # 10 m pixels
    return [
        executed_over_useful(
            tile_windows((side, side), halo, layout.block_size, window, overlap, (o, o), inset),
            window,
            layout.tile_size**2,
        )
        for o in range(0, math.lcm(window - 2 * overlap, 6), 6)
    ]


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}


def print_executed_vs_useful(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'layout':<20} {'tile':>6} {'block':>6} {'window':>6} {'overlap':>7} {'halo':>5}  "
        f"{'fusion':<36} {'executed / useful (min-max)':>28} {'whole guide':>12} "
        f"{'all windows':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r["executed_over_useful"]
        print(
            f"{r['layout']:<20} {r['tile_size']:>6} {r['block_size'] or 'whole':>6} "
            f"{r['window']:>6} {r['overlap']:>7} {r['halo']:>5}  {r['fusion']:<36} "
            f"{ratio['mean']:>14.3f} ({ratio['min']:.3f}-{ratio['max']:.3f}) "
            f"{r['executed_over_useful_whole_guide']['mean']:>12.3f} "
            f"{r['executed_over_useful_all_windows']['mean']:>12.3f}"
        )


def peak_tflops(device: torch.device, precision: str) -> tuple[str, float] | None:
    """(peak's name, vendor dense peak) for this GPU and precision, if the device is known.

    fp32 convolutions run on TF32 tensor cores when cuDNN allows it (PyTorch's default), and
    they are almost all of the counted FLOPs, so fp32 is measured against the TF32 peak then.
    """
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in PEAKS:
        if fragment in name:
            if precision == "fp32" and torch.backends.cudnn.allow_tf32:
                return "tf32", peaks["tf32"]
            return precision, peaks[precision]
    return None


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def benchmark(
    net: DiffFuSR, args: argparse.Namespace, device: torch.device, flops: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], torch.Tensor]]:
    """Timing rows per (precision, steps), and the outputs in reflectance for comparison."""
    hr = net.config.scale * args.tile
    generator = torch.Generator().manual_seed(SEED)
    lr = (torch.rand(args.batch, 3, args.tile, args.tile, generator=generator) * 0.4).to(device)
    lr = net.normalize(lr)
    x_t = torch.randn(args.batch, 3, hr, hr, generator=generator).to(device)
    rows: list[dict[str, Any]] = []
    outputs: dict[tuple[str, int], torch.Tensor] = {}
    for precision in args.precision:
        with torch.inference_mode(), autocast(precision, device):
            try:  # warm-up: kernel selection, allocator, first-call overheads
                context, degradation = net.condition(lr)
                net.sample(context, degradation, x_t, steps=1)
            except RuntimeError as exc:  # bf16 kernels missing on this device
                print(f"{precision}: skipped ({exc})")
                continue
            cond_s, (context, degradation) = timed(
                functools.partial(net.condition, lr), args.repeats, device
            )
            for steps in args.steps:
                sample = functools.partial(net.sample, context, degradation, x_t, steps)
                sample_s, out = timed(sample, args.repeats, device)
                outputs[precision, steps] = net.denormalize(out.float()).cpu()
                total = cond_s + sample_s
                work = args.batch * sample_flops(flops, steps)
                row = {
                    "precision": precision,
                    "autocast": None if precision == "fp32" else device.type,
                    "steps": steps,
                    "condition_s": cond_s,
                    "sample_s": sample_s,
                    "tile_latency_s": total / args.batch,
                    "output_px_per_s": args.batch * hr * hr / total,
                    "counted_tflop": work / 1e12,
                    "achieved_tflop_per_s": work / total / 1e12,
                }
                peak = peak_tflops(device, precision)
                if peak is not None:
                    row["peak"] = {"name": peak[0], "tflop_per_s": peak[1]}
                    row["peak_fraction"] = row["achieved_tflop_per_s"] / peak[1]
                rows.append(row)
    return rows, outputs


def bf16_change(outputs: dict[tuple[str, int], torch.Tensor]) -> dict[int, dict[str, float]]:
    """Max and mean |bf16 − fp32| of the sampled reflectance, same LR input and initial noise."""
    change = {}
    for (precision, steps), out in outputs.items():
        if precision == "bf16" and ("fp32", steps) in outputs:
            diff = (out - outputs["fp32", steps]).abs()
            change[steps] = {"max_abs": diff.max().item(), "mean_abs": diff.mean().item()}
    return change


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'precision':<22} {'steps':>5} {'cond s':>8} {'sample s':>9} {'s/tile':>8} "
        f"{'Mpx/s':>8} {'TFLOP/s':>8} {'% peak':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        label = r["precision"] + (" (CPU autocast)" if r["autocast"] == "cpu" else "")
        fraction = f"{100 * r['peak_fraction']:6.1f}%" if "peak_fraction" in r else f"{'-':>7}"
        print(
            f"{label:<22} {r['steps']:>5} {r['condition_s']:8.3f} {r['sample_s']:9.3f} "
            f"{r['tile_latency_s']:8.3f} {r['output_px_per_s'] / 1e6:8.4f} "
            f"{r['achieved_tflop_per_s']:8.4f} {fraction}"
        )


def parameters(net: DiffFuSR) -> dict[str, int]:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {
        "unet": count(net.ema),
        "rrdb_encoder": count(net.encoder),
        "degradation_encoder": count(net.E),
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        choices=["paper", "small", "demo"],
        help="model sizes (default: paper on cuda, small on cpu)",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--tile", type=int, help="LR window side in 10 m px (default: 64 cuda, 32 cpu)")
    p.add_argument("--batch", type=int, help="windows per batch (default: 8 cuda, 1 cpu)")
    p.add_argument("--steps", type=int, nargs="+", default=[20, 10, 5])
    p.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, help="timed runs, median reported (3 cuda, 1 cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--out", help="JSON file (default: under benchmarks/results/)")
    args = p.parse_args()
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    args.config = args.config or ("paper" if gpu else "small")
    args.tile = args.tile or (64 if gpu else 32)
    args.batch = args.batch or (8 if gpu else 1)
    args.repeats = args.repeats or (3 if gpu else 1)
    if args.tile < 8 or args.tile % 8:  # the paper U-Net needs 4·tile divisible by 32
        p.error("--tile must be a multiple of 8")
    if min(args.steps) < 1 or args.batch < 1 or args.repeats < 1:
        p.error("--steps, --batch and --repeats must be at least 1")
    args.out = args.out or f"benchmarks/results/sr_model-{args.config}-{args.device}.json"
    return args


def paper_costs(tile: int) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The paper configuration's FLOPs on one tile, their summary, and executed against useful
    windows of the layouts, printed: the same at any steps, samples and hardware."""
    paper = CONFIGS["paper"]
    print(
        f"FLOPs of the paper configuration, one {tile}-px tile "
        f"({paper.scale * tile}² output px), conv and matmul only:"
    )
    paper_flops = flops_of(paper, tile)
    paper_summary = print_flops(paper_flops, tile, paper.scale)
    print(
        "\nExecuted vs useful at the defaults: U-Net windows evaluated for a tile holding data "
        "everywhere\n(tile and block in 2.5 m / 10 m pixels, window, overlap and halo in 10 m "
        "pixels), over the tile's\npositions on the window lattice; the same at any steps, "
        "samples and hardware:"
    )
    layout_rows = executed_vs_useful(paper_flops, tile)
    print_executed_vs_useful(layout_rows)
    return paper_flops, paper_summary, layout_rows


def machine_facts(device: torch.device, load_start: float) -> dict[str, Any]:
    """What the timings ran on, and how busy the machine was (other jobs show here)."""
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paper_flops, paper_summary, layout_rows = paper_costs(args.tile)
    built = build(args.config, device)
    if built is None:
        return
    net, weights = built
    flops = paper_flops if args.config == "paper" else flops_of(net.config, args.tile)
    load_start = os.getloadavg()[0]  # other jobs on a shared machine show here
    print(
        f"\n{args.config} model ({weights}) on {device_name(device)}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()} of {os.cpu_count()} cores, load average "
        f"{load_start:.2f}; tile {args.tile} px, batch {args.batch}, "
        f"median of {args.repeats}"
    )
    rows, outputs = benchmark(net, args, device, flops)
    print_table(rows)
    change = bf16_change(outputs)
    for steps, diff in change.items():
        print(
            f"bf16 vs fp32, {steps} steps: max |Δ| {diff['max_abs']:.5f}, "
            f"mean |Δ| {diff['mean_abs']:.5f} reflectance"
        )
    result = {
        "config": args.config,
        "sizes": dataclasses.asdict(net.config),
        "weights": weights,
        "parameters": parameters(net),
        "machine": machine_facts(device, load_start),
        "tile": args.tile,
        "output_px_per_tile": (net.config.scale * args.tile) ** 2,
        "batch": args.batch,
        "repeats": args.repeats,
        "flops_per_window": flops,
        "paper_flops_per_window": {**paper_flops, **paper_summary},
        "executed_vs_useful": layout_rows,
        "runs": rows,
        "bf16_vs_fp32_reflectance": change,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()

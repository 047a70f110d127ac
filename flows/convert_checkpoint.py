"""Convert a DiffFuSR Lightning checkpoint into a compact safetensors file of its inference weights.

    python -m flows.convert_checkpoint last.ckpt difffusr-sr.safetensors

Keeps the EMA U-Net, the spatial and degradation encoders and the noise schedule, with the
network configuration in the file's header; prints the new file's sha256 to pin it with.
"""

from __future__ import annotations

import argparse
import logging
import sys

from flows._cli import OneLineErrors
from pipeline.errors import UserError
from pipeline.models.weights import convert_lightning_checkpoint


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python -m flows.convert_checkpoint",
        description="Write the EMA inference weights of a DiffFuSR SR Lightning checkpoint as "
        "a compact safetensors file (network configuration in its header).",
    )
    p.add_argument(
        "src",
        help="Lightning checkpoint: path, fsspec URL (s3://, https://...) or "
        "hf://org/repo[@revision]/path",
    )
    p.add_argument("dst", help="safetensors file to write (local path)")
    p.add_argument("--sha256", metavar="HEX", help="refuse a checkpoint whose sha256 differs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # no retry chatter
    try:
        out = convert_lightning_checkpoint(args.src, args.dst, sha256=args.sha256)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(f"wrote {out.path} ({out.path.stat().st_size:,} bytes)")
    print(f"sha256 {out.sha256}")
    print(f"use it with: --weights {out.path} --weights-sha256 {out.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

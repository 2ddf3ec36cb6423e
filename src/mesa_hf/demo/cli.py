"""``mesa-hf demo [CHECKPOINT] [--host 127.0.0.1] [--port 7860]``: serve the web demo of a checkpoint."""

from __future__ import annotations

import argparse

from .engine import DEFAULT_CHECKPOINT, DemoLimits


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        nargs="?",
        default=None,
        help=f"checkpoint folder or Hugging Face Hub id (default: {DEFAULT_CHECKPOINT}, written by `make demo`)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="TCP port")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast precision")
    parser.add_argument(
        "--max-upload-size", default=DemoLimits.max_upload_size, help="largest upload accepted, e.g. 25mb"
    )
    parser.add_argument(
        "--concurrency", type=int, default=DemoLimits.concurrency_limit, help="model runs at the same time"
    )


def run_demo(args: argparse.Namespace) -> int:
    from .engine import resolve_checkpoint

    checkpoint = resolve_checkpoint(args.checkpoint)  # fails early, before importing Gradio
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {args.concurrency}")
    from .app import build_demo, launch_demo

    limits = DemoLimits(max_upload_size=args.max_upload_size, concurrency_limit=args.concurrency)
    demo = build_demo(checkpoint, device=args.device, dtype=args.dtype, limits=limits)
    print(f"mesa-hf demo: serving {checkpoint} on http://{args.host}:{args.port} (Ctrl+C stops)", flush=True)
    launch_demo(demo, host=args.host, port=args.port)
    return 0

"""How much batch padding changes the depth of the padded image's real pixels (MeSaImageProcessor pads a batch of
different sizes to the largest, bottom/right, zeros after normalisation).

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/padding_influence.py [--checkpoint DIR] [IMAGE ...]``.
Each image is resized by the processor, predicted alone, then predicted padded at the bottom (rows) or the right
(columns) as it would be beside a taller / wider image; the table gives the relative depth change
``|padded - alone| / alone`` over the image's own pixels (median, 99th percentile, max) and how far from the padded
edge (in pixels of the model input) the change still exceeds 1 %, and the share of pixels changed by more than
1 %. Replicate (edge) padding is measured beside the processor's zeros for comparison. Without a checkpoint the
tests' tiny random model is used; without images, random smooth images.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mesa_hf import MeSaImageProcessor
from mesa_hf.evaluation.inference import load_checkpoint


def _tiny_model():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers import tiny_depth_model

    return tiny_depth_model(seed=0), MeSaImageProcessor(size={"height": 96, "width": 128})


def _smooth_images(count: int, height: int, width: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    coarse = [rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8) for _ in range(count)]
    return [Image.fromarray(c).resize((width, height), Image.BILINEAR) for c in coarse]


def influence(model, pixel_values: torch.Tensor, side: str, amount: int, mode: str) -> dict[str, float]:
    """Relative depth change of the real pixels when `pixel_values` (1, 3, h, w) is padded by `amount` pixels."""
    height, width = pixel_values.shape[-2:]
    padding = (0, amount, 0, 0) if side == "right" else (0, 0, 0, amount)
    padded = (
        F.pad(pixel_values, padding, mode="constant", value=0.0)
        if mode == "zeros"
        else F.pad(pixel_values, padding, mode="replicate")
    )
    with torch.no_grad():
        alone = model(pixel_values=pixel_values).predicted_depth[0]
        with_padding = model(pixel_values=padded).predicted_depth[0, :height, :width]
    relative = ((with_padding - alone).abs() / alone).numpy()
    profile = relative.max(axis=0)[::-1] if side == "right" else relative.max(axis=1)[::-1]  # from the padded edge
    above = np.nonzero(profile > 0.01)[0]
    return {
        "median": float(np.median(relative)),
        "p99": float(np.quantile(relative, 0.99)),
        "max": float(relative.max()),
        "share": float((relative > 0.01).mean()),
        "reach_px": int(above.max() + 1) if above.size else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder or Hub id (default: tiny random model)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="processor size")
    args = parser.parse_args()
    model, processor = load_checkpoint(args.checkpoint) if args.checkpoint else _tiny_model()
    model.eval()
    size = args.size or (processor.size["height"], processor.size["width"])
    images = [Image.open(p).convert("RGB") for p in args.images] or _smooth_images(3, *size)
    kwargs = {"size": {"height": size[0], "width": size[1]}, "return_tensors": "pt"}
    print(f"model: {args.checkpoint or 'tiny random (tests.helpers.tiny_depth_model)'}; input {size[0]}x{size[1]}")
    print(f"{'padding':<22} {'median':>8} {'p99':>8} {'max':>8} {'>1% within':>11} {'pixels >1%':>11}")
    for side in ("right", "bottom"):
        for amount in (32, size[1] // 2 if side == "right" else size[0] // 2):
            for mode in ("zeros", "replicate"):
                rows = [
                    influence(model, processor(image, **kwargs)["pixel_values"], side, amount, mode) for image in images
                ]
                mean = {k: float(np.mean([r[k] for r in rows])) for k in ("median", "p99", "share")}
                worst = {k: float(np.max([r[k] for r in rows])) for k in ("max", "reach_px")}
                label = f"{side} +{amount} {mode}"
                print(
                    f"{label:<22} {mean['median']:>8.2%} {mean['p99']:>8.2%} {worst['max']:>8.2%} "
                    f"{int(worst['reach_px']):>8} px {mean['share']:>11.1%}"
                )


if __name__ == "__main__":
    main()

"""Evaluation used between and after training stages: depth metrics on a held-out set, the "average training
depth map" baseline, the held-out SimMIM loss, and a colour-mapped depth picture.

Depth metrics come from `mesa_hf.evaluation.compute_depth_metrics` when that package is installed; otherwise a
small local implementation of the same GLPDepth/MIM-Depth formulas (per-image metrics over valid pixels,
``min_depth < gt < max_depth``, averaged over images) is used. The protocol here never crops (synthetic and
arbitrary held-out sets); `median_scaling` scales each prediction by ``median(gt) / median(pred)`` over valid
pixels first (the Monodepth2 protocol for scale-ambiguous models).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "d1", "d2", "d3")


def _local_depth_metrics(
    pred: torch.Tensor, gt: torch.Tensor, min_depth: float, max_depth: float, median_scaling: bool
) -> dict[str, float]:
    """Per-image GLPDepth metrics averaged over the batch; pred, gt (B, H, W) metres."""
    per_image = []
    for p, g in zip(pred.double(), gt.double()):
        valid = torch.isfinite(g) & (g > min_depth) & (g < max_depth)
        if not valid.any():
            continue
        p, g = p[valid], g[valid]
        p = torch.where(torch.isfinite(p), p, torch.full_like(p, min_depth)).clamp_min(min_depth)
        if median_scaling:
            p = p * (g.quantile(0.5) / p.quantile(0.5))
        ratio = torch.maximum(p / g, g / p)
        per_image.append(
            {
                "abs_rel": ((p - g).abs() / g).mean().item(),
                "sq_rel": ((p - g) ** 2 / g).mean().item(),
                "rmse": ((p - g) ** 2).mean().sqrt().item(),
                "rmse_log": ((p.log() - g.log()) ** 2).mean().sqrt().item(),
                "log10": (p.log10() - g.log10()).abs().mean().item(),
                "d1": (ratio < 1.25).double().mean().item(),
                "d2": (ratio < 1.25**2).double().mean().item(),
                "d3": (ratio < 1.25**3).double().mean().item(),
            }
        )
    if not per_image:
        raise ValueError("depth metrics: no image of the evaluation set has valid ground truth in range")
    return {k: float(np.mean([m[k] for m in per_image])) for k in DEPTH_METRICS}


def depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    median_scaling: bool = False,
) -> dict[str, float]:
    """AbsRel, SqRel, RMSE, RMSE(log), log10, δ1-3 of predictions `pred` (B, H, W) against `gt` (B, H, W), metres.

    Uses `mesa_hf.evaluation.compute_depth_metrics` (no crop) when available, else the same formulas locally.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"depth_metrics: prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}")
    try:
        from mesa_hf.evaluation import compute_depth_metrics
    except ImportError:
        return _local_depth_metrics(pred, gt, min_depth, max_depth, median_scaling)
    metrics = compute_depth_metrics(
        pred, gt, min_depth=min_depth, max_depth=max_depth, crop=None, median_scaling=median_scaling
    )
    return {k: float(metrics[k]) for k in DEPTH_METRICS}


def _batches(dataset, batch_size: int) -> Iterable[dict[str, torch.Tensor]]:
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield {k: torch.stack([r[k] for r in rows]) for k in rows[0] if isinstance(rows[0][k], torch.Tensor)}


@torch.no_grad()
def predict_depth(model: torch.nn.Module, dataset, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model(pixel_values=...)` over an eval-transformed depth dataset; returns (pred, gt), each (N, H, W)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, gts = [], []
    for batch in _batches(dataset, batch_size):
        out = model(pixel_values=batch["pixel_values"].to(device))
        preds.append(out.predicted_depth.float().cpu())
        gts.append(batch["labels"].float())
    model.train(was_training)
    return torch.cat(preds), torch.cat(gts)


def evaluate_depth(
    model: torch.nn.Module,
    dataset,
    median_scaling: bool = False,
    batch_size: int = 16,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
) -> dict[str, float]:
    """Depth metrics of `model` on an eval-transformed depth dataset (`pixel_values`, `labels` per row)."""
    if max_depth is None:
        max_depth = float(getattr(getattr(model, "config", None), "max_depth", 10.0))
    pred, gt = predict_depth(model, dataset, batch_size)
    return depth_metrics(pred, gt, min_depth, max_depth, median_scaling)


def mean_depth_map(dataset, key: str = "labels") -> torch.Tensor:
    """Per-pixel mean of the valid (> 0, finite) depth over a transformed depth dataset: the "average training depth
    map" baseline, (H, W) metres. Pixels never valid get the mean over all valid pixels."""
    total, count = None, None
    for i in range(len(dataset)):
        depth = dataset[i][key].double()
        valid = torch.isfinite(depth) & (depth > 0)
        depth = torch.where(valid, depth, torch.zeros_like(depth))
        if total is None:
            total, count = torch.zeros_like(depth), torch.zeros_like(depth)
        if depth.shape != total.shape:
            raise ValueError(
                f"mean_depth_map: rows differ in size ({tuple(depth.shape)} vs {tuple(total.shape)}); resize them first"
            )
        total += depth
        count += valid.double()
    if total is None or count.sum() == 0:
        raise ValueError("mean_depth_map: the dataset has no valid depth")
    overall = total.sum() / count.sum()
    return torch.where(count > 0, total / count.clamp_min(1), overall).float()


def evaluate_constant_map(
    depth_map: torch.Tensor, dataset, median_scaling: bool = False, min_depth: float = 1e-3, max_depth: float = 10.0
) -> dict[str, float]:
    """Metrics of predicting the same depth map (H, W) for every row of an eval-transformed depth dataset."""
    gt = torch.stack([dataset[i]["labels"].float() for i in range(len(dataset))])
    if gt.shape[-2:] != depth_map.shape:
        raise ValueError(f"baseline map {tuple(depth_map.shape)} and ground truth {tuple(gt.shape[-2:])} differ")
    return depth_metrics(depth_map.expand_as(gt).clone(), gt, min_depth, max_depth, median_scaling)


@torch.no_grad()
def evaluate_masked(model: torch.nn.Module, dataset, batch_size: int = 16) -> dict[str, float]:
    """Mean SimMIM loss of `model` over a masked-transformed dataset (`pixel_values`, `bool_masked_pos` per row)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses, weights = [], []
    for batch in _batches(dataset, batch_size):
        out = model(pixel_values=batch["pixel_values"].to(device), bool_masked_pos=batch["bool_masked_pos"].to(device))
        losses.append(float(out.loss))
        weights.append(len(batch["pixel_values"]))
    model.train(was_training)
    return {"masked_loss": float(np.average(losses, weights=weights))}


def frozen_rows(dataset, transform_factory: Callable[[], Callable]) -> list[dict[str, torch.Tensor]]:
    """Materialise a held-out set once with a freshly seeded transform, so every evaluation sees the same rows
    (random masks or crops included)."""
    transformed = dataset.with_transform(transform_factory())
    return [transformed[i] for i in range(len(transformed))]


def colorize_depth(depth: np.ndarray | torch.Tensor, cmap: str = "magma_r") -> np.ndarray:
    """A depth map (H, W) metres -> uint8 RGB (H, W, 3) with a matplotlib colour map (near = bright with magma_r
    reversed: near is light, far is dark), normalised between the 2nd and 98th percentile of the finite values."""
    from matplotlib import colormaps

    depth = np.asarray(depth.detach().cpu() if isinstance(depth, torch.Tensor) else depth, dtype=np.float64)
    finite = np.isfinite(depth)
    if not finite.any():
        raise ValueError("colorize_depth: the depth map has no finite value")
    lo, hi = np.percentile(depth[finite], [2, 98])
    scaled = np.clip((np.where(finite, depth, hi) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return (colormaps[cmap](scaled)[..., :3] * 255 + 0.5).astype(np.uint8)


def save_depth_picture(depth, path: str | Path, image=None) -> Path:
    """Write the colour-mapped depth (and the RGB `image` beside it, when given) as a PNG."""
    from PIL import Image

    coloured = colorize_depth(depth)
    if image is not None:
        rgb = np.asarray(Image.fromarray(np.asarray(image)).convert("RGB").resize(coloured.shape[1::-1]))
        coloured = np.concatenate([rgb, coloured], axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coloured).save(path)
    return path


__all__ = [
    "DEPTH_METRICS",
    "colorize_depth",
    "depth_metrics",
    "evaluate_constant_map",
    "evaluate_depth",
    "evaluate_masked",
    "frozen_rows",
    "mean_depth_map",
    "predict_depth",
    "save_depth_picture",
]

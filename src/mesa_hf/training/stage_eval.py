"""Evaluation used between and after training stages: depth metrics on a held-out set, the "average training
depth map" baseline, the held-out SimMIM loss, and a colour-mapped depth picture.

Held-out evaluation is sharded over the processes: each process runs its share of the rows (an Accelerate-prepared
DataLoader), streams its predictions through `mesa_hf.evaluation.DepthMetricAccumulator` (per-image metrics,
``min_depth < gt < max_depth``, no crop), and the per-image metrics are gathered with ``gather_for_metrics``
(which drops the rows Accelerate repeats to even out the last batch) and averaged over images, so every process
returns the same numbers and no process holds the rows or the predictions. `median_scaled_*` metrics scale each
prediction by ``median(gt) / median(pred)`` first (the Monodepth2 protocol for scale-ambiguous models).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..evaluation.io import colorize_depth
from ..evaluation.metrics import DepthMetricAccumulator, compute_depth_metrics
from .stage_data import stack_collator

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "d1", "d2", "d3")
MEDIAN_SCALED_METRICS = ("abs_rel", "rmse", "d1")


def depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    median_scaling: bool = False,
) -> dict[str, float]:
    """AbsRel, SqRel, RMSE, RMSE(log), log10, δ1-3 of predictions `pred` (B, H, W) against `gt` (B, H, W), metres,
    by `mesa_hf.evaluation.compute_depth_metrics` without crop."""
    if pred.shape != gt.shape:
        raise ValueError(f"depth_metrics: prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}")
    metrics = compute_depth_metrics(
        pred, gt, min_depth=min_depth, max_depth=max_depth, crop=None, median_scaling=median_scaling
    )
    return {k: float(metrics[k]) for k in DEPTH_METRICS}


def eval_dataloader(dataset, batch_size: int = 8, accelerator: Any | None = None) -> DataLoader:
    """A DataLoader over an eval-transformed dataset; sharded over the processes when `accelerator` is given."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=stack_collator)
    return accelerator.prepare_data_loader(loader) if accelerator is not None else loader


def _gather(accelerator: Any | None, values: torch.Tensor) -> torch.Tensor:
    return accelerator.gather_for_metrics(values) if accelerator is not None else values


def _unwrap(model: torch.nn.Module, accelerator: Any | None) -> torch.nn.Module:
    """The bare model, with rank 0's buffers (BatchNorm statistics) on every process, so that every shard is
    evaluated with the weights the main process saves."""
    if accelerator is None:
        return model
    model = accelerator.unwrap_model(model)
    if accelerator.num_processes > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer.data, src=0)
    return model


@torch.no_grad()
def _stream_depth(
    predict: Callable[[torch.Tensor], torch.Tensor],
    loader,
    accelerator: Any | None,
    min_depth: float,
    max_depth: float,
    median_scaled: bool,
) -> dict[str, float]:
    metric = DepthMetricAccumulator(min_depth=min_depth, max_depth=max_depth, crop=None)
    scaled = DepthMetricAccumulator(min_depth=min_depth, max_depth=max_depth, crop=None, median_scaling=True)
    sums, count = torch.zeros(len(DEPTH_METRICS) + len(MEDIAN_SCALED_METRICS), dtype=torch.float64), 0
    for batch in loader:
        pred = predict(batch["pixel_values"]).float().cpu()
        gt = batch["labels"].float().cpu()
        rows = [[m[k] for k in DEPTH_METRICS] for m in metric.update(pred, gt)]
        if median_scaled:
            rows = [r + [m[k] for k in MEDIAN_SCALED_METRICS] for r, m in zip(rows, scaled.update(pred, gt))]
        else:
            rows = [r + [0.0] * len(MEDIAN_SCALED_METRICS) for r in rows]
        device = batch["labels"].device
        gathered = _gather(accelerator, torch.tensor(rows, dtype=torch.float64, device=device)).cpu()
        sums += gathered.sum(0)
        count += len(gathered)
    if count == 0:
        raise ValueError("held-out evaluation: no image of the evaluation set has valid ground truth in range")
    means = (sums / count).tolist()
    result = dict(zip(DEPTH_METRICS, means[: len(DEPTH_METRICS)]))
    if median_scaled:
        result.update({f"median_scaled_{k}": v for k, v in zip(MEDIAN_SCALED_METRICS, means[len(DEPTH_METRICS) :])})
    return result


def evaluate_depth(
    model: torch.nn.Module,
    loader,
    accelerator: Any | None = None,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    median_scaled: bool = True,
) -> dict[str, float]:
    """Depth metrics of `model` over a held-out `loader` (`eval_dataloader`; rows with `pixel_values`, `labels`),
    metric and (with `median_scaled`) ``median_scaled_abs_rel/rmse/d1``. `max_depth` defaults to the model's."""
    bare = _unwrap(model, accelerator)
    if max_depth is None:
        max_depth = float(bare.config.max_depth)
    was_training = bare.training
    bare.eval()
    device = next(bare.parameters()).device
    try:
        return _stream_depth(
            lambda x: bare(pixel_values=x.to(device)).predicted_depth,
            loader,
            accelerator,
            min_depth,
            max_depth,
            median_scaled,
        )
    finally:
        bare.train(was_training)


def evaluate_constant_map(
    depth_map: torch.Tensor,
    loader,
    accelerator: Any | None = None,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
) -> dict[str, float]:
    """Metrics (and median-scaled ones) of predicting the same depth map (H, W) for every held-out row."""

    def predict(pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[-2:] != depth_map.shape:
            raise ValueError(
                f"baseline map {tuple(depth_map.shape)} and held-out rows {tuple(pixel_values.shape[-2:])} differ"
            )
        return depth_map.expand(len(pixel_values), *depth_map.shape)

    return _stream_depth(predict, loader, accelerator, min_depth, max_depth, median_scaled=True)


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


@torch.no_grad()
def evaluate_masked(model: torch.nn.Module, loader, accelerator: Any | None = None) -> dict[str, float]:
    """Mean SimMIM loss of `model` over a held-out `loader` (rows with `pixel_values`, `bool_masked_pos`), weighted
    by rows (every row masks the same number of patches, so this is the loss of all rows at once)."""
    bare = _unwrap(model, accelerator)
    was_training = bare.training
    bare.eval()
    device = next(bare.parameters()).device
    total, count = 0.0, 0
    try:
        for batch in loader:
            out = bare(
                pixel_values=batch["pixel_values"].to(device), bool_masked_pos=batch["bool_masked_pos"].to(device)
            )
            losses = (
                out.loss.detach()
                .double()
                .reshape(1)
                .expand(len(batch["pixel_values"]))
                .to(batch["pixel_values"].device)
            )
            gathered = _gather(accelerator, losses.contiguous()).cpu()
            total += float(gathered.sum())
            count += len(gathered)
    finally:
        bare.train(was_training)
    return {"masked_loss": total / max(count, 1)}


def save_depth_picture(depth, path: str | Path, image=None) -> Path:
    """Write the colour-mapped depth (`mesa_hf.evaluation.io.colorize_depth`; the RGB `image` beside it, when
    given) as a PNG."""
    from PIL import Image

    depth = depth.detach().float().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
    coloured = colorize_depth(np.squeeze(depth))
    if image is not None:
        rgb = np.asarray(Image.fromarray(np.asarray(image)).convert("RGB").resize(coloured.shape[1::-1]))
        coloured = np.concatenate([rgb, coloured], axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coloured).save(path)
    return path


__all__ = [
    "DEPTH_METRICS",
    "depth_metrics",
    "eval_dataloader",
    "evaluate_constant_map",
    "evaluate_depth",
    "evaluate_masked",
    "mean_depth_map",
    "save_depth_picture",
]

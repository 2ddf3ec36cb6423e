"""The objectives' maths: small pure functions on torch tensors (NCHW).

This file is copied next to checkpoints written for sharing, so it imports only torch and the standard library.
"""

from __future__ import annotations

import torch


def valid_depth_mask(target: torch.Tensor) -> torch.Tensor:
    """Pixels that carry ground truth: finite and > 0 (depth in metres, any shape). Returns a bool tensor."""
    return torch.isfinite(target) & (target > 0)


def silog_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    lambd: float = 0.5,
) -> torch.Tensor:
    """Scale-invariant log loss of MIM-Depth / GLPDepth: ``sqrt(mean(d^2) - lambd * mean(d)^2)``.

    ``d = log(pred) - log(target)`` over the valid pixels of the whole batch. `pred` and `target` are depths in
    metres of the same shape (e.g. (B, H, W)); `valid_mask` defaults to `target > 0` and finite. Returns a scalar.
    Raises `ValueError` on mismatched shapes, no valid pixel, or non-positive predictions at valid pixels.
    """
    if pred.shape != target.shape:
        raise ValueError(f"silog_loss: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if valid_mask is None:
        valid_mask = valid_depth_mask(target)
    else:
        if valid_mask.shape != target.shape:
            raise ValueError(f"silog_loss: valid_mask shape {tuple(valid_mask.shape)} != target {tuple(target.shape)}")
        valid_mask = valid_mask.bool() & valid_depth_mask(target)
    if not bool(valid_mask.any()):
        raise ValueError("silog_loss: the target has no valid pixel (all <= 0 or non-finite)")
    pred_valid = pred[valid_mask]
    if bool((pred_valid <= 0).any()):
        raise ValueError("silog_loss: predictions must be > 0 metres at valid pixels")
    diff = torch.log(pred_valid) - torch.log(target[valid_mask])
    variance = (diff**2).mean() - lambd * diff.mean() ** 2
    # clamp: rounding can make the variance a hair below zero when all log-ratios are equal
    return torch.sqrt(variance.clamp_min(0.0) + 0.0)


__all__ = ["silog_loss", "valid_depth_mask"]

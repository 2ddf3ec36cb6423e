"""The objectives' maths: small pure functions on torch tensors (NCHW).

This file is copied next to checkpoints written for sharing, so it imports only torch and the standard library.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


def ground_truth_mask(target: torch.Tensor) -> torch.Tensor:
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
    A batch without any valid pixel (sparse ground truth: KITTI, raw NYUv2 frames) gives a zero loss, still part of
    the graph so `backward()` works, with zero gradients, and logs a warning once per process.
    Raises `ValueError` on mismatched shapes or non-positive predictions at valid pixels.
    """
    if pred.shape != target.shape:
        raise ValueError(f"silog_loss: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if valid_mask is None:
        valid_mask = ground_truth_mask(target)
    else:
        if valid_mask.shape != target.shape:
            raise ValueError(f"silog_loss: valid_mask shape {tuple(valid_mask.shape)} != target {tuple(target.shape)}")
        valid_mask = valid_mask.bool() & ground_truth_mask(target)
    pred_valid = pred[valid_mask]
    if pred_valid.numel() == 0:
        _warn_once("silog_loss: a batch has no valid ground-truth pixel (all <= 0 or non-finite); its loss is 0")
        return pred_valid.sum()  # 0, connected to `pred`: backward gives zero gradients
    if bool((pred_valid <= 0).any()):
        raise ValueError("silog_loss: predictions must be > 0 metres at valid pixels")
    diff = torch.log(pred_valid) - torch.log(target[valid_mask])
    variance = (diff**2).mean() - lambd * diff.mean() ** 2
    # Rounding can make the variance a hair below zero when all log-ratios are equal, and sqrt's gradient at 0 is
    # infinite (NaN through the chain rule): a variance <= 0 gives a loss of 0 with zero gradients.
    floored = variance.clamp_min(torch.finfo(variance.dtype).tiny)
    return torch.where(variance > 0, floored.sqrt(), torch.zeros_like(variance))


def _check_nchw(name: str, tensor: torch.Tensor) -> None:
    if tensor.ndim != 4:
        raise ValueError(f"{name} must be a 4-D (B, C, H, W) tensor, got shape {tuple(tensor.shape)}")


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Monodepth2's SSIM dissimilarity ``clamp((1 - SSIM) / 2, 0, 1)`` per pixel and channel.

    Local statistics come from 3x3 average pooling of reflection-padded images, with ``C1 = 0.01^2`` and
    ``C2 = 0.03^2`` (images in [0, 1]). `x`, `y`: (B, C, H, W) with H, W >= 2. Returns (B, C, H, W); 0 where equal.
    """
    _check_nchw("ssim: x", x)
    if x.shape != y.shape:
        raise ValueError(f"ssim: x shape {tuple(x.shape)} != y shape {tuple(y.shape)}")
    if min(x.shape[-2:]) < 2:
        raise ValueError(f"ssim: images must be at least 2x2 (reflection padding), got {tuple(x.shape[-2:])}")
    c1, c2 = 0.01**2, 0.03**2
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)
    mu_y = F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return torch.clamp((1 - numerator / denominator) / 2, 0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Monodepth2's reprojection error: ``alpha * mean_c(ssim) + (1 - alpha) * mean_c |pred - target|``.

    `pred`, `target`: (B, C, H, W) images in [0, 1]. Returns the per-pixel error (B, 1, H, W).
    """
    _check_nchw("photometric_error: pred", pred)
    if pred.shape != target.shape:
        raise ValueError(f"photometric_error: pred shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    l1 = (target - pred).abs().mean(1, keepdim=True)
    ssim_term = ssim(pred, target).mean(1, keepdim=True)
    return alpha * ssim_term + (1 - alpha) * l1


def edge_aware_smoothness(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Monodepth2's edge-aware smoothness of a disparity map, after dividing it by its per-image mean.

    ``mean(|dx d| * exp(-mean_c |dx I|)) + mean(|dy d| * exp(-mean_c |dy I|))`` with ``d = disp / (mean(disp) +
    1e-7)``. `disp`: (B, 1, H, W); `image`: (B, C, H, W) at the same resolution. Returns a scalar.
    """
    _check_nchw("edge_aware_smoothness: disp", disp)
    _check_nchw("edge_aware_smoothness: image", image)
    if disp.shape[0] != image.shape[0] or disp.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"edge_aware_smoothness: disp {tuple(disp.shape)} and image {tuple(image.shape)} differ in batch or size"
        )
    if min(disp.shape[-2:]) < 2:
        raise ValueError(f"edge_aware_smoothness: disp must be at least 2x2, got {tuple(disp.shape[-2:])}")
    disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    grad_disp_x = (disp[:, :, :, :-1] - disp[:, :, :, 1:]).abs()
    grad_disp_y = (disp[:, :, :-1, :] - disp[:, :, 1:, :]).abs()
    grad_image_x = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(1, keepdim=True)
    grad_image_y = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(1, keepdim=True)
    return (grad_disp_x * torch.exp(-grad_image_x)).mean() + (grad_disp_y * torch.exp(-grad_image_y)).mean()


def min_reprojection_loss(
    reprojection_errors: torch.Tensor,
    identity_errors: torch.Tensor | None = None,
    tie_noise: float = 1e-5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monodepth2's per-pixel minimum reprojection with auto-masking.

    `reprojection_errors`: (B, S, H, W), the photometric error of each warped source frame. `identity_errors`:
    (B, S', H, W), the error of each *unwarped* source frame, or None to disable auto-masking. The identity
    errors, plus Gaussian noise of std `tie_noise` to break ties, join the minimum, so pixels that look the same
    without warping (static camera, objects moving with it) select an identity error.

    Returns ``(per_pixel_loss (B, 1, H, W), auto_mask (B, 1, H, W) bool)``; `auto_mask` is True where a warped
    frame gave the minimum (all True when `identity_errors` is None). The training loss is ``per_pixel_loss.mean()``.
    """
    _check_nchw("min_reprojection_loss: reprojection_errors", reprojection_errors)
    if identity_errors is None:
        loss, _ = reprojection_errors.min(dim=1, keepdim=True)
        return loss, torch.ones_like(loss, dtype=torch.bool)
    _check_nchw("min_reprojection_loss: identity_errors", identity_errors)
    if identity_errors.shape[0] != reprojection_errors.shape[0] or (
        identity_errors.shape[-2:] != reprojection_errors.shape[-2:]
    ):
        raise ValueError(
            f"min_reprojection_loss: identity_errors {tuple(identity_errors.shape)} and reprojection_errors "
            f"{tuple(reprojection_errors.shape)} differ in batch or size"
        )
    if tie_noise > 0:
        noise = torch.randn(
            identity_errors.shape, generator=generator, device=identity_errors.device, dtype=identity_errors.dtype
        )
        identity_errors = identity_errors + noise * tie_noise
    combined = torch.cat([identity_errors, reprojection_errors], dim=1)
    loss, index = combined.min(dim=1, keepdim=True)
    return loss, index >= identity_errors.shape[1]


def mask_to_pixel_mask(bool_masked_pos: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """Upsample a patch mask to pixels: (B, h*w) or (B, h, w) on a ``patch_size`` grid -> float (B, 1, H, W).

    ``h = height // patch_size``, ``w = width // patch_size``; 1 = masked (transformers' `bool_masked_pos`).
    """
    if patch_size <= 0 or height % patch_size or width % patch_size:
        raise ValueError(
            f"mask_to_pixel_mask: height {height} and width {width} must be multiples of patch_size {patch_size}"
        )
    grid_h, grid_w = height // patch_size, width // patch_size
    if bool_masked_pos.ndim == 2 and bool_masked_pos.shape[1] == grid_h * grid_w:
        mask = bool_masked_pos.reshape(-1, grid_h, grid_w)
    elif bool_masked_pos.ndim == 3 and tuple(bool_masked_pos.shape[1:]) == (grid_h, grid_w):
        mask = bool_masked_pos
    else:
        raise ValueError(
            f"mask_to_pixel_mask: bool_masked_pos shape {tuple(bool_masked_pos.shape)} does not fit a "
            f"{grid_h}x{grid_w} patch grid (expected (B, {grid_h * grid_w}) or (B, {grid_h}, {grid_w}))"
        )
    mask = mask.float().repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
    return mask.unsqueeze(1).contiguous()


def simmim_loss(pixel_values: torch.Tensor, reconstruction: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's reconstruction loss: ``sum(|x - x_rec| * m) / (sum(m) + 1e-5) / C`` over masked pixels.

    `pixel_values` (the target, optionally normalised with `norm_targets`) and `reconstruction`: (B, C, H, W);
    `pixel_mask`: (B, 1, H, W), 1 = masked (see `mask_to_pixel_mask`). Returns a scalar.
    """
    _check_nchw("simmim_loss: pixel_values", pixel_values)
    if reconstruction.shape != pixel_values.shape:
        raise ValueError(
            f"simmim_loss: reconstruction {tuple(reconstruction.shape)} != pixel_values {tuple(pixel_values.shape)}"
        )
    batch, _, height, width = pixel_values.shape
    if tuple(pixel_mask.shape) != (batch, 1, height, width):
        raise ValueError(f"simmim_loss: pixel_mask must be {(batch, 1, height, width)}, got {tuple(pixel_mask.shape)}")
    pixel_mask = pixel_mask.to(pixel_values.dtype)
    per_pixel = (pixel_values - reconstruction).abs()
    return (per_pixel * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / pixel_values.shape[1]


def norm_targets(pixel_values: torch.Tensor, patch_size: int = 47) -> torch.Tensor:
    """SimMIM's normalised targets (Swin-V2): each pixel minus its local mean, over its local std.

    Local statistics: `patch_size` x `patch_size` average pooling (stride 1, zero padding not counted), with the
    unbiased variance ``var * n / (n - 1)`` clamped at 0; ``(x - mean) / sqrt(var + 1e-6)``. `pixel_values`:
    (B, C, H, W); `patch_size` must be odd. Returns (B, C, H, W).
    """
    _check_nchw("norm_targets: pixel_values", pixel_values)
    if patch_size < 3 or patch_size % 2 != 1:
        raise ValueError(f"norm_targets: patch_size must be an odd integer >= 3, got {patch_size}")
    pool = {"kernel_size": patch_size, "stride": 1, "padding": patch_size // 2}
    mean = F.avg_pool2d(pixel_values, count_include_pad=False, **pool)
    square_mean = F.avg_pool2d(pixel_values**2, count_include_pad=False, **pool)
    count = F.avg_pool2d(torch.ones_like(pixel_values), count_include_pad=True, **pool) * patch_size**2
    variance = ((square_mean - mean**2) * (count / (count - 1))).clamp_min(0.0)
    return (pixel_values - mean) / (variance + 1e-6) ** 0.5


__all__ = [
    "edge_aware_smoothness",
    "ground_truth_mask",
    "mask_to_pixel_mask",
    "min_reprojection_loss",
    "norm_targets",
    "photometric_error",
    "silog_loss",
    "simmim_loss",
    "ssim",
]

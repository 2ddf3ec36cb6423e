"""Monocular depth metrics as defined by GLPDepth / MIM-Depth-Estimation ``utils/metrics.py`` (``eval_depth``).

All depths are metres. On the valid pixels (``min_depth < gt < max_depth``, compared in the ground truth's own dtype
as the reference does -- a float32 ``1e-3`` is not above ``1e-3`` --, finite, inside the crop and inside an optional
extra mask), with ``d = log(pred) - log(gt)`` computed in float64:

- ``d1, d2, d3``: share of pixels with ``max(pred / gt, gt / pred) < 1.25 ** k``, the ratio computed in the dtype
  torch gives ``gt / pred`` for the inputs as passed (float32 for a float16 prediction and float32 ground truth),
  as MIM-Depth's ``eval_depth`` does, so a pixel right at a threshold counts the same as there (a scaled or
  clamped prediction is rounded to that dtype first)
- ``abs_rel = mean(|pred - gt| / gt)``, ``sq_rel = mean((pred - gt) ** 2 / gt)``
- ``rmse = sqrt(mean((pred - gt) ** 2))``, ``rmse_log = sqrt(mean(d ** 2))``
- ``log10 = mean(|log10(pred) - log10(gt)|)``
- ``silog = sqrt(mean(d ** 2) - 0.5 * mean(d) ** 2)`` (natural log, lambda 0.5, *not* multiplied by 100 -- the
  GLPDepth/MIM-Depth definition; BTS/AdaBins report ``100 * sqrt(mean(d**2) - mean(d)**2)`` instead).

Predictions are treated like the reference ``cropping_img``: ``+-inf`` becomes ``max_depth`` and NaN becomes
``min_depth`` (both rounded to the prediction's dtype); with ``clamp_pred=True`` they are also clipped to
``[min_depth, max_depth]`` (the BTS / Monodepth2 convention). With ``median_scaling`` the scaled predictions are
always clipped to ``[min_depth, max_depth]`` (Monodepth2's ``evaluate_depth.py``). A dataset score is the mean
of per-image scores (the published protocol); every metric here is also a function of per-pixel sums, so
:class:`DepthMetricAccumulator` can pool pixels over a dataset as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

METRIC_NAMES: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
"""Metric keys in display order."""

LOWER_IS_BETTER: dict[str, bool] = {name: not name.startswith("d") for name in METRIC_NAMES}

NYU_EIGEN_CROP: tuple[int, int, int, int] = (45, 471, 41, 601)
"""Rows 45:471 and columns 41:601 (half-open) of a 480x640 NYUv2 depth map (BTS, GLPDepth, MIM-Depth)."""

# Fractions of (height, width) used for KITTI (Garg et al. and Eigen et al. crops, as in GLPDepth `cropping_img`).
_KITTI_FRACTIONAL_CROPS: dict[str, tuple[float, float, float, float]] = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "kitti_eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}
CROPS: tuple[str, ...] = ("eigen", "garg", "kitti_eigen")

# Per-pixel sums from which every metric is computed (see `_metrics_from_sums`).
_SUM_KEYS: tuple[str, ...] = ("n", "abs_rel", "sq_rel", "sq", "log_sq", "log", "log10", "d1", "d2", "d3")

TensorLike = torch.Tensor | np.ndarray


def _as_tensor(x: TensorLike | Sequence, name: str, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """CPU copy of a real-valued torch tensor or numpy array, in `dtype` (None: its own dtype)."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"{name} must hold real numbers (metres), got dtype {x.dtype}")
        return x.detach().to(device="cpu", dtype=dtype or x.dtype)
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers (metres), got dtype {x.dtype}")
        copy = np.array(x, dtype=None if dtype is None else np.float64)  # a copy: also fine for read-only arrays
        return torch.from_numpy(copy)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _dtype_of(x: TensorLike) -> torch.dtype:
    return x.dtype if isinstance(x, torch.Tensor) else torch.from_numpy(np.empty(0, dtype=x.dtype)).dtype


def threshold_dtype(pred: TensorLike, gt: TensorLike) -> torch.dtype:
    """dtype of torch's ``gt / pred`` for these inputs, in which the δ ratio ``max(gt / pred, pred / gt)`` is computed.

    MIM-Depth's (GLPDepth's) ``eval_depth`` divides the tensors it is given, so a float16 prediction with float32
    ground truth gives a float32 ratio; integer inputs divide in torch's default float dtype.
    """
    for x, name in ((pred, "pred"), (gt, "gt")):
        if not isinstance(x, torch.Tensor | np.ndarray):
            raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    dtype = torch.promote_types(_dtype_of(pred), _dtype_of(gt))
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _as_batch(pred: TensorLike, gt: TensorLike) -> tuple[torch.Tensor, torch.Tensor]:
    p, g = _as_tensor(pred, "pred"), _as_tensor(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got pred {tuple(p.shape)} and gt {tuple(g.shape)}")
    if p.ndim == 2:
        p, g = p[None], g[None]
    elif p.ndim != 3:
        raise ValueError(f"pred and gt must be (H, W) or (B, H, W) depth maps, got shape {tuple(p.shape)}")
    return p, g


def crop_mask(height: int, width: int, crop: str | None) -> torch.Tensor:
    """Boolean (H, W) mask of the evaluation crop; all True for ``crop=None``.

    ``"eigen"``: NYUv2 Eigen crop (rows 45:471, cols 41:601), only defined for 480x640 maps.
    ``"garg"`` / ``"kitti_eigen"``: KITTI crops given as fractions of the map size.
    """
    mask = torch.zeros(height, width, dtype=torch.bool)
    if crop is None:
        mask[:] = True
    elif crop == "eigen":
        if (height, width) != (480, 640):
            raise ValueError(
                f"crop='eigen' is the NYUv2 crop of a 480x640 depth map, got a {height}x{width} map; "
                "resize the prediction to the ground truth's 480x640 or pass crop=None"
            )
        top, bottom, left, right = NYU_EIGEN_CROP
        mask[top:bottom, left:right] = True
    elif crop in _KITTI_FRACTIONAL_CROPS:
        t, b, lf, r = _KITTI_FRACTIONAL_CROPS[crop]
        mask[int(t * height) : int(b * height), int(lf * width) : int(r * width)] = True
    else:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS} or None")
    return mask


def evaluation_mask(
    gt: TensorLike,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    crop: str | None = "eigen",
    valid_mask: TensorLike | None = None,
) -> torch.Tensor:
    """Boolean mask of evaluated pixels, same shape as ``gt`` ((H, W) or (B, H, W)).

    Valid: finite and ``min_depth < gt < max_depth``, inside ``crop``, and (if given) where ``valid_mask`` is true.
    The range is compared in ``gt``'s own dtype (GLPDepth/MIM-Depth evaluate float32 maps against the thresholds).
    """
    g = _as_tensor(gt, "gt", dtype=None)
    if g.ndim not in (2, 3):
        raise ValueError(f"gt must be (H, W) or (B, H, W), got shape {tuple(g.shape)}")
    mask = torch.isfinite(g) & (g > min_depth) & (g < max_depth)
    mask &= crop_mask(g.shape[-2], g.shape[-1], crop)
    if valid_mask is not None:
        if isinstance(valid_mask, np.ndarray):
            extra = torch.from_numpy(np.array(valid_mask, dtype=bool))
        else:
            extra = valid_mask.detach().to("cpu")
        if extra.shape != g.shape and extra.shape != g.shape[-2:]:
            raise ValueError(f"valid_mask shape {tuple(extra.shape)} does not match gt shape {tuple(g.shape)}")
        mask &= extra.bool()
    return mask


def _replace_nonfinite(
    pred: torch.Tensor, min_depth: float, max_depth: float, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """GLPDepth ``cropping_img``: +-inf predictions become ``max_depth``, NaN becomes ``min_depth``, both rounded to
    ``dtype`` (the prediction's own dtype: the reference writes them into the prediction tensor)."""
    if dtype is not None and dtype.is_floating_point:
        min_depth = torch.tensor(min_depth, dtype=dtype).item()
        max_depth = torch.tensor(max_depth, dtype=dtype).item()
    pred = pred.clone()
    pred[torch.isinf(pred)] = max_depth
    pred[torch.isnan(pred)] = min_depth
    return pred


def median_scale(pred: TensorLike, gt: TensorLike, mask: TensorLike) -> torch.Tensor:
    """Per image, multiply ``pred`` by ``median(gt[mask]) / median(pred[mask])`` (self-supervised protocol).

    Shapes (H, W) or (B, H, W); returns float64 torch tensor of ``pred``'s shape. Medians interpolate like
    ``numpy.median`` (Monodepth2 ``evaluate_depth.py``).
    """
    p, g = _as_batch(pred, gt)
    m = (
        (mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.array(mask, dtype=bool)))
        .bool()
        .reshape(p.shape)
    )
    out = p.clone()
    for i in range(p.shape[0]):
        if not m[i].any():
            raise ValueError(f"median scaling: image {i} has no valid ground-truth pixels")
        pred_median = torch.quantile(p[i][m[i]], 0.5)
        if not torch.isfinite(pred_median) or pred_median <= 0:
            raise ValueError(f"median scaling: image {i} has a non-positive or non-finite median prediction")
        out[i] = p[i] * (torch.quantile(g[i][m[i]], 0.5) / pred_median)
    return out[0] if pred.ndim == 2 else out


def _pixel_sums(pred: torch.Tensor, gt: torch.Tensor, ratio_dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """Sums of the per-pixel terms over 1-D float64 tensors of valid predictions and ground truth; the δ ratio is
    computed in ``ratio_dtype`` (see :func:`threshold_dtype`), every other term in float64."""
    if (pred <= 0).any():
        raise ValueError(
            f"{int((pred <= 0).sum())} valid pixels have a non-positive predicted depth, for which log metrics are "
            "undefined; predict positive metres or evaluate with clamp_pred=True"
        )
    diff = pred - gt
    dlog = torch.log(pred) - torch.log(gt)
    pred_r, gt_r = pred.to(ratio_dtype), gt.to(ratio_dtype)
    ratio = torch.maximum(gt_r / pred_r, pred_r / gt_r)
    return {
        "n": float(gt.numel()),
        "abs_rel": float((diff.abs() / gt).sum()),
        "sq_rel": float((diff**2 / gt).sum()),
        "sq": float((diff**2).sum()),
        "log_sq": float((dlog**2).sum()),
        "log": float(dlog.sum()),
        "log10": float((torch.log10(pred) - torch.log10(gt)).abs().sum()),
        "d1": float((ratio < 1.25).sum()),
        "d2": float((ratio < 1.25**2).sum()),
        "d3": float((ratio < 1.25**3).sum()),
    }


def _metrics_from_sums(s: dict[str, float]) -> dict[str, float]:
    n = s["n"]
    mean_log_sq, mean_log = s["log_sq"] / n, s["log"] / n
    return {
        "abs_rel": s["abs_rel"] / n,
        "sq_rel": s["sq_rel"] / n,
        "rmse": math.sqrt(s["sq"] / n),
        "rmse_log": math.sqrt(mean_log_sq),
        "log10": s["log10"] / n,
        # max(., 0) only guards float round-off: mean(d^2) >= mean(d)^2 >= 0.5 mean(d)^2.
        "silog": math.sqrt(max(mean_log_sq - 0.5 * mean_log**2, 0.0)),
        "d1": s["d1"] / n,
        "d2": s["d2"] / n,
        "d3": s["d3"] / n,
    }


def _per_image_sums(
    pred: TensorLike,
    gt: TensorLike,
    min_depth: float,
    max_depth: float,
    crop: str | None,
    valid_mask: TensorLike | None,
    clamp_pred: bool,
    median_scaling: bool,
) -> list[dict[str, float]]:
    mask = evaluation_mask(gt, min_depth, max_depth, crop, valid_mask)
    ratio_dtype = threshold_dtype(pred, gt)
    p, g = _as_batch(pred, gt)
    mask = mask.reshape(g.shape)
    p = _replace_nonfinite(p, min_depth, max_depth, _dtype_of(pred))
    if median_scaling:
        p = median_scale(p, g, mask)
    if clamp_pred or median_scaling:
        p = p.clamp(min_depth, max_depth)
    sums = []
    for i in range(p.shape[0]):
        if not mask[i].any():
            raise ValueError(
                f"image {i} of the batch has no valid ground-truth pixels (range {min_depth} < gt < {max_depth}, "
                f"crop {crop!r}); drop it or check the depth units (metres expected)"
            )
        sums.append(_pixel_sums(p[i][mask[i]], g[i][mask[i]], ratio_dtype))
    return sums


def compute_depth_metrics(
    pred: TensorLike,
    gt: TensorLike,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    crop: str | None = "eigen",
    valid_mask: TensorLike | None = None,
    clamp_pred: bool = False,
    median_scaling: bool = False,
) -> dict[str, float]:
    """Depth metrics of one prediction, or the mean of per-image metrics for a batch.

    Args:
        pred: predicted depth in metres, (H, W) or (B, H, W), torch or numpy.
        gt: ground-truth depth in metres, same shape; 0 or non-finite = no ground truth.
        min_depth, max_depth: evaluated ground-truth range (exclusive), metres.
        crop: ``"eigen"`` (NYUv2, 480x640 only), ``"garg"``/``"kitti_eigen"`` (KITTI fractions) or ``None``.
        valid_mask: optional extra boolean mask ((H, W) or like ``gt``), e.g. iBims-1's invalid/transparent masks.
        clamp_pred: clip predictions to ``[min_depth, max_depth]`` (BTS/Monodepth2) instead of only replacing
            non-finite values (GLPDepth/MIM-Depth).
        median_scaling: per image, scale ``pred`` by ``median(gt) / median(pred)`` over valid pixels first, then
            clip it to ``[min_depth, max_depth]`` (Monodepth2).

    Returns:
        dict with ``abs_rel, sq_rel, rmse, rmse_log, log10, silog, d1, d2, d3`` as Python floats.
    """
    per_image = [
        _metrics_from_sums(s)
        for s in _per_image_sums(pred, gt, min_depth, max_depth, crop, valid_mask, clamp_pred, median_scaling)
    ]
    return {k: float(np.mean([m[k] for m in per_image])) for k in METRIC_NAMES}


class DepthMetricAccumulator:
    """Accumulates depth metrics over a dataset, image by image.

    ``compute()`` returns the mean over images of per-image metrics (the NYUv2/KITTI protocol);
    ``compute_pooled()`` returns the metrics of all valid pixels pooled together, which equals
    ``compute_depth_metrics`` on the concatenated pixels (all nine metrics are functions of per-pixel sums).

    Example:
        >>> acc = DepthMetricAccumulator(crop=None)
        >>> acc.update(pred_batch, gt_batch)  # (B, H, W) or (H, W)
        >>> acc.compute()["rmse"]
    """

    def __init__(
        self,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        crop: str | None = "eigen",
        clamp_pred: bool = False,
        median_scaling: bool = False,
    ) -> None:
        self.min_depth, self.max_depth, self.crop = min_depth, max_depth, crop
        self.clamp_pred, self.median_scaling = clamp_pred, median_scaling
        self.reset()

    def reset(self) -> None:
        self.num_images = 0
        self._image_metric_sums = dict.fromkeys(METRIC_NAMES, 0.0)
        self._pixel_sums = dict.fromkeys(_SUM_KEYS, 0.0)

    def update(self, pred: TensorLike, gt: TensorLike, valid_mask: TensorLike | None = None) -> list[dict[str, float]]:
        """Add (H, W) or (B, H, W) predictions; returns the per-image metrics of this call."""
        sums = _per_image_sums(
            pred,
            gt,
            self.min_depth,
            self.max_depth,
            self.crop,
            valid_mask,
            self.clamp_pred,
            self.median_scaling,
        )
        per_image = []
        for s in sums:
            m = _metrics_from_sums(s)
            per_image.append(m)
            for k in METRIC_NAMES:
                self._image_metric_sums[k] += m[k]
            for k in _SUM_KEYS:
                self._pixel_sums[k] += s[k]
            self.num_images += 1
        return per_image

    def _check_nonempty(self) -> None:
        if self.num_images == 0:
            raise ValueError("DepthMetricAccumulator is empty: call update() with at least one image first")

    def compute(self) -> dict[str, float]:
        """Mean over images of per-image metrics."""
        self._check_nonempty()
        return {k: self._image_metric_sums[k] / self.num_images for k in METRIC_NAMES}

    def compute_pooled(self) -> dict[str, float]:
        """Metrics of all accumulated valid pixels pooled together (pixel-weighted)."""
        self._check_nonempty()
        return _metrics_from_sums(self._pixel_sums)

    @property
    def num_pixels(self) -> int:
        return int(self._pixel_sums["n"])

    def state_dict(self) -> dict[str, Any]:
        """Plain-number state, e.g. to gather over processes and ``merge``."""
        return {
            "num_images": self.num_images,
            "image_metric_sums": dict(self._image_metric_sums),
            "pixel_sums": dict(self._pixel_sums),
        }

    def merge(self, other: DepthMetricAccumulator | dict[str, Any]) -> None:
        """Add another accumulator (or its ``state_dict()``) into this one."""
        state = other.state_dict() if isinstance(other, DepthMetricAccumulator) else other
        self.num_images += int(state["num_images"])
        for k in METRIC_NAMES:
            self._image_metric_sums[k] += state["image_metric_sums"][k]
        for k in _SUM_KEYS:
            self._pixel_sums[k] += state["pixel_sums"][k]


def format_metrics_table(metrics: dict[str, float], title: str | None = None, digits: int = 4) -> str:
    """Two-row text table (names, values) in ``METRIC_NAMES`` order, optionally preceded by a title line."""
    names = [k for k in METRIC_NAMES if k in metrics]
    width = max(digits + 4, *(len(k) for k in names))
    header = " ".join(f"{k:>{width}}" for k in names)
    values = " ".join(f"{metrics[k]:>{width}.{digits}f}" for k in names)
    lines = [title] if title else []
    return "\n".join([*lines, header, values])

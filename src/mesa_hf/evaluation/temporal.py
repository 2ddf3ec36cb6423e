"""Temporal consistency of video depth: temporal alignment error (with ground-truth poses) and flicker (without).

``temporal_alignment_error`` (TAE, as in the Video-Depth-Anything benchmark, here in metric depth with a scale only)
    Inputs: predicted depth ``D_1..D_N`` (metres), camera-to-world poses ``P_1..P_N``, intrinsics ``K`` and,
    optionally, ground-truth depth ``G_1..G_N``.

    1. One scale for the whole sequence: ``s = median(G) / median(D)`` over the pixels of all frames with valid
       ground truth (``min_depth < G < max_depth``); ``D <- s D``. Without ground truth, ``s = 1``.
    2. For each consecutive pair (i, j = i + 1) and each pixel p of frame i: back-project ``D_i(p)`` with ``K``,
       move it by ``T_i->j = P_j^-1 P_i`` and project it into frame j at pixel q with depth z (the point's depth
       seen from camera j). Sample ``D_j(q)`` bilinearly.
    3. p counts if it is *visible in both*: q lies inside frame j, z > 0, ``D_i(p) > 0`` and ``D_j(q) > 0``, and,
       with ground truth, ``G_i(p)`` and ``G_j(q)`` are valid and the ground truth passes the same reprojection
       (``|z_G - G_j(q)| / G_j(q) < occlusion_tolerance``, default 0.05: the pixel is not occluded in frame j).
    4. ``e_i->j = mean_p |z - D_j(q)| / D_j(q)`` (AbsRel against the next frame's prediction); the same from j into
       i gives ``e_j->i``.
    5. ``TAE = mean over pairs of (e_i->j + e_j->i) / 2``. Lower is better; Video-Depth-Anything reports it ×100.

    Ground-truth depth scores ≈ 0 (only interpolation error); a per-frame scale error of ±x % scores about
    2x/3 % (the mean relative change between consecutive frames).

``flicker`` (no poses; exact only for a static camera)
    For each consecutive pair, on the pixels whose colour changes by at most ``color_threshold`` (0-255 units, every
    channel), the mean of ``|D_j - D_i| / ((D_i + D_j) / 2)``; averaged over pairs (``flicker``). Beside it,
    ``median_jitter`` = mean over pairs of ``|log median(D_j) - log median(D_i)|`` (global scale jitter). With a
    moving camera unchanged colour does not mean unchanged depth, so both are only indicative there; a clip of one
    repeated frame scores exactly 0.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import backproject

OCCLUSION_TOLERANCE = 0.05
COLOR_THRESHOLD = 3.0


def _as_stack(values, name: str, ndim: int) -> torch.Tensor:
    array = torch.as_tensor(np.asarray(values, dtype=np.float64) if not torch.is_tensor(values) else values)
    array = array.to(torch.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(array.shape)}")
    return array


def _intrinsics_per_frame(intrinsics, num_frames: int) -> torch.Tensor:
    k = _as_stack(intrinsics, "intrinsics", np.ndim(np.asarray(intrinsics)))
    if k.shape == (3, 3):
        k = k.expand(num_frames, 3, 3)
    if k.shape != (num_frames, 3, 3):
        raise ValueError(f"intrinsics must be (3, 3) or (N, 3, 3) with N = {num_frames}, got {tuple(k.shape)}")
    return k


def sequence_scale(
    pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, min_depth: float = 1e-3, max_depth: float = 10.0
) -> float:
    """One scale ``median(gt) / median(pred)`` over the valid ground-truth pixels of a whole sequence."""
    pred, gt = _as_stack(pred, "pred", 3), _as_stack(gt, "gt", 3)
    valid = torch.isfinite(gt) & (gt > min_depth) & (gt < max_depth) & torch.isfinite(pred) & (pred > 0)
    if not valid.any():
        raise ValueError("sequence_scale: no pixel with valid ground truth and prediction")
    return float(gt[valid].median() / pred[valid].median())


def _reproject(depth_i: torch.Tensor, k_i: torch.Tensor, k_j: torch.Tensor, t_i_to_j: torch.Tensor):
    """Pixels of frame i (depth (H, W)) into frame j: (u, v, z) each (H, W)."""
    height, width = depth_i.shape
    k4_i = torch.eye(4, dtype=depth_i.dtype)
    k4_i[:3, :3] = k_i
    points = backproject(depth_i[None, None], torch.linalg.inv(k4_i)[None])[0]  # (4, H*W)
    camera = (t_i_to_j @ points)[:3]
    z = camera[2]
    pixels = k_j @ camera
    u, v = pixels[0] / z.clamp_min(1e-9), pixels[1] / z.clamp_min(1e-9)
    return u.reshape(height, width), v.reshape(height, width), z.reshape(height, width)


def _sample(image: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    height, width = image.shape
    grid = torch.stack([u / (width - 1) * 2 - 1, v / (height - 1) * 2 - 1], dim=-1)[None]
    return F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]


def _directional_error(pred_i, pred_j, k_i, k_j, t_i_to_j, gt_i, gt_j, min_depth, max_depth, tolerance):
    height, width = pred_i.shape
    u, v, z = _reproject(pred_i, k_i, k_j, t_i_to_j)
    inside = (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1) & (z > 0)
    target = _sample(pred_j, u, v)
    visible = inside & (pred_i > 0) & (target > 0) & torch.isfinite(target)
    if gt_i is not None:
        valid_i = torch.isfinite(gt_i) & (gt_i > min_depth) & (gt_i < max_depth)
        gu, gv, gz = _reproject(torch.where(valid_i, gt_i, torch.zeros_like(gt_i)), k_i, k_j, t_i_to_j)
        gt_j_valid = torch.where(torch.isfinite(gt_j) & (gt_j > min_depth) & (gt_j < max_depth), gt_j, 0.0)
        gt_target = _sample(gt_j_valid, gu, gv)
        # the bilinear sample must not mix in invalid neighbours: check the sampled validity too
        valid_j = _sample((gt_j_valid > 0).to(gt_j.dtype), gu, gv) > 0.999
        in_image = (gu >= 0) & (gu <= width - 1) & (gv >= 0) & (gv <= height - 1) & (gz > 0)
        unoccluded = (gz - gt_target).abs() < tolerance * gt_target.clamp_min(1e-9)
        visible &= valid_i & valid_j & in_image & unoccluded
    if not visible.any():
        return None
    return float(((z - target).abs() / target)[visible].mean())


@dataclass
class TemporalAlignmentResult:
    """TAE and what it was computed from: ``tae`` (mean of both directions over pairs), ``per_pair`` ((forward,
    backward) AbsRel per consecutive pair, ``None`` where no pixel was visible in both), ``scale`` (applied to the
    prediction), ``num_pairs`` (pairs with visible pixels)."""

    tae: float
    scale: float
    num_pairs: int
    per_pair: list[tuple[float | None, float | None]] = field(default_factory=list)


def temporal_alignment_error(
    pred_depths,
    poses,
    intrinsics,
    gt_depths=None,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    occlusion_tolerance: float = OCCLUSION_TOLERANCE,
    fit_scale: bool = True,
    return_details: bool = False,
) -> float | TemporalAlignmentResult:
    """Temporal alignment error of a predicted depth sequence (definition in the module docstring).

    Args:
        pred_depths: (N, H, W) predicted depth in metres, N >= 2 consecutive frames.
        poses: (N, 4, 4) ground-truth camera-to-world poses (metres).
        intrinsics: (3, 3) or (N, 3, 3) pixel intrinsics of the depth maps.
        gt_depths: (N, H, W) ground-truth depth in metres (0 / non-finite = none): fits the sequence scale and marks
            pixels occluded in the other frame; ``None``: no scale, visibility from the prediction alone.
        min_depth, max_depth: valid ground-truth range (exclusive).
        occlusion_tolerance: relative ground-truth disagreement above which a reprojected pixel counts as occluded.
        fit_scale: fit the per-sequence scale (needs `gt_depths`).
        return_details: return a :class:`TemporalAlignmentResult` instead of the number.
    """
    pred = _as_stack(pred_depths, "pred_depths", 3)
    poses_t = _as_stack(poses, "poses", 3)
    num = pred.shape[0]
    if num < 2:
        raise ValueError(f"temporal_alignment_error needs at least 2 frames, got {num}")
    if poses_t.shape != (num, 4, 4):
        raise ValueError(f"poses must be (N, 4, 4) with N = {num}, got {tuple(poses_t.shape)}")
    k = _intrinsics_per_frame(intrinsics, num)
    gt = None if gt_depths is None else _as_stack(gt_depths, "gt_depths", 3)
    if gt is not None and gt.shape != pred.shape:
        raise ValueError(f"gt_depths shape {tuple(gt.shape)} differs from pred_depths {tuple(pred.shape)}")
    pred = torch.where(torch.isfinite(pred), pred, torch.zeros_like(pred))
    scale = sequence_scale(pred, gt, min_depth, max_depth) if (fit_scale and gt is not None) else 1.0
    pred = pred * scale
    per_pair, errors = [], []
    for i in range(num - 1):
        j = i + 1
        t_i_to_j = torch.linalg.inv(poses_t[j]) @ poses_t[i]
        t_j_to_i = torch.linalg.inv(t_i_to_j)
        args = (min_depth, max_depth, occlusion_tolerance)
        gi, gj = (None, None) if gt is None else (gt[i], gt[j])
        forward = _directional_error(pred[i], pred[j], k[i], k[j], t_i_to_j, gi, gj, *args)
        backward = _directional_error(pred[j], pred[i], k[j], k[i], t_j_to_i, gj, gi, *args)
        per_pair.append((forward, backward))
        present = [e for e in (forward, backward) if e is not None]
        if present:
            errors.append(sum(present) / len(present))
    if not errors:
        raise ValueError("temporal_alignment_error: no pixel is visible in two consecutive frames")
    tae = float(np.mean(errors))
    if return_details:
        return TemporalAlignmentResult(tae=tae, scale=scale, num_pairs=len(errors), per_pair=per_pair)
    return tae


def flicker(pred_depths, images, color_threshold: float = COLOR_THRESHOLD) -> dict[str, float]:
    """Flicker of a predicted depth sequence without poses (definition in the module docstring).

    Args:
        pred_depths: (N, H, W) predicted depth (metres, > 0), N >= 2.
        images: (N, H, W, 3) uint8 frames the depth was predicted from (same size).
        color_threshold: largest per-channel colour change (0-255) of a pixel counted as unchanged.

    Returns ``{"flicker", "median_jitter", "static_fraction"}`` (the last: mean share of unchanged pixels).
    """
    depth = np.asarray(pred_depths, dtype=np.float64)
    frames = np.asarray(images)
    if depth.ndim != 3 or depth.shape[0] < 2:
        raise ValueError(f"flicker needs (N, H, W) depth with N >= 2, got shape {depth.shape}")
    if frames.shape[:3] != depth.shape or frames.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) matching depth {depth.shape}, got {frames.shape}")
    frames = frames.astype(np.int16)
    changes, jitters, fractions = [], [], []
    for i in range(depth.shape[0] - 1):
        a, b = depth[i], depth[i + 1]
        valid = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        static = valid & (np.abs(frames[i + 1] - frames[i]).max(axis=-1) <= color_threshold)
        fractions.append(float(static.mean()))
        if static.any():
            changes.append(float((np.abs(b - a) / ((a + b) / 2))[static].mean()))
        if valid.any():
            jitters.append(abs(float(np.log(np.median(b[valid])) - np.log(np.median(a[valid])))))
    return {
        "flicker": float(np.mean(changes)) if changes else float("nan"),
        "median_jitter": float(np.mean(jitters)) if jitters else float("nan"),
        "static_fraction": float(np.mean(fractions)),
    }


# ------------------------------------------------------------------------ mesa-hf evaluate --protocol video


@dataclass
class VideoEvaluationResult:
    """Per-frame depth metrics (mean over frames) and the temporal metrics (mean over sequences)."""

    description: str
    metrics: dict[str, float]
    temporal: dict[str, float]
    num_sequences: int
    num_frames: int
    per_sequence: list[dict[str, Any]] = field(default_factory=list)

    def format_table(self) -> str:
        from .metrics import format_metrics_table

        table = format_metrics_table(self.metrics, title=self.description)
        temporal = " | ".join(f"{k}={v:.4f}" for k, v in self.temporal.items())
        return f"{table}\ntemporal (mean over {self.num_sequences} sequences): {temporal}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": "video",
            "description": self.description,
            "metrics": self.metrics,
            "temporal": self.temporal,
            "num_sequences": self.num_sequences,
            "num_frames": self.num_frames,
            "per_sequence": self.per_sequence,
        }


def evaluate_video_sequences(
    model: torch.nn.Module,
    sequences: Sequence[dict[str, Any]],
    image_processor: Any = None,
    protocol: Any = "video",
    tta=None,
    batch_size: int = 4,
    device=None,
    dtype: str = "fp32",
    progress: bool = True,
) -> VideoEvaluationResult:
    """Predict every frame of every sequence; per-frame depth metrics under `protocol`, TAE (where the sequence
    has poses and ground truth) and flicker.

    Args:
        sequences: from :func:`mesa_hf.data.video.load_video_sequences`: dicts with ``name``, ``images`` (list of
            (H, W, 3) uint8), ``depths`` ((H, W) metres or None each), ``poses`` ((N, 4, 4) or None),
            ``intrinsics`` (3, 3).
    """
    from tqdm.auto import tqdm

    from .evaluator import _default_image_processor
    from .inference import DepthPredictor, batches_of_equal_shape, preprocess_images, resize_depth_bilinear
    from .protocols import get_protocol
    from .tta import TestTimeAugmentation

    protocol = get_protocol(protocol)
    tta = tta or TestTimeAugmentation()
    image_processor = image_processor or _default_image_processor(model)
    predictor = DepthPredictor(model, device=device, dtype=dtype, tta=tta)
    accumulator = protocol.accumulator()
    per_sequence = []
    total = sum(len(s["images"]) for s in sequences)
    bar = tqdm(total=total, desc="evaluate [video]", disable=not progress)
    for seq in sequences:
        images = [np.asarray(im) for im in seq["images"]]
        preds = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pixel_values = preprocess_images(image_processor, chunk, protocol.input_size)
            for group, stack in batches_of_equal_shape(pixel_values, batch_size):
                depth = predictor(stack).cpu()
                for k, i in enumerate(group):
                    preds.append(resize_depth_bilinear(depth[k], chunk[i].shape[:2]).numpy().astype(np.float32))
            bar.update(len(chunk))
        record: dict[str, Any] = {"name": seq["name"], "frames": len(images)}
        depths = seq.get("depths")
        has_gt = depths is not None and all(d is not None for d in depths)
        if has_gt:
            for pred, gt in zip(preds, depths):
                accumulator.update(pred, np.asarray(gt, dtype=np.float32))
        record.update(flicker(np.stack(preds), np.stack(images)))
        if seq.get("poses") is not None and has_gt and len(preds) > 1:
            result = temporal_alignment_error(
                np.stack(preds),
                np.asarray(seq["poses"]),
                np.asarray(seq["intrinsics"]),
                np.stack(depths),
                min_depth=protocol.min_depth,
                max_depth=protocol.max_depth,
                return_details=True,
            )
            record.update(tae=result.tae, tae_scale=result.scale)
        per_sequence.append(record)
    bar.close()
    temporal = {}
    for key in ("tae", "flicker", "median_jitter"):
        values = [r[key] for r in per_sequence if key in r and np.isfinite(r[key])]
        if values:
            temporal[key] = float(np.mean(values))
    metrics = accumulator.compute() if accumulator.num_images else {}
    description = (
        protocol.describe(tta)
        + f" | sequences={len(sequences)} frames={total} | dtype={dtype}"
        + " | TAE: one median scale per sequence, both directions, GT-occlusion mask"
    )
    return VideoEvaluationResult(description, metrics, temporal, len(sequences), total, per_sequence)


def run_video_evaluation(args: argparse.Namespace, tta) -> int:
    """``mesa-hf evaluate CKPT --protocol video --data FORMAT:PATH`` (7scenes, tum, hololens, frames, synthetic)."""
    from mesa_hf.data.video import load_video_sequences

    from .inference import load_checkpoint

    model, processor = load_checkpoint(args.checkpoint)
    spec = args.data if args.data_format == "auto" else f"{args.data_format}:{args.data}"
    sequences = load_video_sequences(spec, max_frames=args.max_samples, depth_scale=args.depth_scale)
    result = evaluate_video_sequences(
        model,
        sequences,
        image_processor=processor,
        protocol="video",
        tta=tta,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
    )
    print(result.format_table())
    summary = result.to_dict()
    summary.update(checkpoint=str(args.checkpoint), data=str(args.data))
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.output_json}")
    else:
        print(json.dumps({k: summary[k] for k in ("description", "metrics", "temporal")}))
    return 0


__all__ = [
    "TemporalAlignmentResult",
    "VideoEvaluationResult",
    "evaluate_video_sequences",
    "flicker",
    "run_video_evaluation",
    "sequence_scale",
    "temporal_alignment_error",
]

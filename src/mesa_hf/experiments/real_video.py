"""Does the geometric objective's optimum lie at the true geometry on real images? Fit the geometric stage on a
real video with its dataset poses, then score the depth of the very frames it trained on against the sensor depth.

`fit_real_video("7scenes:PATH", output_dir)` runs `recipes.STAGES["geometric"]` through the one `run_stage` on the
clips of the video (frames resized to ``image_size``), evaluates the trained frames' depth (resized the same way;
the sensor depth by nearest neighbour) before and after, and scores a flat map beside it. The numbers that matter
are median-scaled (the stage learns depth up to scale): ``median_scaled_abs_rel`` before -> after, against the
flat map's.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.columns import DEPTH_FEATURES, encode_depth
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..training.recipes import STAGES
from ..training.runner import StageSettings, run_stage
from ..training.stage_data import SeededTransformDataset, build_eval_transform
from ..training.stage_eval import eval_dataloader, evaluate_constant_map


@dataclass
class RealVideoFit:
    """What `fit_real_video` measured on the trained frames (metres; median-scaled metrics are scale-free)."""

    spec: str
    num_clips: int
    image_size: tuple[int, int]
    updates: int
    before: dict[str, float]
    after: dict[str, float]
    flat: dict[str, float]
    output_dir: str
    loss_curve: list[float] = field(default_factory=list)
    figure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _resized_depth_rows(clips, image_size: Sequence[int]):
    """The clips' target frames and sensor depth as a depth-kind dataset at `image_size` (H, W): the photo by
    bicubic resampling, the depth by nearest neighbour (no invented depth across edges)."""
    import datasets

    height, width = (int(s) for s in image_size)
    rows = {"image": [], "depth": [], "intrinsics": [], "scene": []}
    for row in clips:
        if row["depth"] is None:
            raise ValueError("the video has frames without sensor depth: nothing to score the fit against")
        image = row["image"].convert("RGB")
        depth = np.asarray(row["depth"], dtype=np.float32)  # the float32 TIFF of the depth column, metres
        scale_x, scale_y = width / image.width, height / image.height
        k = np.asarray(row["intrinsics"], dtype=np.float32) * np.array([[scale_x], [scale_y], [1.0]], np.float32)
        buffer = io.BytesIO()
        image.resize((width, height), Image.BICUBIC).save(buffer, format="PNG")
        resized = np.asarray(Image.fromarray(depth).resize((width, height), Image.NEAREST))
        rows["image"].append({"bytes": buffer.getvalue(), "path": None})
        rows["depth"].append(encode_depth(resized))
        rows["intrinsics"].append(k.tolist())
        rows["scene"].append(row["scene"])
    return datasets.Dataset.from_dict(rows, features=DEPTH_FEATURES)


def fit_real_video(
    spec: str,
    output_dir: str | os.PathLike,
    *,
    model_name_or_path: str = "demo",
    updates: int = 150,
    image_size: Sequence[int] = (96, 128),
    frame_offsets: Sequence[int] = (-6, 6),
    training: dict[str, Any] | None = None,
    config_overrides: dict[str, Any] | None = None,
    figure_path: str | os.PathLike | None = None,
    figure_frames: int = 3,
) -> RealVideoFit:
    """Fit the geometric stage (dataset poses) on the video `spec` (``7scenes:PATH``, ``hololens:PATH``, ...) for
    `updates` updates at `image_size` and score the trained frames' depth against the sensor's, before and after,
    beside a flat map. `frame_offsets`: source frames of each clip (slow handheld 30 Hz video needs a stride).
    `figure_path`: also write a PNG of `figure_frames` evenly spaced trained frames (photo, sensor depth, fitted
    depth median-scaled to the sensor's, AbsRel error)."""
    from ..data.specs import load_dataset_spec

    clips = load_dataset_spec(spec, "video", frame_offsets=tuple(int(o) for o in frame_offsets))
    if any(row is None for row in clips["poses"]):
        raise ValueError(f"{spec}: the video has no poses; the fit uses the dataset's poses")
    depth_rows = _resized_depth_rows(clips, image_size)
    settings = StageSettings(
        output_dir=output_dir,
        recipe="demo",
        image_size=tuple(int(s) for s in image_size),
        training={"checkpointing_steps": None, "max_train_steps": updates, **(training or {})},
        config_overrides={
            "pose_source": "dataset",
            "frame_offsets": [int(o) for o in frame_offsets],
            **(config_overrides or {}),
        },
        data_description=f"{spec} ({len(clips)} clips, dataset poses)",
        compute_baseline=False,
    )
    result = run_stage(STAGES["geometric"], model_name_or_path, settings, clips, depth_rows)
    loader = eval_dataloader(SeededTransformDataset(depth_rows, build_eval_transform("depth", None, image_size), 0))
    flat = evaluate_constant_map(torch.ones(*(int(s) for s in image_size)), loader)
    figure = None
    if figure_path is not None:
        rows = [loader.dataset[int(i)] for i in np.linspace(0, len(depth_rows) - 1, figure_frames).round()]
        kind, _, path = spec.partition(":")
        title = f"{kind}: {os.path.basename(path.rstrip('/'))}, {len(clips)} clips, {result.global_step} updates"
        figure = str(plot_real_video_fit(result.output_dir, rows, title, figure_path))
    return RealVideoFit(
        spec=spec,
        num_clips=len(clips),
        image_size=tuple(int(s) for s in image_size),
        updates=result.global_step,
        before=dict(result.eval_before),
        after=dict(result.eval_after),
        flat={k: v for k, v in flat.items() if k.startswith("median_scaled_")},
        output_dir=str(output_dir),
        loss_curve=list(result.loss_curve),
        figure=figure,
    )


@torch.no_grad()
def plot_real_video_fit(model_dir: str | os.PathLike, rows: Sequence[dict], title: str, path) -> os.PathLike:
    """One figure row per eval-transformed row (``pixel_values`` (3, H, W), ``labels`` (H, W) metres): the photo,
    the sensor depth, the fitted model's depth median-scaled to the sensor's and its AbsRel (0-0.5); PNG at `path`."""
    from ..analysis.plotting import _pyplot
    from ..evaluation.io import colorize_depth
    from ..evaluation.metrics import median_scale
    from ..modeling_mesa import MeSaForSelfSupervisedDepth

    model = MeSaForSelfSupervisedDepth.from_pretrained(model_dir).eval()
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.1 * len(rows)), squeeze=False)
    for axis_row, row in zip(axes, rows):
        gt = row["labels"].double()
        pred = model(row["pixel_values"][None]).predicted_depth[0].double()
        valid = gt > 0
        scaled = median_scale(pred[None], gt[None], valid[None])[0]
        error = torch.where(valid, (scaled - gt).abs() / gt.clamp_min(1e-6), torch.nan)
        photo = np.clip(row["pixel_values"].permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN, 0.0, 1.0)
        lo, hi = np.percentile(gt[valid].numpy(), [2, 98])
        panels = [
            (photo, "photo"),
            (colorize_depth(gt.numpy(), vmin=lo, vmax=hi), "sensor depth"),
            (colorize_depth(scaled.numpy(), vmin=lo, vmax=hi), "fitted (median-scaled)"),
            (error.numpy(), f"AbsRel {float(error[valid].mean()):.3f} (colours 0-0.5)"),
        ]
        for axis, (image, label) in zip(axis_row, panels):
            if image.ndim == 2:
                axis.imshow(image, cmap="viridis", vmin=0.0, vmax=0.5, interpolation="nearest")
            else:
                axis.imshow(image, interpolation="nearest")
            axis.set_title(label, fontsize=8)
            axis.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


__all__ = ["RealVideoFit", "fit_real_video", "plot_real_video_fit"]

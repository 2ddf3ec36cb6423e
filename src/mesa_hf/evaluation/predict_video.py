"""Depth prediction on video files: ``<name>_depth.mp4`` (colour, one depth range for the whole clip),
``<name>_depth.npz`` (float16 metres, frames × H × W, with timestamps) and optionally 16-bit PNG frames.

Frames are decoded one at a time (:func:`mesa_hf.data.video_files.iter_video_frames`), predicted in batches and
appended to a float16 scratch file on disk, so memory does not grow with the clip's length. The colour range of
the depth video is fixed (``depth_range``) or the 2nd-98th percentile of the predicted depth over the whole clip
(up to :data:`RANGE_SAMPLE_FRAMES` evenly spaced frames of the first pass), and is the same in every frame; it is
returned, printed, stored in the ``.npz`` (``depth_range_m``) and in the mp4's ``comment`` tag.

``.npz`` keys: ``depth`` (N, H, W) float16 metres at the decoded frame size (after ``max_size``), ``timestamps_s``
(N,) float64 seconds from the video's start, ``frame_indices`` (N,) int64 positions among all decoded frames,
``depth_range_m`` (2,) float32, ``fps`` () float64 (of the sampled frames), ``units`` = "m".

The web demo and scripts call :func:`predict_video_file`; ``mesa-hf predict clip.mp4`` calls
:func:`predict_video_files` for every video among its inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..camera import CameraIntrinsics, resolve_intrinsics
from ..data.video_files import (
    VIDEO_FILE_EXTENSIONS,
    VideoFrame,
    VideoWriter,
    expected_frame_count,
    is_video_file,
    iter_video_frames,
    probe_video,
    scaled_size,
)
from .inference import DepthPredictor, batches_of_equal_shape, preprocess_images, resize_depth_bilinear
from .io import colorize_depth, save_depth_png16
from .tta import TestTimeAugmentation

VIDEO_OUTPUT_KINDS = ("mp4", "npz", "png16")
DEFAULT_VIDEO_OUTPUTS = ("mp4", "npz")
RANGE_PERCENTILES = (2.0, 98.0)
RANGE_SAMPLE_FRAMES = 64
"""Frames (evenly spaced over the clip) whose depth sets the automatic colour range."""


@dataclass
class VideoPrediction:
    """What :func:`predict_video_file` wrote.

    Attributes:
        source: the video file; name: output prefix.
        num_frames, height, width: frames predicted and their size (pixels, after ``max_size``).
        fps: frame rate of the sampled frames (frames/s; the depth mp4 plays at it).
        depth_range_m: (near, far) metres mapped to the ends of the colour map, identical in every frame.
        range_source: how the range was chosen (fixed, or clip percentiles over how many frames).
        npz, mp4, png_dir: written paths (``None`` when not requested).
        first_time_s, last_time_s: timestamps of the first and last predicted frames.
    """

    source: str
    name: str
    num_frames: int
    height: int
    width: int
    fps: float
    depth_range_m: tuple[float, float]
    range_source: str
    npz: str | None
    mp4: str | None
    png_dir: str | None
    first_time_s: float
    last_time_s: float
    intrinsics: dict[str, Any] | None = None

    def describe(self) -> str:
        near, far = self.depth_range_m
        return (
            f"{self.source}: {self.num_frames} frames {self.width}x{self.height} at {self.fps:g} fps; colour range "
            f"{near:.3f}-{far:.3f} m ({self.range_source}), the same in every frame"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_range(depth_range) -> tuple[float, float] | None:
    if depth_range is None:
        return None
    near, far = (float(v) for v in depth_range)
    if not (np.isfinite(near) and np.isfinite(far) and 0 <= near < far):
        raise ValueError(f"depth_range must be (near, far) metres with 0 <= near < far, got {tuple(depth_range)}")
    return near, far


def _batched(frames: Iterator[VideoFrame], size: int) -> Iterator[list[VideoFrame]]:
    batch: list[VideoFrame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _predict_batch(predictor, processor, frames: list[VideoFrame], input_size) -> list[np.ndarray]:
    pixel_values = preprocess_images(processor, [f.image for f in frames], input_size)
    out: list[np.ndarray | None] = [None] * len(frames)
    for group, stack in batches_of_equal_shape(pixel_values, len(frames)):
        depth = predictor(stack).cpu()
        for k, i in enumerate(group):
            out[i] = resize_depth_bilinear(depth[k], frames[i].image.shape[:2]).numpy()
    return out  # type: ignore[return-value]


def _read_frame(handle, index: int, frame_pixels: int, shape: tuple[int, int]) -> np.ndarray:
    handle.seek(index * frame_pixels * 2)
    return np.fromfile(handle, dtype=np.float16, count=frame_pixels).reshape(shape)


def clip_depth_range(
    scratch: Path, num_frames: int, shape: tuple[int, int], percentiles=RANGE_PERCENTILES, max_frames=None
) -> tuple[tuple[float, float], int]:
    """(near, far) percentiles of valid depth over up to `max_frames` evenly spaced frames of a float16 scratch
    file of `num_frames` × `shape`; returns the range and the number of frames used."""
    max_frames = max_frames or RANGE_SAMPLE_FRAMES
    picks = np.unique(np.linspace(0, num_frames - 1, min(num_frames, max_frames)).round().astype(int))
    pixels = shape[0] * shape[1]
    step = max(1, int(np.sqrt(pixels / 20_000)))  # about 20k pixels per frame
    values = []
    with open(scratch, "rb") as handle:
        for i in picks:
            depth = _read_frame(handle, int(i), pixels, shape)[::step, ::step].astype(np.float32)
            values.append(depth[np.isfinite(depth) & (depth > 0)])
    valid = np.concatenate(values)
    if valid.size == 0:
        return (0.0, 1.0), len(picks)
    near, far = (float(v) for v in np.percentile(valid, percentiles))
    if far <= near:
        far = near + 1e-3
    return (near, far), len(picks)


def _write_npz(path: Path, scratch: Path, num_frames: int, shape: tuple[int, int], arrays: dict[str, np.ndarray]):
    """An .npz (as np.savez: stored, no pickle) whose ``depth`` entry is streamed from the scratch file."""
    tmp = path.with_name(f".{path.name}.tmp")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False}
    header["shape"] = (num_frames, *shape)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("depth.npy", "w", force_zip64=True) as entry, open(scratch, "rb") as source:
            np.lib.format.write_array_header_2_0(entry, header)
            while chunk := source.read(1 << 22):
                entry.write(chunk)
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as entry:
                np.lib.format.write_array(entry, np.asarray(value), allow_pickle=False)
    os.replace(tmp, path)
    return path


def predict_video_file(
    model: torch.nn.Module,
    processor: Any,
    path: str | Path,
    output_dir: str | Path,
    *,
    max_frames: int | None = None,
    target_fps: float | None = None,
    stride: int | None = None,
    max_size: int | None = None,
    depth_range: Sequence[float] | None = None,
    outputs: Sequence[str] = DEFAULT_VIDEO_OUTPUTS,
    name: str | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    dtype: str = "fp32",
    tta: TestTimeAugmentation | None = None,
    input_size: tuple[int, int] | None = None,
    cmap: str = "magma_r",
    predictor: DepthPredictor | None = None,
    progress: bool = True,
    intrinsics: CameraIntrinsics | None = None,
    fov: float | None = None,
) -> VideoPrediction:
    """Predict depth for every sampled frame of a video file and write the requested outputs.

    Args:
        model, processor: a depth model (``predicted_depth`` in metres) and its image processor (``None``: the
            checkpoint's or the default ``MeSaImageProcessor``).
        path: video file (:data:`~mesa_hf.data.video_files.VIDEO_FILE_EXTENSIONS`); output_dir: where to write.
        max_frames, target_fps, stride, max_size: frame sampling and downscaling (see ``iter_video_frames``).
        depth_range: (near, far) metres of the colour map; ``None``: the clip's 2nd-98th percentiles.
        outputs: any of ``"mp4"`` (``<name>_depth.mp4``), ``"npz"`` (``<name>_depth.npz``), ``"png16"``
            (``<name>_depth_frames/NNNNN.png``, uint16 millimetres).
        name: output prefix (default: the file's stem).
        batch_size, device, dtype, tta, input_size: inference settings (as ``predict_to_files``).
        cmap: matplotlib colour map of the depth video (near = bright with ``magma_r``).
        predictor: a ready `DepthPredictor` (reused across videos); overrides device/dtype/tta.
        progress: show a tqdm bar over frames.
        intrinsics, fov: the camera (pixels of the video's frames before ``max_size``) or its horizontal field of
            view in degrees; default the checkpoint's camera or NYUv2's (`mesa_hf.camera.resolve_intrinsics`). The
            npz stores it at the predicted size as ``intrinsics`` (3, 3) and ``intrinsics_source``.

    Returns a :class:`VideoPrediction` with the paths and the colour range used.
    """
    unknown = set(outputs) - set(VIDEO_OUTPUT_KINDS)
    if unknown or not outputs:
        raise ValueError(f"video outputs must be some of {VIDEO_OUTPUT_KINDS}, got {list(outputs)}")
    fixed_range = _check_range(depth_range)
    path, output_dir = Path(path), Path(output_dir)
    name = name or path.stem
    info = probe_video(path)
    if processor is None:
        from .evaluator import _default_image_processor

        processor = _default_image_processor(model)
    predictor = predictor or DepthPredictor(model, device=device, dtype=dtype, tta=tta)
    output_dir.mkdir(parents=True, exist_ok=True)
    shape = scaled_size(info.height, info.width, max_size)
    if intrinsics is not None:
        camera = intrinsics.scaled_to(info.height, info.width).scaled_to(*shape)
    else:
        camera = resolve_intrinsics(size=shape, fov=fov, config=getattr(model, "config", None))
    png_dir = output_dir / f"{name}_depth_frames" if "png16" in outputs else None
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    scratch = output_dir / f".{name}_depth.f16.tmp"
    timestamps, indices = [], []
    total = expected_frame_count(info, max_frames, target_fps, stride)
    frames = iter_video_frames(path, max_frames=max_frames, target_fps=target_fps, stride=stride, max_size=max_size)
    try:
        with (
            open(scratch, "wb") as handle,
            tqdm(total=total, desc=f"predict {path.name}", unit="frame", disable=not progress) as bar,
        ):
            for batch in _batched(frames, batch_size):
                for frame, depth in zip(batch, _predict_batch(predictor, processor, batch, input_size)):
                    if depth.shape != shape:
                        raise ValueError(f"{path}: frame {frame.index} is {depth.shape}, the video's frames {shape}")
                    handle.write(np.ascontiguousarray(depth, dtype=np.float16).tobytes())
                    if png_dir is not None:
                        save_depth_png16(png_dir / f"{len(indices):05d}.png", depth)
                    timestamps.append(frame.time_s)
                    indices.append(frame.index)
                bar.update(len(batch))
        num = len(indices)
        if fixed_range is not None:
            depth_range_m, range_source = fixed_range, "fixed"
        else:
            depth_range_m, used = clip_depth_range(scratch, num, shape)
            low, high = RANGE_PERCENTILES
            range_source = f"clip percentiles {low:g}-{high:g} of {used} evenly spaced frames"
        fps = _sampled_fps(info.fps, target_fps, stride, timestamps)
        npz_path = mp4_path = None
        if "npz" in outputs:
            npz_path = _write_npz(
                output_dir / f"{name}_depth.npz",
                scratch,
                num,
                shape,
                {
                    "timestamps_s": np.asarray(timestamps, dtype=np.float64),
                    "frame_indices": np.asarray(indices, dtype=np.int64),
                    "depth_range_m": np.asarray(depth_range_m, dtype=np.float32),
                    "fps": np.float64(fps),
                    "units": np.array("m"),
                    "intrinsics": camera.matrix(),
                    "intrinsics_source": np.array(camera.source),
                },
            )
        if "mp4" in outputs:
            near, far = depth_range_m
            comment = f"mesa-hf depth: {cmap}, near {near:.4f} m to far {far:.4f} m in every frame ({range_source})"
            mp4_path = output_dir / f"{name}_depth.mp4"
            pixels = shape[0] * shape[1]
            with open(scratch, "rb") as handle, VideoWriter(mp4_path, fps, metadata={"comment": comment}) as writer:
                for i in range(num):
                    depth = _read_frame(handle, i, pixels, shape).astype(np.float32)
                    writer.write(colorize_depth(depth, cmap=cmap, vmin=near, vmax=far))
    finally:
        scratch.unlink(missing_ok=True)
    return VideoPrediction(
        source=str(path),
        name=name,
        num_frames=num,
        height=shape[0],
        width=shape[1],
        fps=fps,
        depth_range_m=(float(depth_range_m[0]), float(depth_range_m[1])),
        range_source=range_source,
        npz=None if npz_path is None else str(npz_path),
        mp4=None if mp4_path is None else str(mp4_path),
        png_dir=None if png_dir is None else str(png_dir),
        first_time_s=float(timestamps[0]),
        last_time_s=float(timestamps[-1]),
        intrinsics=camera.to_dict(),
    )


def _sampled_fps(video_fps, target_fps, stride, timestamps) -> float:
    if stride and video_fps:
        return video_fps / stride
    if target_fps and video_fps:
        return min(target_fps, video_fps)
    if video_fps:
        return video_fps
    if len(timestamps) > 1 and timestamps[-1] > timestamps[0]:
        return (len(timestamps) - 1) / (timestamps[-1] - timestamps[0])
    return 30.0


def split_video_inputs(sources: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Separate video files (given directly or inside given folders) from the other inputs of ``mesa-hf predict``.

    Returns (video files, remaining sources): a folder stays among the remaining sources when it also holds files
    that are not videos (images, frame sequences)."""
    if isinstance(sources, str | Path):
        sources = [sources]
    videos: list[Path] = []
    others: list[str] = []
    for source in sources:
        source_path = Path(source)
        if source_path.is_dir():
            files = sorted(p for p in source_path.iterdir() if p.is_file() and not p.name.startswith("."))
            found = [p for p in files if is_video_file(p)]
            videos += found
            if not found or len(found) < len(files):
                others.append(str(source))
        elif is_video_file(source_path):
            videos.append(source_path)
        else:
            others.append(str(source))
    return videos, others


def check_videos(paths: Sequence[str | Path]) -> None:
    """Probe every video (header and first frame); raises the first file's one-line ``VideoReadError``."""
    for path in paths:
        probe_video(path)


def predict_video_files(
    model: torch.nn.Module, processor: Any, paths: Sequence[str | Path], output_dir: str | Path, **kwargs: Any
) -> list[VideoPrediction]:
    """:func:`predict_video_file` for several videos (unique output names; one model on one device)."""
    predictor = kwargs.pop("predictor", None) or DepthPredictor(
        model, device=kwargs.pop("device", None), dtype=kwargs.pop("dtype", "fp32"), tta=kwargs.pop("tta", None)
    )
    for key in ("device", "dtype", "tta"):
        kwargs.pop(key, None)
    seen: dict[str, int] = {}
    results = []
    for path in map(Path, paths):
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        name = path.stem if count == 0 else f"{path.stem}_{count}"
        results.append(predict_video_file(model, processor, path, output_dir, name=name, predictor=predictor, **kwargs))
    return results


# ------------------------------------------------------------------------------------- command line (mesa-hf predict)


def add_video_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The video options of ``mesa-hf predict`` (used when an input is a video file or a folder of them)."""
    group = parser.add_argument_group(f"video files ({', '.join(VIDEO_FILE_EXTENSIONS)})")
    group.add_argument("--max-frames", type=int, default=None, help="predict at most N frames per video")
    group.add_argument("--target-fps", type=float, default=None, help="sample about this many frames per second")
    group.add_argument("--stride", type=int, default=None, help="predict every N-th frame (instead of --target-fps)")
    group.add_argument("--max-size", type=int, default=None, help="downscale frames so the longer side is <= N px")
    group.add_argument(
        "--depth-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("NEAR", "FAR"),
        help="colour range of the depth video in metres (default: the clip's 2nd-98th percentiles)",
    )
    group.add_argument(
        "--video-outputs",
        nargs="+",
        choices=VIDEO_OUTPUT_KINDS,
        default=list(DEFAULT_VIDEO_OUTPUTS),
        help="<name>_depth.mp4 (colour), <name>_depth.npz (float16 metres + timestamps), 16-bit PNG frames",
    )


def run_video_predictions(
    args: argparse.Namespace,
    model,
    processor,
    videos: Sequence[Path],
    tta,
    intrinsics: CameraIntrinsics | None = None,
    fov: float | None = None,
) -> int:
    """The video part of ``mesa-hf predict``: predict, print one line per video, write video_predictions.json."""
    results = predict_video_files(
        model,
        processor,
        videos,
        args.output_dir,
        max_frames=args.max_frames,
        target_fps=args.target_fps,
        stride=args.stride,
        max_size=args.max_size,
        depth_range=args.depth_range,
        outputs=args.video_outputs,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        tta=tta,
        input_size=tuple(args.input_size) if args.input_size else None,
        cmap=args.cmap,
        progress=not args.no_progress,
        intrinsics=intrinsics,
        fov=fov,
    )
    for result in results:
        print(result.describe())
    print(".npz: depth float16 metres (frames, H, W), timestamps_s, frame_indices, depth_range_m, intrinsics")
    path = Path(args.output_dir) / "video_predictions.json"
    path.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    return len(results)


__all__ = [
    "DEFAULT_VIDEO_OUTPUTS",
    "VIDEO_OUTPUT_KINDS",
    "VideoPrediction",
    "add_video_predict_arguments",
    "check_videos",
    "clip_depth_range",
    "predict_video_file",
    "predict_video_files",
    "run_video_predictions",
    "split_video_inputs",
]

"""Depth prediction on image files, lists, folders and frame sequences, written as PNG16 / NPY / colour / PLY."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .inference import DepthPredictor, batches_of_equal_shape, preprocess_images, resize_depth_bilinear
from .io import Intrinsics, depth_to_points, nyu_intrinsics, save_colormap_png, save_depth_png16, save_ply
from .tta import TestTimeAugmentation

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
MULTI_FRAME_EXTENSIONS = (".gif", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
OUTPUT_KINDS = ("png16", "npy", "color", "ply")

logger = logging.getLogger(__name__)


class UnreadableImageError(ValueError):
    """An input that cannot be read as an image (missing, corrupt, truncated): a batch skips it unless strict."""


# What PIL and the RGB conversion raise for a bad file (truncated data: OSError; broken chunks: SyntaxError).
_READ_ERRORS = (OSError, EOFError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class InputFrame:
    """One image to predict: ``path`` (and ``frame`` index inside a multi-frame file), output ``name``."""

    path: Path
    name: str
    frame: int | None = None

    @property
    def source(self) -> str:
        """The file, with ``#<frame>`` for a frame of a multi-frame file."""
        return str(self.path) + (f"#{self.frame}" if self.frame is not None else "")

    def load(self) -> Image.Image:
        """The frame as an RGB PIL image (EXIF rotation applied; 16-bit / grayscale / RGBA handled like
        ``MeSaImageProcessor``). Raises `UnreadableImageError` naming the file for a missing, corrupt or
        truncated image."""
        from mesa_hf.image_processing_mesa import load_rgb_image

        where = f"{self.path}" + (f" frame {self.frame}" if self.frame is not None else "")
        if not self.path.is_file():
            raise UnreadableImageError(f"cannot read image {where}: file not found")
        try:
            with Image.open(self.path) as im:
                if self.frame is not None:
                    im.seek(self.frame)
                im.load()
                return Image.fromarray(load_rgb_image(im))
        except _READ_ERRORS as error:
            raise UnreadableImageError(f"cannot read image {where}: {error}") from error


@dataclass(frozen=True)
class PredictionFailure:
    """An input skipped by `predict_to_files`: its ``source`` (file, ``#frame``) and the one-line ``error``."""

    source: str
    error: str


class PredictionRecords(list):
    """The records of the images predicted (a list, one dict per image) and the ``failures`` skipped."""

    def __init__(self, records: Sequence[dict[str, Any]] = (), failures: Sequence[PredictionFailure] = ()):
        super().__init__(records)
        self.failures: list[PredictionFailure] = list(failures)


def _frames_of_file(path: Path, missing_ok: bool = False) -> list[InputFrame]:
    """The frames of one input; a missing (``missing_ok``) or unreadable image becomes one frame that fails to
    load, so a batch reports it with the others instead of stopping before it starts."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        raise ValueError(
            f"{path}: a video file; predict it with `mesa-hf predict {path.name}` or "
            "mesa_hf.evaluation.predict_video.predict_video_file (depth mp4 + npz)"
        )
    if suffix in LIST_EXTENSIONS:
        entries = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if not entries:
            raise ValueError(f"image list {path} is empty")
        resolved = [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]
        return [f for p in resolved for f in _frames_of_file(p, missing_ok=True)]
    if not path.exists() and not missing_ok:
        raise FileNotFoundError(f"input not found: {path}")
    if suffix not in IMAGE_EXTENSIONS:
        raise ValueError(f"{path}: not an image ({', '.join(IMAGE_EXTENSIONS)}), image list or folder")
    if suffix in MULTI_FRAME_EXTENSIONS and path.is_file():
        try:
            with Image.open(path) as im:
                count = getattr(im, "n_frames", 1)
        except _READ_ERRORS:
            count = 1  # reported when the frame is loaded
        if count > 1:
            return [InputFrame(path, f"{path.stem}_{i:05d}", i) for i in range(count)]
    return [InputFrame(path, path.stem)]


def collect_inputs(sources: Sequence[str | Path]) -> list[InputFrame]:
    """Expand image files, image lists (one path per line), folders (sorted images, e.g. video frames) and
    multi-frame images (animated GIF/TIFF/WebP) into frames with unique output names."""
    if isinstance(sources, str | Path):
        sources = [sources]
    frames: list[InputFrame] = []
    for source in map(Path, sources):
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise ValueError(f"folder {source} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            frames += [f for p in files for f in _frames_of_file(p)]
        else:
            frames += _frames_of_file(source)
    seen: dict[str, int] = {}
    unique = []
    for frame in frames:
        count = seen.get(frame.name, 0)
        seen[frame.name] = count + 1
        unique.append(frame if count == 0 else InputFrame(frame.path, f"{frame.name}_{count}", frame.frame))
    return unique


def write_depth_outputs(
    output_dir: str | Path,
    name: str,
    depth: np.ndarray,
    image: Image.Image | None = None,
    intrinsics: Intrinsics | None = None,
    outputs: Sequence[str] = OUTPUT_KINDS,
    cmap: str = "magma_r",
) -> dict[str, Path]:
    """Write ``<name>_depth.png`` (uint16 mm), ``<name>_depth.npy`` (float32 m), ``<name>_depth_color.png`` and
    ``<name>.ply`` (coloured points; intrinsics default to NYU's scaled to the image) into ``output_dir``."""
    unknown = set(outputs) - set(OUTPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown output kinds {sorted(unknown)}; choose from {OUTPUT_KINDS}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    depth = np.asarray(depth, dtype=np.float32)
    written: dict[str, Path] = {}
    if "png16" in outputs:
        written["png16"] = save_depth_png16(output_dir / f"{name}_depth.png", depth)
    if "npy" in outputs:
        written["npy"] = output_dir / f"{name}_depth.npy"
        np.save(written["npy"], depth)
    if "color" in outputs:
        written["color"] = save_colormap_png(output_dir / f"{name}_depth_color.png", depth, cmap=cmap)
    if "ply" in outputs:
        intrinsics = intrinsics or nyu_intrinsics(*depth.shape)
        colors = None if image is None else np.asarray(image.convert("RGB"))
        if colors is not None and colors.shape[:2] != depth.shape:
            colors = np.asarray(image.convert("RGB").resize(depth.shape[::-1], Image.BILINEAR))
        points, point_colors = depth_to_points(depth, intrinsics, colors)
        written["ply"] = save_ply(output_dir / f"{name}.ply", points, point_colors)
    return written


def predict_depth_batches(
    predictor: DepthPredictor,
    frames: Sequence[InputFrame],
    image_processor: Any,
    batch_size: int = 4,
    input_size: tuple[int, int] | None = None,
    on_failure: Callable[[InputFrame, UnreadableImageError], None] | None = None,
) -> Iterator[tuple[InputFrame, Image.Image, np.ndarray]]:
    """Yield (frame, RGB image, depth (H, W) float32 metres at the image's size) in input order.

    A frame that cannot be read raises `UnreadableImageError`, or, with ``on_failure``, is passed to it and
    skipped (the batch is filled with the readable frames of its chunk).
    """
    for start in range(0, len(frames), batch_size):
        chunk, images = [], []
        for frame in frames[start : start + batch_size]:
            try:
                images.append(frame.load())
            except UnreadableImageError as error:
                if on_failure is None:
                    raise
                on_failure(frame, error)
                continue
            chunk.append(frame)
        if not chunk:
            continue
        pixel_values = preprocess_images(image_processor, images, input_size)
        results: dict[int, np.ndarray] = {}
        for group, stack in batches_of_equal_shape(pixel_values, batch_size):
            depth = predictor(stack).cpu()
            for k, i in enumerate(group):
                height, width = images[i].size[1], images[i].size[0]
                results[i] = resize_depth_bilinear(depth[k], (height, width)).numpy().astype(np.float32)
        for i, frame in enumerate(chunk):
            yield frame, images[i], results[i]


def _log_failure(failure: PredictionFailure) -> None:
    logger.warning("%s (skipped)", failure.error)


def prediction_record(name: str, source: str, depth: np.ndarray, intrinsics, written: dict) -> dict:
    """One line of ``predictions.json``: the input, the depth map's size and range (metres), the files written."""
    finite = depth[np.isfinite(depth)]
    return {
        "name": name,
        "source": source,
        "height": int(depth.shape[0]),
        "width": int(depth.shape[1]),
        "intrinsics": intrinsics.describe(),
        "depth_min_m": float(finite.min()) if finite.size else float("nan"),
        "depth_max_m": float(finite.max()) if finite.size else float("nan"),
        "outputs": {kind: str(path) for kind, path in written.items()},
    }


def predict_to_files(
    model: torch.nn.Module,
    sources: Sequence[str | Path],
    output_dir: str | Path,
    image_processor: Any = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    dtype: str = "fp32",
    tta: TestTimeAugmentation | None = None,
    intrinsics: Intrinsics | None = None,
    outputs: Sequence[str] = OUTPUT_KINDS,
    cmap: str = "magma_r",
    input_size: tuple[int, int] | None = None,
    progress: bool = True,
    strict: bool = False,
    on_failure: Callable[[PredictionFailure], None] | None = _log_failure,
) -> PredictionRecords:
    """Predict depth for every input frame and write the requested outputs.

    Returns one record per predicted frame (name, source, size, intrinsics used, written paths, depth range);
    inputs that cannot be read (missing, corrupt, truncated) are skipped and listed in the result's
    ``failures``, each passed to ``on_failure`` as it occurs (default: a logged warning). With ``strict`` the
    first unreadable input raises `UnreadableImageError` instead.
    """
    from .evaluator import _default_image_processor

    frames = collect_inputs(sources)
    image_processor = image_processor or _default_image_processor(model)
    predictor = DepthPredictor(model, device=device, dtype=dtype, tta=tta)
    records = PredictionRecords()

    def skip(frame: InputFrame, error: UnreadableImageError) -> None:
        failure = PredictionFailure(frame.source, str(error))
        records.failures.append(failure)
        if on_failure is not None:
            on_failure(failure)

    for frame, image, depth in tqdm(
        predict_depth_batches(predictor, frames, image_processor, batch_size, input_size, None if strict else skip),
        total=len(frames),
        desc="predict",
        disable=not progress,
    ):
        frame_intrinsics = intrinsics or nyu_intrinsics(*depth.shape)
        written = write_depth_outputs(output_dir, frame.name, depth, image, frame_intrinsics, outputs, cmap)
        records.append(prediction_record(frame.name, frame.source, depth, frame_intrinsics, written))
    return records

"""Depth prediction on image files, lists, folders and frame sequences, written as PNG16 / NPY / colour / PLY."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mesa_hf.camera import CameraIntrinsics, resolve_intrinsics

from .inference import DepthPredictor, batches_of_equal_shape, preprocess_images, resize_depth_bilinear
from .io import save_colormap_png, save_depth_png16
from .scene_files import EDGE_THRESHOLD, save_camera_json, save_depth_exr, save_mesh_glb, save_point_cloud
from .tta import TestTimeAugmentation

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
MULTI_FRAME_EXTENSIONS = (".gif", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
OUTPUT_KINDS = ("png16", "npy", "color", "ply", "camera", "glb", "exr")
"""What `write_depth_outputs` can write: ``<name>_depth.png``, ``_depth.npy``, ``_depth_color.png``, ``.ply``,
``_camera.json``, ``.glb`` (mesh, needs trimesh) and ``_depth.exr`` (float32, needs OpenEXR)."""
DEFAULT_OUTPUTS = ("png16", "npy", "color", "ply", "camera")
"""What ``mesa-hf predict`` writes unless ``--outputs`` says otherwise (no optional writer libraries needed)."""

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
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Corrupt EXIF", UserWarning)  # resolve_intrinsics reports it
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


class DepthOutputs(dict):
    """The files `write_depth_outputs` wrote (kind -> path) and, when it wrote a PLY or GLB,
    ``flying_pixels_dropped`` (else None)."""

    flying_pixels_dropped: int | None = None


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
    intrinsics: CameraIntrinsics | None = None,
    outputs: Sequence[str] = DEFAULT_OUTPUTS,
    cmap: str = "magma_r",
    edge_threshold: float = EDGE_THRESHOLD,
) -> DepthOutputs:
    """Write the ``outputs`` kinds (`OUTPUT_KINDS`) of one depth map (H, W) float32 metres into ``output_dir``.

    ``<name>_depth.png`` (uint16 mm), ``<name>_depth.npy`` (float32 m), ``<name>_depth_color.png``, ``<name>.ply``
    (coloured points, camera frame), ``<name>.glb`` (coloured mesh, glTF y-up), ``<name>_depth.exr`` (float32 m)
    and ``<name>_camera.json`` (the intrinsics, their source, the flying pixels dropped). ``intrinsics`` default to
    `resolve_intrinsics` at the depth's size (NYUv2's camera, assumed); the PLY and GLB drop flying pixels
    (``edge_threshold``, `mesa_hf.evaluation.scene_files.flying_pixel_mask`). The returned dict maps each kind to
    its path; the number of flying pixels dropped, when a PLY or GLB was written, is in the camera JSON.
    """
    unknown = set(outputs) - set(OUTPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown output kinds {sorted(unknown)}; choose from {OUTPUT_KINDS}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    depth = np.asarray(depth, dtype=np.float32)
    written = DepthOutputs()
    if "png16" in outputs:
        written["png16"] = save_depth_png16(output_dir / f"{name}_depth.png", depth)
    if "npy" in outputs:
        written["npy"] = output_dir / f"{name}_depth.npy"
        np.save(written["npy"], depth)
    if "color" in outputs:
        written["color"] = save_colormap_png(output_dir / f"{name}_depth_color.png", depth, cmap=cmap)
    if "exr" in outputs:
        written["exr"] = save_depth_exr(output_dir / f"{name}_depth.exr", depth)
    if not {"ply", "glb", "camera"} & set(outputs):
        return written
    camera = (intrinsics or resolve_intrinsics(size=depth.shape)).scaled_to(*depth.shape)
    colors = None
    if image is not None:
        rgb = image.convert("RGB")
        colors = np.asarray(rgb if rgb.size == depth.shape[::-1] else rgb.resize(depth.shape[::-1], Image.BILINEAR))
    counts: dict[str, int] = {}
    if "ply" in outputs:
        written["ply"], counts["ply_points"], counts["flying_pixels_dropped"] = save_point_cloud(
            output_dir / f"{name}.ply", depth, camera, colors, edge_threshold
        )
    if "glb" in outputs:
        written["glb"], counts["glb_vertices"], counts["flying_pixels_dropped"] = save_mesh_glb(
            output_dir / f"{name}.glb", depth, camera, colors, edge_threshold
        )
    if "camera" in outputs:
        extra = {"depth_size": [int(depth.shape[0]), int(depth.shape[1])], **counts}
        if counts:
            extra["edge_threshold"] = edge_threshold
        written["camera"] = save_camera_json(output_dir / f"{name}_camera.json", camera, extra)
    written.flying_pixels_dropped = counts.get("flying_pixels_dropped")
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


def prediction_record(
    name: str, source: str, depth: np.ndarray, intrinsics: CameraIntrinsics | None, written: dict
) -> dict:
    """One line of ``predictions.json``: the input, the depth map's size and range (metres), the intrinsics used
    (with their source), the flying pixels dropped from the PLY / GLB, the files written."""
    finite = depth[np.isfinite(depth)]
    intrinsics = (intrinsics or resolve_intrinsics(size=depth.shape)).scaled_to(*depth.shape)
    record = {
        "name": name,
        "source": source,
        "height": int(depth.shape[0]),
        "width": int(depth.shape[1]),
        "intrinsics": intrinsics.describe(),
        "intrinsics_source": intrinsics.source,
        "depth_min_m": float(finite.min()) if finite.size else float("nan"),
        "depth_max_m": float(finite.max()) if finite.size else float("nan"),
        "outputs": {kind: str(path) for kind, path in written.items()},
    }
    dropped = getattr(written, "flying_pixels_dropped", None)
    if dropped is not None:
        record["flying_pixels_dropped"] = dropped
    return record


def frame_intrinsics(
    frame: InputFrame,
    size: tuple[int, int],
    intrinsics: CameraIntrinsics | None = None,
    fov: float | None = None,
    config: Any = None,
) -> CameraIntrinsics:
    """`resolve_intrinsics` for one input frame at ``size`` (H, W): ``intrinsics`` given (in pixels of the input
    images when they carry no size), else ``fov``, the file's EXIF (single-frame files), ``config``'s camera, or
    NYUv2's."""
    if intrinsics is not None:
        if intrinsics.width is not None:
            return intrinsics.scaled_to(*size)
        return resolve_intrinsics(size=size, fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.cx, cy=intrinsics.cy)
    image = frame.path if frame.frame is None and frame.path.is_file() else None
    return resolve_intrinsics(image, size=size, fov=fov, config=config)


def predict_to_files(
    model: torch.nn.Module,
    sources: Sequence[str | Path],
    output_dir: str | Path,
    image_processor: Any = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    dtype: str = "fp32",
    tta: TestTimeAugmentation | None = None,
    intrinsics: CameraIntrinsics | None = None,
    outputs: Sequence[str] = DEFAULT_OUTPUTS,
    cmap: str = "magma_r",
    input_size: tuple[int, int] | None = None,
    progress: bool = True,
    strict: bool = False,
    on_failure: Callable[[PredictionFailure], None] | None = _log_failure,
    fov: float | None = None,
    edge_threshold: float = EDGE_THRESHOLD,
) -> PredictionRecords:
    """Predict depth for every input frame and write the requested outputs.

    Intrinsics per frame (`frame_intrinsics`): ``intrinsics`` (pixels of the inputs), else ``fov`` (horizontal
    degrees), the photo's EXIF focal length, the checkpoint's ``config.camera_intrinsics``, or NYUv2's camera
    (assumed). Returns one record per predicted frame (name, source, size, intrinsics used and their source,
    written paths, depth range, flying pixels dropped); inputs that cannot be read (missing, corrupt, truncated)
    are skipped and listed in the result's ``failures``, each passed to ``on_failure`` as it occurs (default: a
    logged warning). With ``strict`` the first unreadable input raises `UnreadableImageError` instead.
    """
    from .evaluator import _default_image_processor

    frames = collect_inputs(sources)
    image_processor = image_processor or _default_image_processor(model)
    predictor = DepthPredictor(model, device=device, dtype=dtype, tta=tta)
    config = getattr(model, "config", None)
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
        camera = frame_intrinsics(frame, depth.shape, intrinsics, fov, config)
        written = write_depth_outputs(output_dir, frame.name, depth, image, camera, outputs, cmap, edge_threshold)
        records.append(prediction_record(frame.name, frame.source, depth, camera, written))
    return records

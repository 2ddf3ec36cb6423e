"""What the web demo computes, without any web framework: load a checkpoint once, read an upload safely,
predict depth (optional flip TTA), colour it, write the downloads and the point cloud.

Everything reuses mesa_hf's own pieces: :func:`~mesa_hf.evaluation.inference.preprocess_images` +
:class:`~mesa_hf.evaluation.inference.DepthPredictor` + :func:`~mesa_hf.evaluation.inference.resize_depth_bilinear` (the
steps of ``mesa-hf predict``), :func:`~mesa_hf.evaluation.predict.write_depth_outputs` (16-bit PNG in mm, float32
``.npy`` in m, ``.ply``), :func:`~mesa_hf.evaluation.io.colorize_depth` and the NYUv2 intrinsics ``predict`` assumes.
Depth is float32 metres, (H, W) at the size of the image as processed (the upload, or its downscaled copy).
"""

from __future__ import annotations

import atexit
import functools
import math
import re
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mesa_hf.camera import CameraIntrinsics, Measurement, intrinsics_from_fov, measure_distance, resolve_intrinsics
from mesa_hf.evaluation.inference import DepthPredictor, load_checkpoint, preprocess_images, resize_depth_bilinear
from mesa_hf.evaluation.io import colorize_depth, save_ply
from mesa_hf.evaluation.predict import IMAGE_EXTENSIONS, write_depth_outputs
from mesa_hf.evaluation.scene_files import (
    EDGE_THRESHOLD,
    kept_pixels,
    save_camera_json,
    save_mesh_glb,
    scene_points,
    writer_missing,
)
from mesa_hf.evaluation.tta import TestTimeAugmentation
from mesa_hf.image_processing_mesa import load_rgb_image

DEFAULT_CHECKPOINT = Path("outputs/main-job/finetuned")
"""What ``mesa-hf demo`` serves when no checkpoint is given: the main job's fine-tuned model (``make demo``)."""

COLORMAPS = ("magma_r", "inferno_r", "viridis_r", "turbo_r", "Spectral", "gray_r")
"""Colour maps offered in the page (matplotlib names; ``magma_r`` is ``mesa-hf predict``'s: near = bright)."""

AUTO_RANGE_PERCENTILES = (2.0, 98.0)
"""Automatic colour range: these percentiles of valid depth (what :func:`colorize_depth` uses by default)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class UnreadableImageError(ValueError):
    """An upload that is not an image we can read; the message is meant for the page (no server paths)."""


@dataclass(frozen=True)
class DemoLimits:
    """What one visitor may ask of the machine.

    ``max_upload_size``: Gradio's ``max_file_size`` (uploads above it are refused by the server).
    ``max_image_pixels``: images with more pixels are refused (decompression-bomb guard).
    ``max_image_side``: images whose longer side exceeds this (pixels) are first downscaled to the processor's
    size (what the model sees anyway); the readout says so.
    ``concurrency_limit``: model runs at once (all model-running events share one queue slot set).
    ``max_queue_size``: waiting requests beyond this are turned away.
    ``max_points``: upper end of the point-density control; ``default_points``: its start value.
    ``max_video_frames``: most frames predicted per video; ``max_video_side``: frames are downscaled so their longer
    side is at most this (pixels); ``max_video_fps``: highest sampling rate (frames/s) a visitor may ask for.
    """

    max_upload_size: str = "25mb"
    max_image_pixels: int = 40_000_000
    max_image_side: int = 2048
    concurrency_limit: int = 1
    max_queue_size: int = 16
    max_points: int = 400_000
    default_points: int = 100_000
    max_video_frames: int = 120
    max_video_side: int = 640
    max_video_fps: float = 30.0


@dataclass
class DepthResult:
    """One prediction: the RGB ``image`` as processed, its ``depth`` (H, W) float32 metres, and how it was made."""

    name: str
    image: Image.Image
    depth: np.ndarray
    seconds: float
    upload_size: tuple[int, int]  # (width, height) of the upload
    tta: str
    downscaled: bool = False
    source: str | None = None  # the uploaded file

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image and depth as processed."""
        return self.image.size

    @property
    def scale(self) -> float:
        """Processed width / upload width (1.0 unless downscaled)."""
        return self.size[0] / self.upload_size[0]


@dataclass(frozen=True)
class PointCloud:
    """A written point cloud: ``path`` (camera frame: x right, y down, z forward, metres), ``view_path`` (the same
    points turned for a y-up viewer), ``points`` count, pixel ``stride``, ``intrinsics`` used (processed pixels),
    ``flying_pixels_dropped`` (of the full-resolution depth, before striding), ``glb_path`` the same points as a
    GLB mesh (glTF y-up; None where trimesh is missing, ``glb_missing`` then says why)."""

    path: Path
    view_path: Path
    points: int
    stride: int
    intrinsics: CameraIntrinsics
    flying_pixels_dropped: int = 0
    glb_path: Path | None = None
    glb_missing: str | None = None


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """The finite, positive depth values (1-D, metres)."""
    return depth[np.isfinite(depth) & (depth > 0)]


def resolve_checkpoint(checkpoint: str | Path | None, default: str | Path = DEFAULT_CHECKPOINT) -> str:
    """The checkpoint to serve: ``checkpoint`` as given (a folder or Hub id), else ``default`` if it exists.

    Raises FileNotFoundError naming the two ways to get a checkpoint when neither is there.
    """
    if checkpoint is not None and str(checkpoint).strip():
        return str(checkpoint)
    default = Path(default)
    if (default / "config.json").is_file():
        return str(default)
    raise FileNotFoundError(
        f"no checkpoint given and the main job's checkpoint {default} does not exist; run `make demo` to train "
        "one there (a few minutes on a CPU), or `mesa-hf convert` to convert released MIM-Depth/SimMIM weights, "
        "or pass a checkpoint folder or Hugging Face Hub id: `mesa-hf demo PATH_OR_HUB_ID`"
    )


def _checkpoint_folder(checkpoint: str) -> Path:
    """A local folder for ``checkpoint``: the folder itself, or the Hub snapshot (cache only when offline)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir() or not _HUB_ID.match(checkpoint):
        return path  # load_checkpoint names a missing folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(checkpoint, allow_patterns=["*.json", "*.safetensors", "*.md"]))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError) as error:
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(error).__name__}; offline, only models already in the cache load)"
        ) from error


class DemoEngine:
    """A depth model and its processor, loaded once, behind a lock; turns uploads into :class:`DepthResult`.

    Args:
        model: a depth model (``MeSaForDepthEstimation``); processor: its ``MeSaImageProcessor``.
        device / dtype: as for :class:`DepthPredictor` (default: best device, fp32).
        limits: :class:`DemoLimits`; description: one line about the checkpoint for the page header.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        device: str | torch.device | None = None,
        dtype: str = "fp32",
        limits: DemoLimits | None = None,
        description: str = "",
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.limits = limits or DemoLimits()
        self.description = description
        self._predictors = {
            flip: DepthPredictor(model, device=device, dtype=dtype, tta=TestTimeAugmentation(flip=flip))
            for flip in (False, True)
        }
        self._lock = threading.Lock()
        self.output_root = Path(tempfile.mkdtemp(prefix="mesa-hf-demo-"))
        atexit.register(shutil.rmtree, self.output_root, ignore_errors=True)  # Gradio keeps its own copies
        self._keep_outputs = 32

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, device: str | None = None, dtype: str = "fp32", limits: DemoLimits | None = None
    ) -> DemoEngine:
        """Load ``checkpoint`` (folder or Hub id) with :func:`load_checkpoint`."""
        model, processor = load_checkpoint(_checkpoint_folder(str(checkpoint)))
        parameters = sum(p.numel() for p in model.parameters())
        size = getattr(processor, "size", {}) or {}
        description = (
            f"checkpoint `{checkpoint}` · {parameters / 1e6:.2f} M parameters · processing size "
            f"{size.get('width', '?')}x{size.get('height', '?')} (aspect kept, multiples of "
            f"{getattr(processor, 'ensure_multiple_of', 32)}) · {dtype}"
        )
        return cls(model, processor, device=device, dtype=dtype, limits=limits, description=description)

    @property
    def device_name(self) -> str:
        return str(self._predictors[False].device)

    # ------------------------------------------------------------------------------------------ reading uploads

    def processing_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) that fits the processor's size box with the aspect ratio kept (downscaling only)."""
        size = getattr(self.processor, "size", None) or {"height": 480, "width": 640}
        factor = min(size["width"] / width, size["height"] / height, 1.0)
        return max(1, round(width * factor)), max(1, round(height * factor))

    def load_image(self, path: str | Path, name: str | None = None) -> tuple[Image.Image, tuple[int, int], bool]:
        """Read an uploaded file into an RGB image: (image as processed, upload (width, height), downscaled).

        EXIF rotation, 16-bit, grayscale and RGBA are handled as in ``MeSaImageProcessor``. Raises
        :class:`UnreadableImageError` (message without server paths) for non-images, broken files and images over
        ``limits.max_image_pixels``.
        """
        path = Path(path)
        shown = name or path.name
        hint = f"upload a photo ({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS if e != '.gif')})"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    width, height = im.size
                    if width * height > self.limits.max_image_pixels:
                        raise UnreadableImageError(
                            f"{shown}: {width}x{height} is {width * height / 1e6:.0f} M pixels, over this demo's "
                            f"limit of {self.limits.max_image_pixels / 1e6:.0f} M; downscale it first"
                        )
                    im.load()
                    rgb = Image.fromarray(load_rgb_image(im))
        except UnreadableImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise UnreadableImageError(f"{shown}: image too large to decode safely; downscale it first") from error
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            reason = "not an image file" if isinstance(error, Image.UnidentifiedImageError) else "broken image file"
            raise UnreadableImageError(f"{shown}: {reason}; {hint}") from error
        upload_size = rgb.size
        downscaled = max(rgb.size) > self.limits.max_image_side
        if downscaled:
            rgb = rgb.resize(self.processing_size(*rgb.size), Image.BICUBIC)
        return rgb, upload_size, downscaled

    # ------------------------------------------------------------------------------------------ prediction

    def estimate(
        self,
        image: Image.Image,
        flip: bool = False,
        name: str = "image",
        upload_size: tuple[int, int] | None = None,
        downscaled: bool = False,
    ) -> DepthResult:
        """Depth (H, W) float32 metres at ``image``'s size, as ``mesa-hf predict`` computes it (processor,
        model with optional flip TTA, bilinear resize back); ``seconds`` covers all three."""
        predictor = self._predictors[bool(flip)]
        with self._lock:
            start = time.perf_counter()
            pixel_values = preprocess_images(self.processor, [image])[0]
            depth = predictor(pixel_values[None]).cpu()[0]
            depth = resize_depth_bilinear(depth, (image.size[1], image.size[0])).numpy().astype(np.float32)
            seconds = time.perf_counter() - start
        if not np.isfinite(depth).all():
            raise ValueError(f"{name}: the model returned non-finite depth for this image")
        return DepthResult(
            name=name,
            image=image,
            depth=depth,
            seconds=seconds,
            upload_size=upload_size or image.size,
            tta=predictor.tta.describe(),
            downscaled=downscaled,
        )

    def predict_file(self, path: str | Path, flip: bool = False, name: str | None = None) -> DepthResult:
        """:meth:`load_image` then :meth:`estimate`; the result is named after the file's stem."""
        image, upload_size, downscaled = self.load_image(path, name)
        stem = Path(name or Path(path).name).stem or "image"
        result = self.estimate(image, flip=flip, name=stem, upload_size=upload_size, downscaled=downscaled)
        result.source = str(path)
        return result

    def predict_video(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        max_frames: int | None = None,
        target_fps: float | None = None,
        max_size: int | None = None,
        depth_range: tuple[float, float] | None = None,
        cmap: str = "magma_r",
        flip: bool = False,
    ) -> tuple[Any, float]:
        """Depth of a video file with this engine's model (:func:`~mesa_hf.evaluation.predict_video.predict_video_file`
        into a fresh request folder): ``<name>_depth.mp4`` (H.264, one colour range for the clip) and
        ``<name>_depth.npz`` (float16 metres, frames × H × W). Returns (VideoPrediction, seconds).

        ``max_frames`` / ``max_size`` default to, and may not exceed, ``limits.max_video_frames`` /
        ``max_video_side``; ``target_fps`` (None: every frame) at most ``limits.max_video_fps``. Raises
        ``VideoReadError`` (message naming ``name``, no server path) for files that are not readable videos, and
        ValueError for settings out of range.
        """
        from mesa_hf.data.video_files import VideoReadError, probe_video
        from mesa_hf.evaluation.predict_video import predict_video_file

        limits = self.limits
        shown = name or Path(path).name
        max_frames = limits.max_video_frames if max_frames is None else int(max_frames)
        max_size = limits.max_video_side if max_size is None else int(max_size)
        if not 1 <= max_frames <= limits.max_video_frames:
            raise ValueError(f"maximum frames must be 1-{limits.max_video_frames} in this demo, got {max_frames}")
        if not 16 <= max_size <= limits.max_video_side:
            raise ValueError(f"max resolution must be 16-{limits.max_video_side} px in this demo, got {max_size}")
        if target_fps is not None and not 0 < float(target_fps) <= limits.max_video_fps:
            raise ValueError(f"frame rate must be over 0 and at most {limits.max_video_fps:g} fps, got {target_fps}")
        if cmap not in COLORMAPS:
            raise ValueError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
        try:
            info = probe_video(path)
            if info.width * info.height > limits.max_image_pixels:
                raise VideoReadError(
                    f"{shown}: {info.width}x{info.height} frames are over this demo's limit of "
                    f"{limits.max_image_pixels / 1e6:.0f} M pixels"
                )
            with self._lock:
                start = time.perf_counter()
                prediction = predict_video_file(
                    self.model,
                    self.processor,
                    path,
                    self._request_folder(),
                    name=Path(shown).stem or "video",
                    max_frames=max_frames,
                    target_fps=None if target_fps is None else float(target_fps),
                    max_size=max_size,
                    depth_range=depth_range,
                    outputs=("mp4", "npz"),
                    cmap=cmap,
                    predictor=self._predictors[bool(flip)],
                    progress=False,
                )
                seconds = time.perf_counter() - start
        except (VideoReadError, FileNotFoundError) as error:
            message = str(error).replace(str(path), shown).replace(str(Path(path).resolve()), shown)
            raise VideoReadError(message.splitlines()[0] if message else f"{shown}: not a readable video") from error
        prediction.source = shown
        return prediction, seconds

    # ------------------------------------------------------------------------------------------ presentation

    @staticmethod
    def color_range(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
        """(low, high) in metres: the fixed ``vmin``/``vmax`` where given, else the automatic percentiles."""
        values = valid_depth(depth)
        low_p, high_p = AUTO_RANGE_PERCENTILES
        if vmin is None:
            vmin = float(np.percentile(values, low_p)) if values.size else 0.0
        if vmax is None:
            vmax = float(np.percentile(values, high_p)) if values.size else 1.0
        if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmax <= vmin:
            raise ValueError(f"depth range must have min < max in metres, got {vmin:g} .. {vmax:g}")
        return float(vmin), float(vmax)

    def colorize(
        self, result: DepthResult, cmap: str = "magma_r", vmin: float | None = None, vmax: float | None = None
    ) -> tuple[np.ndarray, tuple[float, float]]:
        """(H, W, 3) uint8 colour depth and the (low, high) metres range used."""
        if cmap not in COLORMAPS:
            raise ValueError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
        low, high = self.color_range(result.depth, vmin, vmax)
        return colorize_depth(result.depth, cmap=cmap, vmin=low, vmax=high), (low, high)

    def readout(self, result: DepthResult, color_range: tuple[float, float], fixed: bool) -> str:
        """Markdown lines: min / median / max depth (m), input size, inference time, colour range."""
        values = valid_depth(result.depth)
        width, height = result.size
        upload_w, upload_h = result.upload_size
        lines = [
            f"**depth** min {values.min():.3f} m · median {np.median(values):.3f} m · max {values.max():.3f} m"
            if values.size
            else "**depth**: no valid depth",
            f"**input** {result.name}: {upload_w}x{upload_h} px"
            + (
                f", downscaled to {width}x{height} (longer side over {self.limits.max_image_side} px)"
                if result.downscaled
                else ""
            ),
            f"**inference** {result.seconds:.3f} s on {self.device_name} ({self.dtype}, TTA: {result.tta})",
            f"**colour range** {color_range[0]:.3f} - {color_range[1]:.3f} m "
            + ("(fixed)" if fixed else f"(automatic: {AUTO_RANGE_PERCENTILES[0]:g}-{AUTO_RANGE_PERCENTILES[1]:g} %)"),
        ]
        return "  \n".join(lines)

    # ------------------------------------------------------------------------------------------ files

    def _request_folder(self) -> Path:
        """A fresh folder for one request's files; only the newest ``_keep_outputs`` folders are kept."""
        folders = sorted(self.output_root.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in folders[: max(0, len(folders) - self._keep_outputs + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.output_root))

    def write_downloads(self, result: DepthResult) -> dict[str, Path]:
        """``<name>_depth.png`` (uint16 mm, as ``mesa-hf predict``) and ``<name>_depth.npy`` (float32 m)."""
        return write_depth_outputs(self._request_folder(), result.name, result.depth, outputs=("png16", "npy"))

    def default_intrinsics(self, result: DepthResult) -> CameraIntrinsics:
        """What ``mesa-hf predict`` uses for this image, at the upload's size: the upload's EXIF focal length, else
        the checkpoint's camera, else NYUv2's Kinect scaled to it (`mesa_hf.camera.resolve_intrinsics`)."""
        width, height = result.upload_size
        source = result.source if result.source and Path(result.source).is_file() else None
        return resolve_intrinsics(source, size=(height, width), config=getattr(self.model, "config", None))

    @staticmethod
    def intrinsics_from_fov(width: int, height: int, horizontal_fov_degrees: float) -> CameraIntrinsics:
        """Square pixels, principal point at the image centre, focal length from the horizontal field of view."""
        return intrinsics_from_fov(height, width, horizontal_fov_degrees)

    def processed_intrinsics(self, result: DepthResult, intrinsics: CameraIntrinsics | None = None) -> CameraIntrinsics:
        """``intrinsics`` in pixels of the upload (default :meth:`default_intrinsics`) scaled to the processed image
        and depth map (they differ when the upload was downscaled)."""
        intrinsics = intrinsics or self.default_intrinsics(result)
        upload_width, upload_height = result.upload_size
        width, height = result.size
        return intrinsics.scaled_to(upload_height, upload_width).scaled_to(height, width)

    def write_point_cloud(
        self, result: DepthResult, intrinsics: CameraIntrinsics | None = None, max_points: int | None = None
    ) -> PointCloud:
        """``<name>.ply`` (binary, metres, camera frame, coloured, as ``mesa-hf predict`` writes) of every
        ``stride``-th pixel in each direction so that at most ``max_points`` points remain, and its copy for the
        page's viewer. Flying pixels (`mesa_hf.evaluation.scene_files.flying_pixel_mask` on the full depth) are
        left out.

        ``intrinsics`` are in pixels of the upload (default :meth:`default_intrinsics`) and are scaled to the
        processed image when it was downscaled.
        """
        intrinsics = self.processed_intrinsics(result, intrinsics)
        max_points = int(max_points or self.limits.default_points)
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        keep, dropped = kept_pixels(result.depth, EDGE_THRESHOLD)
        valid = int(np.count_nonzero(keep))
        stride = max(1, math.ceil(math.sqrt(valid / max_points))) if valid else 1
        sparse = np.zeros_like(result.depth)
        grid = np.zeros_like(keep)
        grid[::stride, ::stride] = True
        sparse[grid & keep] = result.depth[grid & keep]
        folder = self._request_folder()
        written = write_depth_outputs(
            folder, result.name, sparse, image=result.image, intrinsics=intrinsics, outputs=("ply",), edge_threshold=0
        )
        points, colors, _, _ = scene_points(sparse, intrinsics, np.asarray(result.image.convert("RGB")), 0)
        # The viewer's copy: turned 180 degrees about x (x right, y up, z towards the viewer, as 3-D viewers expect)
        # so that the page's camera sees the photo upright; the download keeps the camera frame of `predict`.
        view = save_ply(folder / f"{result.name}_view.ply", points * np.array([1, -1, -1], np.float32), colors)
        glb_missing = writer_missing("glb")
        glb = None
        if glb_missing is None:
            # the same pixels as a mesh over the strided grid: pixel (i, j) of the grid is (i s, j s) of the image,
            # so its camera is f / s, c / s (no size: in pixels of the grid)
            k = intrinsics
            grid_camera = CameraIntrinsics(k.fx / stride, k.fy / stride, k.cx / stride, k.cy / stride, source=k.source)
            rgb = np.asarray(result.image.convert("RGB"))[::stride, ::stride]
            glb = folder / f"{result.name}.glb"
            save_mesh_glb(glb, sparse[::stride, ::stride], grid_camera, rgb, edge_threshold=0)
        return PointCloud(written["ply"], view, len(points), stride, intrinsics, dropped, glb, glb_missing)

    def measure(
        self,
        result: DepthResult,
        first: tuple[float, float],
        second: tuple[float, float],
        intrinsics: CameraIntrinsics | None = None,
    ) -> Measurement:
        """The 3-D distance in metres between two pixels (u, v) of the processed image / depth map
        (`mesa_hf.camera.measure_distance` with :meth:`processed_intrinsics`)."""
        return measure_distance(result.depth, self.processed_intrinsics(result, intrinsics), first, second)

    def write_camera_json(self, result: DepthResult, intrinsics: CameraIntrinsics | None = None) -> Path:
        """``<name>_camera.json`` (`mesa_hf.evaluation.scene_files.save_camera_json`) with the intrinsics in pixels
        of the depth map (:meth:`processed_intrinsics`), as ``mesa-hf predict`` writes it."""
        camera = self.processed_intrinsics(result, intrinsics)
        path = self._request_folder() / f"{result.name}_camera.json"
        return save_camera_json(path, camera, {"image": result.name, "depth_file": f"{result.name}_depth.npy"})


@functools.lru_cache(maxsize=4)
def _cached_engine(checkpoint: str, device: str | None, dtype: str, limits: DemoLimits) -> DemoEngine:
    return DemoEngine.from_checkpoint(checkpoint, device=device, dtype=dtype, limits=limits)


def get_engine(
    checkpoint: str | Path, device: str | None = None, dtype: str = "fp32", limits: DemoLimits | None = None
) -> DemoEngine:
    """The process-wide :class:`DemoEngine` of ``checkpoint``: loaded on first use, then shared."""
    return _cached_engine(str(checkpoint), device, dtype, limits or DemoLimits())

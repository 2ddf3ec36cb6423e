"""Pinhole camera intrinsics for metric depth: one resolver used by predict, post-processing, the demo and video.

Conventions (as :mod:`mesa_hf.geometry`): pixel centres at integer coordinates, column ``u`` in ``0 .. W-1``, row
``v`` in ``0 .. H-1``; ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels of the image the depth map has;
camera frame x right, y down, z forward (metres).

`resolve_intrinsics` takes, in order: explicit ``fx fy cx cy`` (``given``); a horizontal field of view in degrees
(``fov``); the photo's EXIF ``FocalLengthIn35mmFilm`` (``fx = f35 / 36 mm * long side``) or ``FocalLength`` with
the focal-plane resolution (``exif``); the checkpoint's ``config.camera_intrinsics`` (``checkpoint``); the NYUv2
Kinect camera scaled to the image (``assumed``).

`measure_distance` back-projects two pixels of a depth map and gives the distance between them in metres (the
demo's Measure tab).

This file is copied next to checkpoints written for sharing (the image processor imports it), so it imports only
numpy, PIL and the standard library.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

INTRINSICS_SOURCES = ("given", "fov", "exif", "checkpoint", "assumed")
"""Where a `CameraIntrinsics` came from, most trusted first (the resolver's order)."""

NYU_CAMERA = {"fx": 518.8579, "fy": 519.4696, "cx": 325.5824, "cy": 253.7362, "width": 640, "height": 480}
"""NYU Depth V2 Kinect RGB camera (NYU toolbox ``camera_params.m``) at its 640x480 images."""

FULL_FRAME_WIDTH_MM = 36.0
"""The long side of a 35 mm film frame: EXIF ``FocalLengthIn35mmFilm`` f35 gives ``fx = f35 / 36 * long side``."""

# EXIF tags (CIPA DC-008): IFD0 Orientation; Exif sub-IFD focal lengths, focal-plane resolution and image size.
_EXIF_IFD = 0x8769
_ORIENTATION = 0x0112
_FOCAL_LENGTH = 0x920A
_FOCAL_LENGTH_35MM = 0xA405
_FOCAL_PLANE_X_RESOLUTION = 0xA20E
_FOCAL_PLANE_Y_RESOLUTION = 0xA20F
_FOCAL_PLANE_RESOLUTION_UNIT = 0xA210
_EXIF_IMAGE_WIDTH = 0xA002
_EXIF_IMAGE_HEIGHT = 0xA003
_RESOLUTION_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}  # inch, centimetre, millimetre, micrometre

logger = logging.getLogger(__name__)


class IntrinsicsError(ValueError):
    """Intrinsics that cannot describe a camera (bad field of view, contradictory or incomplete values)."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels of a ``width`` x ``height`` image: ``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy``.

    ``source`` is one of `INTRINSICS_SOURCES`; ``detail`` says more (e.g. which EXIF tag). ``width`` and ``height``
    may be None for values given "in pixels of whatever image they are used with".
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None
    source: str = "given"
    detail: str = ""

    def __post_init__(self) -> None:
        if self.source not in INTRINSICS_SOURCES:
            raise IntrinsicsError(f"intrinsics source must be one of {INTRINSICS_SOURCES}, got {self.source!r}")
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise IntrinsicsError(f"{name} must be a number of pixels, got {value!r}") from None
            positive = name in ("fx", "fy")
            if not math.isfinite(number) or (positive and number <= 0):
                kind = "a positive" if positive else "a finite"
                raise IntrinsicsError(f"{name} must be {kind} number of pixels, got {value!r}")
            object.__setattr__(self, name, number)
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise IntrinsicsError(f"{name} must be a positive whole number of pixels, got {value!r}")

    def matrix(self) -> np.ndarray:
        """The 3x3 float64 matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64)

    def _need_size(self, what: str) -> tuple[int, int]:
        if self.width is None or self.height is None:
            raise IntrinsicsError(f"{what} needs the image size; these intrinsics have none (use .scaled_to(h, w))")
        return int(self.height), int(self.width)

    @property
    def field_of_view(self) -> tuple[float, float]:
        """(horizontal, vertical) field of view in degrees: ``2 * atan(W / (2 fx))``, ``2 * atan(H / (2 fy))``."""
        height, width = self._need_size("field_of_view")
        return (math.degrees(2 * math.atan(width / (2 * self.fx))), math.degrees(2 * math.atan(height / (2 * self.fy))))

    @property
    def focal_length(self) -> float:
        """The horizontal focal length ``fx`` in pixels (as Depth Pro's ``focal_length``)."""
        return float(self.fx)

    def scaled_to(self, height: int, width: int) -> CameraIntrinsics:
        """The same camera at a resized ``height`` x ``width`` image: ``f' = f * s``, ``c' = (c + 0.5) * s - 0.5``
        per axis (pixel centres at integers, as `mesa_hf.data.transforms.resize_intrinsics`). Intrinsics without a
        size are taken to be in pixels of this size already."""
        height, width = int(height), int(width)
        if height < 1 or width < 1:
            raise IntrinsicsError(f"image size must be positive, got {height}x{width}")
        if self.width is None or self.height is None:
            return CameraIntrinsics(self.fx, self.fy, self.cx, self.cy, width, height, self.source, self.detail)
        if (height, width) == (self.height, self.width):
            return self
        sx, sy = width / self.width, height / self.height
        detail = f"{self.detail}, " if self.detail else ""
        return CameraIntrinsics(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            width,
            height,
            self.source,
            f"{detail}scaled from {self.width}x{self.height} to {width}x{height}",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: fx, fy, cx, cy, width, height, matrix, field_of_view_deg, focal_length_px, source, detail."""
        out: dict[str, Any] = {
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
            "width": self.width,
            "height": self.height,
            "matrix": self.matrix().tolist(),
            "focal_length_px": self.focal_length,
            "source": self.source,
            "detail": self.detail,
            "convention": "pixel centres at integer coordinates; camera x right, y down, z forward; metres",
        }
        if self.width is not None and self.height is not None:
            horizontal, vertical = self.field_of_view
            out["field_of_view_deg"] = {"horizontal": horizontal, "vertical": vertical}
        return out

    def describe(self) -> str:
        """One line: ``fx=... fy=... cx=... cy=... (source: detail)``."""
        detail = f": {self.detail}" if self.detail else ""
        return f"fx={self.fx:.3f} fy={self.fy:.3f} cx={self.cx:.3f} cy={self.cy:.3f} ({self.source}{detail})"


def nyu_camera(height: int, width: int) -> CameraIntrinsics:
    """The NYUv2 Kinect camera scaled from 640x480 to ``height`` x ``width``, marked ``assumed``."""
    base = CameraIntrinsics(source="assumed", **NYU_CAMERA).scaled_to(height, width)
    return CameraIntrinsics(
        base.fx, base.fy, base.cx, base.cy, width, height, "assumed", f"NYUv2 Kinect scaled to {width}x{height}"
    )


def intrinsics_from_fov(height: int, width: int, fov_degrees: float) -> CameraIntrinsics:
    """Square pixels, principal point at the image centre ``((W-1)/2, (H-1)/2)``, ``fx = W / 2 / tan(fov / 2)``
    from the horizontal field of view in degrees (0 < fov < 180)."""
    fov = _check_fov(fov_degrees)
    focal = (width / 2) / math.tan(math.radians(fov) / 2)
    return CameraIntrinsics(
        focal, focal, (width - 1) / 2, (height - 1) / 2, width, height, "fov", f"{fov:g} degrees horizontal"
    )


def _check_fov(fov: Any) -> float:
    try:
        value = float(fov)
    except (TypeError, ValueError):
        raise IntrinsicsError(f"field of view must be a number of degrees, got {fov!r}") from None
    if not (math.isfinite(value) and 0 < value < 180):
        raise IntrinsicsError(f"field of view must be between 0 and 180 degrees (exclusive), got {fov!r}")
    return value


def checkpoint_camera(config: Any) -> CameraIntrinsics | None:
    """The camera a checkpoint's config records (``camera_intrinsics``: fx, fy, cx, cy at width x height), or
    None. ``config`` is a `MeSaConfig`, a dict, or None."""
    if config is None:
        return None
    values = (
        config.get("camera_intrinsics") if isinstance(config, Mapping) else getattr(config, "camera_intrinsics", None)
    )
    if values is None:
        return None
    return camera_from_dict(values, source="checkpoint", detail="recorded in the checkpoint's config")


def camera_from_dict(values: Mapping[str, Any], source: str = "given", detail: str = "") -> CameraIntrinsics:
    """`CameraIntrinsics` from a mapping with fx, fy, cx, cy, width and height (pixels)."""
    keys = ("fx", "fy", "cx", "cy", "width", "height")
    if not isinstance(values, Mapping) or any(k not in values for k in keys):
        raise IntrinsicsError(f"camera intrinsics need the keys {keys}, got {values!r}")
    fx, fy, cx, cy = (float(values[k]) for k in keys[:4])
    return CameraIntrinsics(fx, fy, cx, cy, int(values["width"]), int(values["height"]), source, detail)


# ------------------------------------------------------------------------------------------------ EXIF


def _rational(value: Any) -> float | None:
    """An EXIF rational / number as a float; None when missing, zero-denominator, non-finite or non-positive."""
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        numerator, denominator = value
        value = numerator / denominator if denominator else float("nan")
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _read_exif(image: Any) -> tuple[Any, Any] | None:
    """(IFD0, Exif sub-IFD) of a path or PIL image; None when it has no EXIF. Raises ValueError for a corrupt
    block (Pillow warns and returns nothing; we say so once instead)."""
    from PIL import Image

    def read(im: Image.Image):
        raw = im.info.get("exif")
        exif = im.getexif()
        sub = exif.get_ifd(_EXIF_IFD) if len(exif) else {}
        if raw and len(raw) > 8 and not len(exif):
            raise ValueError(f"{len(raw)} bytes of EXIF that hold no readable tags")
        return (exif, sub) if len(exif) else None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if isinstance(image, str | os.PathLike):
                with Image.open(image) as opened:
                    tags = read(opened)
            elif isinstance(image, Image.Image):
                tags = read(image)
            else:
                tags = None
        except (OSError, SyntaxError, struct.error, KeyError, TypeError) as error:
            raise ValueError(str(error) or type(error).__name__) from error
    problems = [str(w.message).strip() for w in caught if "exif" in str(w.message).lower()]
    if problems:
        raise ValueError(problems[0])
    return tags


def exif_camera(image: Any, height: int, width: int) -> CameraIntrinsics | None:
    """Intrinsics at ``height`` x ``width`` from a photo's EXIF, or None when it records no usable focal length.

    ``FocalLengthIn35mmFilm`` f35 (mm): ``fx = fy = f35 / 36 * max(W, H)``. Otherwise ``FocalLength`` f (mm) with
    ``FocalPlaneXResolution`` / ``FocalPlaneResolutionUnit`` (sensor pixels per unit at ``ExifImageWidth``):
    ``fx = f * pixels per mm * max(W, H) / max(ExifImageWidth, ExifImageHeight)``. The principal point is the
    image centre. Raises ValueError for a corrupt EXIF block.
    """
    tags = _read_exif(image)
    if tags is None:
        return None
    _, sub = tags
    long_side = max(height, width)
    centre = ((width - 1) / 2, (height - 1) / 2)
    f35 = _rational(sub.get(_FOCAL_LENGTH_35MM))
    if f35 is not None:
        focal = f35 / FULL_FRAME_WIDTH_MM * long_side
        return CameraIntrinsics(focal, focal, *centre, width, height, "exif", f"FocalLengthIn35mmFilm {f35:g} mm")
    focal_mm = _rational(sub.get(_FOCAL_LENGTH))
    x_resolution = _rational(sub.get(_FOCAL_PLANE_X_RESOLUTION))
    unit_mm = _RESOLUTION_UNIT_MM.get(int(_rational(sub.get(_FOCAL_PLANE_RESOLUTION_UNIT)) or 2))
    if focal_mm is None or x_resolution is None or unit_mm is None:
        return None
    pixels_per_mm = x_resolution / unit_mm
    y_resolution = _rational(sub.get(_FOCAL_PLANE_Y_RESOLUTION)) or x_resolution
    exif_long = max(_rational(sub.get(_EXIF_IMAGE_WIDTH)) or 0, _rational(sub.get(_EXIF_IMAGE_HEIGHT)) or 0)
    scale = long_side / exif_long if exif_long else 1.0
    fx = focal_mm * pixels_per_mm * scale
    fy = focal_mm * (y_resolution / unit_mm) * scale
    detail = f"FocalLength {focal_mm:g} mm at {pixels_per_mm:g} px/mm on the focal plane"
    return CameraIntrinsics(fx, fy, *centre, width, height, "exif", detail)


def _exif_size(image: Any) -> tuple[int, int] | None:
    """(height, width) of a path or PIL image as shown upright (EXIF orientation 5-8 swaps the sides)."""
    from PIL import Image

    def size(im: Image.Image) -> tuple[int, int]:
        try:
            orientation = im.getexif().get(_ORIENTATION, 1)
        except (OSError, SyntaxError, struct.error, KeyError, TypeError, ValueError):
            orientation = 1
        width, height = im.size
        return (width, height) if orientation in (5, 6, 7, 8) else (height, width)

    if isinstance(image, np.ndarray) and image.ndim >= 2:
        return int(image.shape[0]), int(image.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a corrupt block is reported by exif_camera
        if isinstance(image, str | os.PathLike):
            with Image.open(image) as opened:
                return size(opened)
        if isinstance(image, Image.Image):
            return size(image)
    return None


# ------------------------------------------------------------------------------------------------ resolver


def check_intrinsics_request(
    *, fx: float | None = None, fy: float | None = None, cx: float | None = None, cy: float | None = None, fov=None
) -> list[str]:
    """Raise `IntrinsicsError` for a field of view outside (0, 180) degrees, a field of view given with explicit
    values, or explicit values without ``fx``; return the names of the explicit values given."""
    explicit = {"fx": fx, "fy": fy, "cx": cx, "cy": cy}
    given = [name for name, value in explicit.items() if value is not None]
    if given and fov is not None:
        raise IntrinsicsError(f"give either a field of view or {'/'.join(given)}, not both")
    if given and fx is None:
        raise IntrinsicsError(f"{'/'.join(given)} given without fx: give fx (and optionally fy, cx, cy)")
    if fov is not None:
        _check_fov(fov)
    return given


def resolve_intrinsics(
    image: Any = None,
    *,
    size: tuple[int, int] | None = None,
    fx: float | None = None,
    fy: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    fov: float | None = None,
    config: Any = None,
) -> CameraIntrinsics:
    """The intrinsics of ``image`` (a path, PIL image or array; read for EXIF and its size) at ``size`` (H, W).

    Order: explicit ``fx`` (``fy`` defaults to ``fx``, ``cx``/``cy`` to the image centre) → ``fov`` (horizontal
    degrees) → EXIF → ``config.camera_intrinsics`` scaled to ``size`` → NYUv2 Kinect camera scaled to ``size``.
    Explicit values are in pixels of ``size``. Raises `IntrinsicsError` (a ValueError) for a bad field of view or
    contradictory values; a corrupt EXIF block logs one warning naming the fallback used.
    """
    given = check_intrinsics_request(fx=fx, fy=fy, cx=cx, cy=cy, fov=fov)
    fov = None if fov is None else float(fov)
    if size is None:
        size = _exif_size(image)
        if size is None:
            raise IntrinsicsError("resolve_intrinsics needs the image size: pass size=(height, width) or an image")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise IntrinsicsError(f"image size must be positive, got {height}x{width}")
    if given:
        return CameraIntrinsics(
            float(fx),
            float(fx if fy is None else fy),
            (width - 1) / 2 if cx is None else float(cx),
            (height - 1) / 2 if cy is None else float(cy),
            width,
            height,
            "given",
        )
    if fov is not None:
        return intrinsics_from_fov(height, width, fov)
    fallback = checkpoint_camera(config)
    if image is not None and not isinstance(image, np.ndarray):
        try:
            camera = exif_camera(image, height, width)
        except ValueError as error:
            name = f" of {os.fspath(image)}" if isinstance(image, str | os.PathLike) else ""
            using = "the checkpoint's camera" if fallback is not None else "the NYUv2 camera (assumed)"
            logger.warning("corrupt EXIF%s (%s); using %s", name, error, using)
            camera = None
        if camera is not None:
            return camera
    if fallback is not None:
        return fallback.scaled_to(height, width)
    return nyu_camera(height, width)


# ------------------------------------------------------------------------------------------------ measuring


@dataclass(frozen=True)
class Measurement:
    """Two pixels of a depth map back-projected and the straight-line distance between their 3-D points.

    ``pixels``: ((u, v), (u, v)) integer pixels (column, row) of the depth map; ``depths`` their z-depths (m);
    ``points`` (2, 3) float64 camera-frame metres (x right, y down, z forward); ``distance`` metres;
    ``intrinsics`` the camera used, at the depth map's size.
    """

    pixels: tuple[tuple[int, int], tuple[int, int]]
    depths: tuple[float, float]
    points: np.ndarray
    distance: float
    intrinsics: CameraIntrinsics


def backproject_pixel(u: float, v: float, depth: float, intrinsics: CameraIntrinsics) -> np.ndarray:
    """The camera-frame point (3,) float64 metres of pixel (column ``u``, row ``v``) at z-depth ``depth`` (m):
    ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy``, ``Z = depth`` (intrinsics in pixels of that image)."""
    z = float(depth)
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"no depth at pixel ({u:g}, {v:g}): got {depth!r} m")
    k = intrinsics
    return np.array([(float(u) - k.cx) * z / k.fx, (float(v) - k.cy) * z / k.fy, z], dtype=np.float64)


def _pixel_in(depth: np.ndarray, pixel: Any, name: str) -> tuple[int, int]:
    try:
        u, v = (float(c) for c in pixel)
    except (TypeError, ValueError):
        raise ValueError(f"point {name} must be a pixel (u, v), got {pixel!r}") from None
    if not (math.isfinite(u) and math.isfinite(v)):
        raise ValueError(f"point {name} must be a pixel (u, v), got {pixel!r}")
    column, row = round(u), round(v)
    height, width = depth.shape
    if not (0 <= column < width and 0 <= row < height):
        raise ValueError(f"point {name} ({column}, {row}) is outside the {width}x{height} depth map")
    return column, row


def measure_distance(depth: np.ndarray, intrinsics: CameraIntrinsics, first: Any, second: Any) -> Measurement:
    """The 3-D distance in metres between pixels ``first`` and ``second`` ((u, v): column, row; rounded to the
    nearest pixel) of ``depth`` (H, W) z-depth in metres, back-projected with `backproject_pixel`.

    ``intrinsics`` carrying another image size are scaled to the depth map's (`CameraIntrinsics.scaled_to`).
    Raises ValueError for a pixel outside the map or one without depth (0 or non-finite).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be an (H, W) map in metres, got shape {depth.shape}")
    camera = intrinsics.scaled_to(*depth.shape)
    pixels = (_pixel_in(depth, first, "A"), _pixel_in(depth, second, "B"))
    depths = tuple(float(depth[row, column]) for column, row in pixels)
    points = np.stack([backproject_pixel(u, v, z, camera) for (u, v), z in zip(pixels, depths, strict=True)])
    distance = float(np.linalg.norm(points[1] - points[0]))
    return Measurement(pixels, depths, points, distance, camera)


__all__ = [
    "FULL_FRAME_WIDTH_MM",
    "INTRINSICS_SOURCES",
    "NYU_CAMERA",
    "CameraIntrinsics",
    "IntrinsicsError",
    "Measurement",
    "backproject_pixel",
    "camera_from_dict",
    "check_intrinsics_request",
    "checkpoint_camera",
    "exif_camera",
    "intrinsics_from_fov",
    "measure_distance",
    "nyu_camera",
    "resolve_intrinsics",
]

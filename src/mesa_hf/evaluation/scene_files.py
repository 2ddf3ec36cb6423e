"""3-D files of a depth map that other tools open: PLY point cloud, GLB mesh, float32 EXR depth, camera JSON.

Depth is float32 metres (H, W); 0 or non-finite means "no depth". Points are back-projected with
:class:`mesa_hf.camera.CameraIntrinsics` at the depth map's size (``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy``).

- **PLY**: binary point cloud in the camera frame (x right, y down, z forward), as ``mesa-hf predict`` always wrote.
- **GLB**: a mesh of two triangles per 2x2 block of kept pixels, in glTF's frame (y up, the camera at the origin
  looking down -z: ``(X, -Y, -Z)``), vertex-coloured, written by trimesh (the ``3d`` extra).
- **EXR**: one float32 channel ``Z`` (metres, 0 = no depth), written by OpenEXR (the ``3d`` extra).

**Flying pixels.** At a depth discontinuity a few pixels get depths between the two surfaces and float in the air.
`flying_pixel_mask` drops a pixel when the relative depth jump to one of its four neighbours,
``|d - d_n| / min(d, d_n)``, exceeds ``edge_threshold`` (default `EDGE_THRESHOLD` = 0.05, a 5 % jump between
adjacent pixels; 0 keeps every point). A plane facing the camera loses nothing; a step edge loses the pixel on
each side of the step. Both the PLY and the GLB drop the same pixels and the count is reported.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mesa_hf.camera import CameraIntrinsics

from .io import point_map, save_ply

EDGE_THRESHOLD = 0.05
"""Default relative depth jump between neighbouring pixels above which both count as flying pixels."""

GLTF_FROM_CAMERA = np.array([1.0, -1.0, -1.0], dtype=np.float32)
"""Camera frame (x right, y down, z forward) -> glTF (x right, y up, z backward): flip y and z."""


class MissingWriterError(RuntimeError):
    """A 3-D output whose writer library is not installed (``pip install 'mesa-hf[3d]'``)."""


_WRITERS = {"glb": ("trimesh", "trimesh"), "exr": ("OpenEXR", "openexr")}


def writer_missing(kind: str) -> str | None:
    """None when ``kind`` (``glb``, ``exr``) can be written here, else a one-line reason naming the package."""
    if kind not in _WRITERS:
        return None
    module, package = _WRITERS[kind]
    try:
        __import__(module)
    except ImportError:
        return f"{kind} output needs the {package} package (pip install 'mesa-hf[3d]')"
    return None


def _require(kind: str) -> None:
    reason = writer_missing(kind)
    if reason:
        raise MissingWriterError(reason)


def _check_depth(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be an (H, W) map in metres, got shape {depth.shape}")
    return depth


def flying_pixel_mask(depth: np.ndarray, edge_threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """(H, W) bool, True at flying pixels: valid pixels whose relative depth jump ``|d - d_n| / min(d, d_n)`` to a
    valid 4-neighbour exceeds ``edge_threshold`` (0 or None: none)."""
    depth = _check_depth(depth)
    flying = np.zeros(depth.shape, dtype=bool)
    if not edge_threshold:
        return flying
    if edge_threshold < 0:
        raise ValueError(f"edge_threshold must be >= 0 (a relative depth jump), got {edge_threshold}")
    valid = np.isfinite(depth) & (depth > 0)
    d = np.where(valid, depth, 1.0)
    for axis in (0, 1):
        a = d[:-1] if axis == 0 else d[:, :-1]
        b = d[1:] if axis == 0 else d[:, 1:]
        both = (valid[:-1] & valid[1:]) if axis == 0 else (valid[:, :-1] & valid[:, 1:])
        jump = both & (np.abs(a - b) > edge_threshold * np.minimum(a, b))
        if axis == 0:
            flying[:-1] |= jump
            flying[1:] |= jump
        else:
            flying[:, :-1] |= jump
            flying[:, 1:] |= jump
    return flying


def kept_pixels(depth: np.ndarray, edge_threshold: float = EDGE_THRESHOLD) -> tuple[np.ndarray, int]:
    """(H, W) bool of the pixels written (valid depth, not flying) and the number of flying pixels dropped."""
    depth = _check_depth(depth)
    valid = np.isfinite(depth) & (depth > 0)
    flying = flying_pixel_mask(depth, edge_threshold) & valid
    return valid & ~flying, int(flying.sum())


def grid_faces(keep: np.ndarray) -> np.ndarray:
    """Triangles (F, 3) int64 over the pixel grid: two per 2x2 block, each only if its three pixels are kept.

    Indices count the kept pixels in row-major order (the vertex order of `scene_points`); the winding is
    counter-clockwise seen from the camera in glTF's y-up frame (front faces towards the camera).
    """
    keep = np.asarray(keep, dtype=bool)
    index = np.full(keep.shape, -1, dtype=np.int64)
    index[keep] = np.arange(int(keep.sum()))
    i00, i01 = index[:-1, :-1], index[:-1, 1:]
    i10, i11 = index[1:, :-1], index[1:, 1:]
    upper = np.stack([i00, i10, i01], axis=-1).reshape(-1, 3)
    lower = np.stack([i01, i10, i11], axis=-1).reshape(-1, 3)
    faces = np.concatenate([upper, lower])
    return faces[(faces >= 0).all(axis=1)]


def _colors_like(colors: np.ndarray | None, depth: np.ndarray) -> np.ndarray | None:
    if colors is None:
        return None
    colors = np.asarray(colors)
    if colors.ndim != 3 or colors.shape[:2] != depth.shape or colors.shape[2] < 3:
        raise ValueError(f"colors must be (H, W, 3) matching depth {depth.shape}, got {colors.shape}")
    return colors[..., :3].astype(np.uint8)


def scene_points(
    depth: np.ndarray,
    intrinsics: CameraIntrinsics,
    colors: np.ndarray | None = None,
    edge_threshold: float = EDGE_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """The kept points: (N, 3) float32 camera-frame metres, their (N, 3) uint8 colours (or None), the (H, W) keep
    mask and the number of flying pixels dropped."""
    depth = _check_depth(depth)
    keep, dropped = kept_pixels(depth, edge_threshold)
    points = point_map(depth, intrinsics)[keep]
    colors = _colors_like(colors, depth)
    return points, None if colors is None else colors[keep], keep, dropped


def _write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_point_cloud(
    path: str | Path,
    depth: np.ndarray,
    intrinsics: CameraIntrinsics,
    colors: np.ndarray | None = None,
    edge_threshold: float = EDGE_THRESHOLD,
) -> tuple[Path, int, int]:
    """Binary PLY of the kept points (camera frame, metres, coloured): (path, points written, flying dropped)."""
    points, point_colors, _, dropped = scene_points(depth, intrinsics, colors, edge_threshold)
    _write_atomically(Path(path), lambda tmp: save_ply(tmp, points, point_colors))
    return Path(path), len(points), dropped


def save_mesh_glb(
    path: str | Path,
    depth: np.ndarray,
    intrinsics: CameraIntrinsics,
    colors: np.ndarray | None = None,
    edge_threshold: float = EDGE_THRESHOLD,
) -> tuple[Path, int, int]:
    """GLB mesh over the pixel grid of the kept pixels (glTF y-up, metres, camera at the origin, vertex colours),
    written by trimesh: (path, vertices written, flying dropped)."""
    _require("glb")
    import trimesh

    points, point_colors, keep, dropped = scene_points(depth, intrinsics, colors, edge_threshold)
    mesh = trimesh.Trimesh(
        vertices=points * GLTF_FROM_CAMERA,
        faces=grid_faces(keep),
        vertex_colors=point_colors,
        process=False,
    )
    data = mesh.export(file_type="glb")
    _write_atomically(Path(path), lambda tmp: tmp.write_bytes(data))
    return Path(path), len(points), dropped


def save_depth_exr(path: str | Path, depth: np.ndarray) -> Path:
    """Float32 EXR with one channel ``Z`` (metres; non-finite or negative depth becomes 0), written by OpenEXR."""
    _require("exr")
    import OpenEXR

    depth = _check_depth(depth)
    z = np.ascontiguousarray(np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32))
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    _write_atomically(Path(path), lambda tmp: OpenEXR.File(header, {"Z": z}).write(str(tmp)))
    return Path(path)


def load_depth_exr(path: str | Path) -> np.ndarray:
    """Read the ``Z`` channel of an EXR written by `save_depth_exr` as (H, W) float32 metres."""
    _require("exr")
    import OpenEXR

    channels = OpenEXR.File(str(path)).channels()
    if "Z" not in channels:
        raise ValueError(f"{path}: no 'Z' depth channel (channels: {sorted(channels)})")
    return np.asarray(channels["Z"].pixels, dtype=np.float32)


def save_camera_json(path: str | Path, intrinsics: CameraIntrinsics, extra: dict[str, Any] | None = None) -> Path:
    """``<name>_camera.json``: `CameraIntrinsics.to_dict` (matrix, field of view, focal length, source) + ``extra``."""
    payload = {**intrinsics.to_dict(), **(extra or {})}
    text = json.dumps(payload, indent=2) + "\n"
    return _write_atomically(Path(path), lambda tmp: tmp.write_text(text))


__all__ = [
    "EDGE_THRESHOLD",
    "GLTF_FROM_CAMERA",
    "MissingWriterError",
    "flying_pixel_mask",
    "grid_faces",
    "kept_pixels",
    "load_depth_exr",
    "save_camera_json",
    "save_depth_exr",
    "save_mesh_glb",
    "save_point_cloud",
    "scene_points",
    "writer_missing",
]

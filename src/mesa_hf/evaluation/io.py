"""Depth file output: 16-bit PNG (millimetres, scale in the PNG text chunk), colour map PNG, PLY point cloud.

Depth inside is float32 metres; 0 or non-finite means "no depth".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from mesa_hf.camera import NYU_CAMERA, CameraIntrinsics, nyu_camera
from mesa_hf.depth_png import DEPTH_PNG_SCALE_KEY, depth_png_scale_text, png_text_scale

DEPTH_PNG_SCALE = 0.001
"""Metres per unit of the 16-bit depth PNGs written here (1 unit = 1 mm; 0 = no depth; max 65.535 m)."""

# NYU Depth V2 Kinect RGB camera (NYU toolbox camera_params.m) for 640x480 images.
NYU_INTRINSICS_640x480 = tuple(NYU_CAMERA[k] for k in ("fx", "fy", "cx", "cy"))

Intrinsics = CameraIntrinsics
"""Pinhole intrinsics in pixels (the one type, :class:`mesa_hf.camera.CameraIntrinsics`)."""


def nyu_intrinsics(height: int, width: int) -> CameraIntrinsics:
    """NYUv2 Kinect intrinsics scaled from 640x480 to ``width`` x ``height`` (an assumption for unknown cameras)."""
    return nyu_camera(height, width)


def _check_depth_map(depth: np.ndarray, what: str) -> np.ndarray:
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"{what}: depth must be an (H, W) map in metres, got shape {depth.shape}")
    return depth


def save_depth_png16(path: str | Path, depth: np.ndarray, scale: float = DEPTH_PNG_SCALE) -> Path:
    """Write depth (H, W) metres as a 16-bit PNG of ``round(depth / scale)``; the scale goes into a text chunk.

    Non-finite or non-positive depth becomes 0; depth beyond ``65535 * scale`` is clipped to 65535.
    """
    path = Path(path)
    depth = _check_depth_map(depth, str(path))
    units = np.where(np.isfinite(depth) & (depth > 0), depth / scale, 0.0)
    units = np.clip(np.rint(units), 0, 65535).astype(np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add_text(DEPTH_PNG_SCALE_KEY, depth_png_scale_text(scale))
    info.add_text("depth_zero", "no depth")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(units).save(path, pnginfo=info)  # uint16 array -> mode "I;16"
    return path


def load_depth_png16(path: str | Path, default_scale: float | None = None) -> np.ndarray:
    """Read a 16-bit depth PNG into float32 metres using its ``depth_scale`` text chunk (0 stays 0).

    ``default_scale`` (metres per unit) is used when the file has no such chunk; without it that is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth PNG not found: {path}")
    with Image.open(path) as im:
        text = dict(getattr(im, "text", {}) or {})
        units = np.asarray(im)
    if units.dtype not in (np.uint16, np.int32) and units.dtype != np.uint8:
        raise ValueError(f"{path}: expected a 16-bit depth PNG, got array dtype {units.dtype}")
    scale = png_text_scale(text, path)
    if scale is None:
        if default_scale is None:
            raise ValueError(f"{path}: no {DEPTH_PNG_SCALE_KEY!r} text chunk; pass default_scale (metres per unit)")
        scale = default_scale
    return units.astype(np.float32) * np.float32(scale)


def colorize_depth(
    depth: np.ndarray, cmap: str = "magma_r", vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 colour image of depth with a matplotlib colormap; invalid depth is black.

    The range defaults to the 2nd-98th percentile of valid depth (near = bright with ``magma_r``).
    """
    from matplotlib import colormaps

    depth = _check_depth_map(depth, "colorize_depth")
    valid = np.isfinite(depth) & (depth > 0)
    if valid.any():
        lo = float(np.percentile(depth[valid], 2)) if vmin is None else vmin
        hi = float(np.percentile(depth[valid], 98)) if vmax is None else vmax
    else:
        lo, hi = 0.0, 1.0
    norm = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = (colormaps[cmap](np.where(valid, norm, 0))[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def save_colormap_png(path: str | Path, depth: np.ndarray, cmap: str = "magma_r", **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colorize_depth(depth, cmap=cmap, **kwargs)).save(path)
    return path


def point_map(depth: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Every pixel back-projected, ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy``: (H, W, 3) float32 camera-frame
    metres (x right, y down, z forward; non-finite depth gives 0). Intrinsics carrying another image size are
    scaled to the depth map's."""
    depth = _check_depth_map(depth, "point_map")
    k = intrinsics.scaled_to(*depth.shape)
    height, width = depth.shape
    z = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    u = np.arange(width, dtype=np.float32)[None, :]
    v = np.arange(height, dtype=np.float32)[:, None]
    x = (u - np.float32(k.cx)) * z / np.float32(k.fx)
    y = (v - np.float32(k.cy)) * z / np.float32(k.fy)
    return np.stack([x, y, z], axis=-1)


def depth_to_points(
    depth: np.ndarray, intrinsics: CameraIntrinsics, colors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Back-project valid pixels to camera-frame points (N, 3) float32 metres (x right, y down, z forward).

    ``colors`` (H, W, 3) uint8 gives the (N, 3) colours of the same pixels.
    """
    depth = _check_depth_map(depth, "depth_to_points")
    valid = np.isfinite(depth) & (depth > 0)
    points = point_map(depth, intrinsics)[valid]
    point_colors = None
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape[:2] != depth.shape or colors.ndim != 3 or colors.shape[2] < 3:
            raise ValueError(f"colors must be (H, W, 3) matching depth {depth.shape}, got {colors.shape}")
        point_colors = colors[valid][:, :3].astype(np.uint8)
    return points, point_colors


def save_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write a binary little-endian PLY: float x, y, z (+ uchar red, green, blue)."""
    path = Path(path)
    points = np.asarray(points, dtype="<f4")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", "comment mesa-hf depth point cloud (metres, camera frame)"]
    header += [f"element vertex {len(points)}", "property float x", "property float y", "property float z"]
    if colors is not None:
        colors = np.asarray(colors, dtype=np.uint8)
        if colors.shape != points.shape:
            raise ValueError(f"colors must be (N, 3) uint8 like points {points.shape}, got {colors.shape}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    record = np.empty(len(points), dtype=fields)
    record["x"], record["y"], record["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colors is not None:
        record["red"], record["green"], record["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(record.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a PLY written by :func:`save_ply`: (header lines, structured vertex array)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    header = data[: end + len(b"end_header")].decode("ascii").splitlines()
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    types = {"float": "<f4", "uchar": "u1"}
    fields = [(line.split()[2], types[line.split()[1]]) for line in header if line.startswith("property")]
    vertices = np.frombuffer(data[end + len(b"end_header\n") :], dtype=fields, count=count)
    return header, vertices

"""Readers for RGB files and the depth file formats of public RGB-D datasets, each returning float32 metres.

Every decoder returns a float32 (H, W) array in metres with 0 where the file marks no measurement. Scales:

========================  =====================================================================================
format                    metres from the stored value ``v``
========================  =====================================================================================
``"png_mm"`` / ``"nyu"``  uint16 PNG, ``v / 1000`` (NYUv2 labelled / BTS sync ``sync_depth_*.png``, HoloLens)
``"7scenes"``             uint16 PNG, ``v / 1000``, ``65535`` = invalid
``"tum"``                 uint16 PNG, ``v / 5000``
``"kitti"``               uint16 PNG, ``v / 256`` (projected LiDAR, 0 = no point)
``"sunrgbd"``             uint16 PNG with a 3-bit circular shift: ``((v >> 3) | (v << 13)) & 0xFFFF`` then
                          ``/ 1000`` (SUN RGB-D toolbox ``read3dPoints.m``: ``bitor(bitshift(d,-3),
                          bitshift(d,16-3)) / 1000``; the toolbox also clips at 8 m, we do not)
``"nyu_disparity"``       NYU raw Kinect ``d-*.pgm``: 16-bit disparity stored little-endian despite the PGM header
                          (byte-swapped, as the NYU toolbox's ``swapbytes``); ``351.3 / (1092.5 - v)``
                          (toolbox ``depth_rel2depth_abs``), 2047 = invalid, clipped to ``max_depth`` = 10 m
``"ibims1_png"``          iBims-1 raw release uint16 PNG, ``v / 65535 * 50``
``"npy"``                 float array in metres (iBims-1 via ``.npy``, any leading singleton axes dropped)
``"float"``               any float image (TIFF/EXR readable by PIL) already in metres
========================  =====================================================================================
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

DEPTH_SCALES = {"png_mm": 1000.0, "nyu": 1000.0, "hololens": 1000.0, "7scenes": 1000.0, "tum": 5000.0, "kitti": 256.0}
DEPTH_FORMATS = (*DEPTH_SCALES, "sunrgbd", "nyu_disparity", "ibims1_png", "npy", "float", "png")

NYU_DISPARITY_PARAMS = (351.3, 1092.5)
NYU_DISPARITY_INVALID = 2047


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return path


def read_image_file(path: str | Path) -> tuple[bytes, tuple[int, int]]:
    """Read an RGB image file, checking that it decodes completely.

    Returns:
        (the file's bytes unchanged, (height, width)).
    Raises:
        FileNotFoundError: the file does not exist. ValueError: the file is not a decodable image.
    """
    path = _require_file(path)
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            size = (img.height, img.width)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: corrupt or unreadable image ({err})") from err
    return data, size


def read_uint16_png(path: str | Path) -> np.ndarray:
    """Read a 16-bit single-channel PNG as a uint16 (H, W) array."""
    path = _require_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("I;16", "I;16B", "I", "L"):
                raise ValueError(f"expected a 16-bit single-channel depth image, got PIL mode {img.mode!r}")
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: corrupt or unreadable depth image ({err})") from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
        raise ValueError(f"{path}: depth values outside the uint16 range")
    return arr.astype(np.uint16)


def read_pgm16(path: str | Path, byteswap: bool = True) -> np.ndarray:
    """Read a binary 16-bit PGM (P5, maxval > 255) as uint16 (H, W).

    The PGM standard stores 16-bit samples big-endian; NYU's raw Kinect dumps are little-endian despite that, so
    ``byteswap=True`` (default) reads them as little-endian.
    """
    path = _require_file(path)
    data = path.read_bytes()
    match = re.match(rb"P5\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+(\d+)\s", data)
    if match is None:
        raise ValueError(f"{path}: not a binary PGM (P5) file")
    width, height, maxval = (int(g) for g in match.groups())
    if maxval < 256:
        raise ValueError(f"{path}: expected a 16-bit PGM, maxval is {maxval}")
    body = data[match.end() : match.end() + 2 * width * height]
    if len(body) != 2 * width * height:
        raise ValueError(f"{path}: truncated PGM ({len(body)} of {2 * width * height} bytes)")
    return np.frombuffer(body, dtype="<u2" if byteswap else ">u2").reshape(height, width).astype(np.uint16)


def sunrgbd_to_metres(raw: np.ndarray) -> np.ndarray:
    """SUN RGB-D depth PNG values (3-bit circular shift) → float32 metres."""
    raw = np.asarray(raw, dtype=np.uint32)
    return ((((raw >> 3) | (raw << 13)) & 0xFFFF).astype(np.float32) / 1000.0).astype(np.float32)


def nyu_disparity_to_metres(raw: np.ndarray, max_depth: float = 10.0) -> np.ndarray:
    """NYU raw Kinect disparity (byte-swapped ``d-*.pgm`` values) → float32 metres; 2047 and negatives → 0."""
    raw = np.asarray(raw, dtype=np.float64)
    param1, param2 = NYU_DISPARITY_PARAMS
    with np.errstate(divide="ignore"):
        depth = param1 / (param2 - raw)
    depth = np.where((raw >= NYU_DISPARITY_INVALID) | (depth < 0) | ~np.isfinite(depth), 0.0, depth)
    return np.minimum(depth, max_depth).astype(np.float32)


def read_npy_depth(path: str | Path) -> np.ndarray:
    """Float depth in metres from a .npy file; leading singleton axes (e.g. (1, 1, H, W)) are dropped."""
    path = _require_file(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: corrupt or unreadable .npy file ({err})") from err
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D depth map, got shape {arr.shape}")
    return arr.astype(np.float32)


def read_float_image(path: str | Path) -> np.ndarray:
    """A float image file (e.g. TIFF mode F) as float32 (H, W)."""
    path = _require_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: corrupt or unreadable depth image ({err})") from err
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel depth image, got shape {arr.shape}")
    return arr.astype(np.float32)


def decode_depth(path: str | Path, depth_format: str = "png", depth_scale: float | None = None) -> np.ndarray:
    """Decode a depth file to float32 metres, 0 = no measurement (non-finite values become 0).

    Args:
        path: the depth file.
        depth_format: one of :data:`DEPTH_FORMATS` (see the module docstring for each format's scale).
            ``"png"`` is a generic uint16 PNG divided by ``depth_scale`` (required).
        depth_scale: stored units per metre; overrides the format's default scale for uint16 PNG formats,
            divides ``"npy"``/``"float"`` values (default 1).
    """
    if depth_format in DEPTH_SCALES or depth_format == "png":
        scale = depth_scale if depth_scale is not None else DEPTH_SCALES.get(depth_format)
        if scale is None:
            raise ValueError(f"{path}: depth_format 'png' needs depth_scale (stored units per metre)")
        raw = read_uint16_png(path)
        depth = raw.astype(np.float32) / np.float32(scale)
        if depth_format == "7scenes":
            depth[raw == 65535] = 0.0
    elif depth_format == "sunrgbd":
        depth = sunrgbd_to_metres(read_uint16_png(path))
    elif depth_format == "nyu_disparity":
        depth = nyu_disparity_to_metres(read_pgm16(path))
    elif depth_format == "ibims1_png":
        depth = read_uint16_png(path).astype(np.float32) / np.float32(65535.0) * np.float32(50.0)
    elif depth_format in ("npy", "float"):
        depth = read_npy_depth(path) if depth_format == "npy" else read_float_image(path)
        if depth_scale is not None:
            depth = depth / np.float32(depth_scale)
    else:
        raise ValueError(f"unknown depth_format {depth_format!r}; expected one of {DEPTH_FORMATS}")
    depth = depth.astype(np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth

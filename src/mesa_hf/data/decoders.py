"""Readers for RGB files and the depth file formats of public RGB-D datasets, each returning float32 metres.

Every decoder returns a float32 (H, W) array in metres with 0 where the file marks no measurement.
``depth_scale`` means the same everywhere in mesa-hf: **metres per stored unit** (0.001 for millimetres).

========================  =====================================================================================
format                    metres from the stored value ``v``
========================  =====================================================================================
``"auto"``                by the file: an integer image or ``.npy`` (16-bit PNG) is ``v · depth_scale``, default
                          ``0.001`` (millimetres, or the scale in the PNG's ``depth_scale`` text chunk that
                          ``mesa-hf predict`` writes); a float ``.npy``/TIFF is metres (``· depth_scale`` if given);
                          8-bit images are rejected (not depth maps)
``"png_mm"`` / ``"nyu"``  uint16 PNG, ``v · 0.001`` (NYUv2 labelled / BTS sync ``sync_depth_*.png``, HoloLens)
``"7scenes"``             uint16 PNG, ``v · 0.001``, ``65535`` = invalid
``"tum"``                 uint16 PNG, ``v / 5000``
``"kitti"``               uint16 PNG, ``v / 256`` (projected LiDAR, 0 = no point)
``"ibims1_png"``          iBims-1 raw release uint16 PNG, ``v / 65535 · 50``
``"png"``                 uint16 PNG, ``v · depth_scale`` (required)
``"sunrgbd"``             uint16 PNG with a 3-bit circular shift: ``((v >> 3) | (v << 13)) & 0xFFFF`` then
                          ``/ 1000`` (SUN RGB-D toolbox ``read3dPoints.m``: ``bitor(bitshift(d,-3),
                          bitshift(d,16-3)) / 1000``; the toolbox also clips at 8 m, we do not)
``"nyu_disparity"``       NYU raw Kinect ``d-*.pgm``: 16-bit disparity stored little-endian despite the PGM header
                          (byte-swapped, as the NYU toolbox's ``swapbytes``); ``351.3 / (1092.5 - v)``
                          (toolbox ``depth_rel2depth_abs``), 2047 = invalid, clipped to ``max_depth`` = 10 m
``"npy"``                 float array in metres (iBims-1 via ``.npy``, any leading singleton axes dropped)
``"float"``               any float image (TIFF/EXR readable by PIL) already in metres
========================  =====================================================================================

A ``depth_scale`` given to a fixed-scale format (``"tum"``, ``"kitti"``, ...) replaces its scale; for ``"npy"``
and ``"float"`` it multiplies the stored values.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mesa_hf.depth_png import DEPTH_PNG_SCALE_KEY, png_text_scale

DEPTH_SCALES = {
    "png_mm": 0.001,
    "nyu": 0.001,
    "hololens": 0.001,
    "7scenes": 0.001,
    "tum": 1 / 5000,
    "kitti": 1 / 256,
    "ibims1_png": 50 / 65535,
}
"""Metres per stored unit of the uint16 PNG formats with a fixed scale."""
DEPTH_FORMATS = ("auto", *DEPTH_SCALES, "png", "sunrgbd", "nyu_disparity", "npy", "float")

INTEGER_DEPTH_SCALE = 0.001
"""Metres per unit assumed for integer depth (16-bit PNG, integer .npy) when neither the caller nor the file says."""

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
    return _read_npy_array(path).astype(np.float32)


def _read_npy_array(path: str | Path) -> np.ndarray:
    """The (H, W) array of a .npy file in its stored dtype (leading singleton axes and a trailing one dropped)."""
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
    return arr


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


def check_depth_scale(depth_scale: float | None, source: str = "depth_scale") -> None:
    """Raise unless ``depth_scale`` is None or a plausible number of metres per stored unit (0 < scale <= 1).

    A value above 1 is almost always the old "units per metre" reading (1000 for millimetres), so the error says
    which value to pass instead.
    """
    if depth_scale is None:
        return
    scale = float(depth_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{source}: depth_scale must be a positive number of metres per stored unit, got {scale}")
    if scale > 1:
        raise ValueError(
            f"{source}: depth_scale is metres per stored unit (0.001 for millimetres, 0.0002 for TUM's 1/5000, "
            f"0.00390625 for KITTI's 1/256); {scale:g} looks like units per metre: pass {1 / scale:.6g} instead"
        )


def scale_to_metres(raw: np.ndarray, depth_scale: float) -> np.ndarray:
    """Stored depth values times ``depth_scale`` (metres per unit) as float32, rounded once (float64 product)."""
    return (np.asarray(raw, dtype=np.float64) * float(depth_scale)).astype(np.float32)


def read_depth_image(file, source: str) -> tuple[np.ndarray, float | None]:
    """A single-channel depth image (path or file object) as (stored values, metres per unit from its PNG
    ``depth_scale`` text chunk or None); 8-bit and colour images are rejected as not being depth maps."""
    try:
        with Image.open(file) as img:
            img.load()
            mode, text, raw = img.mode, dict(getattr(img, "text", {}) or {}), np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{source}: corrupt or unreadable depth image ({err})") from err
    if raw.ndim != 2 or mode in ("1", "L", "P", "LA", "RGB", "RGBA"):
        raise ValueError(
            f"{source}: an 8-bit or colour image (PIL mode {mode!r}) is not a depth map; expected a 16-bit PNG "
            "(e.g. millimetres), a float TIFF or a .npy in metres"
        )
    return raw, png_text_scale(text, source)


def depth_values_to_metres(
    raw: np.ndarray, source: str, depth_scale: float | None = None, file_scale: float | None = None
) -> np.ndarray:
    """The ``"auto"`` unit rule: integer values × (`depth_scale`, else the file's own scale, else 0.001 =
    millimetres); float values × (`depth_scale` or 1, i.e. metres). Returns float32."""
    if np.issubdtype(raw.dtype, np.floating):
        return scale_to_metres(raw, 1.0 if depth_scale is None else depth_scale)
    if not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"{source}: depth values of dtype {raw.dtype} are neither integer nor float")
    if depth_scale is not None and file_scale is not None and not np.isclose(depth_scale, file_scale, rtol=1e-6):
        raise ValueError(
            f"{source}: the file says {file_scale:g} m per unit ({DEPTH_PNG_SCALE_KEY!r} text chunk) but "
            f"depth_scale={depth_scale:g} was given; drop depth_scale or fix the file"
        )
    scale = depth_scale if depth_scale is not None else file_scale if file_scale is not None else INTEGER_DEPTH_SCALE
    return scale_to_metres(raw, scale)


def _read_auto(path: Path) -> tuple[np.ndarray, float | None]:
    if path.suffix.lower() == ".npy":
        return _read_npy_array(path), None
    if path.suffix.lower() == ".pgm":
        raise ValueError(f"{path}: a .pgm depth file needs depth_format='nyu_disparity' (NYU raw Kinect dumps)")
    return read_depth_image(path, str(path))


def uses_default_integer_scale(path: str | Path) -> bool:
    """Whether the ``"auto"`` format without ``depth_scale`` reads this file with the millimetre default (integer
    values and no scale of its own)."""
    raw, file_scale = _read_auto(_require_file(path))
    return np.issubdtype(raw.dtype, np.integer) and file_scale is None


def decode_depth(path: str | Path, depth_format: str = "auto", depth_scale: float | None = None) -> np.ndarray:
    """Decode a depth file to float32 metres, 0 = no measurement (non-finite and negative values become 0).

    Args:
        path: the depth file.
        depth_format: one of :data:`DEPTH_FORMATS` (see the module docstring for each format's scale);
            ``"auto"`` (default) decides by the file, ``"png"`` is a uint16 PNG times ``depth_scale`` (required).
        depth_scale: metres per stored unit (0.001 for millimetres); replaces a fixed-scale format's scale,
            multiplies ``"npy"``/``"float"`` values.
    """
    check_depth_scale(depth_scale, str(path))
    if depth_format == "auto":
        raw, file_scale = _read_auto(_require_file(path))
        depth = depth_values_to_metres(raw, str(path), depth_scale, file_scale)
    elif depth_format in DEPTH_SCALES or depth_format == "png":
        scale = depth_scale if depth_scale is not None else DEPTH_SCALES.get(depth_format)
        if scale is None:
            raise ValueError(f"{path}: depth_format 'png' needs depth_scale (metres per stored unit, 0.001 for mm)")
        raw = read_uint16_png(path)
        depth = scale_to_metres(raw, scale)
        if depth_format == "7scenes":
            depth[raw == 65535] = 0.0
    elif depth_format == "sunrgbd":
        depth = sunrgbd_to_metres(read_uint16_png(path))
    elif depth_format == "nyu_disparity":
        depth = nyu_disparity_to_metres(read_pgm16(path))
    elif depth_format in ("npy", "float"):
        depth = read_npy_depth(path) if depth_format == "npy" else read_float_image(path)
        if depth_scale is not None:
            depth = scale_to_metres(depth, depth_scale)
    else:
        raise ValueError(f"unknown depth_format {depth_format!r}; expected one of {DEPTH_FORMATS}")
    depth = depth.astype(np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth

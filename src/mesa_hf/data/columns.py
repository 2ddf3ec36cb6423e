"""The one place that defines the column names and `datasets.Features` of mesa-hf's three dataset kinds.

Every loader (real formats and the synthetic world) returns rows with exactly these columns, so the transforms of
:mod:`mesa_hf.data.transforms` and the training stages can rely on them.

``depth`` kind (supervised stage, fine-tuning, evaluation)
    - ``image``: RGB image (``datasets.Image()``; the source file's bytes are stored unchanged).
    - ``depth``: float32 depth in **metres**, ``0`` = no ground truth, same size as ``image``. Stored losslessly
      as a ``datasets.Image()`` float TIFF (PIL mode ``"F"``, deflate-compressed by the real-data loaders);
      ``np.asarray(row["depth"])`` gives the exact float32 array back.
    - ``intrinsics``: 3×3 pinhole matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels of ``image``
      (nested float32 lists), or ``None`` where unknown. Pixel centres are at integer coordinates, so a
      horizontal flip maps ``cx`` to ``W - 1 - cx``.
    - ``scene``: scene / sequence name (string, may be ``""``).

``video`` kind (geometric, self-supervised stage)
    - ``image``: the target frame.
    - ``source_images``: list of source frames, one per entry of ``source_offsets``.
    - ``source_offsets``: list of int frame offsets of the sources relative to the target (e.g. ``[-1, 1]``).
    - ``intrinsics``: 3×3 matrix as above (required for video).
    - ``poses``: ``(S + 1) × 4 × 4`` **camera-to-world** matrices (metres), target first, then the sources in
      ``source_offsets`` order; ``None`` where the dataset has no poses. The transform turns them into
      target→source transforms (see :func:`relative_poses`).
    - ``depth``: target frame depth in metres (float TIFF as above) or ``None``.
    - ``scene``: sequence name; ``frame_index``: the target's position in its sequence.

``images`` kind (masked-image-modelling stage)
    - ``image``: RGB image.
"""

from __future__ import annotations

import io

import numpy as np
from datasets import Features, Image, List, Value
from PIL import Image as PILImage

IMAGE = "image"
DEPTH = "depth"
INTRINSICS = "intrinsics"
SCENE = "scene"
SOURCE_IMAGES = "source_images"
SOURCE_OFFSETS = "source_offsets"
POSES = "poses"
FRAME_INDEX = "frame_index"

DATASET_KINDS = ("depth", "video", "images")

DEPTH_FEATURES = Features(
    {
        IMAGE: Image(),
        DEPTH: Image(),
        INTRINSICS: List(List(Value("float32"))),
        SCENE: Value("string"),
    }
)

VIDEO_FEATURES = Features(
    {
        IMAGE: Image(),
        SOURCE_IMAGES: List(Image()),
        SOURCE_OFFSETS: List(Value("int32")),
        INTRINSICS: List(List(Value("float32"))),
        POSES: List(List(List(Value("float32")))),
        DEPTH: Image(),
        SCENE: Value("string"),
        FRAME_INDEX: Value("int32"),
    }
)

IMAGE_FEATURES = Features({IMAGE: Image()})


DEPTH_TIFF_COMPRESSION = "tiff_deflate"
"""Lossless compression of the float TIFFs that real-data loaders store (about 4x smaller than raw float32 for
NYUv2 depth, ~5-10 ms to decode a 640×480 map)."""


def encode_depth(depth: np.ndarray, compression: str | None = DEPTH_TIFF_COMPRESSION) -> dict:
    """A float32 (H, W) depth map in metres as a ``datasets.Image()`` value: a lossless float TIFF (mode ``"F"``)."""
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D map, got shape {depth.shape}")
    buffer = io.BytesIO()
    options = {"compression": compression} if compression else {}
    PILImage.fromarray(depth, mode="F").save(buffer, format="TIFF", **options)
    return {"bytes": buffer.getvalue(), "path": None}


def features_for(kind: str) -> Features:
    """The `datasets.Features` of a dataset kind (``"depth"``, ``"video"`` or ``"images"``)."""
    table = {"depth": DEPTH_FEATURES, "video": VIDEO_FEATURES, "images": IMAGE_FEATURES}
    if kind not in table:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {DATASET_KINDS}")
    return table[kind]


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3×3 float32 pinhole matrix from focal lengths and principal point (pixels)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float32)


def relative_poses(poses: np.ndarray) -> np.ndarray:
    """Target→source transforms from camera-to-world poses.

    Args:
        poses: (S + 1, 4, 4) camera-to-world matrices, target first.

    Returns:
        (S, 4, 4) float32 ``T_target_to_source = inv(P_source) @ P_target``: maps a 3-D point in the target
        camera's frame to the source camera's frame (the matrix that ``mesa_hf.geometry.warp_frame`` takes).
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or poses.shape[0] < 2:
        raise ValueError(f"poses must have shape (S + 1, 4, 4) with S >= 1, got {poses.shape}")
    return (np.linalg.inv(poses[1:]) @ poses[0][None]).astype(np.float32)

"""Load-time checks: each raises a ValueError naming the file and the problem; `SampleSkipper` implements the
opt-in ``skip_invalid=True`` mode (skip the bad sample, log it, count it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger("mesa_hf.data")

DEFAULT_MAX_MEDIAN_DEPTH = 100.0
"""Median valid depth above which a depth map is taken to be in the wrong unit (millimetres given as metres)."""


def check_depth(depth: np.ndarray, source: str, max_median_depth: float | None = DEFAULT_MAX_MEDIAN_DEPTH) -> None:
    """Check a decoded depth map (float32 metres): 2-D, some valid pixel, plausible unit.

    Args:
        depth: (H, W) float32 metres, 0 = invalid.
        source: the file (or sample) name quoted in errors.
        max_median_depth: the largest plausible median of the valid depths in metres (100 for indoor and
            driving data); ``None`` disables the unit check.
    """
    if depth.ndim != 2:
        raise ValueError(f"{source}: depth must be a 2-D map, got shape {depth.shape}")
    valid = depth[(depth > 0) & np.isfinite(depth)]
    if valid.size == 0:
        raise ValueError(f"{source}: depth has no valid (> 0, finite) pixel")
    if max_median_depth is not None:
        median = float(np.median(valid))
        if median > max_median_depth:
            raise ValueError(
                f"{source}: median valid depth is {median:.1f} m (> {max_median_depth:g} m): the depth looks like "
                "millimetres (or another unit) read as metres; set depth_scale, metres per stored unit (0.001 for mm)"
            )


def check_same_size(image_hw: Sequence[int], depth_hw: Sequence[int], image_source: str, depth_source: str) -> None:
    """Raise if an image and its depth map differ in size."""
    if tuple(image_hw) != tuple(depth_hw):
        raise ValueError(
            f"{depth_source}: depth size {tuple(depth_hw)} (H, W) differs from image {image_source} "
            f"size {tuple(image_hw)}"
        )


def check_intrinsics(intrinsics, source: str, required: bool = False) -> np.ndarray | None:
    """Validate a 3×3 intrinsics matrix (or None when not required); returns it as float32."""
    if intrinsics is None:
        if required:
            raise ValueError(
                f"{source}: a video dataset needs camera intrinsics (fx, fy, cx, cy) and none were found; "
                "pass intrinsics=[[fx, 0, cx], [0, fy, cy], [0, 0, 1]] or provide the dataset's intrinsics file"
            )
        return None
    k = np.asarray(intrinsics, dtype=np.float32)
    if k.shape == (4,):
        fx, fy, cx, cy = k
        k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"{source}: intrinsics must be a finite 3x3 matrix with fx, fy > 0, got {k.tolist()}")
    return k


class SampleSkipper:
    """Runs per-sample work; with ``skip_invalid`` it turns ValueError/FileNotFoundError into a logged skip."""

    def __init__(self, skip_invalid: bool, dataset_name: str):
        self.skip_invalid = skip_invalid
        self.dataset_name = dataset_name
        self.skipped: list[str] = []

    def run(self, fn, *args, **kwargs):
        """Return ``fn(*args, **kwargs)``, or None if it raised a data error and skipping is on."""
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as err:
            if not self.skip_invalid:
                raise
            self.skipped.append(str(err))
            logger.warning("%s: skipping invalid sample: %s", self.dataset_name, err)
            return None


def raise_if_empty(num_rows: int, source: str, what: str = "samples") -> None:
    """Raise a clear error when a loader found nothing."""
    if num_rows == 0:
        raise ValueError(f"{source}: empty dataset, no {what} found")

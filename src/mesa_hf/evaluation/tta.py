"""Test-time augmentation around a depth predictor.

A predictor is any callable ``predict(pixel_values) -> depth`` with ``pixel_values`` (B, 3, H, W) and ``depth``
(B, H, W) in metres at the input size. Matches MIM-Depth-Estimation ``test.py``: ``--flip_test`` averages the
prediction with the flipped-back prediction of the flipped input; ``--shift_window_test`` (``shift_size`` 2)
predicts on full-height square windows at x = 0 and x = W - H (160 for 480x640) and averages where they overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Predictor = Callable[[torch.Tensor], torch.Tensor]


def _check_output(depth: torch.Tensor, pixel_values: torch.Tensor, what: str) -> torch.Tensor:
    expected = (pixel_values.shape[0], pixel_values.shape[-2], pixel_values.shape[-1])
    if depth.ndim == 4 and depth.shape[1] == 1:
        depth = depth[:, 0]
    if tuple(depth.shape) != expected:
        raise ValueError(f"{what}: predict() must return (B, H, W) = {expected}, got {tuple(depth.shape)}")
    return depth


def flip_tta(predict: Predictor, pixel_values: torch.Tensor) -> torch.Tensor:
    """Mean of ``predict(x)`` and the horizontally flipped-back ``predict(flip(x))``; one batched call."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixel_values.shape)}")
    batch = pixel_values.shape[0]
    both = _check_output(
        predict(torch.cat([pixel_values, pixel_values.flip(-1)], dim=0)),
        torch.cat([pixel_values, pixel_values], dim=0),
        "flip_tta",
    )
    return (both[:batch] + both[batch:].flip(-1)) / 2


def sliding_window_offsets(width: int, window_size: int, num_windows: int = 2) -> list[int]:
    """Left edges of ``num_windows`` windows spanning ``width`` (first at 0, last at ``width - window_size``)."""
    if window_size > width:
        raise ValueError(f"sliding window of width {window_size} does not fit an input {width} pixels wide")
    if num_windows < 1:
        raise ValueError(f"num_windows must be >= 1, got {num_windows}")
    if window_size == width:
        return [0]
    if num_windows == 1:
        raise ValueError(f"one window of width {window_size} cannot cover an input {width} pixels wide")
    span = width - window_size
    # MIM-Depth: interval = span // (n - 1); we round each offset so the last window always ends at the border.
    return [round(i * span / (num_windows - 1)) for i in range(num_windows)]


def sliding_window_tta(
    predict: Predictor, pixel_values: torch.Tensor, window_size: int | None = None, num_windows: int = 2
) -> torch.Tensor:
    """Predict on full-height windows ``window_size`` wide and average the overlapping columns.

    ``window_size`` defaults to the input height (square windows, 480 for NYUv2 480x640 input). The windows are
    stacked into one batch of ``B * num_windows`` for ``predict``.
    """
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixel_values.shape)}")
    batch, _, height, width = pixel_values.shape
    window_size = height if window_size is None else int(window_size)
    offsets = sliding_window_offsets(width, window_size, num_windows)
    windows = torch.cat([pixel_values[..., x : x + window_size] for x in offsets], dim=0)
    pred = _check_output(predict(windows), windows, "sliding_window_tta")
    total = pixel_values.new_zeros(batch, height, width, dtype=pred.dtype)
    count = pixel_values.new_zeros(1, 1, width, dtype=pred.dtype)
    for i, x in enumerate(offsets):
        total[..., x : x + window_size] += pred[i * batch : (i + 1) * batch]
        count[..., x : x + window_size] += 1
    return total / count


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Which test-time augmentations to apply; ``wrap(predict)`` returns the augmented predictor."""

    flip: bool = False
    sliding_window: bool = False
    window_size: int | None = None
    num_windows: int = 2

    __test__ = False  # not a pytest test class

    def wrap(self, predict: Predictor) -> Predictor:
        fn = predict
        if self.flip:
            inner = fn

            def fn(x: torch.Tensor, _inner: Predictor = inner) -> torch.Tensor:
                return flip_tta(_inner, x)

        if self.sliding_window:
            inner = fn

            def fn(x: torch.Tensor, _inner: Predictor = inner) -> torch.Tensor:
                return sliding_window_tta(_inner, x, self.window_size, self.num_windows)

        return fn

    def __call__(self, predict: Predictor, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.wrap(predict)(pixel_values)

    @property
    def enabled(self) -> bool:
        return self.flip or self.sliding_window

    def short_label(self) -> str:
        """Compact label for file names and metadata: ``"none"``, ``"flip"``, ``"flip+sw480"``, ``"swH"``."""
        parts = (["flip"] if self.flip else []) + (
            [f"sw{self.window_size or 'H'}" + (f"x{self.num_windows}" if self.num_windows != 2 else "")]
            if self.sliding_window
            else []
        )
        return "+".join(parts) or "none"

    def describe(self) -> str:
        """Short label, e.g. ``"flip + sliding-window (2 x 480 px, overlap averaged)"`` or ``"none"``."""
        parts = []
        if self.flip:
            parts.append("flip")
        if self.sliding_window:
            size = "H" if self.window_size is None else str(self.window_size)
            parts.append(f"sliding-window ({self.num_windows} x {size} px wide, overlap averaged)")
        return " + ".join(parts) if parts else "none"

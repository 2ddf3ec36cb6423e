"""Depth evaluation: metrics, protocols (NYUv2 Eigen crop, iBims-1, KITTI), test-time augmentation."""

from __future__ import annotations

from pathlib import Path

from .metrics import (
    CROPS,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    DepthMetricAccumulator,
    compute_depth_metrics,
    crop_mask,
    format_metrics_table,
    median_scale,
    valid_depth_mask,
)
from .protocols import PROTOCOLS, EvaluationProtocol, get_protocol
from .tta import TestTimeAugmentation, flip_tta, sliding_window_offsets, sliding_window_tta

DEPTH_METRIC_MODULE_PATH = Path(__file__).resolve().parent / "depth_metrics"
"""Folder of the ``evaluate`` metric module (``evaluate.load(str(DEPTH_METRIC_MODULE_PATH))``)."""


def load_depth_metric(**kwargs):
    """``evaluate.load`` of the bundled ``depth_metrics`` module (works offline; kwargs go to ``evaluate.load``)."""
    import evaluate  # slow import (pulls transformers.pipelines): only on demand

    return evaluate.load(str(DEPTH_METRIC_MODULE_PATH), **kwargs)


__all__ = [
    "CROPS",
    "DEPTH_METRIC_MODULE_PATH",
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "PROTOCOLS",
    "DepthMetricAccumulator",
    "EvaluationProtocol",
    "TestTimeAugmentation",
    "compute_depth_metrics",
    "crop_mask",
    "flip_tta",
    "format_metrics_table",
    "get_protocol",
    "load_depth_metric",
    "median_scale",
    "sliding_window_offsets",
    "sliding_window_tta",
    "valid_depth_mask",
]

"""Depth evaluation: metrics, protocols (NYUv2 Eigen crop, iBims-1, KITTI), test-time augmentation."""

from __future__ import annotations

from pathlib import Path

from .evaluator import EvaluationResult, evaluate_model, write_model_card_results
from .inference import DepthPredictor, load_checkpoint
from .io import Intrinsics, load_depth_png16, nyu_intrinsics, save_depth_png16, save_ply
from .metrics import (
    CROPS,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    DepthMetricAccumulator,
    compute_depth_metrics,
    crop_mask,
    evaluation_mask,
    format_metrics_table,
    median_scale,
)
from .predict import collect_inputs, predict_to_files, write_depth_outputs
from .protocols import PROTOCOLS, EvaluationProtocol, get_protocol
from .temporal import flicker, temporal_alignment_error
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
    "DepthPredictor",
    "EvaluationProtocol",
    "EvaluationResult",
    "Intrinsics",
    "TestTimeAugmentation",
    "collect_inputs",
    "compute_depth_metrics",
    "crop_mask",
    "evaluate_model",
    "evaluation_mask",
    "flicker",
    "flip_tta",
    "format_metrics_table",
    "get_protocol",
    "load_checkpoint",
    "load_depth_metric",
    "load_depth_png16",
    "median_scale",
    "nyu_intrinsics",
    "predict_to_files",
    "save_depth_png16",
    "save_ply",
    "sliding_window_offsets",
    "sliding_window_tta",
    "temporal_alignment_error",
    "write_depth_outputs",
    "write_model_card_results",
]

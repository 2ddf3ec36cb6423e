"""`evaluate` metric module for monocular depth: ``evaluate.load("<path>/depth_metrics")``.

A thin wrapper around :func:`mesa_hf.evaluation.compute_depth_metrics` (GLPDepth/MIM-Depth definitions).
"""

import datasets
import evaluate
import numpy as np

from mesa_hf.evaluation.metrics import DepthMetricAccumulator

_DESCRIPTION = """\
Monocular depth metrics (abs_rel, sq_rel, rmse, rmse_log, log10, silog, d1, d2, d3) as defined by GLPDepth and
MIM-Depth-Estimation `eval_depth`, on valid pixels min_depth < gt < max_depth (finite) inside an optional crop
("eigen" = NYUv2 rows 45:471, cols 41:601 of 480x640; "garg"/"kitti_eigen" = KITTI; None). The dataset score is the
mean of per-image scores (pooled=False, the published protocol) or the score of all valid pixels pooled (pooled=True).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of (H, W) predicted depth maps in metres.
    references: list of (H, W) ground-truth depth maps in metres (0 or non-finite = no ground truth).
    min_depth (float, default 1e-3), max_depth (float, default 10.0): evaluated ground-truth range.
    crop (str or None, default "eigen"): evaluation crop.
    clamp_pred (bool, default False): clip predictions to the range first.
    median_scaling (bool, default False): per-image median scaling (self-supervised protocol).
    pooled (bool, default False): pool pixels over images instead of averaging per-image metrics.
Returns:
    dict with abs_rel, sq_rel, rmse, rmse_log, log10, silog, d1, d2, d3 (floats).
Example:
    >>> metric = evaluate.load("src/mesa_hf/evaluation/depth_metrics")
    >>> metric.compute(predictions=[pred], references=[gt], crop=None)
"""

_CITATION = """\
@inproceedings{kim2022glpdepth, title={Global-Local Path Networks for Monocular Depth Estimation with Vertical
CutDepth}, author={Kim, Doyeon and Ka, Woonghyun and Ahn, Pyungwhan and Joo, Donggyu and Chun, Sehwan and Kim,
Junmo}, year={2022}}
@inproceedings{xie2023darkmim, title={Revealing the Dark Secrets of Masked Image Modeling}, author={Xie, Zhenda
and Geng, Zigang and Hu, Jingcheng and Zhang, Zheng and Hu, Han and Cao, Yue}, booktitle={CVPR}, year={2023}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DepthMetrics(evaluate.Metric):
    """Depth estimation metrics on (H, W) maps in metres."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                }
            ),
            reference_urls=["https://github.com/SwinTransformer/MIM-Depth-Estimation"],
        )

    def _compute(
        self,
        predictions,
        references,
        min_depth=1e-3,
        max_depth=10.0,
        crop="eigen",
        clamp_pred=False,
        median_scaling=False,
        pooled=False,
    ):
        accumulator = DepthMetricAccumulator(
            min_depth=min_depth, max_depth=max_depth, crop=crop, clamp_pred=clamp_pred, median_scaling=median_scaling
        )
        for pred, gt in zip(predictions, references, strict=True):
            accumulator.update(np.asarray(pred, dtype=np.float32), np.asarray(gt, dtype=np.float32))
        return accumulator.compute_pooled() if pooled else accumulator.compute()

"""Named evaluation protocols: which pixels count, at which resolution, with which scaling.

Every printed result should carry ``protocol.describe(tta)`` so that numbers are never shown without their crop,
depth range, scaling and test-time augmentation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .metrics import NYU_EIGEN_CROP, DepthMetricAccumulator
from .tta import TestTimeAugmentation


@dataclass(frozen=True)
class EvaluationProtocol:
    """One evaluation protocol.

    Attributes:
        name: registry key.
        crop: crop name for :func:`~mesa_hf.evaluation.metrics.crop_mask` (``None`` = whole map).
        min_depth, max_depth: evaluated ground-truth range in metres (exclusive).
        input_size: (H, W) the image is resized to before prediction (``None`` = native size); the prediction is
            always resized back to the ground truth's size before scoring.
        median_scaling: per-image median scaling of the prediction (self-supervised, scale-ambiguous depth).
        clamp_pred: clip predictions to the range (BTS/Monodepth2) instead of only fixing non-finite values.
        use_dataset_mask: combine a sample's ``mask`` column (if present) with the range/crop mask.
        reference: where the definition comes from.
    """

    name: str
    crop: str | None
    min_depth: float
    max_depth: float
    input_size: tuple[int, int] | None = None
    median_scaling: bool = False
    clamp_pred: bool = False
    use_dataset_mask: bool = False
    reference: str = ""

    def replace(self, **changes) -> EvaluationProtocol:
        """Copy with some fields changed, e.g. ``protocol.replace(median_scaling=True)``."""
        return dataclasses.replace(self, **changes)

    def accumulator(self) -> DepthMetricAccumulator:
        """A fresh accumulator configured for this protocol."""
        return DepthMetricAccumulator(
            min_depth=self.min_depth,
            max_depth=self.max_depth,
            crop=self.crop,
            clamp_pred=self.clamp_pred,
            median_scaling=self.median_scaling,
        )

    def crop_description(self) -> str:
        if self.crop is None:
            return "none"
        if self.crop == "eigen":
            top, bottom, left, right = NYU_EIGEN_CROP
            return f"eigen (rows {top}:{bottom}, cols {left}:{right} of 480x640)"
        return f"{self.crop} (KITTI fractions of H, W)"

    def describe(self, tta: TestTimeAugmentation | None = None) -> str:
        """One line naming protocol, crop, depth range, input size, scaling and TTA."""
        size = "native" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        parts = [
            f"protocol={self.name}",
            f"crop={self.crop_description()}",
            f"valid={self.min_depth:g}<gt<{self.max_depth:g} m"
            + (" & dataset mask if present" if self.use_dataset_mask else ""),
            f"input={size}",
            "scaling=" + ("per-image median (gt/pred)" if self.median_scaling else "none (metric)"),
            "pred=" + ("clipped to range" if self.clamp_pred else "as predicted"),
            f"TTA={(tta or TestTimeAugmentation()).describe()}",
        ]
        return " | ".join(parts)


PROTOCOLS: dict[str, EvaluationProtocol] = {
    "nyuv2": EvaluationProtocol(
        name="nyuv2",
        crop="eigen",
        min_depth=1e-3,
        max_depth=10.0,
        input_size=(480, 640),
        reference="NYUv2 official 654 test images; GLPDepth/MIM-Depth eval_depth + cropping_img",
    ),
    # iBims-1 (Koch et al. 2018) official script: valid = mask_invalid * mask_transp * (depth != 0), no crop.
    # Models trained on NYUv2 are scored on 1e-3 < gt < 10 m, the usual cap (BTS, AdaBins, ZoeDepth).
    "ibims1": EvaluationProtocol(
        name="ibims1",
        crop=None,
        min_depth=1e-3,
        max_depth=10.0,
        input_size=(480, 640),
        use_dataset_mask=True,
        reference="iBims-1 evaluate_ibims.py masks (invalid, transparent, missing); range capped at 10 m",
    ),
    "kitti": EvaluationProtocol(
        name="kitti",
        crop="garg",
        min_depth=1e-3,
        max_depth=80.0,
        clamp_pred=True,
        reference="KITTI Eigen split, Garg crop, 1e-3..80 m (Monodepth2 evaluate_depth.py)",
    ),
    # video sequences (7-Scenes, TUM, HoloLens, frame folders, the synthetic world): per-frame metrics as below plus
    # the temporal metrics of mesa_hf.evaluation.temporal (TAE, flicker); `mesa-hf evaluate --protocol video`
    "video": EvaluationProtocol(
        name="video",
        crop=None,
        min_depth=1e-3,
        max_depth=10.0,
        reference="per-frame depth metrics of whole video sequences + temporal alignment error and flicker",
    ),
}


def get_protocol(name: str | EvaluationProtocol, **changes) -> EvaluationProtocol:
    """Look up a registered protocol by name (optionally with fields changed)."""
    if isinstance(name, EvaluationProtocol):
        protocol = name
    else:
        try:
            protocol = PROTOCOLS[name]
        except KeyError:
            raise ValueError(f"unknown evaluation protocol {name!r}; registered: {sorted(PROTOCOLS)}") from None
    return protocol.replace(**changes) if changes else protocol

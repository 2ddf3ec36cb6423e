"""Experiments built on the training stages: MeSa's ablation (pre-training variants at an equal budget, identical
fine-tuning, held-out metrics and layer-wise CKA) and its report. This package sits above `mesa_hf.training`:
training never imports it."""

from .ablation import AblationSettings, run_ablation, run_variant, split_budget
from .variants import DEFAULT_VARIANTS, FULL, METRICS, QUICK, VARIANT_TITLES, VARIANTS

__all__ = [
    "DEFAULT_VARIANTS",
    "FULL",
    "METRICS",
    "QUICK",
    "VARIANTS",
    "VARIANT_TITLES",
    "AblationSettings",
    "run_ablation",
    "run_variant",
    "split_budget",
]

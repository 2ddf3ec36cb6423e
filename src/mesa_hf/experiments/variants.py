"""The ablation's table: its pre-training variants (each a sequence of stage specs), their titles, the metrics
the results table shows, the paper's reference number and the default sizes. Shared by the run
(`mesa_hf.experiments.ablation`) and the report (`mesa_hf.experiments.report`)."""

from __future__ import annotations

from ..training.recipes import STAGES, StageSpec

# variant -> pre-training stages, in order (MeSa's Table: from scratch, SimMIM only, SimMIM + supervised, MeSa)
VARIANTS: dict[str, tuple[StageSpec, ...]] = {
    "scratch": (),
    "masked": (STAGES["masked"],),
    "masked_supervised": (STAGES["masked"], STAGES["supervised"]),
    "mesa": (STAGES["masked"], STAGES["geometric"], STAGES["supervised"]),
    "geometric": (STAGES["geometric"],),
}
FINETUNE = STAGES["finetune"]  # the one fine-tuning every variant gets
DEFAULT_VARIANTS = ("scratch", "masked", "masked_supervised", "mesa", "geometric")
VARIANT_TITLES = {
    "scratch": "from scratch",
    "masked": "masked only",
    "masked_supervised": "masked → supervised",
    "mesa": "MeSa (masked → geometric → supervised)",
    "geometric": "geometric only",
}
VARIANT_NAMES = {"masked": "masked-only", "masked_supervised": "masked → supervised"}  # in sentences
# metrics of the results table, their direction and how the report names them
METRICS: dict[str, tuple[str, bool]] = {
    "abs_rel": ("AbsRel", False),
    "sq_rel": ("SqRel", False),
    "rmse": ("RMSE", False),
    "rmse_log": ("RMSE log", False),
    "log10": ("log10", False),
    "d1": ("δ1", True),
    "d2": ("δ2", True),
    "d3": ("δ3", True),
    "median_scaled_abs_rel": ("AbsRel (median-scaled)", False),
}
# MeSa vs masked-only (SimMIM) pre-training, RMSE on NYUv2, as the paper reports it (percent change)
PAPER_RMSE_CHANGE_PERCENT = -17.1
QUICK = {"seeds": (0,), "pretrain_updates": 150, "finetune_updates": 120, "probe_updates": 60, "cka_images": 256}
FULL = {"seeds": (0, 1, 2), "pretrain_updates": 300, "finetune_updates": 200, "probe_updates": 100, "cka_images": 256}


def stage_names(variant: str) -> tuple[str, ...]:
    """The names of `variant`'s pre-training stages, in order."""
    return tuple(spec.name for spec in VARIANTS[variant])


__all__ = [
    "DEFAULT_VARIANTS",
    "FINETUNE",
    "FULL",
    "METRICS",
    "PAPER_RMSE_CHANGE_PERCENT",
    "QUICK",
    "VARIANTS",
    "VARIANT_NAMES",
    "VARIANT_TITLES",
    "stage_names",
]

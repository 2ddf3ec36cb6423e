"""The declarative side of MeSa training: the stage registry (`STAGES`), its recipes with their sources, and the
resolver that turns a stage's recipe into `MeSaTrainingArguments` for the number of processes at hand.

A stage is (model class, dataset kind, transform, default hyper-parameters with their sources):

============  ==============================  ============  ==============================================
stage         model class                     data kind     objective
============  ==============================  ============  ==============================================
masked        MeSaForMaskedImageModeling      images        SimMIM: L1 on masked pixels
geometric     MeSaForSelfSupervisedDepth      video         Monodepth2: photometric reprojection + smoothness
supervised    MeSaForDepthEstimation          depth         SiLog on RGB-D data
finetune      MeSaForDepthEstimation          depth         SiLog on the target set (NYUv2: MIM-Depth recipe)
============  ==============================  ============  ==============================================

Two recipes: ``"paper"`` (the published hyper-parameters of SimMIM, Monodepth2 and MIM-Depth, for real data and
GPUs) and ``"demo"`` (the offline synthetic-world run on 2 CPU cores with the ``demo`` preset at 96x128).

The paper recipes state a *total* batch (all processes, all accumulation steps) and a learning-rate rule;
`resolve_recipe` resolves them against ``num_processes x per-device batch x gradient accumulation`` at start-up
(docs/training.md, "The resolved recipe"). Running a stage is `mesa_hf.training.runner.run_stage`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..configuration_mesa import MeSaConfig
from ..modeling_mesa import (
    MeSaForDepthEstimation,
    MeSaForMaskedImageModeling,
    MeSaForSelfSupervisedDepth,
    MeSaPreTrainedModel,
)
from .arguments import MeSaTrainingArguments
from .stage_data import depth_training_transform, masked_training_transform, video_training_transform

PRETRAINING_ORDER = ("masked", "geometric", "supervised")
RECIPES = ("paper", "demo")

# Held-out synthetic scenes for every stage's evaluation (rooms never seen in training).
HELDOUT_SEED = 1000
DEMO_EVAL_SAMPLES = 48


@dataclass(frozen=True)
class HyperParameter:
    """A default value and where it comes from."""

    value: Any
    source: str


@dataclass(frozen=True)
class StageSpec:
    """One training stage: model class, data kind, transform, defaults (with sources) and the demo recipe.

    Attributes:
        name: registry key.
        model_class: the `MeSaPreTrainedModel` subclass trained in this stage.
        dataset_kind: ``"images"``, ``"video"`` or ``"depth"`` (columns in `mesa_hf.data.columns`).
        training_transform: ``fn(config, image_size, seed=None, **options)``, the transform of the training rows
            (`mesa_hf.training.stage_data`).
        objective: one line for the model card.
        training: `MeSaTrainingArguments` defaults of the paper recipe, plus ``total_train_batch_size`` (the
            paper's batch over all processes and accumulation steps) and ``warmup_epochs``.
        config: `MeSaConfig` fields set when the stage starts.
        backbone: Swin-V2 fields of the paper recipe (input size, window).
        demo: the synthetic-world CPU recipe: training-argument overrides, ``num_samples``, ``image_size``.
        lr_reference_batch: linear learning-rate scaling (SimMIM): the paper recipe's ``learning_rate`` and
            ``min_learning_rate`` are per `lr_reference_batch` samples and scale with the total batch; None = the
            learning rate is fixed.
        synthetic_seed: seed of the stage's synthetic training world (held-out scenes use other seeds).
        eval_kind: the kind of the held-out set (``"images"``: SimMIM loss, ``"depth"``: depth metrics).
        headline_metric: the held-out metric the stage is judged by (summaries, model card notes).
        eval_metrics: the held-out metrics kept (None = all of the evaluation's).
        synthetic_options: `MeSaConfig` fields passed to the synthetic-world builder (e.g. the clip's frame offsets).
        card_note: a note for the stage's model-card record, formatted with ``config`` (None = none).
        baseline: the stage is compared with the average training depth map on its held-out set.
        frozen: modules trained by nothing in this stage (their parameters get no gradient; a frozen backbone has no
            stochastic depth, so its features are those of evaluation).
        reinitialized: modules drawn anew when the stage starts, whatever the starting folder holds (PyTorch's
            default init, from the run's seed: the same draw for every starting folder).
    """

    name: str
    model_class: type[MeSaPreTrainedModel]
    dataset_kind: str
    training_transform: Callable[..., Any]
    objective: str
    training: dict[str, HyperParameter]
    config: dict[str, HyperParameter] = field(default_factory=dict)
    backbone: dict[str, HyperParameter] = field(default_factory=dict)
    demo: dict[str, Any] = field(default_factory=dict)
    lr_reference_batch: int | None = None
    synthetic_seed: int = 0
    eval_kind: str = "depth"
    headline_metric: str = "abs_rel"
    eval_metrics: tuple[str, ...] | None = None
    synthetic_options: tuple[str, ...] = ()
    card_note: str | None = None
    baseline: bool = True
    frozen: tuple[str, ...] = ()
    reinitialized: tuple[str, ...] = ()

    def config_values(self, recipe: str) -> dict[str, Any]:
        """The `MeSaConfig` fields this stage sets at start-up under `recipe` (defaults, then the demo's)."""
        values = {name: hp.value for name, hp in self.config.items()}
        if recipe == "demo":
            values.update(self.demo.get("config", {}))
        return values

    def backbone_values(self, recipe: str) -> dict[str, Any]:
        """The Swin-V2 fields of the paper recipe (none for the demo recipe, which keeps the preset's)."""
        return {name: hp.value for name, hp in self.backbone.items()} if recipe == "paper" else {}


_SIMMIM = "SimMIM Swin-V2 config (microsoft/Swin-Transformer configs/simmim/*swinv2*_img192_window12_800ep)"
_MONODEPTH2 = "Monodepth2 (nianticlabs/monodepth2 options.py)"
_INDOOR = "indoor self-supervised protocol (P2Net / StructDepth on NYUv2 raw video)"
_MIM_DEPTH = "MIM-Depth-Estimation NYUv2 recipe (SwinV2-B; L: layer decay 0.85)"
_PROTOTYPE = "docs/design.md §6 (CPU prototype)"

_MIM_DEPTH_TRAINING = {
    "total_train_batch_size": HyperParameter(24, _MIM_DEPTH + ": total batch 24"),
    "per_device_train_batch_size": HyperParameter(24, _MIM_DEPTH + ": at most total batch / processes"),
    "learning_rate": HyperParameter(5e-4, _MIM_DEPTH + ": max_lr"),
    "min_learning_rate": HyperParameter(3e-5, _MIM_DEPTH + ": min_lr"),
    "lr_schedule": HyperParameter("mim_depth", _MIM_DEPTH + ": per-iteration poly ramp up / ramp down"),
    "weight_decay": HyperParameter(0.05, _MIM_DEPTH + ": AdamW"),
    "layer_decay": HyperParameter(0.9, _MIM_DEPTH + ": 0.9 for B, 0.85 for L"),
    "num_train_epochs": HyperParameter(25, _MIM_DEPTH),
    "max_grad_norm": HyperParameter(None, _MIM_DEPTH + ": no clipping"),
}
_MIM_DEPTH_BACKBONE = {
    "image_size": HyperParameter(480, _MIM_DEPTH + ": 480x480 random crops of 480x640 images"),
    "window_size": HyperParameter(30, _MIM_DEPTH + ": window 30"),
    "pretrained_window_sizes": HyperParameter([12, 12, 12, 6], _MIM_DEPTH),
}

STAGES: dict[str, StageSpec] = {
    "masked": StageSpec(
        name="masked",
        model_class=MeSaForMaskedImageModeling,
        dataset_kind="images",
        training_transform=masked_training_transform,
        objective="SimMIM masked image modelling (L1 on masked pixels)",
        training={
            "total_train_batch_size": HyperParameter(2048, _SIMMIM + ": 128 per GPU x 16 GPUs"),
            "per_device_train_batch_size": HyperParameter(128, _SIMMIM + ": DATA.BATCH_SIZE 128 per GPU"),
            "learning_rate": HyperParameter(1e-4, _SIMMIM + ": BASE_LR 1e-4, times total batch / 512"),
            "min_learning_rate": HyperParameter(5e-6, _SIMMIM + ": MIN_LR 5e-6, times total batch / 512"),
            "lr_schedule": HyperParameter("cosine", _SIMMIM + ": multistep x0.1 at epoch 700, here cosine"),
            "warmup_epochs": HyperParameter(10, _SIMMIM),
            "weight_decay": HyperParameter(0.05, _SIMMIM + ": AdamW"),
            "layer_decay": HyperParameter(None, _SIMMIM + ": no layer decay in pre-training"),
            "num_train_epochs": HyperParameter(800, _SIMMIM),
            "max_grad_norm": HyperParameter(5.0, _SIMMIM + ": CLIP_GRAD 5.0"),
        },
        config={
            "mask_ratio": HyperParameter(0.6, _SIMMIM),
            "mask_patch_size": HyperParameter(32, _SIMMIM),
            "norm_target": HyperParameter(True, _SIMMIM + ": NORM_TARGET, patch 47"),
            "norm_target_patch_size": HyperParameter(47, _SIMMIM),
        },
        backbone={
            "image_size": HyperParameter(192, _SIMMIM + ": 192x192 RandomResizedCrop(0.67-1)"),
            "window_size": HyperParameter(12, _SIMMIM),
            "pretrained_window_sizes": HyperParameter([0, 0, 0, 0], _SIMMIM),
        },
        demo={
            "per_device_train_batch_size": 16,
            "learning_rate": 1e-3,
            "min_learning_rate": 1e-4,
            "lr_schedule": "cosine",
            "num_warmup_steps": 10,
            "max_train_steps": 120,
            "max_grad_norm": 5.0,
            "num_samples": 256,
            "config": {"norm_target": False},
        },
        lr_reference_batch=512,
        synthetic_seed=11,
        eval_kind="images",
        headline_metric="masked_loss",
        baseline=False,
    ),
    "geometric": StageSpec(
        name="geometric",
        model_class=MeSaForSelfSupervisedDepth,
        dataset_kind="video",
        training_transform=video_training_transform,
        objective="self-supervised depth from video (Monodepth2 photometric reprojection, auto-masking, smoothness)",
        training={
            "total_train_batch_size": HyperParameter(12, _MONODEPTH2 + ": batch_size 12 on one GPU"),
            "per_device_train_batch_size": HyperParameter(12, _MONODEPTH2),
            "learning_rate": HyperParameter(1e-4, _MONODEPTH2 + ": Adam"),
            "min_learning_rate": HyperParameter(1e-5, _MONODEPTH2 + ": StepLR(15, x0.1), here cosine to 1e-5"),
            "lr_schedule": HyperParameter("cosine", _MONODEPTH2 + ": step decay, here cosine"),
            "weight_decay": HyperParameter(0.0, _MONODEPTH2 + ": Adam without weight decay"),
            "layer_decay": HyperParameter(None, _MONODEPTH2),
            "num_train_epochs": HyperParameter(20, _MONODEPTH2),
            "max_grad_norm": HyperParameter(None, _MONODEPTH2),
        },
        config={
            "frame_offsets": HyperParameter([-1, 1], _MONODEPTH2 + ": frames [0, -1, 1]"),
            "ssim_weight": HyperParameter(0.85, _MONODEPTH2),
            "smoothness_weight": HyperParameter(1e-3, _MONODEPTH2 + ": disparity_smoothness"),
            "num_scales": HyperParameter(4, _MONODEPTH2 + ": scales [0, 1, 2, 3]"),
            "disp_min_depth": HyperParameter(0.1, _INDOOR + ": min/max depth 0.1 / 10 m"),
            "disp_max_depth": HyperParameter(10.0, _INDOOR),
            "pose_translation_scale": HyperParameter(0.1, _PROTOTYPE + ": Monodepth2's 0.01 stays near zero indoors"),
            "depth_scale_search": HyperParameter(False, _MONODEPTH2 + ": no per-image scale search"),
        },
        backbone={
            "image_size": HyperParameter([288, 384], _INDOOR + ": frames resized to 288x384"),
            "window_size": HyperParameter(12, "SimMIM pre-training window"),
            "pretrained_window_sizes": HyperParameter([12, 12, 12, 6], _MIM_DEPTH),
        },
        demo={
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "min_learning_rate": 1e-4,
            "lr_schedule": "cosine",
            "num_warmup_steps": 10,
            "max_train_steps": 240,
            "num_samples": 160,
            # frames [0, -3, +3]: about 5 px of parallax at the median depth (3 px of rotation), where [0, -1, +1]
            # gives 1.7 px, below what the photometric loss resolves (docs/recipes.md, demo departures)
            # with metric dataset poses, the loss searches each image's depth scale first (docs/recipes.md)
            "config": {"pose_source": "dataset", "num_scales": 2, "frame_offsets": [-3, 3], "depth_scale_search": True},
        },
        synthetic_seed=12,
        headline_metric="median_scaled_abs_rel",
        # the stage learns depth up to scale: its metric numbers mean little
        eval_metrics=("abs_rel", "rmse", "d1", "median_scaled_abs_rel", "median_scaled_rmse", "median_scaled_d1"),
        synthetic_options=("frame_offsets",),
        card_note="poses from the {config.pose_source}",
        baseline=False,
    ),
    "supervised": StageSpec(
        name="supervised",
        model_class=MeSaForDepthEstimation,
        dataset_kind="depth",
        training_transform=depth_training_transform,
        objective="supervised depth regression (SiLog, lambda 0.5)",
        training=dict(_MIM_DEPTH_TRAINING),
        config={"silog_lambda": HyperParameter(0.5, _MIM_DEPTH + ": SiLogLoss")},
        backbone=dict(_MIM_DEPTH_BACKBONE),
        demo={
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-3,
            "min_learning_rate": 3e-5,
            "lr_schedule": "mim_depth",
            "max_train_steps": 500,
            "num_samples": 512,
        },
        synthetic_seed=13,
    ),
    "finetune": StageSpec(
        name="finetune",
        model_class=MeSaForDepthEstimation,
        dataset_kind="depth",
        training_transform=depth_training_transform,
        objective="fine-tuning on the target set (SiLog, lambda 0.5)",
        training=dict(_MIM_DEPTH_TRAINING),
        config={"silog_lambda": HyperParameter(0.5, _MIM_DEPTH + ": SiLogLoss")},
        backbone=dict(_MIM_DEPTH_BACKBONE),
        demo={
            "per_device_train_batch_size": 8,
            "learning_rate": 5e-4,
            "min_learning_rate": 3e-5,
            "lr_schedule": "mim_depth",
            "max_train_steps": 300,
            "num_samples": 384,
        },
        synthetic_seed=14,
    ),
}


# The frozen-encoder probe (Probe3D-style, El Banani et al. 2024): what a pre-training put into the encoder before
# fine-tuning changes it. The encoder is frozen; the same small depth head (the decoder without its image branch,
# drawn anew) trains for a fixed budget on the fine-tuning data and is scored on the held-out views.
PROBE = StageSpec(
    name="probe",
    model_class=MeSaForDepthEstimation,
    dataset_kind="depth",
    training_transform=depth_training_transform,
    objective="frozen-encoder depth probe (SiLog on a new depth head; encoder frozen)",
    training=dict(_MIM_DEPTH_TRAINING),
    config={
        "silog_lambda": HyperParameter(0.5, _MIM_DEPTH + ": SiLogLoss"),
        "decoder_image_branch": HyperParameter(False, "probe: depth from the encoder's features alone"),
    },
    backbone=dict(_MIM_DEPTH_BACKBONE),
    demo={
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "min_learning_rate": 3e-5,
        "lr_schedule": "mim_depth",
        "max_train_steps": 100,
        "num_samples": 384,
    },
    synthetic_seed=14,  # the fine-tuning world
    baseline=False,
    frozen=("backbone",),
    reinitialized=("decoder", "depth_head"),
)

# Modules (`runner.module_names` of the keys) that transformers reports as newly initialised / not used when a
# stage loads the previous stage's folder: expected, so logged as one line each. Anything else is shown in full.
EXPECTED_LOADING_MESSAGES: dict[tuple[str, str], dict[str, list[str]]] = {
    ("masked", "geometric"): {
        "newly_initialized": ["decoder", "depth_head", "pose_network", "scale_heads"],  # pose_network: 'network'
        "unused": ["backbone.embeddings.mask_token", "mim_decoder"],
    },
    ("geometric", "supervised"): {"newly_initialized": [], "unused": ["pose_network", "scale_heads"]},
    ("masked", "supervised"): {
        "newly_initialized": ["decoder", "depth_head"],
        "unused": ["backbone.embeddings.mask_token", "mim_decoder"],
    },
    ("supervised", "finetune"): {"newly_initialized": [], "unused": []},
    # the ablation's variants fine-tune straight after masked-only or geometric-only pre-training
    ("masked", "finetune"): {
        "newly_initialized": ["decoder", "depth_head"],
        "unused": ["backbone.embeddings.mask_token", "mim_decoder"],
    },
    ("geometric", "finetune"): {"newly_initialized": [], "unused": ["pose_network", "scale_heads"]},
}
# the probe starts from any pre-training's folder (None: the ablation's random initial weights); its head is drawn
# anew and has no image branch, so a decoder's weights may be left unused
_PROBE_UNUSED = ["backbone.embeddings.mask_token", "decoder", "mim_decoder", "pose_network", "scale_heads"]
for _previous in (None, *PRETRAINING_ORDER, "finetune"):
    EXPECTED_LOADING_MESSAGES[(_previous, PROBE.name)] = {
        "newly_initialized": ["decoder", "depth_head"],
        "unused": _PROBE_UNUSED,
    }


def get_stage(stage: str | StageSpec) -> StageSpec:
    """The `StageSpec` of `stage`: a registered name (``masked``, ``geometric``, ``supervised``, ``finetune``), or
    a spec (returned as it is). Public entry points call this once; the spec then travels."""
    if isinstance(stage, StageSpec):
        return stage
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return STAGES[stage]


def default_layer_decay(config: MeSaConfig) -> float:
    """MIM-Depth's layer decay: 0.85 for the large encoder (embed dim >= 192), 0.9 otherwise."""
    return 0.85 if config.backbone_config.embed_dim >= 192 else 0.9


def hyperparameter_table(recipe: str = "paper") -> list[dict[str, Any]]:
    """Every stage's defaults as rows (stage, group, name, value, source) for documentation and reports."""
    rows = []
    for spec in STAGES.values():
        for group in ("training", "config", "backbone"):
            for name, hp in getattr(spec, group).items():
                rows.append({"stage": spec.name, "group": group, "name": name, "value": hp.value, "source": hp.source})
        if recipe == "demo":
            for name, value in spec.demo.items():
                rows.append({"stage": spec.name, "group": "demo", "name": name, "value": value, "source": _PROTOTYPE})
    return rows


# ---------------------------------------------------------------------------------------------- the resolver


@dataclass
class ResolvedRecipe:
    """A stage's recipe resolved for this launch (printed at start-up, stored in ``stage_results.json``).

    ``total_train_batch_size = num_processes x per_device_train_batch_size x gradient_accumulation_steps``;
    warm-up and total length are optimizer updates; ``updates_per_epoch`` counts the batches one process draws
    per epoch (Accelerate's sharding, ``dataloader_drop_last``), divided by the accumulation.
    """

    stage: str
    recipe: str
    num_processes: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    total_train_batch_size: int
    paper_total_train_batch_size: int | None
    learning_rate: float
    min_learning_rate: float
    learning_rate_rule: str
    num_warmup_steps: int
    warmup_epochs: float | None
    updates_per_epoch: int | None
    total_updates: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line: processes x batch x accumulation = total, learning rate (rule), warm-up and total updates."""
        warmup = f"{self.num_warmup_steps} warm-up updates"
        if self.warmup_epochs:
            warmup += f" ({self.warmup_epochs:g} epochs x {self.updates_per_epoch})"
        total = f"{self.total_updates} updates" if self.total_updates is not None else "length from the data"
        paper = (
            f" (paper: {self.paper_total_train_batch_size})"
            if self.paper_total_train_batch_size not in (None, self.total_train_batch_size)
            else ""
        )
        return (
            f"{self.stage} recipe ({self.recipe}): {self.num_processes} process(es) "
            f"x {self.per_device_train_batch_size} "
            f"per device x {self.gradient_accumulation_steps} accumulation = total batch "
            f"{self.total_train_batch_size}{paper}; learning rate {self.learning_rate:.3g} "
            f"({self.learning_rate_rule}), "
            f"floor {self.min_learning_rate:.3g}; {warmup}; {total}"
        )


def updates_per_epoch(
    num_samples: int, per_device_batch: int, num_processes: int, accumulation: int, drop_last: bool = True
) -> int:
    """Optimizer updates per epoch of `num_samples` rows as Accelerate shards them: each process draws every
    `num_processes`-th batch of `per_device_batch` (``BatchSamplerShard``), a last partial accumulation updates."""
    batches = num_samples // per_device_batch if drop_last else math.ceil(num_samples / per_device_batch)
    per_process = batches // num_processes if drop_last else math.ceil(batches / num_processes)
    return math.ceil(per_process / accumulation)


def _batch_layout(
    stage: str,
    num_processes: int,
    recipe_batch: int,
    paper_total: int | None,
    per_device: int | None,
    accumulation: int | None,
    total: int | None,
) -> tuple[int, int]:
    """(per-device batch, accumulation) for the given processes; see `resolve_recipe`."""
    target = total or (paper_total if not (per_device and accumulation) else None)
    if target is None:
        return per_device or recipe_batch, accumulation or 1
    if per_device is None:
        per_device = max(1, min(recipe_batch, target // num_processes))
    if accumulation is None:
        accumulation = max(1, round(target / (num_processes * per_device)))
    if total is not None and num_processes * per_device * accumulation != total:
        raise ValueError(
            f"{stage}: total batch {total} is not {num_processes} processes x per-device batch {per_device} x "
            f"accumulation {accumulation}; choose a total batch that is a multiple of processes x per-device batch"
        )
    return per_device, accumulation


def resolve_recipe(
    stage: str | StageSpec,
    output_dir: str | os.PathLike,
    recipe: str = "paper",
    *,
    config: MeSaConfig | None = None,
    num_train_samples: int | None = None,
    num_processes: int = 1,
    total_train_batch_size: int | None = None,
    **overrides: Any,
) -> tuple[MeSaTrainingArguments, ResolvedRecipe]:
    """A stage's `MeSaTrainingArguments` for `num_processes` processes, and what was resolved.

    The batch: explicit ``per_device_train_batch_size`` and ``gradient_accumulation_steps`` are kept; with the
    paper recipe the missing ones are chosen to reach the paper's total batch (or `total_train_batch_size` when
    given: then it must equal processes x per-device batch x accumulation). The per-device batch defaults to
    ``min(recipe per-device batch, total / processes)``, the accumulation to ``round(total / (processes x
    per-device))``. The demo recipe keeps its per-device batch (accumulation 1) unless told otherwise.

    The learning rate: an explicit ``learning_rate`` is kept; else SimMIM stages scale linearly
    (``base_lr x total / lr_reference_batch``, the floor likewise), other stages keep the paper's value.
    Warm-up: ``warmup_epochs x updates_per_epoch`` from `num_train_samples` (an explicit ``num_warmup_steps``
    wins). `overrides` are `MeSaTrainingArguments` fields (None values ignored).
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if total_train_batch_size is not None and total_train_batch_size < 1:
        raise ValueError(f"total_train_batch_size must be >= 1, got {total_train_batch_size}")
    spec = get_stage(stage)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    values = {name: hp.value for name, hp in spec.training.items()}
    paper_total = values.pop("total_train_batch_size", None)
    warmup_epochs = values.pop("warmup_epochs", None)
    scaling = spec.lr_reference_batch
    if recipe == "demo":
        argument_names = {f.name for f in fields(MeSaTrainingArguments)}
        values.update({k: v for k, v in spec.demo.items() if k in argument_names})  # the rest describes the data
        paper_total, warmup_epochs, scaling = None, None, None
    per_device, accumulation = _batch_layout(
        spec.name,
        num_processes,
        values["per_device_train_batch_size"],
        paper_total,
        overrides.pop("per_device_train_batch_size", None),
        overrides.pop("gradient_accumulation_steps", None),
        total_train_batch_size,
    )
    total = num_processes * per_device * accumulation
    values.update(per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation)
    if "learning_rate" in overrides:
        rule = "as given"
    elif scaling:
        rule = f"linear: base {values['learning_rate']:.3g} x {total} / {scaling}"
        values["learning_rate"] = values["learning_rate"] * total / scaling
        values["min_learning_rate"] = values["min_learning_rate"] * total / scaling
    else:
        rule = "fixed (the paper's value for its total batch)" if recipe == "paper" else "fixed (demo recipe)"
    drop_last = overrides.get("dataloader_drop_last", True)
    per_epoch = (
        updates_per_epoch(num_train_samples, per_device, num_processes, accumulation, drop_last)
        if num_train_samples
        else None
    )
    if warmup_epochs and per_epoch and "num_warmup_steps" not in overrides:
        values["num_warmup_steps"] = int(warmup_epochs * per_epoch)
    if config is not None and values.get("layer_decay") is not None:
        values["layer_decay"] = default_layer_decay(config)
    values.update(overrides)
    values["final_subdir"] = ""  # the stage folder itself is the checkpoint the next stage loads
    args = MeSaTrainingArguments(output_dir=str(output_dir), **values)
    total_updates = args.max_train_steps or (args.num_train_epochs * per_epoch if per_epoch else None)
    resolved = ResolvedRecipe(
        stage=spec.name,
        recipe=recipe,
        num_processes=num_processes,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        total_train_batch_size=total,
        paper_total_train_batch_size=paper_total,
        learning_rate=args.learning_rate,
        min_learning_rate=args.min_learning_rate,
        learning_rate_rule=rule,
        num_warmup_steps=args.num_warmup_steps,
        warmup_epochs=warmup_epochs if args.num_warmup_steps and "num_warmup_steps" not in overrides else None,
        updates_per_epoch=per_epoch,
        total_updates=total_updates,
    )
    return args, resolved


def training_arguments(
    stage: str | StageSpec,
    output_dir: str | os.PathLike,
    recipe: str = "paper",
    config: MeSaConfig | None = None,
    num_train_samples: int | None = None,
    **overrides: Any,
) -> MeSaTrainingArguments:
    """`MeSaTrainingArguments` of a stage's recipe on one process (`resolve_recipe` without the report)."""
    return resolve_recipe(stage, output_dir, recipe, config=config, num_train_samples=num_train_samples, **overrides)[0]


__all__ = [
    "DEMO_EVAL_SAMPLES",
    "EXPECTED_LOADING_MESSAGES",
    "HELDOUT_SEED",
    "PRETRAINING_ORDER",
    "PROBE",
    "RECIPES",
    "STAGES",
    "HyperParameter",
    "ResolvedRecipe",
    "StageSpec",
    "default_layer_decay",
    "get_stage",
    "hyperparameter_table",
    "resolve_recipe",
    "training_arguments",
    "updates_per_epoch",
]

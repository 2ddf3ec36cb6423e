"""The one registry of MeSa training stages and `run_stage`, which trains one stage end to end.

A stage is (model class, dataset kind, transform, collator, default hyper-parameters with their sources):

============  ==============================  ============  ==============================================
stage         model class                     data kind     objective
============  ==============================  ============  ==============================================
masked        MeSaForMaskedImageModeling      images        SimMIM: L1 on masked pixels
geometric     MeSaForSelfSupervisedDepth      video         Monodepth2: photometric reprojection + smoothness
supervised    MeSaForDepthEstimation          depth         SiLog on RGB-D data
finetune      MeSaForDepthEstimation          depth         SiLog on the target set (NYUv2: MIM-Depth recipe)
============  ==============================  ============  ==============================================

Each stage folder written by `run_stage` is a complete ``save_pretrained`` checkpoint (weights, config with the
``mesa_stages`` record of every stage so far, image processor, ``README.md`` model card, ``stage_results.json``)
plus ``checkpoints/`` with the resumable training state. The next stage calls
``NextClass.from_pretrained(previous_stage_dir)``: the encoder (and the depth decoder/head where both stages have
one) carry over, the new stage's own heads are initialised. The expected loading messages
(`EXPECTED_LOADING_MESSAGES`) are:

- masked -> geometric: newly initialised ``decoder.*``, ``depth_head.*``, ``scale_heads.*`` (and
  ``pose_network.*`` with ``pose_source="network"``); unused ``mim_decoder.*``, ``backbone.embeddings.mask_token``.
- geometric -> supervised: unused ``scale_heads.*`` (and ``pose_network.*``); nothing new.
- masked -> supervised (geometric skipped): new ``decoder.*``, ``depth_head.*``; unused ``mim_decoder.*``,
  ``backbone.embeddings.mask_token``.
- supervised -> finetune: nothing new, nothing unused.

Two recipes: ``"paper"`` (the published hyper-parameters of SimMIM, Monodepth2 and MIM-Depth, for real data and
GPUs) and ``"demo"`` (the offline synthetic-world run on 2 CPU cores with the ``demo`` preset at 96x128).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configuration_mesa import PRESETS, MeSaConfig
from ..data.specs import load_dataset_spec
from ..image_processing_mesa import MeSaImageProcessor
from ..modeling_mesa import (
    MeSaForDepthEstimation,
    MeSaForMaskedImageModeling,
    MeSaForSelfSupervisedDepth,
    MeSaPreTrainedModel,
)
from .arguments import MeSaTrainingArguments
from .loop import TrainingResult, train
from .stage_eval import (
    evaluate_constant_map,
    evaluate_depth,
    evaluate_masked,
    frozen_rows,
    mean_depth_map,
)

logger = logging.getLogger(__name__)

PRETRAINING_ORDER = ("masked", "geometric", "supervised")
STAGE_RESULTS_NAME = "stage_results.json"
RECIPES = ("paper", "demo")


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
        transform_stage: the `mesa_hf.data.transforms.build_transform` stage of the training rows.
        objective: one line for the model card.
        training: `MeSaTrainingArguments` defaults of the paper recipe (plus ``warmup_epochs``).
        config: `MeSaConfig` fields set when the stage starts.
        backbone: Swin-V2 fields of the paper recipe (input size, window).
        demo: the synthetic-world CPU recipe: training-argument overrides, ``num_samples``, ``image_size``.
        synthetic_seed: seed of the stage's synthetic training world (held-out scenes use other seeds).
    """

    name: str
    model_class: type[MeSaPreTrainedModel]
    dataset_kind: str
    transform_stage: str
    objective: str
    training: dict[str, HyperParameter]
    config: dict[str, HyperParameter] = field(default_factory=dict)
    backbone: dict[str, HyperParameter] = field(default_factory=dict)
    demo: dict[str, Any] = field(default_factory=dict)
    synthetic_seed: int = 0


_SIMMIM = "SimMIM Swin-V2 config (microsoft/Swin-Transformer configs/simmim/*swinv2*_img192_window12_800ep)"
_MONODEPTH2 = "Monodepth2 (nianticlabs/monodepth2 options.py)"
_INDOOR = "indoor self-supervised protocol (P2Net / StructDepth on NYUv2 raw video)"
_MIM_DEPTH = "MIM-Depth-Estimation NYUv2 recipe (SwinV2-B; L: layer decay 0.85)"
_PROTOTYPE = "docs/design.md §6 (CPU prototype)"

_MIM_DEPTH_TRAINING = {
    "per_device_train_batch_size": HyperParameter(24, _MIM_DEPTH),
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
        transform_stage="masked",
        objective="SimMIM masked image modelling (L1 on masked pixels)",
        training={
            "per_device_train_batch_size": HyperParameter(128, _SIMMIM + ": 128 per GPU x 16 GPUs = 2048"),
            "learning_rate": HyperParameter(4e-4, _SIMMIM + ": base lr 1e-4 x total batch 2048 / 512"),
            "min_learning_rate": HyperParameter(5e-6, _SIMMIM + ": MIN_LR"),
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
        synthetic_seed=11,
    ),
    "geometric": StageSpec(
        name="geometric",
        model_class=MeSaForSelfSupervisedDepth,
        dataset_kind="video",
        transform_stage="geometric",
        objective="self-supervised depth from video (Monodepth2 photometric reprojection, auto-masking, smoothness)",
        training={
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
        },
        backbone={
            "image_size": HyperParameter([288, 384], _INDOOR + ": frames resized to 288x384"),
            "window_size": HyperParameter(12, "SimMIM pre-training window"),
            "pretrained_window_sizes": HyperParameter([12, 12, 12, 6], _MIM_DEPTH),
        },
        demo={
            "per_device_train_batch_size": 4,
            "learning_rate": 5e-4,
            "min_learning_rate": 5e-5,
            "lr_schedule": "cosine",
            "num_warmup_steps": 10,
            "max_train_steps": 120,
            "num_samples": 160,
            "config": {"pose_source": "dataset", "num_scales": 2},
        },
        synthetic_seed=12,
    ),
    "supervised": StageSpec(
        name="supervised",
        model_class=MeSaForDepthEstimation,
        dataset_kind="depth",
        transform_stage="supervised",
        objective="supervised depth regression (SiLog, lambda 0.5)",
        training=dict(_MIM_DEPTH_TRAINING),
        config={"silog_lambda": HyperParameter(0.5, _MIM_DEPTH + ": SiLogLoss")},
        backbone=dict(_MIM_DEPTH_BACKBONE),
        demo={
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-3,
            "min_learning_rate": 3e-5,
            "lr_schedule": "mim_depth",
            "max_train_steps": 350,
            "num_samples": 512,
        },
        synthetic_seed=13,
    ),
    "finetune": StageSpec(
        name="finetune",
        model_class=MeSaForDepthEstimation,
        dataset_kind="depth",
        transform_stage="supervised",
        objective="fine-tuning on the target set (SiLog, lambda 0.5)",
        training=dict(_MIM_DEPTH_TRAINING),
        config={"silog_lambda": HyperParameter(0.5, _MIM_DEPTH + ": SiLogLoss")},
        backbone=dict(_MIM_DEPTH_BACKBONE),
        demo={
            "per_device_train_batch_size": 8,
            "learning_rate": 5e-4,
            "min_learning_rate": 3e-5,
            "lr_schedule": "mim_depth",
            "max_train_steps": 250,
            "num_samples": 384,
        },
        synthetic_seed=14,
    ),
}

# Held-out synthetic scenes for every stage's evaluation (rooms never seen in training).
HELDOUT_SEED = 1000
DEMO_EVAL_SAMPLES = 48

EXPECTED_LOADING_MESSAGES: dict[tuple[str, str], dict[str, list[str]]] = {
    ("masked", "geometric"): {
        "newly_initialized": ["decoder", "depth_head", "scale_heads", "pose_network (pose_source='network' only)"],
        "unused": ["mim_decoder", "backbone.embeddings.mask_token"],
    },
    ("geometric", "supervised"): {"newly_initialized": [], "unused": ["scale_heads", "pose_network (if any)"]},
    ("masked", "supervised"): {
        "newly_initialized": ["decoder", "depth_head"],
        "unused": ["mim_decoder", "backbone.embeddings.mask_token"],
    },
    ("supervised", "finetune"): {"newly_initialized": [], "unused": []},
}


def get_stage(name: str) -> StageSpec:
    """The registered stage `name` (``masked``, ``geometric``, ``supervised``, ``finetune``)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    return STAGES[name]


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


def training_arguments(
    stage: str,
    output_dir: str | os.PathLike,
    recipe: str = "paper",
    config: MeSaConfig | None = None,
    num_train_samples: int | None = None,
    **overrides: Any,
) -> MeSaTrainingArguments:
    """`MeSaTrainingArguments` of a stage's recipe; `overrides` (None values ignored) win over the recipe.

    With the paper recipe, ``warmup_epochs`` becomes ``num_warmup_steps`` from `num_train_samples`, and the layer
    decay follows `default_layer_decay(config)` where the stage uses one.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    spec = get_stage(stage)
    values = {name: hp.value for name, hp in spec.training.items()}
    warmup_epochs = values.pop("warmup_epochs", None)
    if recipe == "demo":
        values.update({k: v for k, v in spec.demo.items() if k not in ("num_samples", "config", "image_size")})
    elif warmup_epochs and num_train_samples:
        batch = overrides.get("per_device_train_batch_size") or values["per_device_train_batch_size"]
        values["num_warmup_steps"] = warmup_epochs * max(num_train_samples // batch, 1)
    if config is not None and values.get("layer_decay") is not None:
        values["layer_decay"] = default_layer_decay(config)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["final_subdir"] = ""  # the stage folder itself is the checkpoint the next stage loads
    return MeSaTrainingArguments(output_dir=str(output_dir), **values)


# ---------------------------------------------------------------------------------------------- data


def stack_collator(rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Collate transformed rows (dicts of tensors) into a batch: every key present in all rows, stacked."""
    if not rows:
        raise ValueError("stack_collator: empty batch")
    keys = [k for k in rows[0] if all(k in r and r[k] is not None for r in rows)]
    batch = {}
    for key in keys:
        values = [r[key] for r in rows]
        if not isinstance(values[0], torch.Tensor):
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(f"stack_collator: rows of `{key}` differ in shape {sorted(shapes)}; crop or resize them")
        batch[key] = torch.stack(values)
    return batch


class SeededTransformDataset(torch.utils.data.Dataset):
    """Rows of a raw dataset through a random training transform whose randomness depends only on
    (seed, epoch, row index), not on the order rows are drawn in.

    A resumed run (whose skipped batches are never drawn), DataLoader workers and an uninterrupted run therefore
    see the same augmentations, CutDepth's choice of rows included. The training
    loop calls `set_epoch` at the start of every epoch.
    """

    def __init__(self, dataset, transform, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        row = self.dataset[index]
        self.transform.rng = np.random.default_rng([self.seed, self.epoch, index])
        out = self.transform({key: [value] for key, value in row.items()})
        return {key: values[0] for key, values in out.items()}


def synthetic_dataset(kind: str, num_samples: int, image_size: Sequence[int], seed: int, cache_dir=None, **kwargs):
    """A synthetic-world dataset of `kind` (``images``, ``video``, ``depth``) rendered at `image_size` (H, W)."""
    from ..data.synthetic import synthetic_depth_dataset, synthetic_image_dataset, synthetic_video_dataset

    height, width = (int(s) for s in image_size)
    builders = {"images": synthetic_image_dataset, "video": synthetic_video_dataset, "depth": synthetic_depth_dataset}
    if kind not in builders:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(builders)}")
    return builders[kind](num_samples, height=height, width=width, seed=seed, cache_dir=cache_dir, **kwargs)


def image_size_of(config: MeSaConfig) -> tuple[int, int]:
    """The backbone's build-time input size (H, W)."""
    size = config.backbone_config.image_size
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def build_stage_transform(
    stage: str, config: MeSaConfig, image_size: Sequence[int], seed: int | None = None, **options: Any
):
    """The training transform of `stage` for crops/frames of `image_size` (H, W); `options` go to the transform
    class (e.g. ``jitter=False``, ``cutdepth_prob=0.0``)."""
    from ..data.transforms import build_transform

    spec = get_stage(stage)
    height, width = (int(s) for s in image_size)
    if spec.transform_stage == "masked":
        multiple = max(config.mask_patch_size, config.encoder_stride)
        side = min(height, width) // multiple * multiple
        if side < multiple:
            raise ValueError(f"image_size {image_size} is smaller than one mask patch ({multiple} px)")
        return build_transform(
            "masked",
            input_size=side,
            mask_patch_size=config.mask_patch_size,
            model_patch_size=config.patch_size,
            mask_ratio=config.mask_ratio,
            seed=seed,
            **options,
        )
    if spec.transform_stage == "geometric":
        return build_transform("geometric", size=(height, width), seed=seed, **options)
    return build_transform("supervised", crop_size=(height, width), max_depth=config.max_depth, seed=seed, **options)


def build_eval_transform(kind: str, config: MeSaConfig, image_size: Sequence[int], seed: int = 0):
    """The transform of a held-out set: depth rows as they are (full resolution, no crop; the model pads to its
    stride), or SimMIM rows with fixed masks at `image_size`."""
    from ..data.transforms import build_transform

    if kind == "images":
        return build_stage_transform("masked", config, image_size, seed=seed)
    return build_transform("eval")


# ---------------------------------------------------------------------------------------------- models


def _module_names(keys: Sequence[str]) -> list[str]:
    """Collapse parameter names to their modules (``decoder.conv_layers.0.weight`` -> ``decoder``), sorted."""
    names = set()
    for key in keys:
        parts = key.split(".")
        names.add(".".join(parts[:3]) if parts[0] == "backbone" else parts[0])
    return sorted(names)


def load_stage_model(
    stage: str,
    model_name_or_path: str | os.PathLike | MeSaPreTrainedModel,
    config_overrides: dict[str, Any] | None = None,
    backbone_overrides: dict[str, Any] | None = None,
) -> tuple[MeSaPreTrainedModel, dict[str, list[str]]]:
    """The stage's model: from a preset name (new weights), a previous stage's folder or Hub id (carried weights),
    or an existing model instance (its weights, the stage's class).

    Returns the model and its loading info: ``newly_initialized`` and ``unused`` module names (empty for a preset).
    """
    spec = get_stage(stage)
    config_overrides = dict(config_overrides or {})
    if isinstance(model_name_or_path, MeSaPreTrainedModel):
        config = copy.deepcopy(model_name_or_path.config)
        for key, value in config_overrides.items():
            setattr(config, key, value)
        _apply_backbone_overrides(config, backbone_overrides)
        model = spec.model_class(config)
        result = model.load_state_dict(model_name_or_path.state_dict(), strict=False)
        info = {
            "newly_initialized": _module_names(result.missing_keys),
            "unused": _module_names(result.unexpected_keys),
        }
        return model, info
    name = str(model_name_or_path)
    if name in PRESETS:
        config = MeSaConfig.from_preset(name, backbone_overrides=backbone_overrides, **config_overrides)
        config.mesa_stages = []
        return spec.model_class(config), {"newly_initialized": [], "unused": [], "from_preset": [name]}
    if not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in name:
        raise ValueError(
            f"model_name_or_path {name!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor an existing folder"
        )
    config = MeSaConfig.from_pretrained(name)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    _apply_backbone_overrides(config, backbone_overrides)
    config.validate()
    model, loading = spec.model_class.from_pretrained(name, config=config, output_loading_info=True)
    info = {
        "newly_initialized": _module_names(loading.get("missing_keys", [])),
        "unused": _module_names(loading.get("unexpected_keys", [])),
    }
    mismatched = loading.get("mismatched_keys") or []
    if mismatched:
        raise ValueError(f"{name}: weights with mismatched shapes for {stage}: {mismatched}")
    return model, info


DEPTH_MODULES = ("decoder", "depth_head", "scale_heads")


def _reset_new_convolutions(model: torch.nn.Module, loading_info: dict[str, list[str]]) -> list[str]:
    """Give the newly initialised depth decoder/head convolutions PyTorch's default (Kaiming-uniform) init instead
    of MIM-Depth's N(0, 1e-3). Measured on the demo preset (16 synthetic views, 200 steps, lr 1e-3): SiLog 0.17-0.19
    instead of 0.25-0.37, training AbsRel 0.23 instead of 0.34. Returns the module names reset."""
    new = set(loading_info.get("newly_initialized") or [])
    if loading_info.get("from_preset"):
        new = {name for name, _ in model.named_children()}
    names = [name for name in DEPTH_MODULES if name in new and hasattr(model, name)]
    for name in names:
        for module in getattr(model, name).modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.reset_parameters()
    return names


def _apply_backbone_overrides(config: MeSaConfig, backbone_overrides: dict[str, Any] | None) -> None:
    for key, value in (backbone_overrides or {}).items():
        setattr(config.backbone_config, key, value)


# ---------------------------------------------------------------------------------------------- run_stage


@dataclass
class StageResult:
    """What `run_stage` returns (also written to ``<output_dir>/stage_results.json``)."""

    stage: str
    output_dir: str
    global_step: int
    first_loss: float | None
    last_loss: float | None
    loss_curve: list[float]
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    loading_info: dict[str, list[str]] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _loss_summary(losses: list[float], points: int = 8) -> list[float]:
    """The loss curve as `points` window means (for logs and the results file)."""
    if not losses:
        return []
    size = max(len(losses) // points, 1)
    return [round(sum(losses[i : i + size]) / len(losses[i : i + size]), 5) for i in range(0, len(losses), size)]


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _eval_function(stage: str, eval_rows, median_scaling: bool):
    spec = get_stage(stage)
    if spec.dataset_kind == "images":
        return lambda model: evaluate_masked(model, eval_rows)
    if stage == "geometric":

        def geometric_eval(model):
            scaled = evaluate_depth(model, eval_rows, median_scaling=True)
            metric = evaluate_depth(model, eval_rows, median_scaling=False)
            return {
                **{f"median_scaled_{k}": v for k, v in scaled.items() if k in ("abs_rel", "rmse", "d1")},
                **{k: v for k, v in metric.items() if k in ("abs_rel", "rmse", "d1")},
            }

        return geometric_eval

    def depth_eval(model):
        metric = evaluate_depth(model, eval_rows, median_scaling=False)
        scaled = evaluate_depth(model, eval_rows, median_scaling=True)
        return {**metric, **{f"median_scaled_{k}": v for k, v in scaled.items() if k in ("abs_rel", "rmse", "d1")}}

    return depth_eval


def _stage_complete(output_dir: Path, stage: str) -> bool:
    path = output_dir / STAGE_RESULTS_NAME
    if not (path.is_file() and (output_dir / "config.json").is_file()):
        return False
    try:
        return json.loads(path.read_text()).get("stage") == stage
    except json.JSONDecodeError:
        return False


def run_stage(
    stage: str,
    model_name_or_path: str | os.PathLike | MeSaPreTrainedModel,
    dataset=None,
    args: MeSaTrainingArguments | None = None,
    *,
    output_dir: str | os.PathLike | None = None,
    recipe: str | None = None,
    eval_dataset=None,
    image_size: Sequence[int] | None = None,
    config_overrides: dict[str, Any] | None = None,
    backbone_overrides: dict[str, Any] | None = None,
    data_description: str | None = None,
    num_synthetic_samples: int | None = None,
    num_eval_samples: int | None = None,
    compute_baseline: bool = True,
    model_id: str | None = None,
    cache_dir: str | None = None,
    skip_if_complete: bool = False,
    transform_options: dict[str, Any] | None = None,
    **training_overrides: Any,
) -> StageResult:
    """Train one stage and write a complete checkpoint folder.

    Args:
        stage: ``masked``, ``geometric``, ``supervised`` or ``finetune``.
        model_name_or_path: a preset name (new weights), a previous stage's folder / Hub id, or a model.
        dataset: the stage's raw dataset (kind `StageSpec.dataset_kind`); None = the synthetic world.
        args: full training arguments (``final_subdir`` is forced to ""); None = the recipe's defaults with
            `output_dir` and `training_overrides`.
        recipe: ``"paper"`` or ``"demo"``; default ``"demo"`` for synthetic data, else ``"paper"``.
        eval_dataset: a held-out raw dataset (depth kind; images kind for ``masked``); None with synthetic data =
            held-out synthetic scenes; None otherwise = no evaluation.
        image_size: training crop / frame size (H, W); default: the demo size for the demo recipe, else the
            backbone's ``image_size`` after `backbone_overrides`.
        config_overrides, backbone_overrides: MeSaConfig / Swin-V2 fields set on top of the stage's defaults.
        data_description: how the data is named in the model card.
        num_synthetic_samples, num_eval_samples: synthetic set sizes (defaults from the demo recipe).
        compute_baseline: for depth stages with an evaluation set, also evaluate the "average training depth map".
        model_id: name in the model card.
        cache_dir: datasets cache for the synthetic world.
        skip_if_complete: return the recorded result when `output_dir` already holds this stage's finished folder.
        transform_options: arguments of the training transform (e.g. ``{"jitter": False}``).
        training_overrides: `MeSaTrainingArguments` fields (None values ignored).

    Returns a `StageResult`; the folder holds weights, config (with ``mesa_stages``), processor, README.md and
    ``stage_results.json``.
    """
    spec = get_stage(stage)
    synthetic = dataset is None
    recipe = recipe or ("demo" if synthetic else "paper")
    if args is not None:
        output_dir = args.output_dir
    if output_dir is None:
        raise ValueError("run_stage: give args or output_dir")
    output_dir = Path(output_dir)
    if skip_if_complete and _stage_complete(output_dir, stage):
        recorded = json.loads((output_dir / STAGE_RESULTS_NAME).read_text())
        logger.info("%s: stage %s already complete, skipping", output_dir, stage)
        fields = {f.name for f in dataclasses.fields(StageResult)}
        return StageResult(**{**{k: v for k, v in recorded.items() if k in fields}, "skipped": True})

    # configuration of this stage: the stage's defaults, then the caller's overrides
    config_values = {name: hp.value for name, hp in spec.config.items()}
    backbone_values = {name: hp.value for name, hp in spec.backbone.items()} if recipe == "paper" else {}
    if recipe == "demo":
        config_values.update(spec.demo.get("config", {}))
    config_values.update(config_overrides or {})
    backbone_values.update(backbone_overrides or {})

    seed = args.seed if args is not None else training_overrides.get("seed", 42)
    from accelerate.utils import set_seed

    set_seed(seed)
    model, loading_info = load_stage_model(stage, model_name_or_path, config_values, backbone_values)
    config = model.config
    if recipe == "demo" and spec.demo.get("pytorch_init_new_convs", True):
        reset = _reset_new_convolutions(model, loading_info)
        if reset:
            logger.info("%s: new convolutions of %s use PyTorch's default init (demo recipe)", stage, ", ".join(reset))
    for key, group in (("newly_initialized", "newly initialised"), ("unused", "not used by this stage")):
        if loading_info.get(key):
            logger.warning("%s: %s weights: %s", stage, group, ", ".join(loading_info[key]))
    if image_size is None:
        image_size = image_size_of(config)
    image_size = tuple(int(s) for s in image_size)

    # data
    eval_seed = HELDOUT_SEED
    if synthetic:
        num = num_synthetic_samples or spec.demo.get("num_samples", 256)
        extra = {"frame_offsets": tuple(config.frame_offsets)} if spec.dataset_kind == "video" else {}
        dataset = synthetic_dataset(spec.dataset_kind, num, image_size, spec.synthetic_seed, cache_dir, **extra)
        data_description = (
            data_description or f"synthetic world ({num} {spec.dataset_kind} rows, {image_size[0]}x{image_size[1]})"
        )
        if eval_dataset is None:
            eval_kind = "images" if spec.dataset_kind == "images" else "depth"
            eval_dataset = synthetic_dataset(
                eval_kind, num_eval_samples or DEMO_EVAL_SAMPLES, image_size, eval_seed, cache_dir
            )
    if data_description is None:
        data_description = getattr(getattr(dataset, "info", None), "dataset_name", None) or "custom dataset"
    options = dict(spec.demo.get("transform", {})) if recipe == "demo" else {}
    options.update(transform_options or {})
    train_dataset = SeededTransformDataset(dataset, build_stage_transform(stage, config, image_size, **options), seed)

    if args is None:
        args = training_arguments(
            stage, output_dir, recipe, config=config, num_train_samples=len(dataset), **training_overrides
        )
    else:
        args = dataclasses.replace(args, final_subdir="")

    # evaluation on held-out data, before and during/after training
    eval_fn, eval_before, baseline = None, {}, {}
    if eval_dataset is not None:
        eval_kind = "images" if spec.dataset_kind == "images" else "depth"
        eval_rows = frozen_rows(eval_dataset, lambda: build_eval_transform(eval_kind, config, image_size, seed=0))
        eval_fn = _eval_function(stage, eval_rows, median_scaling=stage == "geometric")
        eval_before = eval_fn(model)
        logger.info("%s: held-out evaluation before training: %s", stage, _fmt(eval_before))
        if compute_baseline and spec.dataset_kind == "depth":
            try:
                baseline = average_depth_map_baseline(dataset, eval_rows, config)
            except ValueError as err:
                logger.warning("%s: no average-training-depth-map baseline: %s", stage, err)

    # the record of stages so far, in the config (saved with the weights) and the model card
    previous = [s for s in (getattr(config, "mesa_stages", None) or []) if isinstance(s, dict)]
    processor = MeSaImageProcessor(size={"height": image_size[0], "width": image_size[1]})
    result: TrainingResult = train(
        model, train_dataset, args, data_collator=stack_collator, eval_fn=eval_fn, processor=processor
    )
    eval_after = {k: v for k, v in (result.eval_history[-1] if result.eval_history else {}).items() if k != "step"}
    notes = []
    if stage == "geometric":
        notes.append(f"poses from the {config.pose_source}")
    if eval_after:
        key = (
            "masked_loss"
            if "masked_loss" in eval_after
            else ("median_scaled_abs_rel" if stage == "geometric" else "abs_rel")
        )
        notes.append(f"held-out {key} {eval_before.get(key, float('nan')):.4f} -> {eval_after[key]:.4f}")
    record = {
        "name": stage,
        "objective": spec.objective,
        "data": data_description,
        "steps": result.global_step,
        "notes": "; ".join(notes) or "-",
    }
    stages = previous + [record]
    stage_result = StageResult(
        stage=stage,
        output_dir=str(output_dir),
        global_step=result.global_step,
        first_loss=result.losses[0] if result.losses else None,
        last_loss=result.losses[-1] if result.losses else None,
        loss_curve=_loss_summary(result.losses),
        eval_before=eval_before,
        eval_after=eval_after,
        baseline=baseline,
        loading_info=loading_info,
        stages=stages,
        resumed_from=result.resumed_from,
    )
    if _is_main_process():
        _finish_stage_folder(output_dir, stages, stage_result, model, model_id, processor)
    logger.info("%s: loss %s; held-out after training: %s", stage, stage_result.loss_curve, _fmt(eval_after))
    return stage_result


def average_depth_map_baseline(train_dataset, eval_rows, config: MeSaConfig, max_rows: int = 1000) -> dict[str, float]:
    """Held-out metrics of the "average training depth map" (per-pixel mean of the training depth, up to `max_rows`
    evenly spaced rows), metric and median-scaled. Raises ValueError when training and held-out sizes differ."""
    if hasattr(train_dataset, "select") and len(train_dataset) > max_rows:
        step = len(train_dataset) / max_rows
        train_dataset = train_dataset.select([int(i * step) for i in range(max_rows)])
    train_rows = train_dataset.with_transform(build_eval_transform("depth", config, image_size_of(config)))
    mean_map = mean_depth_map(train_rows)
    baseline = evaluate_constant_map(mean_map, eval_rows, max_depth=config.max_depth)
    scaled = evaluate_constant_map(mean_map, eval_rows, median_scaling=True, max_depth=config.max_depth)
    baseline.update({f"median_scaled_{k}": v for k, v in scaled.items() if k in ("abs_rel", "rmse", "d1")})
    return baseline


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def card_results(stage_result: dict[str, Any]) -> list[dict[str, Any]]:
    """Model-card evaluation rows of a stage result: the held-out metrics and the average-depth-map baseline."""
    after, baseline = stage_result.get("eval_after") or {}, stage_result.get("baseline") or {}
    if "abs_rel" not in after:
        return []
    protocol = "held-out scenes, no crop, valid 1e-3-10 m, metric (no scaling), no TTA"
    rows = [{"dataset": "held-out", "protocol": protocol, **after}]
    if baseline:
        rows.append({"dataset": "held-out: average training depth map", "protocol": protocol, **baseline})
    return rows


def _finish_stage_folder(output_dir, stages, stage_result, model, model_id, processor) -> None:
    """Record the stages in config.json, write the model card and stage_results.json (last: marks completion)."""
    from ..hub import build_model_card

    config_path = output_dir / "config.json"
    saved = json.loads(config_path.read_text())
    saved["mesa_stages"] = stages
    tmp = config_path.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, config_path)
    results = card_results(stage_result.to_dict())
    card = build_model_card(
        model,
        model_id=model_id or output_dir.name,
        image_processor=processor,
        stages=stages,
        results=results[:1],
        baselines=results[1:],  # the average-depth-map baseline: card text only
        remote_code=False,
    )
    card.save(output_dir / "README.md")
    tmp = output_dir / f".{STAGE_RESULTS_NAME}.tmp"
    tmp.write_text(json.dumps(stage_result.to_dict(), indent=1) + "\n")
    os.replace(tmp, output_dir / STAGE_RESULTS_NAME)


def run_stages(
    stages: Sequence[str],
    model_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    datasets: dict[str, Any] | None = None,
    eval_datasets: dict[str, Any] | None = None,
    skip_if_complete: bool = False,
    **kwargs: Any,
) -> list[StageResult]:
    """Run `stages` in order, each from the previous stage's folder ``output_dir/<stage>``.

    `datasets` / `eval_datasets` map stage names to raw datasets (missing = synthetic world / its held-out
    scenes); other keyword arguments go to every `run_stage` call.
    """
    datasets, eval_datasets = datasets or {}, eval_datasets or {}
    results = []
    source: str | os.PathLike = model_name_or_path
    for stage in stages:
        folder = Path(output_dir) / stage
        result = run_stage(
            stage,
            source,
            datasets.get(stage),
            output_dir=folder,
            eval_dataset=eval_datasets.get(stage),
            skip_if_complete=skip_if_complete,
            **kwargs,
        )
        results.append(result)
        source = str(folder)
    return results


__all__ = [
    "EXPECTED_LOADING_MESSAGES",
    "PRETRAINING_ORDER",
    "STAGES",
    "HyperParameter",
    "SeededTransformDataset",
    "StageResult",
    "StageSpec",
    "average_depth_map_baseline",
    "build_eval_transform",
    "build_stage_transform",
    "card_results",
    "default_layer_decay",
    "get_stage",
    "hyperparameter_table",
    "load_dataset_spec",
    "load_stage_model",
    "run_stage",
    "run_stages",
    "stack_collator",
    "synthetic_dataset",
    "training_arguments",
]

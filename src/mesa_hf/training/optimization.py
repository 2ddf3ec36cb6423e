"""AdamW with MIM-Depth / SimMIM layer-wise learning-rate decay for the Swin-V2 encoder, and the schedules.

The layer numbering follows MIM-Depth's ``models/optimizer.py`` (``SwinLayerDecayOptimizerConstructor``, from
SimMIM), mapped onto the parameter names of transformers' `Swinv2Backbone` held at ``model.backbone``:

- per-stage layer counts = ``depths``, plus one for each stage's patch merging except the last's;
  ``num_layers = sum(counts) + 2`` (patch embedding and head);
- ``backbone.embeddings.*`` (patch embedding, its norm, the mask token) -> layer 0;
- ``backbone.encoder.layers.{s}.blocks.{j}.*`` -> ``sum(counts[:s]) + j + 1``;
- ``backbone.encoder.layers.{s}.downsample.*`` -> ``sum(counts[:s + 1])``;
- everything else (decoder, heads, norms outside the stages) -> ``num_layers - 1``;
- learning-rate scale ``decay ** (num_layers - layer_id - 1)``.

No weight decay for 1-D parameters, biases, and names containing ``relative_position_bias_table``,
``continuous_position_bias_mlp`` (transformers' name for Swin-V2's CPB MLP, ``rpe_mlp``/``cpb_mlp`` in the
references), ``logit_scale``, ``absolute_pos_embed`` or ``mask_token``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .arguments import MeSaTrainingArguments

NO_WEIGHT_DECAY_KEYWORDS = (
    "relative_position_bias_table",
    "continuous_position_bias_mlp",
    "rpe_mlp",
    "cpb_mlp",
    "logit_scale",
    "absolute_pos_embed",
    "mask_token",
)


def swin_layers_per_stage(depths: Sequence[int]) -> list[int]:
    """Layer counts per stage: the blocks, plus one for the patch merging of every stage but the last."""
    return [depth + (1 if stage < len(depths) - 1 else 0) for stage, depth in enumerate(depths)]


def swin_num_layers(depths: Sequence[int]) -> int:
    """Number of layer ids: all stage layers plus the patch embedding (id 0) and the head (last id)."""
    return sum(swin_layers_per_stage(depths)) + 2


def swin_layer_id(name: str, depths: Sequence[int], prefix: str = "backbone.") -> int:
    """Layer id of parameter `name` (a full `model.named_parameters()` name) for layer-wise lr decay."""
    counts = swin_layers_per_stage(depths)
    num_layers = sum(counts) + 2
    if not name.startswith(prefix):
        return num_layers - 1
    local = name[len(prefix) :]
    if local.startswith("embeddings."):
        return 0
    parts = local.split(".")
    if len(parts) > 3 and parts[0] == "encoder" and parts[1] == "layers":
        stage = int(parts[2])
        if parts[3] == "blocks":
            return sum(counts[:stage]) + int(parts[4]) + 1
        if parts[3] == "downsample":
            return sum(counts[: stage + 1])
    return num_layers - 1


def is_no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """1-D tensors, biases and position-bias / scale / mask-token parameters get no weight decay."""
    return param.ndim <= 1 or name.endswith(".bias") or any(key in name for key in NO_WEIGHT_DECAY_KEYWORDS)


def _backbone_depths(model: nn.Module) -> list[int]:
    backbone = getattr(model, "backbone", None)
    depths = getattr(getattr(backbone, "config", None), "depths", None)
    if depths is None:
        raise ValueError(
            f"layer_decay needs a Swin-V2 encoder at `model.backbone` with `config.depths`; "
            f"{type(model).__name__} has none (set layer_decay=None)"
        )
    return list(depths)


def get_parameter_groups(
    model: nn.Module, learning_rate: float, weight_decay: float, layer_decay: float | None
) -> list[dict]:
    """AdamW parameter groups, one per (layer id, decay / no decay), each with ``lr``, ``lr_scale``,
    ``weight_decay``, ``layer_id`` and ``param_names``. Frozen parameters are left out."""
    if layer_decay is not None:
        depths = _backbone_depths(model)
        num_layers = swin_num_layers(depths)
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = is_no_weight_decay(name, param)
        if layer_decay is None:
            layer_id, scale = 0, 1.0
        else:
            layer_id = swin_layer_id(name, depths)
            scale = layer_decay ** (num_layers - layer_id - 1)
        key = f"layer_{layer_id}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": scale,
                "lr": learning_rate * scale,
                "layer_id": layer_id,
                "group_name": key,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, args: MeSaTrainingArguments) -> torch.optim.AdamW:
    """AdamW (betas from `args`, MIM-Depth: 0.9, 0.999) over `get_parameter_groups`."""
    groups = get_parameter_groups(model, args.learning_rate, args.weight_decay, args.layer_decay)
    if not groups:
        raise ValueError(f"build_optimizer: {type(model).__name__} has no trainable parameter")
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


def mim_depth_learning_rate(step: float, total_steps: float, max_lr: float, min_lr: float) -> float:
    """MIM-Depth's per-iteration learning rate at update `step` (1-based) of `total_steps`.

    First half: ``(max - min) * (step / T_half) ** 0.9 + min``; second half:
    ``max(min, (min - max) * (step / T_half - 1) ** 0.9 + max)``, with ``T_half = total_steps / 2``.
    """
    half = total_steps / 2
    if step < half:
        return (max_lr - min_lr) * (step / half) ** 0.9 + min_lr
    return max(min_lr, (min_lr - max_lr) * (step / half - 1) ** 0.9 + max_lr)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, args: MeSaTrainingArguments, total_steps: int, num_processes: int = 1
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule over `total_steps` optimizer updates.

    Accelerate's prepared scheduler steps `num_processes` times per update (as in transformers' no-trainer
    examples), so the schedule is laid out over ``total_steps * num_processes`` scheduler steps.
    """
    if args.lr_schedule == "mim_depth":
        max_lr, min_lr = args.learning_rate, args.min_learning_rate

        def factor(scheduler_step: int) -> float:
            step = scheduler_step // num_processes + 1  # the update about to be taken, 1-based as in MIM-Depth
            return mim_depth_learning_rate(step, total_steps, max_lr, min_lr) / max_lr

        return LambdaLR(optimizer, factor)
    from transformers import get_scheduler

    name, kwargs = args.lr_schedule, {}
    if name == "cosine" and args.min_learning_rate > 0:
        name, kwargs = "cosine_with_min_lr", {"min_lr_rate": args.min_learning_rate / args.learning_rate}
    elif name == "constant":
        name = "constant_with_warmup"
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=args.num_warmup_steps * num_processes,
        num_training_steps=total_steps * num_processes,
        scheduler_specific_kwargs=kwargs or None,
    )


def steps_per_epoch(num_batches: int, gradient_accumulation_steps: int) -> int:
    """Optimizer updates per epoch (a last partial accumulation still updates, as Accelerate does)."""
    return math.ceil(num_batches / gradient_accumulation_steps)

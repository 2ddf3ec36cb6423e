"""One Accelerate training loop for every MeSa stage, its arguments, optimizer and schedules."""

from .arguments import MeSaTrainingArguments
from .loop import NonFiniteLossError, TrainingResult, build_accelerator, list_checkpoints, train
from .optimization import (
    build_lr_scheduler,
    build_optimizer,
    get_parameter_groups,
    mim_depth_learning_rate,
    swin_layer_id,
    swin_num_layers,
)

__all__ = [
    "MeSaTrainingArguments",
    "NonFiniteLossError",
    "TrainingResult",
    "build_accelerator",
    "build_lr_scheduler",
    "build_optimizer",
    "get_parameter_groups",
    "list_checkpoints",
    "mim_depth_learning_rate",
    "swin_layer_id",
    "swin_num_layers",
    "train",
]

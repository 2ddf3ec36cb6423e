"""`MeSaTrainingArguments`: the hyper-parameters of the one training loop shared by every stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

LR_SCHEDULES = ("mim_depth", "cosine", "linear", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class MeSaTrainingArguments:
    """Arguments of `mesa_hf.training.train` (names follow transformers' `TrainingArguments` and the
    `run_*_no_trainer.py` examples).

    Defaults are MIM-Depth's NYUv2 fine-tuning recipe (AdamW, weight decay 0.05, layer decay 0.9 (Swin-V2-B; 0.85
    for L), learning rate 5e-4 -> 3e-5 with MIM-Depth's per-iteration poly ramp up / ramp down, batch 24, 25 epochs).

    Args:
        output_dir: run folder; checkpoints go to ``output_dir/checkpoints/step_N``, the final model to
            ``output_dir/<final_subdir>``.
        per_device_train_batch_size: batch size per device and micro-step.
        learning_rate, min_learning_rate: peak and floor learning rates (the floor is used by "mim_depth" and
            "cosine").
        weight_decay: AdamW weight decay (not applied to 1-D parameters, biases and position-bias tables).
        layer_decay: Swin-V2 layer-wise learning-rate decay (None = off), see `build_optimizer`.
        adam_beta1, adam_beta2, adam_epsilon: AdamW.
        num_train_epochs, max_train_steps: run length; `max_train_steps` (optimizer updates) wins when set.
        gradient_accumulation_steps: micro-batches per optimizer update.
        mixed_precision: "no", "bf16" or "fp16" (Accelerate).
        max_grad_norm: gradient clipping norm (None = off; MIM-Depth does not clip).
        lr_schedule: "mim_depth", "cosine", "linear" or "constant" (the last three via transformers'
            `get_scheduler`, with `num_warmup_steps`).
        num_warmup_steps: warm-up updates for "cosine"/"linear"/"constant".
        checkpointing_steps: save the full training state every N updates (None = never).
        save_total_limit: keep at most this many checkpoints (oldest deleted first; None = keep all).
        resume_from_checkpoint: "latest" (the newest checkpoint in `output_dir`, or a fresh start when there is
            none) or the path of a checkpoint folder.
        eval_steps: call `eval_fn` every N updates and at the end (None = only at the end).
        logging_steps: log the mean training loss every N updates.
        seed: seeds Python, numpy, torch and the data order.
        with_tracking, report_to, project_name: Accelerate trackers ("all", "tensorboard", "wandb", ...).
        dataloader_num_workers, dataloader_drop_last: the training DataLoader.
        final_subdir: sub-folder of `output_dir` that receives the final `save_pretrained` ("" = `output_dir`).
        use_cpu: train on the CPU even when an accelerator is present.
    """

    output_dir: str
    per_device_train_batch_size: int = 24
    learning_rate: float = 5e-4
    min_learning_rate: float = 3e-5
    weight_decay: float = 0.05
    layer_decay: float | None = 0.9
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    num_train_epochs: int = 25
    max_train_steps: int | None = None
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    max_grad_norm: float | None = None
    lr_schedule: str = "mim_depth"
    num_warmup_steps: int = 0
    checkpointing_steps: int | None = 500
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    eval_steps: int | None = None
    logging_steps: int = 10
    seed: int = 42
    with_tracking: bool = False
    report_to: str = "all"
    project_name: str = "mesa-hf"
    dataloader_num_workers: int = 0
    dataloader_drop_last: bool = True
    final_subdir: str = "final"
    use_cpu: bool = False

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("MeSaTrainingArguments: output_dir must be a non-empty path")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1] or None, got {self.layer_decay}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_train_steps", "checkpointing_steps", "save_total_limit", "eval_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.learning_rate <= 0 or self.min_learning_rate < 0 or self.min_learning_rate > self.learning_rate:
            raise ValueError(
                f"need 0 <= min_learning_rate <= learning_rate and learning_rate > 0, got {self.min_learning_rate} "
                f"and {self.learning_rate}"
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")

    def to_dict(self) -> dict[str, Any]:
        """The arguments as a plain dict (for trackers and logs)."""
        return dataclasses.asdict(self)

"""`MeSaTrainingArguments`: the hyper-parameters of the one training loop shared by every stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

LR_SCHEDULES = ("mim_depth", "cosine", "linear", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")
FSDP_MODES = ("full_shard", "shard_grad_op")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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
        fsdp: shard the model over the processes with FSDP2 (as transformers' `TrainingArguments.fsdp`):
            "full_shard" (parameters, gradients and optimizer state; ZeRO-3) or "shard_grad_op" (parameters kept
            gathered between forward and backward; ZeRO-2); None = replicate (DDP). Needs >= 2 processes; bf16 is
            autocast, fp16 is refused (`mesa_hf.training.sharding`).
        torch_compile: compile the model in place with `torch.nn.Module.compile` (torch.compile, static shapes;
            state dict keys, checkpoints and ``save_pretrained`` unchanged) before training, as transformers'
            `TrainingArguments.torch_compile`; ``torch_compile_backend`` (default "inductor") and
            ``torch_compile_mode`` (default torch's) are passed on. The fused Swin-V2 attention compiles without
            graph breaks (`mesa_hf.attention_mesa`).
        streaming: train on a `datasets.IterableDataset` read as a stream (`mesa_hf.training.streaming`): shards
            split once over processes and workers, repeated until `max_train_steps` (required), shuffled with a
            buffer of `shuffle_buffer_size` samples, resumed exactly from per-rank data states.
        shuffle_buffer_size: samples in the shuffle buffer of a stream.
    """

    output_dir: str = field(
        metadata={
            "help": "run folder (checkpoints/step_N; output_dir/checkpoints/step_N final model in <final_subdir>)"
        }
    )
    per_device_train_batch_size: int = field(default=24, metadata={"help": "batch size per device and micro-step"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    min_learning_rate: float = field(default=3e-5, metadata={"help": "floor of the 'mim_depth' and 'cosine' schedules"})
    weight_decay: float = field(
        default=0.05, metadata={"help": "AdamW weight decay (not on 1-D parameters, biases and position-bias tables)"}
    )
    layer_decay: float | None = field(
        default=0.9, metadata={"help": "Swin-V2 layer-wise learning-rate decay (None = off)"}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    num_train_epochs: int = field(default=25, metadata={"help": "epochs (max_train_steps wins when set)"})
    max_train_steps: int | None = field(
        default=None, metadata={"help": "optimizer updates in total (wins over num_train_epochs)"}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer update"})
    mixed_precision: str = field(
        default="no", metadata={"help": "'no', 'bf16' or 'fp16' (Accelerate)", "choices": MIXED_PRECISION}
    )
    max_grad_norm: float | None = field(default=None, metadata={"help": "gradient clipping norm (None = off)"})
    lr_schedule: str = field(default="mim_depth", metadata={"help": "learning-rate schedule", "choices": LR_SCHEDULES})
    num_warmup_steps: int = field(default=0, metadata={"help": "warm-up updates of 'cosine', 'linear' and 'constant'"})
    checkpointing_steps: int | None = field(
        default=500, metadata={"help": "save the full training state every N updates (None = never)"}
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "keep at most this many checkpoints, oldest deleted first (None = all)"}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "'latest' (the newest checkpoint in output_dir, else a fresh start) or a checkpoint folder"},
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "evaluate every N updates and at the end (None = only at the end)"}
    )
    logging_steps: int = field(default=10, metadata={"help": "log the mean training loss every N updates"})
    seed: int = field(default=42, metadata={"help": "seeds Python, numpy, torch, the data order and the augmentations"})
    with_tracking: bool = field(default=False, metadata={"help": "log to Accelerate trackers (report_to)"})
    report_to: str = field(default="all", metadata={"help": "Accelerate trackers: 'all', 'tensorboard', 'wandb', ..."})
    project_name: str = field(default="mesa-hf", metadata={"help": "tracker project name"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    dataloader_drop_last: bool = field(default=True, metadata={"help": "drop the last incomplete batch of each epoch"})
    final_subdir: str = field(
        default="final",
        metadata={"help": "sub-folder of output_dir that receives the final save_pretrained ('' = output_dir)"},
    )
    use_cpu: bool = field(default=False, metadata={"help": "train on the CPU even when an accelerator is present"})
    fsdp: str | None = field(
        default=None,
        metadata={
            "help": "shard the model with FSDP2 over >= 2 processes: 'full_shard' (ZeRO-3) or 'shard_grad_op' "
            "(ZeRO-2); default: replicate (DDP)",
            "choices": FSDP_MODES,
        },
    )

    torch_compile: bool = field(
        default=False, metadata={"help": "compile the model with torch.compile before training (state dicts unchanged)"}
    )
    torch_compile_backend: str | None = field(
        default=None, metadata={"help": "torch.compile backend, e.g. 'inductor' (the default) or 'aot_eager'"}
    )
    torch_compile_mode: str | None = field(
        default=None,
        metadata={
            "help": "torch.compile mode (default: torch's)",
            "choices": COMPILE_MODES,
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "read the training data as a stream (datasets.IterableDataset: lsun:, webdataset:, parquet:, "
            "image folders): shards split once over processes and workers, repeated until --max_train_steps "
            "(required), exact resume"
        },
    )
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "samples in the shuffle buffer of a stream"})

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
        if self.fsdp is not None and self.fsdp not in FSDP_MODES:
            raise ValueError(f"fsdp must be one of {FSDP_MODES} or None, got {self.fsdp!r}")
        if self.fsdp is not None and self.mixed_precision == "fp16":
            raise ValueError("fsdp does not support mixed_precision='fp16' (no sharded grad scaler); use 'bf16'")
        if self.torch_compile_mode is not None and self.torch_compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"torch_compile_mode must be one of {COMPILE_MODES} or None, got {self.torch_compile_mode!r}"
            )
        if (self.torch_compile_backend or self.torch_compile_mode) and not self.torch_compile:
            raise ValueError("torch_compile_backend / torch_compile_mode need torch_compile=True")
        if self.streaming and self.max_train_steps is None:
            raise ValueError(
                "streaming: a stream has no epochs; give max_train_steps (the number of optimizer updates)"
            )
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"shuffle_buffer_size must be >= 1, got {self.shuffle_buffer_size}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")

    def to_dict(self) -> dict[str, Any]:
        """The arguments as a plain dict (for trackers and logs)."""
        return dataclasses.asdict(self)

"""FSDP2 sharding of a MeSa model (``--fsdp full_shard`` / ``--fsdp shard_grad_op``) and its sharded checkpoints.

One code path for CPUs (gloo; what CI tests) and GPUs: `torch.distributed.fsdp.fully_shard` wraps each Swin-V2
block (every transformers `Swinv2Layer` of every encoder stage) and then the whole model; Accelerate prepares the
DataLoader only (its FSDP plugin silently becomes DDP on CPU processes, docs/training.md "FSDP").

* ``full_shard``: parameters, gradients and optimizer state sharded; parameters freed again after each forward
  (``reshard_after_forward=True``, ZeRO-3). ``shard_grad_op``: parameters kept gathered from forward to backward
  (``reshard_after_forward=False``, ZeRO-2).
* Before sharding, parameters and buffers are broadcast from rank 0, so every process starts equal (as DDP does).
* Training state (model + optimizer + scheduler + step) is saved and loaded with `torch.distributed.checkpoint`
  (DCP), sharded, in ``<checkpoint>/fsdp_state/``; `full_state_dict` gathers the unsharded weights to rank 0 for
  ``save_pretrained``.
* Mixed precision: bf16 is ``torch.autocast`` around the forward (as Accelerate does for DDP), not FSDP's
  `MixedPrecisionPolicy` (bf16 parameters break the decoder's BatchNorm); the all-gather stays fp32.

FSDP never falls back silently: `check_fsdp_possible` raises when it could not take effect.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import torch

from .arguments import FSDP_MODES

FSDP_STATE_DIR = "fsdp_state"


def check_fsdp_possible(mode: str, num_processes: int | None = None) -> None:
    """Raise (one line) when FSDP `mode` cannot take effect: an unknown mode, a single process (`num_processes`,
    default the process group's size) or no process group."""
    import torch.distributed as dist

    if mode not in FSDP_MODES:
        raise ValueError(f"fsdp must be one of {FSDP_MODES}, got {mode!r}")
    initialized = dist.is_available() and dist.is_initialized()
    if num_processes is None and initialized:
        num_processes = dist.get_world_size()
    if num_processes is not None and num_processes < 2:
        raise RuntimeError(
            f"fsdp={mode!r} shards the model over processes, but this run has {num_processes}: launch it with "
            "torchrun --nproc_per_node N (N >= 2) or accelerate launch, or drop --fsdp"
        )
    if not initialized:
        raise RuntimeError(
            f"fsdp={mode!r} needs a torch.distributed process group: launch with torchrun or accelerate launch"
        )


def sharded_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules sharded one by one: every transformers `Swinv2Layer` (the blocks of each Swin-V2 stage)."""
    from transformers.models.swinv2.modeling_swinv2 import Swinv2Layer

    return [module for module in model.modules() if isinstance(module, Swinv2Layer)]


def broadcast_from_rank0(model: torch.nn.Module) -> None:
    """Parameters and buffers of rank 0 on every process (as `DistributedDataParallel` does at construction)."""
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def apply_fsdp(model: torch.nn.Module, mode: str, device: torch.device | str | None = None) -> torch.nn.Module:
    """Shard `model` in place with FSDP2 and return it: rank 0's weights broadcast, each `Swinv2Layer` a
    `fully_shard` unit, then the whole model (the remaining parameters: embeddings, norms, decoder, heads).

    `mode`: ``full_shard`` (reshard after forward) or ``shard_grad_op`` (keep parameters gathered until backward).
    `device`: where the model lives (default: unchanged); the mesh follows torch's accelerator, else the CPU.
    Raises RuntimeError when there is no process group or a single process (FSDP would not shard anything).
    """
    from torch.distributed.fsdp import fully_shard

    check_fsdp_possible(mode)
    if device is not None:
        model.to(device)
    blocks = sharded_blocks(model)
    if not blocks:
        raise ValueError(f"apply_fsdp: {type(model).__name__} has no Swinv2Layer blocks to shard")
    broadcast_from_rank0(model)
    reshard = mode == "full_shard"
    # MeSa's output holds views (predicted_depth); the loop only reads the loss, never changes them in place
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPMeSa.*returned a view tensor")
    for block in blocks:
        fully_shard(block, reshard_after_forward=reshard)
    fully_shard(model, reshard_after_forward=reshard)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    """True when `model` was sharded by `fully_shard` (an FSDP2 module)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def local_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(elements of the parameters this process holds, elements of the whole model's parameters)."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        local += parameter.to_local().numel() if isinstance(parameter, DTensor) else parameter.numel()
    return local, total


def autocast_forward(model: torch.nn.Module, accelerator: Any) -> None:
    """Run `model`'s forward under ``accelerator.autocast()`` with fp32 outputs, as `Accelerator.prepare` does for
    the models it wraps (a no-op without mixed precision). This is bf16 autocast, not a bf16 all-gather."""
    if accelerator.mixed_precision == "no":
        return
    from accelerate.utils.operations import convert_outputs_to_fp32

    forward = model.forward

    @functools.wraps(forward)
    def forward_in_autocast(*args, **kwargs):
        with accelerator.autocast():
            return forward(*args, **kwargs)

    model.forward = convert_outputs_to_fp32(forward_in_autocast)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict, on the CPU, on rank 0 (empty elsewhere); every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class _TrainingState:
    """DCP `Stateful` of a sharded run: model, optimizer, scheduler and the update count."""

    def __init__(self, model, optimizer, scheduler, step: int = 0):
        self.model, self.scheduler, self.step = model, scheduler, step
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside Accelerate's

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        scheduler = getattr(self.scheduler, "scheduler", self.scheduler)
        return {"model": model_state, "optim": optimizer_state, "scheduler": scheduler.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        scheduler = getattr(self.scheduler, "scheduler", self.scheduler)
        scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])


def save_sharded_state(folder: str | Path, model, optimizer, scheduler, step: int) -> Path:
    """Write the sharded training state to ``folder/fsdp_state`` with DCP (every process writes its shards)."""
    import torch.distributed.checkpoint as dcp

    path = Path(folder) / FSDP_STATE_DIR
    dcp.save({"train": _TrainingState(model, optimizer, scheduler, step)}, checkpoint_id=str(path))
    return path


def load_sharded_state(folder: str | Path, model, optimizer, scheduler) -> int:
    """Load ``folder/fsdp_state`` (written by `save_sharded_state`, any sharding) into the sharded `model`,
    `optimizer` and `scheduler`; returns the saved update count."""
    import torch.distributed.checkpoint as dcp

    path = Path(folder) / FSDP_STATE_DIR
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"{folder}: no sharded FSDP training state ({FSDP_STATE_DIR}/.metadata)")
    state = _TrainingState(model, optimizer, scheduler)
    dcp.load({"train": state}, checkpoint_id=str(path))
    return state.step


__all__ = [
    "FSDP_MODES",
    "FSDP_STATE_DIR",
    "apply_fsdp",
    "autocast_forward",
    "broadcast_from_rank0",
    "check_fsdp_possible",
    "full_state_dict",
    "is_sharded",
    "load_sharded_state",
    "local_parameter_count",
    "save_sharded_state",
    "sharded_blocks",
]

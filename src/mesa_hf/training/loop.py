"""The one Accelerate training loop shared by every MeSa stage (masked, geometric, supervised, fine-tuning).

A stage is (model class, dataset, collator): the model's ``forward(**batch)`` returns an output with ``.loss``.
The loop follows transformers' ``run_mim_no_trainer.py`` (Accelerator, ``accumulate``, ``save_state`` /
``load_state`` + ``skip_first_batches``, trackers) as a library function.

On disk (``args.output_dir``)::

    checkpoints/step_N/    complete Accelerate state (model, optimizer, scheduler, RNG) + trainer_state.json
                           (with ``fsdp``: RNG and sampler from Accelerate, model + optimizer + scheduler + step
                           sharded by torch.distributed.checkpoint in ``fsdp_state/``)
    final/                 unwrap_model(model).save_pretrained(...) (+ the processor, when given; with ``fsdp``
                           the full state dict gathered to rank 0: unsharded safetensors)

With ``args.fsdp`` the model is sharded by `sharding.apply_fsdp` (FSDP2) instead of ``accelerator.prepare``; the
DataLoader is still prepared, the optimizer and schedule get Accelerate's wrappers (skipping steps while
accumulating) without being registered for ``save_state``; everything else is the same loop.

Every folder is written under a temporary name and renamed into place, so a killed run never leaves a
half-written checkpoint under a real name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..hub import replace_directory
from .arguments import MeSaTrainingArguments
from .optimization import build_lr_scheduler, build_optimizer, steps_per_epoch
from .sharding import FSDP_STATE_DIR
from .streaming import SAMPLE_KEY, KeyedCollator, StreamingRows, load_data_state, save_data_state

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped without saving anything after it."""

    def __init__(self, step: int, epoch: int, loss: float, last_checkpoint: str | None):
        self.step, self.epoch, self.loss, self.last_checkpoint = step, epoch, loss, last_checkpoint
        where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved yet"
        super().__init__(
            f"Training stopped: the loss became {loss} at optimizer step {step} (epoch {epoch}). Nothing was saved "
            f"after it; {where}. Check the data and lower the learning rate (or enable max_grad_norm), then resume "
            f"with resume_from_checkpoint."
        )


@dataclass
class TrainingResult:
    """What `train` returns: the final update count, the per-update loss history and the evaluation history."""

    global_step: int
    epoch: int
    losses: list[float] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    final_model_dir: str | None = None
    resumed_from: str | None = None
    updates_per_epoch: int | None = None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints ``output_dir/checkpoints/step_N`` sorted by N (temporary folders are ignored)."""
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [path for _, path in sorted(found)]


def _resolve_resume(args: MeSaTrainingArguments) -> Path | None:
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(args.output_dir)
        if not checkpoints:
            logger.info("resume_from_checkpoint='latest': no checkpoint in %s, starting from scratch", args.output_dir)
            return None
        return checkpoints[-1]
    path = Path(args.resume_from_checkpoint)
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint: {path} is not a checkpoint folder written by mesa_hf.training "
            f"(no {TRAINER_STATE_NAME})"
        )
    return path


def _clean_temporary(folder: Path) -> None:
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(_TMP_PREFIX):
                shutil.rmtree(path, ignore_errors=True)


def _loss_of(outputs: Any) -> torch.Tensor:
    loss = outputs.get("loss") if isinstance(outputs, dict) else getattr(outputs, "loss", None)
    if loss is None:
        raise ValueError(
            "train: the model's forward(**batch) returned no `loss`; the batch must carry the stage's targets "
            "(e.g. `labels` for depth, `bool_masked_pos` for masked image modelling)"
        )
    return loss


def _tracker_config(args: MeSaTrainingArguments) -> dict[str, Any]:
    return {k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool))}


def _allow_new_precision(args: MeSaTrainingArguments) -> None:
    """Let consecutive stages in one process use different precisions or devices.

    Accelerate keeps one process-wide `AcceleratorState` and refuses a second `Accelerator` with another
    `mixed_precision` (or `cpu=True` after a GPU one); the per-run part of that state is dropped then, keeping the
    process group (`PartialState`) intact.
    """
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if not shared:
        return
    previous_precision = shared.get("_mixed_precision")
    device = shared.get("device")
    if previous_precision != args.mixed_precision or (args.use_cpu and getattr(device, "type", "cpu") != "cpu"):
        AcceleratorState._reset_state(reset_partial_state=False)


def use_cpu(requested: bool = False) -> bool:
    """Train on the CPU: when asked, or when torch sees no accelerator (then Accelerate must be told, or processes
    started by torchrun / accelerate launch would each train alone instead of over gloo)."""
    return bool(requested) or not torch.accelerator.is_available()


def process_state(cpu: bool = False):
    """Accelerate's process-wide `PartialState` (the first call starts the process group: gloo on CPUs)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu(cpu))


def build_accelerator(args: MeSaTrainingArguments):
    """The `accelerate.Accelerator` of a run: accumulation, precision, trackers and a seedable sampler (the same data
    order for any number of processes: process i draws every N-th batch of the one shuffled order)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    _allow_new_precision(args)
    process_state(args.use_cpu)
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        cpu=use_cpu(args.use_cpu),
        log_with=args.report_to if args.with_tracking else None,
        project_config=ProjectConfiguration(project_dir=str(args.output_dir)),
        # a stream is split over the ranks once by streaming.StreamingRows: no rank-0 dispatch, no second split
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True,
            data_seed=args.seed,
            **({"dispatch_batches": False, "split_batches": False} if args.streaming else {}),
        ),
    )


@dataclass
class _Run:
    """The state of one `train` call, shared by its steps."""

    args: MeSaTrainingArguments
    accelerator: Any
    model: torch.nn.Module
    optimizer: Any
    dataloader: Any
    scheduler: Any
    max_steps: int
    num_epochs: int
    updates_per_epoch: int | None
    global_step: int = 0
    start_epoch: int = 0
    batches_done_in_epoch: int = 0
    losses: list[float] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: str | None = None
    resume_path: Path | None = None
    last_update_keys: list[str] = field(default_factory=list)

    @property
    def streaming(self) -> bool:
        """True for a `streaming.StreamingRows` dataset: no epochs, per-rank data state in the checkpoints."""
        return isinstance(self.dataloader.dataset, StreamingRows)

    @property
    def sharded(self) -> bool:
        """True with ``args.fsdp``: the model is FSDP2-sharded, its training state goes through DCP."""
        return self.args.fsdp is not None

    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.args.output_dir) / CHECKPOINTS_DIR


def _prepare(model, train_dataset, args, data_collator, accelerator) -> _Run:
    """Folders, DataLoader, optimizer, schedule, all through `accelerator.prepare`."""
    from accelerate.utils import set_seed

    output_dir = Path(args.output_dir)
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        _clean_temporary(output_dir / CHECKPOINTS_DIR)
        _clean_temporary(output_dir)
    accelerator.wait_for_everyone()
    streaming = isinstance(train_dataset, StreamingRows)
    if streaming != args.streaming:
        raise ValueError(
            f"train: streaming={args.streaming} but the dataset is "
            f"{'a StreamingRows stream' if streaming else 'map-style'}; build it with mesa_hf.training.StreamingRows "
            "exactly when args.streaming is set"
        )
    if streaming:
        dataloader = _stream_dataloader(train_dataset, args, data_collator)
    else:
        dataloader = DataLoader(
            train_dataset,
            batch_size=args.per_device_train_batch_size,
            shuffle=True,
            collate_fn=data_collator,
            drop_last=args.dataloader_drop_last,
            num_workers=args.dataloader_num_workers,
            generator=torch.Generator().manual_seed(args.seed),
        )
    if not streaming and len(dataloader) < accelerator.num_processes:
        raise ValueError(
            f"train: the dataset has {len(train_dataset)} samples, fewer than one batch of "
            f"{args.per_device_train_batch_size} per process for {accelerator.num_processes} processes "
            f"(with dataloader_drop_last={args.dataloader_drop_last})"
        )
    if args.fsdp:
        model = _shard(model, args, accelerator)
    if args.torch_compile:
        _compile(model, args)
    optimizer = build_optimizer(model, args)  # after sharding: FSDP2 replaces the parameters by DTensors
    # the schedule needs the number of updates, known only after the dataloader is sharded
    # a stream is not prepared: it is already this rank's part (Accelerate would dispatch or split it again)
    if args.fsdp:
        from accelerate.optimizer import AcceleratedOptimizer

        if not streaming:
            dataloader = accelerator.prepare(dataloader)
        # not registered with the accelerator: save_state would write rank 0's shards only (DCP saves it)
        optimizer = AcceleratedOptimizer(optimizer, device_placement=False)
    elif streaming:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    if streaming:  # no epochs: the stream repeats, every rank stops at max_train_steps
        per_epoch, max_steps = None, args.max_train_steps
    else:
        per_epoch = steps_per_epoch(len(dataloader), accelerator.gradient_accumulation_steps)
        max_steps = args.max_train_steps or args.num_train_epochs * per_epoch
    # Accelerate's prepared scheduler steps num_processes times per update; build_lr_scheduler lays it out so
    # that update k gets the same learning rate for any number of processes
    scheduler = build_lr_scheduler(optimizer, args, max_steps, accelerator.num_processes)
    if args.fsdp:
        from accelerate.scheduler import AcceleratedScheduler

        scheduler = AcceleratedScheduler(
            scheduler,
            [optimizer],
            step_with_optimizer=accelerator.step_scheduler_with_optimizer,
            split_batches=accelerator.split_batches,
        )
    else:
        scheduler = accelerator.prepare(scheduler)
    if args.with_tracking:
        accelerator.init_trackers(args.project_name, _tracker_config(args))
    return _Run(
        args,
        accelerator,
        model,
        optimizer,
        dataloader,
        scheduler,
        max_steps,
        math.ceil(max_steps / per_epoch) if per_epoch else 1,
        per_epoch,
    )


def _stream_dataloader(rows: StreamingRows, args: MeSaTrainingArguments, data_collator) -> DataLoader:
    """The DataLoader of this rank's stream: batches built in the workers (batch b from worker b % workers), each
    batch with its samples' keys."""
    rows.batch_size = args.per_device_train_batch_size
    if rows.num_workers != args.dataloader_num_workers:
        raise ValueError(
            f"train: the stream was built for {rows.num_workers} workers, dataloader_num_workers is "
            f"{args.dataloader_num_workers}"
        )
    return DataLoader(
        rows,
        batch_size=args.per_device_train_batch_size,
        collate_fn=KeyedCollator(data_collator),
        num_workers=args.dataloader_num_workers,
    )


def _shard(model: torch.nn.Module, args: MeSaTrainingArguments, accelerator) -> torch.nn.Module:
    """`sharding.apply_fsdp` on the accelerator's device, bf16/fp16 as autocast around the forward (as `prepare`
    does); raises when FSDP could not take effect (one process, no process group, Accelerate's own FSDP/DeepSpeed)."""
    from accelerate.utils import DistributedType

    from .sharding import apply_fsdp, autocast_forward, check_fsdp_possible, local_parameter_count, sharded_blocks

    check_fsdp_possible(args.fsdp, accelerator.num_processes)
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(
            f"fsdp={args.fsdp!r}: Accelerate is configured for {accelerator.distributed_type.value} too; use one "
            "(mesa-hf's --fsdp, or an accelerate config without FSDP/DeepSpeed)"
        )
    model = apply_fsdp(model, args.fsdp, device=accelerator.device)
    autocast_forward(model, accelerator)
    local, total = local_parameter_count(model)
    logger.info(
        "fsdp %s: %d Swinv2Layer blocks + the whole model sharded over %d processes; process %d holds %d of %d "
        "parameter elements (%.1f%%)",
        args.fsdp, len(sharded_blocks(model)), accelerator.num_processes, accelerator.process_index, local, total,
        100 * local / total,
    )  # fmt: skip
    return model


def _compile(model: torch.nn.Module, args: MeSaTrainingArguments) -> None:
    """`model.compile(...)` in place (`torch.nn.Module.compile`): the module, its parameters and state dict keys stay
    the same objects and names, so the optimizer, checkpoints and ``save_pretrained`` see no ``_orig_mod`` prefix."""
    # static shapes: the window plans are built from Python ints (a new input size compiles again)
    options = {"backend": args.torch_compile_backend or "inductor", "dynamic": False}
    if args.torch_compile_mode is not None:
        options["mode"] = args.torch_compile_mode
    model.compile(**options)
    logger.info("torch.compile: the model is compiled (%s)", options)


def _resume(run: _Run) -> None:
    """Load the newest (or the named) checkpoint: weights, optimizer, schedule, RNG and the loop counters."""
    run.resume_path = _resolve_resume(run.args)
    if run.resume_path is None:
        return
    run.accelerator.print(f"Resuming from checkpoint {run.resume_path}")
    has_sharded_state = (run.resume_path / FSDP_STATE_DIR).is_dir()
    if has_sharded_state != run.sharded:
        raise ValueError(
            f"resume_from_checkpoint: {run.resume_path} was written "
            f"{'with' if has_sharded_state else 'without'} fsdp; resume it "
            f"{'with --fsdp' if has_sharded_state else 'without --fsdp'} (this run has fsdp={run.args.fsdp!r})"
        )
    run.accelerator.load_state(str(run.resume_path))
    state = json.loads((run.resume_path / TRAINER_STATE_NAME).read_text())
    if run.sharded:
        from .sharding import load_sharded_state

        step = load_sharded_state(run.resume_path, run.model, run.optimizer, run.scheduler)
        if step != state["global_step"]:
            raise ValueError(
                f"{run.resume_path}: {FSDP_STATE_DIR} holds step {step}, {TRAINER_STATE_NAME} {state['global_step']}"
            )
    run.global_step, run.start_epoch = state["global_step"], state["epoch"]
    run.batches_done_in_epoch = state["batches_done_in_epoch"]
    run.losses, run.eval_history = list(state["losses"]), list(state["eval_history"])
    run.last_checkpoint = str(run.resume_path)
    if run.streaming:
        consumed = load_data_state(run.resume_path, run.dataloader.dataset)
        if consumed != run.batches_done_in_epoch:
            raise ValueError(
                f"{run.resume_path}: this rank consumed {consumed} batches, the run {run.batches_done_in_epoch}"
            )
        logger.info("%s", run.dataloader.dataset.describe())
        return
    if run.batches_done_in_epoch >= len(run.dataloader):
        run.start_epoch, run.batches_done_in_epoch = run.start_epoch + 1, 0


def _save_checkpoint(run: _Run, epoch: int, batches_done: int) -> None:
    """The complete Accelerate state in ``checkpoints/step_N`` (written under a temporary name, then renamed)."""
    accelerator, folder = run.accelerator, run.checkpoints_dir
    final, tmp = folder / f"step_{run.global_step}", folder / f"{_TMP_PREFIX}step_{run.global_step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if run.sharded:  # collective: every process has written its shards before rank 0 renames the folder
        from .sharding import save_sharded_state

        save_sharded_state(tmp, run.model, run.optimizer, run.scheduler, run.global_step)
    if run.streaming:  # each rank its own file (Accelerate's one dl_state_dict.bin would be overwritten)
        save_data_state(tmp, run.dataloader.dataset, batches_done, run.last_update_keys)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {
            "global_step": run.global_step,
            "epoch": epoch,
            "batches_done_in_epoch": batches_done,
            "max_steps": run.max_steps,
            "losses": run.losses,
            "eval_history": run.eval_history,
            "args": _tracker_config(run.args),
        }
        (tmp / TRAINER_STATE_NAME).write_text(json.dumps(state, indent=1))
        replace_directory(tmp, final)
        if run.args.save_total_limit is not None:
            for old in list_checkpoints(run.args.output_dir)[: -run.args.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    run.last_checkpoint = str(final)


def _evaluate(run: _Run, eval_fn: Callable) -> None:
    """``eval_fn(model)`` on every process (it shards the held-out set itself), logged at the current step."""
    run.model.eval()
    with torch.no_grad():
        metrics = dict(eval_fn(run.model))
    run.model.train()
    run.eval_history.append({"step": run.global_step, **metrics})
    run.accelerator.log({f"eval_{k}": v for k, v in metrics.items()}, step=run.global_step)


def _micro_step(run: _Run, batch: dict, epoch: int, accumulated: list[torch.Tensor]) -> None:
    """Forward, NaN check (on every process at once), backward, and the optimizer/schedule step on sync."""
    accelerator = run.accelerator
    with accelerator.accumulate(run.model):
        if run.sharded:  # FSDP2 has no no_sync(): reduce-scatter gradients on the last micro-batch only
            run.model.set_requires_gradient_sync(accelerator.sync_gradients)
        loss = _loss_of(run.model(**batch))
        finite = torch.isfinite(loss.detach()).all().to(torch.float32)
        if accelerator.num_processes > 1:
            finite = accelerator.reduce(finite, reduction="min")
        if finite.item() < 1:
            raise NonFiniteLossError(run.global_step + 1, epoch, float(loss.detach().float()), run.last_checkpoint)
        accumulated.append(loss.detach().float())
        accelerator.backward(loss)
        if accelerator.sync_gradients and run.args.max_grad_norm is not None:
            if run.sharded:  # the global norm over DTensor gradient shards
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.args.max_grad_norm)
            else:
                accelerator.clip_grad_norm_(run.model.parameters(), run.args.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()


def _after_update(
    run: _Run, epoch: int, batches_done: int, accumulated, window_losses, progress, eval_fn, step_callback
):
    """An optimizer update is done: the step count, the loss (mean over processes), logging, evaluation,
    checkpointing and the callback."""
    args, accelerator = run.args, run.accelerator
    run.global_step += 1
    step_loss = torch.stack(accumulated).mean()
    if accelerator.num_processes > 1:
        step_loss = accelerator.reduce(step_loss, reduction="mean")
    accumulated.clear()
    run.losses.append(float(step_loss))
    window_losses.append(run.losses[-1])
    progress.update(1)
    progress.set_postfix(loss=f"{run.losses[-1]:.4f}")
    if run.global_step % args.logging_steps == 0 or run.global_step == run.max_steps:
        logs = {"train_loss": sum(window_losses) / len(window_losses), "lr": run.scheduler.get_last_lr()[-1]}
        accelerator.log({**logs, "epoch": epoch}, step=run.global_step)
        window_losses.clear()
    if eval_fn is not None and args.eval_steps and run.global_step % args.eval_steps == 0:
        _evaluate(run, eval_fn)
    if args.checkpointing_steps and run.global_step % args.checkpointing_steps == 0:
        _save_checkpoint(run, epoch, batches_done)
    if step_callback is not None:
        step_callback(run.global_step, run.losses[-1])


def _progress(run: _Run):
    from tqdm.auto import tqdm

    return tqdm(
        total=run.max_steps,
        initial=run.global_step,
        disable=not run.accelerator.is_local_main_process,
        desc="training",
        leave=False,
    )


def _epoch_loop(run: _Run, train_dataset, eval_fn, step_callback) -> int:
    """Every epoch from the resumed position to `max_steps` updates; returns the last epoch."""
    accelerator = run.accelerator
    progress = _progress(run)
    run.model.train()
    window_losses: list[float] = []
    accumulated: list[torch.Tensor] = []
    epoch = run.start_epoch
    try:
        for epoch in range(run.start_epoch, run.num_epochs):
            if run.global_step >= run.max_steps:
                break
            run.dataloader.set_epoch(epoch)
            if hasattr(train_dataset, "set_epoch"):  # Accelerate gives the epoch to its seedable sampler only
                train_dataset.set_epoch(epoch)
            skip = run.batches_done_in_epoch if epoch == run.start_epoch else 0
            loader = accelerator.skip_first_batches(run.dataloader, skip) if skip else run.dataloader
            batches_done = skip
            for batch in loader:
                _micro_step(run, batch, epoch, accumulated)
                batches_done += 1
                if not accelerator.sync_gradients:
                    continue
                _after_update(run, epoch, batches_done, accumulated, window_losses, progress, eval_fn, step_callback)
                if run.global_step >= run.max_steps:
                    break
    finally:
        progress.close()
    return epoch


def _stream_loop(run: _Run, eval_fn, step_callback) -> int:
    """A `StreamingRows` stream from the resumed position (its workers skip the consumed batches) to `max_steps`
    updates; every rank draws the same number of batches. Returns 0 (a stream has no epochs)."""
    from accelerate.utils import send_to_device

    accelerator = run.accelerator
    progress = _progress(run)
    run.model.train()
    window_losses: list[float] = []
    accumulated: list[torch.Tensor] = []
    batches_done = run.batches_done_in_epoch
    drop = run.dataloader.dataset.drop_batches  # consumed batches the workers could not skip (split_skip)
    logger.info("%s", run.dataloader.dataset.describe())
    try:
        if run.global_step < run.max_steps:
            for batch in run.dataloader:
                if drop:
                    drop -= 1
                    continue
                keys = batch.pop(SAMPLE_KEY)
                if not accumulated:
                    run.last_update_keys = []
                run.last_update_keys.extend(keys)
                _micro_step(run, send_to_device(batch, accelerator.device), 0, accumulated)
                batches_done += 1
                if not accelerator.sync_gradients:
                    continue
                _after_update(run, 0, batches_done, accumulated, window_losses, progress, eval_fn, step_callback)
                if run.global_step >= run.max_steps:
                    break
    finally:
        progress.close()
    return 0


def _finish(run: _Run, processor) -> Path:
    """``save_pretrained`` of the unwrapped model (and the processor) by the main process; the others wait."""
    args, accelerator = run.args, run.accelerator
    output_dir = Path(args.output_dir)
    final_dir = output_dir / args.final_subdir if args.final_subdir else output_dir
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(run.model)
    tmp = output_dir / f"{_TMP_PREFIX}final"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    if run.sharded:  # gathered to rank 0 (every process takes part): full, unsharded safetensors
        from .sharding import full_state_dict

        state_dict = full_state_dict(run.model)
    else:
        state_dict = accelerator.get_state_dict(run.model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(str(tmp), state_dict=state_dict)
        if processor is not None:
            processor.save_pretrained(str(tmp))
        if args.final_subdir:
            replace_directory(tmp, final_dir)
        else:  # into output_dir itself: file by file, config.json last so a loadable folder is complete
            names = sorted(os.listdir(tmp), key=lambda n: n == "config.json")
            for name in names:
                os.replace(tmp / name, output_dir / name)
            shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.end_training()
    return final_dir


def train(
    model: torch.nn.Module,
    train_dataset: torch.utils.data.Dataset,
    args: MeSaTrainingArguments,
    data_collator: Callable | None = None,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    accelerator: Any | None = None,
    processor: Any | None = None,
    step_callback: Callable[[int, float], None] | None = None,
) -> TrainingResult:
    """Train `model` on `train_dataset` with Accelerate; the same loop for every stage and any number of processes.

    Steps: `_prepare` (folders, DataLoader, optimizer, schedule), `_resume`, `_epoch_loop` (with `_save_checkpoint`
    and `_evaluate`), a last `_evaluate`, `_finish` (``save_pretrained`` by the main process).

    Args:
        model: a `PreTrainedModel` whose ``forward(**batch)`` returns an output with ``.loss``.
        train_dataset: a map-style dataset (e.g. an HF `Dataset` with a transform) yielding dict samples, or with
            ``args.streaming`` a `streaming.StreamingRows` stream (``args.max_train_steps`` updates, no epochs).
        args: `MeSaTrainingArguments`.
        data_collator: builds a batch dict from a list of samples (default: torch's default collate).
        eval_fn: ``eval_fn(model) -> dict`` of metrics, called on every process every `args.eval_steps` updates
            and at the end, with the prepared model in eval mode; results are logged with ``accelerator.log``.
        accelerator: an `accelerate.Accelerator` to use instead of `build_accelerator(args)`.
        processor: saved next to the final model when given (anything with ``save_pretrained``).
        step_callback: ``step_callback(step, loss)`` after every optimizer update (after checkpointing).

    Returns a `TrainingResult`. Raises `NonFiniteLossError` when the loss becomes NaN/inf (nothing is saved
    after that step; earlier checkpoints stay intact).
    """
    accelerator = accelerator if accelerator is not None else build_accelerator(args)
    run = _prepare(model, train_dataset, args, data_collator, accelerator)
    _resume(run)
    if run.streaming:
        epoch = _stream_loop(run, eval_fn, step_callback)
    else:
        epoch = _epoch_loop(run, train_dataset, eval_fn, step_callback)
    if eval_fn is not None and not (run.eval_history and run.eval_history[-1]["step"] == run.global_step):
        _evaluate(run, eval_fn)
    final_dir = _finish(run, processor)
    return TrainingResult(
        global_step=run.global_step,
        epoch=epoch,
        losses=run.losses,
        eval_history=run.eval_history,
        final_model_dir=str(final_dir),
        resumed_from=str(run.resume_path) if run.resume_path is not None else None,
        updates_per_epoch=run.updates_per_epoch,
    )

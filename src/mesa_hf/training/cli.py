"""Argument parsing and reporting shared by ``examples/pretrain.py`` and ``examples/finetune.py``.

The flags come from dataclasses through transformers' `HfArgumentParser`, so flags, defaults and help live in one
place: `TrainingFlags` is generated from `MeSaTrainingArguments` (every default None = "the recipe's value"),
`StageRunArguments` holds the flags both scripts share, `mesa_hf.data.specs.FolderOptions` describes a
``folder:PATH`` dataset, and each script adds its own dataclass. The scripts call `mesa_hf.training.runner`,
print the summary and optionally push the last folder to the Hub through `mesa_hf.hub.push_to_hub`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.specs import FolderOptions, load_dataset_spec
from .arguments import MeSaTrainingArguments
from .loop import process_state
from .recipes import RECIPES, get_stage
from .runner import STAGE_RESULTS_NAME, StageResult, StageSettings, card_baselines, card_results, headline_metric

logger = logging.getLogger(__name__)

_NOT_FLAGS = ("final_subdir",)  # set by the runner: the stage folder itself is the checkpoint


def _training_flags_dataclass() -> type:
    """`MeSaTrainingArguments` as flags: the same names, types, help and choices; every default None ("keep the
    recipe's value"), on/off switches False; ``output_dir`` required."""
    hints = typing.get_type_hints(MeSaTrainingArguments)
    fields = []
    for f in dataclasses.fields(MeSaTrainingArguments):
        if f.name in _NOT_FLAGS:
            continue
        metadata = dict(f.metadata)
        kind = hints[f.name]
        if f.name == "output_dir":
            fields.append((f.name, kind, field(metadata=metadata)))
        elif kind is bool and f.default is False:
            fields.append((f.name, bool, field(default=False, metadata=metadata)))
        else:
            base = typing.get_args(kind)[0] if type(None) in typing.get_args(kind) else kind
            metadata["help"] = f"{metadata.get('help', '')} (default: the recipe's; library default {f.default!r})"
            fields.append((f.name, base | None, field(default=None, metadata=metadata)))
    return dataclasses.make_dataclass("TrainingFlags", fields)


TrainingFlags = _training_flags_dataclass()


@dataclass
class StageRunArguments:
    """Flags both scripts share: recipe, total batch, model geometry, synthetic-world sizes, output and the Hub."""

    recipe: str | None = field(
        default=None,
        metadata={
            "help": "hyper-parameters: 'paper' (SimMIM / Monodepth2 / MIM-Depth) or 'demo' (synthetic world on a "
            "CPU); default: demo when every dataset is synthetic, else paper",
            "choices": RECIPES,
        },
    )
    total_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "total batch = processes x per-device batch x accumulation; the missing one of the two is "
            "chosen to reach it (default: the paper's total batch with --recipe paper)"
        },
    )
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "Swin-V2 stochastic depth (default: the checkpoint's / preset's)"}
    )
    image_size: list[int] | None = field(
        default=None, metadata={"help": "training crop / frame size: HEIGHT WIDTH", "metavar": "PIXELS"}
    )
    num_synthetic_samples: int | None = field(default=None, metadata={"help": "size of each synthetic training set"})
    num_eval_samples: int | None = field(default=None, metadata={"help": "held-out synthetic scenes"})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache (default: the HF cache)"})
    print_summary: bool = field(default=True, metadata={"help": "print the result tables at the end"})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the final folder (needs --hub_model_id)"})
    hub_model_id: str | None = field(default=None, metadata={"help": "user/name of the model repository"})
    hub_private: bool = field(default=False, metadata={"help": "make the Hub repository private"})
    hub_token: str | None = field(default=None, metadata={"help": "default: the token of `hf auth login`"})


def build_parser(script_arguments: type, description: str | None = None):
    """An `HfArgumentParser` over (script dataclass, `StageRunArguments`, `FolderOptions`, `TrainingFlags`)."""
    import argparse

    from transformers import HfArgumentParser

    return HfArgumentParser(
        (script_arguments, StageRunArguments, FolderOptions, TrainingFlags),
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parse_arguments(parser, argv=None) -> tuple[Any, StageRunArguments, FolderOptions, Any]:
    """(script arguments, `StageRunArguments`, `FolderOptions`, `TrainingFlags`); bad combinations exit with one
    line from argparse."""
    script, run, folder, flags = parser.parse_args_into_dataclasses(args=argv)
    if run.image_size is not None and len(run.image_size) != 2:
        parser.error(f"--image_size takes HEIGHT WIDTH, got {run.image_size}")
    if run.push_to_hub and not run.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/mesa-nyuv2)")
    if getattr(flags, "streaming", False) and flags.max_train_steps is None:
        parser.error("--streaming needs --max_train_steps (a stream has no epochs: the run counts updates)")
    check_fsdp_flag(parser, flags)
    return script, run, folder, flags


def check_fsdp_flag(parser, flags) -> None:
    """With ``--fsdp``: exit 2 with one line when sharding could not take effect (a single process, fp16), instead
    of training replicated. Starts the process group (`loop.process_state`) to count the processes."""
    mode = getattr(flags, "fsdp", None)
    if not mode:
        return
    from .sharding import check_fsdp_possible

    precision = training_overrides(flags).get("mixed_precision")
    try:
        if precision == "fp16":
            raise ValueError("--fsdp does not support fp16 mixed precision (no sharded grad scaler); use bf16")
        check_fsdp_possible(mode, process_state(bool(getattr(flags, "use_cpu", False))).num_processes)
    except (ValueError, RuntimeError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        sys.exit(2)


def training_overrides(flags) -> dict[str, Any]:
    """`MeSaTrainingArguments` fields set on the command line (None = keep the recipe's value); the precision
    defaults to what `accelerate launch` / `accelerate config` set."""
    values = {f.name: getattr(flags, f.name) for f in dataclasses.fields(flags) if f.name != "output_dir"}
    for switch in ("with_tracking", "use_cpu", "torch_compile", "streaming"):
        values[switch] = values[switch] or None
    if values.get("mixed_precision") is None:
        values["mixed_precision"] = os.environ.get("ACCELERATE_MIXED_PRECISION") or None
    return {k: v for k, v in values.items() if v is not None}


def stage_settings(run: StageRunArguments, flags, skip_if_complete: bool, recipe: str, **extra: Any) -> StageSettings:
    """The `StageSettings` of a script run (`extra`: more `StageSettings` fields, e.g. ``config_overrides``)."""
    backbone = {"drop_path_rate": run.drop_path_rate} if run.drop_path_rate is not None else {}
    return StageSettings(
        output_dir=flags.output_dir,
        recipe=recipe,
        training=training_overrides(flags),
        total_train_batch_size=run.total_batch_size,
        image_size=tuple(run.image_size) if run.image_size else None,
        backbone_overrides=backbone,
        num_synthetic_samples=run.num_synthetic_samples,
        num_eval_samples=run.num_eval_samples,
        cache_dir=run.cache_dir,
        skip_if_complete=skip_if_complete,
        **extra,
    )


def load_stage_dataset(
    stage: str,
    spec: str,
    run: StageRunArguments,
    folder: FolderOptions,
    split: str | None = None,
    file_list: str | None = None,
    splits_path: str | None = None,
    intrinsics: typing.Sequence[float] | None = None,
    frame_offsets: typing.Sequence[int] | None = None,
    streaming: bool = False,
):
    """The training data of `stage` from `spec` (`load_dataset_spec` with the stage's data kind and the run's cache).
    `file_list` and `splits_path` apply to depth stages, `intrinsics` and `frame_offsets` to video; None = unset.
    `streaming`: a `datasets.IterableDataset` (``--streaming``), else a map-style `Dataset`."""
    kind = get_stage(stage).dataset_kind
    given: dict[str, Any] = {}
    if kind == "depth":
        given = {"file_list": file_list, "splits_path": splits_path}
    elif kind == "video":
        given = {"intrinsics": intrinsics, "frame_offsets": frame_offsets}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v}
    return load_dataset_spec(
        spec, kind, split=split, cache_dir=run.cache_dir, folder=folder, streaming=streaming, **options
    )


def load_eval_dataset(spec: str, run: StageRunArguments, folder: FolderOptions, splits_path: str | None = None):
    """A held-out depth dataset (its ``test`` split) from `spec`, in the run's cache."""
    options = {"splits_path": splits_path} if splits_path else {}
    return load_dataset_spec(spec, "depth", split="test", cache_dir=run.cache_dir, folder=folder, **options)


def setup_logging(flags=None) -> None:
    """Start the process group (`loop.process_state`); mesa-hf's INFO lines on the main process only; datasets'
    and transformers' progress bars off (the runner shows one per stage)."""
    import datasets
    import transformers

    level = logging.INFO if process_state(bool(getattr(flags, "use_cpu", False))).is_main_process else logging.ERROR
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("mesa_hf").setLevel(level)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def is_main_process() -> bool:
    return process_state().is_main_process


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


def _metric(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.4f}" if key in metrics else "-"


def format_summary(results: list[StageResult]) -> str:
    """A plain-text table: per stage, training loss first -> last, the held-out metric before -> after."""
    lines = [
        f"{'stage':<11} {'steps':>6} {'loss first -> last (window means)':<36} {'held-out metric':<24} "
        f"{'before':>8} {'after':>8}"
    ]
    for r in results:
        curve = r.loss_curve
        loss = f"{curve[0]:.4f} -> {curve[-1]:.4f}" if curve else "-"
        key = headline_metric(r.stage, r.eval_after)
        lines.append(
            f"{r.stage:<11} {r.global_step:>6} {loss:<36} {key:<24} {_metric(r.eval_before, key):>8} "
            f"{_metric(r.eval_after, key):>8}" + ("  (already complete)" if r.skipped else "")
        )
    return "\n".join(lines)


def format_comparison(result: StageResult) -> str:
    """Held-out depth metrics of the model next to the average-training-depth-map baseline."""
    if not result.eval_after or "abs_rel" not in result.eval_after:
        return ""
    rows = [("model", result.eval_after)]
    if result.baseline:
        rows.append(("average training depth map", result.baseline))
    keys = ("abs_rel", "rmse", "d1", "median_scaled_abs_rel", "median_scaled_d1")
    lines = [f"{'held-out scenes':<28} " + " ".join(f"{k:>21}" for k in keys)]
    for name, metrics in rows:
        lines.append(f"{name:<28} " + " ".join(f"{_metric(metrics, k):>21}" for k in keys))
    return "\n".join(lines)


def print_results(results: list[StageResult], closing: str) -> None:
    """The summary table, the model-vs-baseline comparison of the last stage, and `closing`."""
    print("\n" + format_summary(results))
    comparison = format_comparison(results[-1])
    if comparison:
        print("\n" + comparison)
    print("\n" + closing)


def push_stage_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Push a finished stage folder: shareable weights/config/processor/code + model card + stage_results.json."""
    from ..hub import build_model_card, push_to_hub
    from ..image_processing_mesa import MeSaImageProcessor

    folder = Path(folder)
    recorded = json.loads((folder / STAGE_RESULTS_NAME).read_text())
    model = get_stage(recorded["stage"]).model_class.from_pretrained(folder)
    processor = MeSaImageProcessor.from_pretrained(folder)
    card = build_model_card(
        model,
        model_id=repo_id,
        repo_id=repo_id,
        image_processor=processor,
        stages=recorded.get("stages") or [],
        results=card_results(recorded),
        baselines=card_baselines(recorded),
    )
    url = push_to_hub(
        model,
        processor,
        repo_id,
        model_card=card,
        extra_files={STAGE_RESULTS_NAME: folder / STAGE_RESULTS_NAME},
        private=private or None,
        token=token,
    )
    logger.info("pushed %s to %s", folder, url)
    return url


def push_from_main(run: StageRunArguments, folder: str | os.PathLike) -> None:
    """With ``--push_to_hub``: the main process pushes `folder`; every process waits until it has."""
    if run.push_to_hub and is_main_process():
        print("pushed:", push_stage_folder(folder, run.hub_model_id, run.hub_private, run.hub_token))
    wait_for_everyone()


__all__ = [
    "StageRunArguments",
    "TrainingFlags",
    "build_parser",
    "check_fsdp_flag",
    "format_comparison",
    "format_summary",
    "is_main_process",
    "parse_arguments",
    "print_results",
    "push_from_main",
    "push_stage_folder",
    "setup_logging",
    "stage_settings",
    "training_overrides",
    "wait_for_everyone",
]

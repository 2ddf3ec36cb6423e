"""Argument parsing and reporting shared by ``examples/pretrain.py`` and ``examples/finetune.py``.

The scripts are thin: they parse arguments here, call `mesa_hf.training.stages.run_stage(s)`, print the summary
and optionally push the last folder to the Hub through `mesa_hf.hub.push_to_hub`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from .stages import STAGE_RESULTS_NAME, StageResult, card_results, get_stage

logger = logging.getLogger(__name__)

TRAINING_FLAGS = {
    "max_train_steps": int,
    "num_train_epochs": int,
    "per_device_train_batch_size": int,
    "gradient_accumulation_steps": int,
    "learning_rate": float,
    "min_learning_rate": float,
    "weight_decay": float,
    "layer_decay": float,
    "max_grad_norm": float,
    "num_warmup_steps": int,
    "checkpointing_steps": int,
    "save_total_limit": int,
    "eval_steps": int,
    "logging_steps": int,
    "dataloader_num_workers": int,
}


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by both scripts: recipe, preset, run length, optimiser, precision, checkpoints, Hub."""
    group = parser.add_argument_group("training (unset flags keep the recipe's value)")
    group.add_argument("--output_dir", required=True, help="run folder")
    group.add_argument(
        "--recipe",
        choices=("paper", "demo"),
        default=None,
        help="hyper-parameters: 'paper' (SimMIM / Monodepth2 / MIM-Depth) or 'demo' (synthetic world on a CPU); "
        "default: demo when every dataset is synthetic, else paper",
    )
    group.add_argument("--seed", type=int, default=42)
    for name, kind in TRAINING_FLAGS.items():
        group.add_argument(f"--{name}", type=kind, default=None)
    group.add_argument(
        "--lr_schedule",
        choices=("mim_depth", "cosine", "linear", "constant"),
        default=None,
        help="learning-rate schedule",
    )
    group.add_argument(
        "--mixed_precision",
        choices=("no", "bf16", "fp16"),
        default=os.environ.get("ACCELERATE_MIXED_PRECISION") or None,
        help="default: what `accelerate launch` / `accelerate config` set, else 'no'",
    )
    group.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' (finished stages are skipped, the running one resumes from its newest checkpoint) or a "
        "checkpoint folder",
    )
    group.add_argument("--with_tracking", action="store_true", help="log to Accelerate trackers (--report_to)")
    group.add_argument("--report_to", default="all")
    group.add_argument("--image_size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=None)
    group.add_argument("--num_synthetic_samples", type=int, default=None, help="size of each synthetic training set")
    group.add_argument("--num_eval_samples", type=int, default=None, help="held-out synthetic scenes")
    group.add_argument("--cache_dir", default=None, help="datasets cache (default: the HF cache)")
    group.add_argument("--use_cpu", action="store_true", help="train on the CPU even with an accelerator present")
    hub = parser.add_argument_group("Hub")
    hub.add_argument("--push_to_hub", action="store_true", help="upload the final folder (needs --hub_model_id)")
    hub.add_argument("--hub_model_id", default=None, help="user/name of the model repository")
    hub.add_argument("--hub_private", action="store_true")
    hub.add_argument("--hub_token", default=None, help="default: the token of `hf auth login`")


def check_hub_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/mesa-nyuv2)")


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """`MeSaTrainingArguments` fields set on the command line (None = keep the recipe's value)."""
    values = {name: getattr(args, name) for name in TRAINING_FLAGS}
    values.update(
        seed=args.seed,
        lr_schedule=args.lr_schedule,
        mixed_precision=args.mixed_precision,
        resume_from_checkpoint=args.resume_from_checkpoint,
        with_tracking=args.with_tracking or None,
        report_to=args.report_to,
        use_cpu=args.use_cpu or None,
    )
    return {k: v for k, v in values.items() if v is not None}


def setup_logging() -> None:
    from accelerate import PartialState

    level = logging.INFO if PartialState().is_main_process else logging.ERROR
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("mesa_hf").setLevel(level)


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


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
        if "masked_loss" in r.eval_after:
            key = "masked_loss"
        elif r.stage == "geometric":
            key = "median_scaled_abs_rel"
        else:
            key = "abs_rel"
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
        results=card_results(recorded)[:1],
        baselines=card_results(recorded)[1:],
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


__all__ = [
    "add_training_arguments",
    "check_hub_arguments",
    "format_comparison",
    "format_summary",
    "is_main_process",
    "push_stage_folder",
    "setup_logging",
    "training_overrides",
]

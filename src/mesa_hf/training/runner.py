"""Running a stage: `run_stage(stage, source, settings)` trains one stage of `mesa_hf.training.recipes.STAGES` end to
end and writes a complete checkpoint folder; `run_stages` chains stages, each from the previous stage's folder.

Each stage folder is a complete ``save_pretrained`` checkpoint (weights, config with the ``mesa_stages`` record of
every stage so far, the image processor it trained with, ``README.md`` model card, ``stage_results.json`` with the
resolved recipe) plus ``checkpoints/`` with the resumable training state. ``stage_results.json`` is written last,
by the main process only, and marks the folder complete; every other process waits for it
(``accelerator.wait_for_everyone()``) before the next stage reads the folder.

The next stage calls ``NextClass.from_pretrained(previous_stage_dir)``: the encoder (and the depth decoder/head
where both stages have one) carry over, the new stage's own heads are initialised. The loading messages expected
for a transition (`recipes.EXPECTED_LOADING_MESSAGES`) are logged as one line; anything else in full.
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

import torch

from ..configuration_mesa import PRESETS, MeSaConfig
from ..modeling_mesa import MeSaPreTrainedModel
from .arguments import MeSaTrainingArguments
from .loop import TrainingResult, build_accelerator, process_state, train
from .recipes import (
    DEMO_EVAL_SAMPLES,
    EXPECTED_LOADING_MESSAGES,
    HELDOUT_SEED,
    ResolvedRecipe,
    StageSpec,
    get_stage,
    resolve_recipe,
)
from .stage_data import (
    PixelNormalization,
    SeededTransformDataset,
    build_eval_transform,
    image_size_of,
    stack_collator,
    stage_processor,
    synthetic_dataset,
)
from .stage_eval import eval_dataloader, evaluate_constant_map, evaluate_depth, evaluate_masked, mean_depth_map

logger = logging.getLogger(__name__)

STAGE_RESULTS_NAME = "stage_results.json"
LOSS_HISTORY_POINTS = 60  # window means kept of a stage's training loss (for loss-curve figures)
DEPTH_MODULES = ("decoder", "depth_head", "scale_heads")


@dataclass
class StageSettings:
    """How to run a stage (everything but the stage, the starting model and the data).

    Attributes:
        output_dir: the stage folder (for `run_stages`: the root, one sub-folder per stage).
        recipe: ``"paper"`` or ``"demo"``; None = ``"demo"`` for synthetic data, else ``"paper"``.
        training: `MeSaTrainingArguments` fields over the recipe (None values ignored).
        total_train_batch_size: the total batch to reach (processes x per-device batch x accumulation).
        args: complete `MeSaTrainingArguments` instead of the recipe (``final_subdir`` is forced to "").
        image_size: training crop / frame size (H, W); default: the backbone's ``image_size``.
        config_overrides, backbone_overrides: MeSaConfig / Swin-V2 fields over the stage's defaults
            (e.g. ``{"drop_path_rate": 0.0}``).
        num_synthetic_samples, num_eval_samples: synthetic set sizes (defaults from the demo recipe).
        cache_dir: datasets cache for the synthetic world.
        data_description, model_id: how the data and the model are named in the model card.
        compute_baseline: also evaluate the "average training depth map" (depth stages with held-out data).
        skip_if_complete: return the recorded result when `output_dir` already holds this stage's finished folder.
        transform_options: arguments of the training transform (e.g. ``{"jitter": False}``).
    """

    output_dir: str | os.PathLike
    recipe: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    total_train_batch_size: int | None = None
    args: MeSaTrainingArguments | None = None
    image_size: Sequence[int] | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)
    backbone_overrides: dict[str, Any] = field(default_factory=dict)
    num_synthetic_samples: int | None = None
    num_eval_samples: int | None = None
    cache_dir: str | None = None
    data_description: str | None = None
    model_id: str | None = None
    compute_baseline: bool = True
    skip_if_complete: bool = False
    transform_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    """What `run_stage` returns (also written to ``<output_dir>/stage_results.json``). `loss_curve`: the training
    loss as 8 window means (logs, model card); `loss_history`: as about `LOSS_HISTORY_POINTS` window means."""

    stage: str
    output_dir: str
    global_step: int
    first_loss: float | None
    last_loss: float | None
    loss_curve: list[float]
    loss_history: list[float] = field(default_factory=list)
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    loading_info: dict[str, list[str]] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    resolved_recipe: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- models


def module_names(keys: Sequence[str]) -> list[str]:
    """Collapse parameter names to their modules (``decoder.conv_layers.0.weight`` -> ``decoder``), sorted."""
    names = set()
    for key in keys:
        parts = key.split(".")
        names.add(".".join(parts[:3]) if parts[0] == "backbone" else parts[0])
    return sorted(names)


def _apply_overrides(config: MeSaConfig, config_overrides: dict[str, Any], backbone_overrides: dict[str, Any]) -> None:
    for key, value in config_overrides.items():
        setattr(config, key, value)
    for key, value in backbone_overrides.items():
        setattr(config.backbone_config, key, value)


def _from_pretrained_quietly(model_class, name: str, config: MeSaConfig):
    """``from_pretrained(..., output_loading_info=True)`` with transformers' LOAD REPORT held back by a logging
    filter (the caller reports what is unexpected); every other transformers message passes."""
    from ..evaluation.inference import load_report_held_back

    with load_report_held_back():
        return model_class.from_pretrained(name, config=config, output_loading_info=True)


def report_loading(stage: str, source: str, previous_stage: str | None, loading: dict[str, list[str]]) -> None:
    """One line when the missing/unused weights are the ones expected for ``previous_stage -> stage``; otherwise
    every missing and unused key in full (a warning)."""
    missing, unused = list(loading.get("missing_keys") or []), list(loading.get("unexpected_keys") or [])
    if not (missing or unused):
        return
    expected = EXPECTED_LOADING_MESSAGES.get((previous_stage, stage))
    if (
        expected
        and set(module_names(missing)) <= set(expected["newly_initialized"])
        and set(module_names(unused)) <= set(expected["unused"])
    ):
        logger.info(
            "%s: loaded %s (%s stage) as expected: newly initialised %s; not used %s",
            stage,
            source,
            previous_stage,
            ", ".join(module_names(missing)) or "nothing",
            ", ".join(module_names(unused)) or "nothing",
        )
        return
    logger.warning(
        "%s: loading %s (stage %s) left weights that mesa-hf does not expect for this transition:\n"
        "  newly initialised: %s\n  not used: %s",
        stage,
        source,
        previous_stage or "unknown",
        ", ".join(missing) or "none",
        ", ".join(unused) or "none",
    )


def load_stage_model(
    stage: str | StageSpec,
    model_name_or_path: str | os.PathLike | MeSaPreTrainedModel,
    config_overrides: dict[str, Any] | None = None,
    backbone_overrides: dict[str, Any] | None = None,
) -> tuple[MeSaPreTrainedModel, dict[str, list[str]]]:
    """The stage's model: from a preset name (new weights), a previous stage's folder or Hub id (carried weights),
    or an existing model instance (its weights, the stage's class).

    Returns the model and its loading info: ``newly_initialized`` and ``unused`` module names (empty for a preset).
    """
    spec = get_stage(stage)
    stage = spec.name
    config_overrides, backbone_overrides = dict(config_overrides or {}), dict(backbone_overrides or {})
    if isinstance(model_name_or_path, MeSaPreTrainedModel):
        config = copy.deepcopy(model_name_or_path.config)
        _apply_overrides(config, config_overrides, backbone_overrides)
        model = spec.model_class(config)
        result = model.load_state_dict(model_name_or_path.state_dict(), strict=False)
        return model, {
            "newly_initialized": module_names(result.missing_keys),
            "unused": module_names(result.unexpected_keys),
        }
    name = str(model_name_or_path)
    if name in PRESETS:
        config = MeSaConfig.from_preset(name, backbone_overrides=backbone_overrides or None, **config_overrides)
        config.mesa_stages = []
        return spec.model_class(config), {"newly_initialized": [], "unused": [], "from_preset": [name]}
    if not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in name:
        raise ValueError(
            f"model_name_or_path {name!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor an existing folder"
        )
    config = MeSaConfig.from_pretrained(name)
    recorded = [s for s in (getattr(config, "mesa_stages", None) or []) if isinstance(s, dict)]
    previous_stage = recorded[-1].get("name") if recorded else None
    _apply_overrides(config, config_overrides, backbone_overrides)
    config.validate()
    model, loading = _from_pretrained_quietly(spec.model_class, name, config)
    mismatched = loading.get("mismatched_keys") or []
    if mismatched:
        raise ValueError(f"{name}: weights with mismatched shapes for {stage}: {mismatched}")
    report_loading(stage, name, previous_stage, loading)
    info = {
        "newly_initialized": module_names(loading.get("missing_keys", [])),
        "unused": module_names(loading.get("unexpected_keys", [])),
    }
    return model, info


def prepare_stage_modules(model: torch.nn.Module, spec: StageSpec, seed: int) -> None:
    """`spec.reinitialized` modules drawn anew with PyTorch's default init (seeded by `seed`: the same draw whatever
    the starting weights), then `spec.frozen` modules' parameters taken out of training."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for name in spec.reinitialized:
        for module in getattr(model, name).modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    torch.random.set_rng_state(generator_state)
    for name in spec.frozen:
        getattr(model, name).requires_grad_(False)


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


# ---------------------------------------------------------------------------------------------- steps of a stage


def _loss_summary(losses: list[float], points: int = 8) -> list[float]:
    """The loss curve as `points` window means (for logs and the results file)."""
    if not losses:
        return []
    size = max(len(losses) // points, 1)
    return [round(sum(losses[i : i + size]) / len(losses[i : i + size]), 5) for i in range(0, len(losses), size)]


def _stage_complete(output_dir: Path, stage: str) -> bool:
    path = output_dir / STAGE_RESULTS_NAME
    if not (path.is_file() and (output_dir / "config.json").is_file()):
        return False
    try:
        return json.loads(path.read_text()).get("stage") == stage
    except json.JSONDecodeError:
        return False


def _recorded_result(output_dir: Path) -> StageResult:
    recorded = json.loads((output_dir / STAGE_RESULTS_NAME).read_text())
    names = {f.name for f in dataclasses.fields(StageResult)}
    return StageResult(**{**{k: v for k, v in recorded.items() if k in names}, "skipped": True})


def _synthetic_data(spec: StageSpec, settings: StageSettings, config: MeSaConfig, image_size, need_eval: bool):
    """The stage's synthetic training world and its held-out scenes, built by the main process first (the others
    read the datasets cache), behind one progress bar."""
    from tqdm.auto import tqdm

    num = settings.num_synthetic_samples or spec.demo.get("num_samples", 256)
    extra = {name: _as_option(getattr(config, name)) for name in spec.synthetic_options}
    state = process_state(bool(settings.training.get("use_cpu")))
    with state.main_process_first():
        bar = tqdm(
            total=1 + need_eval, desc=f"{spec.name}: synthetic world", leave=False, disable=not state.is_main_process
        )
        dataset = synthetic_dataset(
            spec.dataset_kind, num, image_size, spec.synthetic_seed, settings.cache_dir, **extra
        )
        bar.update(1)
        eval_dataset = None
        if need_eval:
            eval_num = settings.num_eval_samples or DEMO_EVAL_SAMPLES
            eval_dataset = synthetic_dataset(spec.eval_kind, eval_num, image_size, HELDOUT_SEED, settings.cache_dir)
            bar.update(1)
        bar.close()
    description = f"synthetic world ({num} {spec.dataset_kind} rows, {image_size[0]}x{image_size[1]})"
    return dataset, eval_dataset, description


def _stream_or_table(dataset, streaming: bool, stage: str):
    """`dataset` as the stage reads it: a `datasets.IterableDataset` with `streaming` (a map-style one, e.g. the
    synthetic world, becomes one of up to 64 shards), else map-style (a stream is refused in one line)."""
    from datasets import IterableDataset

    if streaming and not isinstance(dataset, IterableDataset):
        return dataset.to_iterable_dataset(num_shards=min(len(dataset), 64))
    if not streaming and isinstance(dataset, IterableDataset):
        raise ValueError(f"{stage}: the training data is a stream (IterableDataset); train it with --streaming")
    return dataset


def _as_option(value: Any) -> Any:
    """A config value as a builder argument (lists become tuples: hashable, as the datasets cache needs)."""
    return tuple(value) if isinstance(value, list) else value


def _eval_function(spec: StageSpec, loader, accelerator):
    """``fn(model) -> metrics`` of the stage on the held-out loader (sharded over the processes): the SimMIM loss
    for an images set, else the depth metrics (only `spec.eval_metrics` when it names them)."""
    evaluate = {"images": evaluate_masked, "depth": evaluate_depth}[spec.eval_kind]
    kept = spec.eval_metrics

    def stage_eval(model):
        metrics = evaluate(model, loader, accelerator)
        return metrics if kept is None else {k: v for k, v in metrics.items() if k in kept}

    return stage_eval


def average_depth_map_baseline(
    train_dataset, eval_loader, config: MeSaConfig, accelerator=None, max_rows: int = 1000
) -> dict[str, float]:
    """Held-out metrics of the "average training depth map" (per-pixel mean of the training depth, up to `max_rows`
    evenly spaced rows), metric and median-scaled. Raises ValueError when training and held-out sizes differ."""
    if hasattr(train_dataset, "select") and len(train_dataset) > max_rows:
        step = len(train_dataset) / max_rows
        train_dataset = train_dataset.select([int(i * step) for i in range(max_rows)])
    train_rows = train_dataset.with_transform(build_eval_transform("depth", config, image_size_of(config)))
    mean_map = mean_depth_map(train_rows)
    return evaluate_constant_map(mean_map, eval_loader, accelerator, max_depth=config.max_depth)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def headline_metric(stage: str | StageSpec, metrics: dict[str, float]) -> str:
    """The held-out metric `stage` is judged by (`StageSpec.headline_metric`: SimMIM loss, median-scaled AbsRel
    or AbsRel); the SimMIM loss whenever `metrics` hold it."""
    return "masked_loss" if "masked_loss" in metrics else get_stage(stage).headline_metric


_CARD_PROTOCOL = "held-out scenes, no crop, valid 1e-3-10 m, metric (no scaling), no TTA"


def card_results(stage_result: dict[str, Any]) -> list[dict[str, Any]]:
    """Model-card evaluation rows of a stage result: the model's own held-out metrics (its `model-index`)."""
    after = stage_result.get("eval_after") or {}
    if "abs_rel" not in after:
        return []
    return [{"dataset": "held-out", "protocol": _CARD_PROTOCOL, **after}]


def card_baselines(stage_result: dict[str, Any]) -> list[dict[str, Any]]:
    """Reference rows that are not the model (the average-depth-map baseline): the card's text only."""
    after, baseline = stage_result.get("eval_after") or {}, stage_result.get("baseline") or {}
    if "abs_rel" not in after or not baseline:
        return []
    return [{"dataset": "held-out: average training depth map", "protocol": _CARD_PROTOCOL, **baseline}]


def _finish_stage_folder(output_dir: Path, stages, stage_result: StageResult, model, model_id, processor) -> None:
    """Main process only: record the stages in config.json, write the model card and stage_results.json (last:
    marks completion)."""
    from ..hub import build_model_card

    config_path = output_dir / "config.json"
    saved = json.loads(config_path.read_text())
    saved["mesa_stages"] = stages
    tmp = config_path.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, config_path)
    card = build_model_card(
        model,
        model_id=model_id or output_dir.name,
        image_processor=processor,
        stages=stages,
        results=card_results(stage_result.to_dict()),
        baselines=card_baselines(stage_result.to_dict()),
        remote_code=False,
    )
    card.save(output_dir / "README.md")
    tmp = output_dir / f".{STAGE_RESULTS_NAME}.tmp"
    tmp.write_text(json.dumps(stage_result.to_dict(), indent=1) + "\n")
    os.replace(tmp, output_dir / STAGE_RESULTS_NAME)


def _resolve_arguments(
    stage: StageSpec, settings: StageSettings, recipe: str, config: MeSaConfig, num_samples: int, num_processes: int
) -> tuple[MeSaTrainingArguments, ResolvedRecipe]:
    if settings.args is not None:
        args = dataclasses.replace(settings.args, output_dir=str(settings.output_dir), final_subdir="")
        fixed = {
            k: getattr(args, k)
            for k in ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "num_warmup_steps")
        }
        _, resolved = resolve_recipe(
            stage, settings.output_dir, recipe, config=config, num_train_samples=num_samples,
            num_processes=num_processes, max_train_steps=args.max_train_steps, **fixed,
        )  # fmt: skip
        return args, resolved
    return resolve_recipe(
        stage,
        settings.output_dir,
        recipe,
        config=config,
        num_train_samples=num_samples,
        num_processes=num_processes,
        total_train_batch_size=settings.total_train_batch_size,
        **settings.training,
    )


def run_stage(
    stage: str | StageSpec,
    model_name_or_path: str | os.PathLike | MeSaPreTrainedModel,
    settings: StageSettings,
    dataset=None,
    eval_dataset=None,
) -> StageResult:
    """Train one stage and write a complete checkpoint folder (on every process; the main process writes).

    Args:
        stage: a `StageSpec`, or the name of a registered one (``masked``, ``geometric``, ``supervised``,
            ``finetune``).
        model_name_or_path: a preset name (new weights), a previous stage's folder / Hub id, or a model.
        settings: a `StageSettings`.
        dataset: the stage's raw dataset (kind `StageSpec.dataset_kind`); None = the synthetic world.
        eval_dataset: a held-out raw dataset (depth kind; images kind for ``masked``); None with synthetic data =
            held-out synthetic scenes; None otherwise = no evaluation.

    Returns a `StageResult`; the folder holds weights, config (with ``mesa_stages``), processor, README.md and
    ``stage_results.json``.
    """
    from accelerate.utils import set_seed

    spec = get_stage(stage)
    stage = spec.name  # for messages and records; the spec travels
    process_state(bool(settings.training.get("use_cpu")))  # before anything else asks Accelerate
    output_dir = Path(settings.output_dir)
    synthetic = dataset is None
    recipe = settings.recipe or ("demo" if synthetic else "paper")
    if settings.skip_if_complete and _stage_complete(output_dir, stage):
        logger.info("%s: stage %s already complete, skipping", output_dir, stage)
        return _recorded_result(output_dir)

    # the model: the stage's configuration defaults, then the caller's overrides
    config_values = spec.config_values(recipe)
    backbone_values = spec.backbone_values(recipe)
    config_values.update(settings.config_overrides)
    if "backbone" in spec.frozen:
        backbone_values["drop_path_rate"] = 0.0  # a frozen encoder's features are those of evaluation
    backbone_values.update(settings.backbone_overrides)
    seed = settings.args.seed if settings.args is not None else settings.training.get("seed", 42)
    set_seed(seed)
    model, loading_info = load_stage_model(spec, model_name_or_path, config_values, backbone_values)
    config = model.config
    if recipe == "demo" and spec.demo.get("pytorch_init_new_convs", True):
        _reset_new_convolutions(model, loading_info)
    prepare_stage_modules(model, spec, seed)
    image_size = tuple(int(s) for s in (settings.image_size or image_size_of(config)))
    processor = stage_processor(model_name_or_path, image_size)
    normalization = PixelNormalization.for_processor(processor)

    # the data
    data_description = settings.data_description
    if synthetic:
        dataset, synthetic_eval, description = _synthetic_data(spec, settings, config, image_size, eval_dataset is None)
        eval_dataset = eval_dataset if eval_dataset is not None else synthetic_eval
        data_description = data_description or description
    if data_description is None:
        data_description = getattr(getattr(dataset, "info", None), "dataset_name", None) or "custom dataset"
    options = dict(spec.demo.get("transform", {})) if recipe == "demo" else {}
    options.update(settings.transform_options)
    transform = spec.training_transform(config, image_size, **options)
    streaming = settings.args.streaming if settings.args is not None else bool(settings.training.get("streaming"))
    dataset = _stream_or_table(dataset, streaming, stage)

    # the recipe for this many processes
    state = process_state(bool(settings.training.get("use_cpu")))
    num_samples = None if streaming else len(dataset)
    args, resolved = _resolve_arguments(spec, settings, recipe, config, num_samples, state.num_processes)
    logger.info("%s", resolved.describe())
    if streaming:
        from .streaming import StreamingRows

        train_dataset = StreamingRows(
            dataset, transform, seed, state.process_index, state.num_processes, args.dataloader_num_workers,
            args.shuffle_buffer_size, normalization,
        )  # fmt: skip
    else:
        train_dataset = SeededTransformDataset(dataset, transform, seed, normalization)
    accelerator = build_accelerator(args)

    # held-out evaluation before training (sharded over the processes), and the baseline
    eval_fn, eval_before, baseline = None, {}, {}
    if eval_dataset is not None:
        eval_rows = SeededTransformDataset(
            eval_dataset, build_eval_transform(spec.eval_kind, config, image_size), 0, normalization
        )
        eval_loader = eval_dataloader(eval_rows, accelerator=accelerator)
        eval_fn = _eval_function(spec, eval_loader, accelerator)
        eval_before = eval_fn(model)
        logger.info("%s: held-out evaluation before training: %s", stage, _fmt(eval_before))
        if settings.compute_baseline and spec.baseline and not streaming:  # the baseline reads the whole set
            try:
                baseline = average_depth_map_baseline(dataset, eval_loader, config, accelerator)
            except ValueError as err:
                logger.warning("%s: no average-training-depth-map baseline: %s", stage, err)

    result: TrainingResult = train(
        model,
        train_dataset,
        args,
        data_collator=stack_collator,
        eval_fn=eval_fn,
        accelerator=accelerator,
        processor=processor,
    )
    if resolved.updates_per_epoch is not None and resolved.updates_per_epoch != result.updates_per_epoch:
        logger.warning(
            "%s: %d updates per epoch resolved, %d run", stage, resolved.updates_per_epoch, result.updates_per_epoch
        )
    stage_result = _stage_result(spec, config, result, eval_before, baseline, loading_info, data_description)
    stage_result.output_dir, stage_result.resolved_recipe = str(output_dir), resolved.to_dict()
    if accelerator.is_main_process:
        _finish_stage_folder(output_dir, stage_result.stages, stage_result, model, settings.model_id, processor)
    accelerator.wait_for_everyone()  # nothing reads the folder before the main process has finished it
    logger.info(
        "%s: loss %s; held-out after training: %s", stage, stage_result.loss_curve, _fmt(stage_result.eval_after)
    )
    return stage_result


def _stage_result(
    spec: StageSpec, config, result: TrainingResult, eval_before, baseline, loading_info, data_description
):
    eval_after = {k: v for k, v in (result.eval_history[-1] if result.eval_history else {}).items() if k != "step"}
    notes = [spec.card_note.format(config=config)] if spec.card_note else []
    if eval_after:
        key = headline_metric(spec, eval_after)
        notes.append(f"held-out {key} {eval_before.get(key, float('nan')):.4f} -> {eval_after[key]:.4f}")
    previous = [s for s in (getattr(config, "mesa_stages", None) or []) if isinstance(s, dict)]
    record = {
        "name": spec.name,
        "objective": spec.objective,
        "data": data_description,
        "steps": result.global_step,
        "notes": "; ".join(notes) or "-",
    }
    return StageResult(
        stage=spec.name,
        output_dir="",
        global_step=result.global_step,
        first_loss=result.losses[0] if result.losses else None,
        last_loss=result.losses[-1] if result.losses else None,
        loss_curve=_loss_summary(result.losses),
        loss_history=_loss_summary(result.losses, points=LOSS_HISTORY_POINTS),
        eval_before=eval_before,
        eval_after=eval_after,
        baseline=baseline,
        loading_info=loading_info,
        stages=previous + [record],
        resumed_from=result.resumed_from,
    )


def run_stages(
    stages: Sequence[str | StageSpec],
    model_name_or_path: str | os.PathLike,
    settings: StageSettings,
    datasets: dict[str, Any] | None = None,
    eval_datasets: dict[str, Any] | None = None,
) -> list[StageResult]:
    """Run `stages` in order, each from the previous stage's folder ``settings.output_dir/<stage>``.

    `datasets` / `eval_datasets` map stage names to raw datasets (missing = synthetic world / its held-out scenes).
    """
    datasets, eval_datasets = datasets or {}, eval_datasets or {}
    results = []
    source: str | os.PathLike = model_name_or_path
    for spec in (get_stage(stage) for stage in stages):
        folder = Path(settings.output_dir) / spec.name
        stage_settings = dataclasses.replace(settings, output_dir=folder)
        results.append(run_stage(spec, source, stage_settings, datasets.get(spec.name), eval_datasets.get(spec.name)))
        source = str(folder)
    return results


__all__ = [
    "STAGE_RESULTS_NAME",
    "StageResult",
    "StageSettings",
    "average_depth_map_baseline",
    "card_results",
    "headline_metric",
    "load_stage_model",
    "module_names",
    "report_loading",
    "run_stage",
    "run_stages",
]

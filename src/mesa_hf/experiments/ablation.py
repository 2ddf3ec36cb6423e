"""MeSa's experiment as one run: pre-training variants at an equal budget, identical fine-tuning, one held-out set.

Each variant pre-trains the same number of optimizer updates in total (split over its stages by `split_budget`),
then fine-tunes with the same recipe and number of updates, and is evaluated on the same held-out set; every
variant runs once per seed. Per run, the layer-wise CKA between the pre-trained and the fine-tuned encoder (the
paper's analysis: how much each Swin-V2 block changes in fine-tuning) is measured on held-out images.

Folder layout (``output_dir``)::

    <variant>/seed-<k>/<stage>/     every pre-training stage folder (a `run_stage` checkpoint folder)
    <variant>/seed-<k>/init/        "scratch": the initial weights that fine-tuning starts from
    <variant>/seed-<k>/finetune/    the fine-tuned model
    <variant>/seed-<k>/result.json  the run's measurements, written last (atomically): a run with it is finished
    results.json, report.md, metrics.png, cka.png, loss_curves.png

A killed run started again with ``resume=True`` skips finished runs and finished stages, and resumes an
interrupted stage from its newest checkpoint. The report is `mesa_hf.experiments.report`; the variants and metrics
are `mesa_hf.experiments.variants`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..training.loop import process_state
from ..training.recipes import DEMO_EVAL_SAMPLES, HELDOUT_SEED, PRETRAINING_ORDER, PROBE, StageSpec
from ..training.runner import StageResult, StageSettings, run_stage
from .variants import (
    DEFAULT_VARIANTS,
    FINETUNE,
    FULL,
    METRICS,
    PAPER_RMSE_CHANGE_PERCENT,
    QUICK,
    VARIANT_NAMES,
    VARIANTS,
)

logger = logging.getLogger(__name__)

CKA_INTERVAL_PERCENT = 95  # the CKA intervals' level (the jackknife's and, over seeds, Student's t)
RESULT_NAME = "result.json"
RESULTS_NAME = "results.json"
INIT_FOLDER = "init"


def split_budget(stages: Sequence[StageSpec], total_updates: int) -> dict[str, int]:
    """Split `total_updates` optimizer updates over `stages` in proportion to their demo-recipe lengths (masked
    120, geometric 240, supervised 500: MeSa's schedule, where the supervised stage is the longest): one update
    each, then the rest in proportion, rounded by largest remainder, so the parts sum to `total_updates` exactly.
    No stages = no updates. Keys: the stage names."""
    stages = list(stages)
    if not stages:
        return {}
    if total_updates < len(stages):
        names = [spec.name for spec in stages]
        raise ValueError(f"{total_updates} pre-training updates cannot be split over {len(stages)} stages {names}")
    weights = np.array([float(spec.demo["max_train_steps"]) for spec in stages])
    exact = (total_updates - len(stages)) * weights / weights.sum()
    parts = 1 + np.floor(exact).astype(int)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    for i in order[: total_updates - int(parts.sum())]:
        parts[i] += 1
    return {spec.name: int(n) for spec, n in zip(stages, parts)}


@dataclass
class AblationSettings:
    """What the ablation runs.

    Attributes:
        output_dir: the ablation folder (layout in the module docstring).
        variants: names from `VARIANTS`.
        seeds: one run per variant and seed (the seed of weights, data order and augmentation).
        pretrain_updates: optimizer updates of pre-training per variant, split over its stages (`split_budget`).
        finetune_updates: optimizer updates of fine-tuning (identical for every variant).
        probe_updates: optimizer updates of the frozen-encoder probe (`recipes.PROBE`, identical for every variant;
            on the pre-trained encoder, before fine-tuning; 0 = no probe). The "from scratch" variant's probe is the
            floor: a randomly initialised encoder.
        preset: the architecture (`MeSaConfig` preset) every variant starts from.
        recipe: ``"demo"`` / ``"paper"``; None = ``"demo"`` on the synthetic world, else ``"paper"``.
        training: `MeSaTrainingArguments` overrides for every stage (e.g. ``{"use_cpu": True}``).
        backbone_overrides, image_size: Swin-V2 fields (e.g. ``{"drop_path_rate": 0.0}``) and the training crop
            (H, W) of every stage (default: the recipe's).
        datasets: stage (``masked``, ``geometric``, ``supervised``, ``finetune``) -> raw dataset; a missing stage
            trains on the synthetic world.
        data_descriptions: stage -> how its data is named in the report (defaults: the dataset's name).
        eval_dataset, eval_protocol: the held-out set and its `mesa_hf.evaluation` protocol (``nyuv2``...); None =
            the synthetic world's held-out scenes, scored as the stages score them.
        ood_eval_dataset, ood_eval_protocol: an out-of-distribution set (e.g. iBims-1) and its protocol.
        cka_images: held-out images for the layer-wise CKA (>= 5; one full-batch debiased estimate per layer with
            a jackknife interval, `mesa_hf.analysis.layerwise_cka_results`).
        cka_permutations: shuffled image pairings of the CKA's permutation null (0 = none).
        num_synthetic_samples, num_eval_samples, cache_dir: synthetic-world sizes and the datasets cache.
        resume: skip finished runs and stages, resume an interrupted stage from its newest checkpoint.
    """

    output_dir: str | os.PathLike
    variants: Sequence[str] = DEFAULT_VARIANTS
    seeds: Sequence[int] = FULL["seeds"]
    pretrain_updates: int = FULL["pretrain_updates"]
    finetune_updates: int = FULL["finetune_updates"]
    probe_updates: int = FULL["probe_updates"]
    preset: str = "demo"
    recipe: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    backbone_overrides: dict[str, Any] = field(default_factory=dict)
    image_size: Sequence[int] | None = None
    datasets: dict[str, Any] = field(default_factory=dict)
    data_descriptions: dict[str, str] = field(default_factory=dict)
    eval_dataset: Any = None
    eval_protocol: str | None = None
    ood_eval_dataset: Any = None
    ood_eval_protocol: str | None = None
    cka_images: int = FULL["cka_images"]
    cka_permutations: int = 100
    num_synthetic_samples: int | None = None
    num_eval_samples: int | None = None
    cache_dir: str | None = None
    resume: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; expected some of {', '.join(VARIANTS)}")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must be a non-empty list without repeats, got {list(self.variants)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list without repeats, got {list(self.seeds)}")
        if self.finetune_updates < 1:
            raise ValueError(f"finetune_updates must be >= 1, got {self.finetune_updates}")
        for variant in self.variants:
            split_budget(VARIANTS[variant], self.pretrain_updates)
        if self.cka_images < 5:
            raise ValueError(f"cka_images must be >= 5 (debiased HSIC with a jackknife), got {self.cka_images}")
        if self.probe_updates < 0 or self.cka_permutations < 0:
            raise ValueError(
                f"probe_updates and cka_permutations must be >= 0, got {self.probe_updates}, {self.cka_permutations}"
            )
        unknown_stages = set(self.datasets) - {spec.name for spec in self.stages}
        if unknown_stages:
            raise ValueError(f"datasets for unknown stages {sorted(unknown_stages)}")
        if self.ood_eval_dataset is not None and not self.ood_eval_protocol:
            raise ValueError("an out-of-distribution set needs its protocol (ood_eval_protocol, e.g. 'ibims1')")
        if self.eval_dataset is None and FINETUNE.name in self.datasets:
            raise ValueError("fine-tuning on real data needs a held-out eval_dataset (e.g. nyuv2:PATH)")

    @property
    def stages(self) -> list[StageSpec]:
        """Every stage an ablation can run, in MeSa's order, fine-tuning last."""
        order = {name: i for i, name in enumerate(PRETRAINING_ORDER)}
        pretraining = {spec.name: spec for variant in VARIANTS.values() for spec in variant}
        return [*sorted(pretraining.values(), key=lambda spec: order[spec.name]), FINETUNE]

    @property
    def resolved_recipe(self) -> str:
        """`recipe`, or ``"demo"`` when every stage trains on the synthetic world, else ``"paper"``."""
        return self.recipe or ("demo" if not self.datasets else "paper")

    def budget(self, variant: str) -> dict[str, int]:
        """Updates per stage of `variant`, fine-tuning included."""
        budget = {**split_budget(VARIANTS[variant], self.pretrain_updates), FINETUNE.name: self.finetune_updates}
        if self.probe_updates:
            budget[PROBE.name] = self.probe_updates
        return budget

    def data_of(self, spec: StageSpec) -> str:
        """How the data of stage `spec` is named in the report."""
        if spec.name in self.data_descriptions:
            return self.data_descriptions[spec.name]
        dataset = self.datasets.get(spec.name)
        if dataset is None:
            return f"synthetic world ({spec.dataset_kind})"
        return getattr(getattr(dataset, "info", None), "dataset_name", None) or "custom dataset"

    def description(self) -> dict[str, Any]:
        """The settings as results.json records them."""
        return {
            "variants": list(self.variants),
            "seeds": list(self.seeds),
            "pretrain_updates": self.pretrain_updates,
            "finetune_updates": self.finetune_updates,
            "preset": self.preset,
            "recipe": self.resolved_recipe,
            "budget": {v: self.budget(v) for v in self.variants},
            "data": {spec.name: self.data_of(spec) for spec in self.stages},
            "eval": self.eval_protocol or "synthetic held-out scenes",
            "ood_eval": self.ood_eval_protocol,
            "cka_images": self.cka_images,
            "cka_permutations": self.cka_permutations,
            "cka_interval_percent": CKA_INTERVAL_PERCENT,
            "probe_updates": self.probe_updates,
        }


SETTINGS_NAME = "ablation_settings.json"


def check_output_dir(settings: AblationSettings) -> None:
    """A folder holding an earlier ablation is only reused with `resume` (and the same settings). Reads only, so
    every process can check before any of them writes."""
    root = Path(settings.output_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"output_dir {root} is a file")
    stamp = root / SETTINGS_NAME
    described = settings.description()
    if stamp.is_file():
        if not settings.resume:
            raise ValueError(
                f"{root} already holds an ablation; pass --resume_from_checkpoint latest to continue it, or choose "
                "another --output_dir"
            )
        recorded = json.loads(stamp.read_text())
        changed = sorted(k for k in described if k != "variants" and recorded.get(k) != described[k])
        if changed:
            raise ValueError(f"{root}: resuming with different settings ({', '.join(changed)}) than it was run with")


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ one run


def write_initial_model(folder: Path, preset: str, seed: int) -> Path:
    """The "scratch" variant's starting point as a checkpoint folder: the `preset`'s weights drawn with `seed`,
    with PyTorch's default init in the depth decoder and head (what every pre-trained variant's new decoder gets)."""
    from accelerate.utils import set_seed

    from ..training.runner import _reset_new_convolutions, load_stage_model
    from ..training.stage_data import image_size_of, stage_processor

    if (folder / "config.json").is_file():
        return folder
    if process_state().is_main_process:
        set_seed(seed)
        model, loading_info = load_stage_model(FINETUNE, preset)
        _reset_new_convolutions(model, loading_info)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        stage_processor(preset, image_size_of(model.config)).save_pretrained(partial)
        os.replace(partial, folder)
    process_state().wait_for_everyone()
    return folder


def _stage_record(result: StageResult, updates: int, data: str) -> dict[str, Any]:
    return {
        "stage": result.stage,
        "updates": updates,
        "global_step": result.global_step,
        "data": data,
        "loss_history": list(result.loss_history),
        "eval_after": dict(result.eval_after),
        "skipped": result.skipped,
    }


def _evaluate(model, dataset, protocol: str) -> dict[str, float]:
    from mesa_hf.evaluation import evaluate_model

    return dict(evaluate_model(model, dataset, protocol=protocol, progress=False).metrics)


def _cka_images(settings: AblationSettings, image_size: Sequence[int]) -> list[Any]:
    """Held-out images for the CKA: the first `cka_images` of the eval set (or of the synthetic held-out scenes)."""
    from ..training.stage_data import synthetic_dataset

    dataset = settings.eval_dataset
    if dataset is None:
        num = max(settings.cka_images, settings.num_eval_samples or DEMO_EVAL_SAMPLES)
        dataset = synthetic_dataset("depth", num, image_size, HELDOUT_SEED, settings.cache_dir)
    count = min(settings.cka_images, len(dataset))
    if count < 5:
        raise ValueError(f"the held-out set has {len(dataset)} images; the CKA needs at least 5")
    return [dataset[i]["image"] for i in range(count)]


CKA_CURVE_KEYS = ("cka", "ci_low", "ci_high", "self_hsic_a", "self_hsic_b", "null_low", "null_high", "p_value")


def encoder_cka(reference, tuned, processor, images: Sequence[Any], num_permutations: int = 100) -> dict[str, Any]:
    """Per-block debiased linear CKA between the encoder of the pre-trained model `reference` and of the fine-tuned
    model `tuned` (same block, flattened features; `processor` prepares the images), on `images` at `tuned`'s input
    size: one full-batch estimate per block with its 95 % jackknife interval, self-HSIC and permutation null.

    Returns ``{"layers", "values", "ci_low", "ci_high", "self_hsic_a", "self_hsic_b", "null_low", "null_high",
    "p_value"}`` (lists over blocks; ``values`` is the CKA). A block whose features do not vary over the images (a
    collapsed representation: self-HSIC <= 0) has no CKA: None. Nothing is clipped: a negative value is reported."""
    from mesa_hf.analysis.layerwise import layerwise_cka_results

    from ..training.stage_data import image_size_of

    results = layerwise_cka_results(
        reference,
        {"tuned": tuned},
        images,
        processor,
        estimator="full",
        input_size=tuple(image_size_of(tuned.config)),
        progress=False,
        undefined="nan",
        num_permutations=num_permutations,
        confidence=CKA_INTERVAL_PERCENT / 100,
    )
    curve = results["tuned"].diagonal()
    return {"layers": list(curve["layers"]), "values": curve["cka"], **{k: curve[k] for k in CKA_CURVE_KEYS[1:]}}


def _defined(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


def last_stage_cka(cka: Mapping[str, Any]) -> float | None:
    """Mean CKA of the last Swin-V2 stage's blocks (the layers the paper says change most with masked
    pre-training); None when none of them has a CKA."""
    names = list(cka["layers"])
    last = max(int(n[1:].split(".")[0]) for n in names if n.startswith("s"))
    values = _defined(v for n, v in zip(names, cka["values"]) if n.startswith(f"s{last}."))
    return float(np.mean(values)) if values else None


def run_variant(variant: str, seed: int, settings: AblationSettings) -> dict[str, Any]:
    """Pre-train `variant` with `seed` (its share of the budget per stage), fine-tune, evaluate, measure the CKA;
    returns (and writes) the run's ``result.json``. A finished run is read back, not re-run."""
    folder = Path(settings.output_dir) / variant / f"seed-{seed}"
    result_path = folder / RESULT_NAME
    budget = settings.budget(variant)
    if result_path.is_file():
        recorded = json.loads(result_path.read_text())
        if recorded.get("budget") == budget:
            logger.info("%s seed %d: finished earlier, skipping", variant, seed)
            return {**recorded, "skipped": True}
        raise ValueError(f"{result_path} was run with budget {recorded.get('budget')}, not {budget}")
    started = time.perf_counter()
    training = {**settings.training, "seed": seed}
    if settings.resume:
        training["resume_from_checkpoint"] = "latest"

    def stage_settings(spec: StageSpec, compute_baseline: bool) -> StageSettings:
        return StageSettings(
            output_dir=folder / spec.name,
            recipe=settings.resolved_recipe,
            training={**training, "max_train_steps": budget[spec.name]},
            image_size=settings.image_size,
            backbone_overrides=settings.backbone_overrides,
            num_synthetic_samples=settings.num_synthetic_samples,
            num_eval_samples=settings.num_eval_samples,
            cache_dir=settings.cache_dir,
            data_description=settings.data_descriptions.get(spec.name),
            compute_baseline=compute_baseline,
            skip_if_complete=True,
        )

    stages: list[dict[str, Any]] = []
    source: str | os.PathLike = settings.preset
    if not VARIANTS[variant]:
        source = write_initial_model(folder / INIT_FOLDER, settings.preset, seed)
    for spec in VARIANTS[variant]:
        logger.info("%s seed %d: %s stage, %d updates", variant, seed, spec.name, budget[spec.name])
        result = run_stage(spec, source, stage_settings(spec, False), settings.datasets.get(spec.name))
        stages.append(_stage_record(result, budget[spec.name], settings.data_of(spec)))
        source = folder / spec.name
    pretrained = source
    probe = None
    if settings.probe_updates:
        logger.info("%s seed %d: frozen-encoder probe, %d updates", variant, seed, budget[PROBE.name])
        # the probe trains on the fine-tuning data and is scored on the same held-out views
        probe_data = settings.datasets.get(FINETUNE.name)
        probe = run_stage(PROBE, pretrained, stage_settings(PROBE, False), probe_data, settings.eval_dataset)
        stages.append(_stage_record(probe, budget[PROBE.name], settings.data_of(FINETUNE)))
    logger.info("%s seed %d: fine-tuning, %d updates", variant, seed, budget[FINETUNE.name])
    eval_dataset = settings.eval_dataset if settings.eval_protocol is None else None
    finetuned = run_stage(
        FINETUNE, pretrained, stage_settings(FINETUNE, True), settings.datasets.get(FINETUNE.name), eval_dataset
    )
    stages.append(_stage_record(finetuned, budget[FINETUNE.name], settings.data_of(FINETUNE)))

    if process_state().is_main_process:
        from mesa_hf.evaluation.inference import load_checkpoint

        from ..training.stage_data import image_size_of

        model, processor = load_checkpoint(folder / FINETUNE.name)
        metrics = finetuned.eval_after
        if settings.eval_protocol is not None:
            metrics = _evaluate(model, settings.eval_dataset, settings.eval_protocol)
        ood = {}
        if settings.ood_eval_dataset is not None:
            ood = _evaluate(model, settings.ood_eval_dataset, settings.ood_eval_protocol)
        reference = load_checkpoint(pretrained, quiet=True)[0]  # a masked stage has no depth decoder
        images = _cka_images(settings, image_size_of(model.config))
        cka = encoder_cka(reference, model, processor, images, settings.cka_permutations)
        record = {
            "variant": variant,
            "seed": seed,
            "budget": budget,
            "stages": stages,
            "metrics": {k: float(v) for k, v in metrics.items() if k in METRICS},
            "ood_metrics": {k: float(v) for k, v in ood.items() if k in METRICS},
            "probe_metrics": {k: float(v) for k, v in (probe.eval_after if probe else {}).items() if k in METRICS},
            "baseline": {k: float(v) for k, v in finetuned.baseline.items() if k in METRICS},
            "cka": cka,
            "cka_last_stage": last_stage_cka(cka),
            "wall_time_s": round(time.perf_counter() - started, 1),
        }
        bad = [k for k, v in record["metrics"].items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{variant} seed {seed}: non-finite held-out metrics {bad}")
        _write_json_atomic(result_path, record)
    process_state().wait_for_everyone()
    return json.loads(result_path.read_text())


# ------------------------------------------------------------------------------------------------ aggregation


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of `values`."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        raise ValueError("mean_std of no values")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "n": int(array.size)}


def aggregate(runs: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, dict[str, float]]]:
    """variant -> metric -> mean/std/n over seeds, of each run's `key` (``metrics`` / ``ood_metrics``)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r[key] for r in runs if r["variant"] == variant and r.get(key)]
        if rows:
            table[variant] = {m: mean_std([row[m] for row in rows]) for m in METRICS if all(m in row for row in rows)}
    return table


def compare(summary: Mapping[str, Mapping[str, Mapping[str, float]]], variant: str, reference: str) -> dict[str, Any]:
    """`variant` vs `reference` per metric: difference of the means, relative change (percent of the reference),
    and the verdict: "better"/"worse" when the difference exceeds the sum of the two seed standard deviations,
    "no difference" when it does not, "one seed: no spread to judge by" when either has a single seed."""
    out: dict[str, Any] = {}
    for metric, (_, higher_is_better) in METRICS.items():
        if metric not in summary.get(variant, {}) or metric not in summary.get(reference, {}):
            continue
        a, b = summary[variant][metric], summary[reference][metric]
        difference = a["mean"] - b["mean"]
        spread = a["std"] + b["std"]
        up, down = ("better", "worse") if higher_is_better else ("worse", "better")
        verdict = _spread_verdict(difference, spread, min(a["n"], b["n"]), up, down)
        out[metric] = {
            "difference": difference,
            "relative_change_percent": 100.0 * difference / b["mean"] if b["mean"] else float("nan"),
            "seed_spread": spread,
            "verdict": verdict,
        }
    return out


def _spread_verdict(difference: float, spread: float, n: int, positive: str, negative: str) -> str:
    if n < 2:
        return "one seed: no spread to judge by"
    if abs(difference) <= spread:
        return "no difference"
    return positive if difference > 0 else negative


_STATEMENTS = {
    "better": "agrees with the paper at this scale",
    "worse": "the opposite of the paper at this scale",
    "no difference": "no difference at this scale: the paper's claim is not reproduced",
}


def _statement(verdict: str) -> str:
    """What a verdict ("better" = in the paper's direction) says about the paper's claim."""
    return _STATEMENTS.get(verdict, "not judged (one seed)")


def _interval_half_width(values: Sequence[float], half_widths: Sequence[float]) -> float:
    """95 % half-width of the mean over seeds of a CKA measured on the same images by every seed: the image
    sampling (the runs' jackknife half-widths, root-mean-square: the same images, so it does not average out) and
    the seed-to-seed spread (Student's t with seeds - 1 degrees of freedom) added in quadrature."""
    from scipy.stats import t

    image = float(np.sqrt(np.mean(np.square(half_widths)))) if len(half_widths) else 0.0
    seeds = len(values)
    quantile = 0.5 + CKA_INTERVAL_PERCENT / 200
    spread = float(t.ppf(quantile, seeds - 1) * np.std(values, ddof=1) / np.sqrt(seeds)) if seeds > 1 else 0.0
    return float(np.hypot(image, spread))


def _cka_cell(values: Sequence[float], half_widths: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    cell = mean_std(values)
    h = _interval_half_width(values, half_widths)
    return {**cell, "ci_low": cell["mean"] - h, "ci_high": cell["mean"] + h}


def variant_cka(own: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One variant's per-layer CKA over its runs: mean, std and a 95 % interval per layer (`_interval_half_width`),
    the same for the mean over the last Swin-V2 stage's blocks (``last_stage``), and the self-HSIC and null ranges
    of the runs (means). Layers undefined in a run are left out of that layer's cells."""
    layers = list(own[0]["cka"]["layers"])
    curve: dict[str, Any] = {"layers": layers, "mean": [], "std": [], "ci_low": [], "ci_high": [], "cka": []}
    last = _last_stage_indices(layers)
    last_values, last_widths = [], []
    for run in own:
        c = run["cka"]
        values = [c["values"][i] for i in last]
        widths = [
            (c["ci_high"][i] - c["ci_low"][i]) / 2 for i in last if c.get("ci_high") and c["ci_high"][i] is not None
        ]
        if all(v is not None for v in values):
            last_values.append(float(np.mean(values)))
            if widths:
                last_widths.append(float(np.mean(widths)))
    for i in range(len(layers)):
        defined = [r["cka"] for r in own if r["cka"]["values"][i] is not None]
        values = [c["values"][i] for c in defined]
        widths = [
            (c["ci_high"][i] - c["ci_low"][i]) / 2 for c in defined if c.get("ci_high") and c["ci_high"][i] is not None
        ]
        cell = _cka_cell(values, widths)
        for key, name in (("mean", "mean"), ("std", "std"), ("ci_low", "ci_low"), ("ci_high", "ci_high")):
            curve[key].append(None if cell is None else cell[name])
    curve["cka"] = curve["mean"]  # the curve's value, as `mesa_hf.analysis` draws and judges curves
    for key in ("self_hsic_a", "self_hsic_b", "null_low", "null_high"):
        columns = [
            [r["cka"][key][i] for r in own if r["cka"].get(key) and r["cka"][key][i] is not None]
            for i in range(len(layers))
        ]
        curve[key] = [float(np.mean(v)) if v else None for v in columns]
    curve["last_stage"] = _cka_cell(last_values, last_widths)
    return curve


def _last_stage_indices(layers: Sequence[str]) -> list[int]:
    last = max(int(n[1:].split(".")[0]) for n in layers if n.startswith("s"))
    return [i for i, n in enumerate(layers) if n.startswith(f"s{last}.")]


_CKA_STATEMENTS = {
    "holds": "agrees with the paper at this scale",
    "partly": "partly agrees with the paper at this scale",
    "opposite": "the opposite of the paper at this scale",
    "partly opposite": "partly the opposite of the paper at this scale",
}


def paper_claims(
    comparisons: Mapping[str, Mapping[str, Any]], cka: Mapping[str, Any], probe: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Whether the measured differences agree with the paper: MeSa's RMSE is lower than masked-only's (and than
    masked -> supervised's), its encoder holds more depth (frozen-encoder probe, RMSE), and its last stage's blocks
    change less in fine-tuning (higher CKA, judged only where the 95 % intervals do not overlap). Statements hold
    no numbers."""
    from mesa_hf.analysis.cka import later_layers_change_less

    claims: dict[str, Any] = {}
    for reference in ("masked", "masked_supervised"):
        rmse = comparisons.get(f"mesa_vs_{reference}", {}).get("rmse")
        if rmse:
            claims[f"rmse_vs_{reference}"] = {
                "paper_change_percent": PAPER_RMSE_CHANGE_PERCENT if reference == "masked" else None,
                "measured_change_percent": rmse["relative_change_percent"],
                "verdict": rmse["verdict"],
                "statement": _statement(rmse["verdict"]),
            }
        probe_rmse = probe.get(f"mesa_vs_{reference}", {}).get("rmse")
        if probe_rmse:
            claims[f"probe_vs_{reference}"] = {
                "measured_change_percent": probe_rmse["relative_change_percent"],
                "verdict": probe_rmse["verdict"],
                "statement": _statement(probe_rmse["verdict"]),
            }
        if cka.get("mesa") and cka.get(reference):
            judged = later_layers_change_less(
                cka["mesa"], cka[reference], name_a="MeSa", name_b=VARIANT_NAMES.get(reference, reference)
            )
            claims[f"cka_vs_{reference}"] = {
                "verdict": judged["verdict"],
                "layers": judged["layers"],
                "statement": judged["statement"].rstrip(".")
                + ": "
                + _CKA_STATEMENTS.get(judged["verdict"], "the paper's claim is not reproduced at this scale"),
            }
    return claims


def build_results(settings: AblationSettings, runs: Sequence[Mapping[str, Any]], wall_time_s: float) -> dict:
    """Everything the report shows, from the runs' records; `wall_time_s`: the runs' own times, summed (a resumed
    ablation counts each run once, in the invocation that ran it)."""
    summary = aggregate(runs, "metrics")
    ood_summary = aggregate(runs, "ood_metrics")
    probe_summary = aggregate(runs, "probe_metrics")
    cka = {variant: variant_cka([r for r in runs if r["variant"] == variant]) for variant in summary}
    comparisons, probe_comparisons = {}, {}
    for reference in ("masked", "masked_supervised"):
        if "mesa" in summary and reference in summary:
            comparisons[f"mesa_vs_{reference}"] = compare(summary, "mesa", reference)
            if ood_summary.get("mesa") and ood_summary.get(reference):
                comparisons[f"mesa_vs_{reference}_ood"] = compare(ood_summary, "mesa", reference)
        if probe_summary.get("mesa") and probe_summary.get(reference):
            probe_comparisons[f"mesa_vs_{reference}"] = compare(probe_summary, "mesa", reference)
    baselines = [r["baseline"] for r in runs if r.get("baseline")]
    claims = paper_claims(comparisons, cka, probe_comparisons)
    return {
        "settings": settings.description(),
        "runs": [dict(r) for r in runs],
        "summary": summary,
        "ood_summary": ood_summary,
        "probe_summary": probe_summary,
        "baseline": baselines[0] if baselines else {},
        "comparisons": comparisons,
        "probe_comparisons": probe_comparisons,
        "claims": claims,
        "cka": cka,
        "wall_time_s": round(wall_time_s, 1),
    }


def run_ablation(settings: AblationSettings) -> dict[str, Any]:
    """Every variant x seed (finished ones skipped with `resume`), then ``results.json``, ``report.md`` and the
    figures in ``settings.output_dir``. Returns the results."""
    from tqdm.auto import tqdm

    from .report import write_report

    settings.validate()
    root = Path(settings.output_dir)
    check_output_dir(settings)
    process_state().wait_for_everyone()  # every process has checked before the main one writes the stamp
    if process_state().is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(root / SETTINGS_NAME, settings.description())
    process_state().wait_for_everyone()
    jobs = [(v, s) for v in settings.variants for s in settings.seeds]
    runs = []
    for variant, seed in tqdm(jobs, desc="ablation", disable=not process_state().is_main_process):
        runs.append(run_variant(variant, seed, settings))
    results = build_results(settings, runs, sum(r["wall_time_s"] for r in runs))
    if process_state().is_main_process:
        _write_json_atomic(root / RESULTS_NAME, results)
        write_report(results, root)
    process_state().wait_for_everyone()
    return results


__all__ = [
    "DEFAULT_VARIANTS",
    "FULL",
    "METRICS",
    "QUICK",
    "VARIANTS",
    "AblationSettings",
    "aggregate",
    "build_results",
    "compare",
    "encoder_cka",
    "last_stage_cka",
    "mean_std",
    "run_ablation",
    "run_variant",
    "split_budget",
]

"""The ablation's report: ``report.md`` and three PNG figures, written from ``results.json`` only.

Every number in ``report.md`` is a value of ``results.json`` printed with one of three formats (`number`: 4
decimals; `percent`: signed, 1 decimal; integers as they are), so the report holds nothing written by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .variants import METRICS, VARIANT_NAMES, VARIANT_TITLES

FIGURES = {"metrics": "metrics.png", "cka": "cka.png", "loss_curves": "loss_curves.png"}
FIGURE_METRICS = ("abs_rel", "rmse", "d1", "median_scaled_abs_rel")
STAGE_COLUMNS = ("masked", "geometric", "supervised", "probe", "finetune")


def number(value: float) -> str:
    """A measured value as the report prints it (4 decimals)."""
    return f"{value:.4f}"


def percent(value: float) -> str:
    """A relative change in percent as the report prints it (signed, 1 decimal)."""
    return f"{value:+.1f} %"


def _mean_std(cell: Mapping[str, float] | None) -> str:
    if cell is None:
        return "undefined (the features do not vary over the images)"
    if cell["n"] < 2:
        return number(cell["mean"])
    return f"{number(cell['mean'])} ± {number(cell['std'])}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _title(variant: str) -> str:
    return VARIANT_TITLES.get(variant, variant)


def _metrics_table(summary: Mapping[str, Any], baseline: Mapping[str, float] | None) -> list[str]:
    metrics = [m for m in METRICS if any(m in row for row in summary.values())]
    header = ["variant", *(METRICS[m][0] + (" ↑" if METRICS[m][1] else " ↓") for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, row in summary.items():
        cells = [_mean_std(row[m]) if m in row else "–" for m in metrics]
        lines.append(f"| {_title(variant)} | " + " | ".join(cells) + " |")
    if baseline:
        cells = [number(baseline[m]) if m in baseline else "–" for m in metrics]
        lines.append("| average training depth map (baseline) | " + " | ".join(cells) + " |")
    return lines


def _judged(comparison: Mapping[str, Any], n: int) -> str:
    return (
        comparison["verdict"] if n < 2 else f"{comparison['verdict']}; seed spread {number(comparison['seed_spread'])}"
    )


def _cka_cell(cell: Mapping[str, float] | None) -> str:
    if cell is None:
        return "undefined (the features do not vary over the images)"
    return f"{number(cell['mean'])} [{number(cell['ci_low'])}, {number(cell['ci_high'])}]"


def _headline_against(results: Mapping[str, Any], reference: str) -> list[str]:
    """The claims of MeSa vs `reference` (``masked`` or ``masked_supervised``): RMSE, probe, last-stage CKA."""
    name = VARIANT_NAMES.get(reference, reference)
    summary, claims = results["summary"], results["claims"]
    comparison = results["comparisons"].get(f"mesa_vs_{reference}")
    if not comparison or "rmse" not in comparison:
        return [f"- MeSa vs {name}: not measured (both variants are needed)."]
    rmse = comparison["rmse"]
    claim = claims[f"rmse_vs_{reference}"]
    paper = (
        f" The paper: {percent(claim['paper_change_percent'])} on NYUv2."
        if claim.get("paper_change_percent") is not None
        else ""
    )
    lines = [
        f"- **RMSE**: MeSa {_mean_std(summary['mesa']['rmse'])}, {name} {_mean_std(summary[reference]['rmse'])}:"
        f" {percent(rmse['relative_change_percent'])} ({_judged(rmse, summary['mesa']['rmse']['n'])}).{paper}"
        f" {_sentence(claim['statement'])}.",
    ]
    probe = results.get("probe_comparisons", {}).get(f"mesa_vs_{reference}", {}).get("rmse")
    if probe:
        probe_summary = results["probe_summary"]
        lines.append(
            f"- **Frozen-encoder probe RMSE**: MeSa {_mean_std(probe_summary['mesa']['rmse'])}, {name} "
            f"{_mean_std(probe_summary[reference]['rmse'])}: {percent(probe['relative_change_percent'])} "
            f"({_judged(probe, probe_summary['mesa']['rmse']['n'])}). "
            f"{_sentence(claims[f'probe_vs_{reference}']['statement'])}."
        )
    cka = results["cka"]
    if f"cka_vs_{reference}" in claims:
        lines.append(
            "- **CKA of the last stage's blocks** (pre-trained vs fine-tuned encoder, "
            f"{results['settings']['cka_interval_percent']} % interval; the higher, "
            f"the less it changed): MeSa {_cka_cell(cka['mesa']['last_stage'])}, {name} "
            f"{_cka_cell(cka[reference]['last_stage'])}. The paper: MeSa's later layers change less in fine-tuning. "
            f"{_sentence(claims[f'cka_vs_{reference}']['statement'])}."
        )
    ood = results["comparisons"].get(f"mesa_vs_{reference}_ood", {}).get("rmse")
    if ood:
        lines.append(f"- **RMSE out of distribution**: {percent(ood['relative_change_percent'])} ({ood['verdict']}).")
    return lines


def _headline(results: Mapping[str, Any]) -> list[str]:
    lines = []
    for reference in ("masked", "masked_supervised"):
        lines += [f"### MeSa vs {VARIANT_NAMES[reference]}", "", *_headline_against(results, reference), ""]
    return lines[:-1]


def _budget_table(settings: Mapping[str, Any]) -> list[str]:
    lines = ["| variant | " + " | ".join(STAGE_COLUMNS) + " |", "|---|" + "---|" * len(STAGE_COLUMNS)]
    for variant, budget in settings["budget"].items():
        cells = [str(budget[s]) if s in budget else "–" for s in STAGE_COLUMNS]
        lines.append(f"| {_title(variant)} | " + " | ".join(cells) + " |")
    return lines


def _runs_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| variant | seed | RMSE | AbsRel | probe RMSE | last-stage CKA | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        metrics, probe = run["metrics"], run.get("probe_metrics") or {}
        probe_rmse = number(probe["rmse"]) if "rmse" in probe else "–"
        lines.append(
            f"| {_title(run['variant'])} | {run['seed']} | {number(metrics['rmse'])} | {number(metrics['abs_rel'])} "
            f"| {probe_rmse} "
            f"| {'undefined' if run['cka_last_stage'] is None else number(run['cka_last_stage'])} "
            f"| {run['wall_time_s']} |"
        )
    return lines


def render_report(results: Mapping[str, Any]) -> str:
    """``report.md`` of `results` (the content of ``results.json``)."""
    settings = results["settings"]
    seeds = ", ".join(str(s) for s in settings["seeds"])
    lines = [
        "# MeSa ablation: pre-training variants at an equal budget",
        "",
        f"Preset `{settings['preset']}`, recipe `{settings['recipe']}`, seeds {seeds}; every variant pre-trains "
        f"{settings['pretrain_updates']} updates in total, then fine-tunes {settings['finetune_updates']} updates "
        f"and is evaluated on the same held-out set ({settings['eval']}). Wall time of the runs: "
        f"{results['wall_time_s']} s.",
        "",
        "## MeSa vs masked-only and vs masked → supervised",
        "",
        *_headline(results),
        "",
        "## Held-out results (mean ± std over seeds)",
        "",
        *_metrics_table(results["summary"], results.get("baseline")),
        "",
        f"![metrics]({FIGURES['metrics']})",
        "",
    ]
    if results.get("probe_summary"):
        lines += [
            "## Frozen-encoder probe (mean ± std over seeds)",
            "",
            f"Each variant's pre-trained encoder, frozen; the same new depth head (no image branch) trained "
            f"{settings['probe_updates']} updates on the fine-tuning data, scored on the held-out views. "
            "`from scratch` is the floor: a randomly initialised encoder.",
            "",
            *_metrics_table(results["probe_summary"], None),
            "",
        ]
    if results.get("ood_summary"):
        lines += [
            f"## Out of distribution ({settings['ood_eval']})",
            "",
            *_metrics_table(results["ood_summary"], None),
            "",
        ]
    lines += [
        "## Layer-wise CKA between each variant's pre-trained and fine-tuned encoder",
        "",
        "Debiased linear CKA (one full-batch estimate per block) of every Swin-V2 block's output on "
        f"{settings['cka_images']} held-out images; for `from scratch`, the initial weights are the pre-trained "
        f"encoder. Intervals: {settings['cka_interval_percent']} %, the runs' leave-one-image-out jackknife and "
        "the seed-to-seed spread (Student's t) added in quadrature; the grey band is the permutation null "
        "(shuffled image pairing). Nothing is clipped: a value below 0 is shown as it is.",
        "",
        f"![CKA per layer]({FIGURES['cka']})",
        "",
        "## Training loss per stage",
        "",
        f"![training loss]({FIGURES['loss_curves']})",
        "",
        "## Budget (optimizer updates per stage) and data",
        "",
        *_budget_table(settings),
        "",
        *(f"- {stage}: {data}" for stage, data in settings["data"].items()),
        "",
        "## Runs",
        "",
        *_runs_table(results["runs"]),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ figures


def _colors(variants: Sequence[str]) -> dict[str, Any]:
    from mesa_hf.analysis.plotting import _pyplot

    cmap = _pyplot().get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(variants)}


def _save_figure(fig, path: Path) -> Path:
    from mesa_hf.analysis.plotting import _pyplot

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_metrics(results: Mapping[str, Any], path: Path) -> Path:
    """Bar chart: one panel per metric, one bar per variant (mean, error bar = std over seeds), the baseline
    dashed."""
    from mesa_hf.analysis.plotting import _pyplot

    plt = _pyplot()
    summary, baseline = results["summary"], results.get("baseline") or {}
    metrics = [m for m in FIGURE_METRICS if all(m in row for row in summary.values())]
    variants = list(summary)
    colors = _colors(variants)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [summary[v][metric]["mean"] for v in variants]
        stds = [summary[v][metric]["std"] for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, capsize=4, color=[colors[v] for v in variants])
        values = [*(m - d for m, d in zip(means, stds)), *(m + d for m, d in zip(means, stds))]
        values += [baseline[metric]] if metric in baseline else []
        low, high = min(values), max(values)
        margin = 0.25 * (high - low) or 0.05 * abs(high) or 0.05
        ax.set_ylim(max(low - margin, 0.0), high + margin)
        if metric in baseline:
            ax.axhline(baseline[metric], color="black", linestyle="--", linewidth=1, label="average depth map")
            ax.legend(fontsize=7, loc="lower right")
        name, higher = METRICS[metric]
        ax.set_title(f"{name} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.set_xticks(range(len(variants)), [_title(v).split(" (")[0] for v in variants], rotation=30, ha="right")
        ax.tick_params(labelsize=7)
    fig.suptitle("Held-out metrics, mean ± std over seeds (y axes zoomed to the values)", fontsize=10)
    return _save_figure(fig, path)


def plot_cka(results: Mapping[str, Any], path: Path) -> Path:
    """Per-layer CKA between pre-trained and fine-tuned encoder: one curve per variant with its 95 % interval
    (`mesa_hf.analysis.plotting.draw_layer_cka`), the permutation null as a grey band."""
    from mesa_hf.analysis.plotting import _pyplot, draw_layer_cka

    plt = _pyplot()
    cka = results["cka"]
    curves = {_title(variant): curve for variant, curve in cka.items()}
    colors = {_title(variant): color for variant, color in _colors(list(cka)).items()}
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    if curves:
        draw_layer_cka(ax, curves, colors)
    ax.set_ylabel("linear CKA (pre-trained vs fine-tuned)")
    level = results["settings"].get("cka_interval_percent", 95)
    ax.set_title(
        f"How much each encoder layer changes in fine-tuning (higher = less), {level} % intervals", fontsize=10
    )
    return _save_figure(fig, path)


def plot_loss_curves(results: Mapping[str, Any], path: Path) -> Path:
    """Training loss per stage (one panel per stage, one line per run, coloured by variant)."""
    from mesa_hf.analysis.plotting import _pyplot

    plt = _pyplot()
    runs = results["runs"]
    stages = [s for s in STAGE_COLUMNS if any(r["stage"] == s for run in runs for r in run["stages"])]
    colors = _colors(list(dict.fromkeys(run["variant"] for run in runs)))
    fig, axes = plt.subplots(1, max(len(stages), 1), figsize=(3.4 * max(len(stages), 1), 3.2), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        labelled = set()
        for run in runs:
            for record in run["stages"]:
                history = record["loss_history"]
                if record["stage"] != stage or not history:
                    continue
                x = (np.arange(len(history)) + 0.5) * record["global_step"] / len(history)
                label = None if run["variant"] in labelled else _title(run["variant"]).split(" (")[0]
                labelled.add(run["variant"])
                ax.plot(
                    x,
                    history,
                    color=colors[run["variant"]],
                    linewidth=1,
                    marker="o" if len(history) < 3 else None,
                    label=label,
                )
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("training loss")
    return _save_figure(fig, path)


def write_report(results: Mapping[str, Any], folder: str | Path) -> dict[str, Path]:
    """Write ``report.md`` and the figures into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": plot_metrics(results, folder / FIGURES["metrics"]),
        "cka": plot_cka(results, folder / FIGURES["cka"]),
        "loss_curves": plot_loss_curves(results, folder / FIGURES["loss_curves"]),
    }
    report = folder / "report.md"
    tmp = report.with_name("report.md.tmp")
    tmp.write_text(render_report(results))
    tmp.replace(report)
    paths["report"] = report
    return paths


__all__ = [
    "FIGURES",
    "number",
    "percent",
    "plot_cka",
    "plot_loss_curves",
    "plot_metrics",
    "render_report",
    "write_report",
]

"""CSV, JSON and PNG output for layer-wise CKA (matplotlib with the non-interactive Agg backend)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .cka import CKAResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def write_cka_csv(
    path: str | Path,
    matrices: Mapping[str, np.ndarray],
    layer_names_a: Sequence[str],
    layer_names_b: Sequence[str] | None = None,
) -> Path:
    """Write long-format CSV ``pair,layer_a,layer_b,index_a,index_b,cka`` for every pair's (A, B) CKA matrix."""
    path = Path(path)
    layer_names_b = list(layer_names_a if layer_names_b is None else layer_names_b)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pair", "layer_a", "layer_b", "index_a", "index_b", "cka"])
        for pair, matrix in matrices.items():
            matrix = np.asarray(matrix)
            if matrix.shape != (len(layer_names_a), len(layer_names_b)):
                raise ValueError(
                    f"CKA matrix of {pair!r} has shape {matrix.shape}, "
                    f"expected ({len(layer_names_a)}, {len(layer_names_b)})"
                )
            for i, name_a in enumerate(layer_names_a):
                for j, name_b in enumerate(layer_names_b):
                    writer.writerow([pair, name_a, name_b, i, j, f"{matrix[i, j]:.6f}"])
    return path


def read_cka_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Inverse of :func:`write_cka_csv`: pair -> (A, B) matrix."""
    rows: dict[str, dict[tuple[int, int], float]] = {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["pair"], {})[(int(row["index_a"]), int(row["index_b"]))] = float(row["cka"])
    out = {}
    for pair, cells in rows.items():
        shape = (max(i for i, _ in cells) + 1, max(j for _, j in cells) + 1)
        matrix = np.full(shape, np.nan)
        for (i, j), v in cells.items():
            matrix[i, j] = v
        out[pair] = matrix
    return out


def write_cka_results(path: str | Path, results: Mapping[str, CKAResult]) -> Path:
    """Write ``{label: CKAResult.to_dict()}`` as JSON (NaN as null), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({label: r.to_dict() for label, r in results.items()}, indent=1))
    os.replace(tmp, path)
    return path


def _values(values: Sequence[float | None] | np.ndarray | None, count: int) -> np.ndarray:
    if values is None:
        return np.full(count, np.nan)
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _value_limits(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """Axis range holding every finite value and [0, 1]; negative CKA values are shown, not cut off."""
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays] + [np.array([0.0, 1.0])])
    low, high = float(finite.min()), float(finite.max())
    margin = 0.05 * (high - low)
    return low - margin, high + margin


def draw_layer_cka(ax, curves: Mapping[str, Mapping], colors: Mapping[str, str] | None = None) -> None:
    """Per-layer CKA curves on a matplotlib axis: one line per label with its interval as error bars and, where
    given, the permutation null's range as a grey band.

    ``curves``: label -> ``{"layers": [...], "cka": [...], "ci_low": [...], "ci_high": [...]}`` and optionally
    ``"null_low"``, ``"null_high"`` (lists over layers, None for undefined), e.g. :meth:`CKAResult.diagonal`.
    """
    limits = []
    layers: list[str] = []
    for index, (label, curve) in enumerate(curves.items()):
        layers = list(curve["layers"])
        x = np.arange(len(layers)) + 0.08 * (index - (len(curves) - 1) / 2)  # side by side, intervals visible
        value = _values(curve["cka"], len(layers))
        low, high = _values(curve.get("ci_low"), len(layers)), _values(curve.get("ci_high"), len(layers))
        color = None if colors is None else colors.get(label)
        bars = np.vstack([value - low, high - value])
        ax.errorbar(
            x, value, yerr=np.where(np.isfinite(bars), bars, 0.0), marker="o", ms=4, capsize=3, color=color, label=label
        )
        null_low, null_high = _values(curve.get("null_low"), len(layers)), _values(curve.get("null_high"), len(layers))
        if np.isfinite(null_low).any():
            ax.fill_between(
                np.arange(len(layers)),
                null_low,
                null_high,
                color="0.6",
                alpha=0.25,
                step="mid",
                label="permutation null" if index == 0 else None,
            )
        limits += [value, low, high]
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xticks(np.arange(len(layers)))
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(*_value_limits(limits))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_cka_figure(
    path: str | Path,
    matrices: Mapping[str, np.ndarray],
    layer_names: Sequence[str],
    title: str = "Layer-wise linear CKA",
    heatmap_pair: str | None = None,
    intervals: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    null_bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """PNG with the per-layer CKA curve (diagonal, one curve per pair) and a heatmap of all layer pairs.

    ``matrices`` maps a pair label (e.g. ``"pretrained vs finetuned"``) to its square (L, L) CKA matrix over the
    same ``layer_names``; the heatmap shows ``heatmap_pair`` (default: the first pair). ``intervals`` (label ->
    (low, high) matrices) draws each layer's interval; ``null_bands`` (label -> (low, high) per layer) the
    permutation null. Axes and colour scale cover negative values.
    """
    plt = _pyplot()
    if not matrices:
        raise ValueError("plot_cka_figure needs at least one CKA matrix")
    heatmap_pair = heatmap_pair or next(iter(matrices))
    num_layers = len(layer_names)
    curves = {}
    for label, matrix in matrices.items():
        matrix = np.asarray(matrix, dtype=float)
        if matrix.shape != (num_layers, num_layers):
            raise ValueError(f"CKA matrix of {label!r} has shape {matrix.shape}, expected ({num_layers}, {num_layers})")
        curve = {"layers": list(layer_names), "cka": np.diag(matrix)}
        if intervals and label in intervals:
            curve["ci_low"], curve["ci_high"] = (np.diag(np.asarray(m, dtype=float)) for m in intervals[label])
        if null_bands and label in null_bands:
            curve["null_low"], curve["null_high"] = null_bands[label]
        curves[label] = curve
    fig, (ax_curve, ax_heat) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.3, 1]})
    draw_layer_cka(ax_curve, curves)
    ax_curve.set_xlabel("layer")
    ax_curve.set_ylabel("debiased linear CKA (same layer)" if intervals else "linear CKA (same layer)")
    ax_curve.set_title("CKA per layer" + (" (bars: 95 % interval)" if intervals else ""))
    heat = np.asarray(matrices[heatmap_pair], dtype=float)
    finite = heat[np.isfinite(heat)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(1.0, float(finite.max())) if finite.size else 1.0
    image = ax_heat.imshow(heat, vmin=low, vmax=high, cmap="magma", origin="lower")
    ax_heat.set_title(f"all layer pairs: {heatmap_pair}", fontsize=9)
    ax_heat.set_xlabel("layer (B)")
    ax_heat.set_ylabel("layer (A)")
    step = max(1, num_layers // 12)
    ticks = list(range(0, num_layers, step))
    ax_heat.set_xticks(ticks)
    ax_heat.set_yticks(ticks)
    ax_heat.set_xticklabels([layer_names[t] for t in ticks], rotation=60, ha="right", fontsize=7)
    ax_heat.set_yticklabels([layer_names[t] for t in ticks], fontsize=7)
    fig.colorbar(image, ax=ax_heat, fraction=0.046, pad=0.04)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_cka_results(
    path: str | Path, results: Mapping[str, CKAResult], title: str | None = None, heatmap_pair: str | None = None
) -> Path:
    """:func:`plot_cka_figure` of :func:`~mesa_hf.analysis.layerwise.layerwise_cka_results`' output: intervals as
    error bars, the permutation null as a band."""
    if not results:
        raise ValueError("plot_cka_results needs at least one CKA result")
    first = next(iter(results.values()))
    if title is None:
        title = f"Debiased linear CKA ({first.estimator}), {first.num_images} images, {first.interval}"
    return plot_cka_figure(
        path,
        {label: r.cka for label, r in results.items()},
        first.layers_a,
        title=title,
        heatmap_pair=heatmap_pair,
        intervals={label: (r.ci_low, r.ci_high) for label, r in results.items()},
        null_bands={label: (r.null_low, r.null_high) for label, r in results.items() if len(r.null_low)},
    )


def plot_layer_cka(path: str | Path, curves: Mapping[str, Mapping], title: str, ylabel: str = "linear CKA") -> Path:
    """PNG of :func:`draw_layer_cka` alone (e.g. one curve per ablation variant, each with its interval)."""
    plt = _pyplot()
    if not curves:
        raise ValueError("plot_layer_cka needs at least one curve")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    draw_layer_cka(ax, curves)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write the figure as PNG atomically (temporary file, then rename) and close it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path

"""CSV and PNG output for layer-wise CKA (matplotlib with the non-interactive Agg backend)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


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


def plot_cka_figure(
    path: str | Path,
    matrices: Mapping[str, np.ndarray],
    layer_names: Sequence[str],
    title: str = "Layer-wise linear CKA",
    heatmap_pair: str | None = None,
) -> Path:
    """PNG with the per-layer CKA curve (diagonal, one curve per pair) and a heatmap of all layer pairs.

    ``matrices`` maps a pair label (e.g. ``"pretrained vs finetuned"``) to its square (L, L) CKA matrix over the
    same ``layer_names``; the heatmap shows ``heatmap_pair`` (default: the first pair).
    """
    plt = _pyplot()
    if not matrices:
        raise ValueError("plot_cka_figure needs at least one CKA matrix")
    heatmap_pair = heatmap_pair or next(iter(matrices))
    num_layers = len(layer_names)
    fig, (ax_curve, ax_heat) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.3, 1]})
    x = np.arange(num_layers)
    for label, matrix in matrices.items():
        matrix = np.asarray(matrix)
        if matrix.shape != (num_layers, num_layers):
            raise ValueError(f"CKA matrix of {label!r} has shape {matrix.shape}, expected ({num_layers}, {num_layers})")
        ax_curve.plot(x, np.diag(matrix), marker="o", label=label)
    ax_curve.set_xticks(x)
    ax_curve.set_xticklabels(layer_names, rotation=60, ha="right", fontsize=7)
    ax_curve.set_ylim(0, 1.05)
    ax_curve.set_xlabel("layer")
    ax_curve.set_ylabel("linear CKA (same layer)")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=8)
    ax_curve.set_title("CKA per layer")
    image = ax_heat.imshow(np.asarray(matrices[heatmap_pair]), vmin=0, vmax=1, cmap="magma", origin="lower")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

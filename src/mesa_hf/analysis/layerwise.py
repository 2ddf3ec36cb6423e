"""Layer-wise CKA between checkpoints: how much each Swin-V2 block's representation changes (MeSa's analysis).

Each model runs with ``output_hidden_states=True``; its ``hidden_states`` are the patch-embedding output followed
by every Swin-V2 block's output, each (B, C, h, w). Features are flattened per image (or mean-pooled over space)
and compared with debiased linear CKA (unbiased HSIC):

- ``estimator="full"``: one U-statistic over all images per layer pair, from exact (n, n) Gram matrices accumulated
  over image batches and feature chunks, with a leave-one-image-out jackknife interval and a permutation null
  (:func:`mesa_hf.analysis.cka.cka_from_grams`); the estimator to report (use >= 256 images).
- ``estimator="minibatch"``: unbiased HSIC summed over batches (Nguyen et al. 2021), with a leave-one-batch-out
  jackknife interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .cka import CKAResult, GramAccumulator, MinibatchCKA, cka_from_grams

POOLING = ("flatten", "mean")
ESTIMATORS = ("full", "minibatch")


def hidden_state_names(model: torch.nn.Module) -> list[str]:
    """Names of a MeSa model's hidden states: ``embed`` then ``s{stage}.b{block}`` (1-based stages)."""
    depths = getattr(getattr(getattr(model, "config", None), "backbone_config", None), "depths", None)
    if depths is None:
        raise ValueError("model.config.backbone_config.depths is needed to name the Swin-V2 blocks")
    return ["embed"] + [f"s{stage + 1}.b{block}" for stage, depth in enumerate(depths) for block in range(depth)]


def _balanced_batches(num: int, batch_size: int) -> list[range]:
    """Split ``range(num)`` into near-equal consecutive batches of at most ~batch_size and at least 4 items."""
    if num < 4:
        raise ValueError(f"minibatch CKA needs at least 4 images (unbiased HSIC), got {num}")
    if batch_size < 4:
        raise ValueError(f"CKA batch_size must be >= 4 (unbiased HSIC), got {batch_size}")
    count = max(1, min(-(-num // batch_size), num // 4))
    bounds = np.linspace(0, num, count + 1).round().astype(int)
    return [range(bounds[i], bounds[i + 1]) for i in range(count)]


def _features(model: torch.nn.Module, pixel_values: torch.Tensor, pool: str) -> list[torch.Tensor]:
    outputs = model(pixel_values=pixel_values, output_hidden_states=True)
    hidden = outputs["hidden_states"] if isinstance(outputs, dict) else outputs.hidden_states
    if not hidden:
        raise ValueError(f"{type(model).__name__} returned no hidden_states with output_hidden_states=True")
    feats = []
    for h in hidden:
        h = h.float()
        feats.append(h.mean(dim=(-2, -1)) if pool == "mean" else h.reshape(h.shape[0], -1))
    return feats


def _pixel_values(image_processor: Any, images: Sequence[Any], input_size: tuple[int, int], device) -> torch.Tensor:
    return image_processor(
        images=list(images),
        size={"height": int(input_size[0]), "width": int(input_size[1])},
        keep_aspect_ratio=False,
        return_tensors="pt",
    )["pixel_values"].to(device)


def _checked_features(model: torch.nn.Module, pixel_values: torch.Tensor, pool: str, names: Sequence[str], which: str):
    feats = _features(model, pixel_values, pool)
    if len(feats) != len(names):
        raise ValueError(f"{which} returned {len(feats)} hidden states, expected {len(names)} ({list(names)})")
    return feats


@torch.inference_mode()
def layerwise_cka_results(
    reference: torch.nn.Module,
    others: Mapping[str, torch.nn.Module],
    images: Sequence[Any],
    image_processor: Any,
    estimator: str = "full",
    batch_size: int = 8,
    input_size: tuple[int, int] = (480, 640),
    pool: str = "flatten",
    device: str | torch.device | None = None,
    progress: bool = True,
    undefined: str = "nan",
    num_permutations: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_size: int = 8192,
    work_dir: str | Path | None = None,
) -> dict[str, CKAResult]:
    """Debiased linear CKA between every hidden state of ``reference`` and of each model in ``others``.

    Args:
        reference: the model A (e.g. the pre-trained checkpoint).
        others: label -> model B (e.g. ``{"pretrained vs finetuned": finetuned}``); same architecture as A.
        images: PIL images / paths / arrays; all resized to ``input_size`` (H, W) without keeping aspect ratio.
        image_processor: processor giving ``pixel_values`` (e.g. ``MeSaImageProcessor``).
        estimator: ``"full"`` (one U-statistic over all images, >= 5 of them) or ``"minibatch"`` (batches of
            >= 4, balanced).
        batch_size: images per forward pass (and per HSIC term for ``"minibatch"``).
        pool: ``"flatten"`` (C*h*w features per image, Nguyen et al.) or ``"mean"`` (spatial mean, C features).
        undefined: a layer whose features do not vary over the images: ``"raise"`` (ValueError) or ``"nan"``.
        num_permutations, seed: the permutation null of ``"full"`` (0: none).
        confidence: level of the jackknife interval and of the null's quantile range.
        chunk_size, work_dir: ``"full"`` stores each layer's float32 features (n x d) in files under ``work_dir``
            (a temporary folder by default, removed afterwards) and sums Gram matrices over ``chunk_size``
            feature columns at a time.

    Returns:
        label -> :class:`~mesa_hf.analysis.cka.CKAResult` over the layers named by :func:`hidden_state_names`.
    """
    from mesa_hf.evaluation.inference import resolve_device

    if pool not in POOLING:
        raise ValueError(f"pool must be one of {POOLING}, got {pool!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if not others:
        raise ValueError("layerwise_cka needs at least one model to compare with the reference")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    names = hidden_state_names(reference)
    models = {label: m.to(device).eval() for label, m in others.items()}
    other_names = {label: hidden_state_names(m) for label, m in models.items()}
    reference = reference.to(device).eval()
    if estimator == "minibatch":
        accumulators = {label: MinibatchCKA(len(names), len(other_names[label])) for label in models}
        for batch in tqdm(_balanced_batches(len(images), batch_size), desc="CKA", disable=not progress):
            pixel_values = _pixel_values(image_processor, [images[i] for i in batch], input_size, device)
            feats_a = _checked_features(reference, pixel_values, pool, names, "reference")
            for label, model in models.items():
                accumulators[label].update(
                    feats_a, _checked_features(model, pixel_values, pool, other_names[label], label)
                )
        return {
            label: acc.result(names, other_names[label], confidence=confidence, undefined=undefined)
            for label, acc in accumulators.items()
        }

    num = len(images)
    if num < 5:
        raise ValueError(f"full-batch CKA needs at least 5 images (unbiased HSIC with a jackknife), got {num}")
    grams_a = [GramAccumulator(num, chunk_size, work_dir) for _ in names]
    grams_b = {label: [GramAccumulator(num, chunk_size, work_dir) for _ in other_names[label]] for label in models}
    try:
        for start in tqdm(range(0, num, batch_size), desc="CKA", disable=not progress):
            pixel_values = _pixel_values(
                image_processor, [images[i] for i in range(start, min(start + batch_size, num))], input_size, device
            )
            for acc, f in zip(grams_a, _checked_features(reference, pixel_values, pool, names, "reference")):
                acc.update(f, start)
            for label, model in models.items():
                for acc, f in zip(
                    grams_b[label], _checked_features(model, pixel_values, pool, other_names[label], label)
                ):
                    acc.update(f, start)
        computed_a = [acc.compute() for acc in grams_a]
        return {
            label: cka_from_grams(
                computed_a,
                [acc.compute() for acc in grams_b[label]],
                names,
                other_names[label],
                num_permutations=num_permutations,
                confidence=confidence,
                seed=seed,
                undefined=undefined,
            )
            for label in models
        }
    finally:
        for acc in [*grams_a, *(a for accs in grams_b.values() for a in accs)]:
            acc.close()


def layerwise_cka(
    reference: torch.nn.Module,
    others: Mapping[str, torch.nn.Module],
    images: Sequence[Any],
    image_processor: Any,
    batch_size: int = 8,
    input_size: tuple[int, int] = (480, 640),
    pool: str = "flatten",
    device: str | torch.device | None = None,
    progress: bool = True,
    undefined: str = "raise",
    estimator: str = "minibatch",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """CKA matrices only: ``(label -> (L_A, L_B) CKA matrix, layer names of A)`` of
    :func:`layerwise_cka_results` (same arguments; no permutation null). The matrices are not clipped."""
    results = layerwise_cka_results(
        reference,
        others,
        images,
        image_processor,
        estimator=estimator,
        batch_size=batch_size,
        input_size=input_size,
        pool=pool,
        device=device,
        progress=progress,
        undefined=undefined,
        num_permutations=0,
    )
    return {label: r.cka for label, r in results.items()}, hidden_state_names(reference)

"""Layer-wise CKA between checkpoints: how much each Swin-V2 block's representation changes (MeSa's analysis).

Each model runs with ``output_hidden_states=True``; its ``hidden_states`` are the patch-embedding output followed
by every Swin-V2 block's output, each (B, C, h, w). Features are flattened per image (or mean-pooled over space)
and compared with minibatch linear CKA (unbiased HSIC accumulated over batches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .cka import MinibatchCKA

POOLING = ("flatten", "mean")


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


@torch.inference_mode()
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
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Minibatch CKA between every hidden state of ``reference`` and of each model in ``others``.

    Args:
        reference: the model A (e.g. the pre-trained checkpoint).
        others: label -> model B (e.g. ``{"pretrained vs finetuned": finetuned}``); same architecture as A.
        images: PIL images / paths / arrays; all resized to ``input_size`` (H, W) without keeping aspect ratio.
        image_processor: processor giving ``pixel_values`` (e.g. ``MeSaImageProcessor``).
        batch_size: images per batch (>= 4; batches are balanced so none is smaller than 4).
        pool: ``"flatten"`` (C*h*w features per image, Nguyen et al.) or ``"mean"`` (spatial mean, C features).
        undefined: a layer whose features do not vary over the images: ``"raise"`` (ValueError) or ``"nan"``.

    Returns:
        (label -> (L_A, L_B) CKA matrix, layer names of A).
    """
    from mesa_hf.evaluation.inference import resolve_device

    if pool not in POOLING:
        raise ValueError(f"pool must be one of {POOLING}, got {pool!r}")
    if not others:
        raise ValueError("layerwise_cka needs at least one model to compare with the reference")
    device = resolve_device(device)
    names = hidden_state_names(reference)
    models = {label: m.to(device).eval() for label, m in others.items()}
    reference = reference.to(device).eval()
    accumulators = {label: MinibatchCKA(len(names), len(hidden_state_names(m))) for label, m in models.items()}
    batches = _balanced_batches(len(images), batch_size)
    for batch in tqdm(batches, desc="CKA", disable=not progress):
        pixel_values = image_processor(
            images=[images[i] for i in batch],
            size={"height": int(input_size[0]), "width": int(input_size[1])},
            keep_aspect_ratio=False,
            return_tensors="pt",
        )["pixel_values"].to(device)
        feats_a = _features(reference, pixel_values, pool)
        if len(feats_a) != len(names):
            raise ValueError(f"reference returned {len(feats_a)} hidden states, expected {len(names)} ({names})")
        for label, model in models.items():
            accumulators[label].update(feats_a, _features(model, pixel_values, pool))
    return {label: acc.compute(undefined) for label, acc in accumulators.items()}, names

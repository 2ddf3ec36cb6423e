"""Skipping padded query rows in the fused window attention: same outputs and gradients as computing them."""

from __future__ import annotations

import copy

import pytest
import torch

from mesa_hf import attention_mesa
from mesa_hf.attention_mesa import SdpaSwinv2Layer, padded_query_skipping, padded_query_subsets

from .helpers import tiny_depth_model

SIZE = (96, 160)  # stage 3: 6x10 tokens in 4x4 windows -> padded to 8x12, 37.5 % padded query rows


def _skipped_groups(model, pixel_values) -> int:
    with torch.no_grad():
        model(pixel_values=pixel_values)
    count = 0
    for layer in model.modules():
        if isinstance(layer, SdpaSwinv2Layer):
            for name, (_, plan) in layer._mesa_cache.items():
                if name.startswith("plan"):
                    subsets = padded_query_subsets(plan, layer.window_size**2)
                    count += sum(s is not None for s in subsets or [])
    return count


def test_padded_rows_are_skipped_and_outputs_unchanged():
    model = tiny_depth_model()
    pixel_values = torch.randn(2, 3, *SIZE)
    assert _skipped_groups(model, pixel_values) > 0
    with torch.no_grad():
        skipped = model(pixel_values=pixel_values).predicted_depth
        with padded_query_skipping(False):
            computed = model(pixel_values=pixel_values).predicted_depth
    assert (skipped - computed).abs().max() <= 1e-5
    assert torch.isfinite(skipped).all()


def test_padded_subsets_cover_exactly_the_valid_rows():
    model = tiny_depth_model()
    _skipped_groups(model, torch.randn(1, 3, *SIZE))
    for layer in model.modules():
        if not isinstance(layer, SdpaSwinv2Layer):
            continue
        for name, (_, plan) in layer._mesa_cache.items():
            subsets = padded_query_subsets(plan, layer.window_size**2) if name.startswith("plan") else None
            for count, entries in zip(plan["groups"], subsets or []):
                if entries is None:
                    continue
                windows = torch.cat(
                    [torch.arange(w.start, w.stop) if isinstance(w, slice) else w.cpu() for w, _ in entries]
                )
                assert sorted(windows.tolist()) == list(range(count))  # every window once
                rows = sum(
                    len(w if not isinstance(w, slice) else range(w.start, w.stop))
                    * (layer.window_size**2 if r is None else len(r))
                    for w, r in entries
                )
                assert rows < count * layer.window_size**2


@pytest.mark.parametrize("custom_cpu_backward", [True, False])
def test_gradients_unchanged_with_skipping(monkeypatch, custom_cpu_backward):
    """Training: with the custom CPU backward (padded rows computed, cropped before the projection) and with SDPA's
    own backward (as on CUDA: padded rows skipped)."""
    if not custom_cpu_backward:
        monkeypatch.setattr(attention_mesa, "_flash_cpu", None)
    model = tiny_depth_model().train()
    reference = copy.deepcopy(model)
    pixel_values = torch.randn(1, 3, *SIZE)
    model(pixel_values=pixel_values).predicted_depth.square().mean().backward()
    with padded_query_skipping(False):
        reference(pixel_values=pixel_values).predicted_depth.square().mean().backward()
    checked = 0
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        if a.grad is not None:
            assert torch.isfinite(a.grad).all(), name
            assert (a.grad - b.grad).abs().max() <= 1e-5 * (1 + b.grad.abs().max()), name
            checked += 1
    assert checked > 10

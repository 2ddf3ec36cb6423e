"""The fused (SDPA) Swin-V2 window attention against transformers' stock modules."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import Swinv2Backbone, Swinv2Config
from transformers.models.swinv2.modeling_swinv2 import Swinv2Layer, Swinv2SelfAttention

from mesa_hf import attention_mesa
from mesa_hf.attention_mesa import (
    Float32Swinv2SelfAttention,
    SdpaSwinv2Layer,
    SdpaSwinv2SelfAttention,
    get_window_attention,
    set_window_attention,
    shift_mask_patterns,
)

OUT_FEATURES = ["stage1", "stage2", "stage3", "stage4"]


def small_config(**overrides) -> Swinv2Config:
    """Four stages of two blocks (so every stage wider than its window has a shifted block), window 4."""
    kwargs = {
        "image_size": (64, 96),
        "embed_dim": 16,
        "depths": [2, 2, 2, 2],
        "num_heads": [1, 2, 2, 4],
        "window_size": 4,
        "pretrained_window_sizes": [3, 3, 3, 2],
        "drop_path_rate": 0.0,
        "out_features": OUT_FEATURES,
    }
    kwargs.update(overrides)
    return Swinv2Config(**kwargs)


def model_pair(config: Swinv2Config, seed: int = 0) -> tuple[Swinv2Backbone, Swinv2Backbone]:
    """A stock backbone and an SDPA copy with the same weights."""
    torch.manual_seed(seed)
    eager = Swinv2Backbone(config)
    sdpa = copy.deepcopy(eager)
    set_window_attention(sdpa, "sdpa")
    return eager, sdpa


def pixels(batch: int = 2, height: int = 60, width: int = 100, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    """Input whose token grids (15 x 25, 8 x 13, 4 x 7 at window 4) are no multiple of the window: the padding path."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def feature_loss(feature_maps) -> torch.Tensor:
    """A scalar touching every stage with fixed random weights."""
    total = 0.0
    for index, feature_map in enumerate(feature_maps):
        weights = torch.randn(
            feature_map.shape, generator=torch.Generator().manual_seed(index), dtype=feature_map.dtype
        )
        total = total + (feature_map * weights).sum()
    return total


def max_difference(first, second) -> float:
    return max((a - b).abs().max().item() for a, b in zip(first, second, strict=True))


def test_swap_changes_classes_only():
    eager, sdpa = model_pair(small_config())
    layers = [m for m in sdpa.modules() if isinstance(m, Swinv2Layer)]
    assert len(layers) == 8
    assert all(type(m) is SdpaSwinv2Layer for m in layers)
    assert all(type(m.attention.self) is SdpaSwinv2SelfAttention for m in layers)
    assert get_window_attention(sdpa) == "sdpa" and get_window_attention(eager) == "eager"
    # shifted blocks exist in stages wider than the window, and the padding path is exercised by `pixels()`
    assert [m.shift_size for m in layers] == [0, 2, 0, 2, 0, 0, 0, 0]
    assert [m.window_size for m in layers] == [4, 4, 4, 4, 4, 4, 2, 2]
    set_window_attention(sdpa, "eager")
    assert all(type(m) is Swinv2Layer for m in sdpa.modules() if isinstance(m, Swinv2Layer))
    assert all(type(m) is Float32Swinv2SelfAttention for m in sdpa.modules() if isinstance(m, Swinv2SelfAttention))


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(
    ("config_kwargs", "size"),
    [
        ({}, (60, 100)),  # pretrained windows nonzero, rectangular image, padding in both directions
        ({"image_size": 64, "pretrained_window_sizes": [0, 0, 0, 0]}, (64, 64)),  # no padding at build size
    ],
)
def test_forward_and_gradients_match_eager(mode, config_kwargs, size):
    eager, sdpa = model_pair(small_config(**config_kwargs))
    getattr(eager, mode)()
    getattr(sdpa, mode)()
    x = pixels(height=size[0], width=size[1])
    eager_maps = eager(x).feature_maps
    sdpa_maps = sdpa(x).feature_maps
    assert [m.shape for m in sdpa_maps] == [m.shape for m in eager_maps]
    assert max_difference(eager_maps, sdpa_maps) <= 1e-4

    eager_grads = torch.autograd.grad(feature_loss(eager_maps), list(eager.parameters()), allow_unused=True)
    sdpa_grads = torch.autograd.grad(feature_loss(sdpa_maps), list(sdpa.parameters()), allow_unused=True)
    for (name, _), g_eager, g_sdpa in zip(eager.named_parameters(), eager_grads, sdpa_grads, strict=True):
        assert g_eager is not None and g_eager.norm() > 0, name  # every parameter takes part
        relative = ((g_sdpa - g_eager).norm() / g_eager.norm()).item()
        assert relative <= 1e-3, (name, relative)


def test_float64_matches_eager_exactly_at_large_logit_scale():
    """In float64 the two paths agree to rounding, at logit scales near the clamp where a wrong mask value shows."""
    eager, sdpa = model_pair(small_config())
    with torch.no_grad():
        for module in eager.modules():
            if isinstance(module, Swinv2SelfAttention):
                module.logit_scale.uniform_(math.log(50.0), math.log(200.0))  # some above the clamp at 100
    sdpa.load_state_dict(eager.state_dict())
    eager.double().train()
    sdpa.double().train()
    x = pixels(dtype=torch.float64)
    eager_maps = eager(x).feature_maps
    sdpa_maps = sdpa(x).feature_maps
    assert max_difference(eager_maps, sdpa_maps) <= 1e-9
    eager_grads = torch.autograd.grad(feature_loss(eager_maps), list(eager.parameters()), allow_unused=True)
    sdpa_grads = torch.autograd.grad(feature_loss(sdpa_maps), list(sdpa.parameters()), allow_unused=True)
    for g_eager, g_sdpa in zip(eager_grads, sdpa_grads, strict=True):
        if g_eager is not None:
            assert (g_eager - g_sdpa).abs().max() <= 1e-8 * (1 + g_eager.abs().max())


def test_shift_mask_patterns_match_transformers_mask():
    """The four group patterns are the stock layer's mask (added twice by the stock attention) window by window."""
    config = small_config(image_size=64)
    layer = Swinv2Backbone(config).encoder.layers[0].blocks[1]
    assert layer.shift_size == 2
    height = width = 12  # 3 x 3 windows of 4
    stock = layer.get_attn_mask(height, width, dtype=torch.float32).view(3, 3, 16, 16)
    patterns = shift_mask_patterns(4, 2)
    expected_group = [[0, 0, 1], [0, 0, 1], [2, 2, 3]]
    for row in range(3):
        for col in range(3):
            assert torch.equal(2 * stock[row, col], patterns[expected_group[row][col]])


@pytest.mark.parametrize("chunk_elements", [1 << 19, 40, 600])
def test_cpu_window_attention_backward(monkeypatch, chunk_elements):
    """The custom backward (whole-window chunks, head-slice chunks) against autograd through plain maths."""
    monkeypatch.setattr(attention_mesa, "_BACKWARD_CHUNK_ELEMENTS", chunk_elements)
    generator = torch.Generator().manual_seed(0)
    windows, heads, tokens, head_size = 5, 4, 9, 6
    q, k, v = (
        torch.randn(windows, heads, tokens, head_size, generator=generator, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    mask = torch.randn(heads, tokens, tokens, generator=generator, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(windows, heads, tokens, head_size, generator=generator, dtype=torch.float64)
    reference = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1) @ v
    fused = attention_mesa.cpu_window_attention(q, k, v, mask)
    assert (reference - fused).abs().max() <= 1e-12
    expected = torch.autograd.grad(reference, (q, k, v, mask), grad_out)
    actual = torch.autograd.grad(fused, (q, k, v, mask), grad_out)
    for e, a in zip(expected, actual, strict=True):
        assert (e - a).abs().max() <= 1e-10


def test_caches_repeat_and_invalidate():
    eager, sdpa = model_pair(small_config())
    eager.eval()
    sdpa.eval()
    x = pixels()
    with torch.no_grad():
        first = sdpa(x).feature_maps
        second = sdpa(x).feature_maps
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    attention = sdpa.encoder.layers[0].blocks[1].attention.self
    assert {"group_masks", "qkv"} <= set(attention._mesa_cache)

    # a training step changes the weights in place; eval afterwards must see the new weights
    sdpa.train()
    optimizer = torch.optim.SGD(sdpa.parameters(), lr=1e-3)
    feature_loss(sdpa(x).feature_maps).backward()
    optimizer.step()
    sdpa.eval()
    uncached = copy.deepcopy(sdpa)
    set_window_attention(uncached, "sdpa")  # drops the copied caches
    stock = copy.deepcopy(uncached)
    set_window_attention(stock, "eager")
    with torch.no_grad():
        after_step = sdpa(x).feature_maps
        assert max_difference(after_step, first) > 1e-3
        assert max_difference(after_step, uncached(x).feature_maps) == 0.0
        assert max_difference(after_step, stock(x).feature_maps) <= 1e-4

    # load_state_dict copies in place (a new version), `.double()` replaces the tensors
    fresh, _ = model_pair(small_config(), seed=5)
    sdpa.load_state_dict(fresh.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert max_difference(sdpa(x).feature_maps, fresh(x).feature_maps) <= 1e-4
        sdpa.double()
        fresh.double()
        assert max_difference(sdpa(x.double()).feature_maps, fresh(x.double()).feature_maps) <= 1e-9


def test_gradient_checkpointing():
    eager, sdpa = model_pair(small_config())
    checkpointed = copy.deepcopy(sdpa)
    checkpointed.gradient_checkpointing_enable()
    assert all(stage.gradient_checkpointing for stage in checkpointed.encoder.layers)
    x = pixels()
    grads = {}
    for name, model in (("eager", eager), ("sdpa", sdpa), ("checkpointed", checkpointed)):
        model.train()
        maps = model(x).feature_maps
        grads[name] = torch.autograd.grad(feature_loss(maps), list(model.parameters()), allow_unused=True)
    for g_eager, g_plain, g_checkpointed in zip(grads["eager"], grads["sdpa"], grads["checkpointed"], strict=True):
        if g_eager is None or g_eager.norm() == 0:
            continue
        assert torch.allclose(g_plain, g_checkpointed, rtol=0, atol=1e-6)
        assert (g_checkpointed - g_eager).norm() / g_eager.norm() <= 1e-3


def test_state_dicts_interchange_with_stock_backbone():
    config = small_config()
    eager, sdpa = model_pair(config)
    assert list(sdpa.state_dict()) == list(eager.state_dict())
    assert all(sdpa.state_dict()[k].shape == v.shape for k, v in eager.state_dict().items())
    torch.manual_seed(3)
    other = Swinv2Backbone(config)  # stock, different weights
    sdpa.load_state_dict(other.state_dict(), strict=True)
    stock = Swinv2Backbone(config)
    stock.load_state_dict(sdpa.state_dict(), strict=True)
    for key, value in other.state_dict().items():
        assert torch.equal(stock.state_dict()[key], value)
    other.eval()
    sdpa.eval()
    with torch.no_grad():
        assert max_difference(sdpa(pixels()).feature_maps, other(pixels()).feature_maps) <= 1e-4


def test_output_attentions_falls_back_to_stock():
    eager, sdpa = model_pair(small_config())
    eager.eval()
    sdpa.eval()
    with torch.no_grad():
        expected = eager(pixels(), output_attentions=True)
        actual = sdpa(pixels(), output_attentions=True)
    assert len(actual.attentions) == len(expected.attentions) == 4
    assert max_difference(actual.attentions, expected.attentions) == 0.0
    assert max_difference(actual.feature_maps, expected.feature_maps) == 0.0


def test_attention_dropout_in_training():
    eager, sdpa = model_pair(small_config(attention_probs_dropout_prob=0.5))
    x = pixels()
    sdpa.train()
    torch.manual_seed(0)
    first = sdpa(x).feature_maps
    second = sdpa(x).feature_maps
    assert max_difference(first, second) > 1e-3  # dropout is active
    grads = torch.autograd.grad(feature_loss(first), list(sdpa.parameters()), allow_unused=True)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    eager.eval()
    sdpa.eval()
    with torch.no_grad():
        assert max_difference(sdpa(x).feature_maps, eager(x).feature_maps) <= 1e-4  # and off in eval


def test_bad_arguments():
    _, sdpa = model_pair(small_config())
    with pytest.raises(ValueError, match="flash"):
        set_window_attention(sdpa, "flash")
    with pytest.raises(ValueError, match="no Swin-V2 layer"):
        set_window_attention(torch.nn.Linear(2, 2), "sdpa")


def test_mesa_depth_model_with_sdpa_encoder():
    """The swap on a MeSa model's encoder (`model.backbone`) keeps its depth output and its state dict keys."""
    mesa_hf = pytest.importorskip("mesa_hf")
    if not hasattr(mesa_hf, "MeSaForDepthEstimation"):
        pytest.skip("mesa_hf.MeSaForDepthEstimation is not in this checkout")
    torch.manual_seed(0)
    eager = mesa_hf.MeSaForDepthEstimation(mesa_hf.MeSaConfig.from_preset("test")).eval()
    sdpa = copy.deepcopy(eager)
    set_window_attention(sdpa.backbone, "sdpa")
    assert list(sdpa.state_dict()) == list(eager.state_dict())
    x = pixels(height=64, width=96)
    with torch.no_grad():
        expected = eager(pixel_values=x).predicted_depth
        actual = sdpa(pixel_values=x).predicted_depth
    assert actual.shape == expected.shape == (2, 64, 96)
    assert (actual - expected).abs().max() <= 1e-4

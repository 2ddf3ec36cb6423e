"""Half precision (fp16, bf16): autocast, half-precision weights and the pipeline all give finite, accurate depth.

Swin-V2's cosine attention computes in float32 inside the attention module (`cosine_attention_in_float32`); without
it, float16 turns the zero queries of padding tokens into NaN.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline
from transformers.models.swinv2.modeling_swinv2 import Swinv2SelfAttention

from mesa_hf import MeSaForDepthEstimation, MeSaImageProcessor
from mesa_hf.attention_mesa import Float32Swinv2SelfAttention

from .helpers import tiny_depth_model

HALF = [torch.float16, torch.bfloat16]
SIZE = {"height": 96, "width": 128}  # stage grids 24x32 .. 3x4: padding at window 4 in the last stages


def textured_image(height: int = 240, width: int = 320, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth shading, edges, a checkerboard floor and sensor noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    shade = 0.3 + 0.5 * rows
    checker = ((rows * 12).astype(int) + (cols * 16).astype(int)) % 2 * (rows > 0.6)
    box = (np.abs(rows - 0.4) < 0.15) & (np.abs(cols - 0.3) < 0.12)
    image = np.stack([shade + 0.3 * checker, shade * (1 - 0.5 * box), 0.6 - 0.4 * cols + 0.3 * box], axis=-1)
    image += rng.normal(0.0, 0.03, image.shape)
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))


def pixel_values_of(image: Image.Image) -> torch.Tensor:
    return MeSaImageProcessor()(images=image, size=SIZE, return_tensors="pt")["pixel_values"]


def mean_relative_difference(depth: torch.Tensor, reference: torch.Tensor) -> float:
    return float(((depth.float() - reference).abs() / reference).mean())


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request) -> MeSaForDepthEstimation:
    return tiny_depth_model(seed=0, window_attention=request.param)


def test_float16_without_the_guard_is_nan():
    """What the guard prevents: transformers' stock attention in float16 gives NaN (so the tests below can fail)."""
    model = tiny_depth_model(seed=0, window_attention="eager").half()
    pixel_values = pixel_values_of(textured_image()).half()
    with torch.no_grad():
        assert torch.isfinite(model(pixel_values).predicted_depth).all()
        for module in model.modules():
            if isinstance(module, Float32Swinv2SelfAttention):
                module.__class__ = Swinv2SelfAttention  # unguarded
        assert not torch.isfinite(model(pixel_values).predicted_depth).all()


@pytest.mark.parametrize("dtype", HALF)
def test_autocast_and_half_weights_match_float32(model, dtype):
    pixel_values = pixel_values_of(textured_image())
    with torch.no_grad():
        reference = model(pixel_values).predicted_depth
        with torch.autocast("cpu", dtype=dtype):
            autocast = model(pixel_values).predicted_depth
        half_model = tiny_depth_model(seed=0, window_attention=model.config.window_attention).to(dtype)
        half_weights = half_model(pixel_values.to(dtype)).predicted_depth
    # float32 models outside autocast are untouched by the guard
    assert reference.dtype == torch.float32
    for depth in (autocast, half_weights):
        assert depth.dtype == dtype and torch.isfinite(depth).all()
        difference = mean_relative_difference(depth, reference)
        assert difference < (0.02 if dtype == torch.float16 else 0.05), (dtype, difference)
    # half-precision weights are not changed by the float32 copies the attention computes with
    assert all(p.dtype == dtype for p in half_model.parameters())


def check_float16_depth_within_two_percent_on_a_real_photo(model, shared_data):
    """Real-data check (called from tests/test_cli.py's real-photo test)."""
    with Image.open(shared_data / "nyu_test10" / "image_0.png") as photo:
        pixel_values = pixel_values_of(photo.convert("RGB"))
    with torch.no_grad():
        reference = model(pixel_values).predicted_depth
        with torch.autocast("cpu", dtype=torch.float16):
            depth = model(pixel_values).predicted_depth
    assert torch.isfinite(depth).all()
    assert mean_relative_difference(depth, reference) < 0.02


@pytest.mark.parametrize("dtype", HALF)
def test_pipeline_and_from_pretrained_with_a_half_precision_model(tmp_path, dtype):
    reference_model = tiny_depth_model(seed=0)
    reference_model.save_pretrained(tmp_path)
    MeSaImageProcessor(size=SIZE).save_pretrained(tmp_path)
    image = textured_image()
    estimator = pipeline("depth-estimation", model=str(tmp_path), dtype=dtype, device="cpu")
    assert estimator.model.dtype == dtype
    depth = estimator(image)["predicted_depth"]
    assert depth.shape == (image.height, image.width) and torch.isfinite(depth).all()
    loaded = MeSaForDepthEstimation.from_pretrained(tmp_path, dtype=dtype).eval()
    assert loaded.dtype == dtype
    pixel_values = pixel_values_of(image)
    with torch.no_grad():
        half = loaded(pixel_values.to(dtype)).predicted_depth
        reference = reference_model(pixel_values).predicted_depth
    assert torch.isfinite(half).all()
    assert mean_relative_difference(half, reference) < (0.02 if dtype == torch.float16 else 0.05)


@pytest.mark.parametrize("window_attention", ["sdpa", "eager"])
def test_float16_autocast_training_steps_have_finite_loss_and_gradients(window_attention):
    model = tiny_depth_model(seed=0, window_attention=window_attention).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 64, 96, generator=generator)
    labels = torch.rand(2, 64, 96, generator=generator) * 5 + 0.5
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(pixel_values, labels=labels).loss
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert len(grads) == sum(1 for _ in model.parameters())
        assert all(torch.isfinite(g).all() for g in grads)
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters())

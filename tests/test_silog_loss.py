import logging
import math

import pytest
import torch

from mesa_hf import losses
from mesa_hf.losses import silog_loss


def test_silog_hand_computed_and_ignores_invalid_pixels():
    pred = torch.tensor([[1.0, math.e, 3.0, 7.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, float("nan")]])  # last two pixels carry no ground truth
    # d = log(pred) - log(target) = [0, 1] on the valid pixels: mean(d^2) = 0.5, mean(d) = 0.5
    expected = math.sqrt(0.5 - 0.5 * 0.5**2)
    assert silog_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    # the invalid pixels' predictions do not matter
    pred2 = pred.clone()
    pred2[0, 2:] = 123.0
    assert silog_loss(pred2, target).item() == pytest.approx(expected, rel=1e-6)


def test_silog_lambda_and_scale_invariance():
    pred = torch.tensor([2.0, 4.0, 8.0])
    target = torch.tensor([1.0, 2.0, 4.0])
    # d = log 2 everywhere: lambda = 1 removes the mean entirely
    assert silog_loss(pred, target, lambd=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert silog_loss(pred, target, lambd=0.0).item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_silog_gradient_is_finite_at_zero_variance():
    """Equal log-ratios with lambda 1 (or a perfect prediction) make the variance 0, where sqrt's slope is infinite."""
    for pred, target, lambd in ((torch.full((4,), 2.0), torch.ones(4), 1.0), (torch.ones(3), torch.ones(3), 0.5)):
        pred.requires_grad_(True)
        loss = silog_loss(pred, target, lambd=lambd)
        (grad,) = torch.autograd.grad(loss, pred)
        assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(grad).all(), (lambd, grad)


def test_silog_explicit_mask():
    pred = torch.tensor([1.0, math.e, math.e**2])
    target = torch.ones(3)
    mask = torch.tensor([True, True, False])
    assert silog_loss(pred, target, valid_mask=mask).item() == pytest.approx(math.sqrt(0.375), rel=1e-6)


def test_silog_without_valid_pixel_is_a_zero_loss_without_gradient(caplog):
    losses._warn_once.cache_clear()
    pred = torch.full((2, 3, 3), 2.0, requires_grad=True)
    targets = [torch.zeros(2, 3, 3), torch.full((2, 3, 3), float("nan"))]
    with caplog.at_level(logging.WARNING, logger="mesa_hf.losses"):
        for target in targets:
            loss = silog_loss(pred, target)
            assert loss.item() == 0.0 and loss.requires_grad
            (grad,) = torch.autograd.grad(loss, pred)
            assert torch.equal(grad, torch.zeros_like(pred))
        # a mask that excludes every valid pixel counts too
        assert silog_loss(pred, torch.ones(2, 3, 3), valid_mask=torch.zeros(2, 3, 3, dtype=torch.bool)).item() == 0.0
    warnings = [r for r in caplog.records if "no valid ground-truth pixel" in r.getMessage()]
    assert len(warnings) == 1  # once per process


def test_silog_errors():
    with pytest.raises(ValueError, match="shape"):
        silog_loss(torch.ones(2, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="> 0"):
        silog_loss(torch.tensor([0.0, 1.0]), torch.ones(2))

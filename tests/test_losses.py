"""The objectives' maths (mesa_hf.losses) against hand-derived numbers."""

import math

import pytest
import torch

from mesa_hf.losses import (
    edge_aware_smoothness,
    mask_to_pixel_mask,
    min_reprojection_loss,
    norm_targets,
    photometric_error,
    simmim_loss,
    ssim,
)


def test_ssim_of_identical_images_is_zero():
    image = torch.rand(2, 3, 8, 9, generator=torch.Generator().manual_seed(0))
    error = ssim(image, image.clone())
    assert error.shape == (2, 3, 8, 9)
    assert error.abs().max().item() < 1e-6


def test_ssim_of_different_images_is_positive_and_bounded():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 3, 6, 6, generator=gen), torch.rand(1, 3, 6, 6, generator=gen)
    error = ssim(x, y)
    assert error.min().item() >= 0 and error.max().item() <= 1
    assert error.mean().item() > 0.1


def test_photometric_error_of_constant_offset():
    # constant images a and b: local variances are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) and the SSIM term
    # (1 - SSIM) / 2 = (a - b)^2 / (2 (a^2 + b^2 + C1)) = 0.04 / 0.6802 for a = 0.3, b = 0.5
    # (float64: in float32 the pooled variance E[x^2] - E[x]^2 carries ~1e-8 of rounding, ~6e-6 in the result)
    target = torch.full((2, 3, 5, 7), 0.3, dtype=torch.float64)
    pred = target + 0.2
    expected_ssim_term = 0.04 / (2 * (0.09 + 0.25 + 0.01**2))
    expected = 0.85 * expected_ssim_term + 0.15 * 0.2  # = 0.0799853...
    error = photometric_error(pred, target)
    assert error.shape == (2, 1, 5, 7)
    torch.testing.assert_close(error, torch.full_like(error, expected), rtol=0, atol=1e-12)
    error32 = photometric_error(pred.float(), target.float())
    torch.testing.assert_close(error32, torch.full_like(error32, expected), rtol=0, atol=2e-5)
    # alpha = 0 leaves the L1 term only
    torch.testing.assert_close(photometric_error(pred, target, alpha=0.0), torch.full_like(error, 0.2))


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="photometric_error"):
        photometric_error(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError, match="at least 2x2"):
        ssim(torch.rand(1, 3, 1, 4), torch.rand(1, 3, 1, 4))
    with pytest.raises(ValueError, match="at least 2x2"):
        edge_aware_smoothness(torch.rand(1, 1, 4, 1), torch.rand(1, 3, 4, 1))
    with pytest.raises(ValueError, match="differ in batch or size"):
        edge_aware_smoothness(torch.rand(1, 1, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ssim(torch.rand(3, 4, 4), torch.rand(3, 4, 4))


def test_smoothness_of_constant_disparity_is_zero():
    disp = torch.full((2, 1, 4, 5), 0.7)
    image = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    assert edge_aware_smoothness(disp, image).item() == 0.0


def test_smoothness_on_a_hand_computed_2x3_example():
    # disp [[1,2,3],[3,2,1]] has mean 2 -> normalised [[.5,1,1.5],[1.5,1,.5]]
    disp = torch.tensor([[[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]]])
    # the image's channel mean of |gradient| equals |gradient of I| for channels I, 2I, 0
    intensity = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    image = torch.stack([intensity, 2 * intensity, torch.zeros_like(intensity)])[None]
    # x: |dx d| = 0.5 everywhere, |dx I| = [[0,1],[1,0]] -> mean(0.5 * [1, e^-1, e^-1, 1]) = (1 + e^-1) / 4
    # y: |dy d| = [1, 0, 1], |dy I| = [0, 1, 0] -> mean([1, 0, 1]) = 2/3
    expected = (1 + math.exp(-1)) / 4 + 2 / 3
    assert edge_aware_smoothness(disp, image).item() == pytest.approx(expected, rel=1e-6)
    # scaling the disparity does not change the loss (mean normalisation)
    assert edge_aware_smoothness(10 * disp, image).item() == pytest.approx(expected, rel=1e-6)


def test_min_reprojection_picks_minimum_and_auto_mask():
    reprojection = torch.tensor([[[[0.5, 0.2]], [[0.3, 0.4]]]])  # (1, 2, 1, 2)
    identity = torch.tensor([[[[0.1, 0.9]], [[0.6, 0.8]]]])
    loss, auto_mask = min_reprojection_loss(reprojection, identity, tie_noise=0.0)
    assert loss.shape == (1, 1, 1, 2) and auto_mask.shape == (1, 1, 1, 2) and auto_mask.dtype == torch.bool
    torch.testing.assert_close(loss, torch.tensor([[[[0.1, 0.2]]]]))
    assert auto_mask.tolist() == [[[[False, True]]]]  # pixel 0: static (identity wins); pixel 1: warped wins
    # default tie-breaking noise (std 1e-5) changes the values by ~1e-5 only
    noisy, noisy_mask = min_reprojection_loss(reprojection, identity, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy, loss, rtol=0, atol=1e-4)
    assert torch.equal(noisy_mask, auto_mask)
    # without identity errors: plain per-pixel minimum, every pixel kept
    plain, mask = min_reprojection_loss(reprojection, None)
    torch.testing.assert_close(plain, torch.tensor([[[[0.3, 0.2]]]]))
    assert bool(mask.all())


def test_mask_to_pixel_mask_upsamples_patches():
    flat = torch.tensor([[1, 0, 0, 1]], dtype=torch.bool)  # 2x2 patch grid, patch 2, image 4x4
    pixel_mask = mask_to_pixel_mask(flat, patch_size=2, height=4, width=4)
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    assert pixel_mask.shape == (1, 1, 4, 4)
    torch.testing.assert_close(pixel_mask[0, 0], expected)
    torch.testing.assert_close(mask_to_pixel_mask(flat.view(1, 2, 2), 2, 4, 4), pixel_mask)
    with pytest.raises(ValueError, match="patch grid"):
        mask_to_pixel_mask(flat, patch_size=2, height=4, width=6)
    with pytest.raises(ValueError, match="multiples"):
        mask_to_pixel_mask(flat, patch_size=3, height=4, width=4)


def test_simmim_loss_on_a_hand_example():
    pixel_values = torch.zeros(1, 2, 2, 2)
    reconstruction = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 3.0]]]])
    pixel_mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # masked |x - x_rec|: channel 0 -> 1 + 4, channel 1 -> 1 + 3; sum 9 over 2 masked pixels and 2 channels
    expected = 9 / (2 + 1e-5) / 2
    assert simmim_loss(pixel_values, reconstruction, pixel_mask).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="pixel_mask"):
        simmim_loss(pixel_values, reconstruction, pixel_mask[:, :, :1])


def test_norm_targets_hand_example_and_constant_image():
    # a 1x3 row with a 3x3 window: border pixels see {0, 1} (mean 0.5, unbiased var 0.5), the centre {0, 1, 2}
    row = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    out = norm_targets(row, patch_size=3)
    expected = torch.tensor([[[[-0.5 / math.sqrt(0.5 + 1e-6), 0.0, 0.5 / math.sqrt(0.5 + 1e-6)]]]])
    torch.testing.assert_close(out, expected)
    constant = torch.full((1, 3, 9, 9), 0.4)
    assert norm_targets(constant, patch_size=5).abs().max().item() < 1e-3
    with pytest.raises(ValueError, match="odd"):
        norm_targets(row, patch_size=4)

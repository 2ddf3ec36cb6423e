import pytest
import torch
from transformers import AutoModelForMaskedImageModeling

from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaForMaskedImageModeling
from mesa_hf.losses import mask_to_pixel_mask, norm_targets, simmim_loss


def _mask(batch: int, side: int, mask_patch: int = 16, model_patch: int = 4, ratio: float = 0.6) -> torch.Tensor:
    """A SimMIM-style random mask on the mask-patch grid, upsampled to the model-patch grid, flattened."""
    cells = side // mask_patch
    scale = mask_patch // model_patch
    mask = torch.rand(batch, cells, cells) < ratio
    return mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2).reshape(batch, -1)


def test_loss_is_l1_over_masked_pixels_and_falls():
    model = MeSaForMaskedImageModeling(MeSaConfig.from_preset("test", mask_patch_size=16))
    # smooth images (colour ramps): masked regions are predictable from their context, unlike white noise
    ramp = torch.linspace(-1, 1, 64)
    pixel_values = torch.stack(
        [ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64), -ramp[None, :].expand(64, 64)]
    )
    pixel_values = torch.stack([pixel_values, 0.5 * pixel_values.flip(-1)])
    mask = _mask(2, 64)
    out = model(pixel_values, bool_masked_pos=mask)
    assert out.reconstruction.shape == pixel_values.shape
    expected = simmim_loss(pixel_values, out.reconstruction, mask_to_pixel_mask(mask, 4, 64, 64))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = out.loss.item()
    for _ in range(40):
        loss = model(pixel_values, bool_masked_pos=mask).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_normalised_targets_and_mask_token_changes_features():
    model = MeSaForMaskedImageModeling(MeSaConfig.from_preset("test", mask_patch_size=16, norm_target=True)).eval()
    with torch.no_grad():
        model.backbone.embeddings.mask_token.normal_()
    pixel_values, mask = torch.randn(1, 3, 64, 64), _mask(1, 64)
    with torch.no_grad():
        out = model(pixel_values, bool_masked_pos=mask)
        unmasked = model(pixel_values).reconstruction
    pixel_mask = mask_to_pixel_mask(mask, 4, 64, 64)
    expected = simmim_loss(norm_targets(pixel_values, 47), out.reconstruction, pixel_mask)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not torch.allclose(out.reconstruction, unmasked)


def test_stage_chaining_carries_the_encoder_exactly(tmp_path):
    masked = MeSaForMaskedImageModeling(MeSaConfig.from_preset("test", mask_patch_size=16))
    with torch.no_grad():
        for parameter in masked.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    masked.save_pretrained(tmp_path)
    depth = MeSaForDepthEstimation.from_pretrained(tmp_path)
    carried = {f"backbone.{k}": v for k, v in masked.backbone.state_dict().items() if k != "embeddings.mask_token"}
    carried.update({f"encoder_norm.{k}": v for k, v in masked.encoder_norm.state_dict().items()})
    state = depth.state_dict()
    for name, tensor in carried.items():
        assert torch.equal(state[name], tensor), name
    # the new head is initialised, not copied: MIM-Depth's N(0, 0.001) convolutions
    assert depth.depth_head.conv2.weight.std() < 0.01
    assert type(AutoModelForMaskedImageModeling.from_pretrained(tmp_path)) is MeSaForMaskedImageModeling


def test_bad_mim_inputs():
    model = MeSaForMaskedImageModeling(MeSaConfig.from_preset("test", mask_patch_size=16))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="bool_masked_pos must have"):
        model(torch.randn(1, 3, 64, 64), bool_masked_pos=torch.zeros(1, 10, dtype=torch.bool))

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForDepthEstimation, Swinv2Backbone
from transformers.modeling_outputs import DepthEstimatorOutput

from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaForMaskedImageModeling, MeSaForSelfSupervisedDepth
from mesa_hf.losses import silog_loss

from .helpers import tiny_depth_model


@pytest.mark.parametrize("decoder_type", ["mim", "multiscale"])
@pytest.mark.parametrize(("height", "width"), [(64, 64), (50, 70), (37, 129)])
def test_depth_at_input_size_for_any_shape(decoder_type, height, width):
    model = tiny_depth_model(decoder_type=decoder_type)
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    assert isinstance(out, DepthEstimatorOutput)
    assert out.predicted_depth.shape == (2, height, width)
    depth = out.predicted_depth
    assert torch.isfinite(depth).all() and (depth > 0).all() and (depth <= model.config.max_depth).all()
    assert depth.std() > 0


def test_save_load_round_trip_identical_outputs(tmp_path):
    model = tiny_depth_model()
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(pixel_values).predicted_depth
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = load_file(tmp_path / "model.safetensors")
    assert any(key.startswith("backbone.encoder.layers.0.blocks.0.attention") for key in saved)
    for loaded in (
        MeSaForDepthEstimation.from_pretrained(tmp_path),
        AutoModelForDepthEstimation.from_pretrained(tmp_path),
    ):
        assert type(loaded) is MeSaForDepthEstimation
        with torch.no_grad():
            assert torch.equal(loaded.eval()(pixel_values).predicted_depth, expected)


def test_auto_model_from_config():
    model = AutoModelForDepthEstimation.from_config(MeSaConfig.from_preset("test"))
    assert type(model) is MeSaForDepthEstimation


def test_hidden_states_are_every_block():
    model = tiny_depth_model()
    config = model.config.backbone_config
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), output_hidden_states=True)
    assert len(out.hidden_states) == 1 + sum(config.depths)
    shapes = [tuple(h.shape) for h in out.hidden_states]
    # patch embeddings, then blocks: stage s has embed*2^s channels at 64 / 4 / 2^s pixels
    expected = [(1, 16, 16, 16)]
    for stage, depth in enumerate(config.depths):
        side = 16 // 2**stage
        expected += [(1, 16 * 2**stage, side, side)] * depth
    assert shapes == expected


def test_loss_is_silog_over_valid_pixels_and_tuple_output():
    model = tiny_depth_model()
    pixel_values = torch.randn(2, 3, 64, 64)
    labels = torch.rand(2, 64, 64) * 5 + 0.5
    labels[0, :10] = 0.0  # no ground truth
    labels[1, 5, 5] = float("nan")
    with torch.no_grad():
        out = model(pixel_values, labels=labels)
        expected = silog_loss(out.predicted_depth, labels, lambd=0.5)
        as_tuple = model(pixel_values, labels=labels, return_dict=False)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.isfinite(out.loss)
    assert as_tuple[0].item() == out.loss.item() and torch.equal(as_tuple[1], out.predicted_depth)


def test_bad_inputs_raise_clear_errors():
    model = tiny_depth_model()
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="labels must be"):
        model(torch.randn(1, 3, 32, 32), labels=torch.ones(1, 16, 16))


def test_training_step_and_gradient_checkpointing_match():
    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = tiny_depth_model()
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert all(stage.gradient_checkpointing for stage in model.backbone.encoder.layers)
        torch.manual_seed(1)
        pixel_values, labels = torch.randn(2, 3, 64, 64), torch.rand(2, 64, 64) + 0.5
        model(pixel_values, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    assert any(name.startswith("backbone.encoder.layers.0") for name in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_batch_without_valid_ground_truth_trains_without_error():
    """Sparse ground truth can leave a whole batch without labels: zero loss, zero gradients, weights unchanged."""
    model = tiny_depth_model().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    labels = torch.zeros(2, 64, 64)
    labels[1] = float("nan")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = model(torch.randn(2, 3, 64, 64), labels=labels).loss
    assert loss.item() == 0.0
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.equal(g, torch.zeros_like(g)) for g in grads.values())
    optimizer.step()
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())


@pytest.mark.parametrize(
    "model_class", [MeSaForDepthEstimation, MeSaForMaskedImageModeling, MeSaForSelfSupervisedDepth]
)
def test_base_model_is_the_swinv2_encoder(model_class):
    """`base_model_prefix` names the real encoder attribute, so transformers' `base_model` is the Swin-V2 backbone."""
    model = model_class(MeSaConfig.from_preset("test"))
    assert model.base_model_prefix == "backbone"
    assert model.base_model is model.backbone and isinstance(model.backbone, Swinv2Backbone)


def test_image_branch_adds_stride_4_and_8_maps_and_round_trips(tmp_path):
    model = tiny_depth_model(decoder_type="multiscale", decoder_image_branch=True)
    branch = model.decoder.image_branch
    pixel_values = torch.randn(2, 3, 50, 70)  # padded to 64 x 96 inside
    with torch.no_grad():
        stride4, stride8 = branch(model._pad_to_stride(pixel_values))
        depth = model(pixel_values).predicted_depth
    channels = model.config.stage_channels
    assert stride4.shape == (2, channels[0], 16, 24) and stride8.shape == (2, channels[1], 8, 12)
    assert depth.shape == (2, 50, 70) and torch.isfinite(depth).all()
    # the branch takes part: zeroing its last convolution changes the prediction
    with torch.no_grad():
        branch.stride8[0].weight.zero_()
        assert not torch.allclose(model(pixel_values).predicted_depth, depth)
    model.save_pretrained(tmp_path)
    loaded = MeSaForDepthEstimation.from_pretrained(tmp_path).eval()
    assert loaded.config.decoder_image_branch and loaded.decoder.image_branch is not None
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).predicted_depth, model(pixel_values).predicted_depth)
    with pytest.raises(ValueError, match="pass pixel_values"):
        model.decoder(model.encode(model._pad_to_stride(pixel_values))[0])


def test_image_branch_needs_the_multiscale_decoder():
    with pytest.raises(ValueError, match="decoder_image_branch needs decoder_type='multiscale'"):
        MeSaConfig.from_preset("test", decoder_type="mim", decoder_image_branch=True)
    assert MeSaConfig.from_preset("demo").decoder_image_branch
    assert not MeSaConfig.from_preset("tiny").decoder_image_branch

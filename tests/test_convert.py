"""Conversion of SimMIM Swin-V2 and MIM-Depth-Estimation checkpoints: numerical parity with the reference code.

The reference state dicts, inputs and outputs in tests/data/convert/ were produced by randomly initialised models
built from the public reference implementations (see tests/data/convert/NOTICE); no reference code is used here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mesa_hf.cli import main
from mesa_hf.convert import (
    convert_checkpoint,
    geometry_for_windows,
    load_state_dict_file,
    pretrained_window_from_table,
    save_converted,
)
from mesa_hf.modeling_mesa import MeSaForDepthEstimation

DATA = Path(__file__).resolve().parent / "data" / "convert"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TOLERANCE = 1e-4  # issue 5 acceptance: metres for depth, feature units for the encoder


def _io(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(DATA / f"{name}_io.safetensors"))


def _mim_depth_128_input(io: dict[str, torch.Tensor]) -> torch.Tensor:
    return io["image_uint8"].float() / 255.0  # MIM-Depth feeds [0, 1] RGB without normalisation


def _mim_depth_480_input(io: dict[str, torch.Tensor]) -> torch.Tensor:
    # the stored 120x120 image, each pixel repeated 4x4 (as in the reference run)
    return (io["image_uint8_120"].float() / 255.0).repeat_interleave(4, 2).repeat_interleave(4, 3)


def _simmim_input(io: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = (io["image_uint8"].float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return pixels, io["mask"].bool().reshape(1, -1)


def _stage_windows(model) -> list[int]:
    return [stage.blocks[0].window_size for stage in model.backbone.encoder.layers]


def _stage_shifts(model) -> list[list[int]]:
    return [[block.shift_size for block in stage.blocks] for stage in model.backbone.encoder.layers]


@torch.no_grad()
def test_mim_depth_128_depth_matches_reference():
    result = convert_checkpoint("mim-depth", DATA / "mim_depth_128.safetensors")
    model, backbone = result.model, result.model.config.backbone_config
    assert (backbone.image_size, backbone.window_size) == (128, 8)
    assert _stage_windows(model) == [8, 8, 8, 4]
    assert list(backbone.pretrained_window_sizes) == [6, 6, 6, 3]
    assert _stage_shifts(model) == [[0, 4], [0, 4], [0], [0]]  # shifted windows in stages 1-2 only
    assert result.initialised == []
    io = _io("mim_depth_128")
    pixels = _mim_depth_128_input(io)
    depth = model(pixels).predicted_depth
    assert depth.shape == io["predicted_depth"].shape == (1, 128, 128)
    assert io["predicted_depth"].std() > 0.05  # the reference output is not flat
    assert (depth - io["predicted_depth"]).abs().max() <= TOLERANCE
    features, _ = model.encode(pixels)
    assert (features[-1] - io["stage4_features"]).abs().max() <= TOLERANCE


@torch.no_grad()
def test_mim_depth_480_window_30_encoder_matches_reference():
    result = convert_checkpoint("mim-depth", DATA / "mim_depth_480.safetensors")
    model, backbone = result.model, result.model.config.backbone_config
    assert (backbone.image_size, backbone.window_size) == (480, 30)
    assert _stage_windows(model) == [30, 30, 30, 15]
    assert list(backbone.pretrained_window_sizes) == [12, 12, 12, 6]
    assert _stage_shifts(model) == [[0, 15], [0, 15], [0], [0]]
    assert backbone.layer_norm_eps == 1e-6
    assert all(m.eps == 1e-6 for m in model.modules() if isinstance(m, nn.LayerNorm))
    io = _io("mim_depth_480")
    pixels = _mim_depth_480_input(io)
    features, _ = model.encode(pixels)
    assert features[-1].shape == io["stage4_features"].shape == (1, 64, 15, 15)
    assert (features[-1] - io["stage4_features"]).abs().max() <= TOLERANCE
    depth = model(pixels).predicted_depth[:, ::8, ::8]
    assert (depth - io["predicted_depth_sub8"]).abs().max() <= TOLERANCE


@torch.no_grad()
def test_simmim_encoder_and_reconstruction_head_match_reference():
    result = convert_checkpoint("simmim", DATA / "simmim_192.safetensors")
    model, backbone = result.model, result.model.config.backbone_config
    assert (backbone.image_size, backbone.window_size) == (192, 12)
    assert _stage_windows(model) == [12, 12, 12, 6]
    assert backbone.layer_norm_eps == 1e-5
    assert result.initialised == []  # mask token and decoder.0 were both in the checkpoint
    assert result.image_processor.do_normalize and result.image_processor.size == {"height": 192, "width": 192}
    io = _io("simmim_192")
    pixels, mask = _simmim_input(io)
    features, _ = model.encode(pixels)
    assert (features[-1] - io["stage4_features"]).abs().max() <= TOLERANCE
    features, _ = model.encode(pixels, bool_masked_pos=mask)
    assert (features[-1] - io["stage4_features_masked"]).abs().max() <= TOLERANCE
    output = model(pixels, bool_masked_pos=mask)
    crop = output.reconstruction[:, :, :64, :64]
    assert (crop - io["reconstruction_crop64"]).abs().max() <= TOLERANCE
    assert output.loss.item() == pytest.approx(io["loss"].item(), abs=1e-5)
    # In float64 the mapping is exact (the reference outputs were computed in float64).
    model.double()
    features, _ = model.encode(pixels.double(), bool_masked_pos=mask)
    assert (features[-1] - io["stage4_features_masked"].double()).abs().max() <= 1e-6


def test_wrapped_prefixed_checkpoints_and_stored_buffers_convert_identically(tmp_path):
    state = load_file(str(DATA / "mim_depth_128.safetensors"))
    reference = convert_checkpoint("mim-depth", state).model.state_dict()
    # a DDP checkpoint as MIM-Depth's train.py writes it, with the buffers the original code keeps
    wrapped = {f"module.{k}": v for k, v in state.items()}
    wrapped["module.encoder.layers.0.blocks.1.attn.relative_position_index"] = torch.zeros(64, 64, dtype=torch.long)
    wrapped["module.encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(16, 64, 64)
    torch.save({"model": wrapped, "epoch": torch.tensor(3)}, tmp_path / "nyu.ckpt")
    torch.save({"state_dict": state}, tmp_path / "nyu.pth")
    for path in (tmp_path / "nyu.ckpt", tmp_path / "nyu.pth"):
        converted = convert_checkpoint("mim-depth", path).model.state_dict()
        assert converted.keys() == reference.keys()
        assert all(torch.equal(converted[k], reference[k]) for k in reference)


def test_saved_checkpoint_reloads_with_processor_settings_and_parity(tmp_path):
    result = convert_checkpoint("mim-depth", DATA / "mim_depth_128.safetensors", max_depth=10.0)
    folder = save_converted(result, tmp_path / "mesa-mim-depth", source="nyudepthv2_swin_base.ckpt")
    assert (folder / "model.safetensors").is_file()
    assert "converted by `mesa-hf convert`" in (folder / "README.md").read_text()
    assert '"do_normalize": false' in (folder / "preprocessor_config.json").read_text()
    reloaded = MeSaForDepthEstimation.from_pretrained(folder).eval()
    io = _io("mim_depth_128")
    with torch.no_grad():
        depth = reloaded(_mim_depth_128_input(io)).predicted_depth
    assert (depth - io["predicted_depth"]).abs().max() <= TOLERANCE


def test_reloaded_checkpoint_keeps_layer_norm_eps(tmp_path):
    result = convert_checkpoint("mim-depth", DATA / "mim_depth_128.safetensors")
    folder = save_converted(result, tmp_path / "converted")
    reloaded = MeSaForDepthEstimation.from_pretrained(folder)
    assert {m.eps for m in reloaded.modules() if isinstance(m, nn.LayerNorm)} == {1e-6}


def test_checkpoint_that_does_not_fit_the_preset_names_the_differing_shapes():
    with pytest.raises(ValueError, match="does not fit preset 'test'") as error:
        convert_checkpoint("mim-depth", DATA / "mim_depth_128.safetensors", preset="test")
    message = str(error.value)
    assert "differ in shape" in message
    assert "backbone.embeddings.patch_embeddings.projection.weight: checkpoint (8, 3, 4, 4) vs (16, 3, 4, 4)" in message


def test_unknown_layouts_and_wrong_kinds_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key layout"):
        convert_checkpoint("simmim", {"head.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="no state dict found"):
        convert_checkpoint("simmim", {"epoch": 3})
    with pytest.raises(ValueError, match="no MIM-Depth decoder"):
        convert_checkpoint("mim-depth", DATA / "simmim_192.safetensors")
    state = load_file(str(DATA / "simmim_192.safetensors"))
    with pytest.raises(ValueError, match=r"no MeSa counterpart: encoder_head\.weight"):
        convert_checkpoint("simmim", {**state, "encoder_head.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="Swin-V1"):
        convert_checkpoint(
            "simmim",
            {**state, "encoder.layers.0.blocks.0.attn.relative_position_bias_table": state["encoder.norm.weight"]},
        )
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_state_dict_file(tmp_path / "missing.pth")


def test_encoder_only_simmim_checkpoint_keeps_head_initialised():
    state = load_file(str(DATA / "simmim_192.safetensors"))
    encoder_only = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.") and "mask" not in k}
    result = convert_checkpoint("simmim", encoder_only)
    assert result.initialised == ["backbone.embeddings.mask_token", "mim_decoder.0.weight", "mim_decoder.0.bias"]
    converted = result.model.state_dict()
    assert torch.equal(converted["encoder_norm.weight"], state["encoder.norm.weight"])


def test_geometry_and_pretrained_window_inference():
    assert geometry_for_windows([8, 8, 8, 4], 4) == (128, 8)
    assert geometry_for_windows([30, 30, 30, 15], 4) == (480, 30)
    assert geometry_for_windows([22, 22, 22, 11], 4) == (352, 22)
    assert geometry_for_windows([12, 12, 12, 6], 4) == (192, 12)
    assert geometry_for_windows([7, 7, 7, 7], 4) == (224, 7)
    with pytest.raises(ValueError, match="per-stage windows"):
        geometry_for_windows([8, 4, 8, 4], 4)
    # The corner of a log-spaced table: log2(8 (W-1)/(P-1) + 1) / 3 for window W=30 built against P=12.
    table = torch.zeros(1, 59, 59, 2)
    table[0, -1, -1, 0] = math.log2(8 * 29 / 11 + 1) / 3
    assert pretrained_window_from_table(table) == 12
    table[0, -1, -1, 0] = math.log2(9) / 3  # P = W: the table was normalised by the window itself
    assert pretrained_window_from_table(table) == 30
    assert pretrained_window_from_table(torch.zeros(1, 1, 1, 2)) == 0


def test_convert_command_line(tmp_path, capsys):
    output = tmp_path / "converted"
    assert main(["convert", "mim-depth", str(DATA / "mim_depth_128.safetensors"), str(output)]) == 0
    printed = capsys.readouterr().out
    assert "stage windows [8, 8, 8, 4]" in printed and "pretrained windows [6, 6, 6, 3]" in printed
    assert (output / "config.json").is_file()
    assert (
        main(["convert", "simmim", str(DATA / "simmim_192.safetensors"), str(tmp_path / "x"), "--preset", "tiny"]) == 2
    )
    assert "differ in shape" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_position_mlp_name_selects_the_layer_norm_epsilon():
    state = load_file(str(DATA / "simmim_192.safetensors"))
    assert any(".cpb_mlp." in k for k in state)
    renamed = {k.replace(".cpb_mlp.", ".rpe_mlp."): v for k, v in state.items()}
    cpb, rpe = convert_checkpoint("simmim", state).model, convert_checkpoint("simmim", renamed).model
    assert (cpb.config.backbone_config.layer_norm_eps, rpe.config.backbone_config.layer_norm_eps) == (1e-5, 1e-6)
    assert all(torch.equal(value, rpe.state_dict()[key]) for key, value in cpb.state_dict().items())
    forced = convert_checkpoint("simmim", renamed, layer_norm_eps=1e-5).model
    assert forced.config.backbone_config.layer_norm_eps == 1e-5


def test_training_checkpoints_with_pickled_configs_are_read_without_their_classes(tmp_path, monkeypatch):
    """microsoft/Swin-Transformer saves its yacs config beside the weights: read it without yacs or unpickling it."""
    import argparse
    import sys
    import types

    state = load_file(str(DATA / "simmim_192.safetensors"))
    module = types.ModuleType("not_installed_config_lib")

    class CfgNode(dict):
        pass

    CfgNode.__module__ = module.__name__
    CfgNode.__qualname__ = "CfgNode"
    module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, module.__name__, module)
    config = CfgNode(MODEL=CfgNode(TYPE="swinv2"))
    torch.save({"model": state, "config": config, "args": argparse.Namespace(lr=1e-3), "epoch": 99}, tmp_path / "c.pth")
    monkeypatch.delitem(sys.modules, module.__name__)
    loaded = load_state_dict_file(tmp_path / "c.pth")
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)

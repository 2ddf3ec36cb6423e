import pytest
import torch
from transformers import AutoConfig, Swinv2Backbone, Swinv2Config

from mesa_hf import PRESETS, MeSaConfig, MeSaForDepthEstimation


def test_config_round_trip(tmp_path):
    config = MeSaConfig.from_preset("test", max_depth=80.0, frame_offsets=[-2, 2])
    config.save_pretrained(tmp_path)
    loaded = MeSaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.backbone_config, Swinv2Config)
    assert loaded.max_depth == 80.0 and loaded.frame_offsets == [-2, 2]
    assert loaded.backbone_config.out_features == ["stage1", "stage2", "stage3", "stage4"]


def test_auto_config_resolves_mesa(tmp_path):
    MeSaConfig.from_preset("test").save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is MeSaConfig
    assert type(AutoConfig.for_model("mesa")) is MeSaConfig


def test_paper_presets_shapes():
    base, large = MeSaConfig.from_preset("base"), MeSaConfig.from_preset("large")
    assert (base.backbone_config.embed_dim, base.backbone_config.depths, base.backbone_config.num_heads) == (
        128,
        [2, 2, 18, 2],
        [4, 8, 16, 32],
    )
    assert (large.backbone_config.embed_dim, large.backbone_config.num_heads) == (192, [6, 12, 24, 48])
    for config in (base, large, MeSaConfig.from_preset("tiny")):
        assert config.backbone_config.image_size == 480
        assert config.backbone_config.window_size == 30
        assert config.backbone_config.pretrained_window_sizes == [12, 12, 12, 6]
    assert set(PRESETS) >= {"tiny", "base", "large", "test", "demo"}


@pytest.mark.parametrize(("preset", "low", "high"), [("base", 86e6, 88e6), ("large", 194e6, 198e6)])
def test_paper_presets_build_with_swinv2_encoder_sizes(preset, low, high):
    # Swin-V2-B has ~87 M encoder parameters, Swin-V2-L ~197 M (timm counts include a 1-1.5 M classifier head)
    with torch.device("meta"):
        model = MeSaForDepthEstimation(MeSaConfig.from_preset(preset))
    encoder = sum(p.numel() for p in model.backbone.parameters())
    assert low < encoder < high, encoder


def test_backbone_overrides_and_errors():
    config = MeSaConfig.from_preset("base", backbone_overrides={"image_size": 192, "window_size": 12})
    assert config.backbone_config.image_size == 192 and config.backbone_config.window_size == 12
    with pytest.raises(ValueError, match="unknown MeSa preset 'huge'"):
        MeSaConfig.from_preset("huge")
    with pytest.raises(ValueError, match="decoder_type"):
        MeSaConfig(decoder_type="dpt")
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        MeSaConfig(min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match="num_deconv"):
        MeSaConfig(num_deconv=2)
    with pytest.raises(ValueError, match="frame_offsets"):
        MeSaConfig(frame_offsets=[0, 1])
    with pytest.raises(ValueError, match="mask_patch_size"):
        MeSaConfig(mask_patch_size=30)


def test_backbone_state_dict_is_stock_swinv2():
    model = MeSaForDepthEstimation(MeSaConfig.from_preset("test"))
    stock = Swinv2Backbone(model.config.backbone_config)
    stock.load_state_dict(model.backbone.state_dict(), strict=True)
    model.backbone.load_state_dict(stock.state_dict(), strict=True)

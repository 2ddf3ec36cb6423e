"""`depth_head_output`: the depth heads' sigmoid as depth / max_depth (MIM-Depth) or as Monodepth2's disparity."""

from __future__ import annotations

import pytest
import torch

from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaForSelfSupervisedDepth
from mesa_hf.data.synthetic import synthetic_video_dataset
from mesa_hf.data.transforms import build_transform
from mesa_hf.modeling_mesa import MeSaDepthHead, logits_to_depth


def test_logits_to_depth_for_both_outputs():
    logits = torch.tensor([-100.0, 0.0, 100.0])
    depth_config = MeSaConfig.from_preset("test", max_depth=10.0, min_depth=1e-3)
    torch.testing.assert_close(logits_to_depth(logits, depth_config), torch.tensor([1e-3, 5.0, 10.0]))
    disparity_config = MeSaConfig.from_preset(
        "test", depth_head_output="disparity", disp_min_depth=0.1, disp_max_depth=10.0
    )
    # sigmoid 0 -> disparity 1/10 -> 10 m; sigmoid 1/2 -> 1/(0.1 + 9.9/2) m; sigmoid 1 -> disparity 10 -> 0.1 m
    expected = torch.tensor([10.0, 1.0 / (0.1 + 9.9 / 2), 0.1])
    torch.testing.assert_close(logits_to_depth(logits, disparity_config), expected)


def test_depth_head_applies_the_configured_output():
    config = MeSaConfig.from_preset("test", depth_head_output="disparity", disp_min_depth=0.5, disp_max_depth=4.0)
    head = MeSaDepthHead(config)
    hidden = torch.randn(2, 16, 8, 8)
    logits = head.conv2(head.activation(head.conv1(hidden))).squeeze(1)
    expected = 1.0 / (1 / 4.0 + (1 / 0.5 - 1 / 4.0) * torch.sigmoid(logits))
    torch.testing.assert_close(head(hidden), expected)


def test_geometric_stage_in_disparity_mode_trains_and_evaluates_as_a_depth_model(tmp_path):
    config = MeSaConfig.from_preset(
        "test", pose_source="dataset", num_scales=2, depth_head_output="disparity", disp_min_depth=0.2
    )
    torch.manual_seed(0)
    model = MeSaForSelfSupervisedDepth(config)
    with torch.no_grad():
        for head in (model.depth_head.conv2, *model.scale_heads):
            head.weight.normal_(0.0, 0.5)  # spread the sigmoid so both ends of the range show
    rows = synthetic_video_dataset(2, 64, 96, seed=0).with_transform(build_transform("geometric", train=False))
    batch = {k: torch.stack(v) for k, v in rows[:2].items() if k != "labels"}
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.scale_heads[0].weight.grad.abs().sum() > 0
    depth = out.predicted_depth.detach()
    assert depth.min() >= 0.2 and depth.max() <= 10.0 and depth.std() > 0
    # the next stage (and `mesa-hf evaluate`) load the folder as a depth model with the same mapping
    model.save_pretrained(tmp_path)
    loaded = MeSaForDepthEstimation.from_pretrained(tmp_path).eval()
    assert loaded.config.depth_head_output == "disparity"
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(batch["pixel_values"]).predicted_depth, model(batch["pixel_values"]).predicted_depth
        )


def test_bad_depth_head_output():
    with pytest.raises(ValueError, match="depth_head_output"):
        MeSaConfig.from_preset("test", depth_head_output="inverse")
    with pytest.raises(ValueError, match="disp_min_depth"):
        MeSaConfig.from_preset("test", depth_head_output="disparity", disp_min_depth=5.0, disp_max_depth=1.0)

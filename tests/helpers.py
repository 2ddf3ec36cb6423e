"""Small builders and checks shared by the tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image

from mesa_hf import MeSaConfig, MeSaForDepthEstimation
from mesa_hf.geometry import relative_pose, warp_frame
from mesa_hf.losses import photometric_error


def tiny_depth_model(seed: int = 0, **overrides) -> MeSaForDepthEstimation:
    """A test-preset model in eval mode whose head is perturbed so predictions vary across pixels.

    (A freshly initialised head, N(0, 0.001) as in MIM-Depth, predicts an almost constant max_depth / 2.)
    """
    torch.manual_seed(seed)
    model = MeSaForDepthEstimation(MeSaConfig.from_preset("test", **overrides)).eval()
    with torch.no_grad():
        for parameter in model.depth_head.parameters():
            parameter.normal_(0.0, 0.2)
        for parameter in model.decoder.parameters():
            if parameter.ndim > 1:
                parameter.normal_(0.0, 0.1)
    return model


def seven_scenes_warp_errors(root: Path, target_index: int, source_index: int, step: int = 4) -> dict[str, float]:
    """Photometric error of 7-Scenes frame ``source_index`` warped into ``target_index`` (every ``step``-th
    pixel) with the ground-truth depth and the true, reversed or no relative pose."""
    k = torch.from_numpy(np.loadtxt(root / "camera-intrinsics.txt", dtype=np.float32))[None]
    k[:, :2] /= step

    def frame(index):
        color = np.asarray(Image.open(root / f"frame-{index:06d}.color.jpg").convert("RGB"), dtype=np.float32)
        depth = np.asarray(Image.open(root / f"frame-{index:06d}.depth.png"), dtype=np.float32) / 1000.0
        pose = torch.from_numpy(np.loadtxt(root / f"frame-{index:06d}.pose.txt", dtype=np.float32))[None]
        color = torch.from_numpy(color[::step, ::step] / 255.0).permute(2, 0, 1)[None].contiguous()
        return color, torch.from_numpy(depth[::step, ::step].copy())[None, None], pose

    target, depth, pose_target = frame(target_index)
    source, _, pose_source = frame(source_index)
    errors = {}
    for name, T in (
        ("true", relative_pose(pose_target, pose_source)),
        ("reversed", relative_pose(pose_source, pose_target)),
        ("none", torch.eye(4)[None]),
    ):
        warped, valid = warp_frame(source, depth.clamp_min(1e-3), T, k)
        mask = valid & (depth > 0)
        assert mask.float().mean() > 0.8
        errors[name] = photometric_error(warped, target)[mask].mean().item()
    return errors


def check_pipeline_on_photo(checkpoint: Path, photo: Path) -> None:
    """transformers' depth-estimation pipeline on a saved checkpoint (model + processor) and one photo: depth at
    the photo's size, finite, inside (0, max_depth], a non-constant depth image, and a list in gives a list out."""
    from transformers import pipeline

    depth_estimator = pipeline("depth-estimation", model=str(checkpoint), device="cpu")
    result = depth_estimator(str(photo))
    depth = result["predicted_depth"]
    width, height = Image.open(photo).size
    assert depth.shape == (height, width)
    assert torch.isfinite(depth).all()
    assert depth.min() > 0 and depth.max() <= depth_estimator.model.config.max_depth
    assert isinstance(result["depth"], Image.Image) and result["depth"].size == (width, height)
    assert np.asarray(result["depth"]).std() > 0
    assert len(depth_estimator([str(photo), Image.open(photo)])) == 2


def load_script(path: Path, name: str) -> ModuleType:
    """The Python file `path` (a benchmark or example script) imported as module `name`, without running its main."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

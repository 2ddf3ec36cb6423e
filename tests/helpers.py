"""Small builders shared by the tests."""

from __future__ import annotations

import torch

from mesa_hf import MeSaConfig, MeSaForDepthEstimation


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

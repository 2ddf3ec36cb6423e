import pytest
import torch

from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaForSelfSupervisedDepth
from mesa_hf.data.synthetic import synthetic_video_dataset
from mesa_hf.data.transforms import build_transform


def _median_scaled_abs_rel(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Per-image median scaling (the self-supervised protocol), then mean |pred - gt| / gt over valid pixels."""
    values = []
    for p, g in zip(pred, gt):
        valid = g > 0
        p, g = p[valid], g[valid]
        p = p * (g.median() / p.median())
        values.append(((p - g).abs() / g).mean())
    return float(torch.stack(values).mean())


def _stack(rows: dict) -> dict:
    return {k: torch.stack(v) if isinstance(v, list) else v for k, v in rows.items()}


def _batches(dataset, batch_size):
    for start in range(0, len(dataset), batch_size):
        yield _stack(dataset[start : start + batch_size])


def test_geometric_stage_loss_falls_with_known_poses():
    torch.manual_seed(0)
    height, width = 64, 96
    train = synthetic_video_dataset(24, height, width, seed=3, speed=0.15).with_transform(
        build_transform("geometric", jitter=False, flip_prob=0.0, seed=0)
    )
    held_out = synthetic_video_dataset(8, height, width, seed=99, speed=0.15).with_transform(
        build_transform("geometric", train=False)
    )
    config = MeSaConfig.from_preset("test", pose_source="dataset", decoder_type="multiscale", max_depth=10.0)
    model = MeSaForSelfSupervisedDepth(config)
    evaluation = _stack(held_out[:8])

    def abs_rel() -> float:
        model.eval()
        with torch.no_grad():
            depth = model(evaluation["pixel_values"]).predicted_depth
        model.train()
        return _median_scaled_abs_rel(depth, evaluation["labels"])

    before = abs_rel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _epoch in range(6):
        for batch in _batches(train, 8):
            batch = {k: v for k, v in batch.items() if k != "labels"}
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    after = abs_rel()
    print(f"geometric stage: loss {losses[0]:.4f} -> {losses[-1]:.4f}, held-out AbsRel {before:.3f} -> {after:.3f}")
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3
    assert torch.isfinite(torch.tensor([before, after])).all()


def test_pose_network_and_input_errors():
    config = MeSaConfig.from_preset("test", pose_source="network")
    model = MeSaForSelfSupervisedDepth(config)
    batch, sources, height, width = 2, 2, 64, 64
    poses = model.predict_poses(torch.randn(batch, 3, height, width), torch.randn(batch, sources, 3, height, width))
    assert poses.shape == (batch, sources, 4, 4)
    torch.testing.assert_close(poses[..., 3, :], torch.tensor([0.0, 0, 0, 1]).expand(batch, sources, 4))
    with pytest.raises(ValueError, match="needs `intrinsics`"):
        model(
            torch.randn(1, 3, 64, 64),
            torch.randn(1, 2, 3, 64, 64),
            torch.rand(1, 3, 64, 64),
            torch.rand(1, 2, 3, 64, 64),
        )
    dataset_poses = MeSaForSelfSupervisedDepth(MeSaConfig.from_preset("test", pose_source="dataset"))
    with pytest.raises(ValueError, match="needs `poses`"):
        dataset_poses(
            torch.randn(1, 3, 64, 64),
            torch.randn(1, 2, 3, 64, 64),
            torch.rand(1, 3, 64, 64),
            torch.rand(1, 2, 3, 64, 64),
            torch.eye(3)[None],
        )


def test_chaining_from_geometric_to_supervised_carries_encoder_and_decoder(tmp_path):
    model = MeSaForSelfSupervisedDepth(MeSaConfig.from_preset("test"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path)
    supervised = MeSaForDepthEstimation.from_pretrained(tmp_path)
    state = supervised.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith(("backbone.", "encoder_norm.", "decoder.", "depth_head.")):
            assert torch.equal(state[name], tensor), name

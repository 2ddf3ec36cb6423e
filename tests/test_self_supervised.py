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


def _demo_clip_batch(count: int):
    from mesa_hf.data.synthetic import synthetic_clip
    from mesa_hf.data.world_checks import ClipBatch

    return ClipBatch.from_clips([synthetic_clip(12, i, 96, 128, (-3, 3)) for i in range(count)])


@pytest.mark.parametrize("wrong_by", [1.0, 1.6, 0.62])
def test_photometric_depth_scale_finds_each_images_true_scale(wrong_by):
    from mesa_hf.data.world_checks import unwarped_errors
    from mesa_hf.modeling_mesa import photometric_depth_scale

    batch = _demo_clip_batch(4)
    # each image wrong by its own factor: the search is per image
    factors = torch.tensor([wrong_by, wrong_by * 1.1, wrong_by / 1.1, wrong_by]).view(-1, 1, 1, 1)
    found = photometric_depth_scale(
        batch.depth * factors,
        batch.target,
        batch.sources,
        batch.poses,
        batch.intrinsics,
        unwarped_errors(batch),
        0.85,
    )
    assert found.shape == (4,)
    recovered = found * factors.flatten()  # 1 where the search undid the error
    print(f"wrong by {wrong_by}: found {found.tolist()}, recovered scale {recovered.tolist()}")
    # the fine step is 2**(1/3) ** (1/4) ~ 6 %: the truth's basin (world check (b): lowest at alpha 1 +- 0.02)
    assert torch.all((recovered - 1.0).abs() <= 0.07)


def test_photometric_depth_scale_rejects_bad_ranges():
    from mesa_hf.modeling_mesa import photometric_depth_scale

    ones = torch.ones(1, 1, 8, 8)
    with pytest.raises(ValueError, match="0 < low < 1 < high"):
        photometric_depth_scale(ones, ones.expand(1, 3, 8, 8), ones, ones, ones, None, 0.85, scale_range=(1.2, 2.0))
    with pytest.raises(ValueError, match="depth_scale_weight"):
        MeSaConfig.from_preset("test", depth_scale_weight=-1.0)


def test_depth_scale_search_rescales_the_loss_and_pulls_the_depth_towards_the_found_scale():
    torch.manual_seed(0)
    rows = synthetic_video_dataset(2, 64, 96, seed=3, frame_offsets=(-3, 3)).with_transform(
        build_transform("geometric", jitter=False, flip_prob=0.0, seed=0)
    )
    batch = {k: v for k, v in _stack(rows[:2]).items() if k != "labels"}
    options = {"pose_source": "dataset", "decoder_type": "multiscale", "frame_offsets": [-3, 3]}
    plain = MeSaForSelfSupervisedDepth(MeSaConfig.from_preset("test", **options)).eval()
    searched = MeSaForSelfSupervisedDepth(MeSaConfig.from_preset("test", **options, depth_scale_search=True))
    searched.load_state_dict(plain.state_dict())
    searched.eval()
    torch.manual_seed(1)
    out_plain = plain(**batch)
    torch.manual_seed(1)
    out = searched(**batch)
    assert out_plain.depth_scale is None
    assert out.depth_scale.shape == (2,) and torch.all(
        (out.depth_scale >= 0.5 / 1.13) & (out.depth_scale <= 2.0 * 1.13)
    )
    assert torch.equal(out.predicted_depth, out_plain.predicted_depth)  # the prediction itself is not rescaled
    assert torch.isfinite(out.loss) and out.loss.item() <= out_plain.loss.item() + 1e-3  # the best scale or better
    out.loss.backward()
    assert searched.depth_head.conv2.bias.grad is not None and torch.isfinite(searched.depth_head.conv2.bias.grad)

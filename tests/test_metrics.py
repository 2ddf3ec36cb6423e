"""Depth metrics, protocols and test-time augmentation (mesa_hf.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mesa_hf.evaluation import (
    METRIC_NAMES,
    DepthMetricAccumulator,
    TestTimeAugmentation,
    compute_depth_metrics,
    crop_mask,
    evaluation_mask,
    flip_tta,
    get_protocol,
    median_scale,
    sliding_window_offsets,
    sliding_window_tta,
)

NAN, INF = float("nan"), float("inf")

# 3x3 maps; valid ground truth (1e-3 < gt < 10, finite) only at the four positions marked v.
GT = np.array([[1.0, 2.0, 0.0], [4.0, NAN, 20.0], [1.0, -1.0, INF]], dtype=np.float32)  # v v . / v . . / v . .
PRED = np.array([[2.0, 2.0, 5.0], [3.0, 7.0, 3.0], [1.8, 1.0, 1.0]], dtype=np.float32)
# (pred, gt) on valid pixels: (2, 1), (2, 2), (3, 4), (1.8, 1).


def _expected_small() -> dict[str, float]:
    """Hand-derived metrics of the four valid pairs above."""
    d = [math.log(2), 0.0, math.log(0.75), math.log(1.8)]
    mean_d2 = sum(v * v for v in d) / 4
    mean_d = sum(d) / 4
    return {
        "abs_rel": (1 / 1 + 0 / 2 + 1 / 4 + 0.8 / 1) / 4,  # 0.5125
        "sq_rel": (1 / 1 + 0 + 1 / 4 + 0.64 / 1) / 4,  # 0.4725
        "rmse": math.sqrt((1 + 0 + 1 + 0.64) / 4),
        "rmse_log": math.sqrt(mean_d2),
        "log10": (math.log10(2) + 0 + abs(math.log10(0.75)) + math.log10(1.8)) / 4,
        "silog": math.sqrt(mean_d2 - 0.5 * mean_d**2),
        # ratios max(p/g, g/p): 2, 1, 4/3, 1.8 -> <1.25: 1; <1.5625: 2; <1.953125: 3.
        "d1": 1 / 4,
        "d2": 2 / 4,
        "d3": 3 / 4,
    }


def test_hand_computed_values_with_invalid_pixels():
    got = compute_depth_metrics(PRED, GT, crop=None)
    expected = _expected_small()
    assert set(got) == set(METRIC_NAMES)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert got["abs_rel"] == pytest.approx(0.5125)
    assert got["sq_rel"] == pytest.approx(0.4725)


def test_torch_and_numpy_inputs_agree_and_batches_average_per_image():
    from_numpy = compute_depth_metrics(PRED, GT, crop=None)
    from_torch = compute_depth_metrics(torch.from_numpy(PRED), torch.from_numpy(GT), crop=None)
    assert from_numpy == pytest.approx(from_torch)
    perfect = compute_depth_metrics(GT.clip(0.5, 5), GT, crop=None)  # exact on every valid pixel
    assert perfect["rmse"] == 0 and perfect["d1"] == 1
    batch = compute_depth_metrics(np.stack([PRED, GT.clip(0.5, 5)]), np.stack([GT, GT]), crop=None)
    for key in METRIC_NAMES:
        assert batch[key] == pytest.approx((from_numpy[key] + perfect[key]) / 2), key


def test_non_finite_predictions_follow_the_reference():
    # GLPDepth cropping_img: inf -> max_depth, nan -> min_depth.
    gt = np.array([[2.0, 2.0]], dtype=np.float32)
    got = compute_depth_metrics(np.array([[INF, 2.0]]), gt, crop=None)
    assert got["rmse"] == pytest.approx(math.sqrt((10 - 2) ** 2 / 2))
    got = compute_depth_metrics(np.array([[NAN, 2.0]]), gt, crop=None)
    assert got["abs_rel"] == pytest.approx(abs(1e-3 - 2) / 2 / 2)


def test_nonpositive_prediction_and_empty_image_raise():
    gt = np.array([[2.0, 3.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="non-positive"):
        compute_depth_metrics(np.array([[0.0, 1.0]]), gt, crop=None)
    clamped = compute_depth_metrics(np.array([[0.0, 3.0]]), gt, crop=None, clamp_pred=True)
    assert clamped["abs_rel"] == pytest.approx((2 - 1e-3) / 2 / 2)
    with pytest.raises(ValueError, match="no valid ground-truth"):
        compute_depth_metrics(gt, np.zeros_like(gt), crop=None)
    with pytest.raises(ValueError, match="same shape"):
        compute_depth_metrics(gt, gt[:, :1], crop=None)


def test_eigen_crop_bounds_and_shape_check():
    mask = crop_mask(480, 640, "eigen")
    assert mask.sum() == 426 * 560
    assert mask[45, 41] and mask[470, 600] and not mask[44, 41] and not mask[45, 40]
    assert not mask[471, 100] and not mask[100, 601]
    gt = np.full((480, 640), 2.0, dtype=np.float32)
    pred = np.full((480, 640), 100.0, dtype=np.float32)  # wrong everywhere outside the crop
    pred[45:471, 41:601] = 2.0
    pred[45, 41] = 4.0  # one wrong pixel on the crop's first row/column
    got = compute_depth_metrics(pred, gt)  # crop="eigen" by default
    n = 426 * 560
    assert got["rmse"] == pytest.approx(math.sqrt(4 / n))
    assert got["abs_rel"] == pytest.approx(1 / n)
    assert got["d1"] == pytest.approx((n - 1) / n)
    outside = 480 * 640 - n
    assert compute_depth_metrics(pred, gt, crop=None)["rmse"] == pytest.approx(
        math.sqrt((outside * 98**2 + 4) / 480 / 640)
    )
    with pytest.raises(ValueError, match="got a 240x320 map"):
        compute_depth_metrics(pred[:240, :320], gt[:240, :320], crop="eigen")
    with pytest.raises(ValueError, match="unknown crop"):
        compute_depth_metrics(pred, gt, crop="eigne")


def test_garg_crop_fractions():
    mask = crop_mask(375, 1242, "garg")
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    assert (rows[0].item(), rows[-1].item()) == (int(0.40810811 * 375), int(0.99189189 * 375) - 1)
    assert (cols[0].item(), cols[-1].item()) == (int(0.03594771 * 1242), int(0.96405229 * 1242) - 1)


def test_extra_valid_mask():
    mask = np.ones((3, 3), dtype=bool)
    mask[2, 0] = False  # drops the (1.8, 1) pair
    got = compute_depth_metrics(PRED, GT, crop=None, valid_mask=mask)
    assert got["abs_rel"] == pytest.approx((1 + 0 + 0.25) / 3)
    assert got["d3"] == pytest.approx(2 / 3)


def test_median_scaling_matches_numpy_median():
    gt = np.array([[1.0, 2.0, 3.0, 10.0]], dtype=np.float32)  # 10 is out of range
    pred = np.array([[2.0, 5.0, 6.0, 0.1]], dtype=np.float32)
    valid = gt < 10
    scaled = median_scale(pred, gt, valid)
    ratio = np.median(gt[valid]) / np.median(pred[valid])  # 2 / 5
    np.testing.assert_allclose(scaled.numpy(), pred * ratio, rtol=1e-6)
    assert compute_depth_metrics(0.25 * gt, gt, crop=None, median_scaling=True)["abs_rel"] == pytest.approx(0, abs=1e-7)


def test_thresholds_compare_in_the_ground_truths_own_dtype():
    """float32 1e-3 is 0.0010000000475 (> 1e-3 in float64) but not > 1e-3 in float32, where MIM-Depth compares."""
    assert float(np.float32(1e-3)) > 1e-3
    gt32 = np.array([[np.float32(1e-3), 10.0, 2.0, 4.0]], dtype=np.float32)
    pred = np.array([[5.0, 5.0, 2.0, 2.0]], dtype=np.float32)
    for gt in (gt32, torch.from_numpy(gt32)):
        np.testing.assert_array_equal(evaluation_mask(gt, crop=None).numpy(), [[False, False, True, True]])
        got = compute_depth_metrics(pred, gt, crop=None)
        assert got["abs_rel"] == pytest.approx((0 + 0.5) / 2)  # only (2, 2) and (2, 4) are scored
    # float64 ground truth of the same value is above the threshold, as float64 arithmetic says
    assert evaluation_mask(gt32.astype(np.float64), crop=None)[0, 0]
    accumulator = DepthMetricAccumulator(crop=None)
    accumulator.update(pred, gt32)
    assert accumulator.num_pixels == 2


def _mim_depth_thresholds(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """δ1-δ3 written the way MIM-Depth's test.py / utils/metrics.py evaluate one NYUv2 map: inf/nan replaced in the
    prediction tensor, gt in (1e-3, 10) inside the Eigen crop, then ``max(gt / pred, pred / gt)`` on the tensors as
    given (torch promotes a float16 prediction with float32 ground truth to float32) and counts over the length."""
    pred = pred.clone()
    pred[torch.isinf(pred)] = 10.0
    pred[torch.isnan(pred)] = 1e-3
    valid = (gt > 1e-3) & (gt < 10.0)
    eval_mask = torch.zeros(valid.shape)
    eval_mask[45:471, 41:601] = 1
    valid = valid & eval_mask.bool()
    pred, gt = pred[valid], gt[valid]
    thresh = torch.max(gt / pred, pred / gt)
    return {f"d{k}": (torch.sum(thresh < 1.25**k).float() / len(thresh)).item() for k in (1, 2, 3)}


def test_float16_prediction_thresholds_match_mim_depth_at_the_boundary():
    """A float16 prediction against float32 ground truth: the δ ratio is float32 in MIM-Depth, so a pixel whose
    float64 ratio lies just below 1.25**k but rounds to exactly 1.25**k in float32 is *not* within the threshold."""
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.uniform(0.5, 9.5, size=(480, 640)).astype(np.float32))
    gt[rng.uniform(size=gt.shape) < 0.05] = 0.0  # missing depth
    pred = (gt * torch.from_numpy(rng.uniform(0.6, 1.7, size=gt.shape).astype(np.float32))).to(torch.float16)
    # Boundary pixels inside the crop: gt = float32(pred / 1.25**k), so pred / gt is 1.25**k up to float32 rounding.
    rows, cols = rng.integers(45, 471, size=600), rng.integers(41, 601, size=600)
    for i, (r, c) in enumerate(zip(rows, cols)):
        k = 1 + i % 3
        gt[r, c] = (pred[r, c].double() / 1.25**k).float()
    pred[46, 50], pred[47, 50] = float("inf"), float("nan")
    reference = _mim_depth_thresholds(pred, gt)

    valid = evaluation_mask(gt).numpy()
    p64, g64 = pred.double().numpy()[valid], gt.double().numpy()[valid]
    ratio64 = np.maximum(g64 / p64, p64 / g64)
    naive = {f"d{k}": float(np.mean(ratio64 < 1.25**k)) for k in (1, 2, 3)}
    flipped = {key: round(abs(naive[key] - reference[key]) * valid.sum()) for key in reference}
    print(f"pixels {valid.sum()}, float64-ratio pixels on the other side of the threshold: {flipped}")
    assert all(n >= 10 for n in flipped.values())  # the float64 ratio does flip pixels: the test can fail

    got = compute_depth_metrics(pred, gt)
    for key, value in reference.items():
        assert abs(got[key] - value) <= 1e-6, (key, got[key], value)
    np_got = compute_depth_metrics(pred.numpy(), gt.numpy())  # numpy inputs keep their dtypes too
    assert all(abs(np_got[key] - reference[key]) <= 1e-6 for key in reference)
    from mesa_hf.evaluation.metrics import threshold_dtype

    assert threshold_dtype(pred, gt) == torch.float32
    assert threshold_dtype(pred, pred) == torch.float16
    assert threshold_dtype(gt.double().numpy(), gt) == torch.float64
    assert threshold_dtype(np.ones(2, dtype=np.uint16), np.ones(2, dtype=np.uint16)) == torch.float32


def test_median_scaling_clamps_to_the_depth_range():
    gt = np.array([[1.0, 2.0, 4.0, 8.0]], dtype=np.float32)
    pred = np.array([[0.01, 1.0, 1.0, 20.0]], dtype=np.float32)  # median 1 -> ratio 3: 0.03, 3, 3, 60
    got = compute_depth_metrics(pred, gt, crop=None, min_depth=0.1, max_depth=10.0, median_scaling=True)
    clamped = np.array([0.1, 3.0, 3.0, 10.0])  # Monodepth2: scaled, then clipped to [min_depth, max_depth]
    assert got["abs_rel"] == pytest.approx(float(np.mean(np.abs(clamped - gt[0]) / gt[0])))
    assert got["rmse"] == pytest.approx(float(np.sqrt(np.mean((clamped - gt[0]) ** 2))))


def test_accumulator_mean_over_images_and_pooled_pixels():
    rng = np.random.default_rng(0)
    gts = [rng.uniform(0.5, 12.0, size=(6, 7)).astype(np.float32) for _ in range(3)]
    gts[1][:3] = 0.0  # different numbers of valid pixels per image
    preds = [g * rng.uniform(0.7, 1.4, size=g.shape).astype(np.float32) + 0.01 for g in gts]
    acc = DepthMetricAccumulator(crop=None)
    acc.update(preds[0], gts[0])
    acc.update(np.stack(preds[1:]), np.stack(gts[1:]))
    assert acc.num_images == 3
    per_image = [compute_depth_metrics(p, g, crop=None) for p, g in zip(preds, gts)]
    image_mean = acc.compute()
    for key in METRIC_NAMES:
        assert image_mean[key] == pytest.approx(np.mean([m[key] for m in per_image]), rel=1e-9), key
    # Pooled: equal to the metrics of all valid pixels concatenated into one map.
    valid = [(g > 1e-3) & (g < 10) for g in gts]
    all_pred = np.concatenate([p[v] for p, v in zip(preds, valid)])[None]
    all_gt = np.concatenate([g[v] for g, v in zip(gts, valid)])[None]
    pooled, concatenated = acc.compute_pooled(), compute_depth_metrics(all_pred, all_gt, crop=None)
    assert acc.num_pixels == all_gt.size
    for key in METRIC_NAMES:
        assert pooled[key] == pytest.approx(concatenated[key], rel=1e-9), key
    assert pooled["rmse"] != pytest.approx(image_mean["rmse"], rel=1e-6)  # the two protocols differ
    # merge() of two halves equals one accumulator over everything
    a, b = DepthMetricAccumulator(crop=None), DepthMetricAccumulator(crop=None)
    a.update(preds[0], gts[0])
    b.update(np.stack(preds[1:]), np.stack(gts[1:]))
    a.merge(b.state_dict())
    assert a.compute() == pytest.approx(image_mean)
    with pytest.raises(ValueError, match="empty"):
        DepthMetricAccumulator().compute()


def test_protocol_registry_and_describe():
    nyu = get_protocol("nyuv2")
    assert (nyu.crop, nyu.min_depth, nyu.max_depth, nyu.input_size) == ("eigen", 1e-3, 10.0, (480, 640))
    text = nyu.describe(TestTimeAugmentation(flip=True, sliding_window=True, window_size=480))
    for fragment in ("protocol=nyuv2", "rows 45:471, cols 41:601", "0.001<gt<10 m", "scaling=none", "TTA=flip"):
        assert fragment in text, fragment
    assert "sliding-window (2 x 480 px" in text
    assert "TTA=none" in nyu.describe()
    ss = get_protocol("nyuv2", median_scaling=True)
    assert "median" in ss.describe() and ss.accumulator().median_scaling
    assert get_protocol("ibims1").use_dataset_mask and get_protocol("ibims1").crop is None
    assert get_protocol("kitti").max_depth == 80.0
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        get_protocol("nyu")


# ---------------------------------------------------------------------------------------------- TTA


def _column_index_predict(x: torch.Tensor) -> torch.Tensor:
    """depth[b, h, w] = x[b, 0, h, w] + w: not flip-equivariant, so a wrong flip-back shows."""
    width = x.shape[-1]
    return x[:, 0] + torch.arange(width, dtype=x.dtype)


def test_flip_tta_hand_checked():
    x = torch.rand(2, 3, 4, 5)
    got = flip_tta(_column_index_predict, x)
    # mean of (x + w) and flip(flip(x) + w) = x + (W - 1 - w)  ->  x + (W - 1) / 2
    torch.testing.assert_close(got, x[:, 0] + 2.0)

    def column_mean(v: torch.Tensor) -> torch.Tensor:
        return v[:, 0].mean(dim=1, keepdim=True).expand(-1, v.shape[-2], -1)

    torch.testing.assert_close(flip_tta(column_mean, x), column_mean(x))  # flip-equivariant: unchanged


def test_sliding_window_tta_hand_checked():
    x = torch.rand(2, 3, 6, 10)  # height 6 -> default windows 6 wide at x = 0 and x = 4
    assert sliding_window_offsets(10, 6) == [0, 4]
    assert sliding_window_offsets(640, 480) == [0, 160]  # MIM-Depth's NYUv2 windows
    got = sliding_window_tta(_column_index_predict, x)
    c = torch.arange(10, dtype=x.dtype)
    # columns 0-3: only window 0 (x + c); 4-5: mean of x + c and x + (c - 4); 6-9: only window 1 (x + c - 4)
    offset = torch.where(c < 4, c, torch.where(c < 6, c - 2, c - 4))
    torch.testing.assert_close(got, x[:, 0] + offset)
    with pytest.raises(ValueError, match="does not fit"):
        sliding_window_tta(_column_index_predict, torch.rand(1, 3, 8, 6))
    calls = []

    def spy(v: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(v.shape))
        return _column_index_predict(v)

    both = TestTimeAugmentation(flip=True, sliding_window=True)(spy, x)
    assert calls == [(8, 3, 6, 6)]  # 2 images x 2 windows x (plain, flipped) in one call
    # flip within each window turns the window-local column offset into (6 - 1) / 2 everywhere
    torch.testing.assert_close(both, x[:, 0] + 2.5)


def test_depth_metric_evaluate_module_offline(monkeypatch):
    """evaluate.load(<local folder>) works offline and agrees with compute_depth_metrics."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")  # tests/conftest.py also points HF_HOME at a temporary folder
    import evaluate

    from mesa_hf.evaluation import DEPTH_METRIC_MODULE_PATH, load_depth_metric

    rng = np.random.default_rng(1)
    gts = [rng.uniform(0.5, 12, size=(5, 6)).astype(np.float32) for _ in range(3)]
    preds = [(g * rng.uniform(0.8, 1.2, size=g.shape)).astype(np.float32) for g in gts]
    metric = load_depth_metric()
    metric.add_batch(predictions=preds[:2], references=gts[:2])
    metric.add(predictions=preds[2], references=gts[2])
    got = metric.compute(crop=None, max_depth=10.0)
    reference = compute_depth_metrics(np.stack(preds), np.stack(gts), crop=None)
    for key in METRIC_NAMES:
        assert got[key] == pytest.approx(reference[key], rel=1e-5), key
    direct = evaluate.load(str(DEPTH_METRIC_MODULE_PATH / "depth_metrics.py"))
    pooled = direct.compute(predictions=preds, references=gts, crop=None, pooled=True)
    accumulator = DepthMetricAccumulator(crop=None)
    accumulator.update(np.stack(preds), np.stack(gts))
    assert pooled == pytest.approx(accumulator.compute_pooled(), rel=1e-5)
    assert pooled["rmse"] != pytest.approx(reference["rmse"], rel=1e-7)

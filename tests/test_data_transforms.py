"""Per-stage transforms: image, depth, intrinsics and poses stay consistent through crops, flips and resizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from mesa_hf.data.synthetic import default_intrinsics, synthetic_clip, synthetic_depth_dataset, synthetic_view
from mesa_hf.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DepthTransform,
    MaskedImageTransform,
    apply_jitter,
    build_transform,
    crop_intrinsics,
    flip_intrinsics,
    resize_intrinsics,
)
from mesa_hf.training.stage_data import SeededTransformDataset


def unnormalize(pixel_values: torch.Tensor) -> np.ndarray:
    x = pixel_values.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.round(x * 255.0).astype(np.int64)


def test_intrinsics_follow_crop_flip_resize():
    k = default_intrinsics(480, 640).astype(np.float32)
    np.testing.assert_allclose(crop_intrinsics(k, 10, 20)[:2, 2], [k[0, 2] - 20, k[1, 2] - 10])
    assert flip_intrinsics(np.array([[500, 0, 300.0], [0, 500, 200], [0, 0, 1]]), 640)[0, 2] == 339.0
    # halving a 480x640 camera gives exactly the 240x320 camera (pixel centres at integer coordinates)
    np.testing.assert_allclose(resize_intrinsics(k, (480, 640), (240, 320)), default_intrinsics(240, 320), rtol=1e-6)


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_crop_and_flip_keep_image_depth_and_intrinsics_consistent(flip_prob):
    image, depth, k, _, _ = synthetic_view(seed=0, index=1, height=60, width=80)
    transform = DepthTransform(crop_size=(40, 48), flip_prob=flip_prob, jitter=False, cutdepth_prob=0.0, seed=3)
    out = transform.sample(image, depth, k)
    k_new, labels, rgb = out["intrinsics"].numpy(), out["labels"].numpy(), unnormalize(out["pixel_values"])
    assert labels.shape == (40, 48) and rgb.shape == (40, 48, 3) and out["pixel_values"].dtype == torch.float32
    # every output pixel: lift with the new intrinsics, (un)mirror, project with the old ones -> the same content
    v, u = np.mgrid[0:40, 0:48].reshape(2, -1).astype(np.float64)
    z = labels.reshape(-1).astype(np.float64)
    x = (u - k_new[0, 2]) / k_new[0, 0] * z
    y = (v - k_new[1, 2]) / k_new[1, 1] * z
    if flip_prob == 1.0:
        x = -x  # a flipped image shows the mirrored scene
    u0 = k[0, 0] * x / z + k[0, 2]
    v0 = k[1, 1] * y / z + k[1, 2]
    np.testing.assert_allclose(u0, np.round(u0), atol=1e-3)
    np.testing.assert_allclose(v0, np.round(v0), atol=1e-3)
    u0, v0 = np.round(u0).astype(int), np.round(v0).astype(int)
    np.testing.assert_array_equal(depth[v0, u0], labels.reshape(-1))
    np.testing.assert_array_equal(image[v0, u0], rgb.reshape(-1, 3))


def test_resize_keeps_the_projection():
    image, depth, k, _, _ = synthetic_view(seed=0, index=2, height=60, width=80)
    out = DepthTransform(train=False, resize=(30, 40)).sample(image, depth, k)
    k_new = out["intrinsics"].numpy()
    # output pixel (u', v') samples input pixel (2u' + 1, 2v' + 1) (nearest); its ray through K is the same ray
    v, u = np.mgrid[0:30, 0:40]
    np.testing.assert_array_equal(out["labels"].numpy(), depth[2 * v + 1, 2 * u + 1])
    ray_new = ((u - k_new[0, 2]) / k_new[0, 0], (v - k_new[1, 2]) / k_new[1, 1])
    ray_old = ((2 * u + 0.5 - k[0, 2]) / k[0, 0], (2 * v + 0.5 - k[1, 2]) / k[1, 1])
    np.testing.assert_allclose(ray_new, ray_old, atol=1e-6)


def cutdepth_strip(transform: DepthTransform, image, depth, k) -> tuple[int, int] | None:
    """(first, last) column CutDepth overwrote in one sample, None when it did not fire (no flip, crop or jitter)."""
    rgb = unnormalize(transform.sample(image, depth, k)["pixel_values"])
    cols = np.flatnonzero(np.any(rgb != image, axis=(0, 2)))
    if not cols.size:
        return None
    strip = rgb[:, cols[0] : cols[-1] + 1]
    expected = np.round(np.clip(depth[:, cols[0] : cols[-1] + 1] / 10.0, 0, 1) * 255)
    np.testing.assert_allclose(strip, np.repeat(expected[..., None], 3, -1), atol=1)
    return int(cols[0]), int(cols[-1])


def test_cutdepth_writes_normalised_depth_on_a_quarter_of_the_samples():
    image, depth, k, _, _ = synthetic_view(seed=1, index=0, height=30, width=40)
    transform = DepthTransform(crop_size=None, flip_prob=0.0, jitter=False, seed=0)
    fired = [cutdepth_strip(transform, image, depth, k) is not None for _ in range(400)]
    assert 0.2 < np.mean(fired) < 0.3
    never = DepthTransform(crop_size=None, flip_prob=0.0, jitter=False, cutdepth_prob=0.0, seed=0)
    assert all(cutdepth_strip(never, image, depth, k) is None for _ in range(20))
    with pytest.raises(ValueError, match="cutdepth_prob"):
        DepthTransform(cutdepth_prob=1.5)


def test_cutdepth_hits_a_different_quarter_of_rows_every_epoch():
    """Through the training loop's per-(seed, epoch, row) generator: 4 epochs of 8 rows."""
    image, depth, k, _, _ = synthetic_view(seed=1, index=0, height=30, width=40)
    rows = Dataset.from_dict({"image": [image] * 8, "depth": [depth] * 8, "intrinsics": [k] * 8})
    transform = DepthTransform(crop_size=None, flip_prob=0.0, jitter=False)
    dataset = SeededTransformDataset(rows, transform, seed=0)
    touched = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        rgbs = [unnormalize(dataset[index]["pixel_values"]) for index in range(8)]
        touched.append({index for index, rgb in enumerate(rgbs) if (rgb != image).any()})
        # the same (seed, epoch, row) gives the same strip, in any order
        assert np.array_equal(unnormalize(dataset[5]["pixel_values"]), rgbs[5])
    assert all(1 <= len(rows_of_epoch) <= 4 for rows_of_epoch in touched), touched
    assert len({frozenset(rows_of_epoch) for rows_of_epoch in touched}) == 4, touched  # a different set each epoch
    assert 6 <= sum(len(rows_of_epoch) for rows_of_epoch in touched) <= 10, touched  # about 8 of 32
    assert len(set().union(*touched)) > max(len(rows_of_epoch) for rows_of_epoch in touched)


def test_jitter_changes_only_the_image():
    image, depth, k, _, _ = synthetic_view(seed=1, index=0, height=30, width=40)
    transform = DepthTransform(crop_size=None, flip_prob=0.0, jitter=True, cutdepth_prob=0.0, seed=0)
    outs = [transform.sample(image, depth, k) for _ in range(6)]
    assert any(np.abs(unnormalize(o["pixel_values"]) - image).max() > 3 for o in outs)
    for o in outs:
        np.testing.assert_array_equal(o["labels"].numpy(), depth)
        np.testing.assert_array_equal(o["intrinsics"].numpy(), k.astype(np.float32))


def test_supervised_transform_on_a_dataset_and_normalisation():
    ds = synthetic_depth_dataset(2, 32, 40, seed=0).with_transform(build_transform("supervised", crop_size=(24, 24)))
    row = ds[0]
    assert row["pixel_values"].shape == (3, 24, 24) and row["labels"].shape == (24, 24)
    plain = synthetic_depth_dataset(2, 32, 40, seed=0).with_transform(build_transform("eval"))[1]
    raw = np.asarray(synthetic_depth_dataset(2, 32, 40, seed=0)[1]["image"])
    expected = (raw[5, 7] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(plain["pixel_values"][:, 5, 7].numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="crop_size"):
        DepthTransform(crop_size=(64, 64)).sample(raw, np.ones(raw.shape[:2]))


def test_simmim_crop_and_mask():
    transform = MaskedImageTransform(seed=0)
    image, *_ = synthetic_view(seed=0, index=0, height=120, width=160)
    out = transform({"image": [image, image]})
    pixel_values, mask = out["pixel_values"][0], out["bool_masked_pos"][0]
    assert pixel_values.shape == (3, 192, 192) and mask.dtype == torch.bool and mask.shape == (48 * 48,)
    grid = mask.numpy().reshape(48, 48)
    assert grid.sum() == 22 * 64  # ceil(0.6 * 36) mask patches of 8x8 model patches
    blocks = grid.reshape(6, 8, 6, 8)
    assert np.all(blocks == blocks[:, :1, :, :1])  # constant inside each 32-px mask patch
    assert not torch.equal(out["bool_masked_pos"][0], out["bool_masked_pos"][1])


def bilinear(img, u, v):
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    du, dv = (u - u0)[:, None], (v - v0)[:, None]
    return (
        img[v0, u0] * (1 - du) * (1 - dv)
        + img[v0, u0 + 1] * du * (1 - dv)
        + img[v0 + 1, u0] * (1 - du) * dv
        + img[v0 + 1, u0 + 1] * du * dv
    )


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_video_transform_keeps_depth_intrinsics_and_poses_consistent(flip_prob):
    clip = synthetic_clip(seed=2, index=0, height=72, width=96, frame_offsets=(-3, 3))
    batch = {
        "image": [clip["images"][0]],
        "source_images": [clip["images"][1:]],
        "intrinsics": [clip["intrinsics"]],
        "poses": [clip["poses"]],
        "depth": [clip["depths"][0]],
    }
    transform = build_transform("geometric", size=(48, 64), crop_size=(40, 56), flip_prob=flip_prob, seed=1)
    out = {key: value[0] for key, value in transform(batch).items()}
    assert out["source_pixel_values"].shape == (2, 3, 40, 56) and out["poses"].shape == (2, 4, 4)
    assert out["target_image"].min() >= 0 and out["target_image"].max() <= 1
    k, depth = out["intrinsics"].numpy().astype(np.float64), out["labels"].numpy().astype(np.float64)
    target = out["target_image"].numpy().transpose(1, 2, 0)
    v, u = np.mgrid[0:40, 0:56].reshape(2, -1).astype(np.float64)
    z = depth.reshape(-1)
    pts = np.stack([(u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z, np.ones_like(z)])
    for s in range(2):
        moved = (out["poses"][s].numpy().astype(np.float64) @ pts)[:3]
        us, vs = k[0, 0] * moved[0] / moved[2] + k[0, 2], k[1, 1] * moved[1] / moved[2] + k[1, 2]
        inside = (us >= 0) & (us <= 54) & (vs >= 0) & (vs <= 38)
        source = out["source_images"][s].numpy().transpose(1, 2, 0)
        warped = bilinear(source, us[inside], vs[inside])
        err_warped = np.abs(warped - target.reshape(-1, 3)[inside]).mean()
        err_identity = np.abs(source.reshape(-1, 3)[inside] - target.reshape(-1, 3)[inside]).mean()
        assert inside.mean() > 0.5 and err_warped < 0.5 * err_identity, (err_warped, err_identity)


def test_jitter_operations():
    red, grey = np.array([[[255, 0, 0]]], np.uint8), np.array([[[128, 128, 128]]], np.uint8)
    np.testing.assert_array_equal(apply_jitter(red, {"hue": 1 / 3, "saturation": 0.0, "value": 0.0}), [[[0, 255, 0]]])
    np.testing.assert_array_equal(apply_jitter(grey, {"contrast": 1.0, "brightness": 0.1}), [[[154, 154, 154]]])
    np.testing.assert_array_equal(apply_jitter(grey, {"gamma": 2.0}), [[[64, 64, 64]]])  # (128/255)^2 * 255
    np.testing.assert_array_equal(apply_jitter(grey, {"contrast": 1.5, "brightness": 0.0}), [[[192, 192, 192]]])


def test_streaming_dataset_with_a_stage_transform():
    stream = synthetic_depth_dataset(3, 16, 24, seed=0, streaming=True)
    mapped = stream.map(
        build_transform("supervised", crop_size=(8, 8), seed=0), batched=True, remove_columns=stream.column_names
    )
    rows = list(mapped)
    assert len(rows) == 3 and rows[0]["pixel_values"].shape == (3, 8, 8) and rows[0]["labels"].shape == (8, 8)

"""Video loaders on generated sequences in each dataset's layout (tests/rgbd_fixtures.py, rendered from the
synthetic world), and the acceptance check: warping a source frame into the target with the true depth and pose
gives a much lower photometric error than the unwarped source. The same checks run on the real sequences in
../shared/data as one extra test (``shared_data``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from mesa_hf.data import build_transform, load_video_dataset
from mesa_hf.data.video import quaternion_pose
from mesa_hf.geometry import warp_frame
from mesa_hf.losses import photometric_error

from .helpers import seven_scenes_warp_errors
from .rgbd_fixtures import (
    rotation_to_quaternion,
    write_7scenes_folder,
    write_hololens_folder,
    write_nyu_sync_folder,
    write_tum_pairs,
    write_tum_sequence,
)


def raw_png(path) -> np.ndarray:
    return np.asarray(PILImage.open(path)).astype(np.int64)


def warp_errors(ds) -> tuple[float, float]:
    """Mean Monodepth2 photometric error over target pixels whose 3x3 SSIM window holds only measured,
    in-view pixels: (GT-warped source, unwarped source). A pixel next to a depth hole is left out, since its
    window would compare the warped image at an unmeasured point."""
    batch = ds.with_transform(build_transform("geometric", train=False))[: len(ds)]
    target = torch.stack(batch["target_image"])
    source = torch.stack(batch["source_images"])[:, 0]
    depth = torch.stack(batch["labels"])[:, None]
    poses, intrinsics = torch.stack(batch["poses"])[:, 0], torch.stack(batch["intrinsics"])
    warped, valid = warp_frame(source, depth.clamp_min(1e-3), poses, intrinsics)
    valid = -torch.nn.functional.max_pool2d(-(valid & (depth > 0)).float(), 3, stride=1, padding=1) > 0.5
    assert valid.float().mean() > 0.3
    return photometric_error(warped, target)[valid].mean().item(), photometric_error(source, target)[
        valid
    ].mean().item()


# ------------------------------------------------------------------ generated sequences


def test_7scenes_clips_and_gt_warp(tmp_path):
    frames = write_7scenes_folder(tmp_path / "7scenes", num_frames=12, invalid_fraction=0.05)
    ds = check_7scenes(tmp_path / "7scenes", tmp_path, offset=3, num_rows=6, k=frames[0].intrinsics)
    np.testing.assert_allclose(np.asarray(ds[2]["depth"]), frames[5].depth)  # 65535 -> 0
    assert (np.asarray(ds[2]["depth"]) == 0).mean() == pytest.approx(0.05, abs=0.02)
    np.testing.assert_allclose(ds[2]["poses"][0], frames[5].pose, atol=1e-6)
    warped, identity = warp_errors(ds)
    assert warped < 0.5 * identity, (warped, identity)


def check_7scenes(root: Path, tmp_path: Path, offset: int, num_rows: int, k) -> object:
    ds = load_video_dataset("7scenes", root, frame_offsets=(-offset, offset), cache_dir=str(tmp_path / "7s"))
    assert len(ds) == num_rows and ds.skipped_invalid == 0
    row = ds[0]
    assert (
        row["frame_index"] == offset and row["source_offsets"] == [-offset, offset] and len(row["source_images"]) == 2
    )
    np.testing.assert_allclose(row["intrinsics"], k, rtol=1e-6)
    np.testing.assert_allclose(row["poses"][1], np.loadtxt(root / "frame-000000.pose.txt"), rtol=1e-6, atol=1e-6)
    depth = np.asarray(row["depth"])
    raw = raw_png(root / f"frame-{offset:06d}.depth.png")
    np.testing.assert_array_equal(depth, np.where(raw == 65535, 0, raw / 1000.0).astype(np.float32))
    assert depth[depth > 0].min() > 0.3 and depth.max() < 10.0
    return ds


def test_tum_pairs_and_gt_warp(tmp_path):
    cases = write_tum_pairs(tmp_path / "tum", num_cases=2)
    ds = check_tum_pairs(tmp_path / "tum", tmp_path, k=cases[0][0].intrinsics)
    np.testing.assert_allclose(np.asarray(ds[1]["poses"]), [cases[1][1].pose, cases[1][0].pose], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ds[1]["depth"]), cases[1][1].depth)
    warped, identity = warp_errors(ds)
    assert warped < 0.5 * identity, (warped, identity)


def check_tum_pairs(root: Path, tmp_path: Path, k) -> object:
    ds = load_video_dataset("tum", root, frame_offsets=(-1,), cache_dir=str(tmp_path / "tum-pairs"))
    assert len(ds) == 2 and [r["scene"] for r in ds] == ["case_1", "case_2"]
    row = ds[0]
    np.testing.assert_allclose(row["intrinsics"], k, rtol=1e-6)
    curr = np.loadtxt(root / "case_1" / "pose_curr.txt")
    pose = np.asarray(row["poses"][0])  # target = curr
    np.testing.assert_allclose(pose[:3, 3], curr[:3], atol=1e-6)
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(row["depth"]), (raw_png(root / "case_1" / "dep_curr.png") / 5000.0).astype(np.float32)
    )
    return ds


def test_quaternion_pose():
    # 90 degrees about z: x -> y
    pose = quaternion_pose(1, 2, 3, 0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4))
    np.testing.assert_allclose(pose[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], [1, 2, 3])
    rng = np.random.default_rng(0)  # any rotation round-trips through the fixtures' quaternion
    for _ in range(5):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        np.testing.assert_allclose(quaternion_pose(0, 0, 0, *rotation_to_quaternion(q))[:3, :3], q, atol=1e-9)


def test_tum_official_layout_associates_by_timestamp(tmp_path):
    frames, rgb_t, gt_t, gt_poses = write_tum_sequence(tmp_path / "rgbd_dataset_freiburg1_xyz", num_frames=5)
    k = frames[0].intrinsics
    ds = load_video_dataset(
        "tum", tmp_path / "rgbd_dataset_freiburg1_xyz", frame_offsets=(-3,), intrinsics=k, cache_dir=str(tmp_path)
    )
    assert len(ds) == 2
    for row, t in zip(ds, rgb_t[3:]):
        target, source = np.argmin(np.abs(gt_t - t)), np.argmin(np.abs(gt_t - (t - 3 / 30)))
        np.testing.assert_allclose(np.asarray(row["poses"]), [gt_poses[target], gt_poses[source]], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ds[0]["depth"]), frames[3].depth)  # depth 5 ms after its colour
    warped, identity = warp_errors(ds)
    assert warped < 0.6 * identity, (warped, identity)  # mocap poses are up to 5 ms off the frames


def test_hololens_and_nyu_raw(tmp_path):
    frames = write_hololens_folder(tmp_path / "hololens", num_frames=8)
    holo = check_hololens(tmp_path / "hololens", tmp_path, num_rows=7, size=(108, 72), k=frames[0].intrinsics)
    np.testing.assert_array_equal(np.asarray(holo[3]["depth"]), frames[3].depth)
    warped, identity = warp_errors(holo)
    # 108x72 frames 7 cm apart: the ground-truth warp leaves about a tenth of the unwarped error (disocclusions)
    assert warped < 0.25 * identity, (warped, identity)
    write_nyu_sync_folder(tmp_path / "nyu_raw_sync3", height=48, width=64)
    check_nyu_raw(tmp_path / "nyu_raw_sync3", tmp_path, size=(48, 64), out_size=(24, 32))


def check_hololens(root: Path, tmp_path: Path, num_rows: int, size, k) -> object:
    holo = load_video_dataset("hololens", root, frame_offsets=(1,), cache_dir=str(tmp_path / "holo"))
    assert len(holo) == num_rows and holo[0]["image"].size == size
    np.testing.assert_allclose(holo[0]["intrinsics"], k, rtol=1e-6)
    lines = np.loadtxt(root / "poses.txt")
    assert len(lines) > num_rows + 1  # poses of frames beyond the copied ones are ignored
    np.testing.assert_allclose(np.asarray(holo[4]["poses"]).reshape(2, 16), lines[4:6], rtol=1e-5, atol=1e-6)
    depth = np.asarray(holo[0]["depth"])
    assert 0.6 < (depth > 0).mean() < 0.9 and depth.max() < 10.0
    return holo


def check_nyu_raw(root: Path, tmp_path: Path, size, out_size) -> None:
    nyu = load_video_dataset("nyu_raw", root, frame_offsets=(-1, 1), cache_dir=str(tmp_path / "nyu-raw"))
    assert len(nyu) == 1 and nyu[0]["poses"] is None and nyu[0]["frame_index"] == 1
    assert nyu[0]["intrinsics"][0][0] == pytest.approx(518.8579, abs=1e-3)  # the NYU camera, for 640x480 frames
    out = nyu.with_transform(build_transform("geometric", size=out_size, seed=0))[0]
    assert out["source_pixel_values"].shape == (2, 3, *out_size) and "poses" not in out
    assert out["intrinsics"][0, 0].item() == pytest.approx(518.8579 * out_size[1] / size[1], rel=1e-5)


def test_generic_frames_folder_and_validation(tmp_path):
    write_hololens_folder(tmp_path / "hololens", num_frames=4)
    check_frames_folder(tmp_path / "hololens" / "images", tmp_path)


def check_frames_folder(images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    (folder / "images").mkdir(parents=True)
    for f in sorted(images.glob("*.png"))[:4]:
        shutil.copyfile(f, folder / "images" / f.name)  # copies: the check writes into this folder
    with pytest.raises(ValueError, match="needs camera intrinsics"):
        load_video_dataset("frames", folder, cache_dir=str(tmp_path / "c"))
    ds = load_video_dataset("frames", folder, intrinsics=(500, 500, 270, 180), cache_dir=str(tmp_path / "c"))
    assert len(ds) == 2 and ds[0]["poses"] is None and ds[0]["depth"] is None
    with pytest.raises(ValueError, match="empty dataset, no clip fits"):
        load_video_dataset("frames", folder, intrinsics=(500, 500, 270, 180), frame_offsets=(-5, 5))
    PILImage.new("RGB", (30, 20)).save(folder / "images" / "00007.png")  # a frame of another size
    with pytest.raises(ValueError, match=r"00007\.png: frame size \(20, 30\) differs"):
        load_video_dataset("frames", folder, intrinsics=(500, 500, 270, 180), cache_dir=str(tmp_path / "d"))
    ds = load_video_dataset(
        "frames", folder, intrinsics=(500, 500, 270, 180), skip_invalid=True, cache_dir=str(tmp_path / "e")
    )
    assert len(ds) == 2 and ds.skipped_invalid == 1


def test_nyu_raw_dumps_are_ordered_by_timestamp(tmp_path):
    scene = tmp_path / "raw" / "office_0001"
    scene.mkdir(parents=True)
    stamps = [
        ("1294439283.377657", "2186246219"),
        ("1294439283.041580", "2176315443"),
        ("1294439283.710052", "2196177187"),
    ]
    for i, (t, n) in enumerate(stamps):
        PILImage.new("RGB", (8, 6), (10 * i, 0, 0)).save(scene / f"r-{t}-{n}.ppm")
    ds = load_video_dataset("nyu_raw", tmp_path / "raw", frame_offsets=(-1, 1), cache_dir=str(tmp_path / "c"))
    assert len(ds) == 1 and ds[0]["scene"] == "office_0001" and ds[0]["depth"] is None
    # time order: stamps[1] < stamps[0] < stamps[2]; the target is the middle one (red = 0)
    assert ds[0]["image"].getpixel((0, 0))[0] == 0
    assert [im.getpixel((0, 0))[0] for im in ds[0]["source_images"]] == [10, 20]


# ------------------------------------------------------------------ the same checks on the real sequences


def test_real_sequences_load_and_warp(shared_data, tmp_path):
    """Extra check: every video loader above, and warps with ground-truth depth and pose, on ../shared/data."""
    seven = shared_data / "7scenes_redkitchen60"
    ds = check_7scenes(seven, tmp_path, offset=10, num_rows=40, k=[[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    assert np.asarray(ds[0]["depth"]).max() < 6.0
    warped, identity = warp_errors(ds.select(range(0, 40, 8)))
    print(f"7-Scenes photometric error: GT-warped {warped:.4f} vs unwarped {identity:.4f}")
    assert warped < 0.6 * identity
    for target, source in ((0, 10), (30, 24)):  # measured: true pose 0.111 / 0.106, reversed 0.264 / 0.316
        errors = seven_scenes_warp_errors(seven, target, source)
        assert errors["true"] < 0.6 * errors["none"] and errors["reversed"] > 2 * errors["true"], errors

    tum = shared_data / "tum_fr1xyz_pairs"
    ds = check_tum_pairs(tum, tmp_path, k=[[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    warped, identity = warp_errors(ds)
    print(f"TUM fr1/xyz photometric error: GT-warped {warped:.4f} vs unwarped {identity:.4f}")
    assert warped < 0.75 * identity

    seq = tmp_path / "rgbd_dataset_freiburg1_xyz"  # the real pair in the official sequence layout
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    for i, which in enumerate(("prev", "curr")):
        shutil.copyfile(tum / "case_1" / f"img_{which}.png", seq / "rgb" / f"{i}.png")
        shutil.copyfile(tum / "case_1" / f"dep_{which}.png", seq / "depth" / f"{i}.png")
    (seq / "rgb.txt").write_text("# color images\n100.000 rgb/0.png\n100.033 rgb/1.png\n")
    (seq / "depth.txt").write_text("100.005 depth/0.png\n100.040 depth/1.png\n")
    poses = [np.loadtxt(tum / "case_1" / f"pose_{w}.txt") for w in ("prev", "curr")]
    (seq / "groundtruth.txt").write_text(
        "".join(f"{t} {' '.join(map(str, p))}\n" for t, p in zip((99.999, 100.031), poses))
    )
    ds = load_video_dataset("tum", seq, frame_offsets=(-1,), cache_dir=str(tmp_path / "seq"))
    assert len(ds) == 1
    np.testing.assert_allclose(np.asarray(ds[0]["poses"])[1, :3, 3], poses[0][:3], atol=1e-6)

    holo = check_hololens(
        shared_data / "hololens20",
        tmp_path,
        num_rows=19,
        size=(540, 360),
        k=np.loadtxt(shared_data / "hololens20" / "K.txt"),
    )
    np.testing.assert_allclose(holo[0]["intrinsics"][0], [495.5677570093458, 0, 269.5028971962616], rtol=1e-6)
    check_nyu_raw(shared_data / "nyu_raw_sync3", tmp_path, size=(480, 640), out_size=(48, 64))
    check_frames_folder(shared_data / "hololens20" / "images", tmp_path)

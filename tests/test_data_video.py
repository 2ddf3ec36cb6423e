"""Video loaders on the real sequences in shared/data, and the acceptance check: warping a source frame into the
target with ground-truth depth and pose gives a much lower photometric error than the unwarped source."""

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

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared RGB-D samples not found at {DATA}")


def raw_png(path) -> np.ndarray:
    return np.asarray(PILImage.open(path)).astype(np.int64)


def warp_errors(ds) -> tuple[float, float]:
    """Mean Monodepth2 photometric error over valid target pixels: (GT-warped source, unwarped source)."""
    batch = ds.with_transform(build_transform("geometric", train=False))[: len(ds)]
    target = torch.stack(batch["target_image"])
    source = torch.stack(batch["source_images"])[:, 0]
    depth = torch.stack(batch["labels"])[:, None]
    warped, valid = warp_frame(source, depth, torch.stack(batch["poses"])[:, 0], torch.stack(batch["intrinsics"]))
    valid = valid & (depth > 0)
    assert valid.float().mean() > 0.5
    return photometric_error(warped, target)[valid].mean().item(), photometric_error(source, target)[
        valid
    ].mean().item()


@needs_data
def test_7scenes_clips_and_gt_warp(tmp_path):
    root = DATA / "7scenes_redkitchen60"
    ds = load_video_dataset("7scenes", root, frame_offsets=(-10, 10), cache_dir=str(tmp_path))
    assert len(ds) == 40 and ds.skipped_invalid == 0
    row = ds[0]
    assert row["frame_index"] == 10 and row["source_offsets"] == [-10, 10] and len(row["source_images"]) == 2
    np.testing.assert_allclose(row["intrinsics"], [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    np.testing.assert_allclose(row["poses"][1], np.loadtxt(root / "frame-000000.pose.txt"), rtol=1e-6, atol=1e-6)
    depth = np.asarray(row["depth"])
    np.testing.assert_array_equal(depth, (raw_png(root / "frame-000010.depth.png") / 1000.0).astype(np.float32))
    assert depth[depth > 0].min() > 0.3 and depth.max() < 6.0
    warped, identity = warp_errors(ds.select(range(0, 40, 8)))
    print(f"7-Scenes photometric error: GT-warped {warped:.4f} vs unwarped {identity:.4f}")
    assert warped < 0.6 * identity


@needs_data
def test_tum_pairs_and_gt_warp(tmp_path):
    ds = load_video_dataset("tum", DATA / "tum_fr1xyz_pairs", frame_offsets=(-1,), cache_dir=str(tmp_path))
    assert len(ds) == 2 and [r["scene"] for r in ds] == ["case_1", "case_2"]
    row = ds[0]
    np.testing.assert_allclose(row["intrinsics"], [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    curr = np.loadtxt(DATA / "tum_fr1xyz_pairs" / "case_1" / "pose_curr.txt")
    pose = np.asarray(row["poses"][0])  # target = curr
    np.testing.assert_allclose(pose[:3, 3], curr[:3], atol=1e-6)
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5)
    depth = np.asarray(row["depth"])
    np.testing.assert_array_equal(
        depth, (raw_png(DATA / "tum_fr1xyz_pairs/case_1/dep_curr.png") / 5000.0).astype(np.float32)
    )
    warped, identity = warp_errors(ds)
    print(f"TUM fr1/xyz photometric error: GT-warped {warped:.4f} vs unwarped {identity:.4f}")
    assert warped < 0.75 * identity


def test_quaternion_pose():
    # 90 degrees about z: x -> y
    pose = quaternion_pose(1, 2, 3, 0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4))
    np.testing.assert_allclose(pose[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], [1, 2, 3])


@needs_data
def test_tum_official_layout_associates_by_timestamp(tmp_path):
    seq = tmp_path / "rgbd_dataset_freiburg1_xyz"
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    src = DATA / "tum_fr1xyz_pairs" / "case_1"
    for i, which in enumerate(("prev", "curr")):
        shutil.copyfile(src / f"img_{which}.png", seq / "rgb" / f"{i}.png")
        shutil.copyfile(src / f"dep_{which}.png", seq / "depth" / f"{i}.png")
    (seq / "rgb.txt").write_text("# color images\n100.000 rgb/0.png\n100.033 rgb/1.png\n")
    (seq / "depth.txt").write_text("100.005 depth/0.png\n100.040 depth/1.png\n")
    poses = [np.loadtxt(src / f"pose_{w}.txt") for w in ("prev", "curr")]
    (seq / "groundtruth.txt").write_text(
        "".join(f"{t} {' '.join(map(str, p))}\n" for t, p in zip((99.999, 100.031), poses))
    )
    ds = load_video_dataset("tum", seq, frame_offsets=(-1,), cache_dir=str(tmp_path / "c"))
    assert len(ds) == 1
    np.testing.assert_allclose(np.asarray(ds[0]["poses"])[1, :3, 3], poses[0][:3], atol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(ds[0]["depth"]), (raw_png(src / "dep_curr.png") / 5000.0).astype(np.float32)
    )


@needs_data
def test_hololens_and_nyu_raw(tmp_path):
    holo = load_video_dataset("hololens", DATA / "hololens20", frame_offsets=(1,), cache_dir=str(tmp_path))
    assert len(holo) == 19 and holo[0]["image"].size == (540, 360)
    np.testing.assert_allclose(holo[0]["intrinsics"][0], [495.5677570093458, 0, 269.5028971962616], rtol=1e-6)
    lines = np.loadtxt(DATA / "hololens20" / "poses.txt")
    np.testing.assert_allclose(np.asarray(holo[4]["poses"]).reshape(2, 16), lines[4:6], rtol=1e-5, atol=1e-6)
    depth = np.asarray(holo[0]["depth"])
    assert 0.6 < (depth > 0).mean() < 0.9 and depth.max() < 10.0
    nyu = load_video_dataset("nyu_raw", DATA / "nyu_raw_sync3", frame_offsets=(-1, 1), cache_dir=str(tmp_path))
    assert len(nyu) == 1 and nyu[0]["poses"] is None and nyu[0]["frame_index"] == 1
    assert nyu[0]["intrinsics"][0][0] == pytest.approx(518.8579, abs=1e-3)
    out = nyu.with_transform(build_transform("geometric", size=(48, 64), seed=0))[0]
    assert out["source_pixel_values"].shape == (2, 3, 48, 64) and "poses" not in out
    assert out["intrinsics"][0, 0].item() == pytest.approx(518.8579 * 0.1, rel=1e-5)


@needs_data
def test_generic_frames_folder_and_validation(tmp_path):
    folder = tmp_path / "clip"
    (folder / "images").mkdir(parents=True)
    for f in sorted((DATA / "hololens20" / "images").glob("*.png"))[:4]:
        shutil.copyfile(f, folder / "images" / f.name)  # copies: the test writes into this folder
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

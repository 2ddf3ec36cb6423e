"""Depth decoders, depth/image loaders and load-time validation, checked against the real files in shared/data."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from datasets import Dataset, Features, Image, IterableDataset
from PIL import Image as PILImage

from mesa_hf.data import NYU_INTRINSICS, decode_depth, load_depth_dataset, load_image_dataset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared RGB-D samples not found at {DATA}")


def raw_png(path) -> np.ndarray:
    return np.asarray(PILImage.open(path)).astype(np.int64)


def write_png16(path, array) -> None:
    PILImage.fromarray(np.asarray(array, dtype=np.uint16)).save(path)


def write_rgb(path, h, w, seed=0) -> None:
    rng = np.random.default_rng(seed)
    PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


# ------------------------------------------------------------------ decoders on the real format samples


@needs_data
def test_tum_depth_is_value_over_5000():
    path = DATA / "rgbd_formats" / "TUM_depth.png"
    raw, depth = raw_png(path), decode_depth(path, "tum")
    assert depth.dtype == np.float32 and depth.shape == (480, 640)
    np.testing.assert_array_equal(depth, (raw / 5000.0).astype(np.float32))
    valid = depth[depth > 0]
    assert valid.min() > 0.3 and valid.max() < 10.0


@needs_data
def test_sunrgbd_bitshift():
    path = DATA / "rgbd_formats" / "SUN_depth.png"
    raw, depth = raw_png(path), decode_depth(path, "sunrgbd")
    v = int(raw[240, 320])
    expected = (((v >> 3) | (v << 13)) & 0xFFFF) / 1000.0
    assert depth[240, 320] == pytest.approx(expected, abs=1e-6)
    assert raw.max() > 10000  # the stored values are not millimetres before the shift ...
    valid = depth[depth > 0]
    assert 0.5 < np.median(valid) < 8.0 and valid.max() < 10.0  # ... and are indoor metres after it


@needs_data
def test_nyu_raw_disparity_to_metres():
    path = DATA / "rgbd_formats" / "NYU_depth.pgm"
    data = path.read_bytes()
    body = np.frombuffer(data[len(b"P5 640 480 65535\n") :], dtype="<u2").reshape(480, 640)
    assert body.min() == 839 and body.max() == 2047  # byte-swapped disparity, 2047 = invalid
    depth = decode_depth(path, "nyu_disparity")
    y, x = np.argwhere(body < 2047)[1000]
    assert depth[y, x] == pytest.approx(351.3 / (1092.5 - float(body[y, x])), rel=1e-6)
    assert np.all(depth[body == 2047] == 0)
    valid = depth[depth > 0]
    assert valid.min() > 1.3 and valid.max() <= 10.0


@needs_data
def test_kitti_is_value_over_256(tmp_path):
    ds = load_depth_dataset(
        "folder", DATA / "kitti3", image_pattern="rgb/*.png", depth_pattern="depth/*.png", depth_format="kitti",
        intrinsics=(707.0493, 707.0493, 604.0814, 180.5066), cache_dir=str(tmp_path),
    )  # fmt: skip
    assert len(ds) == 3
    raw = raw_png(DATA / "kitti3" / "depth" / "0000000005.png")
    depth = np.asarray(ds[0]["depth"])
    np.testing.assert_array_equal(depth, (raw / 256.0).astype(np.float32))
    assert 0.15 < (depth > 0).mean() < 0.25 and depth[depth > 0].min() > 3.0 and depth.max() < 90.0
    assert ds[0]["intrinsics"][0][2] == pytest.approx(604.0814, abs=1e-4)


def test_7scenes_invalid_code_and_generic_png_scale(tmp_path):
    write_png16(tmp_path / "d.png", [[1000, 65535], [0, 2500]])
    np.testing.assert_array_equal(decode_depth(tmp_path / "d.png", "7scenes"), [[1.0, 0.0], [0.0, 2.5]])
    np.testing.assert_allclose(decode_depth(tmp_path / "d.png", "png", depth_scale=0.01)[1], [0.0, 25.0])
    with pytest.raises(ValueError, match="depth_scale"):
        decode_depth(tmp_path / "d.png", "png")
    with pytest.raises(ValueError, match="unknown depth_format"):
        decode_depth(tmp_path / "d.png", "bogus")


# ------------------------------------------------------------------ dataset loaders on the real folders


@needs_data
def test_nyu_sync_folder_scan(tmp_path):
    ds = load_depth_dataset("nyu_sync", DATA / "nyu_raw_sync3", cache_dir=str(tmp_path))
    assert isinstance(ds, Dataset) and len(ds) == 3 and ds.skipped_invalid == 0
    assert set(ds.column_names) == {"image", "depth", "intrinsics", "scene"}
    raw = raw_png(DATA / "nyu_raw_sync3" / "depth" / "sync_depth_00050.png")
    row = ds[1]
    depth = np.asarray(row["depth"])
    assert depth.dtype == np.float32 and row["image"].size == (640, 480)
    np.testing.assert_array_equal(depth, (raw / 1000.0).astype(np.float32))  # stored losslessly
    assert 0.67 <= (depth > 0).mean() <= 0.76 and depth[depth > 0].min() > 0.3 and depth.max() < 10.0
    np.testing.assert_allclose(row["intrinsics"], NYU_INTRINSICS, rtol=1e-6)


@needs_data
def test_nyu_sync_bts_file_list(tmp_path):
    scene = tmp_path / "sync" / "basement_0001a"
    scene.mkdir(parents=True)
    for name in ("rgb/rgb_00050.jpg", "depth/sync_depth_00050.png"):
        shutil.copyfile(DATA / "nyu_raw_sync3" / name, scene / Path(name).name)
    lines = (DATA / "nyu_splits" / "nyudepthv2_train_files_with_gt.txt").read_text().splitlines()
    assert len(lines) == 24231
    chosen = [line for line in lines if line.startswith("/basement_0001a/rgb_00050.jpg ")]
    (tmp_path / "list.txt").write_text("\n".join(chosen) + "\n")
    ds = load_depth_dataset("nyu_sync", tmp_path / "sync", file_list=tmp_path / "list.txt", cache_dir=str(tmp_path))
    assert len(ds) == 1 and ds[0]["scene"] == "basement_0001a"
    raw = raw_png(DATA / "nyu_raw_sync3" / "depth" / "sync_depth_00050.png")
    np.testing.assert_array_equal(np.asarray(ds[0]["depth"]), (raw / 1000.0).astype(np.float32))


@needs_data
def test_nyu_test10_csv_dense_metres(tmp_path):
    ds = load_depth_dataset(
        "csv", DATA / "nyu_test10" / "nyu2_mini_test.csv", depth_format="nyu", cache_dir=str(tmp_path)
    )
    assert len(ds) == 10
    depths = np.stack([np.asarray(d) for d in ds["depth"]])
    assert depths.shape == (10, 480, 640) and np.all(depths > 0)  # dense in-painted labelled depth
    assert depths.min() > 0.5 and 9.0 < depths.max() <= 10.0
    raw = raw_png(DATA / "nyu_test10" / "depth_3.png")
    assert depths[3, 100, 200] == np.float32(raw[100, 200] / 1000.0)


@needs_data
def test_ibims1_npy_metres(tmp_path):
    ds = load_depth_dataset("ibims1", DATA / "ibims1_partial2", cache_dir=str(tmp_path))
    assert len(ds) == 2
    raw = np.load(DATA / "ibims1_partial2" / "depth" / "ibims_hole_60.npy")[0, 0]
    depth = np.asarray(ds[0]["depth"])
    np.testing.assert_array_equal(depth, raw)
    valid = depth[depth > 0]
    assert valid.min() == pytest.approx(1.28, abs=0.01) and valid.max() == pytest.approx(4.19, abs=0.01)


def test_nyu_labelled_mat_and_splits(tmp_path):
    n, h, w = 4, 6, 8
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.7, 9.5, (n, h, w)).astype(np.float32)
    with h5py.File(tmp_path / "labeled.mat", "w") as f:  # MATLAB v7.3 layout as h5py sees it
        f["images"] = images.transpose(0, 3, 2, 1)  # (N, 3, W, H)
        f["depths"] = depths.transpose(0, 2, 1)  # (N, W, H)
        names = [
            f.create_dataset(f"#refs#/{i}", data=np.array([[ord(c)] for c in f"scene_{i}"], np.uint16))
            for i in range(n)
        ]
        f["scenes"] = np.array([[d.ref for d in names]], dtype=h5py.ref_dtype)  # a MATLAB cell array of strings
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": [[1], [3]], "testNdxs": [[2], [4]]})
    kwargs = {"splits_path": tmp_path / "splits.mat", "cache_dir": str(tmp_path / "c")}
    test = load_depth_dataset("nyu_mat", tmp_path / "labeled.mat", split="test", **kwargs)
    assert len(test) == 2
    np.testing.assert_array_equal(np.asarray(test[0]["image"]), images[1])  # 1-based index 2
    np.testing.assert_array_equal(np.asarray(test[1]["depth"]), depths[3])
    assert [r["scene"] for r in test] == ["scene_1", "scene_3"]
    assert len(load_depth_dataset("nyu_mat", tmp_path / "labeled.mat", split="train", **kwargs)) == 2


def test_hub_parquet_layout(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 10.0, (5, 7)).astype(np.float32)
    table = Dataset.from_dict(
        {"image": [PILImage.fromarray(image)], "depth_map": [depth]},
        features=Features({"image": Image(), "depth_map": Image()}),
    )
    table.to_parquet(tmp_path / "train.parquet")
    ds = load_depth_dataset("parquet", tmp_path / "train.parquet", cache_dir=str(tmp_path / "c"))
    np.testing.assert_array_equal(np.asarray(ds[0]["image"]), image)
    np.testing.assert_array_equal(np.asarray(ds[0]["depth"]), depth)


@needs_data
def test_streaming_gives_the_same_rows():
    it = load_depth_dataset("ibims1", DATA / "ibims1_partial2", streaming=True)
    assert isinstance(it, IterableDataset)
    row = next(iter(it))
    raw = np.load(DATA / "ibims1_partial2" / "depth" / "ibims_hole_60.npy")[0, 0]
    np.testing.assert_array_equal(np.asarray(row["depth"]), raw)


def test_image_folder(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    for i in range(3):
        write_rgb(tmp_path / "imgs" / "a" / f"{i}.png", 8, 10, seed=i)
    ds = load_image_dataset(tmp_path / "imgs", cache_dir=str(tmp_path / "c"))
    assert ds.column_names == ["image"] and len(ds) == 3 and ds[0]["image"].size == (10, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty dataset"):
        load_image_dataset(tmp_path / "empty")


# ------------------------------------------------------------------ validation


def make_folder(tmp_path, n=3, depth_mm=2000):
    root = tmp_path / "set"
    root.mkdir()
    for i in range(n):
        write_rgb(root / f"{i}_image.png", 6, 8, seed=i)
        write_png16(root / f"{i}_depth.png", np.full((6, 8), depth_mm + i))
    return root


def load_folder(root, tmp_path, **kwargs):
    kwargs = {"depth_format": "png", "depth_scale": 0.001, "cache_dir": str(tmp_path / "c"), **kwargs}
    return load_depth_dataset("folder", root, image_pattern="*_image.png", depth_pattern="*_depth.png", **kwargs)


def test_millimetres_as_metres_is_an_error(tmp_path):
    root = make_folder(tmp_path)
    with pytest.raises(ValueError, match=r"0_depth\.png: median valid depth is 2000\.0 m .*millimetres"):
        load_folder(root, tmp_path, depth_scale=1.0)
    assert np.asarray(load_folder(root, tmp_path)[0]["depth"])[0, 0] == np.float32(2.0)


def test_size_mismatch_corrupt_missing_and_empty(tmp_path):
    root = make_folder(tmp_path)
    write_png16(root / "1_depth.png", np.full((5, 8), 2000))
    with pytest.raises(ValueError, match=r"1_depth\.png: depth size \(5, 8\) .* differs from image .*1_image\.png"):
        load_folder(root, tmp_path)
    write_png16(root / "1_depth.png", np.full((6, 8), 2000))
    (root / "2_image.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"2_image\.png: corrupt or unreadable image"):
        load_folder(root, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.png: file not found"):
        load_depth_dataset("csv", _csv(tmp_path, "0_image.png", "missing.png", root), depth_format="nyu")
    (tmp_path / "void").mkdir()
    with pytest.raises(ValueError, match="void: empty dataset"):
        load_folder(tmp_path / "void", tmp_path)


def _csv(tmp_path, image, depth, root) -> Path:
    path = root / "list.csv"
    path.write_text(f"image_path,depth_path\n{image},{depth}\n")
    return path


def test_skip_invalid_counts_the_bad_samples(tmp_path, caplog):
    root = make_folder(tmp_path, n=4)
    (root / "2_image.png").write_bytes(b"garbage")
    write_png16(root / "3_depth.png", np.zeros((6, 8)))  # no valid depth
    ds = load_folder(root, tmp_path, skip_invalid=True)
    assert len(ds) == 2 and ds.skipped_invalid == 2
    assert "skipped 2 invalid of 4 samples" in caplog.text
    np.testing.assert_array_equal([np.asarray(d)[0, 0] for d in ds["depth"]], np.float32([2.0, 2.001]))


def test_ibims1_core_mat_release(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    depth = rng.uniform(1.0, 5.0, (6, 8))
    mask_invalid, mask_transp = np.ones((6, 8), np.uint8), np.ones((6, 8), np.uint8)
    mask_invalid[0, 0], mask_transp[1, 1] = 0, 0
    calib = [[559.6, 0, 320.5], [0, 559.6, 240.5], [0, 0, 1]]
    data = {"rgb": rgb, "depth": depth, "calib": calib, "mask_invalid": mask_invalid, "mask_transp": mask_transp}
    scipy.io.savemat(tmp_path / "corridor_01.mat", {"data": data})
    ds = load_depth_dataset("ibims1", tmp_path, cache_dir=str(tmp_path / "c"))
    row = ds[0]
    np.testing.assert_array_equal(np.asarray(row["image"]), rgb)
    expected = depth.astype(np.float32)
    expected[0, 0] = expected[1, 1] = 0.0
    np.testing.assert_array_equal(np.asarray(row["depth"]), expected)
    np.testing.assert_allclose(row["intrinsics"], calib, rtol=1e-6)
    assert row["scene"] == "corridor_01"


def test_parquet_glob(tmp_path):
    for i in range(2):
        table = Dataset.from_dict(
            {"image": [PILImage.new("RGB", (4, 3))], "depth_map": [np.full((3, 4), 1.5 + i, np.float32)]},
            features=Features({"image": Image(), "depth_map": Image()}),
        )
        table.to_parquet(tmp_path / f"train-{i}.parquet")
    ds = load_depth_dataset("parquet", str(tmp_path / "train-*.parquet"), cache_dir=str(tmp_path / "c"))
    assert len(ds) == 2 and np.asarray(ds[1]["depth"])[0, 0] == np.float32(2.5)


def test_cache_follows_files_changed_in_place(tmp_path):
    root = make_folder(tmp_path, n=2)
    assert np.asarray(load_folder(root, tmp_path)[0]["depth"])[0, 0] == np.float32(2.0)
    write_png16(root / "0_depth.png", np.full((6, 8), 3000))  # same path, new content
    assert np.asarray(load_folder(root, tmp_path)[0]["depth"])[0, 0] == np.float32(3.0)

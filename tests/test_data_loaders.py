"""Depth decoders, depth/image loaders and load-time validation, on generated files in each dataset's format
(tests/rgbd_fixtures.py), and as an extra check on the real samples in ../shared/data (``shared_data``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from datasets import Dataset, Features, Image, IterableDataset
from PIL import Image as PILImage

from mesa_hf.data import NYU_INTRINSICS, decode_depth, load_depth_dataset, load_image_dataset
from mesa_hf.data.decoders import read_pgm16

from .rgbd_fixtures import (
    write_bts_file_list,
    write_format_samples,
    write_ibims_folder,
    write_kitti_folder,
    write_nyu_labelled_mat,
    write_nyu_splits,
    write_nyu_sync_folder,
    write_nyu_test_folder,
)


def raw_png(path) -> np.ndarray:
    return np.asarray(PILImage.open(path)).astype(np.int64)


def write_png16(path, array) -> None:
    PILImage.fromarray(np.asarray(array, dtype=np.uint16)).save(path)


def write_rgb(path, h, w, seed=0) -> None:
    rng = np.random.default_rng(seed)
    PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


# ------------------------------------------------------------------ decoders, on generated files in each format


@pytest.fixture(scope="module")
def format_samples(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("rgbd_formats")
    return root, write_format_samples(root)


def test_tum_depth_is_value_over_5000(format_samples):
    root, truth = format_samples
    check_tum_depth(root / "TUM_depth.png", shape=(48, 64))
    depth = decode_depth(root / "TUM_depth.png", "tum")
    np.testing.assert_allclose(depth, truth["TUM_depth.png"], atol=1e-4)  # 0.2 mm steps
    assert np.all(depth[truth["TUM_depth.png"] == 0] == 0)


def test_sunrgbd_bitshift(format_samples):
    root, truth = format_samples
    check_sunrgbd_depth(root / "SUN_depth.png")
    np.testing.assert_allclose(decode_depth(root / "SUN_depth.png", "sunrgbd"), truth["SUN_depth.png"], atol=5e-4)


def test_nyu_raw_disparity_to_metres(format_samples):
    root, truth = format_samples
    check_nyu_disparity(root / "NYU_depth.pgm", (48, 64))
    true = truth["NYU_depth.pgm"]
    depth = decode_depth(root / "NYU_depth.pgm", "nyu_disparity")
    valid = true > 0
    assert np.all(depth[~valid] == 0) and np.all(depth[valid] > 0)
    # one disparity step is depth^2 / 351.3 metres: the decoded depth is within half a step of the truth
    assert np.all(np.abs(depth[valid] - true[valid]) <= 0.5 * true[valid] ** 2 / 351.3 * 1.01 + 1e-6)
    big_endian = read_pgm16(root / "NYU_depth.pgm", byteswap=False)  # what the PGM header claims ...
    assert big_endian.max() > 2047  # ... is not disparity: NYU's dumps are little-endian


def check_tum_depth(path: Path, shape=(480, 640)) -> None:
    raw, depth = raw_png(path), decode_depth(path, "tum")
    assert depth.dtype == np.float32 and depth.shape == shape
    np.testing.assert_array_equal(depth, (raw / 5000.0).astype(np.float32))
    valid = depth[depth > 0]
    assert valid.min() > 0.3 and valid.max() < 10.0


def check_sunrgbd_depth(path: Path) -> None:
    raw, depth = raw_png(path), decode_depth(path, "sunrgbd")
    y, x = np.argwhere(raw > 0)[len(np.argwhere(raw > 0)) // 2]
    v = int(raw[y, x])
    expected = (((v >> 3) | (v << 13)) & 0xFFFF) / 1000.0
    assert depth[y, x] == pytest.approx(expected, abs=1e-6)
    assert raw.max() > 10000  # the stored values are not millimetres before the shift ...
    valid = depth[depth > 0]
    assert 0.5 < np.median(valid) < 8.0 and valid.max() < 10.0  # ... and are indoor metres after it


def check_nyu_disparity(path: Path, shape: tuple[int, int], value_range: tuple[int, int] | None = None) -> None:
    data = path.read_bytes()
    header = f"P5 {shape[1]} {shape[0]} 65535\n".encode()
    assert data.startswith(header)
    body = np.frombuffer(data[len(header) :], dtype="<u2").reshape(shape)
    if value_range is not None:
        assert (body.min(), body.max()) == value_range
    assert body.max() == 2047  # byte-swapped disparity, 2047 = invalid
    depth = decode_depth(path, "nyu_disparity")
    y, x = np.argwhere(body < 2047)[len(np.argwhere(body < 2047)) // 3]
    assert depth[y, x] == pytest.approx(351.3 / (1092.5 - float(body[y, x])), rel=1e-6)
    assert np.all(depth[body == 2047] == 0)
    valid = depth[depth > 0]
    assert valid.min() > 0.3 and valid.max() <= 10.0


def test_kitti_is_value_over_256(tmp_path):
    k, stored = write_kitti_folder(tmp_path / "kitti3")
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    ds = check_kitti_folder(tmp_path / "kitti3", (fx, fy, cx, cy), tmp_path, num=3, first="0000000005.png")
    np.testing.assert_array_equal(np.asarray(ds[1]["depth"]), stored["0000000050.png"])
    depth = np.asarray(ds[0]["depth"])
    assert 0.2 <= (depth > 0).mean() <= 0.3  # every fourth row, as projected LiDAR is sparse


def check_kitti_folder(root: Path, intrinsics, tmp_path: Path, num: int, first: str):
    ds = load_depth_dataset(
        "folder", root, image_pattern="rgb/*.png", depth_pattern="depth/*.png", depth_format="kitti",
        intrinsics=intrinsics, cache_dir=str(tmp_path / "kitti-cache"),
    )  # fmt: skip
    assert len(ds) == num
    raw = raw_png(root / "depth" / first)
    depth = np.asarray(ds[0]["depth"])
    np.testing.assert_array_equal(depth, (raw / 256.0).astype(np.float32))
    assert 0.15 < (depth > 0).mean() < 0.3 and depth[depth > 0].min() > 3.0 and depth.max() < 90.0
    assert ds[0]["intrinsics"][0][2] == pytest.approx(intrinsics[2], abs=1e-4)
    return ds


def test_7scenes_invalid_code_and_generic_png_scale(tmp_path):
    write_png16(tmp_path / "d.png", [[1000, 65535], [0, 2500]])
    np.testing.assert_array_equal(decode_depth(tmp_path / "d.png", "7scenes"), [[1.0, 0.0], [0.0, 2.5]])
    np.testing.assert_allclose(decode_depth(tmp_path / "d.png", "png", depth_scale=0.01)[1], [0.0, 25.0])
    with pytest.raises(ValueError, match="depth_scale"):
        decode_depth(tmp_path / "d.png", "png")
    with pytest.raises(ValueError, match="unknown depth_format"):
        decode_depth(tmp_path / "d.png", "bogus")


# ------------------------------------------------------------------ dataset loaders, on generated folders


def test_nyu_sync_folder_scan(tmp_path):
    stored = write_nyu_sync_folder(tmp_path / "nyu_raw_sync3", hole_fraction=0.3)
    ds = check_nyu_sync_scan(tmp_path / "nyu_raw_sync3", tmp_path, image_size=(64, 48), valid=(0.65, 0.75))
    np.testing.assert_array_equal(np.asarray(ds[2]["depth"]), stored[100])


def check_nyu_sync_scan(root: Path, tmp_path: Path, image_size, valid) -> Dataset:
    ds = load_depth_dataset("nyu_sync", root, cache_dir=str(tmp_path / "sync-cache"))
    assert isinstance(ds, Dataset) and len(ds) == 3 and ds.skipped_invalid == 0
    assert set(ds.column_names) == {"image", "depth", "intrinsics", "scene"}
    raw = raw_png(root / "depth" / "sync_depth_00050.png")
    row = ds[1]
    depth = np.asarray(row["depth"])
    assert depth.dtype == np.float32 and row["image"].size == image_size
    np.testing.assert_array_equal(depth, (raw / 1000.0).astype(np.float32))  # stored losslessly
    assert valid[0] <= (depth > 0).mean() <= valid[1] and depth[depth > 0].min() > 0.3 and depth.max() < 10.0
    np.testing.assert_allclose(row["intrinsics"], NYU_INTRINSICS, rtol=1e-6)
    return ds


def test_nyu_sync_bts_file_list(tmp_path):
    stored = write_nyu_sync_folder(tmp_path / "sync", indices=(0, 50), scene="basement_0001a")
    write_nyu_sync_folder(tmp_path / "sync", indices=(7,), scene="office_0003", seed=1)  # not in the list
    write_bts_file_list(tmp_path / "list.txt", "basement_0001a", [50])
    ds = load_depth_dataset("nyu_sync", tmp_path / "sync", file_list=tmp_path / "list.txt", cache_dir=str(tmp_path))
    assert len(ds) == 1 and ds[0]["scene"] == "basement_0001a"
    np.testing.assert_array_equal(np.asarray(ds[0]["depth"]), stored[50])
    scanned = load_depth_dataset("nyu_sync", tmp_path / "sync", cache_dir=str(tmp_path / "scan"))
    assert sorted(scanned["scene"]) == ["basement_0001a", "basement_0001a", "office_0003"]
    (tmp_path / "bad.txt").write_text("/basement_0001a/rgb_00000.jpg None 518.8579\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: expected 'rgb_path depth_path \[focal\]'"):
        load_depth_dataset("nyu_sync", tmp_path / "sync", file_list=tmp_path / "bad.txt")


def test_nyu_test10_csv_dense_metres(tmp_path):
    images, depths = write_nyu_test_folder(tmp_path / "nyu", num=3, height=48, width=64)
    ds = check_nyu_test_csv(tmp_path / "nyu", tmp_path, num=3, shape=(48, 64))
    np.testing.assert_array_equal(np.asarray(ds[2]["image"]), images[2])  # PNG colour is lossless
    np.testing.assert_array_equal(np.stack([np.asarray(d) for d in ds["depth"]]), np.stack(depths))


def check_nyu_test_csv(root: Path, tmp_path: Path, num: int, shape) -> Dataset:
    ds = load_depth_dataset("csv", root / "nyu2_mini_test.csv", depth_format="nyu", cache_dir=str(tmp_path / "csv"))
    assert len(ds) == num
    depths = np.stack([np.asarray(d) for d in ds["depth"]])
    assert depths.shape == (num, *shape) and np.all(depths > 0)  # dense in-painted labelled depth
    assert depths.min() > 0.4 and depths.max() <= 10.0
    raw = raw_png(root / "depth_1.png")
    assert depths[1, 20, 30] == np.float32(raw[20, 30] / 1000.0)
    return ds


def test_ibims1_npy_metres_and_streaming(tmp_path):
    stored = write_ibims_folder(tmp_path / "ibims1")
    ds = check_ibims_npy(tmp_path / "ibims1", tmp_path)
    np.testing.assert_array_equal(np.asarray(ds[1]["depth"]), stored["ibims_range_40"])
    assert (np.asarray(ds[0]["depth"]) == 0).mean() == pytest.approx(1 / 16)  # the removed block
    assert ds[0]["image"].size == (64, 48)


def check_ibims_npy(root: Path, tmp_path: Path, valid_range=None) -> Dataset:
    ds = load_depth_dataset("ibims1", root, cache_dir=str(tmp_path / "ibims"))
    assert len(ds) == 2
    raw = np.load(root / "depth" / "ibims_hole_60.npy")
    assert raw.shape[:2] == (1, 1) and raw.dtype == np.float32
    depth = np.asarray(ds[0]["depth"])
    np.testing.assert_array_equal(depth, raw[0, 0])
    if valid_range is not None:
        valid = depth[depth > 0]
        assert valid.min() == pytest.approx(valid_range[0], abs=0.01)
        assert valid.max() == pytest.approx(valid_range[1], abs=0.01)
    it = load_depth_dataset("ibims1", root, streaming=True)  # streaming gives the same rows
    assert isinstance(it, IterableDataset)
    np.testing.assert_array_equal(np.asarray(next(iter(it))["depth"]), raw[0, 0])
    return ds


def test_nyu_labelled_mat_and_splits(tmp_path):
    images, depths, scenes = write_nyu_labelled_mat(tmp_path / "labeled.mat", num=4, height=6, width=8)
    assert (tmp_path / "labeled.mat").read_bytes()[:10] == b"MATLAB 7.3"
    write_nyu_splits(tmp_path / "splits.mat", train=[1, 3], test=[2, 4])
    kwargs = {"splits_path": tmp_path / "splits.mat", "cache_dir": str(tmp_path / "c")}
    test = load_depth_dataset("nyu_mat", tmp_path / "labeled.mat", split="test", **kwargs)
    assert len(test) == 2
    np.testing.assert_array_equal(np.asarray(test[0]["image"]), images[1])  # 1-based index 2
    np.testing.assert_array_equal(np.asarray(test[1]["depth"]), depths[3])
    assert [r["scene"] for r in test] == [scenes[1], scenes[3]]
    np.testing.assert_allclose(test[0]["intrinsics"], NYU_INTRINSICS, rtol=1e-6)
    train = load_depth_dataset("nyu_mat", tmp_path / "labeled.mat", split="train", **kwargs)
    assert len(train) == 2 and np.asarray(train[1]["image"]).shape == (6, 8, 3)
    assert len(load_depth_dataset("nyu_mat", tmp_path / "labeled.mat", split="all", cache_dir=str(tmp_path))) == 4
    write_nyu_splits(tmp_path / "far.mat", train=[1], test=[5])
    with pytest.raises(ValueError, match=r"far\.mat: testNdxs indexes beyond the 4 samples"):
        load_depth_dataset("nyu_mat", tmp_path / "labeled.mat", split="test", splits_path=tmp_path / "far.mat")


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


# ------------------------------------------------------------------ the same checks on the real samples


def test_real_samples_decode_and_load(shared_data, tmp_path):
    """Extra check: every decoder and depth loader above on the real files of ../shared/data."""
    from .test_data_folder import check_real_folders_read_like_their_dedicated_loaders

    (tmp_path / "folders").mkdir()
    check_real_folders_read_like_their_dedicated_loaders(shared_data, tmp_path / "folders")
    formats = shared_data / "rgbd_formats"
    check_tum_depth(formats / "TUM_depth.png")
    check_sunrgbd_depth(formats / "SUN_depth.png")
    check_nyu_disparity(formats / "NYU_depth.pgm", (480, 640), value_range=(839, 2047))
    nyu = decode_depth(formats / "NYU_depth.pgm", "nyu_disparity")
    assert nyu[nyu > 0].min() > 1.3

    kitti = check_kitti_folder(
        shared_data / "kitti3", (707.0493, 707.0493, 604.0814, 180.5066), tmp_path, num=3, first="0000000005.png"
    )
    assert 0.15 < (np.asarray(kitti[0]["depth"]) > 0).mean() < 0.25

    check_nyu_sync_scan(shared_data / "nyu_raw_sync3", tmp_path, image_size=(640, 480), valid=(0.67, 0.76))
    scene = tmp_path / "sync" / "basement_0001a"  # one real frame in the BTS tree, chosen by the real BTS list
    scene.mkdir(parents=True)
    for name in ("rgb/rgb_00050.jpg", "depth/sync_depth_00050.png"):
        shutil.copyfile(shared_data / "nyu_raw_sync3" / name, scene / Path(name).name)
    lines = (shared_data / "nyu_splits" / "nyudepthv2_train_files_with_gt.txt").read_text().splitlines()
    assert len(lines) == 24231
    chosen = [line for line in lines if line.startswith("/basement_0001a/rgb_00050.jpg ")]
    (tmp_path / "list.txt").write_text("\n".join(chosen) + "\n")
    ds = load_depth_dataset("nyu_sync", tmp_path / "sync", file_list=tmp_path / "list.txt", cache_dir=str(tmp_path))
    assert len(ds) == 1 and ds[0]["scene"] == "basement_0001a"

    ds = check_nyu_test_csv(shared_data / "nyu_test10", tmp_path, num=10, shape=(480, 640))
    assert max(np.asarray(d).max() for d in ds["depth"]) > 9.0

    check_ibims_npy(shared_data / "ibims1_partial2", tmp_path, valid_range=(1.28, 4.19))

    # the official splits.mat: 795 train / 654 test, disjoint 1-based indices into the 1449 labelled images
    splits = scipy.io.loadmat(str(shared_data / "nyu_splits" / "splits.mat"))
    train, test = (np.asarray(splits[k]).ravel() for k in ("trainNdxs", "testNdxs"))
    assert (len(train), len(test)) == (795, 654) and not set(train) & set(test)
    assert min(train.min(), test.min()) == 1 and max(train.max(), test.max()) == 1449

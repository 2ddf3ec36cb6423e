"""The one RGB-D folder reader (mesa_hf.data.folder) behind `folder:PATH` training data and `mesa-hf evaluate --data`,
and the one meaning of depth_scale (metres per stored unit), on folders the tests generate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mesa_hf.data import NYU_INTRINSICS, build_transform, decode_depth, load_depth_dataset
from mesa_hf.data.folder import FolderLayoutError, find_rgbd_pairs
from mesa_hf.data.specs import FolderOptions, load_dataset_spec
from mesa_hf.evaluation.folder import open_depth_dataset

H, W = 6, 8


def write_rgb(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def write_png16(path, value, pnginfo=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    units = np.full((H, W), value, dtype=np.uint16)
    units[0, 0] = 0  # a pixel without measurement
    Image.fromarray(units).save(path, pnginfo=pnginfo)


def depth_of(row) -> np.ndarray:
    return np.asarray(row["depth"], dtype=np.float32)


def load_folder(root, tmp_path, **options):
    return load_dataset_spec(
        f"folder:{root}", "depth", cache_dir=str(tmp_path / "cache"), folder=FolderOptions(**options)
    )


# ------------------------------------------------------------------ layouts recognised without options


def test_image_n_depth_n_side_by_side_in_natural_order(tmp_path):
    root = tmp_path / "set"
    for i in (0, 2, 10):
        write_rgb(root / f"image_{i}.png", seed=i)
        write_png16(root / f"depth_{i}.png", 1000 + i)
    found = find_rgbd_pairs(root)
    assert found.layout == "image_N + depth_N"
    assert [(a.name, b.name) for a, b in found.pairs] == [
        ("image_0.png", "depth_0.png"),
        ("image_2.png", "depth_2.png"),
        ("image_10.png", "depth_10.png"),
    ]
    ds = load_folder(root, tmp_path)
    assert len(ds) == 3 and ds[0]["intrinsics"] is None and ds[0]["scene"] == "set"
    assert [depth_of(r)[1, 1] for r in ds] == [np.float32(1.0), np.float32(1.002), np.float32(1.010)]
    assert depth_of(ds[0])[0, 0] == 0.0


def test_rgb_and_depth_subfolders_with_matching_names_npy_metres_nested_scenes(tmp_path):
    root = tmp_path / "ibims_like"
    for scene in ("kitchen", "office"):
        for i in range(2):
            write_rgb(root / scene / "rgb" / f"{scene}_{i}.jpg", seed=i)
            (root / scene / "depth").mkdir(exist_ok=True)
            np.save(root / scene / "depth" / f"{scene}_{i}.npy", np.full((1, 1, H, W), 2.5 + i, np.float32))
    found = find_rgbd_pairs(root)
    assert found.layout == "rgb/ + depth/" and len(found) == 4
    assert found.scenes == ["kitchen", "kitchen", "office", "office"]
    ds = load_folder(root, tmp_path)
    assert [depth_of(r)[3, 3] for r in ds] == [2.5, 3.5, 2.5, 3.5]  # float .npy is metres
    assert ds[2]["scene"] == "office"


@pytest.mark.parametrize(
    ("image_name", "depth_name"),
    [
        ("0001_rgb.png", "0001_depth.png"),
        ("frame-000000.color.png", "frame-000000.depth.png"),
        ("RGB_7.jpg", "depth_7.png"),
    ],
)
def test_image_word_and_depth_word_pairs(tmp_path, image_name, depth_name):
    write_rgb(tmp_path / "d" / image_name)
    write_png16(tmp_path / "d" / depth_name, 1500)
    write_rgb(tmp_path / "d" / "preview.png")  # no image word: not part of the dataset
    found = find_rgbd_pairs(tmp_path / "d")
    assert [(a.name, b.name) for a, b in found.pairs] == [(image_name, depth_name)]


def test_bts_sync_folder_gets_the_nyu_camera(tmp_path):
    root = tmp_path / "sync"
    for i in (0, 50):
        write_rgb(root / "rgb" / f"rgb_{i:05d}.jpg", seed=i)
        write_png16(root / "depth" / f"sync_depth_{i:05d}.png", 3000)
    ds = load_folder(root, tmp_path)
    assert find_rgbd_pairs(root).layout == "nyu_sync" and len(ds) == 2
    np.testing.assert_allclose(ds[0]["intrinsics"], NYU_INTRINSICS, rtol=1e-6)
    assert depth_of(ds[1])[2, 2] == np.float32(3.0)


def test_csv_file_list_inside_the_folder(tmp_path):
    root = tmp_path / "csv_set"
    for i in range(3):
        write_rgb(root / "a" / f"{i}.png", seed=i)
        write_png16(root / "b" / f"{i}.png", 1000 * (i + 1))
    (root / "list.csv").write_text("image_path,depth_path\na/2.png,b/2.png\na/0.png,b/0.png\n")
    found = find_rgbd_pairs(root)
    assert found.layout == "csv list.csv" and [p[0].name for p in found.pairs] == ["2.png", "0.png"]  # CSV order
    assert [depth_of(r)[1, 1] for r in load_folder(root, tmp_path)] == [3.0, 1.0]


# ------------------------------------------------------------------ explicit patterns


def test_explicit_patterns_pair_in_sorted_order(tmp_path):
    root = tmp_path / "custom"
    for i in range(2):
        write_rgb(root / "left" / f"{i:04d}.jpg", seed=i)
        write_png16(root / "gt" / f"{i:04d}_z.png", 5000 * (i + 1))
    with pytest.raises(FolderLayoutError, match="no RGB-D layout recognised"):
        find_rgbd_pairs(root)
    ds = load_folder(root, tmp_path, depth_scale=1 / 5000, image_pattern="left/*.jpg", depth_pattern="gt/*.png")
    assert [depth_of(r)[1, 1] for r in ds] == [1.0, 2.0]  # TUM-style 1/5000 m per unit
    with pytest.raises(FolderLayoutError, match="give both image_pattern and depth_pattern"):
        find_rgbd_pairs(root, image_pattern="left/*.jpg")
    with pytest.raises(FolderLayoutError, match=r"2 images match 'left/\*\.jpg' but 1 depth files match"):
        find_rgbd_pairs(root, "left/*.jpg", "gt/0000_z.png")
    with pytest.raises(FolderLayoutError, match=r"empty dataset, no file matches image_pattern 'right/\*\.jpg'"):
        find_rgbd_pairs(root, "right/*.jpg", "gt/*.png")


def test_patterns_only_apply_to_folder_specs(tmp_path):
    with pytest.raises(ValueError, match="image_pattern/depth_pattern apply to folders; use 'folder:"):
        load_dataset_spec("csv:x.csv", "depth", folder=FolderOptions(image_pattern="*.jpg", depth_pattern="*.png"))


# ------------------------------------------------------------------ depth_scale: metres per stored unit


def test_depth_scale_is_metres_per_stored_unit(tmp_path):
    write_png16(tmp_path / "d.png", 1234)
    assert decode_depth(tmp_path / "d.png", depth_scale=0.001)[1, 1] == np.float32(1.234)
    assert decode_depth(tmp_path / "d.png", "png", depth_scale=0.001)[1, 1] == np.float32(1.234)
    assert decode_depth(tmp_path / "d.png")[1, 1] == np.float32(1.234)  # 16-bit default: millimetres
    assert decode_depth(tmp_path / "d.png", depth_scale=1 / 256)[1, 1] == np.float32(1234 / 256)
    assert decode_depth(tmp_path / "d.png", "kitti")[1, 1] == np.float32(1234 / 256)
    with pytest.raises(
        ValueError, match=r"depth_scale is metres per stored unit .* 1000 looks like units per metre: pass 0\.001"
    ):
        decode_depth(tmp_path / "d.png", depth_scale=1000)
    with pytest.raises(ValueError, match="positive number of metres per stored unit"):
        decode_depth(tmp_path / "d.png", depth_scale=0)
    np.save(tmp_path / "m.npy", np.full((H, W), 1.5, np.float32))
    assert decode_depth(tmp_path / "m.npy")[0, 0] == np.float32(1.5)  # float: metres
    assert decode_depth(tmp_path / "m.npy", depth_scale=0.01)[0, 0] == np.float32(0.015)  # e.g. centimetres
    np.save(tmp_path / "i.npy", np.full((H, W), 2500, np.uint16))
    assert decode_depth(tmp_path / "i.npy")[0, 0] == np.float32(2.5)  # integer: millimetres


def test_png_text_chunk_scale_and_conflict(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("depth_scale", "0.0001 m per unit")  # as mesa-hf predict writes it, here a finer unit
    write_png16(tmp_path / "d.png", 12340, pnginfo=info)
    assert decode_depth(tmp_path / "d.png")[1, 1] == np.float32(1.234)
    assert decode_depth(tmp_path / "d.png", depth_scale=0.0001)[1, 1] == np.float32(1.234)
    with pytest.raises(ValueError, match=r"the file says 0\.0001 m per unit .* depth_scale=0\.001 was given"):
        decode_depth(tmp_path / "d.png", depth_scale=0.001)


def test_eight_bit_image_is_not_a_depth_map(tmp_path):
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(tmp_path / "d.png")
    with pytest.raises(ValueError, match=r"8-bit or colour image \(PIL mode 'L'\) is not a depth map"):
        decode_depth(tmp_path / "d.png")


def test_folder_unit_check_and_millimetre_default_note(tmp_path, caplog):
    root = tmp_path / "set"
    write_rgb(root / "image_0.png")
    write_png16(root / "depth_0.png", 2000)
    with pytest.raises(ValueError, match=r"depth_0\.png: median valid depth is 2000\.0 m .*\(0\.001 for mm\)"):
        load_folder(root, tmp_path, depth_scale=1.0)  # millimetres read as metres
    ds = load_folder(root, tmp_path)
    assert depth_of(ds[0])[1, 1] == np.float32(2.0)
    assert "read as millimetres (0.001 m per unit); pass depth_scale" in caplog.text


# ------------------------------------------------------------------ errors that say what was found


def test_unrecognised_folder_lists_what_was_found_and_the_flags(tmp_path):
    root = tmp_path / "odd"
    for i in range(3):
        write_rgb(root / "left" / f"{i}.jpg")
    (root / "gt").mkdir()
    for i in range(2):
        (root / "gt" / f"{i}.exr").write_bytes(b"x")
    with pytest.raises(FolderLayoutError) as info:
        load_folder(root, tmp_path)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert "found 5 files: 3 .jpg (e.g. left/0.jpg, left/1.jpg); 2 .exr (e.g. gt/0.exr, gt/1.exr)" in message
    assert "sub-folders gt/, left/" in message
    assert "--image_pattern GLOB --depth_pattern GLOB" in message and "--depth_scale" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FolderLayoutError, match="found no files"):
        find_rgbd_pairs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        find_rgbd_pairs(tmp_path / "missing")


def test_images_without_a_depth_partner_are_named(tmp_path):
    root = tmp_path / "set"
    for i in range(3):
        write_rgb(root / "rgb" / f"{i}.png")
    for i in range(2):
        write_png16(root / "depth" / f"{i}.png", 1000)
    with pytest.raises(
        FolderLayoutError, match=r"1 of 3 images have no depth file of the same name \(first: .*rgb/2\.png\)"
    ):
        find_rgbd_pairs(root)


# ------------------------------------------------------------------ one reader for training and evaluation


def nyu_like_folder(tmp_path):
    root = tmp_path / "nyu_like"
    for i in range(3):
        write_rgb(root / f"image_{i}.png", seed=i)
        write_png16(root / f"depth_{i}.png", 1234 + 500 * i)
    return root


def test_evaluation_and_training_read_the_same_depth(tmp_path):
    root = nyu_like_folder(tmp_path)
    evaluation = open_depth_dataset(root)
    training = load_folder(root, tmp_path, depth_scale=0.001)
    assert len(evaluation) == len(training) == 3
    transform = build_transform("eval")
    for i in range(3):
        expected = np.full((H, W), np.float32((1234 + 500 * i) / 1000), np.float32)
        expected[0, 0] = 0.0
        assert isinstance(evaluation[i]["depth"], np.ndarray)
        np.testing.assert_array_equal(evaluation[i]["depth"], expected)
        np.testing.assert_array_equal(depth_of(training[i]), expected)
        labels = transform({k: [v] for k, v in training[i].items()})["labels"][0]  # what the training loop sees
        np.testing.assert_array_equal(labels.numpy(), expected)
        np.testing.assert_array_equal(np.asarray(evaluation[i]["image"]), np.asarray(training[i]["image"]))


def test_nyuv2_spec_on_an_image_n_folder_reads_it_with_the_nyu_camera(tmp_path):
    root = nyu_like_folder(tmp_path)
    ds = load_dataset_spec(f"nyuv2:{root}", "depth", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 3 and depth_of(ds[0])[1, 1] == np.float32(1.234)
    np.testing.assert_allclose(ds[0]["intrinsics"], NYU_INTRINSICS, rtol=1e-6)


def test_saved_dataset_folder_is_read_as_is(tmp_path):
    root = nyu_like_folder(tmp_path)
    load_folder(root, tmp_path).save_to_disk(str(tmp_path / "saved"))
    again = load_dataset_spec(f"folder:{tmp_path / 'saved'}", "depth")
    assert len(again) == 3 and depth_of(again[2])[1, 1] == np.float32(2.234)
    assert load_depth_dataset("folder", tmp_path / "saved")[2]["scene"] == "nyu_like"


def test_mesa_hf_evaluate_on_a_generated_folder(tmp_path, capsys):
    from mesa_hf import MeSaImageProcessor
    from mesa_hf.cli import main

    from .helpers import tiny_depth_model

    tiny_depth_model(seed=0).save_pretrained(tmp_path / "ckpt")
    MeSaImageProcessor().save_pretrained(tmp_path / "ckpt")
    root = nyu_like_folder(tmp_path)
    args = ["evaluate", str(tmp_path / "ckpt"), "--protocol", "ibims1", "--no-progress", "--batch-size", "3"]
    assert main([*args, "--data", str(root), "--output-json", str(tmp_path / "a.json")]) == 0
    assert (
        main([*args, "--data", f"folder:{root}", "--depth_scale", "0.001", "--output-json", str(tmp_path / "b.json")])
        == 0
    )
    first, second = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert first["num_images"] == 3 and first["metrics"] == second["metrics"]
    assert main([*args, "--data", str(tmp_path / "ckpt")]) == 2  # a model folder is not an RGB-D folder
    assert "no RGB-D layout recognised; found" in capsys.readouterr().err


# ------------------------------------------------------------------ the real samples


def check_real_folders_read_like_their_dedicated_loaders(shared_data, tmp_path):
    """Real-data check (called from tests/test_data_loaders.py's real-sample test)."""
    cache = {"cache_dir": str(tmp_path / "c")}
    nyu = shared_data / "nyu_test10"  # image_N + depth_N (and a CSV listing them), millimetres
    by_folder = load_dataset_spec(f"folder:{nyu}", "depth", folder=FolderOptions(depth_scale=0.001), **cache)
    by_csv = load_depth_dataset("csv", nyu / "nyu2_mini_test.csv", depth_format="nyu", **cache)
    assert len(by_folder) == 10
    for i in (0, 9):
        np.testing.assert_array_equal(depth_of(by_folder[i]), depth_of(by_csv[i]))
    sync = shared_data / "nyu_raw_sync3"  # BTS sync rgb/ + depth/
    np.testing.assert_array_equal(
        depth_of(load_depth_dataset("folder", sync, **cache)[1]),
        depth_of(load_depth_dataset("nyu_sync", sync, **cache)[1]),
    )
    ibims = shared_data / "ibims1_partial2"  # rgb/*.png + depth/*.npy metres
    raw = np.load(ibims / "depth" / "ibims_hole_60.npy")[0, 0]
    np.testing.assert_array_equal(open_depth_dataset(ibims)[0]["depth"], raw)

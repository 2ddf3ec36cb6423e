"""The `mesa-hf` command line (evaluate, cka, predict) and the inference helpers behind it, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mesa_hf import MeSaForDepthEstimation, MeSaImageProcessor
from mesa_hf.cli import SUBCOMMANDS, build_parser, main
from mesa_hf.data.synthetic import synthetic_view
from mesa_hf.evaluation import METRIC_NAMES
from mesa_hf.evaluation.inference import DepthPredictor
from mesa_hf.evaluation.io import load_depth_png16, read_ply

from .helpers import check_pipeline_on_photo, tiny_depth_model
from .rgbd_fixtures import render_views, write_ibims_folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-mesa"
    tiny_depth_model(seed=0).save_pretrained(path)
    MeSaImageProcessor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> Path:
    """Three small generated indoor photos (96x128 renders of the synthetic world) in a folder."""
    folder = tmp_path_factory.mktemp("images")
    for i, view in enumerate(render_views(3, 96, 128, seed=5)):
        Image.fromarray(view.image).save(folder / f"frame_{i:03d}.png")
    return folder


def test_subcommand_registry_is_the_extension_point():
    assert {"evaluate", "cka", "predict"} <= set(SUBCOMMANDS)
    parser = build_parser()
    args = parser.parse_args(["predict", "x.png", "--checkpoint", "c", "--output-dir", "o", "--dtype", "bf16"])
    assert args.dtype == "bf16" and args._run is SUBCOMMANDS["predict"].run


def test_predict_folder_writes_four_outputs(checkpoint, small_images, tmp_path, capsys):
    out = tmp_path / "pred"
    status = main(
        ["predict", str(small_images), "--checkpoint", str(checkpoint), "--output-dir", str(out)]
        + ["--input-size", "96", "128", "--batch-size", "2", "--no-progress"]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "assumed: NYUv2 Kinect scaled to 128x96" in printed and "0.001 m per unit" in printed
    for i in range(3):
        name = f"frame_{i:03d}"
        depth = np.load(out / f"{name}_depth.npy")
        assert depth.dtype == np.float32 and depth.shape == (96, 128) and np.isfinite(depth).all()
        assert depth.std() > 1e-3  # the perturbed model predicts structure, not a constant
        png = load_depth_png16(out / f"{name}_depth.png")  # scale read from the PNG text chunk
        with Image.open(out / f"{name}_depth.png") as im:
            assert im.mode == "I;16" and im.text["depth_scale"] == "0.001 m per unit"
        assert np.abs(png - depth).max() <= 0.0005 + 1e-6  # within 1 mm (rounding to the nearest mm)
        with Image.open(out / f"{name}_depth_color.png") as im:
            assert im.mode == "RGB" and im.size == (128, 96)
        header, vertices = read_ply(out / f"{name}.ply")
        assert header[:2] == ["ply", "format binary_little_endian 1.0"]
        record = next(r for r in json.loads((out / "predictions.json").read_text()) if r["name"] == name)
        kept = 96 * 128 - record["flying_pixels_dropped"]  # flying pixels at depth jumps are not written
        assert f"element vertex {kept}" in header and header[-1] == "end_header"
        assert [line.split()[-1] for line in header if line.startswith("property")] == [
            "x",
            "y",
            "z",
            "red",
            "green",
            "blue",
        ]
        assert len(vertices) == kept
        assert np.isin(vertices["z"], depth).all()
    records = json.loads((out / "predictions.json").read_text())
    assert [r["name"] for r in records] == ["frame_000", "frame_001", "frame_002"]


def test_predict_given_intrinsics_gif_frames_and_video_error(checkpoint, small_images, tmp_path, capsys):
    frames = [Image.open(p).convert("RGB") for p in sorted(small_images.iterdir())[:2]]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "pred"
    status = main(
        ["predict", str(gif), "--checkpoint", str(checkpoint), "--output-dir", str(out), "--no-progress"]
        + ["--input-size", "96", "128", "--intrinsics", "100", "110", "60", "50", "--outputs", "npy", "ply"]
        + ["--edge-threshold", "0"]  # every pixel, so that row * 128 + col indexes the vertices
    )
    assert status == 0
    assert "fx=100.000 fy=110.000 cx=60.000 cy=50.000 (given)" in capsys.readouterr().out
    depth = np.load(out / "clip_00001_depth.npy")
    _, vertices = read_ply(out / "clip_00001.ply")
    row, col = 7, 90  # back-projection of one pixel: x = (u - cx) z / fx, y = (v - cy) z / fy
    vertex = vertices[row * 128 + col]
    z = depth[row, col]
    np.testing.assert_allclose([vertex["x"], vertex["y"], vertex["z"]], [(col - 60) * z / 100, (row - 50) * z / 110, z])
    assert not (out / "clip_00000_depth.png").exists()  # only the requested outputs
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    status = main(["predict", str(tmp_path / "clip.mp4"), "--checkpoint", str(checkpoint), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "clip.mp4: not a readable video file" in err and len(err.strip().splitlines()) == 1


def test_evaluate_nyu_folder_prints_table_and_tta_changes_numbers(checkpoint, nyu_test_folder, tmp_path, capsys):
    data, depths = nyu_test_folder  # generated image_i.png + depth_i.png (mm) + nyu2_mini_test.csv at 480x640
    plain = check_evaluate_nyu_folder(checkpoint, data, 3, tmp_path, capsys)
    # the metrics are those of the model's prediction against the stored depth, computed by hand
    from mesa_hf.evaluation import compute_depth_metrics
    from mesa_hf.evaluation.inference import resize_depth_bilinear

    processor = MeSaImageProcessor()
    model = MeSaForDepthEstimation.from_pretrained(checkpoint).eval()
    images = [Image.open(data / f"image_{i}.png").convert("RGB") for i in range(3)]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    predicted = resize_depth_bilinear(DepthPredictor(model, device="cpu")(pixel_values), (480, 640))
    for i, per_image in enumerate(plain["per_image"]):
        expected = compute_depth_metrics(predicted[i], torch.from_numpy(depths[i]), max_depth=10.0, crop="eigen")
        assert per_image["rmse"] == pytest.approx(float(expected["rmse"]), rel=1e-4)


def check_evaluate_nyu_folder(
    checkpoint: Path, data: Path, num: int, tmp_path: Path, capsys, tta_changes=("abs_rel", "rmse")
) -> dict:
    """`mesa-hf evaluate` on an nyu_test10-style folder: the table, TTA, the CSV path and the model card."""
    plain_json = tmp_path / "plain.json"
    args = ["evaluate", str(checkpoint), "--data", str(data), "--batch-size", "5", "--no-progress"]
    assert main([*args, "--output-json", str(plain_json)]) == 0
    printed = capsys.readouterr().out
    assert "protocol=nyuv2 | crop=eigen (rows 45:471, cols 41:601 of 480x640) | valid=0.001<gt<10 m" in printed
    assert "TTA=none" in printed and f"images={num}" in printed
    header = next(line for line in printed.splitlines() if "abs_rel" in line)
    assert header.split() == list(METRIC_NAMES)
    plain = json.loads(plain_json.read_text())
    assert plain["num_images"] == num and len(plain["per_image"]) == num
    assert 0 < plain["metrics"]["rmse"] < 10 and 0 <= plain["metrics"]["d1"] <= 1

    tta_json = tmp_path / "tta.json"
    args = ["evaluate", str(checkpoint), "--data", str(data), "--flip", "--sliding-window", "--max-samples", "2"]
    args += ["--batch-size", "2", "--no-progress", "--output-json", str(tta_json), "--write-model-card"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "TTA=flip + sliding-window (2 x 480 px wide, overlap averaged)" in printed and "images=2" in printed
    tta = json.loads(tta_json.read_text())
    plain_first_two = {k: np.mean([m[k] for m in plain["per_image"][:2]]) for k in METRIC_NAMES}
    for key in tta_changes:
        assert tta["metrics"][key] != pytest.approx(plain_first_two[key], rel=1e-4), key

    # the same images through mesa_hf.data's CSV loader (depth PNG in mm) score the same as the folder reader
    csv_json = tmp_path / "csv.json"
    args = ["evaluate", str(checkpoint), "--data", str(data / "nyu2_mini_test.csv"), "--data-format", "csv"]
    args += [
        "--depth-format",
        "png",
        "--depth-scale",
        "0.001",
        "--max-samples",
        "2",
        "--no-progress",
        "--output-json",
        str(csv_json),
    ]
    assert main(args) == 0
    via_data_layer = json.loads(csv_json.read_text())
    for key in METRIC_NAMES:
        assert via_data_layer["metrics"][key] == pytest.approx(plain_first_two[key], rel=1e-5), key

    from huggingface_hub import ModelCard

    card = ModelCard.load(checkpoint / "README.md")
    results = card.data.eval_results
    assert len(results) == len(METRIC_NAMES)
    rmse = next(r for r in results if r.metric_type == "rmse")
    assert rmse.dataset_type == "nyu_depth_v2" and rmse.metric_config == "nyuv2+tta:flip+sw480"
    assert rmse.metric_value == pytest.approx(tta["metrics"]["rmse"], abs=1e-6)
    return plain


def test_cka_writes_csv_and_png(tmp_path, capsys):
    images = tmp_path / "rooms"  # eight photos of eight generated rooms: varied enough for CKA to see the change
    images.mkdir()
    for i in range(8):
        Image.fromarray(synthetic_view(5, i, 64, 96, views_per_room=1)[0]).save(images / f"room_{i}.png")
    reference = tiny_depth_model(seed=0)
    changed = tiny_depth_model(seed=0)
    with torch.no_grad():  # "fine-tune" only the last stage: earlier layers keep CKA 1
        for name, parameter in changed.backbone.encoder.layers[-1].named_parameters():
            parameter.add_(2.0 * torch.randn_like(parameter))
            if "layernorm" in name and name.endswith("weight"):  # res-post-norm: the branch scale is the norm's
                parameter.mul_(10.0)
    paths = []
    for name, model in (("pretrained", reference), ("finetuned", changed)):
        model.save_pretrained(tmp_path / name)
        paths.append(str(tmp_path / name))
    out = tmp_path / "cka"
    status = main(
        ["cka", *paths, "--images", str(images), str(images), "--output-dir", str(out)]
        + ["--input-size", "64", "96", "--batch-size", "6", "--no-progress"]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "pretrained vs finetuned: embed=1.000" in printed
    lines = (out / "cka.csv").read_text().splitlines()
    assert lines[0] == "pair,layer_a,layer_b,index_a,index_b,cka" and len(lines) == 1 + 6 * 6
    diagonal = {
        row.split(",")[1]: float(row.split(",")[-1]) for row in lines[1:] if row.split(",")[1] == row.split(",")[2]
    }
    assert diagonal["embed"] == pytest.approx(1.0) and diagonal["s3.b1"] == pytest.approx(1.0)
    assert diagonal["s4.b0"] < 0.97  # the changed stage
    assert (out / "cka.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bf16_and_fp16_outputs_are_finite_and_close_to_fp32(small_images):
    model = tiny_depth_model(seed=0)
    processor = MeSaImageProcessor()
    images = [Image.open(p).convert("RGB") for p in sorted(small_images.iterdir())]
    pixel_values = processor(images=images, size={"height": 96, "width": 128}, return_tensors="pt")["pixel_values"]
    reference = DepthPredictor(model, device="cpu", dtype="fp32")(pixel_values)
    for dtype, tolerance in (("bf16", 0.05), ("fp16", 0.01)):
        out = DepthPredictor(model, device="cpu", dtype=dtype)(pixel_values)
        relative = (out - reference).abs() / reference
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), dtype
        assert relative.max() < tolerance, (dtype, float(relative.max()))
        assert relative.mean() < tolerance / 5, (dtype, float(relative.mean()))


def test_cli_reports_bad_input(tmp_path, capsys):
    status = main(["evaluate", str(tmp_path / "missing"), "--data", str(tmp_path)])
    assert status == 2 and "checkpoint folder not found" in capsys.readouterr().err


def test_evaluate_model_on_ibims_folder_list_and_datasets_with_mask(tmp_path):
    """evaluate_model == predictor + compute_depth_metrics by hand; list of dicts and datasets.Dataset agree."""
    write_ibims_folder(tmp_path / "ibims1", height=48, width=64)  # rgb/*.png + depth/*.npy (1, 1, 48, 64) metres
    check_evaluate_ibims_folder(tmp_path / "ibims1", tmp_path)


def check_evaluate_ibims_folder(root: Path, tmp_path: Path) -> None:
    import datasets

    from mesa_hf.evaluation import compute_depth_metrics, get_protocol
    from mesa_hf.evaluation.evaluator import evaluate_model
    from mesa_hf.evaluation.folder import open_depth_dataset
    from mesa_hf.evaluation.inference import resize_depth_bilinear

    folder = open_depth_dataset(root)  # rgb/*.png + depth/*.npy (1, 1, H, W) metres
    assert len(folder) == 2
    samples = [folder[i] for i in range(2)]
    height, width = samples[0]["depth"].shape
    assert (samples[0]["depth"] == 0).any() and np.load(sorted((root / "depth").glob("*.npy"))[0]).shape == (
        1,
        1,
        height,
        width,
    )
    for sample in samples:  # an iBims-style extra mask: drop the left half
        sample["mask"] = np.zeros((height, width), dtype=bool)
        sample["mask"][:, width // 2 :] = True
    model = tiny_depth_model(seed=0)
    processor = MeSaImageProcessor()
    result = evaluate_model(model, samples, "ibims1", image_processor=processor, batch_size=2, progress=False)
    assert result.num_images == 2 and "protocol=ibims1 | crop=none" in result.format_table()

    predictor = DepthPredictor(model, device="cpu")
    pixel_values = processor(images=[s["image"] for s in samples], return_tensors="pt")["pixel_values"]
    depth = resize_depth_bilinear(predictor(pixel_values), (height, width))
    by_hand = [
        compute_depth_metrics(depth[i], s["depth"], max_depth=10.0, crop=None, valid_mask=s["mask"])
        for i, s in enumerate(samples)
    ]
    for key in METRIC_NAMES:
        assert result.metrics[key] == pytest.approx(np.mean([m[key] for m in by_hand]), rel=1e-5), key
    without_mask = evaluate_model(model, samples, get_protocol("ibims1", use_dataset_mask=False), progress=False)
    assert without_mask.metrics["rmse"] != pytest.approx(result.metrics["rmse"], rel=1e-4)

    table = datasets.Dataset.from_list([{"image": s["image"], "depth": s["depth"], "mask": s["mask"]} for s in samples])
    from_datasets = evaluate_model(model, table, "ibims1", image_processor=processor, batch_size=2, progress=False)
    assert from_datasets.metrics == pytest.approx(result.metrics, rel=1e-5)
    table.save_to_disk(str(tmp_path / "saved"))
    reloaded = open_depth_dataset(tmp_path / "saved")
    assert isinstance(reloaded[0]["depth"], np.ndarray) and reloaded[0]["depth"].shape == (height, width)
    from_disk = evaluate_model(model, reloaded, "ibims1", image_processor=processor, batch_size=2, progress=False)
    assert from_disk.metrics == pytest.approx(result.metrics, rel=1e-5)


def test_real_photos_through_cli_and_pipeline(checkpoint, shared_data, tmp_path, capsys):
    """Extra check on real photos (../shared/data): evaluate on nyu_test10, iBims-1 with a mask, the pipeline."""
    changes = ("abs_rel", "rmse", "silog")
    check_evaluate_nyu_folder(checkpoint, shared_data / "nyu_test10", 10, tmp_path, capsys, tta_changes=changes)
    check_evaluate_ibims_folder(shared_data / "ibims1_partial2", tmp_path)
    check_pipeline_on_photo(checkpoint, shared_data / "nyu_test10" / "image_0.png")
    # the other real-photo and real-video checks of the suite, in this one real-data test
    from .test_onnx import check_onnx_runtime_matches_pytorch_on_real_photos
    from .test_precision import check_float16_depth_within_two_percent_on_a_real_photo
    from .test_video import (
        check_evaluate_protocol_video_on_hololens,
        check_predict_real_hololens_video_from_a_folder,
        check_temporal_alignment_error_of_real_ground_truth_is_small,
    )

    for height, width in ((480, 640), (384, 512)):
        (tmp_path / f"onnx{height}").mkdir()
        check_onnx_runtime_matches_pytorch_on_real_photos(shared_data, tmp_path / f"onnx{height}", height, width)
    for attention in ("sdpa", "eager"):
        check_float16_depth_within_two_percent_on_a_real_photo(
            tiny_depth_model(seed=0, window_attention=attention), shared_data
        )
    (tmp_path / "video").mkdir()
    check_predict_real_hololens_video_from_a_folder(checkpoint, shared_data, tmp_path / "video")
    check_evaluate_protocol_video_on_hololens(checkpoint, shared_data, capsys)
    check_temporal_alignment_error_of_real_ground_truth_is_small(shared_data)

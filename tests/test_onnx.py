"""ONNX export (`mesa-hf export onnx`), the traceable attention path, and torch-free ONNX Runtime inference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from mesa_hf import MeSaImageProcessor
from mesa_hf.attention_mesa import _window_plan, traceable_window_attention, window_plan_arrays
from mesa_hf.cli import main
from mesa_hf.data.synthetic import synthetic_view
from mesa_hf.onnx import (
    OnnxDepthEstimator,
    OnnxExportError,
    export_onnx,
    letterbox,
    quantize_int8,
    resize_bilinear,
)

from .helpers import tiny_depth_model

HEIGHT, WIDTH = 96, 128
TOLERANCE_M = 1e-4


def _photo(height: int, width: int, index: int = 0) -> np.ndarray:
    """A rendered indoor photo (H, W, 3) uint8."""
    return np.asarray(synthetic_view(3, index, height, width)[0], dtype=np.uint8)


def _checkpoint(folder: Path, height: int = HEIGHT, width: int = WIDTH) -> Path:
    model = tiny_depth_model()
    model.save_pretrained(folder)
    MeSaImageProcessor(size={"height": height, "width": width}).save_pretrained(folder)
    return folder


def onnxruntime_depth(model_path: Path, pixel_values: np.ndarray) -> np.ndarray:
    """(H, W) depth of one (3, H, W) input from the ONNX model file at `model_path` (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(["predicted_depth"], {"pixel_values": pixel_values[None]})[0][0]


def _torch_depth(model, pixel_values: np.ndarray, inner, size) -> np.ndarray:
    """PyTorch reference for one letterboxed image: forward, crop the image part, bilinear resize back."""
    with torch.inference_mode():
        depth = model(pixel_values=torch.from_numpy(pixel_values[None])).predicted_depth[0]
    depth = depth[: inner[0], : inner[1]]
    return F.interpolate(depth[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The test-preset model exported at 96x128 with a dynamic batch axis and static int8."""
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = _checkpoint(root / "checkpoint")
    record = export_onnx(
        checkpoint,
        root / "export",
        HEIGHT,
        WIDTH,
        dynamic_batch=True,
        quantize="int8",
        int8_mode="static",
        log=lambda _: None,
    )
    return checkpoint, root / "export", record


# ------------------------------------------------------------------------------------------------ traceable path


@pytest.mark.parametrize("size", [(96, 128), (100, 140)])
def test_traceable_attention_matches_fused_path(size):
    model = tiny_depth_model()
    pixel_values = torch.randn(2, 3, *size)
    with torch.no_grad():
        fused = model(pixel_values=pixel_values).predicted_depth
        with traceable_window_attention():
            traceable = model(pixel_values=pixel_values).predicted_depth
        again = model(pixel_values=pixel_values).predicted_depth  # the flag is off again after the context
    assert (fused - traceable).abs().max() < 1e-5
    assert torch.equal(fused, again)


@pytest.mark.parametrize("height,width,window,shift", [(24, 32, 6, 3), (12, 16, 7, 3), (6, 8, 6, 0), (3, 4, 4, 2)])
def test_window_plan_arrays_match_the_fused_plan(height, width, window, shift):
    arrays = window_plan_arrays(height, width, window, shift)
    plan = _window_plan(1, height, width, window, shift, "cpu")
    np.testing.assert_array_equal(arrays["gather"], plan["gather"].numpy())
    np.testing.assert_array_equal(arrays["scatter"], plan["scatter"].numpy())
    pad = plan["pad"].numpy() if plan["pad"] is not None else np.zeros(0, dtype=np.int64)
    np.testing.assert_array_equal(np.nonzero(~arrays["valid"])[0], pad)
    assert arrays["groups"] == plan["groups"] and arrays["group_ids"] == plan["group_ids"]
    # every token appears exactly once among the valid window positions
    assert sorted(arrays["gather"][arrays["valid"]].tolist()) == list(range(height * width))


# ------------------------------------------------------------------------------------------------ export


def test_export_writes_a_checked_model_with_its_processor_and_readme(exported):
    import onnx

    _, folder, record = exported
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "export_config.json",
        "model.onnx",
        "model_int8.onnx",
        "preprocessor_config.json",
    ]
    model = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in model.graph.input] == ["pixel_values"]
    assert [o.name for o in model.graph.output] == ["predicted_depth"]
    config = json.loads((folder / "export_config.json").read_text())
    assert config["height"] == HEIGHT and config["width"] == WIDTH and config["dynamic_batch"] is True
    assert config["max_abs_diff_m"] <= TOLERANCE_M and record["max_abs_diff_m"] == config["max_abs_diff_m"]
    assert MeSaImageProcessor.from_pretrained(folder).size == {"height": HEIGHT, "width": WIDTH}
    readme = (folder / "README.md").read_text()
    for text in ("pixel_values", "predicted_depth", "(batch, 3, 96, 128)", "metres", "opset 17", "torchscript"):
        assert text in readme


def test_onnx_runtime_matches_pytorch_on_photos_of_different_sizes(exported):
    _, folder, _ = exported
    model = tiny_depth_model()
    estimator = OnnxDepthEstimator(folder)
    for index, size in enumerate([(96, 128), (192, 256), (120, 200), (150, 100)]):
        photo = _photo(*size, index=index)
        pixel_values, inner = letterbox(photo, HEIGHT, WIDTH)
        reference = _torch_depth(model, pixel_values, inner, size)
        depth = estimator(Image.fromarray(photo))
        assert depth.shape == size and depth.dtype == np.float32
        assert np.abs(depth - reference).max() <= TOLERANCE_M, size
        assert depth.std() > 0.01  # a real prediction, not a constant


def test_photo_at_export_aspect_matches_the_pytorch_pipeline(exported):
    """A 4:3 photo fills the export input: the estimator equals processor -> model -> post-processing."""
    _, folder, _ = exported
    model = tiny_depth_model()
    processor = MeSaImageProcessor(size={"height": HEIGHT, "width": WIDTH})
    photo = _photo(192, 256, index=5)
    inputs = processor(images=Image.fromarray(photo), return_tensors="pt")
    assert tuple(inputs.pixel_values.shape[-2:]) == (HEIGHT, WIDTH)
    np.testing.assert_allclose(letterbox(photo, HEIGHT, WIDTH)[0], inputs.pixel_values[0].numpy(), atol=1e-5)
    with torch.inference_mode():
        outputs = model(**inputs)
    reference = processor.post_process_depth_estimation(outputs, target_sizes=[(192, 256)])[0]["predicted_depth"]
    depth = OnnxDepthEstimator(folder)(photo)
    assert np.abs(depth - reference.numpy()).max() <= TOLERANCE_M


def test_dynamic_batch_gives_the_single_image_results(exported):
    _, folder, _ = exported
    estimator = OnnxDepthEstimator(folder)
    photos = [_photo(HEIGHT, WIDTH, index=i) for i in range(3)]
    batched = estimator(photos)
    for photo, depth in zip(photos, batched):
        np.testing.assert_allclose(estimator(photo), depth, atol=1e-5)


def test_int8_export_is_static_qdq_and_within_2_percent_of_fp32(exported):
    import onnx

    _, folder, record = exported
    quantization = record["int8_quantization"]
    assert quantization["mode"] == "static" and quantization["format"] == "QDQ (static)"
    assert quantization["calibration"] == "MinMax" and quantization["calibration_images"] == 2
    assert quantization["activation_type"] == "QUInt8" and quantization["weight_type"] == "QInt8 per channel"
    assert quantization["quantized_matmuls"] > 0 and quantization["fp32_matmuls"] > 0
    assert json.loads((folder / "export_config.json").read_text())["int8_quantization"] == quantization
    assert "static QDQ" in (folder / "README.md").read_text()
    ops = [node.op_type for node in onnx.load(str(folder / "model_int8.onnx")).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    assert 0.0 < record["int8_mean_relative_difference"] < 0.02
    photo = _photo(HEIGHT, WIDTH, index=2)  # not one of the calibration photos
    fp32 = OnnxDepthEstimator(folder)(photo)
    int8 = OnnxDepthEstimator(folder, model_file="model_int8.onnx")(photo)
    assert int8.shape == fp32.shape == (HEIGHT, WIDTH)
    assert (folder / "model_int8.onnx").stat().st_size < 0.6 * (folder / "model.onnx").stat().st_size
    assert 0.0 < np.mean(np.abs(int8 - fp32) / fp32) < 0.02


def test_dynamic_int8_is_the_default_and_skips_the_position_bias_mlp(exported, tmp_path):
    import onnx

    _, folder, _ = exported
    record = quantize_int8(folder / "model.onnx", tmp_path / "dynamic.onnx")
    assert record["mode"] == "dynamic" and "calibration" not in record
    ops = [node.op_type for node in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node]
    assert "DynamicQuantizeLinear" in ops and "QuantizeLinear" not in ops
    assert record["quantized_matmuls"] == ops.count("MatMulInteger")
    for node in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node:  # constant inputs stay fp32 (folded at load)
        assert node.op_type != "MatMulInteger" or "continuous_position_bias_mlp" not in node.name
    pixel_values, _ = letterbox(_photo(HEIGHT, WIDTH, index=2), HEIGHT, WIDTH)
    fp32 = onnxruntime_depth(folder / "model.onnx", pixel_values)
    dynamic = onnxruntime_depth(tmp_path / "dynamic.onnx", pixel_values)
    assert 0.0 < np.mean(np.abs(dynamic - fp32) / fp32) < 0.02


def test_cli_int8_mode_static_is_recorded(tmp_path):
    checkpoint = _checkpoint(tmp_path / "checkpoint")
    photo = tmp_path / "photo.png"
    Image.fromarray(_photo(HEIGHT, WIDTH, index=4)).save(photo)
    args = ["export", "onnx", str(checkpoint), str(tmp_path / "out"), "--height", str(HEIGHT), "--width", str(WIDTH)]
    assert main([*args, "--quantize", "int8", "--int8-mode", "static", "--images", str(photo)]) == 0
    config = json.loads((tmp_path / "out" / "export_config.json").read_text())
    assert config["int8_quantization"]["mode"] == "static" and config["int8_quantization"]["calibration_images"] == 1
    assert 0.0 < config["int8_mean_relative_difference"] < 0.02
    depth = OnnxDepthEstimator(tmp_path / "out", model_file="model_int8.onnx")(_photo(HEIGHT, WIDTH, index=5))
    assert depth.shape == (HEIGHT, WIDTH) and np.isfinite(depth).all() and depth.min() > 0


@pytest.mark.parametrize(
    "calibration,mode,message",
    [
        ([], "static", "needs calibration images: got none"),
        (None, "static", "needs calibration images: got none"),
        ([np.zeros((1, 3))], "static", "calibration image 0: expected (3, H, W) pixel values"),
        ([np.zeros((3, 96, 128), np.float32), np.zeros((3, 64, 128), np.float32)], "static", "differs from"),
        ([np.full((3, 96, 128), np.nan, np.float32)], "static", "not all finite"),
        ([np.zeros((3, 96, 128), np.float32)], "weekly", "int8 mode must be one of static, dynamic"),
    ],
)
def test_bad_int8_calibration_is_a_one_line_error(exported, tmp_path, calibration, mode, message):
    _, folder, _ = exported
    with pytest.raises(OnnxExportError) as raised:
        quantize_int8(folder / "model.onnx", tmp_path / "int8.onnx", calibration=calibration, mode=mode)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "int8.onnx").exists()


def test_resize_bilinear_matches_torch():
    depth = np.random.default_rng(0).uniform(0.5, 10, size=(13, 17)).astype(np.float32)
    for size in [(40, 50), (7, 9), (13, 40)]:
        reference = F.interpolate(torch.from_numpy(depth)[None, None], size=size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(resize_bilinear(depth, *size), reference[0, 0].numpy(), atol=1e-5)


def test_letterbox_keeps_the_aspect_ratio_and_replicates_the_border():
    photo = _photo(50, 200)
    pixel_values, inner = letterbox(photo, HEIGHT, WIDTH)
    assert pixel_values.shape == (3, HEIGHT, WIDTH) and inner == (32, 128)
    np.testing.assert_array_equal(pixel_values[:, 32:, :], np.repeat(pixel_values[:, 31:32, :], HEIGHT - 32, axis=1))


@pytest.mark.parametrize(
    "case,message",
    [
        ("size", "multiple of 32"),
        ("non_empty", "already exists and is not empty"),
        ("missing", "checkpoint not found"),
    ],
)
def test_export_errors_are_one_line_and_write_nothing(tmp_path, case, message, capsys):
    checkpoint = tmp_path / "missing" if case == "missing" else _checkpoint(tmp_path / "checkpoint")
    output = tmp_path / "out"
    if case == "non_empty":
        output.mkdir()
        (output / "keep.txt").write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = ["export", "onnx", str(checkpoint), str(output)] + (["--height", "100"] if case == "size" else [])
    with pytest.raises(SystemExit) as raised:
        main(args)
    text = str(raised.value)
    assert message in text and "\n" not in text
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    with pytest.raises(OnnxExportError):
        export_onnx(checkpoint, output, height=100 if case == "size" else 96, width=128, log=lambda _: None)


def test_estimator_runs_without_torch(exported, tmp_path):
    _, folder, _ = exported
    photo_path = tmp_path / "photo.png"
    Image.fromarray(_photo(120, 160, index=4)).save(photo_path)
    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from mesa_hf.onnx import OnnxDepthEstimator\n"
        f"depth = OnnxDepthEstimator({str(folder)!r})({str(photo_path)!r})\n"
        f"np.save({str(tmp_path / 'depth.npy')!r}, depth)\n"
        "assert sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    np.testing.assert_allclose(np.load(tmp_path / "depth.npy"), OnnxDepthEstimator(folder)(photo_path), atol=1e-6)


def test_predict_backend_onnx_matches_pytorch_pngs(exported, tmp_path):
    checkpoint, folder, _ = exported
    images = tmp_path / "images"
    images.mkdir()
    for index, size in enumerate([(96, 128), (192, 256), (240, 320)]):
        Image.fromarray(_photo(*size, index=index)).save(images / f"photo{index}.png")
    for backend, model_dir in (("pytorch", checkpoint), ("onnx", folder)):
        args = ["predict", str(images), "--checkpoint", str(model_dir), "--output-dir", str(tmp_path / backend)]
        assert main([*args, "--backend", backend, "--outputs", "png16", "npy", "--no-progress"]) == 0
    for index in range(3):
        pngs = [np.asarray(Image.open(tmp_path / b / f"photo{index}_depth.png")) for b in ("pytorch", "onnx")]
        assert pngs[0].shape == pngs[1].shape
        assert np.abs(pngs[0].astype(np.int32) - pngs[1].astype(np.int32)).max() <= 1  # 1 unit = 1 mm
    records = json.loads((tmp_path / "onnx" / "predictions.json").read_text())
    assert [r["name"] for r in records] == ["photo0", "photo1", "photo2"]


# ------------------------------------------------------------------------------------------------ real photos


def check_onnx_runtime_matches_pytorch_on_real_photos(shared_data: Path, tmp_path: Path, height: int, width: int):
    """Real-data check (called from tests/test_cli.py's real-photo test): ORT within 1e-4 m of PyTorch on photos of
    three sizes (NYUv2, iBims-1, KITTI) through the letterboxing pre-processing."""
    photos = [
        shared_data / "nyu_test10" / "image_0.png",
        sorted((shared_data / "ibims1_partial2" / "rgb").iterdir())[0],
        sorted((shared_data / "kitti3" / "rgb").iterdir())[0],
    ]
    checkpoint = _checkpoint(tmp_path / "checkpoint", height, width)
    export_onnx(checkpoint, tmp_path / "export", height, width, images=photos, log=lambda _: None)
    model = tiny_depth_model()
    estimator = OnnxDepthEstimator(tmp_path / "export")
    sizes = set()
    for path in photos:
        photo = np.asarray(Image.open(path).convert("RGB"))
        pixel_values, inner = letterbox(photo, height, width)
        reference = _torch_depth(model, pixel_values, inner, photo.shape[:2])
        depth = estimator(path)
        sizes.add(photo.shape[:2])
        assert np.abs(depth - reference).max() <= TOLERANCE_M, path
    assert len(sizes) >= 2


# ------------------------------------------------------------------------------------------------ pipeline speed


def test_fused_attention_caches_survive_alternating_no_grad_and_inference_mode():
    """transformers' pipelines run under no_grad; callers around them often use inference_mode: no rebuilds."""
    model = tiny_depth_model()
    attention = model.backbone.encoder.layers[0].blocks[0].attention.self
    pixel_values = torch.randn(1, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        first = model(pixel_values=pixel_values).predicted_depth
    masks = attention._mesa_cache["group_masks"][1]
    with torch.inference_mode():
        inference = model(pixel_values=pixel_values).predicted_depth
    with torch.no_grad():
        again = model(pixel_values=pixel_values).predicted_depth
    assert attention._mesa_cache["group_masks"][1] is masks  # not rebuilt after the inference-mode call
    assert "group_masks/inference" in attention._mesa_cache
    assert torch.equal(first, again) and torch.equal(first, inference)

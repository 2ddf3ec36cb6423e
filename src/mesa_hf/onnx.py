"""ONNX export of MeSa depth models and ONNX Runtime inference without torch.

Two halves:

* export (needs torch and the ``onnx`` extra): `export_onnx(checkpoint, output_dir, height, width)` writes
  ``model.onnx`` at a fixed input size (plus ``model_int8.onnx`` with ``quantize="int8"``), the image processor
  config, ``export_config.json`` and a README, after checking ONNX Runtime against PyTorch; `mesa-hf export onnx`.
* inference (numpy, PIL and onnxruntime only; importing this module never imports torch):
  `OnnxDepthEstimator(export_dir)(images)` -> depth maps in metres at each image's size.

The exported graph takes ``pixel_values`` (B, 3, H, W) float32 (ImageNet-normalised RGB) at the export size and
returns ``predicted_depth`` (B, H, W) float32 metres. Images of other sizes are letterboxed by the estimator: resized
(bicubic, aspect ratio kept) to fit inside H x W, replicate-padded right/bottom (the padding the PyTorch model does
inside to reach a multiple of 32), and the prediction is cropped and resized back (bilinear, half-pixel centres).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

ONNX_INPUT_NAME = "pixel_values"
ONNX_OUTPUT_NAME = "predicted_depth"
MODEL_FILE = "model.onnx"
INT8_MODEL_FILE = "model_int8.onnx"
EXPORT_CONFIG_FILE = "export_config.json"
PROCESSOR_CONFIG_FILE = "preprocessor_config.json"
DEFAULT_TOLERANCE_M = 1e-4
STRIDE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OnnxExportError(ValueError):
    """Bad export arguments or a failed verification; the message is one line."""


# ------------------------------------------------------------------------------------------------ torch-free helpers


def _rgb_array(image: Any, index: int = 0) -> np.ndarray:
    """A path, PIL image or (H, W[, C]) uint8/float array -> (H, W, 3) uint8 RGB (EXIF rotation applied)."""
    source = f"image {index}"
    if isinstance(image, (str, os.PathLike)):
        source = f"image file {os.fspath(image)!r}"
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{source} does not exist")
        with Image.open(image) as opened:
            opened.load()
            image = opened.copy()
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            image = np.asarray(image)
        else:
            return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{source}: expected a file path, PIL image or numpy array, got {type(image).__name__}")
    array = image
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or array.size == 0:
        raise ValueError(f"{source}: expected an (H, W) or (H, W, C) image with C in 1, 3, 4; got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"{source}: float images must hold finite values in [0, 1]")
        array = np.round(array * 255).astype(np.uint8)
    elif array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max() > 255):
        array = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = array.astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = np.round(array[..., :3].astype(np.float32) * (array[..., 3:] / 255.0)).astype(np.uint8)
    return np.ascontiguousarray(array)


def fit_size(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int]:
    """The (h, w) an image of `height` x `width` takes when scaled, aspect ratio kept, to fit inside the target."""
    scale = min(target_height / height, target_width / width)
    return (
        min(target_height, max(1, round(height * scale))),
        min(target_width, max(1, round(width * scale))),
    )


def letterbox(
    image: np.ndarray,
    height: int,
    width: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[np.ndarray, tuple[int, int]]:
    """(H0, W0, 3) uint8 RGB -> ((3, height, width) float32 normalised pixels, (h, w) of the image inside).

    Bicubic resize as `MeSaImageProcessor` (PIL on uint8), x / 255, (x - mean) / std, then edge-replicate padding on
    the right and bottom. An image that already has the export aspect ratio fills the whole input.
    """
    inner = fit_size(image.shape[0], image.shape[1], height, width)
    if inner != image.shape[:2]:
        image = np.asarray(Image.fromarray(image).resize((inner[1], inner[0]), Image.BICUBIC))
    scale = np.float32(1 / 255)
    mean = np.asarray(mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(std, dtype=np.float32)
    pixels = (image.astype(np.float32) * scale - mean) * inv_std  # (h, w, 3)
    pixels = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    pad_h, pad_w = height - inner[0], width - inner[1]
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    return pixels, inner


def _linear_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of bilinear resampling along one axis (half-pixel centres, clamped at the borders)."""
    position = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    position = np.clip(position, 0.0, None)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def resize_bilinear(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) float32 -> (height, width), the same numbers as torch's bilinear `interpolate(align_corners=False)`."""
    if depth.shape == (height, width):
        return depth.astype(np.float32, copy=False)
    y0, y1, wy = _linear_weights(depth.shape[0], height)
    x0, x1, wx = _linear_weights(depth.shape[1], width)
    rows = depth[y0] * (1 - wy)[:, None] + depth[y1] * wy[:, None]
    return (rows[:, x0] * (1 - wx) + rows[:, x1] * wx).astype(np.float32)


def read_export_config(export_dir: str | os.PathLike) -> dict:
    """The export's `export_config.json` (size, names, opset, exporter, preprocessing)."""
    path = Path(export_dir) / EXPORT_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{Path(export_dir)} is not an ONNX export of mesa-hf: no {EXPORT_CONFIG_FILE}")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ ONNX Runtime


class OnnxDepthEstimator:
    """Depth in metres from an `export_onnx` folder with ONNX Runtime (numpy, PIL, onnxruntime; no torch).

    Args:
        export_dir: the folder `mesa-hf export onnx` wrote.
        model_file: `"model.onnx"` (fp32) or `"model_int8.onnx"` (int8, when exported with it).
        threads: ONNX Runtime intra-op threads (0 = its default).
        providers: ONNX Runtime execution providers (default: CPU).

    `estimator(images)` takes one image or a list (paths, PIL images, (H, W[, C]) arrays; any size) and returns one
    (H, W) float32 depth map in metres per image, at that image's size.
    """

    def __init__(
        self,
        export_dir: str | os.PathLike,
        model_file: str = MODEL_FILE,
        threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        import onnxruntime

        self.export_dir = Path(export_dir)
        self.config = read_export_config(self.export_dir)
        path = self.export_dir / model_file
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self.height, self.width = int(self.config["height"]), int(self.config["width"])
        self.dynamic_batch = bool(self.config.get("dynamic_batch", False))
        self.mean = tuple(self.config.get("image_mean", IMAGENET_MEAN))
        self.std = tuple(self.config.get("image_std", IMAGENET_STD))
        self.session_options = onnxruntime.SessionOptions()
        self.session_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            self.session_options.intra_op_num_threads = threads
            self.session_options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), self.session_options, providers=list(providers))

    def describe_session(self) -> str:
        """The session options that matter for speed, as one line."""
        options = self.session_options
        return (
            f"providers={self.session.get_providers()} graph_optimization={options.graph_optimization_level.name} "
            f"intra_op_threads={options.intra_op_num_threads} inter_op_threads={options.inter_op_num_threads} "
            f"execution_mode={options.execution_mode.name}"
        )

    def preprocess(self, images: Any) -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[int, int]]]:
        """Images -> (pixel_values (B, 3, H, W) float32, inner (h, w) per image, original (H0, W0) per image)."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("no images given: the list is empty")
        pixels, inner, sizes = [], [], []
        for index, image in enumerate(images):
            array = _rgb_array(image, index)
            values, box = letterbox(array, self.height, self.width, self.mean, self.std)
            pixels.append(values)
            inner.append(box)
            sizes.append(array.shape[:2])
        return np.stack(pixels), inner, sizes

    def forward(self, pixel_values: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 at the export size -> (B, H, W) float32 metres (one run per image without a
        dynamic batch axis)."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        expected = (3, self.height, self.width)
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != expected:
            raise ValueError(f"pixel_values must be (batch, {', '.join(map(str, expected))}), got {pixel_values.shape}")
        if self.dynamic_batch:
            return self.session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: pixel_values})[0]
        return np.concatenate(
            [self.session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: one[None]})[0] for one in pixel_values]
        )

    def __call__(self, images: Any) -> list[np.ndarray] | np.ndarray:
        single = not isinstance(images, (list, tuple))
        pixel_values, inner, sizes = self.preprocess(images)
        depth = self.forward(pixel_values)
        maps = [resize_bilinear(d[: box[0], : box[1]], *size) for d, box, size in zip(depth, inner, sizes, strict=True)]
        return maps[0] if single else maps


def predict_to_files_onnx(
    export_dir: str | os.PathLike,
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    batch_size: int = 4,
    intrinsics: Any = None,
    outputs: Sequence[str] | None = None,
    cmap: str = "magma_r",
    progress: bool = True,
    model_file: str = MODEL_FILE,
) -> list[dict[str, Any]]:
    """`mesa_hf.evaluation.predict.predict_to_files` with ONNX Runtime: the same files and records."""
    from tqdm.auto import tqdm

    from mesa_hf.evaluation.io import nyu_intrinsics
    from mesa_hf.evaluation.predict import OUTPUT_KINDS, collect_inputs, prediction_record, write_depth_outputs

    outputs = OUTPUT_KINDS if outputs is None else outputs
    estimator = OnnxDepthEstimator(export_dir, model_file=model_file)
    frames = collect_inputs(sources)
    records = []
    with tqdm(total=len(frames), desc="predict (onnx)", disable=not progress) as bar:
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            images = [frame.load() for frame in chunk]
            for frame, image, depth in zip(chunk, images, estimator(images), strict=True):
                frame_intrinsics = intrinsics or nyu_intrinsics(*depth.shape)
                written = write_depth_outputs(output_dir, frame.name, depth, image, frame_intrinsics, outputs, cmap)
                source = str(frame.path) + (f"#{frame.frame}" if frame.frame is not None else "")
                records.append(prediction_record(frame.name, source, depth, frame_intrinsics, written))
                bar.update(1)
    return records


# ------------------------------------------------------------------------------------------------ export (torch)


def generated_photos(count: int = 2, height: int = 480, width: int = 640, seed: int = 7) -> list[np.ndarray]:
    """Rendered indoor photos (the synthetic RGB-D world), (H, W, 3) uint8: real-looking verification inputs."""
    from mesa_hf.data.synthetic import synthetic_view

    return [np.asarray(synthetic_view(seed, index, height, width)[0], dtype=np.uint8) for index in range(count)]


def _collect_images(images: Sequence[Any] | None) -> list[np.ndarray]:
    if not images:
        return generated_photos()
    arrays = []
    for item in images:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            files = sorted(p for p in Path(item).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            files = [p for p in files if "depth" not in p.stem.lower()]  # RGB-D folders hold depth PNGs too
            if not files:
                raise OnnxExportError(f"no RGB images (.png/.jpg) in folder {item}")
            arrays += [_rgb_array(p) for p in files]
        else:
            arrays.append(_rgb_array(item))
    return arrays


def _check_export_arguments(checkpoint: Path, output_dir: Path, height: int, width: int, opset: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if value < STRIDE or value % STRIDE:
            raise OnnxExportError(f"--{name} must be a positive multiple of {STRIDE}, got {value}")
    if opset < 14:
        raise OnnxExportError(f"--opset must be at least 14 (scaled-dot-product attention), got {opset}")
    if not checkpoint.is_dir() or not (checkpoint / "config.json").is_file():
        raise OnnxExportError(f"checkpoint not found: {checkpoint} is not a folder with a config.json")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise OnnxExportError(f"output folder {output_dir} already exists and is not empty")


def _torch_depth(model: Any, pixel_values: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(pixel_values)).predicted_depth.float().numpy()


def mean_relative_difference(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """mean(|other - reference| / reference) over all pixels of all maps (depth > 0)."""
    ratios = [np.abs(o - r) / np.maximum(r, 1e-6) for r, o in zip(reference, other, strict=True)]
    return float(np.concatenate([x.ravel() for x in ratios]).mean())


README_TEMPLATE = """# MeSa depth model, ONNX export

Exported by `mesa-hf export onnx` from `{checkpoint}` with {exporter}, opset {opset}.

| file | what |
|---|---|
| `model.onnx` | fp32 graph |
{int8_row}| `preprocessor_config.json` | `MeSaImageProcessor` at the export size |
| `export_config.json` | size, tensor names, opset, preprocessing |

- input `{input_name}`: float32 `({batch}, 3, {height}, {width})`, RGB scaled to [0, 1] then normalised with mean
  {mean} and std {std} (ImageNet). The size is fixed; other images are letterboxed: resized (bicubic, aspect ratio
  kept) to fit inside {height}x{width} and edge-replicate padded right/bottom.
- output `{output_name}`: float32 `({batch}, {height}, {width})`, depth in **metres** (crop the padded part, then resize
  bilinearly to the image size).
- batch axis: {batch_text}.
- verified at export: ONNX checker, then ONNX Runtime vs PyTorch on {num_images} images:
  max |difference| {max_diff:.2e} m (tolerance {tolerance:g} m).
{int8_text}
```python
from mesa_hf.onnx import OnnxDepthEstimator  # needs numpy, pillow, onnxruntime; not torch

depth = OnnxDepthEstimator("{folder}")("photo.jpg")  # (H, W) float32 metres at the photo's size
```
"""


INT8_MODES = ("static", "dynamic")
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile"}
INT8_ACTIVATION_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
PERCENTILE = 99.999


def _matmul_roles(model_path: str | os.PathLike) -> dict[str, list[str]]:
    """The MatMul/Gemm node names of the graph by role.

    ``weighted``: a constant weight and an input that depends on the image (what int8 pays for); ``constant``: every
    input constant (Swin-V2's continuous position bias MLP, which ONNX Runtime folds at load as long as it stays
    fp32); ``activation``: activation x activation (the attention's q k^T and attn v).
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    constants = {tensor.name for tensor in graph.initializer}
    constants |= {output for node in graph.node if node.op_type == "Constant" for output in node.output}
    live = {value.name for value in graph.input} - constants
    roles: dict[str, list[str]] = {"weighted": [], "constant": [], "activation": []}
    for node in graph.node:  # ONNX graphs are topologically sorted
        depends = any(name in live for name in node.input if name)
        if depends:
            live.update(node.output)
        if node.op_type in ("MatMul", "Gemm"):
            if not depends:
                roles["constant"].append(node.name)
            elif any(name in constants for name in node.input[:2]):
                roles["weighted"].append(node.name)
            else:
                roles["activation"].append(node.name)
    return roles


def calibration_reader(pixel_values: Sequence[np.ndarray], input_name: str = ONNX_INPUT_NAME) -> Any:
    """An ONNX Runtime `CalibrationDataReader` feeding each (3, H, W) or (1, 3, H, W) float32 array once."""
    from onnxruntime.quantization import CalibrationDataReader

    batches = [
        np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(1, *np.shape(x)[-3:])) for x in pixel_values
    ]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({input_name: batch} for batch in batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    return Reader()


def quantize_int8(
    model_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    calibration: Sequence[np.ndarray] | None = None,
    mode: str = "dynamic",
    per_channel: bool = True,
    method: str = "minmax",
    activation_type: str = "uint8",
) -> dict[str, Any]:
    """int8 quantisation of `model_path` into `int8_path` with ONNX Runtime's quantisation tools.

    Only the MatMul/Gemm nodes with a constant weight and an image-dependent input are quantised (int8 weights, per
    output channel when `per_channel`); the attention's activation x activation MatMuls (q k^T, attn v), the
    position-bias MLP (constant inputs, folded by ONNX Runtime at load only while fp32: quantised, it was recomputed
    on every call, which made the earlier int8 model slower than fp32) and the convolutions stay fp32 (measured: the
    convolutions in int8 cost accuracy for no speed on CPU; docs/export.md).

    * ``mode="dynamic"`` (default): `quantize_dynamic`, int8 weights, activations quantised on every call, no
      calibration (`calibration` is not used). Measured on a 2-core AVX2 CPU as fast as static and as accurate
      (more accurate than static calibrated on photos unlike the test photos).
    * ``mode="static"``: `quantize_static`, QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX
      Runtime fuses into QLinearMatMul), `activation_type` activations whose ranges come from running
      `calibration`, the (3, H, W) float32 pixel values of photos preprocessed as `OnnxDepthEstimator` does,
      through the graph (`method` ``"minmax"`` or ``"percentile"``). `quant_pre_process` runs first with shape
      inference only (its graph optimisation would fold the relative-position biases into large constants).

    Returns the record for `export_config.json`: mode, format, types, calibration, node counts.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in INT8_MODES:
        raise OnnxExportError(f"int8 mode must be one of {', '.join(INT8_MODES)}, got {mode!r}")
    if method not in CALIBRATION_METHODS:
        raise OnnxExportError(f"int8 calibration must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if activation_type not in INT8_ACTIVATION_TYPES:
        raise OnnxExportError(f"int8 activation type must be uint8 or int8, got {activation_type!r}")
    roles = _matmul_roles(model_path)
    fp32_nodes = roles["activation"] + roles["constant"]
    record: dict[str, Any] = {
        "mode": mode,
        "weight_type": "QInt8 per channel" if per_channel else "QInt8 per tensor",
        "quantized_matmuls": len(roles["weighted"]),
        "fp32_matmuls": len(fp32_nodes),
    }
    if mode == "dynamic":
        quantize_dynamic(
            str(model_path),
            str(int8_path),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=fp32_nodes,
        )
        return {**record, "format": "QOperator (dynamic)", "activation_type": "dynamic per call"}
    calibration = [] if calibration is None else list(calibration)
    if not calibration:
        raise OnnxExportError("static int8 quantisation needs calibration images: got none")
    expected = None
    for index, values in enumerate(calibration):
        shape = np.shape(values)
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[0] != 1) or shape[-3] != 3:
            raise OnnxExportError(f"calibration image {index}: expected (3, H, W) pixel values, got shape {shape}")
        if expected is not None and shape[-3:] != expected:
            raise OnnxExportError(f"calibration image {index}: shape {shape[-3:]} differs from {expected}")
        if not np.isfinite(values).all():
            raise OnnxExportError(f"calibration image {index}: pixel values are not all finite")
        expected = shape[-3:]
    extra = {"MatMulConstBOnly": True}
    if method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    int8_path = Path(int8_path)
    prepared = int8_path.with_name(int8_path.stem + ".shapes.onnx")
    try:
        quant_pre_process(str(model_path), str(prepared), skip_optimization=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            calibration_reader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=fp32_nodes,
            per_channel=per_channel,
            activation_type=getattr(QuantType, INT8_ACTIVATION_TYPES[activation_type]),
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
            extra_options=extra,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return {
        **record,
        "format": "QDQ (static)",
        "activation_type": INT8_ACTIVATION_TYPES[activation_type],
        "calibration": CALIBRATION_METHODS[method] + (f" {PERCENTILE}" if method == "percentile" else ""),
        "calibration_images": len(calibration),
    }


def _int8_summary(quantization: dict[str, Any]) -> str:
    """One phrase for logs and the README: how `model_int8.onnx` was quantised."""
    if quantization["mode"] == "dynamic":
        return f"dynamic, {quantization['weight_type']} MatMul/Gemm weights, activations quantised per call"
    return (
        f"static QDQ, {quantization['weight_type']} MatMul/Gemm weights, {quantization['activation_type']} "
        f"activations calibrated ({quantization['calibration']}) on {quantization['calibration_images']} images; "
        "attention and convolutions fp32"
    )


def export_onnx(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    height: int = 480,
    width: int = 640,
    opset: int = 17,
    dynamic_batch: bool = False,
    quantize: str | None = None,
    int8_mode: str = "dynamic",
    exporter: str = "auto",
    images: Sequence[Any] | None = None,
    tolerance: float = DEFAULT_TOLERANCE_M,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export a MeSa depth checkpoint to ONNX at a fixed (height, width) and verify it; see the module docstring.

    Args:
        checkpoint: a `MeSaForDepthEstimation` checkpoint folder.
        output_dir: a new (or empty) folder; written atomically (a temporary sibling renamed at the end).
        height, width: the input size, multiples of 32.
        opset: ONNX opset (>= 14; 17 by default).
        dynamic_batch: a symbolic batch axis (checked at batch 1 and 2).
        exporter: `"torchscript"`, `"dynamo"` or `"auto"`: the TorchScript exporter below opset 18 (the dynamo
            exporter writes opset 18 and cannot convert this graph down), dynamo from 18.
        quantize: `"int8"` adds `model_int8.onnx` (see `quantize_int8`).
        int8_mode: `"dynamic"` (`quantize_dynamic`, the default) or `"static"` (QDQ, calibrated on `images`).
        images: verification, int8 calibration and int8 accuracy photos (paths, folders, PIL or arrays); default:
            rendered photos.
        tolerance: largest allowed |ORT - PyTorch| depth difference in metres.

    Returns:
        the export record (also in `export_config.json`), with `max_abs_diff_m` and, for int8,
        `int8_mean_relative_difference`. Raises `OnnxExportError` (one line) and writes nothing on failure.
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    _check_export_arguments(checkpoint, output_dir, height, width, opset)
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise OnnxExportError(f"--exporter must be auto, torchscript or dynamo, got {exporter!r}")
    if exporter == "dynamo" and opset < 18:
        raise OnnxExportError(f"the dynamo exporter writes opset 18 or later, got --opset {opset}")
    if quantize not in (None, "int8"):
        raise OnnxExportError(f"--quantize must be int8, got {quantize!r}")
    if int8_mode not in INT8_MODES:
        raise OnnxExportError(f"--int8-mode must be one of {', '.join(INT8_MODES)}, got {int8_mode!r}")
    photos = _collect_images(images)

    import onnx
    import onnxruntime
    import torch

    from mesa_hf.attention_mesa import get_window_attention, set_window_attention, traceable_window_attention
    from mesa_hf.evaluation.inference import load_checkpoint
    from mesa_hf.hub import atomic_save_pretrained

    model, processor = load_checkpoint(checkpoint)
    model.eval()
    if get_window_attention(model) != "sdpa":
        set_window_attention(model, "sdpa")  # same parameters; the traceable path lives in the fused classes
    mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    trained_size = (processor.size.get("height"), processor.size.get("width"))
    if trained_size != (height, width):
        log(
            f"note: the checkpoint's image processor resizes to {trained_size[0]}x{trained_size[1]}; `mesa-hf predict "
            f"--backend pytorch --input-size {height} {width}` gives what this {height}x{width} export gives"
        )
    inputs = [letterbox(photo, height, width, mean, std) for photo in photos]
    pixel_values = np.stack([values for values, _ in inputs])

    class DepthOnly(torch.nn.Module):
        def __init__(self, depth_model):
            super().__init__()
            self.depth_model = depth_model

        def forward(self, pixel_values):
            return self.depth_model(pixel_values=pixel_values, return_dict=True).predicted_depth

    example = torch.from_numpy(pixel_values[:1])
    if exporter == "auto":
        exporter = "dynamo" if opset >= 18 else "torchscript"
    use_dynamo = exporter == "dynamo"
    exporter = f"torch.onnx.export(dynamo={use_dynamo}) ({exporter} exporter), torch {torch.__version__.split('+')[0]}"
    record: dict[str, Any] = {
        "height": height,
        "width": width,
        "opset": opset,
        "exporter": exporter,
        "input_name": ONNX_INPUT_NAME,
        "output_name": ONNX_OUTPUT_NAME,
        "dynamic_batch": dynamic_batch,
        "image_mean": list(mean),
        "image_std": list(std),
        "resize": "bicubic, aspect ratio kept, fit inside; edge-replicate padding right/bottom",
        "units": "metres",
        "checkpoint": str(checkpoint),
    }

    def write(folder: str) -> None:
        folder = Path(folder)
        model_path = folder / MODEL_FILE
        log(f"exporting {checkpoint} at {height}x{width}, opset {opset} ({exporter})")
        with traceable_window_attention(), torch.no_grad(), warnings.catch_warnings():
            # the trace turns shapes into constants on purpose (fixed export size): silence the tracer's notes
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*TorchScript.*", category=DeprecationWarning)
            # a copy: the TorchScript exporter's constant folding can alter the traced module's Conv/BatchNorm
            # tensors in place (seen with torch 2.13), which would corrupt the PyTorch reference below
            traced = DepthOnly(copy.deepcopy(model)).eval()
            if use_dynamo:
                program = torch.onnx.export(
                    traced,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[ONNX_INPUT_NAME],
                    output_names=[ONNX_OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None,
                    verbose=False,
                )
                program.save(str(model_path))
            else:
                axes = {ONNX_INPUT_NAME: {0: "batch"}, ONNX_OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(
                    traced,
                    (example,),
                    str(model_path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[ONNX_INPUT_NAME],
                    output_names=[ONNX_OUTPUT_NAME],
                    dynamic_axes=axes,
                )
        written_opset = max(o.version for o in onnx.load(str(model_path)).opset_import if o.domain in ("", "ai.onnx"))
        if written_opset != opset:
            raise OnnxExportError(f"the exporter wrote opset {written_opset}, not the requested {opset}")
        onnx.checker.check_model(str(model_path))
        session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        batches = [pixel_values[i : i + 1] for i in range(len(pixel_values))]
        if dynamic_batch and len(pixel_values) > 1:
            batches.append(pixel_values[:2])
        reference = [_torch_depth(model, batch) for batch in batches]
        exported = [session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: batch})[0] for batch in batches]
        max_diff = max(float(np.abs(r - e).max()) for r, e in zip(reference, exported, strict=True))
        record["max_abs_diff_m"] = max_diff
        record["verified_images"] = len(pixel_values)
        log(f"ONNX Runtime vs PyTorch on {len(pixel_values)} images: max |difference| {max_diff:.2e} m")
        if not max_diff <= tolerance:
            raise OnnxExportError(
                f"ONNX Runtime output differs from PyTorch by {max_diff:.3g} m (tolerance {tolerance:g} m)"
            )
        if quantize == "int8":
            int8_path = folder / INT8_MODEL_FILE
            record["int8_quantization"] = quantize_int8(
                model_path, int8_path, calibration=[values for values, _ in inputs], mode=int8_mode
            )
            int8_session = onnxruntime.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
            fp32 = [session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: b})[0] for b in batches[: len(pixel_values)]]
            int8 = [int8_session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: b})[0] for b in batches[: len(pixel_values)]]
            # compare where the image is (not the padding) so letterboxed photos count only their own pixels
            crops = [box for _, box in inputs]
            fp32 = [d[0, : b[0], : b[1]] for d, b in zip(fp32, crops, strict=True)]
            int8 = [d[0, : b[0], : b[1]] for d, b in zip(int8, crops, strict=True)]
            difference = mean_relative_difference(fp32, int8)
            record["int8_mean_relative_difference"] = difference
            record["int8_max_abs_diff_m"] = max(float(np.abs(a - b).max()) for a, b in zip(fp32, int8, strict=True))
            log(
                f"int8 ({_int8_summary(record['int8_quantization'])}) vs fp32 export on {len(fp32)} images: "
                f"mean relative difference {100 * difference:.2f} %, max |difference| "
                f"{record['int8_max_abs_diff_m']:.3f} m"
            )
        processor_copy = type(processor).from_dict(processor.to_dict())
        processor_copy.size = {"height": height, "width": width}
        processor_copy.save_pretrained(folder)
        (folder / EXPORT_CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
        int8_text = ""
        if "int8_mean_relative_difference" in record:
            int8_text = (
                f"- `model_int8.onnx`: mean relative depth difference to the fp32 export "
                f"{100 * record['int8_mean_relative_difference']:.2f} % on {record['verified_images']} images.\n"
            )
        (folder / "README.md").write_text(
            README_TEMPLATE.format(
                checkpoint=checkpoint,
                exporter=exporter,
                opset=opset,
                int8_row=f"| `model_int8.onnx` | int8: {_int8_summary(record['int8_quantization'])} |\n"
                if quantize
                else "",
                input_name=ONNX_INPUT_NAME,
                output_name=ONNX_OUTPUT_NAME,
                batch="batch" if dynamic_batch else 1,
                height=height,
                width=width,
                mean=list(mean),
                std=list(std),
                batch_text="dynamic (`batch`)"
                if dynamic_batch
                else "fixed at 1 (export with --dynamic-batch for more)",
                num_images=len(pixel_values),
                max_diff=max_diff,
                tolerance=tolerance,
                int8_text=int8_text,
                folder=output_dir.name,
            )
        )

    try:
        atomic_save_pretrained(write, output_dir)
    except OnnxExportError:
        raise
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OnnxExportError(f"ONNX export failed: {type(error).__name__}: {message}") from error
    log(f"wrote {output_dir} ({', '.join(sorted(p.name for p in output_dir.iterdir()))})")
    return record


# ------------------------------------------------------------------------------------------------ command line


def add_export_arguments(parser: Any) -> None:
    """Arguments of `mesa-hf export onnx CHECKPOINT OUTPUT_DIR` (the `onnx` subparser of `mesa-hf export`)."""
    parser.add_argument("checkpoint", type=Path, help="MeSa depth checkpoint folder")
    parser.add_argument("output_dir", type=Path, help="new (or empty) output folder")
    parser.add_argument("--height", type=int, default=480, help="input height, a multiple of 32")
    parser.add_argument("--width", type=int, default=640, help="input width, a multiple of 32")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--dynamic-batch", action="store_true", help="symbolic batch axis (default: batch 1)")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="also write model_int8.onnx")
    parser.add_argument(
        "--int8-mode",
        choices=INT8_MODES,
        default="dynamic",
        help="int8 quantisation: dynamic (default) or static QDQ calibrated on --images",
    )
    parser.add_argument(
        "--exporter", choices=["auto", "torchscript", "dynamo"], default="auto", help="torch.onnx exporter"
    )
    parser.add_argument(
        "--images",
        nargs="+",
        default=None,
        help="photos or folders for the parity check and the int8 accuracy (default: rendered photos)",
    )
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_M, help="max |ORT - PyTorch| in metres")


def run_export(args: Any) -> int:
    try:
        export_onnx(
            args.checkpoint,
            args.output_dir,
            height=args.height,
            width=args.width,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
            quantize=args.quantize,
            int8_mode=args.int8_mode,
            exporter=args.exporter,
            images=args.images,
            tolerance=args.tolerance,
        )
    except (OnnxExportError, FileNotFoundError) as error:
        raise SystemExit(f"mesa-hf export: error: {error}") from None
    return 0

"""`mesa-hf export web`: a static folder that runs a MeSa depth model in the browser (onnxruntime-web, no server).

`export_web(checkpoint, output_dir, height, width, precision, ort_dir)` writes::

    index.html  app.js  web_config.json   the page, its ES module and the processing settings
    model.onnx | model_fp16.onnx | model_int8.onnx   the graph the page runs
    ort/ort.min.mjs  ort/ort-wasm-simd-threaded.jsep.{mjs,wasm}   onnxruntime-web (WebGPU + WASM), served locally

The page letterboxes exactly as `mesa_hf.onnx.OnnxDepthEstimator` (PIL's bicubic resampling re-done in JS, the same
float32 normalisation, edge padding, crop and half-pixel bilinear resize back) and downloads a 16-bit PNG in the
format of ``mesa-hf predict`` (`mesa_hf.evaluation.io.save_depth_png16`). `serve_folder` serves it on 127.0.0.1,
with the COOP/COEP headers multi-threaded WASM needs unless ``cross_origin_isolated=False``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ORT_WEB_VERSION = "1.31.1"
"""The pinned onnxruntime-web npm release the page is built and tested with."""
ORT_WEB_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
"""The files of the package's ``dist/`` the page loads (the JSEP build: WebGPU and WASM backends)."""
TEMPLATE_DIR = Path(__file__).with_name("web_template")
TEMPLATE_FILES = ("index.html", "app.js")
WEB_CONFIG_FILE = "web_config.json"
PRECISIONS = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
WEBGPU_DEFAULT_STORAGE_BUFFER_BYTES = 128 * 1024 * 1024
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class WebExportError(ValueError):
    """Bad `mesa-hf export web` arguments or a missing runtime; the message is one line."""


def _find_ort_files(folder: Path) -> Path | None:
    """The folder holding all `ORT_WEB_FILES`: `folder` itself, its ``dist/`` or ``package/dist/``; else None."""
    for candidate in (
        folder,
        folder / "dist",
        folder / "package" / "dist",
        folder / "node_modules/onnxruntime-web/dist",
    ):
        if all((candidate / name).is_file() for name in ORT_WEB_FILES):
            return candidate
    return None


def ort_web_files(ort_dir: str | os.PathLike | None, work_dir: Path) -> Path:
    """A folder with the onnxruntime-web runtime files: from `ort_dir`, else fetched with ``npm pack`` into `work_dir`.

    Raises WebExportError (one line) when `ort_dir` lacks the files, or when npm is missing or fails.
    """
    if ort_dir is not None:
        found = _find_ort_files(Path(ort_dir))
        if found is None:
            raise WebExportError(f"--ort-dir {ort_dir}: no onnxruntime-web files ({', '.join(ORT_WEB_FILES)})")
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise WebExportError(
            f"npm not found: install Node.js/npm or pass --ort-dir with onnxruntime-web {ORT_WEB_VERSION}'s dist folder"
        )
    result = subprocess.run(
        [npm, "pack", f"onnxruntime-web@{ORT_WEB_VERSION}", "--silent", "--pack-destination", str(work_dir)],
        capture_output=True,
        text=True,
    )
    tarballs = sorted(work_dir.glob("onnxruntime-web-*.tgz"))
    if result.returncode != 0 or not tarballs:
        reason = (result.stderr.strip().splitlines() or ["no tarball"])[-1]
        raise WebExportError(f"npm pack onnxruntime-web@{ORT_WEB_VERSION} failed: {reason} (or pass --ort-dir)")
    with tarfile.open(tarballs[0]) as archive:
        members = [m for m in archive.getmembers() if m.name in {f"package/dist/{n}" for n in ORT_WEB_FILES}]
        archive.extractall(work_dir, members=members, filter="data")
    found = _find_ort_files(work_dir)
    if found is None:
        raise WebExportError(f"onnxruntime-web@{ORT_WEB_VERSION} tarball lacks {', '.join(ORT_WEB_FILES)}")
    return found


def largest_tensor_bytes(model_path: str | os.PathLike) -> int:
    """Bytes of the largest tensor (intermediate, input, output or weight) in an ONNX graph, from shape inference."""
    import onnx
    from onnx import helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    largest = 0
    values = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    for value in values:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value for d in tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            size = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize
            for d in dims:
                size *= d
            largest = max(largest, size)
    for weight in model.graph.initializer:
        size = helper.tensor_dtype_to_np_dtype(weight.data_type).itemsize
        for d in weight.dims:
            size *= d
        largest = max(largest, size)
    return largest


def _check_web_arguments(checkpoint: Path, output_dir: Path, height: int, width: int, precision: str) -> None:
    from mesa_hf.onnx import STRIDE

    if precision not in PRECISIONS:
        raise WebExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if height <= 0 or width <= 0 or height % STRIDE or width % STRIDE:
        raise WebExportError(f"--height/--width must be positive multiples of {STRIDE}, got {height}x{width}")
    if not checkpoint.is_dir():
        raise WebExportError(f"checkpoint folder not found: {checkpoint}")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise WebExportError(f"output folder {output_dir} exists and is not empty")


def export_web(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    height: int = 480,
    width: int = 640,
    precision: str = "fp32",
    ort_dir: str | os.PathLike | None = None,
    images: Any = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the static depth page for `checkpoint` into the new folder `output_dir` (atomically); see the module.

    Args:
        height, width: the graph's fixed input size (multiples of 32); photos are letterboxed to it in the page.
        precision: ``"fp32"``, ``"fp16"`` (weights and activations; inputs/outputs stay float32) or ``"int8"``
            (ONNX Runtime dynamic quantisation, for the WASM backend).
        ort_dir: a local copy of onnxruntime-web (its ``dist/`` or the unpacked package); default: ``npm pack``.
        images: photos for the export's ONNX Runtime vs PyTorch check (default: rendered photos).

    Returns the page's `web_config.json` record. Raises WebExportError / OnnxExportError (one line), nothing written.
    """
    from mesa_hf.depth_png import DEPTH_PNG_SCALE_KEY, depth_png_scale_text
    from mesa_hf.evaluation.io import DEPTH_PNG_SCALE
    from mesa_hf.hub import atomic_save_pretrained
    from mesa_hf.onnx import EXPORT_CONFIG_FILE, MODEL_FILE, PROCESSOR_CONFIG_FILE, export_onnx

    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    _check_web_arguments(checkpoint, output_dir, height, width, precision)
    with tempfile.TemporaryDirectory(prefix="mesa-hf-web-") as work:
        work = Path(work)
        runtime = ort_web_files(ort_dir, work)  # before the (slow) export: a missing runtime fails fast
        onnx_dir = work / "onnx"
        record = export_onnx(
            checkpoint,
            onnx_dir,
            height,
            width,
            quantize="int8" if precision == "int8" else None,
            images=images,
            log=log,
        )
        model_file = PRECISIONS[precision]
        if precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            fp16 = convert_float_to_float16(onnx.load(str(onnx_dir / MODEL_FILE)), keep_io_types=True)
            onnx.save(fp16, str(onnx_dir / model_file))
        with open(checkpoint / "config.json") as handle:
            max_depth = json.load(handle).get("max_depth")
        config = {
            "model_file": model_file,
            "precision": precision,
            "height": height,
            "width": width,
            "image_mean": record["image_mean"],
            "image_std": record["image_std"],
            "resize": record["resize"],
            "max_depth": max_depth,
            "input_name": record["input_name"],
            "output_name": record["output_name"],
            "largest_tensor_bytes": largest_tensor_bytes(onnx_dir / model_file),
            "webgpu_default_storage_buffer_bytes": WEBGPU_DEFAULT_STORAGE_BUFFER_BYTES,
            "png_scale_m": DEPTH_PNG_SCALE,
            "png_text": {DEPTH_PNG_SCALE_KEY: depth_png_scale_text(DEPTH_PNG_SCALE), "depth_zero": "no depth"},
            "ort_web_version": ORT_WEB_VERSION,
            "checkpoint": str(checkpoint),
        }

        def write(folder: str) -> None:
            folder = Path(folder)
            for name in TEMPLATE_FILES:
                shutil.copy2(TEMPLATE_DIR / name, folder / name)
            (folder / "ort").mkdir()
            for name in ORT_WEB_FILES:
                shutil.copy2(runtime / name, folder / "ort" / name)
            shutil.copy2(onnx_dir / model_file, folder / model_file)
            for name in (EXPORT_CONFIG_FILE, PROCESSOR_CONFIG_FILE):
                shutil.copy2(onnx_dir / name, folder / name)
            (folder / WEB_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

        atomic_save_pretrained(write, output_dir)
    log(f"wrote {output_dir}: {model_file} ({precision}), onnxruntime-web {ORT_WEB_VERSION}; serve it over http")
    return config


# ------------------------------------------------------------------------------------------------ local server


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
        ".json": "application/json",
    }
    isolated = True

    def end_headers(self) -> None:
        if self.isolated:
            for key, value in ISOLATION_HEADERS.items():
                self.send_header(key, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the page fetches a handful of files
        pass


def serve_folder(
    folder: str | os.PathLike, port: int = 8000, cross_origin_isolated: bool = True
) -> http.server.ThreadingHTTPServer:
    """An HTTP server for `folder` on 127.0.0.1:`port` (0: a free port), with COOP/COEP headers when
    `cross_origin_isolated` (needed for multi-threaded WASM). Call `.serve_forever()` (or run it in a thread)."""
    handler = type("Handler", (_Handler,), {"isolated": cross_origin_isolated})
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler, directory=str(folder)))


# ------------------------------------------------------------------------------------------------ command line


def add_web_export_arguments(parser: Any) -> None:
    """Arguments of `mesa-hf export web CHECKPOINT OUTPUT_DIR`."""
    parser.add_argument("checkpoint", type=Path, help="MeSa depth checkpoint folder")
    parser.add_argument("output_dir", type=Path, help="new (or empty) output folder")
    parser.add_argument("--height", type=int, default=480, help="input height, a multiple of 32")
    parser.add_argument("--width", type=int, default=640, help="input width, a multiple of 32")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help="the graph the page runs")
    parser.add_argument(
        "--ort-dir", type=Path, default=None, help=f"local onnxruntime-web {ORT_WEB_VERSION} (default: npm pack)"
    )
    parser.add_argument("--images", nargs="+", default=None, help="photos for the export's parity check")
    parser.add_argument("--serve", action="store_true", help="then serve the folder on 127.0.0.1 with COOP/COEP")
    parser.add_argument("--port", type=int, default=8000, help="port for --serve (0: any free port)")


def run_web_export(args: Any) -> int:
    from mesa_hf.onnx import OnnxExportError

    try:
        export_web(
            args.checkpoint,
            args.output_dir,
            height=args.height,
            width=args.width,
            precision=args.precision,
            ort_dir=args.ort_dir,
            images=args.images,
        )
    except (WebExportError, OnnxExportError, FileNotFoundError) as error:
        raise SystemExit(f"mesa-hf export web: error: {error}") from None
    if args.serve:
        server = serve_folder(args.output_dir, args.port)
        print(f"serving http://127.0.0.1:{server.server_address[1]}/ (COOP/COEP: cross-origin isolated)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0

"""Upload-to-depth time of the `mesa-hf export web` page in headless Chromium, beside ONNX Runtime for Python.

A `tiny`-preset MeSa model (seeded random weights: speed does not depend on them) is exported with
`mesa_hf.web_export.export_web` at 480x640 for each precision; the page is served with and without COOP/COEP
(multi-threaded / single-threaded WASM) and NYUv2 `nyu_test10/image_0.png` is uploaded `--repeats` times (the first
is a warm-up). The page reports its own inference time and upload-to-depth time (decode, letterbox, inference, crop
back, colouring, PNG encoding). ONNX Runtime for Python runs `OnnxDepthEstimator` on the same file in the same run
with 1 and 2 intra-op threads.

    python benchmarks/web.py --ort-dir ~/.cache/mesa-hf/onnxruntime-web-1.31.1   # a few minutes on 2 cores
    python benchmarks/web.py --precisions fp32 --repeats 2 --height 96 --width 128   # quick

Needs Debian's `chromium` and playwright (as tests/test_web_export.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "nyu_test10" / "image_0.png"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]


def save_tiny_checkpoint(folder: Path, height: int, width: int) -> Path:
    import torch

    from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaImageProcessor

    torch.manual_seed(0)
    MeSaForDepthEstimation(MeSaConfig.from_preset("tiny")).eval().save_pretrained(folder)
    MeSaImageProcessor(size={"height": height, "width": width}).save_pretrained(folder)
    return folder


def time_page(url: str, photo: Path, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-ready='1'], body[data-ready='error']", timeout=600_000)
            load_s = time.perf_counter() - start
            runtime = page.text_content("#runtime")
            inference, total = [], []
            for _ in range(repeats):
                page.evaluate("document.body.dataset.done = '0'")
                page.set_input_files("#file", str(photo))
                page.wait_for_selector("body[data-done='1']", timeout=600_000)
                message = page.text_content("#message")
                if page.get_attribute("#runtime", "data-inference-ms") is None:
                    raise RuntimeError(f"the page failed: {message}")
                inference.append(float(page.get_attribute("#runtime", "data-inference-ms")))
                total.append(float(page.get_attribute("#runtime", "data-total-ms")))
        finally:
            browser.close()
    timed = slice(1, None) if repeats > 1 else slice(None)
    return {
        "backend": runtime.split(";")[0].removeprefix("backend: "),
        "page_load_s": load_s,
        "inference_ms": statistics.median(inference[timed]),
        "upload_to_depth_ms": statistics.median(total[timed]),
        "all_upload_to_depth_ms": total,
    }


def time_ort_python(folder: Path, model_file: str, photo: Path, threads: int, repeats: int) -> float:
    from mesa_hf.onnx import OnnxDepthEstimator

    estimator = OnnxDepthEstimator(folder, model_file=model_file, threads=threads)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        estimator(str(photo))
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times[1:] if repeats > 1 else times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "fp16", "int8"])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=4, help="uploads per page (the first is a warm-up)")
    parser.add_argument("--ort-dir", type=Path, default=None, help="onnxruntime-web files (default: npm pack)")
    parser.add_argument("--photo", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from mesa_hf.web_export import export_web, serve_folder

    results = []
    with tempfile.TemporaryDirectory(prefix="mesa-web-bench-") as work:
        work = Path(work)
        checkpoint = save_tiny_checkpoint(work / "checkpoint", args.height, args.width)
        for precision in args.precisions:
            folder = work / f"site-{precision}"
            config = export_web(
                checkpoint, folder, args.height, args.width, precision, args.ort_dir, log=lambda _: None
            )
            row = {"precision": precision, "model_mb": (folder / config["model_file"]).stat().st_size / 1e6}
            for isolated in (True, False):
                server = serve_folder(folder, port=0, cross_origin_isolated=isolated)
                thread = threading.Thread(target=server.serve_forever, daemon=True)
                thread.start()
                try:
                    page = time_page(f"http://127.0.0.1:{server.server_address[1]}/", args.photo, args.repeats)
                finally:
                    server.shutdown()
                    server.server_close()
                row["chromium_" + ("isolated" if isolated else "not_isolated")] = page
            for threads in (1, 2):
                row[f"ort_python_{threads}_threads_ms"] = time_ort_python(
                    folder, config["model_file"], args.photo, threads, args.repeats
                )
            results.append(row)
            print(json.dumps(row), flush=True)

    print(
        f"\n{args.height}x{args.width}, tiny preset, {args.photo.name}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; median of {max(args.repeats - 1, 1)} after a warm-up\n"
    )
    print(
        "| precision | model MB | Chromium WASM multi-threaded: inference / upload-to-depth ms | Chromium WASM "
        "single-threaded | ORT Python 1 thread ms | ORT Python 2 threads ms |"
    )
    print("|---|---|---|---|---|---|")
    for row in results:
        multi, single = row["chromium_isolated"], row["chromium_not_isolated"]
        print(
            f"| {row['precision']} | {row['model_mb']:.0f} | "
            f"{multi['inference_ms']:.0f} / {multi['upload_to_depth_ms']:.0f} "
            f"({multi['backend']}) | {single['inference_ms']:.0f} / {single['upload_to_depth_ms']:.0f} | "
            f"{row['ort_python_1_threads_ms']:.0f} | {row['ort_python_2_threads_ms']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()

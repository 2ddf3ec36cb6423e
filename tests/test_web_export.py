"""`mesa-hf export web`: the static page in headless Chromium (Debian's `chromium` through Playwright) against
`OnnxDepthEstimator`, and the command's bad-input errors.

The page is served once by `mesa-hf export web --serve` (COOP/COEP: multi-threaded WASM) and once by
`serve_folder(..., cross_origin_isolated=False)` (single-threaded). In each: a generated photo of another aspect
ratio (letterboxed: PIL bicubic re-done in JS, padding, crop back) and NYUv2 `nyu_test10/image_0.png`; the 16-bit
PNG the page downloads equals the estimator within 1 mm; a text file named .png shows a message and the next upload
works; every request goes to the page's origin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from mesa_hf.cli import main
from mesa_hf.evaluation.io import load_depth_png16
from mesa_hf.web_export import ORT_WEB_FILES, ORT_WEB_VERSION, WebExportError, ort_web_files, serve_folder

from .demo_support import save_fake_png, save_photo, save_tiny_checkpoint

HEIGHT, WIDTH = 96, 128  # a small export size keeps the test fast; 480x640 timing is benchmarks/web.py
ORT_CACHE = Path(
    os.environ.get("MESA_HF_ORT_WEB_DIR", Path.home() / ".cache/mesa-hf" / f"onnxruntime-web-{ORT_WEB_VERSION}")
)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]
TIMEOUT_MS = 120_000


# ------------------------------------------------------------------------------------------------ bad input


def test_size_not_a_multiple_of_32_is_one_line_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["export", "web", str(tmp_path), str(tmp_path / "out"), "--height", "100", "--ort-dir", str(tmp_path)])
    message = str(raised.value)
    assert "multiples of 32" in message and "100x640" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_without_npm_and_ort_dir_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    checkpoint = save_tiny_checkpoint(tmp_path / "checkpoint")
    monkeypatch.setattr("mesa_hf.web_export.shutil.which", lambda name: None)
    with pytest.raises(SystemExit) as raised:
        main(["export", "web", str(checkpoint), str(tmp_path / "out")])
    message = str(raised.value)
    assert message.startswith("mesa-hf export web: error: npm not found") and "--ort-dir" in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_ort_dir_without_the_runtime_files_is_refused(tmp_path):
    with pytest.raises(WebExportError, match="no onnxruntime-web files"):
        ort_web_files(tmp_path, tmp_path)


# ------------------------------------------------------------------------------------------------ browser


def _chromium_executable() -> str | None:
    path = shutil.which("chromium")
    if path is None and os.environ.get("CI"):
        subprocess.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
            shell=True,
            check=True,
        )
        path = shutil.which("chromium")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api")
    path = _chromium_executable()
    if path is None:
        pytest.skip("Chromium not installed (apt-get install chromium); CI installs it")
    return path


@pytest.fixture(scope="module")
def ort_dir() -> Path:
    """onnxruntime-web's runtime files: $MESA_HF_ORT_WEB_DIR or ~/.cache/mesa-hf/onnxruntime-web-VERSION; CI fetches
    them there with npm (installing npm with apt-get when missing), as the demo test installs Chromium."""
    if all((ORT_CACHE / "dist" / name).is_file() for name in ORT_WEB_FILES):
        return ORT_CACHE
    if not os.environ.get("CI"):
        pytest.skip(
            f"onnxruntime-web {ORT_WEB_VERSION} not at {ORT_CACHE} (npm pack onnxruntime-web@{ORT_WEB_VERSION})"
        )
    if shutil.which("npm") is None:
        subprocess.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm", shell=True, check=True
        )
    work = ORT_CACHE.with_name(ORT_CACHE.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    found = ort_web_files(None, work)
    (ORT_CACHE / "dist").mkdir(parents=True, exist_ok=True)
    for name in ORT_WEB_FILES:
        shutil.copy2(found / name, ORT_CACHE / "dist" / name)
    shutil.rmtree(work, ignore_errors=True)
    return ORT_CACHE


@pytest.fixture(scope="module")
def served_page(tmp_path_factory, chromium, ort_dir):
    """`mesa-hf export web --serve` in a subprocess: (url, folder)."""
    root = tmp_path_factory.mktemp("web")
    checkpoint = save_tiny_checkpoint(root / "checkpoint")
    folder = root / "site"
    command = [sys.executable, "-m", "mesa_hf.cli", "export", "web", str(checkpoint), str(folder)]
    command += ["--height", str(HEIGHT), "--width", str(WIDTH), "--ort-dir", str(ort_dir), "--serve", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url, lines = None, []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("serving "):
            url = line.split()[1]
            break
    if url is None:
        process.wait(timeout=30)
        pytest.fail("mesa-hf export web --serve did not serve:\n" + "".join(lines))
    yield url, folder
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, shared_data) -> list[Path]:
    root = tmp_path_factory.mktemp("web-photos")
    return [save_photo(root / "room.png", height=90, width=150), shared_data / "nyu_test10" / "image_0.png"]


def _drive_page(url: str, chromium: str, photos: list[Path], fake: Path, downloads: Path) -> dict:
    from playwright.sync_api import sync_playwright

    requests, results = [], {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True)
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
            results["runtime"] = page.text_content("#runtime")
            results["threads"] = int(page.get_attribute("#runtime", "data-threads"))
            results["isolated"] = page.evaluate("self.crossOriginIsolated")
            results["hardware_threads"] = page.evaluate("navigator.hardwareConcurrency")

            def upload(path: Path) -> None:
                page.evaluate("document.body.dataset.done = '0'")
                page.set_input_files("#file", str(path))
                page.wait_for_selector("body[data-done='1']", timeout=TIMEOUT_MS)

            def download(path: Path) -> Path:
                with page.expect_download(timeout=TIMEOUT_MS) as info:
                    page.click("#download")
                target = downloads / f"{path.stem}_depth16.png"
                info.value.save_as(target)
                return target

            results["depth_pngs"] = []
            for photo in photos:
                upload(photo)
                assert page.text_content("#message") in (
                    "",
                    "WebGPU not available in this browser; running on WASM (CPU)",
                )
                results["depth_pngs"].append(download(photo))
                results.setdefault("stats", page.text_content("#stats"))
            upload(fake)
            results["fake_message"] = page.text_content("#message")
            upload(photos[0])
            results["after_fake_message"] = page.text_content("#message")
            results["after_fake_png"] = download(photos[0])
        finally:
            browser.close()
    results["requests"] = requests
    return results


def _check_page_results(results: dict, url: str, folder: Path, photos: list[Path]) -> None:
    from mesa_hf.onnx import OnnxDepthEstimator

    estimator = OnnxDepthEstimator(folder)
    origin = urlparse(url)
    foreign = [
        r
        for r in results["requests"]
        if urlparse(r).scheme not in ("data", "blob") and urlparse(r).netloc != origin.netloc
    ]
    assert not foreign, foreign
    assert any(r.endswith("/ort/ort-wasm-simd-threaded.jsep.wasm") for r in results["requests"])
    for photo, png in [*zip(photos, results["depth_pngs"], strict=True), (photos[0], results["after_fake_png"])]:
        page_depth = load_depth_png16(png)
        reference = estimator(str(photo))
        assert page_depth.shape == reference.shape == np.asarray(Image.open(photo)).shape[:2]
        with Image.open(png) as image:
            assert image.text["depth_scale"] == "0.001 m per unit"
        difference = np.abs(page_depth - reference)
        assert difference.max() <= 0.001 + 1e-6, (photo.name, float(difference.max()))
        assert reference.std() > 0.01  # a varying map: the comparison means something
    assert "not an image" in results["fake_message"]
    assert results["after_fake_message"] in ("", "WebGPU not available in this browser; running on WASM (CPU)")
    assert "median" in results["stats"] and " m" in results["stats"]


def test_page_with_cross_origin_isolation_matches_onnx_runtime(served_page, chromium, photos, tmp_path):
    url, folder = served_page
    results = _drive_page(url, chromium, photos, save_fake_png(tmp_path / "notes.png"), tmp_path)
    assert results["isolated"] is True
    expected_threads = min(4, results["hardware_threads"])
    assert results["threads"] == expected_threads
    assert ("multi-threaded" in results["runtime"]) == (expected_threads > 1)
    _check_page_results(results, url, folder, photos)


def test_page_without_cross_origin_isolation_runs_single_threaded(served_page, chromium, photos, tmp_path):
    _, folder = served_page
    server = serve_folder(folder, port=0, cross_origin_isolated=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        results = _drive_page(url, chromium, photos, save_fake_png(tmp_path / "notes.png"), tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert results["isolated"] is False and results["threads"] == 1
    assert "single-threaded" in results["runtime"]
    _check_page_results(results, url, folder, photos)

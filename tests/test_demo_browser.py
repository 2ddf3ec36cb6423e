"""The web demo in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python API).

One browser session for the whole module: open the page, upload a photo, wait for the depth, download the 16-bit
PNG, open the 3-D tab and wait for the viewer, screenshot each tab, upload a text file renamed .png and check the
message, then check the app still answers; in the Video tab upload a clip, wait until the browser plays the depth
video, download the .npz, screenshot. No request may leave localhost; the console may show only the known
harmless lines of the 3-D viewer's WebGPU -> WebGL2 fallback.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")

from .demo_support import (
    launched_demo,
    read_png16,
    save_fake_png,
    save_photo,
    save_test_video,
    save_tiny_checkpoint,
)

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
LOCAL_SCHEMES = {"data", "blob", "about"}
HARMLESS_CONSOLE_LINES = (
    "A fatal error occurred during WebGPU creation/initialization",
    "No available adapters.",
    "Method not implemented.",
    "GPU stall due to ReadPixels",
)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]
TIMEOUT_MS = 120_000  # generous: the CI machine is shared


def _chromium_executable() -> str | None:
    path = shutil.which("chromium")
    if path is None and os.environ.get("CI"):
        # CI must run this test: install Debian's Chromium (no browser can be downloaded by Playwright here).
        subprocess.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
            shell=True,
            check=True,
        )
        path = shutil.which("chromium")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _chromium_executable()
    if path is None:
        pytest.skip("Chromium not installed (apt-get install chromium); CI installs it")
    return path


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo-browser")
    return {
        "root": root,
        "checkpoint": save_tiny_checkpoint(root / "checkpoint"),
        "photo": save_photo(root / "photo.png", seed=3),
        "second": save_photo(root / "second.png", seed=5),
        "fake": save_fake_png(root / "notes.png"),
        "clip": save_test_video(root / "walk.mp4", frames=12, height=240, width=320, fps=10),
    }


@pytest.fixture(scope="module")
def browser_session(chromium, demo_files):
    """(url, page, log) with one launched app and one browser page for every check of this module."""
    from playwright.sync_api import sync_playwright

    log: dict[str, list[str]] = {"foreign_requests": [], "console_errors": [], "page_errors": [], "requests": []}

    def on_request(request) -> None:
        url = urlparse(request.url)
        log["requests"].append(request.url)
        if url.scheme not in LOCAL_SCHEMES and url.hostname not in LOCAL_HOSTS:
            log["foreign_requests"].append(request.url)

    def on_console(message) -> None:
        if message.type == "error" and not any(line in message.text for line in HARMLESS_CONSOLE_LINES):
            log["console_errors"].append(message.text)

    with (
        launched_demo(demo_files["checkpoint"], demo_files["root"] / "gradio-tmp") as (url, _demo),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("request", on_request)
        page.on("console", on_console)
        page.on("pageerror", lambda error: log["page_errors"].append(str(error)))
        page.goto(url)
        page.locator("#photo").wait_for()
        yield url, page, log
        context.close()
        browser.close()


def _upload_and_wait(page, photo: Path) -> float:
    """Upload ``photo`` on the Image tab and wait until the readout names it; seconds from upload to depth."""
    page.get_by_role("tab", name="Image").click()
    start = time.perf_counter()
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    page.locator("#readout").get_by_text(f"{photo.stem}:").wait_for()
    page.locator("#slider img").nth(1).wait_for()
    return time.perf_counter() - start


def _predict_seconds(checkpoint: Path, photo: Path, output_dir: Path) -> tuple[float, Path]:
    """`mesa-hf predict` on ``photo`` (in this process, so without Python's start-up): seconds, depth PNG."""
    from mesa_hf.cli import main

    start = time.perf_counter()
    status = main(["predict", str(photo), "--checkpoint", str(checkpoint), "--output-dir", str(output_dir)])
    assert status == 0
    return time.perf_counter() - start, output_dir / f"{photo.stem}_depth.png"


def _viewer_drawn_fraction(page) -> float:
    """Share of the 3-D viewer's pixels showing points: neither its clear colour nor the blank (white) canvas
    of a viewer still loading."""
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#viewer canvas").screenshot())).convert("RGB"))
    shot = shot.astype(np.int64)
    background = np.array([0.08, 0.08, 0.1]) * 255
    drawn = (np.abs(shot - background).sum(-1) > 40) & (shot.min(-1) < 200)
    return float(drawn.mean())


def test_browser_end_to_end(browser_session, demo_files, tmp_path):
    _url, page, log = browser_session
    photo = demo_files["photo"]

    seconds_to_depth = _upload_and_wait(page, photo)
    readout = page.locator("#readout").inner_text()
    assert "median" in readout and " m" in readout and "640x480" in readout
    assert page.locator("#slider img").count() >= 2

    with page.expect_download() as download_info:
        page.locator("#download-png16").click()
    downloaded = tmp_path / "downloaded_depth.png"
    download_info.value.save_as(downloaded)
    assert download_info.value.suggested_filename == "photo_depth.png"
    page.screenshot(path=str(tmp_path / "image_tab.png"), full_page=True)

    page.get_by_role("tab", name="3-D").click()
    page.locator("#viewer canvas").wait_for()
    page.locator("#cloud-readout").get_by_text("points").wait_for()
    drawn = 0.0
    for _ in range(60):  # the viewer loads its code and the cloud, then draws: wait until points show
        drawn = _viewer_drawn_fraction(page)
        if drawn > 0.05:
            break
        page.wait_for_timeout(1_000)
    assert drawn > 0.05, f"the 3-D viewer drew nothing ({drawn:.3f} of its pixels)"
    assert "NYUv2 Kinect" in page.locator("#cloud-readout").inner_text()
    page.screenshot(path=str(tmp_path / "3d_tab.png"), full_page=True)
    print(f"\n3-D viewer: {drawn:.1%} of its pixels drawn")

    # the same photo through `mesa-hf predict` in this run: equal depth PNG, and the time it takes
    cli_seconds, cli_png = _predict_seconds(demo_files["checkpoint"], photo, tmp_path / "predict")
    assert read_png16(downloaded).shape == (480, 640)
    assert np.abs(read_png16(downloaded) - read_png16(cli_png)).max() <= 1  # within 1 mm
    inference = float(readout.split("inference")[1].split(" s")[0])
    print(
        f"\n640x480 photo: upload -> depth in the browser {seconds_to_depth:.2f} s (model {inference:.3f} s) vs "
        f"`mesa-hf predict` {cli_seconds:.2f} s (load, predict, write png16/npy/colour/ply; in-process); "
        f"ratio {seconds_to_depth / cli_seconds:.2f}; screenshots in {tmp_path}"
    )
    assert log["foreign_requests"] == [], log["foreign_requests"]
    assert log["console_errors"] == [], log["console_errors"]
    assert log["page_errors"] == [], log["page_errors"]


def test_browser_fake_png_shows_message_and_app_keeps_serving(browser_session, demo_files, tmp_path):
    _url, page, log = browser_session
    page.get_by_role("tab", name="Image").click()
    page.locator("#photo input[type=file]").set_input_files(str(demo_files["fake"]))
    message = page.get_by_text("notes.png: not an image file")
    message.first.wait_for()
    page.wait_for_timeout(1_000)  # the toast slides in
    page.screenshot(path=str(tmp_path / "fake_png_message.png"))
    assert "Traceback" not in page.content()

    # the next request is served
    _upload_and_wait(page, demo_files["second"])
    assert "second:" in page.locator("#readout").inner_text()
    assert log["foreign_requests"] == [], log["foreign_requests"]
    assert log["console_errors"] == [], log["console_errors"]
    assert log["page_errors"] == [], log["page_errors"]
    print(f"\n{len(log['requests'])} browser requests, all to localhost")


def test_browser_video_tab_plays_the_depth_video(browser_session, demo_files, tmp_path):
    _url, page, log = browser_session
    if page.get_by_role("tab", name="Video").count() == 0:
        pytest.skip("no Video tab in this page (PyAV missing)")
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input input[type=file]").set_input_files(str(demo_files["clip"]))
    page.locator("#video-input video").wait_for()  # the upload is shown
    page.locator("#run-video").click()
    page.locator("#video-readout").get_by_text("walk.mp4: 12 frames 320x240").wait_for()
    video = page.locator("#depth-video video")
    video.wait_for()
    # Chromium decodes the H.264 depth video: metadata read, frames of the right size
    page.wait_for_function(
        "() => { const v = document.querySelector('#depth-video video'); return v && v.readyState >= 2; }"
    )
    size = video.evaluate("v => [v.videoWidth, v.videoHeight, v.duration]")
    assert size[:2] == [320, 240] and 1.0 <= size[2] <= 1.4, size  # 12 frames at 10 fps
    readout = page.locator("#video-readout").inner_text()
    assert "colour range" in readout and "the same in every frame" in readout
    with page.expect_download() as download_info:
        page.locator("#download-npz").click()
    assert download_info.value.suggested_filename == "walk_depth.npz"
    npz = tmp_path / "walk_depth.npz"
    download_info.value.save_as(npz)
    with np.load(npz) as archive:
        assert archive["depth"].shape == (12, 240, 320) and archive["depth"].dtype == np.float16
    video.evaluate("v => { v.pause(); v.currentTime = 0.55; }")
    page.wait_for_function(
        "() => { const v = document.querySelector('#depth-video video'); return !v.seeking && v.readyState >= 2; }"
    )
    page.screenshot(path=str(tmp_path / "video_tab.png"), full_page=True)
    print(f"\nVideo tab: depth video {size[0]}x{size[1]}, {size[2]:.2f} s; screenshot {tmp_path / 'video_tab.png'}")
    assert log["foreign_requests"] == [], log["foreign_requests"]
    assert log["console_errors"] == [], log["console_errors"]
    assert log["page_errors"] == [], log["page_errors"]


def _click_pixel(page, selector: str, u: int, v: int) -> None:
    """Click pixel (u, v) of the image shown in ``selector`` (it is scaled to fit and centred, as Gradio does)."""
    img = page.locator(f"{selector} img")
    box = img.evaluate(
        "i => { const r = i.getBoundingClientRect(); return [r.width, r.height, i.naturalWidth, i.naturalHeight]; }"
    )
    width, height, natural_w, natural_h = box
    scale = min(width / natural_w, height / natural_h, 1.0)
    left, top = (width - natural_w * scale) / 2, (height - natural_h * scale) / 2
    img.click(position={"x": left + (u + 0.5) * scale, "y": top + (v + 0.5) * scale})


def _measured_pixels(text: str) -> list[tuple[int, int]]:
    return [(int(u), int(v)) for u, v in re.findall(r"pixel \((\d+), (\d+)\)", text)]


def test_browser_measure_tab_shows_the_distance_of_the_downloaded_files(browser_session, demo_files, tmp_path):
    from mesa_hf.camera import camera_from_dict, measure_distance

    _url, page, log = browser_session
    _upload_and_wait(page, demo_files["photo"])
    with page.expect_download() as download_info:
        page.locator("#download-npy").click()
    depth_file = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(depth_file)
    depth = np.load(depth_file)

    page.get_by_role("tab", name="Measure").click()
    readout = page.locator("#measure-readout")
    readout.get_by_text("Click two points").wait_for()
    page.locator("#measure-image img").wait_for()
    wanted = [(120, 300), (520, 180)]
    _click_pixel(page, "#measure-image", *wanted[0])
    readout.get_by_text("Click a second point").wait_for()
    _click_pixel(page, "#measure-image", *wanted[1])
    readout.get_by_text("distance A-B").wait_for()
    text = readout.inner_text()
    pixels = _measured_pixels(text)
    assert len(pixels) == 2 and all(abs(p - q) <= 1 for got, want in zip(pixels, wanted) for p, q in zip(got, want))
    shown = float(re.search(r"distance A-B: ([\d.]+) m", text)[1])
    assert "source: assumed" in text and "NYUv2 Kinect" in text  # a PNG without EXIF

    with page.expect_download() as download_info:
        page.locator("#download-camera").click()
    assert download_info.value.suggested_filename == "photo_camera.json"
    camera_file = tmp_path / "photo_camera.json"
    download_info.value.save_as(camera_file)
    camera = camera_from_dict(json.loads(camera_file.read_text()))
    expected = measure_distance(depth, camera, *pixels).distance
    assert shown == pytest.approx(expected, abs=5e-5), (shown, expected)
    assert f"fx={camera.fx:.3f}" in text

    # on the coloured depth, with a field of view set on the 3-D tab: the same pixels, another focal length
    page.get_by_role("tab", name="3-D").click()
    page.get_by_label("horizontal field of view (degrees)").fill("80")
    page.get_by_label("field of view", exact=True).check()
    page.locator("#cloud-readout").get_by_text("80 degrees").wait_for()
    for _ in range(60):  # let the viewer draw the new cloud before its tab is hidden
        if _viewer_drawn_fraction(page) > 0.05:
            break
        page.wait_for_timeout(1_000)
    page.get_by_role("tab", name="Measure").click()
    page.get_by_label("depth", exact=True).check()
    page.locator("#measure").click()
    readout.get_by_text("source: fov").wait_for()
    text = readout.inner_text()
    assert _measured_pixels(text) == pixels
    wide = measure_distance(depth, camera_from_dict(_fov_camera(640, 480, 80.0)), *pixels).distance
    assert float(re.search(r"distance A-B: ([\d.]+) m", text)[1]) == pytest.approx(wide, abs=5e-5)
    page.screenshot(path=str(tmp_path / "measure_tab.png"), full_page=True)
    print(f"\nMeasure tab: A {pixels[0]} B {pixels[1]}: shown {shown:.4f} m, from the downloads {expected:.4f} m")
    assert log["foreign_requests"] == [], log["foreign_requests"]
    assert log["console_errors"] == [], log["console_errors"]
    assert log["page_errors"] == [], log["page_errors"]


def _fov_camera(width: int, height: int, fov: float) -> dict:
    from mesa_hf.camera import intrinsics_from_fov

    return intrinsics_from_fov(height, width, fov).to_dict()

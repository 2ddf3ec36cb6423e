"""The web demo: its engine (no web framework), the `mesa-hf demo` command, and every endpoint of the launched app
driven with gradio_client (outputs' shapes and units; the 16-bit PNG equal to `mesa-hf predict`'s)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mesa_hf.cli import SUBCOMMANDS, main
from mesa_hf.demo import DemoEngine, DemoLimits, get_engine, resolve_checkpoint
from mesa_hf.demo.engine import UnreadableImageError
from mesa_hf.evaluation.io import Intrinsics, load_depth_png16, nyu_intrinsics, read_ply
from mesa_hf.evaluation.scene_files import GLTF_FROM_CAMERA, kept_pixels

from .demo_support import launched_demo, read_png16, save_fake_png, save_photo, save_tiny_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    return {
        "root": root,
        "checkpoint": save_tiny_checkpoint(root / "checkpoint"),
        "photo": save_photo(root / "photo.png"),
        "fake": save_fake_png(root / "notes.png"),
    }


@pytest.fixture(scope="module")
def engine(files) -> DemoEngine:
    return get_engine(str(files["checkpoint"]))


@pytest.fixture(scope="module")
def predict_png(files) -> Path:
    """`mesa-hf predict` on the photo: its 16-bit depth PNG."""
    output_dir = files["root"] / "predict"
    assert main(["predict", str(files["photo"]), "--checkpoint", str(files["checkpoint"]), "--output-dir",
                 str(output_dir), "--outputs", "png16", "--no-progress"]) == 0  # fmt: skip
    return output_dir / "photo_depth.png"


# ------------------------------------------------------------------------------------------------ checkpoint, CLI


def test_resolve_checkpoint_default_and_error(tmp_path):
    assert resolve_checkpoint("user/model") == "user/model"
    with pytest.raises(FileNotFoundError, match=r"make demo.*mesa-hf convert"):
        resolve_checkpoint(None, default=tmp_path / "missing")
    (tmp_path / "finetuned").mkdir()
    (tmp_path / "finetuned" / "config.json").write_text("{}")
    assert resolve_checkpoint(None, default=tmp_path / "finetuned") == str(tmp_path / "finetuned")


def test_demo_command_without_checkpoint_names_how_to_get_one(tmp_path, monkeypatch, capsys):
    assert "demo" in SUBCOMMANDS
    monkeypatch.chdir(tmp_path)  # no outputs/main-job/finetuned here
    assert main(["demo"]) == 2
    error = capsys.readouterr().err
    assert "outputs/main-job/finetuned" in error and "make demo" in error and "mesa-hf convert" in error


def test_missing_checkpoint_folder_and_hub_id_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        DemoEngine.from_checkpoint(tmp_path / "nothing" / "here")
    with pytest.raises(FileNotFoundError, match="not a local folder and could not be fetched"):
        DemoEngine.from_checkpoint("nobody-here/no-such-model")  # offline: not in the (empty) cache


def test_engine_loads_once_per_process(files):
    assert get_engine(str(files["checkpoint"])) is get_engine(str(files["checkpoint"]))


# ------------------------------------------------------------------------------------------------ engine


def test_estimate_matches_predict_png(engine, files, predict_png, tmp_path):
    result = engine.predict_file(files["photo"])
    assert result.depth.shape == (480, 640) and result.depth.dtype == np.float32
    assert result.name == "photo" and not result.downscaled and result.seconds > 0
    written = engine.write_downloads(result)
    assert written["png16"].name == "photo_depth.png"
    demo_units, cli_units = read_png16(written["png16"]), read_png16(predict_png)
    assert np.abs(demo_units - cli_units).max() <= 1  # within 1 mm
    np.testing.assert_allclose(np.load(written["npy"]), load_depth_png16(written["png16"]), atol=0.0005 + 1e-6)


def test_flip_tta_is_the_mean_of_both_passes(engine, files):
    from mesa_hf.evaluation.inference import preprocess_images, resize_depth_bilinear

    image, *_ = engine.load_image(files["photo"])
    flipped = engine.estimate(image, flip=True)
    pixel_values = preprocess_images(engine.processor, [image])[0][None]
    with torch.inference_mode():
        forward = engine.model(pixel_values=pixel_values).predicted_depth
        backward = engine.model(pixel_values=pixel_values.flip(-1)).predicted_depth.flip(-1)
    expected = resize_depth_bilinear(((forward + backward) / 2)[0], (480, 640)).numpy()
    np.testing.assert_allclose(flipped.depth, expected, rtol=1e-4, atol=1e-4)
    assert flipped.tta == "flip"


def test_unreadable_uploads_get_messages_without_paths(engine, files, tmp_path):
    with pytest.raises(UnreadableImageError, match=r"notes\.png: not an image file") as error:
        engine.load_image(files["fake"])
    assert str(files["root"]) not in str(error.value)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(files["photo"].read_bytes()[:5000])
    with pytest.raises(UnreadableImageError, match=r"cut\.png: broken image file"):
        engine.load_image(truncated)


def test_huge_images_refused_and_large_ones_downscaled(files, engine, tmp_path):
    small_limits = DemoEngine(engine.model, engine.processor, limits=DemoLimits(max_image_pixels=100_000))
    with pytest.raises(UnreadableImageError, match="over this demo's limit"):
        small_limits.load_image(files["photo"])  # 307,200 pixels

    big = tmp_path / "big.png"
    Image.open(files["photo"]).resize((2560, 1920)).save(big)
    result = engine.predict_file(big)
    assert result.downscaled and result.upload_size == (2560, 1920) and result.size == (640, 480)
    readout = engine.readout(result, engine.color_range(result.depth), fixed=False)
    assert "2560x1920 px, downscaled to 640x480" in readout
    # intrinsics given for the upload are scaled to the processed image
    cloud = engine.write_point_cloud(result, Intrinsics(2000.0, 2000.0, 1279.5, 959.5), max_points=10**6)
    assert cloud.intrinsics.fx == pytest.approx(500.0) and cloud.intrinsics.cx == pytest.approx(319.5)


def test_colour_range_and_readout_units(engine, files):
    result = engine.predict_file(files["photo"])
    values = result.depth.ravel()
    low, high = engine.color_range(result.depth)
    assert low == pytest.approx(np.percentile(values, 2)) and high == pytest.approx(np.percentile(values, 98))
    colors, used = engine.colorize(result, "gray_r", vmin=1.0, vmax=2.0)
    assert colors.shape == (480, 640, 3) and colors.dtype == np.uint8 and used == (1.0, 2.0)
    text = engine.readout(result, used, fixed=True)
    assert f"median {np.median(values):.3f} m" in text and "640x480 px" in text and "(fixed)" in text
    with pytest.raises(ValueError, match="min < max"):
        engine.colorize(result, "magma_r", vmin=3.0, vmax=2.0)
    with pytest.raises(ValueError, match="unknown colour map"):
        engine.colorize(result, "not-a-map")


def test_point_cloud_density_and_intrinsics(engine, files):
    result = engine.predict_file(files["photo"])
    cloud = engine.write_point_cloud(result, max_points=20_000)
    keep, dropped = kept_pixels(result.depth)  # flying pixels at depth edges are left out
    assert cloud.flying_pixels_dropped == dropped == 640 * 480 - keep.sum()
    stride = math.ceil(math.sqrt(keep.sum() / 20_000))
    on_grid = np.zeros_like(keep)
    on_grid[::stride, ::stride] = True
    assert cloud.stride == stride and cloud.points == (keep & on_grid).sum() <= 20_000
    assert cloud.intrinsics == nyu_intrinsics(480, 640)  # what `mesa-hf predict` prints
    header, vertices = read_ply(cloud.path)
    assert f"element vertex {cloud.points}" in header
    # the GLB download holds the same points (glTF y-up), with triangles between neighbouring grid pixels
    ply_points = np.stack([vertices[a] for a in "xyz"], axis=1)
    np.testing.assert_allclose(_glb_vertices(cloud.glb_path) * GLTF_FROM_CAMERA, ply_points, atol=1e-5)
    # the point of a kept grid pixel back-projects with z = its depth
    rows, cols = np.nonzero(keep & on_grid)
    index = len(rows) // 2
    k, row, col = cloud.intrinsics, rows[index], cols[index]
    z = result.depth[row, col]
    np.testing.assert_allclose(vertices["z"][index], z, rtol=1e-6)
    np.testing.assert_allclose(vertices["x"][index], (col - k.cx) * z / k.fx, rtol=1e-5)
    _, view = read_ply(cloud.view_path)  # the viewer's copy: turned 180 degrees about x
    np.testing.assert_allclose(view["y"], -vertices["y"])
    np.testing.assert_allclose(view["z"], -vertices["z"])

    fov = engine.intrinsics_from_fov(640, 480, 90.0)
    assert fov.fx == pytest.approx(320.0) and fov.cx == pytest.approx(319.5)
    with pytest.raises(ValueError, match="field of view"):
        engine.intrinsics_from_fov(640, 480, 180.0)
    with pytest.raises(ValueError, match="fx must be a positive number"):
        engine.write_point_cloud(result, Intrinsics(0.0, 500.0, 320.0, 240.0))  # fails when built


def _glb_vertices(path) -> np.ndarray:
    trimesh = pytest.importorskip("trimesh")
    return np.asarray(trimesh.load(path, force="mesh", process=False).vertices)


def test_measure_a_rendered_room_with_true_depth(engine):
    # the demo's Measure computation on true depth: an empty 5.0 x 2.6 x 7.0 m room seen from the middle of its
    # width and height; symmetric pixels on the side walls are 5.0 m apart
    from mesa_hf.camera import CameraIntrinsics
    from mesa_hf.data.synthetic import default_intrinsics, empty_room, look_pose, render
    from mesa_hf.demo.engine import DepthResult

    height, width = 120, 160
    k = default_intrinsics(height, width)
    image, depth = render(empty_room((5.0, 2.6, 7.0)), look_pose([2.5, 1.3, 0.3]), k, height, width)
    result = DepthResult("room", Image.fromarray(image), depth, 0.0, (width, height), "none")
    camera = CameraIntrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], width, height, "given")
    measured = engine.measure(result, (1, 60), (width - 2, 60), camera)
    assert measured.distance == pytest.approx(5.0, rel=0.01)
    assert engine.measure(result, (80, 0), (80, height - 1), camera).distance == pytest.approx(2.6, rel=0.01)
    # a downscaled upload: the pixels are the depth map's, the intrinsics the upload's (scaled down with it)
    upload = DepthResult("room", Image.fromarray(image), depth, 0.0, (2 * width, 2 * height), "none", True)
    assert engine.measure(upload, (1, 60), (width - 2, 60), camera.scaled_to(2 * height, 2 * width)).distance == (
        pytest.approx(5.0, rel=0.01)
    )


# ------------------------------------------------------------------------------------------------ the app's API

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(files):
    pytest.importorskip("gradio")
    with launched_demo(files["checkpoint"], files["root"] / "gradio-tmp") as (url, demo):
        assert url.startswith("http://127.0.0.1:")
        yield gradio_client.Client(url, verbose=False, download_files=str(files["root"] / "client-downloads")), demo


AUTO = "automatic (percentiles)"
INTRINSICS_DEFAULT_MODE = "as mesa-hf predict (EXIF, else checkpoint, else NYUv2 Kinect)"
FIXED = "fixed min / max"


def _predict(client, photo: Path, flip: bool = False, cmap: str = "magma_r", mode: str = AUTO, low=None, high=None):
    return client.predict(
        gradio_client.handle_file(str(photo)), flip, cmap, mode, low, high, api_name="/predict"
    )  # fmt: skip


def test_every_event_has_a_public_api_name(client):
    app, demo = client
    from mesa_hf.demo.app import load_video_tab_builder

    names = set(app.view_api(print_info=False, return_format="dict")["named_endpoints"])
    video = {"/predict_video"} if load_video_tab_builder() is not None else set()  # tests/test_demo_video.py
    assert names == {"/predict", "/colorize", "/point_cloud", "/measure", *video}
    assert all(dependency.api_name for dependency in demo.fns.values())


def test_api_predict_outputs(client, files, predict_png):
    app, _ = client
    pair, readout, png16, npy, fx, fy, cx, cy = _predict(app, files["photo"])
    photo, colored = (np.asarray(Image.open(p)) for p in pair)
    assert photo.shape == colored.shape == (480, 640, 3)
    assert "median" in readout and " m " in readout and "640x480 px" in readout and "inference" in readout
    png16 = png16["value"] if isinstance(png16, dict) else png16
    npy = npy["value"] if isinstance(npy, dict) else npy
    assert Path(png16).name == "photo_depth.png" and Path(npy).name == "photo_depth.npy"
    units = read_png16(png16)
    assert units.shape == (480, 640) and np.abs(units - read_png16(predict_png)).max() <= 1  # 1 unit = 1 mm
    depth = np.load(npy)
    assert depth.dtype == np.float32 and depth.shape == (480, 640)
    np.testing.assert_allclose(units / 1000.0, depth, atol=0.0005 + 1e-6)
    expected = nyu_intrinsics(480, 640)
    assert (fx, fy, cx, cy) == pytest.approx((expected.fx, expected.fy, expected.cx, expected.cy), abs=1e-3)


def test_api_colorize_and_point_cloud(client, files):
    app, _ = client
    _predict(app, files["photo"])  # the session's last prediction
    (_photo, colored), readout = app.predict("gray_r", FIXED, 1.0, 2.0, api_name="/colorize")
    assert "colour range** 1.000 - 2.000 m (fixed)" in readout
    assert np.asarray(Image.open(colored)).shape == (480, 640, 3)

    viewer, ply, text, glb = app.predict(
        "fx fy cx cy (pixels)", 500.0, 500.0, 319.5, 239.5, 60.0, 30_000, api_name="/point_cloud"
    )
    ply = ply["value"] if isinstance(ply, dict) else ply
    glb = glb["value"] if isinstance(glb, dict) else glb
    _header, vertices = read_ply(ply)
    assert Path(glb).name == "photo.glb"  # the same points as a mesh, glTF's y-up frame
    np.testing.assert_allclose(
        _glb_vertices(glb) * GLTF_FROM_CAMERA, np.stack([vertices[a] for a in "xyz"], 1), atol=1e-5
    )
    stride = int(re.search(r"every (\d+)\. pixel", text)[1])
    dropped = int(re.search(r"([\d,]+) flying pixels", text)[1].replace(",", ""))
    assert stride == math.ceil(math.sqrt((640 * 480 - dropped) / 30_000))  # the kept pixels, at most 30,000
    assert 0.9 * math.ceil(480 / stride) * math.ceil(640 / stride) < len(vertices) <= 30_000
    assert "fx=500.000" in text and Path(viewer).name == "photo_view.ply"
    _, vertices_fov = read_ply(
        (lambda r: r["value"] if isinstance(r, dict) else r)(
            app.predict("field of view", None, None, None, None, 90.0, 30_000, api_name="/point_cloud")[1]
        )
    )
    # same depth, focal 320 instead of 500: x scales by 500 / 320 around the same centre column
    np.testing.assert_allclose(vertices_fov["z"], vertices["z"], rtol=1e-6)
    with pytest.raises(gradio_client.exceptions.AppError, match="give all four"):
        app.predict("fx fy cx cy (pixels)", None, 500.0, 319.5, 239.5, 60.0, 30_000, api_name="/point_cloud")


def test_api_measure_matches_the_downloaded_depth_and_camera(client, files):
    import json

    from mesa_hf.camera import camera_from_dict, measure_distance

    app, _ = client
    npy = _predict(app, files["photo"])[3]
    depth = np.load(npy["value"] if isinstance(npy, dict) else npy)
    _image, text, camera_file = app.predict(
        "photo", 100, 200, 500, 300, "field of view", None, None, None, None, 75.0, api_name="/measure"
    )
    record = json.loads(Path(camera_file["value"] if isinstance(camera_file, dict) else camera_file).read_text())
    camera = camera_from_dict(record)
    assert record["source"] == "fov" and (record["width"], record["height"]) == (640, 480)
    expected = measure_distance(depth, camera, (100, 200), (500, 300)).distance
    shown = float(re.search(r"distance A-B: ([\d.]+) m", text)[1])
    assert shown == pytest.approx(expected, abs=5e-5) and "source: fov" in text
    a = np.array([(100 - camera.cx) / camera.fx, (200 - camera.cy) / camera.fy, 1.0]) * depth[200, 100]
    b = np.array([(500 - camera.cx) / camera.fx, (300 - camera.cy) / camera.fy, 1.0]) * depth[300, 500]
    assert expected == pytest.approx(np.linalg.norm(a - b), rel=1e-6)  # hand-derived back-projection
    # default intrinsics: NYUv2 assumed for this PNG; only A: its depth and a prompt for B
    _image, text, _ = app.predict("depth", 10, 20, None, None, INTRINSICS_DEFAULT_MODE, None, None, None, None, 60,
                                  api_name="/measure")  # fmt: skip
    assert "Click a second point" in text and "source: assumed" in text and f"{depth[20, 10]:.4f} m" in text
    with pytest.raises(gradio_client.exceptions.AppError, match=r"point B \(640, 0\) is outside the 640x480"):
        app.predict("photo", 1, 1, 640, 0, "field of view", None, None, None, None, 75.0, api_name="/measure")


def test_api_fake_png_is_an_error_message_then_next_request_served(client, files):
    app, _ = client
    with pytest.raises(gradio_client.exceptions.AppError, match=r"notes\.png: not an image file") as error:
        _predict(app, files["fake"])
    assert "Traceback" not in str(error.value) and str(files["root"]) not in str(error.value)
    assert "median" in _predict(app, files["photo"])[1]


def test_launch_is_local_only_and_limited(client):
    _, demo = client
    assert demo.server_name == "127.0.0.1" and not demo.share
    assert demo.max_file_size == 25 * 1024 * 1024 and not demo.analytics_enabled
    assert os.environ.get("GRADIO_ANALYTICS_ENABLED") == "False"


def test_queue_limits_model_runs(client):
    from mesa_hf.demo.app import MODEL_CONCURRENCY_ID

    _, demo = client
    predict = next(fn for fn in demo.fns.values() if fn.api_name == "predict")
    assert predict.concurrency_limit == 1 and predict.concurrency_id == MODEL_CONCURRENCY_ID
    assert demo._queue.max_size == DemoLimits().max_queue_size


# ------------------------------------------------------------------------------------------------ page structure


def _tab_labels(demo) -> list[str]:
    import gradio as gr

    return [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]


def test_video_tab_only_where_its_module_exists(engine, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import sys

    from mesa_hf.demo import app

    assert app.load_video_tab_builder() is None or "Video" in _tab_labels(app.build_demo(engine, examples=[]))
    monkeypatch.setattr(app, "VIDEO_TAB_MODULE", "mesa_hf_test_video_tab")
    assert app.load_video_tab_builder() is None
    assert _tab_labels(app.build_demo(engine, examples=[])) == ["Image", "3-D", "Measure"]

    (tmp_path / "mesa_hf_test_video_tab.py").write_text(
        "import gradio as gr\n\n\ndef build_video_tab(engine):\n    gr.Video(label='clip')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mesa_hf_test_video_tab", raising=False)
    assert _tab_labels(app.build_demo(engine, examples=[])) == ["Image", "3-D", "Measure", "Video"]

    (tmp_path / "mesa_hf_test_video_tab_missing_dep.py").write_text("import no_such_video_decoder\n")
    monkeypatch.setattr(app, "VIDEO_TAB_MODULE", "mesa_hf_test_video_tab_missing_dep")
    assert app.load_video_tab_builder() is None  # a missing decoder: no tab, not a broken one


def test_space_app_builds_the_demo(files, monkeypatch):
    pytest.importorskip("gradio")
    import runpy

    import gradio as gr

    monkeypatch.setenv("MESA_HF_CHECKPOINT", str(files["checkpoint"]))
    app = Path(__file__).resolve().parents[1] / "examples" / "app.py"
    namespace = runpy.run_path(str(app), run_name="space_app")  # builds, does not launch
    assert isinstance(namespace["demo"], gr.Blocks)
    assert namespace["demo"].mesa_engine is get_engine(str(files["checkpoint"]))  # loaded once per process


def test_uploads_over_the_size_limit_are_refused(client, files):
    import httpx

    app, demo = client
    too_big = files["root"] / "too_big.png"
    too_big.write_bytes(files["photo"].read_bytes() + bytes(26 * 1024 * 1024))  # over the 25 MB default
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        _predict(app, too_big)  # gradio_client reads the limit from the app
    with too_big.open("rb") as upload:  # and the server itself refuses it
        response = httpx.post(f"{demo.local_url.rstrip('/')}/gradio_api/upload", files={"files": upload}, timeout=60)
    assert response.status_code == 413
    assert "median" in _predict(app, files["photo"])[1]

"""The web demo's Video tab, driven with gradio_client on a launched app: the depth mp4 (H.264, one colour range
for the clip) and the float16 .npz of depth frames; limits; unreadable files answered with a message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("av")
gradio_client = pytest.importorskip("gradio_client")

from mesa_hf.data.video_files import iter_video_frames, probe_video, read_video_metadata  # noqa: E402
from mesa_hf.demo import get_engine  # noqa: E402
from mesa_hf.demo.app import RANGE_AUTO, RANGE_FIXED  # noqa: E402

from .demo_support import (  # noqa: E402
    launched_demo,
    save_audio_only_mp4,
    save_test_video,
    save_tiny_checkpoint,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo-video")
    fake = root / "notes.mp4"
    fake.write_text("these are my notes, not a video\n")
    return {
        "root": root,
        "checkpoint": save_tiny_checkpoint(root / "checkpoint"),
        "clip": save_test_video(root / "walk.mp4", frames=8, height=96, width=128, fps=10),
        "fake": fake,
        "audio": save_audio_only_mp4(root / "voice.mp4"),
    }


@pytest.fixture(scope="module")
def client(files):
    with launched_demo(files["checkpoint"], files["root"] / "gradio-tmp", examples=[]) as (url, demo):
        yield gradio_client.Client(url, verbose=False, download_files=str(files["root"] / "downloads")), demo


def _value(output) -> str:
    """A file output's local path (gradio_client gives a path, or a dict holding it)."""
    if isinstance(output, dict):
        output = output.get("value") or output.get("video") or output.get("path")
    return str(output)


def _predict_video(client, video: Path, frames=120, fps=30, size=640, flip=False, cmap="magma_r", mode=RANGE_AUTO,
                   low=None, high=None):  # fmt: skip
    return client.predict(
        gradio_client.handle_file(str(video)), frames, fps, size, flip, cmap, mode, low, high,
        api_name="/predict_video",
    )  # fmt: skip


def test_video_tab_and_endpoint_are_in_the_page(client):
    import gradio as gr

    app, demo = client
    assert [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)] == ["Image", "3-D", "Measure", "Video"]
    config = demo.get_config_file()
    assert any(c.get("props", {}).get("elem_id") == "video-input" for c in config["components"])
    assert "/predict_video" in app.view_api(print_info=False, return_format="dict")["named_endpoints"]


def test_predict_video_npz_and_depth_mp4(client, files):
    app, _ = client
    video, readout, npz = _predict_video(app, files["clip"], frames=5, fps=30, size=64)
    with np.load(_value(npz)) as archive:
        depth, range_m = archive["depth"], archive["depth_range_m"]
        assert str(archive["units"]) == "m" and archive["timestamps_s"].shape == (5,)
    assert depth.dtype == np.float16 and depth.shape == (5, 48, 64)  # max frames honoured; 128x96 -> 64x48
    assert np.isfinite(depth).all() and (depth > 0).all()
    # the clip's 2nd-98th percentile range, stated in the readout and used for every frame
    expected = np.percentile(depth.astype(np.float32), [2, 98])
    np.testing.assert_allclose(range_m, expected, rtol=1e-3)
    assert f"{range_m[0]:.3f} - {range_m[1]:.3f} m" in readout and "the same in every frame" in readout
    assert "walk.mp4: 5 frames 64x48 px at 10 fps" in readout and "inference" in readout

    # frame 0's depth is what the engine computes for that decoded frame (float16 precision)
    frame0 = next(iter_video_frames(files["clip"], max_size=64)).image
    single = get_engine(str(files["checkpoint"])).estimate(Image.fromarray(frame0)).depth
    np.testing.assert_allclose(depth[0].astype(np.float32), single, rtol=2e-3, atol=2e-3)

    mp4 = _value(video)
    assert Path(mp4).suffix == ".mp4"
    info = probe_video(mp4)
    assert info.codec == "h264" and (info.height, info.width) == (48, 64)
    assert len(list(iter_video_frames(mp4))) == 5
    assert f"near {range_m[0]:.4f} m to far {range_m[1]:.4f} m" in read_video_metadata(mp4)["comment"]


def test_predict_video_fixed_range_frame_rate_and_limits(client, files):
    app, _ = client
    _video, readout, npz = _predict_video(app, files["clip"], frames=120, fps=5, size=640, mode=RANGE_FIXED,
                                          low=0.5, high=4.0)  # fmt: skip
    with np.load(_value(npz)) as archive:
        assert archive["depth"].shape == (4, 96, 128)  # 8 frames at 10 fps sampled at 5 fps: 0, 2, 4, 6
        np.testing.assert_array_equal(archive["frame_indices"], [0, 2, 4, 6])
        np.testing.assert_allclose(archive["depth_range_m"], [0.5, 4.0])
    assert "0.500 - 4.000 m (fixed)" in readout and "at 5 fps" in readout
    with pytest.raises(gradio_client.exceptions.AppError, match="maximum frames must be 1-120"):
        _predict_video(app, files["clip"], frames=10_000)
    with pytest.raises(gradio_client.exceptions.AppError, match="max resolution must be 16-640 px"):
        _predict_video(app, files["clip"], size=4096)
    with pytest.raises(gradio_client.exceptions.AppError, match=r"0 <= near < far"):
        _predict_video(app, files["clip"], mode=RANGE_FIXED, low=3.0, high=2.0)


@pytest.mark.parametrize(("kind", "message"), [("fake", "not a readable video file"), ("audio", "no video stream")])
def test_unreadable_videos_are_page_messages_then_next_request_served(client, files, kind, message):
    app, _ = client
    with pytest.raises(gradio_client.exceptions.AppError, match=message) as error:
        _predict_video(app, files[kind])
    text = str(error.value)
    assert files[kind].name in text and "Traceback" not in text and "\n" not in text.strip()
    assert str(files["root"]) not in text and "gradio-tmp" not in text  # no server paths
    _video, readout, _npz = _predict_video(app, files["clip"], frames=2, size=64)
    assert "2 frames 64x48" in readout


def test_video_runs_share_the_model_queue(client):
    from mesa_hf.demo.app import MODEL_CONCURRENCY_ID

    _, demo = client
    video = next(fn for fn in demo.fns.values() if fn.api_name == "predict_video")
    image = next(fn for fn in demo.fns.values() if fn.api_name == "predict")
    assert video.concurrency_id == image.concurrency_id == MODEL_CONCURRENCY_ID
    assert video.concurrency_limit == image.concurrency_limit == 1

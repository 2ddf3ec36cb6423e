"""The web demo's Video tab: a video in, its depth out as an H.264 mp4 with one colour range for the whole clip (no
per-frame flicker from normalisation) and the ``.npz`` of float16 depth frames in metres to download.

Built by :func:`mesa_hf.demo.app.build_demo` inside ``gr.Tab("Video")`` when this module imports (it needs PyAV,
the video decoder). The work is :meth:`mesa_hf.demo.engine.DemoEngine.predict_video`, i.e.
:func:`mesa_hf.evaluation.predict_video.predict_video_file` with the engine's loaded model, processor and predictor,
bounded by :class:`~mesa_hf.demo.engine.DemoLimits` (frames, frame size, frame rate). The event ``/predict_video``
shares the image model's queue slots (``concurrency_id``), so a video and a photo never run at the same time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av  # noqa: F401  (the decoder: without it the page leaves the tab out)
import gradio as gr

from mesa_hf.data.video_files import VIDEO_FILE_EXTENSIONS, VideoReadError

from .app import MODEL_CONCURRENCY_ID, RANGE_AUTO, RANGE_FIXED, _optional_number, _page_error
from .engine import COLORMAPS, DemoEngine

DEFAULT_TARGET_FPS = 10.0
"""Start value of the frame-rate control (frames/s sampled from the video)."""


def video_readout(engine: DemoEngine, prediction: Any, seconds: float, flip: bool) -> str:
    """Markdown lines: frames, size, fps and time span; the clip's colour range (metres); inference time."""
    near, far = prediction.depth_range_m
    per_frame = seconds / max(prediction.num_frames, 1)
    tta = "flip" if flip else "none"
    return "  \n".join(
        [
            f"**clip** {prediction.source}: {prediction.num_frames} frames {prediction.width}x{prediction.height} px "
            f"at {prediction.fps:g} fps ({prediction.first_time_s:.2f}-{prediction.last_time_s:.2f} s of the video)",
            f"**colour range** {near:.3f} - {far:.3f} m ({prediction.range_source}), the same in every frame",
            f"**inference** {seconds:.2f} s ({per_frame:.3f} s per frame) on {engine.device_name} "
            f"({engine.dtype}, TTA: {tta})",
            f"**.npz** depth float16 metres, {prediction.num_frames} x {prediction.height} x {prediction.width} "
            "(frames x H x W), with timestamps_s and depth_range_m",
        ]
    )


def build_video_tab(engine: DemoEngine) -> None:
    """The Video tab's components and its ``/predict_video`` event (call inside the open ``gr.Tab``)."""
    limits = engine.limits
    with gr.Row():
        with gr.Column(scale=1):
            video_input = gr.Video(
                label=f"Video ({', '.join(e.lstrip('.') for e in VIDEO_FILE_EXTENSIONS)})",
                sources=["upload"],
                elem_id="video-input",
            )
            max_frames = gr.Slider(
                1,
                limits.max_video_frames,
                value=min(60, limits.max_video_frames),
                step=1,
                label="maximum frames",
                elem_id="video-max-frames",
            )
            target_fps = gr.Slider(
                1,
                limits.max_video_fps,
                value=min(DEFAULT_TARGET_FPS, limits.max_video_fps),
                step=1,
                label="frame rate (frames per second of video; no effect on slower videos)",
            )
            max_size = gr.Slider(
                64,
                limits.max_video_side,
                value=limits.max_video_side,
                step=32,
                label="max resolution (longer side, px)",
            )
            flip = gr.Checkbox(label="Flip test-time augmentation (2 passes)", value=False)
            cmap = gr.Dropdown(list(COLORMAPS), value=COLORMAPS[0], label="Colour map")
            range_mode = gr.Radio(
                [RANGE_AUTO, RANGE_FIXED], value=RANGE_AUTO, label="Depth range (one for the whole clip)"
            )
            with gr.Row():
                vmin = gr.Number(label="min (m)", value=0.5, minimum=0)
                vmax = gr.Number(label="max (m)", value=10.0, minimum=0)
            run_button = gr.Button("Estimate depth video", variant="primary", elem_id="run-video")
        with gr.Column(scale=2):
            video_output = gr.Video(
                label="Depth (near = bright with magma_r)",
                interactive=False,
                autoplay=True,
                loop=True,
                elem_id="depth-video",
            )
            readout = gr.Markdown(elem_id="video-readout")
            npz_button = gr.DownloadButton("depth frames .npz (float16 m)", interactive=False, elem_id="download-npz")

    def predict_video(
        upload: dict | None, frames: Any, fps: Any, size: Any, use_flip: Any, cmap_name: str, mode: str, low, high
    ):
        # preprocess=False (as the Image tab): the file is read here, so that a file that is not a video gets a
        # message in the page (VideoReadError) and Gradio runs no FFmpeg conversion of its own.
        path = (upload or {}).get("path")
        if not path:
            raise gr.Error("upload a video first")
        name = Path((upload or {}).get("orig_name") or path).name
        try:
            depth_range = None
            if mode == RANGE_FIXED:
                depth_range = (_optional_number(low), _optional_number(high))
                if None in depth_range:
                    raise ValueError("give both min and max (m) for a fixed depth range")
            prediction, seconds = engine.predict_video(
                path,
                name=name,
                max_frames=int(frames),
                target_fps=float(fps),
                max_size=int(size),
                depth_range=depth_range,
                cmap=cmap_name,
                flip=bool(use_flip),
            )
        except (VideoReadError, ValueError) as error:
            raise _page_error(error) from error
        return (
            prediction.mp4,
            video_readout(engine, prediction, seconds, bool(use_flip)),
            gr.DownloadButton(value=prediction.npz, interactive=True),
        )

    run_button.click(
        predict_video,
        inputs=[video_input, max_frames, target_fps, max_size, flip, cmap, range_mode, vmin, vmax],
        outputs=[video_output, readout, npz_button],
        api_name="predict_video",
        preprocess=False,
        concurrency_id=MODEL_CONCURRENCY_ID,
        concurrency_limit=limits.concurrency_limit,
    )

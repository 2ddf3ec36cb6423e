"""Shared set-up of the web demo tests: a tiny saved checkpoint, test photos and a launched demo app."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from mesa_hf import MeSaImageProcessor
from mesa_hf.data.synthetic import synthetic_view

from .helpers import tiny_depth_model


def save_tiny_checkpoint(folder: Path) -> Path:
    """A seeded `test`-preset model and its processor, saved with save_pretrained (loads like a real one)."""
    tiny_depth_model(seed=0).save_pretrained(folder)
    MeSaImageProcessor().save_pretrained(folder)
    return folder


def save_photo(path: Path, seed: int = 3, height: int = 480, width: int = 640) -> Path:
    """A rendered synthetic-world room as an RGB PNG (a stand-in for a photo; no files needed)."""
    Image.fromarray(synthetic_view(seed=seed, index=0, height=height, width=width)[0]).save(path)
    return path


def save_fake_png(path: Path) -> Path:
    """A text file named like a PNG."""
    path.write_text("these are my notes, not a picture\n")
    return path


@contextlib.contextmanager
def gradio_environment(temp_dir: Path) -> Iterator[None]:
    """GRADIO_TEMP_DIR for this run and analytics off, restored afterwards."""
    saved = {key: os.environ.get(key) for key in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def launched_demo(checkpoint: Path, temp_dir: Path, **build_options) -> Iterator[tuple[str, object]]:
    """Build and launch the demo on 127.0.0.1 (a free port) in this process: (url, Blocks); closed afterwards."""
    with gradio_environment(temp_dir):
        from mesa_hf.demo import build_demo, launch_demo

        demo = build_demo(str(checkpoint), **build_options)
        launch_demo(demo, port=None, prevent_thread_lock=True)
        try:
            yield demo.local_url.rstrip("/"), demo
        finally:
            demo.close()


def read_png16(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def save_test_video(path: Path, frames: int = 8, height: int = 96, width: int = 128, fps: float = 10.0) -> Path:
    """A short H.264 mp4 of consecutive synthetic-world views (a slow walk through one room)."""
    from mesa_hf.data.video_files import write_video

    images = [synthetic_view(seed=7, index=i, height=height, width=width)[0] for i in range(frames)]
    return write_video(path, images, fps=fps)


def save_audio_only_mp4(path: Path) -> Path:
    """An .mp4 holding one AAC audio stream and no video."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path

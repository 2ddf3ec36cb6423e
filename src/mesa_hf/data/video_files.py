"""Reading and writing video *files* (mp4, mov, mkv, webm, avi) with PyAV (FFmpeg's libraries, shipped in its wheels).

Not to be confused with :mod:`mesa_hf.data.video`, the video *dataset* loaders of frame folders.

- :func:`probe_video` reads a file's header: size (after rotation), frame rate, frame count, duration, codec.
- :func:`iter_video_frames` streams decoded frames one by one (memory does not grow with the video's length) as
  :class:`VideoFrame` (RGB uint8 (H, W, 3), timestamp in seconds, index in the stream), with sampling by
  ``max_frames``, ``target_fps`` or ``stride`` and downscaling by ``max_size``; the rotation stored in the file
  (display matrix) is applied, so frames come out upright as players show them.
- :class:`VideoWriter` encodes RGB frames to H.264 mp4 (``yuv420p``; odd sizes are padded by one edge pixel).

Every failure to read a file (no such file, zero bytes, not a container FFmpeg knows, no video stream, e.g. an
audio-only file, a codec with no decoder, corrupt data, no decodable frame) raises :class:`VideoReadError`, a
``ValueError`` whose message is one line naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_FILE_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
"""File suffixes treated as video files (by `mesa-hf predict` and the ``video:`` dataset format)."""

H264_ENCODERS = ("libx264", "h264", "libopenh264")
"""H.264 encoders tried in order (PyAV's wheels ship libx264)."""


class VideoReadError(ValueError):
    """A video file that cannot be read; the message is one line naming the file."""


def _import_av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a dependency
        raise ImportError("reading and writing video files needs PyAV: pip install av") from err
    return av


def is_video_file(path: str | Path) -> bool:
    """True if `path` has a video-file suffix (:data:`VIDEO_FILE_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_FILE_EXTENSIONS


def _one_line(error: BaseException) -> str:
    """FFmpeg's message on one line, without the file name it repeats (the caller names the file)."""
    text = getattr(error, "strerror", None) or str(error)
    text = " ".join(str(text).split()) or type(error).__name__
    return text[:300]


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's header says.

    Attributes:
        path: the file.
        height, width: pixels of the upright frame (rotation applied), before any ``max_size``.
        fps: average frame rate in frames/s (``None`` if the file does not say).
        num_frames: frame count from the header (``None`` if unknown; may be approximate for some containers).
        duration_s: duration in seconds (``None`` if unknown).
        rotation: degrees counter-clockwise that the display matrix rotates the stored frame (0, ±90, 180).
        codec: decoder name (e.g. ``h264``).
    """

    path: Path
    height: int
    width: int
    fps: float | None
    num_frames: int | None
    duration_s: float | None
    rotation: int
    codec: str


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: ``image`` RGB uint8 (H, W, 3) upright, ``time_s`` its presentation time in seconds
    (from the stream's timestamps, else ``index / fps``), ``index`` its position among all decoded frames."""

    image: np.ndarray
    time_s: float
    index: int


def _open(path: Path):
    av = _import_av()
    if not path.exists():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.is_dir():
        raise VideoReadError(f"{path}: is a folder, not a video file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes), not a video")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as err:
        raise VideoReadError(f"{path}: not a readable video file ({_one_line(err)})") from err
    try:
        if not container.streams:
            raise VideoReadError(f"{path}: no streams found, the file is truncated or corrupt")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoReadError(f"{path}: no video stream (streams: {', '.join(kinds)}); is it an audio-only file?")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise VideoReadError(f"{path}: unsupported video codec, FFmpeg has no decoder for it")
    except BaseException:
        container.close()
        raise
    return container, stream


def _upright(image: np.ndarray, rotation: float) -> np.ndarray:
    quarter_turns = round(rotation / 90.0) % 4
    return np.ascontiguousarray(np.rot90(image, k=quarter_turns)) if quarter_turns else image


def _first_frame_rotation(container, stream, path: Path) -> int:
    """Rotation from the first decoded frame's display matrix (PyAV's ``VideoFrame.rotation``)."""
    for frame in _decode(container, stream, path):
        return round(float(getattr(frame, "rotation", 0) or 0))
    raise VideoReadError(f"{path}: the video stream holds no decodable frame")


def _decode(container, stream, path: Path):
    av = _import_av()
    try:
        yield from container.decode(stream)
    except av.FFmpegError as err:
        raise VideoReadError(f"{path}: corrupt or unsupported video data ({_one_line(err)})") from err


def probe_video(path: str | Path) -> VideoInfo:
    """Header facts of a video file (decodes the first frame to read its rotation and check it decodes)."""
    path = Path(path)
    container, stream = _open(path)
    try:
        rotation = _first_frame_rotation(container, stream, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation % 180 != 0:
            width, height = height, width
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        num_frames = int(stream.frames) if stream.frames else None
        if num_frames is None and duration and fps:
            num_frames = round(duration * fps)
        return VideoInfo(path, int(height), int(width), fps, num_frames, duration, rotation, stream.codec_context.name)
    finally:
        container.close()


def scaled_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """(H, W) with the longer side at most `max_size` (aspect kept, rounded), unchanged when it already fits."""
    if max_size is None or max(height, width) <= max_size:
        return height, width
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def expected_frame_count(
    info: VideoInfo, max_frames: int | None = None, target_fps: float | None = None, stride: int | None = None
) -> int | None:
    """How many frames :func:`iter_video_frames` will yield with these settings (from the header; ``None`` if the
    header has no frame count)."""
    if info.num_frames is None:
        return max_frames
    count = info.num_frames
    if stride:
        count = math.ceil(count / stride)
    elif target_fps and info.fps and target_fps < info.fps:
        count = math.ceil(count * target_fps / info.fps)
    return min(count, max_frames) if max_frames else count


def _check_sampling(max_frames, target_fps, stride) -> None:
    if target_fps is not None and stride is not None:
        raise ValueError("give target_fps or stride, not both")
    if target_fps is not None and not target_fps > 0:
        raise ValueError(f"target_fps must be > 0, got {target_fps}")
    if stride is not None and int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")


def iter_video_frames(
    path: str | Path,
    *,
    max_frames: int | None = None,
    target_fps: float | None = None,
    stride: int | None = None,
    max_size: int | None = None,
    threads: int | None = None,
) -> Iterator[VideoFrame]:
    """Decode a video file frame by frame (streaming: one frame in memory at a time).

    Args:
        path: the video file.
        max_frames: stop after this many yielded frames.
        target_fps: keep about this many frames per second of video (the first frame at or after each multiple
            of ``1 / target_fps`` s); no effect when the video's rate is lower.
        stride: keep every `stride`-th decoded frame (instead of `target_fps`).
        max_size: downscale (area filter) so that the longer side is at most this many pixels.
        threads: decoder threads (``None``: FFmpeg's choice).

    Yields :class:`VideoFrame` in presentation order; raises :class:`VideoReadError` naming the file.
    """
    _check_sampling(max_frames, target_fps, stride)
    path = Path(path)
    container, stream = _open(path)
    try:
        stream.thread_type = "AUTO"
        if threads is not None:
            stream.codec_context.thread_count = int(threads)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
        yielded, next_time = 0, 0.0
        decoded = -1
        for decoded, frame in enumerate(_decode(container, stream, path)):
            if frame.time is not None:
                start = frame.time if start is None else start
                time_s = float(frame.time - start)
            else:
                time_s = decoded / fps if fps else float(decoded)
            if stride is not None and decoded % int(stride):
                continue
            if target_fps is not None:
                if time_s + 1e-6 < next_time:
                    continue
                next_time = (math.floor(time_s * target_fps + 1e-6) + 1) / target_fps
            rotation = float(getattr(frame, "rotation", 0) or 0)
            height, width = frame.height, frame.width
            upright_hw = (width, height) if round(rotation / 90) % 2 else (height, width)
            new_h, new_w = scaled_size(*upright_hw, max_size)
            if (new_h, new_w) != upright_hw:
                if round(rotation / 90) % 2:
                    new_h, new_w = new_w, new_h
                frame = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation="AREA")
            try:
                image = frame.to_ndarray(format="rgb24")
            except Exception as err:  # a frame FFmpeg cannot convert
                raise VideoReadError(f"{path}: cannot convert frame {decoded} to RGB ({_one_line(err)})") from err
            yield VideoFrame(_upright(image, rotation), time_s, decoded)
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                return
        if decoded < 0:
            raise VideoReadError(f"{path}: the video stream holds no decodable frame")
    finally:
        container.close()


class VideoWriter:
    """Encode RGB uint8 frames (H, W, 3), all of one size, to an H.264 mp4 (or another container by suffix).

    Use as a context manager; the file is written under a temporary name and renamed on a clean close, so a failed
    run leaves no half-written video. Odd frame sizes are padded by one replicated edge pixel (``yuv420p`` needs
    even sizes). ``metadata`` goes into the container's tags (e.g. ``{"comment": "depth 0.5-4.0 m"}``).

    Args:
        path: output file.
        fps: frame rate (frames/s; fractional rates such as 29.97 are kept as fractions).
        crf: x264 constant rate factor (lower = better quality; 18 is visually lossless).
        metadata: container tags.
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 18, metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        self.crf = int(crf)
        self.metadata = dict(metadata or {})
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self.num_frames = 0

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def _start(self, height: int, width: int) -> None:
        av = _import_av()
        self._container = av.open(str(self._tmp), mode="w", format="mp4" if self.path.suffix == ".mp4" else None)
        for key, value in self.metadata.items():
            self._container.metadata[key] = value
        error = None
        for codec in H264_ENCODERS:
            try:
                self._stream = self._container.add_stream(codec, rate=self.fps)
                break
            except (av.FFmpegError, ValueError) as err:  # encoder missing from this FFmpeg build
                error = err
        if self._stream is None:
            raise RuntimeError(f"no H.264 encoder in this FFmpeg build ({error})")
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        if self._stream.codec_context.name == "libx264":
            self._stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        self._size = (height, width)

    def write(self, image: np.ndarray) -> None:
        """Append one RGB uint8 (H, W, 3) frame."""
        av = _import_av()
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{self.path}: frames must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        if self._container is None:
            self._start(*image.shape[:2])
        if image.shape[:2] != self._size:
            raise ValueError(f"{self.path}: frame size {image.shape[:2]} differs from the first frame's {self._size}")
        if image.shape[0] % 2 or image.shape[1] % 2:
            image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the file into place; returns its path."""
        if self._container is None:
            raise ValueError(f"{self.path}: no frame written")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        self._tmp.replace(self.path)
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._container is not None:
                self._container.close()
                self._container = None
            self._tmp.unlink(missing_ok=True)


def write_video(path: str | Path, frames, fps: float, **kwargs: Any) -> Path:
    """Write an iterable of RGB uint8 (H, W, 3) frames to an H.264 video file (see :class:`VideoWriter`)."""
    with VideoWriter(path, fps, **kwargs) as writer:
        for image in frames:
            writer.write(image)
    return Path(path)


def read_video_metadata(path: str | Path) -> dict[str, str]:
    """The container's tags (e.g. the ``comment`` that :func:`mesa_hf.evaluation.predict_video.predict_video_file`
    writes with the depth range)."""
    path = Path(path)
    container, _ = _open(path)
    try:
        return dict(container.metadata)
    finally:
        container.close()


__all__ = [
    "VIDEO_FILE_EXTENSIONS",
    "VideoFrame",
    "VideoInfo",
    "VideoReadError",
    "VideoWriter",
    "expected_frame_count",
    "is_video_file",
    "iter_video_frames",
    "probe_video",
    "read_video_metadata",
    "scaled_size",
    "write_video",
]

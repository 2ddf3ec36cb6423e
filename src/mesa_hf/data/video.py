"""Video loaders: sequences of frames with intrinsics (and poses / depth where the dataset has them) turned into
the ``video`` dataset kind (see :mod:`.columns`): one row per target frame whose sources at ``frame_offsets`` all
exist in the same sequence.

Formats: ``"7scenes"`` (Microsoft 7-Scenes ``seq-XX/frame-XXXXXX.{color.png|jpg, depth.png, pose.txt}``),
``"tum"`` (TUM RGB-D: ``rgb.txt``/``depth.txt``/``groundtruth.txt`` associated by timestamp, or the two-frame
``case_*/{img,dep,pose}_{prev,curr}`` pairs layout), ``"hololens"`` (``images/``, ``depth/``, ``K.txt``, ``poses.txt``
as in DeepVideoMVS), ``"nyu_raw"`` (NYUv2 raw scenes as BTS "sync" folders ``rgb_XXXXX.jpg`` [+ ``sync_depth``] or
raw ``r-*.ppm`` dumps), ``"frames"`` (any folder of frames + K, optional ``poses.txt`` and depth folder) and
``"video"`` (video files, decoded with PyAV as a stream: :func:`load_video_file_dataset`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .columns import VIDEO_FEATURES, encode_depth, intrinsics_matrix
from .decoders import decode_depth, read_image_file
from .loaders import NYU_INTRINSICS, build_dataset, dataset_from_generator, file_stamp
from .validation import (
    DEFAULT_MAX_MEDIAN_DEPTH,
    SampleSkipper,
    check_depth,
    check_intrinsics,
    check_same_size,
    logger,
)

SEVEN_SCENES_INTRINSICS = intrinsics_matrix(585.0, 585.0, 320.0, 240.0)
TUM_INTRINSICS = intrinsics_matrix(525.0, 525.0, 319.5, 239.5)
VIDEO_DATASET_FORMATS = ("7scenes", "tum", "hololens", "nyu_raw", "frames", "video")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm")


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Whitespace-separated numbers from a text file, reshaped (e.g. a 3×3 K or a 4×4 pose)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: not a whitespace-separated matrix ({err})") from err
    if values.size != shape[0] * shape[1]:
        raise ValueError(f"{path}: expected {shape[0] * shape[1]} numbers, found {values.size}")
    return values.reshape(shape)


def quaternion_pose(tx, ty, tz, qx, qy, qz, qw) -> np.ndarray:
    """4×4 camera-to-world matrix from a TUM pose line (translation, unit quaternion x y z w)."""
    q = np.array([qx, qy, qz, qw], dtype=np.float64)
    x, y, z, w = q / np.linalg.norm(q)
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rot, (tx, ty, tz)
    return pose


def _sequence(name, frames, k, depths=None, poses=None, depth_format=None, depth_scale=None) -> dict:
    return {
        "name": name,
        "frames": [str(f) for f in frames],
        "depths": None if depths is None else [None if d is None else str(d) for d in depths],
        "poses": None if poses is None else [np.asarray(p, dtype=np.float32).tolist() for p in poses],
        "intrinsics": None if k is None else np.asarray(k, dtype=np.float32).tolist(),
        "depth_format": depth_format,
        "depth_scale": depth_scale,
        "stamps": [file_stamp(f) for f in frames] + [file_stamp(d) for d in depths or () if d is not None],
    }


# ---------------------------------------------------------------- formats


def _seven_scenes(path: Path, intrinsics) -> list[dict]:
    seq_dirs = [path] if any(path.glob("frame-*.color.*")) else sorted(p for p in path.glob("seq-*") if p.is_dir())
    sequences = []
    for seq in seq_dirs:
        frames = sorted(p for p in seq.glob("frame-*.color.*") if p.suffix.lower() in FRAME_EXTENSIONS)
        stems = [f.name.split(".color.")[0] for f in frames]
        k = intrinsics
        if k is None:
            k_file = next(
                (p / "camera-intrinsics.txt" for p in (seq, seq.parent) if (p / "camera-intrinsics.txt").is_file()),
                None,
            )
            k = read_matrix(k_file, (3, 3)) if k_file else SEVEN_SCENES_INTRINSICS
        depths = [seq / f"{s}.depth.png" for s in stems]
        poses = [read_matrix(seq / f"{s}.pose.txt", (4, 4)) for s in stems]
        name = seq.name if seq != path else path.name
        sequences.append(_sequence(name, frames, k, depths, poses, "7scenes"))
    return sequences


def _read_tum_list(path: Path) -> tuple[np.ndarray, list[list[str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    stamps, rest = [], []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            parts = line.split()
            stamps.append(float(parts[0]))
            rest.append(parts[1:])
    return np.array(stamps), rest


def _nearest(stamps: np.ndarray, t: float, max_dt: float) -> int | None:
    if stamps.size == 0:
        return None
    i = int(np.argmin(np.abs(stamps - t)))
    return i if abs(stamps[i] - t) <= max_dt else None


def _tum(path: Path, intrinsics, max_dt: float = 0.02) -> list[dict]:
    k = TUM_INTRINSICS if intrinsics is None else intrinsics
    if (path / "rgb.txt").is_file():
        rgb_t, rgb = _read_tum_list(path / "rgb.txt")
        depth_t, depth = _read_tum_list(path / "depth.txt") if (path / "depth.txt").is_file() else (np.array([]), [])
        gt_t, gt = _read_tum_list(path / "groundtruth.txt") if (path / "groundtruth.txt").is_file() else (None, [])
        frames, depths, poses = [], [], []
        for t, (name,) in zip(rgb_t, rgb):
            j = _nearest(depth_t, t, max_dt)
            if gt_t is not None:
                g = _nearest(gt_t, t, max_dt)
                if g is None:
                    continue  # frames without ground-truth pose are left out when the sequence has poses
                poses.append(quaternion_pose(*map(float, gt[g][:7])))
            frames.append(path / name)
            depths.append(None if j is None else path / depth[j][0])
        return [_sequence(path.name, frames, k, depths, poses if gt_t is not None else None, "tum")]
    cases = sorted(p for p in path.glob("case_*") if (p / "img_curr.png").is_file())
    if intrinsics is None and (path / "kinect_params.txt").is_file():
        k = read_matrix(path / "kinect_params.txt", (3, 3))
    sequences = []
    for case in cases:  # two-frame sequences: [prev, curr]
        frames = [case / "img_prev.png", case / "img_curr.png"]
        depths = [case / "dep_prev.png", case / "dep_curr.png"]
        poses = [quaternion_pose(*read_matrix(case / f"pose_{w}.txt", (1, 7))[0]) for w in ("prev", "curr")]
        sequences.append(_sequence(case.name, frames, k, depths, poses, "tum"))
    return sequences


def _hololens(path: Path, intrinsics) -> list[dict]:
    frames = sorted(p for p in (path / "images").glob("*") if p.suffix.lower() in FRAME_EXTENSIONS)
    k = read_matrix(path / "K.txt", (3, 3)) if intrinsics is None and (path / "K.txt").is_file() else intrinsics
    depths = [path / "depth" / f"{f.stem}.png" for f in frames] if (path / "depth").is_dir() else None
    poses = _read_pose_lines(path / "poses.txt", len(frames)) if (path / "poses.txt").is_file() else None
    return [_sequence(path.name, frames, k, depths, poses, "hololens")]


def _read_pose_lines(path: Path, num_frames: int) -> list[np.ndarray]:
    """One camera-to-world pose per line (16 numbers: 4×4, or 12: 3×4), in frame order; extra lines (poses of
    frames not present) are ignored."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < num_frames:
        raise ValueError(f"{path}: {len(lines)} poses for {num_frames} frames")
    poses = []
    for i, values in enumerate(lines[:num_frames]):
        if len(values) not in (12, 16):
            raise ValueError(f"{path}:{i + 1}: expected 12 or 16 numbers (a 3x4 or 4x4 pose), found {len(values)}")
        pose = np.eye(4)
        pose[: len(values) // 4] = np.array(values, dtype=np.float64).reshape(-1, 4)
        poses.append(pose)
    return poses


def _nyu_raw(path: Path, intrinsics) -> list[dict]:
    k = NYU_INTRINSICS if intrinsics is None else intrinsics
    scene_dirs = sorted({p.parent for p in path.rglob("rgb_*.jpg")} | {p.parent for p in path.rglob("r-*.ppm")})
    sequences = []
    for scene in scene_dirs:
        sync = sorted(scene.glob("rgb_*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))
        if sync:
            depths = []
            for f in sync:
                name = f.name.replace("rgb_", "sync_depth_").replace(".jpg", ".png")
                cand = [scene / name, scene.parent / "depth" / name]
                depths.append(next((c for c in cand if c.is_file()), None))
            name = scene.name if scene.name != "rgb" else scene.parent.name
            sequences.append(_sequence(name, sync, k, depths, None, "nyu"))
        else:  # raw dumps: r-<timestamp>-<n>.ppm, ordered by timestamp (depth needs registration: not provided)
            raw = sorted(scene.glob("r-*.ppm"), key=lambda p: float(p.stem.split("-")[1]))
            sequences.append(_sequence(scene.name, raw, k))
    return sequences


def _frames(path: Path, intrinsics, depth_format, depth_scale) -> list[dict]:
    folder = path / "images" if (path / "images").is_dir() else path
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
    k = intrinsics
    if k is None:
        k_file = next(
            (path / n for n in ("K.txt", "intrinsics.txt", "camera-intrinsics.txt") if (path / n).is_file()), None
        )
        k = read_matrix(k_file, (3, 3)) if k_file else None
    depths = None
    if (path / "depth").is_dir():
        if depth_format is None:
            raise ValueError(f"{path / 'depth'}: a depth folder needs depth_format (and depth_scale for 'png')")
        by_stem = {p.stem: p for p in (path / "depth").iterdir()}
        depths = [by_stem.get(f.stem, path / "depth" / f"{f.stem}.png") for f in frames]
    poses = _read_pose_lines(path / "poses.txt", len(frames)) if (path / "poses.txt").is_file() else None
    return [_sequence(path.name, frames, k, depths, poses, depth_format, depth_scale)]


# ---------------------------------------------------------------- rows


def _clip_row(seq: dict, t: int, offsets: tuple[int, ...], max_median_depth) -> dict:
    indices = [t, *(t + o for o in offsets)]
    images, size = [], None
    for i in indices:
        data, hw = read_image_file(seq["frames"][i])
        if size is not None and hw != size:
            raise ValueError(f"{seq['frames'][i]}: frame size {hw} differs from the target frame's {size}")
        size = hw
        images.append({"bytes": data, "path": seq["frames"][i]})
    depth = None
    if seq["depths"] is not None and seq["depths"][t] is not None:
        depth = decode_depth(seq["depths"][t], seq["depth_format"], seq["depth_scale"])
        check_same_size(size, depth.shape, seq["frames"][t], seq["depths"][t])
        check_depth(depth, seq["depths"][t], max_median_depth)
    return {
        "image": images[0],
        "source_images": images[1:],
        "source_offsets": list(offsets),
        "intrinsics": seq["intrinsics"],
        "poses": None if seq["poses"] is None else [seq["poses"][i] for i in indices],
        "depth": None if depth is None else encode_depth(depth),
        "scene": seq["name"],
        "frame_index": t,
    }


def _clip_targets(num_frames: int, offsets: tuple[int, ...]) -> range:
    return range(max(0, -min(offsets)), num_frames - max(0, max(offsets)))


def _video_rows(sequences, offsets, skip_invalid, max_median_depth, name):
    skipper = SampleSkipper(skip_invalid, name)
    for seq in sequences:
        for t in _clip_targets(len(seq["frames"]), offsets):
            row = skipper.run(_clip_row, seq, t, offsets, max_median_depth)
            if row is not None:
                yield row


def load_video_dataset(
    format: str,
    path: str | Path,
    *,
    frame_offsets: tuple[int, ...] = (-1, 1),
    intrinsics=None,
    depth_format: str | None = None,
    depth_scale: float | None = None,
    max_median_depth: float | None = DEFAULT_MAX_MEDIAN_DEPTH,
    skip_invalid: bool = False,
    streaming: bool = False,
    cache_dir: str | None = None,
    **video_options,
):
    """Load a video dataset (columns ``image``, ``source_images``, ``source_offsets``, ``intrinsics``, ``poses``
    [camera-to-world, target first], ``depth``, ``scene``, ``frame_index``).

    Args:
        format: one of :data:`VIDEO_DATASET_FORMATS` (see the module docstring).
        path: the sequence folder (or a folder of sequences for ``7scenes``/``nyu_raw``; the pairs root for TUM).
        frame_offsets: source frames relative to the target, e.g. ``(-1, 1)`` (Monodepth2) or ``(-5, 5)`` for slow
            30 Hz handheld video; a row exists for each target whose sources all lie in its sequence.
        intrinsics: 3×3 or (fx, fy, cx, cy) overriding the dataset's (required for ``frames`` without a K file).
        depth_format, depth_scale: the depth files' format for ``frames`` (see :mod:`.decoders`).
        max_median_depth, skip_invalid, streaming, cache_dir: as in :func:`~mesa_hf.data.load_depth_dataset`.
        video_options: for ``"video"`` (video files): ``max_frames``, ``target_fps``, ``stride``, ``max_size``,
            ``static_threshold`` of :func:`load_video_file_dataset`.
    """
    if format == "video":
        return load_video_file_dataset(
            path,
            frame_offsets=frame_offsets,
            intrinsics=intrinsics,
            streaming=streaming,
            cache_dir=cache_dir,
            **video_options,
        )
    path = Path(path)
    name = f"{format}:{path}"
    offsets = tuple(int(o) for o in frame_offsets)
    if not offsets or 0 in offsets:
        raise ValueError(f"frame_offsets must be non-empty and non-zero, got {frame_offsets}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset path not found")
    k = None if intrinsics is None else check_intrinsics(intrinsics, "intrinsics")
    if format == "7scenes":
        sequences = _seven_scenes(path, k)
    elif format == "tum":
        sequences = _tum(path, k)
    elif format == "hololens":
        sequences = _hololens(path, k)
    elif format == "nyu_raw":
        sequences = _nyu_raw(path, k)
    elif format == "frames":
        sequences = _frames(path, k, depth_format, depth_scale)
    else:
        raise ValueError(f"unknown video dataset format {format!r}; expected one of {VIDEO_DATASET_FORMATS}")
    for seq in sequences:
        seq["intrinsics"] = check_intrinsics(seq["intrinsics"], f"{name} ({seq['name']})", required=True).tolist()
    num = sum(len(_clip_targets(len(s["frames"]), offsets)) for s in sequences)
    if num == 0:
        lengths = [len(s["frames"]) for s in sequences]
        raise ValueError(
            f"{path}: empty dataset, no clip fits frame_offsets {offsets} in the sequences found (frames: {lengths})"
        )
    kwargs = {"sequences": sequences, "offsets": offsets, "skip_invalid": skip_invalid}
    kwargs.update(max_median_depth=max_median_depth, name=name)
    return build_dataset(
        _video_rows, kwargs, VIDEO_FEATURES, num_candidates=num, source=name, streaming=streaming, cache_dir=cache_dir
    )


# ---------------------------------------------------------------- video files (mp4, mov, mkv, webm, avi)

INTRINSICS_SIDECAR_SUFFIX = ".intrinsics.json"
"""Per-video intrinsics file: ``clip.mp4`` -> ``clip.intrinsics.json`` (or ``clip.mp4.intrinsics.json``) beside it."""
CAMERAS_FILE = "cameras.json"
"""Per-folder intrinsics file: ``{"clip.mp4": {"fx": ..}, ...}`` per file, or one ``{"fx": ..}`` for all videos."""
DEFAULT_STATIC_THRESHOLD = 0.002
"""Largest mean absolute grey-level change (0-1) between a clip's target and every source for the clip to count as
near-static (camera not moving) and be skipped: compression noise of a still camera stays well below it."""

MISSING_INTRINSICS_HELP = (
    "give them in one of three ways: --intrinsics FX FY CX CY (Python: intrinsics=(fx, fy, cx, cy)), a sidecar file "
    '{stem}.intrinsics.json beside the video with {{"fx": .., "fy": .., "cx": .., "cy": ..}} (pixels of the video; '
    'optional "width"/"height" if measured at another resolution), or a cameras.json in its folder mapping file '
    "names to such entries"
)


def video_files_in(path: str | Path) -> list[Path]:
    """A video file, or the video files of a folder (sorted), for the ``video:PATH`` format."""
    from .video_files import VIDEO_FILE_EXTENSIONS, is_video_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset path not found")
    if path.is_file():
        if not is_video_file(path):
            raise ValueError(f"{path}: not a video file ({', '.join(VIDEO_FILE_EXTENSIONS)})")
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and is_video_file(p) and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{path}: folder holds no video files ({', '.join(VIDEO_FILE_EXTENSIONS)})")
    return files


def _intrinsics_entry(entry, source: str, video_hw: tuple[int, int]) -> np.ndarray:
    if not isinstance(entry, dict) or not {"fx", "fy", "cx", "cy"} <= set(entry):
        raise ValueError(f"{source}: intrinsics entry must have fx, fy, cx, cy (pixels), got {entry!r}")
    k = check_intrinsics([float(entry[n]) for n in ("fx", "fy", "cx", "cy")], source)
    if "width" in entry or "height" in entry:
        from .transforms import resize_intrinsics

        given = (int(entry.get("height", video_hw[0])), int(entry.get("width", video_hw[1])))
        k = resize_intrinsics(k, given, video_hw)
    return k


def video_intrinsics(video: Path, video_hw: tuple[int, int], intrinsics=None) -> tuple[np.ndarray, str]:
    """3×3 intrinsics in pixels of the upright video frame and where they came from: `intrinsics` (given), the
    sidecar ``<stem>.intrinsics.json``, the folder's ``cameras.json``; else a ValueError naming the three ways."""
    import json

    if intrinsics is not None:
        return check_intrinsics(intrinsics, "intrinsics"), "given"
    for sidecar in (
        video.with_name(video.stem + INTRINSICS_SIDECAR_SUFFIX),
        Path(str(video) + INTRINSICS_SIDECAR_SUFFIX),
    ):
        if sidecar.is_file():
            try:
                entry = json.loads(sidecar.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{sidecar}: not valid JSON ({err})") from err
            return _intrinsics_entry(entry, str(sidecar), video_hw), str(sidecar)
    cameras = video.parent / CAMERAS_FILE
    if cameras.is_file():
        try:
            table = json.loads(cameras.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{cameras}: not valid JSON ({err})") from err
        entry = table.get(video.name, table.get(video.stem, table if "fx" in table else table.get("default")))
        if entry is not None:
            return _intrinsics_entry(entry, f"{cameras} [{video.name}]", video_hw), str(cameras)
    raise ValueError(f"{video}: no camera intrinsics; " + MISSING_INTRINSICS_HELP.format(stem=video.stem))


def _grey_small(image: np.ndarray) -> np.ndarray:
    """Grey levels (0-1) block-averaged to about 64 px on the short side (averages sensor noise away)."""
    step = max(1, min(image.shape[:2]) // 64)
    height, width = image.shape[0] // step * step, image.shape[1] // step * step
    grey = image[:height, :width].astype(np.float32).mean(axis=-1) / 255.0
    return grey.reshape(height // step, step, width // step, step).mean(axis=(1, 3))


def clip_motion(target: np.ndarray, sources: list[np.ndarray]) -> float:
    """Largest mean absolute grey-level change (0-1) between a target frame and its sources (subsampled)."""
    grey = _grey_small(target)
    return max(float(np.abs(_grey_small(s) - grey).mean()) for s in sources)


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _video_file_rows(videos, offsets, sampling, static_threshold, stats):
    from collections import deque

    from .transforms import resize_intrinsics
    from .video_files import iter_video_frames

    first, last = min(0, *offsets), max(0, *offsets)
    window = last - first + 1
    for video in videos:
        k_video = np.asarray(video["intrinsics"], dtype=np.float32)
        buffer: deque = deque(maxlen=window)
        k = None
        for sampled, frame in enumerate(iter_video_frames(video["path"], **sampling), start=1):
            if k is None:
                k = resize_intrinsics(k_video, video["hw"], frame.image.shape[:2]).tolist()
            buffer.append((frame.image, None))
            if len(buffer) < window:
                continue
            target = -first  # position of the target inside the window
            images = [buffer[target][0], *(buffer[target + o][0] for o in offsets)]
            stats["clips"] += 1
            if static_threshold and clip_motion(images[0], images[1:]) < static_threshold:
                stats["static"] += 1
                continue
            encoded = []
            for pos in (target, *(target + o for o in offsets)):
                image, data = buffer[pos]
                if data is None:
                    data = _png(image)
                    buffer[pos] = (image, data)
                encoded.append({"bytes": data, "path": None})
            yield {
                "image": encoded[0],
                "source_images": encoded[1:],
                "source_offsets": list(offsets),
                "intrinsics": k,
                "poses": None,
                "depth": None,
                "scene": Path(video["path"]).name,
                "frame_index": sampled - 1 - last,
            }
    if stats["static"]:
        logger.info(
            "video: skipped %d near-static clips of %d (camera not moving: frame change < %g)",
            stats["static"],
            stats["clips"],
            static_threshold,
        )


def load_video_file_dataset(
    path: str | Path,
    *,
    frame_offsets: tuple[int, ...] = (-1, 1),
    intrinsics=None,
    max_frames: int | None = None,
    target_fps: float | None = None,
    stride: int | None = None,
    max_size: int | None = None,
    static_threshold: float | None = DEFAULT_STATIC_THRESHOLD,
    streaming: bool = False,
    cache_dir: str | None = None,
):
    """The ``video`` dataset kind from video files (``video:PATH``: one file or a folder of them).

    Frames are decoded as a stream; a sliding window of ``max(offsets) - min(offsets) + 1`` frames gives one row per
    target frame whose sources at `frame_offsets` (counted in *sampled* frames) exist. ``poses`` and ``depth`` are
    None (train with ``pose_source="network"``); ``scene`` is the file name and ``frame_index`` the target's position
    among the sampled frames. Clips whose frames barely change (:func:`clip_motion` below
    `static_threshold`; ``None`` or 0 keeps all) are skipped and counted in the log and in the returned dataset's
    ``skipped_static`` attribute (``Dataset`` only; ``None`` when it came from the datasets cache).

    Intrinsics (pixels of the video's upright frames; rescaled with ``max_size``): `intrinsics` (3×3 or fx, fy, cx,
    cy) for every video, else each video's sidecar ``<stem>.intrinsics.json``, else the folder's ``cameras.json``;
    a video with none of them raises a ValueError naming the three ways, before any frame is decoded.
    """
    from datasets import IterableDataset

    from .video_files import probe_video

    offsets = tuple(int(o) for o in frame_offsets)
    if not offsets or 0 in offsets:
        raise ValueError(f"frame_offsets must be non-empty and non-zero, got {frame_offsets}")
    files = video_files_in(path)
    videos = []
    for file in files:
        info = probe_video(file)
        k, _ = video_intrinsics(file, (info.height, info.width), intrinsics)
        videos.append(
            {"path": str(file), "hw": (info.height, info.width), "intrinsics": k.tolist(), "stamp": file_stamp(file)}
        )
    sampling = {"max_frames": max_frames, "target_fps": target_fps, "stride": stride, "max_size": max_size}
    stats = {"clips": 0, "static": 0}
    kwargs = {"videos": videos, "offsets": offsets, "sampling": sampling}
    kwargs.update(static_threshold=static_threshold, stats=stats)
    if streaming:
        return IterableDataset.from_generator(_video_file_rows, features=VIDEO_FEATURES, gen_kwargs=kwargs)
    try:
        ds = dataset_from_generator(_video_file_rows, kwargs, VIDEO_FEATURES, cache_dir)
    except ValueError as err:  # datasets refuses a generator that yielded no row
        if stats["clips"] == 0 or "no data" not in str(err):
            raise
        ds = []
    if len(ds) == 0:
        detail = f"{stats['static']} of {stats['clips']} clips near-static" if stats["clips"] else "too few frames"
        raise ValueError(f"video:{path}: empty dataset, no clip fits frame_offsets {offsets} ({detail})")
    ds.skipped_static = stats["static"] if stats["clips"] else None
    return ds


def load_video_sequences(
    spec: str, max_frames: int | None = None, depth_scale: float | None = None, intrinsics=None
) -> list[dict]:
    """Whole ordered sequences for temporal evaluation (``mesa-hf evaluate --protocol video``).

    `spec`: ``7scenes:PATH``, ``tum:PATH``, ``hololens:PATH``, ``frames:PATH`` (frame folders with depth and
    poses), ``video:PATH`` (video files: no depth or poses, flicker only) or ``synthetic[:N]`` (two held-out
    synthetic-world sequences of N frames, default 8, at 96×128, with exact depth and poses).

    Returns dicts ``name``, ``images`` (list of (H, W, 3) uint8), ``depths`` (list of (H, W) float32 metres, or
    None), ``poses`` ((N, 4, 4) camera-to-world, or None), ``intrinsics`` (3, 3); at most `max_frames` frames each.
    """
    from PIL import Image

    fmt, _, rest = spec.partition(":")
    if fmt == "synthetic":
        from .synthetic import synthetic_clip

        num = int(max_frames or (int(rest) if rest else 8))
        clips = [synthetic_clip(1000, i * 4, 96, 128, frame_offsets=tuple(range(1, num))) for i in range(2)]
        return [
            {
                "name": f"{c['scene']}-{i}",
                "images": c["images"],
                "depths": c["depths"],
                "poses": c["poses"],
                "intrinsics": c["intrinsics"],
            }
            for i, c in enumerate(clips)
        ]
    if fmt == "video":
        from .video_files import iter_video_frames, probe_video

        sequences = []
        for file in video_files_in(rest):
            info = probe_video(file)
            try:
                k, _ = video_intrinsics(file, (info.height, info.width), intrinsics)
            except ValueError:
                k = None  # flicker needs no intrinsics
            images = [f.image for f in iter_video_frames(file, max_frames=max_frames)]
            sequences.append({"name": file.name, "images": images, "depths": None, "poses": None, "intrinsics": k})
        return sequences
    if fmt not in ("7scenes", "tum", "hololens", "frames"):
        raise ValueError(
            f"--protocol video reads 7scenes:, tum:, hololens:, frames:, video: or synthetic datasets, got {spec!r}"
        )
    path = Path(rest)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset path not found")
    k = None if intrinsics is None else check_intrinsics(intrinsics, "intrinsics")
    if fmt == "7scenes":
        raw = _seven_scenes(path, k)
    elif fmt == "tum":
        raw = _tum(path, k)
    elif fmt == "hololens":
        raw = _hololens(path, k)
    else:
        raw = _frames(path, k, "png" if depth_scale else None, depth_scale)  # both: metres per stored unit
    sequences = []
    for seq in raw:
        n = len(seq["frames"]) if max_frames is None else min(len(seq["frames"]), max_frames)
        images = []
        for f in seq["frames"][:n]:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
        depths = None
        if seq["depths"] is not None and all(d is not None for d in seq["depths"][:n]):
            depths = [decode_depth(d, seq["depth_format"], seq["depth_scale"]) for d in seq["depths"][:n]]
        poses = None if seq["poses"] is None else np.asarray(seq["poses"][:n], dtype=np.float64)
        k_seq = check_intrinsics(seq["intrinsics"], f"{spec} ({seq['name']})", required=True)
        sequences.append({"name": seq["name"], "images": images, "depths": depths, "poses": poses, "intrinsics": k_seq})
    return sequences

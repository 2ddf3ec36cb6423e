"""Video loaders: sequences of frames with intrinsics (and poses / depth where the dataset has them) turned into
the ``video`` dataset kind (see :mod:`.columns`): one row per target frame whose sources at ``frame_offsets`` all
exist in the same sequence.

Formats: ``"7scenes"`` (Microsoft 7-Scenes ``seq-XX/frame-XXXXXX.{color.png|jpg, depth.png, pose.txt}``),
``"tum"`` (TUM RGB-D: ``rgb.txt``/``depth.txt``/``groundtruth.txt`` associated by timestamp, or the two-frame
``case_*/{img,dep,pose}_{prev,curr}`` pairs layout), ``"hololens"`` (``images/``, ``depth/``, ``K.txt``, ``poses.txt``
as in DeepVideoMVS), ``"nyu_raw"`` (NYUv2 raw scenes as BTS "sync" folders ``rgb_XXXXX.jpg`` [+ ``sync_depth``] or
raw ``r-*.ppm`` dumps) and ``"frames"`` (any folder of frames + K, optional ``poses.txt`` and depth folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .columns import VIDEO_FEATURES, encode_depth, intrinsics_matrix
from .decoders import decode_depth, read_image_file
from .loaders import NYU_INTRINSICS, build_dataset, file_stamp
from .validation import DEFAULT_MAX_MEDIAN_DEPTH, SampleSkipper, check_depth, check_intrinsics, check_same_size

SEVEN_SCENES_INTRINSICS = intrinsics_matrix(585.0, 585.0, 320.0, 240.0)
TUM_INTRINSICS = intrinsics_matrix(525.0, 525.0, 319.5, 239.5)
VIDEO_DATASET_FORMATS = ("7scenes", "tum", "hololens", "nyu_raw", "frames")
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
    """
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

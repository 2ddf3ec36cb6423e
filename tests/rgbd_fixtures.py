"""Generated RGB-D folders in the file layouts of the public datasets that mesa_hf reads.

Each writer mirrors one folder of ``../shared/data`` (see its SOURCE.txt): the same file names, file formats and
depth units, rendered from the synthetic world (:mod:`mesa_hf.data.synthetic`), so that every depth value, pose
and camera matrix is known exactly. A writer returns the truth it stored, so a test compares what a loader
returns with it, and can warp one frame into another with the true pose. Images are small (tens of pixels)
unless a protocol needs NYUv2's 480x640.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

from mesa_hf.data.synthetic import Trajectory, default_intrinsics, make_room, render, synthetic_view

NYU_CAMERA = (518.8579, 519.46961, 325.58245, 253.73617)  # fx, fy, cx, cy of the 640x480 NYUv2 RGB camera


@dataclass
class Frame:
    """One rendered view: image (H, W, 3) uint8, depth (H, W) float32 z-depth in metres (exact, all valid),
    pose (4, 4) camera-to-world (OpenCV axes), intrinsics (3, 3) pixels."""

    image: np.ndarray
    depth: np.ndarray
    pose: np.ndarray
    intrinsics: np.ndarray


def camera_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def scaled_camera(fx: float, fy: float, cx: float, cy: float, full_width: int, width: int) -> np.ndarray:
    """A dataset's camera matrix for its full-width images, scaled to images ``width`` pixels wide."""
    s = width / full_width
    return camera_matrix(fx * s, fy * s, cx * s, cy * s)


def render_views(num: int, height: int, width: int, seed: int = 0) -> list[Frame]:
    """``num`` independent views (a new room every two views)."""
    views = [synthetic_view(seed, i, height, width, views_per_room=2) for i in range(num)]
    return [Frame(image, depth, pose, k) for image, depth, k, pose, _ in views]


def render_video(
    num_frames: int, height: int, width: int, intrinsics=None, seed: int = 0, speed: float = 0.04, stride: float = 1
) -> list[Frame]:
    """``num_frames`` consecutive frames along one smooth camera path (about ``speed`` metres per frame),
    ``stride`` trajectory steps apart."""
    room = make_room(np.random.default_rng([seed, 71]))
    trajectory = Trajectory.random(room, np.random.default_rng([seed, 72]), speed=speed)
    k = default_intrinsics(height, width) if intrinsics is None else np.asarray(intrinsics, dtype=np.float64)
    start = float(np.random.default_rng([seed, 73]).uniform(0.0, 1000.0))
    frames = []
    for i in range(num_frames):
        pose = trajectory.pose(start + i * stride)
        image, depth = render(room, pose, k, height, width)
        frames.append(Frame(image, depth, pose, k))
    return frames


# ---------------------------------------------------------------- encodings of depth files


def hole_mask(shape: tuple[int, int], fraction: float, seed: int = 0, block: int = 4) -> np.ndarray:
    """Boolean (H, W) mask of missing measurements: ``fraction`` of the ``block``-pixel squares, chosen at random.

    Holes come in patches, as in depth-sensor data (isolated missing pixels would spoil the 3x3 SSIM window of
    every valid pixel next to them in a photometric check).
    """
    rows, cols = -(-shape[0] // block), -(-shape[1] // block)
    cells = np.zeros(rows * cols, dtype=bool)
    cells[np.random.default_rng(seed).permutation(rows * cols)[: round(fraction * rows * cols)]] = True
    return np.kron(cells.reshape(rows, cols), np.ones((block, block), dtype=bool))[: shape[0], : shape[1]]


def punch_holes(depth: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A copy of ``depth`` with patches covering ``fraction`` of it set to 0 (no measurement)."""
    depth = np.array(depth, dtype=np.float32)
    depth[hole_mask(depth.shape, fraction, seed)] = 0.0
    return depth


def scan_lines(depth: np.ndarray, every: int = 4) -> np.ndarray:
    """A copy of ``depth`` keeping only every ``every``-th row, like a LiDAR or HoloLens scan pattern."""
    sparse = np.zeros_like(depth, dtype=np.float32)
    sparse[::every] = depth[::every]
    return sparse


def to_units(depth: np.ndarray, units_per_metre: float) -> np.ndarray:
    """Metres → uint16 stored units (rounded, 0 stays 0)."""
    units = np.round(np.asarray(depth, dtype=np.float64) * units_per_metre)
    if units.max() > 65535:
        raise ValueError(f"depth {depth.max():.2f} m does not fit a uint16 at {units_per_metre} units per metre")
    return units.astype(np.uint16)


def sunrgbd_encode(millimetres: np.ndarray) -> np.ndarray:
    """SUN RGB-D storage: millimetres circularly shifted left by 3 bits in 16 (the decoder shifts right)."""
    mm = np.asarray(millimetres, dtype=np.uint32)
    return (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)


def nyu_disparity_encode(depth: np.ndarray) -> np.ndarray:
    """NYU raw Kinect disparity (``depth = 351.3 / (1092.5 - raw)``) rounded to integers; 2047 = no depth."""
    depth = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore"):
        raw = np.round(1092.5 - 351.3 / depth)
    raw = np.where((depth <= 0) | (raw < 0) | (raw > 2046), 2047, raw)
    return raw.astype(np.uint16)


def write_png16(path: Path, units: np.ndarray) -> None:
    Image.fromarray(np.asarray(units, dtype=np.uint16)).save(path)


def write_rgb(path: Path, image: np.ndarray) -> None:
    """RGB file in the format of its suffix (JPEG at quality 95 as the datasets' colour frames)."""
    Image.fromarray(image).save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))


def write_nyu_pgm(path: Path, raw: np.ndarray) -> None:
    """A NYU raw ``d-*.pgm``: 16-bit PGM header, body little-endian despite the PGM standard (as NYU's dumps)."""
    height, width = raw.shape
    path.write_bytes(f"P5 {width} {height} 65535\n".encode() + np.asarray(raw, dtype="<u2").tobytes())


# ---------------------------------------------------------------- single-image folders


def write_format_samples(root: Path, height: int = 48, width: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """``rgbd_formats``: ``NYU_color.ppm`` + ``NYU_depth.pgm`` (raw disparity), ``TUM_color.png`` +
    ``TUM_depth.png`` (/5000), ``SUN_color.jpg`` + ``SUN_depth.png`` (bit-shifted mm).

    Returns:
        the true depth in metres (0 = hole) of each depth file, by file name.
    """
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (prefix, color) in enumerate((("NYU", "ppm"), ("TUM", "png"), ("SUN", "jpg"))):
        view = render_views(1, height, width, seed + i)[0]
        write_rgb(root / f"{prefix}_color.{color}", view.image)
        truth[prefix] = punch_holes(view.depth, 0.2, seed + i)
    write_nyu_pgm(root / "NYU_depth.pgm", nyu_disparity_encode(truth["NYU"]))
    write_png16(root / "TUM_depth.png", to_units(truth["TUM"], 5000))
    write_png16(root / "SUN_depth.png", sunrgbd_encode(to_units(truth["SUN"], 1000)))
    return {"NYU_depth.pgm": truth["NYU"], "TUM_depth.png": truth["TUM"], "SUN_depth.png": truth["SUN"]}


def write_nyu_test_folder(root: Path, num: int = 3, height: int = 480, width: int = 640, seed: int = 0):
    """``nyu_test10``: ``image_{i}.png`` + dense ``depth_{i}.png`` (uint16 mm) + ``nyu2_mini_test.csv``.

    Returns:
        (images, depths): the RGB arrays and the stored depths in metres (mm-rounded).
    """
    root.mkdir(parents=True, exist_ok=True)
    images, depths = [], []
    for i, view in enumerate(render_views(num, height, width, seed)):
        units = to_units(np.minimum(view.depth, 9.99), 1000)
        write_rgb(root / f"image_{i}.png", view.image)
        write_png16(root / f"depth_{i}.png", units)
        images.append(view.image)
        depths.append(units.astype(np.float32) / np.float32(1000))
    lines = ["image_path,depth_path", *(f"image_{i}.png,depth_{i}.png" for i in range(num))]
    (root / "nyu2_mini_test.csv").write_text("\n".join(lines) + "\n")
    return images, depths


def write_photo(path: Path, height: int = 480, width: int = 640, seed: int = 0) -> Path:
    """One synthetic indoor photo (RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rgb(path, render_views(1, height, width, seed)[0].image)
    return path


def write_nyu_sync_folder(
    root: Path,
    indices=(0, 50, 100),
    height: int = 48,
    width: int = 64,
    scene: str | None = None,
    hole_fraction: float = 0.3,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """The BTS/GLPDepth NYUv2 "sync" layout: ``rgb/rgb_XXXXX.jpg`` + ``depth/sync_depth_XXXXX.png`` (uint16 mm,
    0 = hole) as in ``nyu_raw_sync3``, or with ``scene`` both in ``scene/`` as in the BTS training tree.
    The frames are ``indices`` steps along one camera path.

    Returns:
        the stored depth in metres by frame index.
    """
    rgb_dir, depth_dir = (root / "rgb", root / "depth") if scene is None else (root / scene, root / scene)
    rgb_dir.mkdir(parents=True, exist_ok=True)
    depth_dir.mkdir(parents=True, exist_ok=True)
    k = scaled_camera(*NYU_CAMERA, 640, width)
    frames = render_video(max(indices) + 1, height, width, k, seed, speed=0.002)
    stored = {}
    for n, index in enumerate(indices):
        units = to_units(punch_holes(frames[index].depth, hole_fraction, seed + n), 1000)
        write_rgb(rgb_dir / f"rgb_{index:05d}.jpg", frames[index].image)
        write_png16(depth_dir / f"sync_depth_{index:05d}.png", units)
        stored[index] = units.astype(np.float32) / np.float32(1000)
    return stored


def write_bts_file_list(path: Path, scene: str, indices) -> Path:
    """A BTS ``nyudepthv2_*_files_with_gt.txt`` list: ``/scene/rgb_XXXXX.jpg /scene/sync_depth_XXXXX.png focal``."""
    lines = [f"/{scene}/rgb_{i:05d}.jpg /{scene}/sync_depth_{i:05d}.png 518.8579" for i in indices]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_kitti_folder(root: Path, names=(5, 50, 100), height: int = 30, width: int = 100, seed: int = 0):
    """``kitti3``: ``rgb/0000000005.png`` + ``depth/0000000005.png`` (uint16, metres = value / 256, projected-LiDAR
    sparsity: every fourth row). The indoor world is scaled by 8 so depths fall in KITTI's 4–80 m.

    Returns:
        (intrinsics (3, 3), stored depths in metres by file name).
    """
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    stored = {}
    views = render_views(len(names), height, width, seed)
    for name, view in zip(names, views):
        units = to_units(scan_lines(np.minimum(view.depth * 8.0, 255.0)), 256)
        write_rgb(root / "rgb" / f"{name:010d}.png", view.image)
        write_png16(root / "depth" / f"{name:010d}.png", units)
        stored[f"{name:010d}.png"] = units.astype(np.float32) / np.float32(256)
    return views[0].intrinsics, stored


def write_ibims_folder(root: Path, height: int = 48, width: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """``ibims1_partial2``: ``rgb/ibims_{hole_60,range_40}.png`` + ``depth/*.npy`` float32 (1, 1, H, W) metres,
    0 = missing (a removed block, and depths outside a band, as the Any2Full completion inputs).

    Returns:
        the stored (H, W) depth by stem.
    """
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    stored = {}
    for stem, view in zip(("ibims_hole_60", "ibims_range_40"), render_views(2, height, width, seed)):
        depth = view.depth.copy()
        if stem.endswith("hole_60"):
            depth[height // 4 : height // 2, width // 4 : width // 2] = 0.0
        else:
            low, high = np.percentile(depth, [30, 90])
            depth[(depth < low) | (depth > high)] = 0.0
        write_rgb(root / "rgb" / f"{stem}.png", view.image)
        np.save(root / "depth" / f"{stem}.npy", depth[None, None].astype(np.float32))
        stored[stem] = depth
    return stored


def write_nyu_labelled_mat(path: Path, num: int = 4, height: int = 6, width: int = 8, seed: int = 0):
    """``nyu_depth_v2_labeled.mat`` as MATLAB v7.3 writes it (HDF5 with a 512-byte MATLAB userblock): ``images``
    (H, W, 3, N) uint8 and ``depths``/``rawDepths`` (H, W, N) single metres, column-major, so h5py sees
    (N, 3, W, H) and (N, W, H); ``scenes`` a cell array of strings ((1, N) object references to uint16 chars).

    Returns:
        (images (N, H, W, 3) uint8, depths (N, H, W) float32, scene names).
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (num, height, width, 3), dtype=np.uint8)
    depths = rng.uniform(0.7, 9.5, (num, height, width)).astype(np.float32)
    scenes = [f"kitchen_{i:04d}" for i in range(num)]
    with h5py.File(path, "w", userblock_size=512) as f:
        f["images"] = images.transpose(0, 3, 2, 1)
        f["depths"] = depths.transpose(0, 2, 1)
        f["rawDepths"] = np.where(depths > 5, 0, depths).transpose(0, 2, 1)
        refs = []
        for i, name in enumerate(scenes):
            chars = f.create_dataset(f"#refs#/s{i}", data=np.array([[ord(c)] for c in name], np.uint16))
            chars.attrs["MATLAB_class"] = np.bytes_("char")
            refs.append(chars.ref)
        f["scenes"] = np.array([refs], dtype=h5py.ref_dtype)
        f["scenes"].attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as f:  # the MATLAB header inside the userblock
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    return images, depths, scenes


def write_nyu_splits(path: Path, train, test) -> Path:
    """The official ``splits.mat``: ``trainNdxs``/``testNdxs`` (k, 1) uint16, 1-based indices into the .mat."""
    as_column = {
        k: np.asarray(v, dtype=np.uint16).reshape(-1, 1) for k, v in (("trainNdxs", train), ("testNdxs", test))
    }
    scipy.io.savemat(path, as_column)
    return path


# ---------------------------------------------------------------- video folders


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(qx, qy, qz, qw) of a 3x3 rotation matrix (Shepperd's method, qw >= 0)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i], q[j], q[k] = s / 4, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q if q[3] >= 0 else -q


def tum_pose_line(pose: np.ndarray) -> str:
    """``tx ty tz qx qy qz qw`` of a camera-to-world pose."""
    return " ".join(f"{v:.9f}" for v in (*pose[:3, 3], *rotation_to_quaternion(pose[:3, :3])))


def write_7scenes_folder(
    root: Path, num_frames: int = 12, height: int = 60, width: int = 80, invalid_fraction: float = 0.0, seed: int = 0
) -> list[Frame]:
    """``7scenes_redkitchen60``: ``frame-XXXXXX.color.jpg``, ``.depth.png`` (uint16 mm; ``invalid_fraction`` of
    pixels get raw 7-Scenes' 65535 invalid code), ``.pose.txt`` (4x4 camera-to-world) and
    ``camera-intrinsics.txt`` (the 585 px Kinect camera scaled to ``width``).

    Returns:
        the frames; ``depth`` is the stored depth in metres (mm-rounded, 0 where invalid).
    """
    root.mkdir(parents=True, exist_ok=True)
    k = scaled_camera(585.0, 585.0, 320.0, 240.0, 640, width)
    frames = render_video(num_frames, height, width, k, seed)
    np.savetxt(root / "camera-intrinsics.txt", k)
    for i, frame in enumerate(frames):
        units = to_units(frame.depth, 1000)
        if invalid_fraction:
            units[hole_mask(units.shape, invalid_fraction, seed + i)] = 65535
        write_rgb(root / f"frame-{i:06d}.color.jpg", frame.image)
        write_png16(root / f"frame-{i:06d}.depth.png", units)
        np.savetxt(root / f"frame-{i:06d}.pose.txt", frame.pose)
        frame.depth = np.where(units == 65535, 0, units).astype(np.float32) / np.float32(1000)
    return frames


def write_tum_pairs(root: Path, num_cases: int = 2, height: int = 48, width: int = 64, gap: int = 3, seed: int = 0):
    """``tum_fr1xyz_pairs``: ``case_N/{img,dep,pose}_{prev,curr}`` (RGB png, uint16 depth / 5000, one line
    ``tx ty tz qx qy qz qw``) and ``kinect_params.txt`` (3x3 K, the 525 px camera scaled to ``width``); the two
    frames of a case are ``gap`` frames apart.

    Returns:
        per case the (prev, curr) frames; ``depth`` is the stored depth in metres.
    """
    k = scaled_camera(525.0, 525.0, 319.5, 239.5, 640, width)
    root.mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "kinect_params.txt", k)
    cases = []
    for c in range(num_cases):
        case = root / f"case_{c + 1}"
        case.mkdir(exist_ok=True)
        frames = render_video(2, height, width, k, seed + c, stride=gap)
        for which, frame in zip(("prev", "curr"), frames):
            units = to_units(punch_holes(frame.depth, 0.25, seed + c), 5000)
            write_rgb(case / f"img_{which}.png", frame.image)
            write_png16(case / f"dep_{which}.png", units)
            (case / f"pose_{which}.txt").write_text(tum_pose_line(frame.pose) + "\n")
            frame.depth = units.astype(np.float32) / np.float32(5000)
        cases.append(frames)
    return cases


def write_tum_sequence(root: Path, num_frames: int = 4, height: int = 48, width: int = 64, seed: int = 0):
    """The official TUM RGB-D sequence layout: ``rgb/<t>.png``, ``depth/<t>.png`` (/ 5000), ``rgb.txt``,
    ``depth.txt`` and ``groundtruth.txt`` (``t tx ty tz qx qy qz qw``), each list with its own timestamps: 30 Hz
    colour, depth 5 ms later, mocap poses at 100 Hz starting 1 ms early.

    Returns:
        (frames with the stored depth in metres, rgb timestamps, groundtruth timestamps, groundtruth poses).
    """
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(exist_ok=True)
    room = make_room(np.random.default_rng([seed, 81]))
    trajectory = Trajectory.random(room, np.random.default_rng([seed, 82]), speed=0.04)
    k = scaled_camera(525.0, 525.0, 319.5, 239.5, 640, width)
    t0, start = 1305031102.175304, 500.0  # frame number on the path = start + 30 * (t - t0)
    rgb_t = t0 + np.arange(num_frames) / 30.0
    gt_t = np.arange(t0 - 0.001, rgb_t[-1] + 0.02, 0.01)
    gt_poses = [trajectory.pose(start + 30.0 * (t - t0)) for t in gt_t]
    frames, rgb_lines, depth_lines = [], ["# color images"], ["# depth maps"]
    for t in rgb_t:
        pose = trajectory.pose(start + 30.0 * (t - t0))
        image, depth = render(room, pose, k, height, width)
        units = to_units(depth, 5000)
        write_rgb(root / "rgb" / f"{t:.6f}.png", image)
        write_png16(root / "depth" / f"{t + 0.005:.6f}.png", units)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.005:.6f} depth/{t + 0.005:.6f}.png")
        frames.append(Frame(image, units.astype(np.float32) / np.float32(5000), pose, k))
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    gt_lines = ["# timestamp tx ty tz qx qy qz qw", *(f"{t:.4f} {tum_pose_line(p)}" for t, p in zip(gt_t, gt_poses))]
    (root / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    return frames, rgb_t, gt_t, gt_poses


def write_hololens_folder(
    root: Path, num_frames: int = 8, height: int = 72, width: int = 108, first: int = 3, seed: int = 0
) -> list[Frame]:
    """``hololens20`` (DeepVideoMVS): ``images/00003.png..``, ``depth/00003.png..`` (uint16 mm, 22 % holes),
    ``K.txt`` (3x3) and ``poses.txt`` (one flattened 4x4 camera-to-world pose per line, with lines for frames not
    copied after the copied ones, as in the real sample).

    Returns:
        the frames; ``depth`` is the stored depth in metres.
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(exist_ok=True)
    k = scaled_camera(495.5677570093458, 495.4819626168224, 269.5028971962616, 169.1941121495327, 540, width)
    frames = render_video(num_frames + 3, height, width, k, seed, speed=0.07)
    np.savetxt(root / "K.txt", k)
    np.savetxt(root / "poses.txt", np.stack([f.pose.reshape(16) for f in frames]))
    frames = frames[:num_frames]
    for i, frame in enumerate(frames):
        units = to_units(punch_holes(frame.depth, 0.22, seed + i), 1000)
        write_rgb(root / "images" / f"{first + i:05d}.png", frame.image)
        write_png16(root / "depth" / f"{first + i:05d}.png", units)
        frame.depth = units.astype(np.float32) / np.float32(1000)
    return frames

"""Data-layer speed: the synthetic world's frames/s and each stage transform's samples/s, on one CPU core.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/data.py [--frames 60]``.
Rates are per CPU-second of the benchmark process (wall-clock rates beside them), so that other jobs sharing the
machine do not distort them. Ratios are against peers measured in the same run: the 50 frames/s target and
decoding one real RGB-D pair from disk (a 640×480 NYUv2 PNG + 16-bit depth PNG) for the renderer; the plain
``eval`` transform (normalisation only) for the augmenting transforms. With ``shared/data`` beside the repository
it also prints the ground-truth warp check on 7-Scenes and TUM (Monodepth2 photometric error of the GT-warped vs
the unwarped source). The world check prints the contrast table of the demo recipe's geometric clips
(`mesa_hf.data.world_checks`: the per-pixel minimum photometric error at the true depth, x 1.3, a flat plane at the
median depth and the unwarped source) for the original world (one point sample per pixel, frames 0, -1, +1) beside
the band-limited one with the demo recipe's frame offsets, with the camera flows of each.

The data-throughput section (``--only throughput`` runs it alone) times each stage's real per-sample work on files
it writes first (rendered synthetic frames): decode (Pillow, as the loaders) + the stage's training transform, for
JPEG and WebP images through the masked transform, an RGB JPEG + 16-bit PNG depth through the supervised transform
and 3-frame JPEG clips through the geometric transform, in samples/s per worker core (CPU time of this process). It
then divides published (or derived) per-GPU training throughputs by those rates: the DataLoader workers (one core
each) one GPU needs.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

from mesa_hf.data.decoders import decode_depth, read_image_file
from mesa_hf.data.synthetic import (
    Trajectory,
    default_intrinsics,
    make_room,
    render,
    synthetic_clip,
    synthetic_view,
    texture_bank,
)
from mesa_hf.data.transforms import build_transform

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rate(fn, n: int) -> float:
    """Calls per CPU-second of this process for fn() over n calls (after one warm-up call). CPU time, not wall
    time, so that other jobs sharing the machine do not count (wall-clock rates are printed beside it)."""
    fn()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    rate.wall = n / (time.perf_counter() - start)
    return n / (time.process_time() - cpu)


def bench_renderer(frames: int) -> None:
    height, width = 240, 320
    texture_bank()  # built once per process
    rooms = [make_room(np.random.default_rng([0, r])) for r in range(4)]
    trajectories = [Trajectory.random(room, np.random.default_rng([0, r, 1])) for r, room in enumerate(rooms)]
    k = default_intrinsics(height, width)
    counter = iter(range(10**9))

    def one_frame():
        i = next(counter)
        render(rooms[i % 4], trajectories[i % 4].pose(i), k, height, width)

    fps = rate(one_frame, frames)
    wall = rate.wall

    def one_point_sampled_frame():
        i = next(counter)
        render(rooms[i % 4], trajectories[i % 4].pose(i), k, height, width, band_limited=False)

    old = rate(one_point_sampled_frame, frames)
    print(
        f"synthetic world, original point-sampled render, {height}x{width}: {old:7.1f} frames/s "
        f"(wall-clock {rate.wall:.1f}; peer of the band-limited render below)"
    )
    full = rate(lambda: synthetic_view(0, next(counter), height, width), max(frames // 2, 10))
    print(
        f"synthetic world, render only, {height}x{width}: {fps:7.1f} frames/s (wall-clock {wall:.1f}; "
        f"{fps / 50:.2f}x the 50 frames/s target)"
    )
    print(f"synthetic world, new room + trajectory + render: {full:7.1f} frames/s (wall-clock {rate.wall:.1f})")
    print(f"band-limited render costs {old / fps:.2f}x the point-sampled one")
    if (DATA / "nyu_test10").is_dir():
        image, depth = DATA / "nyu_test10" / "image_0.png", DATA / "nyu_test10" / "depth_0.png"

        def decode_pair():  # what the loaders do per sample: decode-check the image, decode the depth
            read_image_file(image)
            decode_depth(depth, "nyu")

        peer = rate(decode_pair, 20)
        print(f"peer: read + decode a real 640x480 NYUv2 RGB-D pair: {peer:7.1f} pairs/s ({fps / peer:.2f}x)")


def bench_transforms(samples: int) -> None:
    image, depth, k, _, _ = synthetic_view(0, 0, 480, 640)
    clip = synthetic_clip(0, 0, 480, 640, frame_offsets=(-1, 1))
    eval_t = build_transform("eval")
    base = rate(lambda: eval_t.sample(image, depth, k), samples)
    print(f"eval transform (normalise only, 480x640):            {base:7.1f} samples/s  (peer, 1.00x)")
    sup = build_transform("supervised", crop_size=(480, 480), seed=0)
    r = rate(lambda: sup.sample(image, depth, k), samples)
    print(f"supervised transform (CutDepth/flip/crop 480/jitter): {r:7.1f} samples/s  ({r / base:.2f}x eval)")
    geo = build_transform("geometric", size=(192, 256), seed=0)
    r = rate(lambda: geo.sample(clip["images"][0], clip["images"][1:], clip["intrinsics"], clip["poses"]), samples)
    print(f"geometric transform (3 frames 480x640 -> 192x256):    {r:7.1f} samples/s  ({r / base:.2f}x eval)")
    mim = build_transform("masked", seed=0)
    r = rate(lambda: mim.sample(image), samples)
    print(f"masked transform (SimMIM crop 192 + mask):            {r:7.1f} samples/s  ({r / base:.2f}x eval)")


# per-GPU training throughputs, images (samples) per second; from /work/shared/notes/scale.md section 3
GPU_THROUGHPUTS = (
    ("Swin-B 224, V100 (derived: 16 V100, ~12 min/epoch IN-1K)", 111.0),
    ("MAE ViT-L/16, V100 (derived: 64 V100, ~42 h / 800 epochs)", 106.0),
    ("swinv2_base_window8_256, RTX 3090 AMP (timm, published)", 150.0),
    ("SwinV2-B/192 compiled, RTX 4090 (inferred, not published)", 700.0),
)


def write_files(folder: Path, count: int) -> dict[str, list]:
    """Rendered 480x640 synthetic frames written as the stages' files: LSUN-sized (256x341) JPEG q75 and WebP q80,
    480x640 JPEG q90 with 16-bit millimetre PNG depth, and 3-frame JPEG clips; file paths per kind."""
    files: dict[str, list] = {"jpeg256": [], "webp256": [], "jpeg480": [], "rgbd": [], "clip": []}
    for i in range(count):
        image, depth, _, _, _ = synthetic_view(1, i, 480, 640)
        small = Image.fromarray(image).resize((341, 256), Image.BICUBIC)
        for kind, ext, options in (("jpeg256", "jpg", {"quality": 75}), ("webp256", "webp", {"quality": 80})):
            small.save(folder / f"{kind}_{i}.{ext}", **options)
            files[kind].append(folder / f"{kind}_{i}.{ext}")
        Image.fromarray(image).save(folder / f"rgb_{i}.jpg", quality=90)
        millimetres = np.clip(np.round(depth * 1000), 0, 65535).astype(np.uint16)
        Image.fromarray(millimetres).save(folder / f"depth_{i}.png")
        files["jpeg480"].append(folder / f"rgb_{i}.jpg")
        files["rgbd"].append((folder / f"rgb_{i}.jpg", folder / f"depth_{i}.png"))
        clip = synthetic_clip(1, i, 480, 640, frame_offsets=(-1, 1))
        frames = []
        for f, frame in enumerate(clip["images"]):
            Image.fromarray(np.asarray(frame)).save(folder / f"clip_{i}_{f}.jpg", quality=90)
            frames.append(folder / f"clip_{i}_{f}.jpg")
        files["clip"].append((frames, clip["intrinsics"], clip["poses"]))
    return files


def decode_rgb(path: Path) -> Image.Image:
    """What a loader does per image: the file's bytes, decoded by Pillow to RGB."""
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        return image.convert("RGB")


def workers_needed(per_gpu: float, per_core: float) -> int:
    """DataLoader workers (one core each) that keep a GPU training `per_gpu` samples/s fed."""
    return math.ceil(per_gpu / per_core)


def bench_throughput(samples: int, count: int = 8) -> list[tuple[str, str, float, float]]:
    """Decode + augmentation samples/s per core for each stage, and the workers per GPU that the published
    throughputs need; the (stage, files, samples/s per CPU-second, wall-clock samples/s) rows."""
    masked = build_transform("masked", seed=0)
    supervised = build_transform("supervised", crop_size=(480, 480), seed=0)
    geometric = build_transform("geometric", size=(192, 256), seed=0)
    counter = iter(range(10**9))
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), count)

        def pick(kind):
            return files[kind][next(counter) % count]

        def rgbd():
            image, depth = pick("rgbd")
            return supervised.sample(decode_rgb(image), decode_depth(depth, "png", depth_scale=0.001))

        def clip():
            frames, k, poses = pick("clip")
            decoded = [decode_rgb(f) for f in frames]
            return geometric.sample(decoded[0], decoded[1:], k, poses)

        cases = (
            ("masked", "JPEG q75 256x341 (LSUN size)", lambda: masked.sample(decode_rgb(pick("jpeg256")))),
            ("masked", "WebP q80 256x341 (LSUN's format)", lambda: masked.sample(decode_rgb(pick("webp256")))),
            ("masked", "JPEG q90 480x640", lambda: masked.sample(decode_rgb(pick("jpeg480")))),
            ("supervised", "JPEG 480x640 + 16-bit PNG depth", rgbd),
            ("geometric", "3-frame JPEG 480x640 clip", clip),
        )
        rates = [(stage, data, rate(fn, samples), rate.wall) for stage, data, fn in cases]
    print(f"data throughput: decode + training transform, {samples} samples each, 1 core (CPU time; wall beside)")
    print("| stage transform | files per sample | samples/s per core | wall-clock |")
    print("|---|---|---|---|")
    for stage, data, cpu, wall in rates:
        print(f"| {stage} | {data} | {cpu:.1f} | {wall:.1f} |")
    print("DataLoader workers (1 core each) one GPU needs = its training samples/s / samples/s per core, rounded up")
    columns = " | ".join(f"{stage}, {data.split(' (')[0]}" for stage, data, _, _ in rates)
    print(f"| GPU training throughput (img/s) | {columns} |")
    print("|---" * (len(rates) + 1) + "|")
    for name, per_gpu in GPU_THROUGHPUTS:
        workers = " | ".join(str(workers_needed(per_gpu, cpu)) for _, _, cpu, _ in rates)
        print(f"| {name}: {per_gpu:.0f} | {workers} |")
    return rates


def world_check(clips: int) -> None:
    """The contrast table and camera flows of the demo recipe's geometric clips, original world vs new."""
    from mesa_hf.data.world_checks import ClipBatch, camera_flows, contrast_table
    from mesa_hf.training.recipes import STAGES

    geometric = STAGES["geometric"]
    offsets = tuple(geometric.config_values("demo")["frame_offsets"])
    worlds = [("1 sample per pixel (original), +-1", False, (-1, 1)), (f"band-limited, {offsets}", True, offsets)]
    print(f"world check: demo recipe's geometric clips, 96x128, {clips} clips (mean per-pixel min photometric error)")
    print("| rendering, frame offsets | true depth | true x 1.3 | flat plane (x true) | unwarped | flow t / r (px) |")
    print("|---|---|---|---|---|---|")
    for name, band_limited, frame_offsets in worlds:
        clip_list = [
            synthetic_clip(geometric.synthetic_seed, i, 96, 128, frame_offsets, band_limited=band_limited)
            for i in range(clips)
        ]
        batch = ClipBatch.from_clips(clip_list)
        table, flows = contrast_table(batch), camera_flows(batch)
        print(
            f"| {name} | {table['true depth']:.4f} | {table['true x 1.3']:.4f} | {table['flat plane']:.4f} "
            f"({table['flat plane'] / table['true depth']:.2f}x) | {table['unwarped']:.4f} | "
            f"{flows['translational']:.1f} / {flows['rotational']:.1f} |"
        )


def warp_check() -> None:
    if not DATA.is_dir():
        print(f"(no {DATA}: skipping the real-video warp check)")
        return
    from mesa_hf.data import load_video_dataset
    from mesa_hf.geometry import warp_frame
    from mesa_hf.losses import photometric_error

    cases = [("7scenes", "7scenes_redkitchen60", (-10, 10)), ("tum", "tum_fr1xyz_pairs", (-1,))]
    for fmt, folder, offsets in cases:
        ds = load_video_dataset(fmt, DATA / folder, frame_offsets=offsets)
        batch = ds.with_transform(build_transform("geometric", train=False))[: len(ds)]
        target = torch.stack(batch["target_image"])
        depth = torch.stack(batch["labels"])[:, None]
        for s in range(len(offsets)):
            source = torch.stack(batch["source_images"])[:, s]
            pose = torch.stack(batch["poses"])[:, s]
            warped, valid = warp_frame(source, depth, pose, torch.stack(batch["intrinsics"]))
            valid = valid & (depth > 0)
            e_w = photometric_error(warped, target)[valid].mean().item()
            e_i = photometric_error(source, target)[valid].mean().item()
            print(
                f"GT warp, {folder}, source offset {offsets[s]:+d} ({len(ds)} clips): photometric error "
                f"{e_w:.4f} warped vs {e_i:.4f} unwarped ({e_w / e_i:.2f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--no-warp", action="store_true")
    parser.add_argument("--clips", type=int, default=8, help="clips of the world check")
    parser.add_argument("--throughput-samples", type=int, default=40, help="samples per case of the throughput table")
    parser.add_argument("--only", choices=["throughput"], help="run only this section")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, 1 thread used")
    if args.only is None:
        bench_renderer(args.frames)
        bench_transforms(args.samples)
        world_check(args.clips)
        if not args.no_warp:
            warp_check()
    bench_throughput(args.throughput_samples)


if __name__ == "__main__":
    main()

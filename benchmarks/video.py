"""Video files: decode speed, end-to-end `predict_video_file` speed at 480x640, and peak memory against clip length.

Synthetic 480x640 H.264 clips (a smooth random texture panned along a sinusoidal path, 30 fps) of 300 and 3,000
frames are written first. Every measurement then runs in a fresh Python process, so its peak RSS (VmHWM) is its own:

  * decode: `iter_video_frames` over the 300-frame clip (PyAV, RGB frames as numpy arrays), frames/s;
  * predict speed: `predict_video_file` (decode + MeSaImageProcessor + model + npz + colour mp4) with the `tiny`
    preset (random weights) on the first `--speed-frames` frames, frames/s;
  * memory: `predict_video_file` over the whole 300- and 3,000-frame clips with a weightless stand-in model (depth
    from brightness), so that the pipeline's own memory (decoding, preprocessing, float16 scratch file, npz, colour
    mp4), which is what could grow with length, is measured in minutes rather than the hours a real model needs
    on a CPU (a model adds a constant: its weights and one batch of activations); peak RSS in MiB, and the same
    above the process's RSS just before the first frame (imports + model built).

    python benchmarks/video.py            # full: 300 and 3,000 frames (about 10-20 minutes on 2 busy cores)
    python benchmarks/video.py --quick    # 100 and 1,000 frames, 4 speed frames
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 480, 640
FPS = 30


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    from PIL import Image

    coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    fine = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    small = np.asarray(Image.fromarray(fine).resize((width, height), Image.BILINEAR), dtype=np.float32)
    return np.clip(0.7 * big + 0.3 * small, 0, 255).astype(np.uint8)


def make_video(path: Path, frames: int) -> dict:
    """A panning-texture clip of `frames` 480x640 frames at 30 fps (frames generated one at a time)."""
    from mesa_hf.data.video_files import write_video

    canvas = _texture(np.random.default_rng(0), 2 * HEIGHT, 2 * WIDTH)

    def generate():
        for i in range(frames):
            top = int((HEIGHT / 2) * (1 + np.sin(i / 90)))
            left = int((WIDTH / 2) * (1 + np.sin(i / 130 + 1)))
            yield canvas[top : top + HEIGHT, left : left + WIDTH]

    start = time.perf_counter()
    write_video(path, generate(), fps=FPS)
    return {"frames": frames, "seconds": time.perf_counter() - start, "bytes": path.stat().st_size}


def measure_decode(path: Path) -> dict:
    import av  # noqa: F401 - imported before the clock starts

    from mesa_hf.data.video_files import iter_video_frames

    baseline = _status_kib("VmRSS")
    start = time.perf_counter()
    count = 0
    checksum = 0
    for frame in iter_video_frames(path):
        count += 1
        checksum += int(frame.image[0, 0, 0])
    seconds = time.perf_counter() - start
    return _result(count, seconds, baseline)


def measure_predict(path: Path, preset: str, max_frames: int | None, batch_size: int) -> dict:
    import torch

    from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaImageProcessor
    from mesa_hf.evaluation.predict_video import predict_video_file

    torch.manual_seed(0)
    if preset == "stand-in":
        model = _brightness_depth_model()
    else:
        model = MeSaForDepthEstimation(MeSaConfig.from_preset(preset)).eval()
    processor = MeSaImageProcessor()
    with tempfile.TemporaryDirectory() as out:
        baseline = _status_kib("VmRSS")
        start = time.perf_counter()
        result = predict_video_file(
            model, processor, path, out, max_frames=max_frames, batch_size=batch_size, progress=False
        )
        seconds = time.perf_counter() - start
        npz_bytes = Path(result.npz).stat().st_size
    record = _result(result.num_frames, seconds, baseline)
    record.update(
        preset=preset, batch_size=batch_size, npz_mib=npz_bytes / 2**20, size=f"{result.height}x{result.width}"
    )
    return record


def _brightness_depth_model():
    """A weightless stand-in depth model: 1-9 m from the input's brightness, at the input's size. Isolates the
    pipeline's own memory (decoding, preprocessing, scratch file, npz, colour mp4) from the model's."""
    import torch

    class BrightnessDepth(torch.nn.Module):
        def forward(self, pixel_values):
            return {"predicted_depth": 5.0 + 4.0 * torch.tanh(pixel_values.mean(dim=1))}

    return BrightnessDepth()


def _result(frames: int, seconds: float, baseline_kib: int) -> dict:
    peak = _status_kib("VmHWM")
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "peak_rss_mib": peak / 1024,
        "peak_above_start_mib": (peak - baseline_kib) / 1024,
    }


def _isolated(*args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 / 1,000 frames and 4 speed frames")
    parser.add_argument("--lengths", type=int, nargs=2, default=None, help="short and long clip lengths")
    parser.add_argument("--speed-frames", type=int, default=None, help="frames of the tiny-preset speed run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--output-json", type=Path, default=None)
    parser.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path, *rest = args.child
        if kind == "make":
            record = make_video(Path(path), int(rest[0]))
        elif kind == "decode":
            record = measure_decode(Path(path))
        else:
            preset, max_frames, batch = rest
            record = measure_predict(Path(path), preset, int(max_frames) or None, int(batch))
        print(json.dumps(record))
        return

    short, long = args.lengths or ((100, 1000) if args.quick else (300, 3000))
    speed_frames = args.speed_frames or (4 if args.quick else 16)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(
        f"video benchmark: {HEIGHT}x{WIDTH} H.264 at {FPS} fps; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}, load average {os.getloadavg()[0]:.1f}"
    )
    results: dict = {"load_average_start": os.getloadavg()[0], "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        clips = {}
        for frames in (short, long):
            clips[frames] = Path(tmp) / f"clip{frames}.mp4"
            made = _isolated("make", str(clips[frames]), str(frames))
            print(f"wrote {frames} frames in {made['seconds']:.1f} s ({made['bytes'] / 2**20:.1f} MiB)")
        decode = _isolated("decode", str(clips[short]))
        print(
            f"decode: {decode['frames_per_s']:.1f} frames/s ({decode['frames']} frames, peak RSS "
            f"{decode['peak_rss_mib']:.0f} MiB)"
        )
        speed = _isolated("predict", str(clips[short]), "tiny", str(speed_frames), str(args.batch_size))
        print(
            f"predict end to end (tiny preset, batch {args.batch_size}, fp32): {speed['frames_per_s']:.3f} frames/s "
            f"({speed['frames']} frames in {speed['seconds']:.1f} s)"
        )
        memory = {}
        for frames in (short, long):
            memory[frames] = _isolated("predict", str(clips[frames]), "stand-in", "0", str(args.batch_size))
            m = memory[frames]
            print(
                f"predict {frames} frames (stand-in model): {m['frames_per_s']:.2f} frames/s, peak RSS "
                f"{m['peak_rss_mib']:.0f} MiB ({m['peak_above_start_mib']:.0f} MiB above the start), "
                f"npz {m['npz_mib']:.0f} MiB"
            )
        ratio = memory[long]["peak_rss_mib"] / memory[short]["peak_rss_mib"]
        ratio_above = memory[long]["peak_above_start_mib"] / max(memory[short]["peak_above_start_mib"], 1e-9)
        print(f"peak RSS {long} / {short} frames: {ratio:.3f}x (above-start {ratio_above:.3f}x); goal <= 1.2x")
        results.update(
            decode=decode,
            predict_speed=speed,
            memory={str(k): v for k, v in memory.items()},
            peak_ratio=ratio,
            peak_above_start_ratio=ratio_above,
        )
    results["load_average_end"] = os.getloadavg()[0]
    print(f"load average at the end {results['load_average_end']:.1f}")
    if args.output_json:
        args.output_json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

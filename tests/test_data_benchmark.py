"""benchmarks/data.py's throughput section: the files it decodes are what its table says (JPEG/WebP, 16-bit PNG
depth in millimetres, 3-frame clips) and one tiny run prints both tables (no timings asserted)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mesa_hf.data.decoders import decode_depth
from mesa_hf.data.synthetic import synthetic_view

from .helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "data.py"


def load_benchmark():
    return load_script(SCRIPT, "data_benchmark")


def test_generated_files_have_the_stated_formats_and_the_depth_round_trips(tmp_path):
    files = load_benchmark().write_files(tmp_path, 1)
    for kind, image_format, size in (("jpeg256", "JPEG", (341, 256)), ("webp256", "WEBP", (341, 256))):
        with Image.open(files[kind][0]) as image:
            assert (image.format, image.size, image.mode) == (image_format, size, "RGB")
    _, depth = files["rgbd"][0]
    with Image.open(depth) as raw:
        assert raw.mode in ("I;16", "I") and raw.size == (640, 480)
    _, true_depth, _, _, _ = synthetic_view(1, 0, 480, 640)
    decoded = decode_depth(depth, "png", depth_scale=0.001)
    assert decoded.shape == (480, 640) and np.abs(decoded - true_depth).max() <= 0.0005 + 1e-6  # millimetre steps
    frames, intrinsics, poses = files["clip"][0]
    assert len(frames) == 3 and np.asarray(intrinsics).shape == (3, 3) and np.asarray(poses).shape == (3, 4, 4)


def test_throughput_section_prints_both_tables(capsys):
    benchmark = load_benchmark()
    rates = benchmark.bench_throughput(samples=1, count=1)
    assert [stage for stage, _, _, _ in rates] == ["masked", "masked", "masked", "supervised", "geometric"]
    assert all(cpu > 0 and wall > 0 for _, _, cpu, wall in rates)
    out = capsys.readouterr().out
    assert "| stage transform | files per sample | samples/s per core | wall-clock |" in out
    assert out.count("| Swin-B 224, V100 (derived") == 1 and out.count("(inferred, not published): 700 |") == 1
    assert benchmark.workers_needed(111, 50) == 3 and benchmark.workers_needed(100, 50) == 2

"""Inference latency and peak memory of MeSaForDepthEstimation against transformers' depth peers.

Models (random weights, same inputs, measured in the same run):
  * MeSa, `tiny` preset (Swin-V2-T encoder, window 30, MIM-Depth decoder);
  * DPTForDepthEstimation with the same Swin-V2 backbone configuration (the Intel/dpt-swinv2 design);
  * GLPNForDepthEstimation with the published NYUv2 GLPN shapes (MiT-b4 encoder).
Each is run at 480x640, batch 1 and 8, fp32 and bf16 autocast; the table gives median latency, peak memory added
by the forward pass (CPU: peak RSS; CUDA: peak allocated) and ratios against MeSa. The pipeline's overhead over the
bare forward (image decoding, preprocessing and post-processing) is measured on a real NYUv2 photo.

    python benchmarks/inference.py            # full table (several minutes on 2 CPU cores)
    python benchmarks/inference.py --quick    # batch 1 only, one timed repeat
    python benchmarks/inference.py --deploy   # CPU deployment table only (+ pipeline overhead)
    # the int8 goal: three interleaved passes over the rows, and the int8 accuracy of a trained checkpoint
    python benchmarks/inference.py --deploy --rows pytorch-fused ort-fp32 ort-int8 ort-int8-static
        --batches 1 --rounds 3 --no-pipeline --accuracy-checkpoint CHECKPOINT

The deployment table (2 threads, fp32 unless noted, batch 1 and 4, 480x640): MeSa `tiny` in PyTorch with the stock
(eager) and the fused window attention, exported to ONNX (`mesa_hf.onnx.export_onnx`) and run by ONNX Runtime in fp32
and int8 (the export's default dynamic quantisation; `--rows ... ort-int8-static` adds static QDQ quantisation
calibrated on the export's rendered photos); DPT-SwinV2 with MeSa's backbone configuration at 480x640, and
DPT-SwinV2 at its published configuration (Intel/dpt-swinv2-tiny-256: Swin-V2-T, window 16, 256x256 input; random
weights, config only).
Ratios are latencies over PyTorch fused fp32 at the same batch, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HEIGHT, WIDTH = 480, 640
MODELS = ("mesa", "dpt-swinv2", "glpn")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyu_test10" / "image_0.png"


def build_model(name: str) -> torch.nn.Module:
    from transformers import DPTConfig, DPTForDepthEstimation, GLPNConfig, GLPNForDepthEstimation

    from mesa_hf import MeSaConfig, MeSaForDepthEstimation

    mesa_config = MeSaConfig.from_preset("tiny")
    if name == "mesa":
        return MeSaForDepthEstimation(mesa_config)
    if name == "dpt-swinv2":
        config = DPTConfig(
            backbone_config=mesa_config.backbone_config.to_dict(),
            neck_hidden_sizes=mesa_config.stage_channels,
            reassemble_factors=[1, 1, 1, 1],
        )
        return DPTForDepthEstimation(config)
    if name == "glpn":
        config = GLPNConfig(
            depths=[3, 8, 27, 3],
            hidden_sizes=[64, 128, 320, 512],
            num_attention_heads=[1, 2, 5, 8],
            decoder_hidden_size=64,
            max_depth=10,
        )
        return GLPNForDepthEstimation(config)
    raise ValueError(f"unknown model {name!r}")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(name: str, batch: int, dtype: str, repeats: int, device: str) -> dict:
    """Median forward latency (s) and the forward pass's peak memory (MiB) for one configuration."""
    torch.manual_seed(0)
    model = build_model(name).eval().to(device)
    pixel_values = torch.randn(batch, 3, HEIGHT, WIDTH, device=device)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")

    def forward():
        with torch.inference_mode(), autocast:
            out = model(pixel_values=pixel_values).predicted_depth
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    depth = forward()  # warm-up
    assert depth.shape[-2:] == (HEIGHT, WIDTH), depth.shape
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        before = _rss_kib("VmRSS") * 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else _rss_kib("VmHWM") * 1024
    return {
        "model": name,
        "batch": batch,
        "dtype": dtype,
        "latency_s": statistics.median(times),
        "peak_mib": max(peak - before, 0) / 2**20,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def measure_pipeline_overhead(repeats: int, device: str) -> dict:
    from PIL import Image
    from transformers import pipeline

    from mesa_hf import MeSaImageProcessor

    image = Image.open(DATA).convert("RGB") if DATA.is_file() else Image.new("RGB", (WIDTH, HEIGHT), (90, 120, 150))
    model = build_model("mesa").eval()
    processor = MeSaImageProcessor()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        estimator = pipeline("depth-estimation", model=folder, device=device)
    pixel_values = processor(image, return_tensors="pt").pixel_values.to(device)
    estimator(image)
    with torch.inference_mode():
        estimator.model(pixel_values=pixel_values)
    bare, full = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            estimator.model(pixel_values=pixel_values)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        estimator(image)
        full.append(time.perf_counter() - start)
    return {"bare_s": statistics.median(bare), "pipeline_s": statistics.median(full)}


DEPLOY_ROWS = ("pytorch-eager", "pytorch-fused", "ort-fp32", "ort-int8", "dpt-swinv2", "dpt-swinv2-256")
EXTRA_ROWS = ("ort-int8-static",)  # only with --rows: static QDQ int8 calibrated on the rendered photos
STATIC_INT8_FILE = "model_int8_static.onnx"


def build_dpt_published() -> torch.nn.Module:
    """DPT-SwinV2 at Intel/dpt-swinv2-tiny-256's configuration (Swin-V2-T, window 16, 256x256), random weights."""
    from transformers import DPTConfig, DPTForDepthEstimation, Swinv2Config

    backbone = Swinv2Config(
        image_size=256,
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=16,
        pretrained_window_sizes=[0, 0, 0, 0],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = DPTConfig(backbone_config=backbone, neck_hidden_sizes=[96, 192, 384, 768], reassemble_factors=[1, 1, 1, 1])
    return DPTForDepthEstimation(config)


def export_for_deploy(folder: str, static_int8: bool = False) -> dict:
    """MeSa `tiny` (random weights, seed 0) exported to ONNX at 480x640 with a dynamic batch axis, fp32 and int8
    (the export's default, dynamic quantisation); `static_int8` adds the static QDQ model calibrated on the export's
    rendered photos. Returns the export's int8 record."""
    from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaImageProcessor
    from mesa_hf.onnx import export_onnx, generated_photos, letterbox, quantize_int8

    torch.manual_seed(0)
    checkpoint = Path(folder) / "checkpoint"
    MeSaForDepthEstimation(MeSaConfig.from_preset("tiny")).save_pretrained(checkpoint)
    MeSaImageProcessor().save_pretrained(checkpoint)
    export = Path(folder) / "export"
    record = export_onnx(checkpoint, export, HEIGHT, WIDTH, dynamic_batch=True, quantize="int8", log=lambda _: None)
    if static_int8:
        calibration = [letterbox(photo, HEIGHT, WIDTH)[0] for photo in generated_photos()]
        quantize_int8(export / "model.onnx", export / STATIC_INT8_FILE, calibration=calibration, mode="static")
    return _int8_fields(record)


def _int8_fields(record: dict) -> dict:
    return {key: record[key] for key in ("int8_quantization", "int8_mean_relative_difference", "verified_images")}


def export_accuracy_checkpoint(checkpoint: str, images: str, mode: str, folder: str) -> dict:
    """A trained checkpoint exported at 480x640 with int8 (`mode`), calibrated (static) and checked on the photos
    in the folder `images`: the int8 accuracy on real photos."""
    from mesa_hf.onnx import export_onnx

    output = Path(folder) / f"accuracy-{mode}"
    record = export_onnx(
        checkpoint, output, HEIGHT, WIDTH, quantize="int8", int8_mode=mode, images=[images], log=lambda _: None
    )
    return {**_int8_fields(record), "images": Path(images).name}


def measure_deploy(row: str, batch: int, repeats: int, threads: int, export_dir: str) -> dict:
    """Median latency (s) of one deployment row at `threads` threads."""
    forward, size, options = deploy_forward(row, batch, threads, export_dir)
    forward()  # warm-up
    return {"row": row, "batch": batch, "latency_s": _median_call(forward, repeats), "size": size, "options": options}


def measure_interleaved(rows: list[str], batch: int, repeats: int, rounds: int, threads: int, export_dir: str) -> list:
    """All `rows` loaded in one process and timed in turn, `rounds` times: each round gives every row the median of
    `repeats` calls, so that the rows of one round see the same machine load. Returns one list of rows per round."""
    built = {row: deploy_forward(row, batch, threads, export_dir) for row in rows}
    for forward, _, _ in built.values():
        forward()  # warm-up
    return [
        [
            {"row": row, "batch": batch, "latency_s": _median_call(forward, repeats), "size": size, "options": options}
            for row, (forward, size, options) in built.items()
        ]
        for _ in range(rounds)
    ]


def _median_call(forward, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def deploy_forward(row: str, batch: int, threads: int, export_dir: str) -> tuple:
    """(forward(), input size text, ORT session options text) of one deployment row at `threads` threads."""
    torch.set_num_threads(threads)
    height, width = (256, 256) if row == "dpt-swinv2-256" else (HEIGHT, WIDTH)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, height, width, generator=generator)
    options = ""
    if row.startswith("ort"):
        from mesa_hf.onnx import OnnxDepthEstimator

        model_file = {"ort-int8": "model_int8.onnx", "ort-int8-static": STATIC_INT8_FILE}.get(row, "model.onnx")
        estimator = OnnxDepthEstimator(Path(export_dir) / "export", model_file=model_file, threads=threads)
        options = estimator.describe_session()
        array = pixel_values.numpy()

        def forward():
            return estimator.forward(array)

    else:
        from mesa_hf import MeSaConfig, MeSaForDepthEstimation
        from mesa_hf.attention_mesa import set_window_attention

        torch.manual_seed(0)
        if row.startswith("pytorch"):
            model = MeSaForDepthEstimation(MeSaConfig.from_preset("tiny")).eval()
            set_window_attention(model.backbone, "eager" if row == "pytorch-eager" else "sdpa")
        else:
            model = (build_dpt_published() if row == "dpt-swinv2-256" else build_model("dpt-swinv2")).eval()

        def forward():
            with torch.inference_mode():
                return model(pixel_values=pixel_values).predicted_depth

    return forward, f"{height}x{width}", options


def run_deploy(
    repeats: int,
    threads: int,
    rows: tuple[str, ...] = DEPLOY_ROWS,
    batches: tuple[int, ...] = (1, 4),
    rounds: int = 1,
    accuracy_checkpoint: str | None = None,
    accuracy_images: str = str(DATA.parent),
    interleave: bool = False,
) -> None:
    """The deployment table: `rounds` passes over `rows` x `batches` (each row in a fresh process, rows of one pass
    back to back so that they see the same machine load); latency = median over passes, ratio = median over passes
    of latency / PyTorch fused fp32 of the same pass."""
    with tempfile.TemporaryDirectory() as folder:
        print(f"  exporting MeSa tiny to ONNX (fp32 + int8) in {folder}", file=sys.stderr)
        int8 = _run_isolated(["export", folder, str(int("ort-int8-static" in rows))])
        modes = ("dynamic", "static") if "ort-int8-static" in rows else ("dynamic",)
        accuracy = [
            _run_isolated(["accuracy", accuracy_checkpoint, accuracy_images, mode, folder])
            for mode in (modes if accuracy_checkpoint else ())
        ]
        load_before = os.getloadavg()
        passes = [] if not interleave else [[] for _ in range(rounds)]
        for batch in batches if interleave else ():
            count = repeats if batch == 1 else max(1, repeats - 1)
            args = ["interleave", str(batch), str(count), str(rounds), str(threads), folder, *rows]
            for index, measured in enumerate(_run_isolated(args)):
                passes[index] += measured
            print(f"  measured {', '.join(rows)} batch {batch}, interleaved in one process", file=sys.stderr)
        for index in range(0 if interleave else rounds):
            measured = []
            for batch in batches:
                for row in rows:
                    count = repeats if batch == 1 else max(1, repeats - 1)
                    measured.append(_run_isolated(["deploy", row, str(batch), str(count), str(threads), folder]))
                    print(
                        f"  pass {index + 1}/{rounds} measured {row} batch {batch}: {measured[-1]['latency_s']:.3f} s",
                        file=sys.stderr,
                    )
            passes.append(measured)
        load_after = os.getloadavg()
    options = sorted({r["options"] for measured in passes for r in measured if r["options"]})
    print(
        f"deployment on CPU, {threads} threads (torch.set_num_threads / ORT intra_op_num_threads); median of "
        f"{repeats} (batch 1) / {max(1, repeats - 1)} (batch 4) timed calls after a warm-up; {rounds} pass(es) over "
        + ("the rows, all loaded in one process (interleaved)" if interleave else "the rows, each in a fresh process")
    )
    print(f"load average (1/5/15 min) before the timed passes {_load(load_before)}, after {_load(load_after)}")
    for line in options:
        print(f"ONNX Runtime session: {line}")
    print("| row | input | batch | latency (s) | images/s | latency / PyTorch fused fp32 |")
    print("|---|---|---:|---:|---:|---:|")
    for position, first in enumerate(passes[0]):
        same = [measured[position] for measured in passes]
        latency = statistics.median(r["latency_s"] for r in same)
        ratio_text = "n/a"
        if "pytorch-fused" in rows:
            ratios = [
                measured[position]["latency_s"]
                / next(r["latency_s"] for r in measured if r["row"] == "pytorch-fused" and r["batch"] == first["batch"])
                for measured in passes
            ]
            ratio_text = f"{statistics.median(ratios):.2f}"
            if rounds > 1:
                ratio_text += f" ({', '.join(f'{x:.2f}' for x in ratios)})"
        print(
            f"| {first['row']} | {first['size']} | {first['batch']} | {latency:.3f} | {first['batch'] / latency:.2f} | "
            f"{ratio_text} |"
        )
    print(_int8_line("MeSa tiny, random weights (near-constant depth), rendered photos", int8))
    for record in accuracy:
        print(_int8_line(f"{accuracy_checkpoint}, {record['images']}", record))


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def _int8_line(what: str, record: dict) -> str:
    quantization = record["int8_quantization"]
    calibration = quantization.get("calibration", "none")
    return (
        f"int8 ({quantization['mode']}, {quantization['format']}, calibration {calibration}) "
        f"vs ONNX Runtime fp32 on {record['verified_images']} images ({what}): mean relative depth difference "
        f"{100 * record['int8_mean_relative_difference']:.2f} %"
    )


def _run_isolated(args: list[str]) -> dict:
    """Run one measurement in a fresh process so peak-memory readings do not leak between configurations."""
    completed = subprocess.run(
        [sys.executable, __file__, "--_worker", *args], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 only, one timed repeat")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per configuration")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--deploy", action="store_true", help="only the CPU deployment table and pipeline overhead")
    parser.add_argument("--threads", type=int, default=2, help="threads of the deployment table")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=DEPLOY_ROWS + EXTRA_ROWS,
        default=DEPLOY_ROWS,
        help="deployment rows (default: all but ort-int8-static)",
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4], help="deployment batch sizes")
    parser.add_argument("--no-pipeline", action="store_true", help="--deploy without the pipeline overhead")
    parser.add_argument(
        "--interleave", action="store_true", help="--deploy rows loaded in one process and timed in turn each round"
    )
    parser.add_argument("--rounds", type=int, default=1, help="passes over the deployment rows (ratios per pass)")
    parser.add_argument(
        "--accuracy-checkpoint",
        default=None,
        help="a trained checkpoint: also export it with int8 and print the int8 depth difference on --accuracy-images",
    )
    parser.add_argument(
        "--accuracy-images",
        default=str(DATA.parent),
        help="folder of photos for --accuracy-checkpoint (default: ../shared/data/nyu_test10)",
    )
    parser.add_argument("--_worker", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker is not None:
        kind, *rest = args._worker
        if kind == "pipeline":
            result = measure_pipeline_overhead(int(rest[0]), rest[1])
        elif kind == "export":
            result = export_for_deploy(rest[0], static_int8=rest[1] == "1")
        elif kind == "accuracy":
            result = export_accuracy_checkpoint(*rest)
        elif kind == "interleave":
            result = measure_interleaved(rest[5:], int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
        elif kind == "deploy":
            result = measure_deploy(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
        else:
            name, batch, dtype, repeats, device = kind, int(rest[0]), rest[1], int(rest[2]), rest[3]
            result = measure(name, batch, dtype, repeats, device)
        print(json.dumps(result))
        return

    repeats = args.repeats or (1 if args.quick else 3)
    deploy = (
        tuple(args.rows),
        tuple(args.batches),
        args.rounds,
        args.accuracy_checkpoint,
        args.accuracy_images,
        args.interleave,
    )
    if args.deploy:
        run_deploy(repeats, args.threads, *deploy)
        if not args.no_pipeline:
            print_pipeline_overhead(repeats, args.device)
        return
    batches = (1,) if args.quick else (1, 8)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"device {args.device}, threads {torch.get_num_threads()}; input {HEIGHT}x{WIDTH}; median of {repeats}"
    )
    rows = []
    for batch in batches:
        for dtype in ("fp32", "bf16"):
            for name in MODELS:
                rows.append(_run_isolated([name, str(batch), dtype, str(repeats if batch == 1 else 1), args.device]))
                row = rows[-1]
                print(f"  measured {name} batch {batch} {dtype}: {row['latency_s']:.3f} s", file=sys.stderr)
    mesa = {(r["batch"], r["dtype"]): r for r in rows if r["model"] == "mesa"}
    header = "| model | params (M) | batch | dtype | latency (s) | images/s | peak mem (MiB) | latency / MeSa |"
    print(header)
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["latency_s"] / mesa[(r["batch"], r["dtype"])]["latency_s"]
        print(
            f"| {r['model']} | {r['params_m']:.1f} | {r['batch']} | {r['dtype']} | {r['latency_s']:.3f} | "
            f"{r['batch'] / r['latency_s']:.2f} | {r['peak_mib']:.0f} | {ratio:.2f} |"
        )
    run_deploy(repeats, args.threads, *deploy)
    print_pipeline_overhead(repeats, args.device)


def print_pipeline_overhead(repeats: int, device: str) -> None:
    overhead = _run_isolated(["pipeline", str(repeats), device])
    print(
        f"pipeline('depth-estimation') on a 480x640 photo: {overhead['pipeline_s']:.3f} s vs bare forward "
        f"{overhead['bare_s']:.3f} s -> overhead {overhead['pipeline_s'] - overhead['bare_s']:.3f} s "
        f"({100 * (overhead['pipeline_s'] / overhead['bare_s'] - 1):.1f} %)"
    )


if __name__ == "__main__":
    main()

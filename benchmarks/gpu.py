"""One-GPU check of MeSa's fused Swin-V2 attention: correctness, SDPA backend, training and inference speed.

Sections (rows of one markdown table, written after every row so a timeout still leaves results):

* **correctness**: fused (`mesa_hf.attention_mesa`, "sdpa") vs transformers' stock Swin-V2 attention on the device,
  fp32 and bf16 autocast: max abs and relative difference of the outputs and of the gradients, all parameters and
  the continuous-position-bias MLP's (`cpb_mlp`) alone;
* **backend**: which SDPA backend runs a fused window-attention call with a float mask that needs a gradient
  (each backend pinned with `torch.nn.attention.sdpa_kernel` in turn, plus the kernel names the profiler sees for the
  fused path as the library runs it);
* **train**: images/s and `torch.cuda.max_memory_allocated` of Swin-V2-B (embed 128, depths 2,2,18,2, heads
  4,8,16,32) masked image modelling at 192x192 batch 128 (window 12) and depth fine-tuning at 480x480 (window 30),
  fused vs stock, eager vs `torch.compile`, bf16 autocast, AdamW step included (the batch is halved on
  out-of-memory; the table says which batch ran);
* **infer**: latency of the full `MeSaForDepthEstimation` (base) at 480x640 batch 1, fp32 and bf16;
* **ddp/fsdp**: only with several GPUs; with one, the table says "1 GPU: not measured".

Compiled rows run in a child process with a time limit (compile time counts and is reported); a row that would
overrun the overall budget says "skipped: budget".

    PYTHONPATH=src python3 benchmarks/gpu.py                      # CUDA, ~8 min budget
    PYTHONPATH=src python3 benchmarks/gpu.py --device cpu --quick # tiny sizes, seconds (CI)

It imports only torch, transformers and mesa_hf's configuration, modeling and attention modules.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mesa_hf.attention_mesa import set_window_attention
from mesa_hf.configuration_mesa import MeSaConfig
from mesa_hf.modeling_mesa import MeSaForDepthEstimation, MeSaForMaskedImageModeling

COLUMNS = ["section", "case", "result", "value", "detail"]
BASE_BACKBONE = {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "drop_path_rate": 0.0}
# (name, preset, backbone overrides, input height/width, batch) per training case, full and --quick sizes
TRAIN_CASES = {
    False: [
        (
            "mim 192x192 w12",
            BASE_BACKBONE,
            {"image_size": 192, "window_size": 12, "pretrained_window_sizes": [0] * 4},
            (192, 192),
            128,
        ),
        (
            "finetune 480x480 w30",
            BASE_BACKBONE,
            {"image_size": 480, "window_size": 30, "pretrained_window_sizes": [12, 12, 12, 6]},
            (480, 480),
            16,
        ),
    ],
    True: [
        ("mim 64x64 w4", {}, {}, (64, 64), 2),
        ("finetune 64x64 w4", {}, {}, (64, 64), 2),
    ],
}
INFER_CASE = {False: (BASE_BACKBONE, {}, (480, 640)), True: ({}, {}, (64, 96))}


def log(message: str) -> None:
    print(f"[gpu.py {time.strftime('%H:%M:%S')}] {message}", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def mesa_config(quick: bool, backbone: dict, overrides: dict, attention: str) -> MeSaConfig:
    """The `test` preset for --quick, else the `base` preset with `backbone` (Swin-V2-B) and `overrides`."""
    if quick:
        return MeSaConfig.from_preset("test", window_attention=attention)
    return MeSaConfig.from_preset("base", backbone_overrides={**backbone, **overrides}, window_attention=attention)


# ------------------------------------------------------------------------------------------------ correctness


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| (Frobenius norms), b the stock reference."""
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def correctness_rows(device: torch.device, quick: bool) -> list[dict]:
    """Fused vs stock Swin-V2 encoder (one model, two attentions, same weights): outputs and gradients."""
    from transformers import Swinv2Backbone, Swinv2Config

    config = Swinv2Config(
        image_size=(64, 96) if quick else 192,
        embed_dim=16 if quick else 64,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4] if quick else [2, 4, 8, 16],
        window_size=4 if quick else 12,
        pretrained_window_sizes=[3, 3, 3, 2] if quick else [0] * 4,
        drop_path_rate=0.0,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    height, width = (60, 100) if quick else (200, 264)  # token grids no multiple of the window: the padding path
    torch.manual_seed(0)
    stock = Swinv2Backbone(config).to(device).train()
    fused = copy.deepcopy(stock)
    set_window_attention(fused, "sdpa")
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
    rows = []
    for precision in ("fp32", "bf16"):
        results = {}
        for name, model in (("stock", stock), ("fused", fused)):
            model.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                maps = model(pixels).feature_maps
            loss = sum(
                (m.float() * torch.randn(m.shape, generator=torch.Generator().manual_seed(i)).to(device)).sum()
                for i, m in enumerate(maps)
            )
            loss.backward()
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            results[name] = ([m.detach().float() for m in maps], grads)
        (stock_maps, stock_grads), (fused_maps, fused_grads) = results["stock"], results["fused"]
        out_abs = max((a - b).abs().max().item() for a, b in zip(fused_maps, stock_maps, strict=True))
        out_rel = max(relative(a, b) for a, b in zip(fused_maps, stock_maps, strict=True))
        missing = sorted(set(stock_grads) ^ set(fused_grads))
        shared = [n for n in stock_grads if n in fused_grads]
        grad_abs = max((fused_grads[n] - stock_grads[n]).abs().max().item() for n in shared)
        grad_rel = max(relative(fused_grads[n], stock_grads[n]) for n in shared)
        cpb = [n for n in shared if "continuous_position_bias_mlp" in n]
        cpb_abs = max((fused_grads[n] - stock_grads[n]).abs().max().item() for n in cpb)
        cpb_rel = max(relative(fused_grads[n], stock_grads[n]) for n in cpb)
        cpb_zero = [n for n in cpb if fused_grads[n].abs().max().item() == 0.0]
        detail = f"{len(shared)} params with grad, {len(cpb)} cpb_mlp"
        if missing:
            detail += f"; grad missing on one side: {missing[:3]}"
        if cpb_zero:
            detail += f"; fused cpb_mlp grad all zero: {cpb_zero[:3]}"
        case = f"{precision} {height}x{width} w{config.window_size}"
        rows += [
            row("correctness", case, "output max abs / rel", f"{out_abs:.2e} / {out_rel:.2e}"),
            row("correctness", case, "grad max abs / rel (all)", f"{grad_abs:.2e} / {grad_rel:.2e}", detail),
            row("correctness", case, "grad max abs / rel (cpb_mlp)", f"{cpb_abs:.2e} / {cpb_rel:.2e}"),
        ]
    return rows


# ------------------------------------------------------------------------------------------------ backend

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def backend_rows(device: torch.device, quick: bool) -> list[dict]:
    """Each SDPA backend pinned in turn on a fused-path call (float mask with grad), fp32 and bf16, and the
    attention kernels the profiler sees in the library's own fused forward+backward."""
    windows, heads, tokens, head_size = (4, 2, 16, 8) if quick else (64, 4, 144, 32)
    rows = []
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for name, backend in [("default order", None), *BACKENDS.items()]:
            generator = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(windows, heads, tokens, head_size, generator=generator) for _ in range(3))
            q, k, v = (t.to(device, dtype).requires_grad_() for t in (q, k, v))
            mask = torch.randn(1, heads, tokens, tokens, generator=generator).to(device, dtype).requires_grad_()
            context = sdpa_kernel([backend]) if backend is not None else _null_context()
            try:
                with context:
                    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
                    out.float().square().sum().backward()
                synchronize(device)
                ok = mask.grad is not None and bool(torch.isfinite(mask.grad).all())
                result, detail = ("ok" if ok else "no mask grad"), f"mask grad norm {mask.grad.norm().item():.3g}"
            except Exception as error:  # the error is the measurement
                result, detail = "error", one_line(error)
            rows.append(row("backend", f"{precision} pinned {name}", result, "", detail))
    rows.append(row("backend", "fused path kernels (fp32 + bf16 autocast)", *profiled_kernels(device, quick)))
    return rows


def _null_context():
    import contextlib

    return contextlib.nullcontext()


def profiled_kernels(device: torch.device, quick: bool) -> tuple[str, str, str]:
    """The attention kernel names in the profile of one fused training step of a small Swin-V2 encoder."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import Swinv2Backbone, Swinv2Config

    config = Swinv2Config(
        image_size=64, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4 if quick else 8, drop_path_rate=0.0
    )
    model = Swinv2Backbone(config).to(device).train()
    set_window_attention(model, "sdpa")
    pixels = torch.randn(2, 3, 64, 64, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    names = set()
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with autocast, profile(activities=activities) as prof:
            model(pixels).feature_maps[-1].float().sum().backward()
            synchronize(device)
        for event in prof.key_averages():
            lowered = event.key.lower()
            if any(word in lowered for word in ("attention", "fmha", "flash", "cudnn", "efficient", "sdpa")):
                names.add(event.key[:80])
    kernels = sorted(names)
    backends = sorted(
        {b for b in ("flash", "efficient", "cudnn", "math") for n in kernels if b in n.lower()}
        | ({"fmha(efficient)"} if any("fmha" in n.lower() for n in kernels) else set())
    )
    return ", ".join(backends) or "none matched", "", "; ".join(kernels[:8])


# ------------------------------------------------------------------------------------------------ training


def random_mim_mask(batch: int, height: int, width: int, config: MeSaConfig, device) -> torch.Tensor:
    """SimMIM's mask: mask_ratio of the mask patches, upsampled to the model-patch grid, (B, H/4 * W/4) bool."""
    patch, block = config.patch_size, config.mask_patch_size
    grid = (height // block, width // block)
    count = grid[0] * grid[1]
    scores = torch.rand(batch, count, generator=torch.Generator().manual_seed(0))
    masked = scores.argsort(1) < round(config.mask_ratio * count)
    masked = masked.view(batch, *grid).repeat_interleave(block // patch, 1).repeat_interleave(block // patch, 2)
    return masked.reshape(batch, -1).to(device)


def train_measurement(args, case_index: int, attention: str, compiled: bool, batch: int) -> dict:
    """Images/s and peak memory of training steps (forward, backward, AdamW) of one case; raises on failure."""
    device = torch.device(args.device)
    name, backbone, overrides, (height, width), _ = TRAIN_CASES[args.quick][case_index]
    reset_memory(device)
    torch.manual_seed(0)
    masked = name.startswith("mim")
    config = mesa_config(args.quick, backbone, overrides, attention)
    model = (MeSaForMaskedImageModeling if masked else MeSaForDepthEstimation)(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    pixels = torch.randn(batch, 3, height, width, device=device)
    if masked:
        inputs = {"pixel_values": pixels, "bool_masked_pos": random_mim_mask(batch, height, width, config, device)}
    else:
        inputs = {"pixel_values": pixels, "labels": torch.rand(batch, height, width, device=device) * 9.0 + 0.5}
    forward = torch.compile(model) if compiled else model

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = forward(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    start = time.perf_counter()
    loss = step()
    synchronize(device)
    first_s = time.perf_counter() - start
    for _ in range(args.warmup - 1):
        step()
    synchronize(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss.item()}")
    seconds = statistics.median(times)
    return {
        "images_per_s": batch / seconds,
        "step_s": seconds,
        "first_step_s": first_s,
        "peak_gib": peak_memory_gib(device),
        "batch": batch,
        "loss": loss.item(),
    }


def train_with_oom_fallback(args, case_index: int, attention: str, compiled: bool) -> dict:
    """`train_measurement`, halving the batch on CUDA out-of-memory (down to 1)."""
    batch = TRAIN_CASES[args.quick][case_index][4]
    while True:
        try:
            return train_measurement(args, case_index, attention, compiled, batch)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            log(f"out of memory at batch {batch}; retrying with {batch // 2}")
            batch //= 2
            torch._dynamo.reset()
            reset_memory(torch.device(args.device))


def train_row(args, case_index: int, attention: str, compiled: bool) -> dict:
    name, *_, batch = TRAIN_CASES[args.quick][case_index]
    label = f"{name} {'fused' if attention == 'sdpa' else 'stock'} {'compiled' if compiled else 'eager'}"
    precision = "bf16 autocast" if args.device == "cuda" else "fp32"
    result = train_with_oom_fallback(args, case_index, attention, compiled)
    memory = f", peak {result['peak_gib']:.1f} GiB" if result["peak_gib"] is not None else ""
    first = "first step (compile)" if compiled else "first step"
    detail = (
        f"batch {result['batch']}{' (asked ' + str(batch) + ')' if result['batch'] != batch else ''}, {precision}, "
        f"step {result['step_s'] * 1e3:.0f} ms, {first} {result['first_step_s']:.1f} s{memory}"
    )
    return row("train", label, "images/s", f"{result['images_per_s']:.1f}", detail, measurement=result)


# ------------------------------------------------------------------------------------------------ inference


def inference_rows(args) -> list[dict]:
    device = torch.device(args.device)
    backbone, overrides, (height, width) = INFER_CASE[args.quick]
    reset_memory(device)
    torch.manual_seed(0)
    model = MeSaForDepthEstimation(mesa_config(args.quick, backbone, overrides, "sdpa")).to(device).eval()
    pixels = torch.randn(1, 3, height, width, device=device)
    rows = []
    for precision in ("fp32", "bf16"):

        def run(half=precision == "bf16"):
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=half):
                return model(pixels).predicted_depth

        for _ in range(args.warmup):
            depth = run()
        synchronize(device)
        times = []
        for _ in range(max(args.steps, 3)):
            start = time.perf_counter()
            depth = run()
            synchronize(device)
            times.append(time.perf_counter() - start)
        if not torch.isfinite(depth).all():
            raise RuntimeError(f"{precision}: non-finite depth")
        memory = peak_memory_gib(device)
        detail = f"batch 1, fused attention, median of {len(times)}" + (
            f", peak {memory:.1f} GiB" if memory is not None else ""
        )
        case = f"MeSaForDepthEstimation {'base' if not args.quick else 'test'} {height}x{width} {precision}"
        rows.append(row("infer", case, "latency ms", f"{statistics.median(times) * 1e3:.1f}", detail))
    return rows


# ------------------------------------------------------------------------------------------------ table


def row(section: str, case: str, result: str, value: str = "", detail: str = "", measurement=None) -> dict:
    entry = {"section": section, "case": case, "result": result, "value": value, "detail": detail}
    if measurement is not None:
        entry["measurement"] = measurement
    return entry


def one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for entry in rows:
        cells = [str(entry[column]).replace("|", "/").replace("\n", " ") for column in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def environment(device: torch.device) -> str:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    extra = ""
    if device.type == "cuda":
        extra = (
            f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.device_count()} GPU(s)"
        )
    return f"{name}; torch {torch.__version__}, transformers {transformers.__version__}{extra}"


def child_row(args, case_index: int, attention: str, compiled: bool, limit_s: float) -> dict:
    """`train_row` in a child process (compile runs there) with a wall-clock limit; a timeout is a row too."""
    name = TRAIN_CASES[args.quick][case_index][0]
    label = f"{name} {'fused' if attention == 'sdpa' else 'stock'} {'compiled' if compiled else 'eager'}"
    command = [
        sys.executable,
        __file__,
        "--device",
        args.device,
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--child",
        f"{case_index},{attention},{int(compiled)}",
    ] + (["--quick"] if args.quick else [])
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return row("train", label, "skipped: budget", "", f"not done within {limit_s:.0f} s (compile counts)")
    elapsed = time.perf_counter() - start
    for line in done.stdout.splitlines():
        if line.startswith("CHILD_ROW "):
            entry = json.loads(line[len("CHILD_ROW ") :])
            entry["detail"] += f", process {elapsed:.0f} s"
            return entry
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return row("train", label, "error", "", f"child exited {done.returncode}: {tail}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the `test` preset), CPU in seconds")
    parser.add_argument("--output", type=Path, default=None, help="markdown table (default: print only)")
    parser.add_argument("--json", type=Path, default=None, help="rows as JSON")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450; quick 60)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per row (default 3; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 5; quick 2)")
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="compiled training rows: auto = on CUDA only (CPU compile takes minutes)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 5)
    args.budget = args.budget if args.budget is not None else (60.0 if args.quick else 450.0)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --device cpu)")
    device = torch.device(args.device)

    if args.child is not None:
        case_index, attention, compiled = args.child.split(",")
        entry = train_row(args, int(case_index), attention, compiled == "1")
        print("CHILD_ROW " + json.dumps(entry), flush=True)
        return [entry]

    started = time.perf_counter()
    header = f"### `benchmarks/gpu.py{' --quick' if args.quick else ''}` on {environment(device)}"
    log(header)
    rows: list[dict] = []

    def remaining() -> float:
        return args.budget - (time.perf_counter() - started)

    def publish() -> None:
        text = markdown(rows, header)
        if args.output is not None:
            write_atomic(args.output, text)
        if args.json is not None:
            write_atomic(args.json, json.dumps({"header": header, "rows": rows}, indent=1))

    def add(produce, section: str, case: str, minimum_s: float = 0.0) -> None:
        if remaining() <= minimum_s:
            rows.append(row(section, case, "skipped: budget", "", f"{remaining():.0f} s left of {args.budget:.0f}"))
        else:
            log(f"{section}: {case} ...")
            start = time.perf_counter()
            try:
                produced = produce()
            except Exception as error:  # one failed row must not lose the others
                traceback.print_exc()
                produced = [row(section, case, "error", "", one_line(error))]
            produced = produced if isinstance(produced, list) else [produced]
            rows.extend(produced)
            for entry in produced:
                log(f"  {entry['case']}: {entry['result']} {entry['value']} {entry['detail']}")
            log(f"  ({time.perf_counter() - start:.1f} s, {remaining():.0f} s of budget left)")
        publish()

    add(lambda: correctness_rows(device, args.quick), "correctness", "fused vs stock")
    add(lambda: backend_rows(device, args.quick), "backend", "sdpa backends")
    compile_rows = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    for case_index, (name, *_) in enumerate(TRAIN_CASES[args.quick]):
        for attention in ("sdpa", "eager"):
            label = f"{name} {'fused' if attention == 'sdpa' else 'stock'} eager"
            add(lambda c=case_index, a=attention: train_row(args, c, a, False), "train", label, minimum_s=15)
    add(lambda: inference_rows(args), "infer", "MeSaForDepthEstimation", minimum_s=10)
    for case_index, (name, *_) in enumerate(TRAIN_CASES[args.quick]):
        for attention in ("sdpa", "eager"):
            label = f"{name} {'fused' if attention == 'sdpa' else 'stock'} compiled"
            if not compile_rows:
                rows.append(row("train", label, "skipped: --compile off", "", "CPU compile takes minutes"))
                publish()
                continue
            # a child process per compiled row, at most 150 s each (compile included), within what is left
            limit = min(150.0, remaining() - 5.0)
            add(
                lambda c=case_index, a=attention, lim=limit: child_row(args, c, a, True, lim),
                "train",
                label,
                minimum_s=30,
            )
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    reason = f"{gpus} GPU: not measured (DDP/FSDP rows need several GPUs)" if gpus < 2 else "not in this script yet"
    rows.append(row("ddp/fsdp", "DDP / FSDP", "not measured", "", reason))
    publish()
    log(f"done in {time.perf_counter() - started:.0f} s")
    print(markdown(rows, header), flush=True)
    return rows


if __name__ == "__main__":
    main()

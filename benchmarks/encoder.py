"""Stock vs fused (SDPA) Swin-V2 window attention: MeSa's encoder speed, side by side in one run.

Measures transformers' `Swinv2Backbone` (tiny shapes: embed 96, depths [2, 2, 6, 2], heads [3, 6, 12, 24]) with its
stock attention against the same weights after `mesa_hf.attention_mesa.set_window_attention(model, "sdpa")`:

* 480x640 input, window 30 (`image_size` 480, pretrained windows [12, 12, 12, 6]): MIM-Depth / MeSa fine-tuning;
* 192x192 input, window 12: SimMIM pre-training;

forward (eval, `torch.inference_mode`) and forward+backward (train mode, loss on every stage), batch 1 and 8
(batch 8 forward+backward at 480x640 only with `--large`: it needs ~10 GB and minutes per stock step on 2 cores).
FLOPs are counted once per case with `torch.utils.flop_counter.FlopCounterMode` on the stock model on the meta
device, so GFLOP/s of both sides use the stock model's FLOPs. The fp32 2048x2048 matmul rate is measured in the same
run, between the timed calls; stock and fused calls alternate, the medians are reported.

A last section compares full-model inference: `mesa_hf.MeSaForDepthEstimation` (tiny preset, eager and sdpa) against
transformers' `DPTForDepthEstimation` on a Swin-V2 backbone of the same shapes.

On a CUDA GPU (`--device cuda`, the default when one is available) the same benchmark runs in bfloat16.

    PYTHONPATH=src python benchmarks/encoder.py                # ~5 min on 2 CPU cores
    PYTHONPATH=src python benchmarks/encoder.py --quick        # batch 1 only, fewer repeats
    PYTHONPATH=src python benchmarks/encoder.py --large        # adds batch 8 forward+backward at 480x640
    PYTHONPATH=src python benchmarks/encoder.py --compile --settings "96x160 w6"   # eager vs torch.compile rows
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import DPTConfig, DPTForDepthEstimation, Swinv2Backbone, Swinv2Config

from mesa_hf.attention_mesa import padded_query_skipping, set_window_attention

TINY = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]}
OUT_FEATURES = ["stage1", "stage2", "stage3", "stage4"]
SETTINGS = {
    "480x640 w30": ((480, 640), {"image_size": 480, "window_size": 30, "pretrained_window_sizes": [12, 12, 12, 6]}),
    "192x192 w12": ((192, 192), {"image_size": 192, "window_size": 12, "pretrained_window_sizes": [0, 0, 0, 0]}),
    "96x160 w6": ((96, 160), {"image_size": 96, "window_size": 6, "pretrained_window_sizes": [0, 0, 0, 0]}),
}
DEFAULT_SETTINGS = ("480x640 w30", "192x192 w12")


@dataclass
class Row:
    setting: str
    batch: int
    step: str
    gflop: float
    stock_s: float
    sdpa_s: float
    matmul_gflops: float
    max_abs_diff: float
    grad_rel_diff: float | None = None
    cpu_speedup: float | None = None

    @property
    def speedup(self) -> float:
        return self.stock_s / self.sdpa_s


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, cpu_times: list[float] | None = None) -> float:
    """Wall-clock seconds of `fn()`; appends the process CPU seconds to `cpu_times` when given."""
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    if cpu_times is not None:
        cpu_times.append(time.process_time() - cpu_start)
    return time.perf_counter() - start


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, calls: int = 3) -> float:
    """GFLOP/s of a size x size matmul on this device in this dtype (median of `calls`)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    seconds = statistics.median(timed(lambda: a @ b, device) for _ in range(calls))
    return 2 * size**3 / seconds / 1e9


def swin_config(setting: dict) -> Swinv2Config:
    return Swinv2Config(**TINY, **setting, drop_path_rate=0.0, out_features=OUT_FEATURES)


def count_gflop(build: Callable[[], torch.nn.Module], shape: tuple[int, ...], train: bool) -> float:
    """FLOPs of one forward (or forward+backward) of the model `build()` makes, counted on the meta device."""
    with torch.device("meta"):
        model = build().train(train)
        pixels = torch.empty(shape)
        with FlopCounterMode(display=False) as counter:
            if train:
                encoder_loss(model(pixels)).backward()
            else:
                with torch.no_grad():
                    model(pixels)
    return counter.get_total_flops() / 1e9


def encoder_loss(outputs) -> torch.Tensor:
    return sum(feature_map.float().square().mean() for feature_map in outputs.feature_maps)


def encoder_case(
    setting_name: str, batch: int, train: bool, args, device: torch.device, dtype: torch.dtype, rates: list[float]
) -> Row:
    (height, width), setting = SETTINGS[setting_name]
    config = swin_config(setting)
    gflop = count_gflop(lambda: Swinv2Backbone(config), (batch, 3, height, width), train)
    torch.manual_seed(0)
    stock = Swinv2Backbone(config).to(device=device, dtype=dtype).train(train)
    fused = copy.deepcopy(stock)
    set_window_attention(fused, "sdpa")
    pixels = torch.randn(batch, 3, height, width, device=device, dtype=dtype)

    if train:

        def run(model):
            model.zero_grad(set_to_none=True)
            outputs = model(pixels)
            encoder_loss(outputs).backward()
            return outputs.feature_maps

    else:

        def run(model):
            with torch.inference_mode():
                return model(pixels).feature_maps

    # warm-up (allocator, fused weights and masks) and the difference between the two outputs
    stock_maps, fused_maps = run(stock), run(fused)
    max_abs_diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(stock_maps, fused_maps))
    grad_rel_diff = None
    if train:
        grad_rel_diff = max(
            ((p.grad.float() - q.grad.float()).norm() / p.grad.float().norm()).item()
            for p, q in zip(stock.parameters(), fused.parameters())
            if p.grad is not None and p.grad.norm() > 0
        )
    del stock_maps, fused_maps

    stock_times, fused_times, stock_cpu, fused_cpu = [], [], [], []
    for repeat in range(args.repeats):
        rates.append(matmul_rate(device, dtype, args.matmul_size))
        order = [(stock, stock_times, stock_cpu), (fused, fused_times, fused_cpu)]
        for model, times, cpu_times in order if repeat % 2 == 0 else reversed(order):
            times.append(timed(lambda model=model: run(model), device, cpu_times))
    row = Row(
        setting_name,
        batch,
        "fwd+bwd" if train else "forward",
        gflop,
        statistics.median(stock_times),
        statistics.median(fused_times),
        statistics.median(rates),
        max_abs_diff,
        grad_rel_diff,
        statistics.median(stock_cpu) / statistics.median(fused_cpu) if device.type == "cpu" else None,
    )
    del stock, fused
    gc.collect()
    return row


def print_encoder_table(rows: list[Row]) -> None:
    print(
        "| setting | batch | pass | GFLOP | stock s | sdpa s | speed-up | speed-up (CPU time) | stock GFLOP/s "
        "| sdpa GFLOP/s | sdpa % of matmul | max abs diff | max grad rel diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        stock_rate, fused_rate = r.gflop / r.stock_s, r.gflop / r.sdpa_s
        grad = "" if r.grad_rel_diff is None else f"{r.grad_rel_diff:.1e}"
        cpu = "" if r.cpu_speedup is None else f"{r.cpu_speedup:.2f}x"
        print(
            f"| {r.setting} | {r.batch} | {r.step} | {r.gflop:.1f} | {r.stock_s:.3f} | {r.sdpa_s:.3f} "
            f"| {r.speedup:.2f}x | {cpu} | {stock_rate:.1f} | {fused_rate:.1f} "
            f"| {100 * fused_rate / r.matmul_gflops:.0f} % "
            f"| {r.max_abs_diff:.1e} | {grad} |"
        )


def full_model_section(args, device: torch.device, dtype: torch.dtype, rates: list[float]) -> None:
    height, width = SETTINGS["480x640 w30"][0]
    setting = SETTINGS["480x640 w30"][1]
    print(f"\n## Full-model inference, {height}x{width}, batch 1 ({dtype}, {device})\n")
    builders: dict[str, Callable[[], torch.nn.Module]] = {}

    def dpt():
        config = DPTConfig(
            backbone_config=swin_config(setting),
            neck_hidden_sizes=[96, 192, 384, 768],
            reassemble_factors=[1, 1, 1, 1],
        )
        return DPTForDepthEstimation(config)

    builders["DPT-SwinV2 (transformers, stock attention)"] = dpt
    try:
        from mesa_hf import MeSaConfig, MeSaForDepthEstimation
    except ImportError:
        print("mesa_hf.MeSaForDepthEstimation is not available in this checkout: only DPT is timed.\n")
    else:

        def mesa(implementation: str):
            def build():
                backbone = {"drop_path_rate": 0.0, **setting}
                config = MeSaConfig.from_preset("tiny", backbone_overrides=backbone, window_attention=implementation)
                try:
                    return MeSaForDepthEstimation(config)
                except NotImplementedError:  # this checkout's model does not wire the config field yet
                    config = MeSaConfig.from_preset("tiny", backbone_overrides=backbone, window_attention="eager")
                    model = MeSaForDepthEstimation(config)
                    set_window_attention(model.backbone, implementation)
                    return model

            return build

        builders["MeSa tiny, eager attention"] = mesa("eager")
        builders["MeSa tiny, sdpa attention"] = mesa("sdpa")

    shape = (1, 3, height, width)
    gflops = {}
    for name, build in builders.items():
        if name == "MeSa tiny, sdpa attention":
            gflops[name] = gflops["MeSa tiny, eager attention"]  # FLOPs of the stock computation, as above
            continue
        try:
            gflops[name] = count_gflop(build, shape, train=False)
        except Exception as error:  # meta-device counting is best effort
            print(f"(FLOPs of {name} not counted on the meta device: {error})")
            gflops[name] = float("nan")
    torch.manual_seed(0)
    models = {name: build().to(device=device, dtype=dtype).eval() for name, build in builders.items()}
    pixels = torch.randn(shape, device=device, dtype=dtype)

    def run(model):
        with torch.inference_mode():
            return model(pixels).predicted_depth

    for model in models.values():
        run(model)
    times: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(args.repeats):
        rates.append(matmul_rate(device, dtype, args.matmul_size))
        names = list(models) if repeat % 2 == 0 else list(reversed(models))
        for name in names:
            times[name].append(timed(lambda name=name: run(models[name]), device))
    reference = statistics.median(times[next(iter(models))])
    rate = statistics.median(rates)
    print("| model | GFLOP | median s | speed-up vs DPT | GFLOP/s | % of matmul |")
    print("|---|---|---|---|---|---|")
    for name, samples in times.items():
        seconds = statistics.median(samples)
        print(
            f"| {name} | {gflops[name]:.1f} | {seconds:.3f} | {reference / seconds:.2f}x "
            f"| {gflops[name] / seconds:.1f} | {100 * gflops[name] / seconds / rate:.0f} % |"
        )


def padded_query_section(args, device: torch.device, dtype: torch.dtype) -> None:
    """Fused attention with padded query rows skipped (default) vs computed (the previous path), same weights.

    480x640, window 30, forward (eval, inference mode), batch 1 and 4: the calls alternate, medians reported.
    """
    shape, setting = SETTINGS["480x640 w30"]
    torch.manual_seed(0)
    model = Swinv2Backbone(swin_config(setting)).eval().to(device, dtype)
    set_window_attention(model, "sdpa")
    print("\n## Padded query rows (stages 3-4 at 480x640, window 30): skipped vs computed, fused attention\n")
    print("| setting | batch | computed s | skipped s | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for batch in (1,) if args.quick else (1, 4):
        pixel_values = torch.randn(batch, 3, *shape, device=device, dtype=dtype)

        def run(skip: bool, pixel_values=pixel_values):
            with torch.inference_mode(), padded_query_skipping(skip):
                return model(pixel_values).feature_maps

        outputs = {skip: run(skip) for skip in (False, True)}  # warm-up (plans, caches)
        difference = max((a - b).abs().max().item() for a, b in zip(outputs[False], outputs[True], strict=True))
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for skip in (False, True):
                times[skip].append(timed(lambda skip=skip: run(skip), device))
        computed, skipped = statistics.median(times[False]), statistics.median(times[True])
        print(
            f"| 480x640 w30 | {batch} | {computed:.3f} | {skipped:.3f} | {computed / skipped:.2f}x | {difference:.1e} |"
        )


def compile_section(args, device: torch.device, dtype: torch.dtype) -> None:
    """Eager vs torch.compile, stock vs fused attention: one row per (setting, pass, batch 1), medians of the calls.

    The first compiled call (tracing and code generation) is reported apart; the compiled models are checked against
    their eager selves (max abs output difference, and the gradients' largest relative difference for fwd+bwd).
    """
    print(f"\n## torch.compile (backend {args.compile_backend}), batch {args.compile_batch} ({dtype}, {device})\n")
    print(
        "| setting | pass | stock eager s | stock compiled s | sdpa eager s | sdpa compiled s | compiled vs eager "
        "(stock / sdpa) | sdpa compiled vs stock eager | first compiled call s (stock / sdpa) | max abs diff "
        "(stock / sdpa) | grad rel diff (stock / sdpa) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for setting_name in args.settings.split(","):
        (height, width), setting = SETTINGS[setting_name]
        for train in [p == "fwd+bwd" for p in args.passes.split(",")]:
            torch.manual_seed(0)
            stock = Swinv2Backbone(swin_config(setting)).to(device=device, dtype=dtype).train(train)
            fused = copy.deepcopy(stock)
            set_window_attention(fused, "sdpa")
            pixels = torch.randn(args.compile_batch, 3, height, width, device=device, dtype=dtype)

            def run(model, module, train=train, pixels=pixels):
                if not train:
                    with torch.no_grad():
                        return model(pixels).feature_maps, None
                module.zero_grad(set_to_none=True)
                outputs = model(pixels)
                encoder_loss(outputs).backward()
                return outputs.feature_maps, [p.grad.clone() for p in module.parameters() if p.grad is not None]

            seconds, first_call, diffs, grad_diffs = {}, {}, {}, {}
            for name, module in (("stock", stock), ("sdpa", fused)):
                torch._dynamo.reset()
                compiled = torch.compile(module, backend=args.compile_backend)
                reference, reference_grads = run(module, module)
                start = time.perf_counter()
                maps, grads = run(compiled, module)
                first_call[name] = time.perf_counter() - start
                diffs[name] = max((a.float() - b.float()).abs().max().item() for a, b in zip(reference, maps))
                if train:
                    grad_diffs[name] = max(
                        ((g - r).float().norm() / r.float().norm()).item()
                        for g, r in zip(grads, reference_grads)
                        if r.norm() > 0
                    )
                for label, model in (("eager", module), ("compiled", compiled)):
                    run(model, module)  # warm-up
                    seconds[name, label] = statistics.median(
                        timed(lambda model=model, module=module: run(model, module), device)
                        for _ in range(args.repeats)
                    )
            grads = f"{grad_diffs['stock']:.1e} / {grad_diffs['sdpa']:.1e}" if train else ""
            print(
                f"| {setting_name} | {'fwd+bwd' if train else 'forward'} | {seconds['stock', 'eager']:.3f} "
                f"| {seconds['stock', 'compiled']:.3f} | {seconds['sdpa', 'eager']:.3f} "
                f"| {seconds['sdpa', 'compiled']:.3f} "
                f"| {seconds['stock', 'eager'] / seconds['stock', 'compiled']:.2f}x / "
                f"{seconds['sdpa', 'eager'] / seconds['sdpa', 'compiled']:.2f}x "
                f"| {seconds['stock', 'eager'] / seconds['sdpa', 'compiled']:.2f}x "
                f"| {first_call['stock']:.1f} / {first_call['sdpa']:.1f} "
                f"| {diffs['stock']:.1e} / {diffs['sdpa']:.1e} | {grads} |",
                flush=True,
            )
            del stock, fused
            gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side and case (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--quick", action="store_true", help="batch 1 only, 2 repeats")
    parser.add_argument("--large", action="store_true", help="also batch 8 forward+backward at 480x640")
    parser.add_argument("--skip-full-model", action="store_true")
    parser.add_argument(
        "--settings", default=",".join(DEFAULT_SETTINGS), help=f"comma-separated subset of {list(SETTINGS)}"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="only: eager vs torch.compile rows, stock and sdpa (--settings, --passes)",
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of --compile")
    parser.add_argument("--compile-batch", type=int, default=1, help="batch size of --compile")
    parser.add_argument("--passes", default="forward,fwd+bwd", help="comma-separated subset of forward,fwd+bwd")
    parser.add_argument(
        "--padded-queries", action="store_true", help="only: padded query rows skipped vs computed (480x640 w30)"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    if args.padded_queries:
        print(f"# Swin-V2 encoder, padded query rows ({name}, {dtype}, torch {torch.__version__})")
        padded_query_section(args, device, dtype)
        return
    settings, passes = args.settings.split(","), args.passes.split(",")
    unknown = [n for n in settings if n not in SETTINGS] + [p for p in passes if p not in ("forward", "fwd+bwd")]
    if unknown:
        parser.error(f"unknown --settings/--passes entries: {unknown}")
    if args.compile:
        print(f"# Swin-V2 encoder, torch.compile ({name}, {dtype}, torch {torch.__version__})")
        compile_section(args, device, dtype)
        return
    print(f"# Swin-V2 encoder: stock vs sdpa window attention ({name}, {dtype}, torch {torch.__version__})\n")
    rates: list[float] = []
    rows = []
    cases = []
    for batch in (1,) if args.quick else (1, 8):
        cases += [("480x640 w30", batch, False), ("192x192 w12", batch, False), ("192x192 w12", batch, True)]
        if batch == 1 or args.large:
            cases.append(("480x640 w30", batch, True))
    cases = [c for c in cases if c[0] in settings and ("fwd+bwd" if c[2] else "forward") in passes]
    cases.sort(key=lambda case: (case[0] != "480x640 w30", case[2], case[1]))
    for setting_name, batch, train in cases:
        rows.append(encoder_case(setting_name, batch, train, args, device, dtype, rates))
        print(f"  done: {setting_name} batch {batch} {'fwd+bwd' if train else 'forward'}", flush=True)
    print(f"\nmatmul {args.matmul_size}x{args.matmul_size} {dtype}: {statistics.median(rates):.1f} GFLOP/s (median)\n")
    print_encoder_table(rows)
    if not args.skip_full_model:
        full_model_section(args, device, dtype, rates)


if __name__ == "__main__":
    main()

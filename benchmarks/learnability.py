"""How fast the demo model learns depth on the synthetic world, against a convolutional peer of the same size.

The models are trained from scratch with the same data, loss, optimiser and number of updates:

  * ``mesa``: `MeSaForDepthEstimation` with the ``demo`` preset (Swin-V2, 4 stages of 32/64/128/256 channels,
    the multiscale decoder with its convolutional image branch, and the depth head);
  * ``mesa_no_image_branch``: the same without the decoder's image branch (``decoder_image_branch=False``);
  * ``resnet``: transformers' `ResNetBackbone` with the same four stage widths (basic blocks, depths 1/1/2/1),
    feeding the same `MeSaMultiScaleDecoder` (with the image branch) and `MeSaDepthHead` built from the same config.

Data: the supervised stage's synthetic training world (512 views, seed 13, 96x128) through the supervised stage's
training transform; held-out: the 48 held-out scenes (seed 1000) that the main job reports. Loss SiLog (lambda
0.5), AdamW (weight decay 0.05, no layer decay), the supervised demo recipe's learning rate (MIM-Depth's poly ramp
up and down, 1e-3 peak, 3e-5 floor), batch 8. Reported per model:
held-out AbsRel and median-scaled AbsRel, the "average training depth map" baseline's, the last 50 updates' mean
training loss, seconds per update, and the ratios resnet / mesa. Numbers are from this run only.

    python benchmarks/learnability.py               # 600 updates per model (about 10 minutes on 2 cores)
    python benchmarks/learnability.py --models mesa mesa_no_image_branch
    python benchmarks/learnability.py --steps 100   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch
from torch import nn
from transformers import ResNetBackbone, ResNetConfig
from transformers.modeling_outputs import DepthEstimatorOutput

from mesa_hf import MeSaConfig, MeSaForDepthEstimation
from mesa_hf.losses import silog_loss
from mesa_hf.modeling_mesa import MeSaDepthHead, MeSaMultiScaleDecoder
from mesa_hf.training.arguments import MeSaTrainingArguments
from mesa_hf.training.optimization import build_lr_scheduler
from mesa_hf.training.recipes import DEMO_EVAL_SAMPLES, HELDOUT_SEED, get_stage
from mesa_hf.training.stage_data import (
    SeededTransformDataset,
    build_eval_transform,
    image_size_of,
    stack_collator,
    synthetic_dataset,
)
from mesa_hf.training.stage_eval import eval_dataloader, evaluate_constant_map, evaluate_depth, mean_depth_map


class ResNetDepthPeer(nn.Module):
    """transformers' ResNet backbone (stage widths of `config.stage_channels`) + MeSa's multiscale decoder and
    depth head: (B, 3, H, W) -> `DepthEstimatorOutput.predicted_depth` (B, H, W) metres."""

    def __init__(self, config: MeSaConfig):
        super().__init__()
        self.config = config
        widths = config.stage_channels
        self.backbone = ResNetBackbone(
            ResNetConfig(
                embedding_size=widths[0],
                hidden_sizes=widths,
                depths=list(config.backbone_config.depths),
                layer_type="basic",
                out_features=[f"stage{i + 1}" for i in range(len(widths))],
            )
        )
        self.decoder = MeSaMultiScaleDecoder(config)
        self.depth_head = MeSaDepthHead(config)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> DepthEstimatorOutput:
        features = list(self.backbone(pixel_values).feature_maps)
        depth = self.depth_head(self.decoder(features, pixel_values=pixel_values))
        return DepthEstimatorOutput(predicted_depth=depth)


MODELS = {
    "mesa": MeSaForDepthEstimation,
    "mesa_no_image_branch": lambda config: MeSaForDepthEstimation(
        MeSaConfig.from_dict({**config.to_dict(), "decoder_image_branch": False})
    ),
    "resnet": ResNetDepthPeer,
}


def train_and_evaluate(model: nn.Module, train_rows, eval_loader, steps: int, seed: int) -> dict[str, float]:
    """`steps` AdamW updates of SiLog on batches of 8 (MIM-Depth's schedule over `steps`), then the held-out metrics
    and the timing."""
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        train_rows, batch_size=8, shuffle=True, drop_last=True, collate_fn=stack_collator, generator=generator
    )
    recipe = get_stage("supervised").demo
    peak, floor = recipe["learning_rate"], recipe["min_learning_rate"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.05)
    schedule = MeSaTrainingArguments(
        output_dir=tempfile.gettempdir(), learning_rate=peak, min_learning_rate=floor, lr_schedule="mim_depth"
    )
    scheduler = build_lr_scheduler(optimizer, schedule, total_steps=steps)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    while len(losses) < steps:
        for batch in loader:
            depth = model(pixel_values=batch["pixel_values"]).predicted_depth
            loss = silog_loss(depth, batch["labels"], lambd=0.5)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{type(model).__name__}: non-finite loss at update {len(losses) + 1}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if len(losses) % 100 == 0:
                print(f"  {type(model).__name__}: update {len(losses)}, loss {sum(losses[-100:]) / 100:.4f}")
            if len(losses) == steps:
                break
    seconds = time.perf_counter() - started
    metrics = evaluate_depth(model, eval_loader)
    tail = losses[-50:]
    return {
        "abs_rel": metrics["abs_rel"],
        "median_scaled_abs_rel": metrics["median_scaled_abs_rel"],
        "d1": metrics["d1"],
        "train_loss_last_50": sum(tail) / len(tail),
        "seconds_per_update": seconds / steps,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="updates per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="datasets cache (default: a temporary folder)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models to train")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    config = MeSaConfig.from_preset("demo")
    image_size = image_size_of(config)
    spec = get_stage("supervised")
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        train_set = synthetic_dataset("depth", spec.demo["num_samples"], image_size, spec.synthetic_seed, cache)
        eval_set = synthetic_dataset("depth", DEMO_EVAL_SAMPLES, image_size, HELDOUT_SEED, cache)
        eval_rows = SeededTransformDataset(eval_set, build_eval_transform("depth", config, image_size), 0)
        eval_loader = eval_dataloader(eval_rows)
        baseline_rows = train_set.with_transform(build_eval_transform("depth", config, image_size))
        baseline = evaluate_constant_map(mean_depth_map(baseline_rows), eval_loader, max_depth=config.max_depth)

        results = {}
        for name in args.models:
            torch.manual_seed(args.seed)
            model = MODELS[name](config)
            for module in [model.decoder, model.depth_head]:  # the demo recipe's init of new decoder convolutions
                for conv in module.modules():
                    if isinstance(conv, nn.Conv2d):
                        conv.reset_parameters()
            transform = spec.training_transform(config, image_size)
            train_rows = SeededTransformDataset(train_set, transform, args.seed)
            print(f"{name}: training {args.steps} updates")
            results[name] = train_and_evaluate(model, train_rows, eval_loader, args.steps, args.seed)

    ratios = {}
    if "resnet" in results and "mesa" in results:
        ratios["ratio_resnet_over_mesa"] = {
            k: results["resnet"][k] / results["mesa"][k]
            for k in ("median_scaled_abs_rel", "train_loss_last_50", "seconds_per_update")
        }
    report = {
        "steps": args.steps,
        "seed": args.seed,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "average_depth_map": {k: baseline[k] for k in ("abs_rel", "median_scaled_abs_rel", "d1")},
        **results,
        **ratios,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fine-tune a MeSa checkpoint for depth (SiLog) on the target set, evaluate it and draw a depth picture.

    accelerate launch examples/finetune.py --model_name_or_path mesa-pretrain/supervised --output_dir mesa-finetuned
    accelerate launch examples/finetune.py --model_name_or_path mesa-pretrain/supervised \\
        --dataset nyuv2:/data/nyu/sync --file_list /data/nyu/nyudepthv2_train_files_with_gt.txt \\
        --eval_dataset nyuv2:/data/nyu_depth_v2_labeled.mat --splits_path /data/splits.mat --output_dir mesa-nyuv2

With no dataset argument it fine-tunes on the synthetic world and evaluates on held-out synthetic scenes next to
the "average training depth map" baseline. ``--depth_picture IMAGE`` loads the final folder with
``pipeline("depth-estimation")`` and writes a colour-mapped depth PNG of IMAGE beside it. Defaults on NYUv2 are
MIM-Depth's recipe (480x480 crops, 25 epochs, batch 24, lr 5e-4 -> 3e-5, AdamW 0.05, layer decay 0.9 / 0.85).
A thin wrapper over `mesa_hf.training.stages.run_stage`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mesa_hf.data.specs import FolderOptions, load_dataset_spec
from mesa_hf.training.cli import (
    add_training_arguments,
    check_hub_arguments,
    format_comparison,
    format_summary,
    is_main_process,
    push_stage_folder,
    setup_logging,
    training_overrides,
)
from mesa_hf.training.stages import run_stage


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="a stage folder, a Hub id or a preset name")
    parser.add_argument(
        "--dataset",
        default="synthetic",
        help="'synthetic', nyuv2:PATH (BTS sync folder, labelled .mat, .parquet) or another depth FORMAT:PATH",
    )
    parser.add_argument("--eval_dataset", default=None, help="held-out depth data; synthetic: held-out scenes")
    parser.add_argument("--dataset_split", default=None, help="training split (nyu_mat: train)")
    parser.add_argument("--file_list", default=None, help="BTS file list for nyu_sync folders")
    parser.add_argument("--splits_path", default=None, help="splits.mat for the labelled NYUv2 .mat file")
    parser.add_argument("--depth_scale", type=float, default=None, help="depth data: metres per stored unit")
    parser.add_argument("--image_pattern", default=None, help="folder:PATH datasets: glob of the RGB files")
    parser.add_argument("--depth_pattern", default=None, help="folder:PATH datasets: glob of the depth files")
    parser.add_argument(
        "--depth_picture", default=None, help="an RGB image to run the fine-tuned pipeline on ('synthetic' = a view)"
    )
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    check_hub_arguments(parser, args)
    return args


def depth_picture(model_dir: str, image_arg: str, image_size) -> Path:
    """Run pipeline('depth-estimation') from the saved folder on an image; write the colour-mapped PNG."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from mesa_hf.training.stage_eval import save_depth_picture

    if image_arg == "synthetic":
        from mesa_hf.data.synthetic import synthetic_view

        height, width = image_size or (240, 320)
        image = Image.fromarray(synthetic_view(2024, 0, height * 2, width * 2)[0])
        name = "synthetic_view"
    else:
        image = Image.open(image_arg).convert("RGB")
        name = Path(image_arg).stem
    estimator = pipeline("depth-estimation", model=model_dir, device="cpu")
    out = estimator(image)
    depth = out["predicted_depth"]
    path = save_depth_picture(depth, Path(model_dir) / f"depth_{name}.png", image=np.asarray(image))
    print(
        f"pipeline('depth-estimation') on {image_arg} ({image.width}x{image.height}): depth {tuple(depth.shape)}, "
        f"{float(depth.min()):.2f}-{float(depth.max()):.2f} m, median {float(depth.median()):.2f} m -> {path}"
    )
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    synthetic = args.dataset == "synthetic"
    dataset = eval_dataset = None
    folder = FolderOptions(args.depth_scale, args.image_pattern, args.depth_pattern)
    try:
        if not synthetic:
            options = {k: v for k, v in (("file_list", args.file_list), ("splits_path", args.splits_path)) if v}
            dataset = load_dataset_spec(
                args.dataset, "depth", split=args.dataset_split, cache_dir=args.cache_dir, folder=folder, **options
            )
        if args.eval_dataset:
            options = {"splits_path": args.splits_path} if args.splits_path else {}
            eval_dataset = load_dataset_spec(
                args.eval_dataset, "depth", split="test", cache_dir=args.cache_dir, folder=folder, **options
            )
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"finetune.py: error: {error}")
    result = run_stage(
        "finetune",
        args.model_name_or_path,
        dataset,
        output_dir=args.output_dir,
        recipe=args.recipe or ("demo" if synthetic else "paper"),
        eval_dataset=eval_dataset,
        image_size=args.image_size,
        num_synthetic_samples=args.num_synthetic_samples,
        num_eval_samples=args.num_eval_samples,
        cache_dir=args.cache_dir,
        skip_if_complete=args.resume_from_checkpoint == "latest",
        **training_overrides(args),
    )
    if is_main_process():
        print("\n" + format_summary([result]))
        comparison = format_comparison(result)
        if comparison:
            print("\n" + comparison)
        print(f"\nfine-tuned checkpoint: {result.output_dir}")
        if args.depth_picture:
            depth_picture(result.output_dir, args.depth_picture, args.image_size)
        if args.push_to_hub:
            print("pushed:", push_stage_folder(result.output_dir, args.hub_model_id, args.hub_private, args.hub_token))
    return 0


if __name__ == "__main__":
    sys.exit(main())

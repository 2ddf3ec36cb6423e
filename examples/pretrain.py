"""MeSa pre-training: masked (SimMIM), geometric (self-supervised video) and supervised stages, one or all.

    accelerate launch examples/pretrain.py --objective all --output_dir mesa-pretrain
    accelerate launch examples/pretrain.py --objective masked --dataset /data/lsun_bedrooms --preset base \\
        --output_dir mesa-pretrain
    accelerate launch examples/pretrain.py --objective geometric --model_name_or_path mesa-pretrain/masked \\
        --dataset nyu_raw:/data/nyu_raw --eval_dataset nyuv2:/data/nyu_depth_v2_labeled.mat --output_dir mesa-pretrain

With no dataset argument every stage trains on the synthetic RGB-D world (the ``demo`` preset and recipe). With
``--objective all`` each stage starts from the previous stage's folder ``<output_dir>/<stage>``; every stage folder
is a complete ``save_pretrained`` checkpoint. A thin wrapper over `mesa_hf.training.stages`.
"""

from __future__ import annotations

import argparse
import sys

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
from mesa_hf.training.stages import PRETRAINING_ORDER, get_stage, run_stages


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", choices=(*PRETRAINING_ORDER, "all"), default="all")
    parser.add_argument(
        "--model_name_or_path",
        default=None,
        help="a preset (tiny/base/large/demo/test), a previous stage's folder or a Hub id; default: --preset",
    )
    parser.add_argument("--preset", default=None, help="default: 'demo' on synthetic data, else 'base'")
    parser.add_argument(
        "--dataset",
        default="synthetic",
        help="data of a single --objective: 'synthetic', an image folder (masked), FORMAT:PATH video "
        "(7scenes/tum/hololens/nyu_raw/frames/video) for geometric,"
        " nyuv2:PATH (sync folder, .mat, .parquet) for supervised",
    )
    for stage in PRETRAINING_ORDER:
        parser.add_argument(f"--{stage}_dataset", default=None, help=f"data of the {stage} stage with --objective all")
    parser.add_argument("--eval_dataset", default=None, help="held-out depth data (nyuv2:PATH, ...); default: none")
    parser.add_argument("--dataset_split", default=None, help="split of the training data (e.g. train)")
    parser.add_argument("--file_list", default=None, help="BTS file list for nyu_sync folders")
    parser.add_argument("--splits_path", default=None, help="splits.mat for the labelled NYUv2 .mat file")
    parser.add_argument("--frame_offsets", type=int, nargs="+", default=None, help="geometric: source frames")
    parser.add_argument("--pose_source", choices=("network", "dataset"), default=None, help="geometric stage poses")
    parser.add_argument("--depth_scale", type=float, default=None, help="depth data: metres per stored unit")
    parser.add_argument("--image_pattern", default=None, help="folder:PATH datasets: glob of the RGB files")
    parser.add_argument("--depth_pattern", default=None, help="folder:PATH datasets: glob of the depth files")
    parser.add_argument(
        "--intrinsics",
        type=float,
        nargs=4,
        default=None,
        metavar=("FX", "FY", "CX", "CY"),
        help="geometric: camera intrinsics in pixels of the video (video:PATH; else a <stem>.intrinsics.json sidecar "
        "or cameras.json beside the videos)",
    )
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    check_hub_arguments(parser, args)
    if args.objective == "all" and args.dataset != "synthetic":
        parser.error("with --objective all, give --masked_dataset / --geometric_dataset / --supervised_dataset")
    if args.objective == "all" and args.resume_from_checkpoint not in (None, "latest"):
        parser.error("with --objective all, --resume_from_checkpoint must be 'latest'")
    return args


def stage_datasets(args) -> dict[str, str]:
    """Dataset spec per stage to run ('synthetic' = the synthetic world)."""
    if args.objective == "all":
        return {stage: getattr(args, f"{stage}_dataset") or "synthetic" for stage in PRETRAINING_ORDER}
    return {args.objective: args.dataset}


def load_datasets(args, specs, folder, datasets, eval_datasets) -> None:
    """Load each stage's training (and held-out) dataset from its spec into `datasets` / `eval_datasets`."""
    for stage, spec in specs.items():
        if spec == "synthetic":
            continue
        kind = get_stage(stage).dataset_kind
        options = {}
        if kind == "depth":
            options = {k: v for k, v in (("file_list", args.file_list), ("splits_path", args.splits_path)) if v}
            options["folder"] = folder
        if kind == "video" and args.frame_offsets:
            options["frame_offsets"] = tuple(args.frame_offsets)
        if kind == "video" and args.intrinsics:
            options["intrinsics"] = tuple(args.intrinsics)
        datasets[stage] = load_dataset_spec(spec, kind, split=args.dataset_split, cache_dir=args.cache_dir, **options)
        if args.eval_dataset and kind != "images":
            eval_datasets[stage] = load_dataset_spec(
                args.eval_dataset, "depth", split="test", cache_dir=args.cache_dir, folder=folder
            )


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    specs = stage_datasets(args)
    synthetic = all(spec == "synthetic" for spec in specs.values())
    preset = args.preset or ("demo" if synthetic else "base")
    datasets, eval_datasets = {}, {}
    folder = FolderOptions(args.depth_scale, args.image_pattern, args.depth_pattern)
    try:
        load_datasets(args, specs, folder, datasets, eval_datasets)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"pretrain.py: error: {error}")
    config_overrides = {}
    if args.pose_source:
        config_overrides["pose_source"] = args.pose_source
    if args.frame_offsets:
        config_overrides["frame_offsets"] = list(args.frame_offsets)
    results = run_stages(
        list(specs),
        args.model_name_or_path or preset,
        args.output_dir,
        datasets=datasets,
        eval_datasets=eval_datasets,
        skip_if_complete=args.resume_from_checkpoint == "latest",
        recipe=args.recipe or ("demo" if synthetic else "paper"),
        image_size=args.image_size,
        config_overrides=config_overrides,
        num_synthetic_samples=args.num_synthetic_samples,
        num_eval_samples=args.num_eval_samples,
        cache_dir=args.cache_dir,
        **training_overrides(args),
    )
    if is_main_process():
        print("\n" + format_summary(results))
        comparison = format_comparison(results[-1])
        if comparison:
            print("\n" + comparison)
        print(f"\nstage folders: {', '.join(r.output_dir for r in results)}")
        if args.push_to_hub:
            print(
                "pushed:",
                push_stage_folder(results[-1].output_dir, args.hub_model_id, args.hub_private, args.hub_token),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

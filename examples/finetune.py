"""Fine-tune a MeSa checkpoint for depth (SiLog) on the target set, evaluate it and draw a depth picture.

    accelerate launch examples/finetune.py --model_name_or_path mesa-pretrain/supervised --output_dir mesa-finetuned
    accelerate launch examples/finetune.py --model_name_or_path mesa-pretrain/supervised \\
        --dataset nyuv2:/data/nyu/sync --file_list /data/nyu/nyudepthv2_train_files_with_gt.txt \\
        --eval_dataset nyuv2:/data/nyu_depth_v2_labeled.mat --splits_path /data/splits.mat --output_dir mesa-nyuv2
    python examples/finetune.py --model_name_or_path mesa-pretrain/supervised --dataset folder:my_rgbd \\
        --depth_scale 0.001 --output_dir mesa-mine

With no dataset argument it fine-tunes on the synthetic world and evaluates on held-out synthetic scenes next to
the "average training depth map" baseline. ``--depth_picture IMAGE`` loads the final folder with
``pipeline("depth-estimation")`` and writes a colour-mapped depth PNG of IMAGE beside it. On NYUv2 the defaults
are MIM-Depth's recipe (480x480 crops, 25 epochs, total batch 24, lr 5e-4 -> 3e-5, AdamW 0.05, layer decay
0.9 / 0.85), resolved for the number of processes (docs/training.md). A thin wrapper over
`mesa_hf.training.runner.run_stage`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from mesa_hf.training.cli import (
    build_parser,
    is_main_process,
    load_eval_dataset,
    load_stage_dataset,
    parse_arguments,
    print_results,
    push_from_main,
    setup_logging,
    stage_settings,
    wait_for_everyone,
)
from mesa_hf.training.runner import run_stage


@dataclass
class FinetuneArguments:
    """What to fine-tune, on which data, and the depth picture."""

    model_name_or_path: str = field(metadata={"help": "a stage folder, a Hub id or a preset name"})
    dataset: str = field(
        default="synthetic",
        metadata={"help": "'synthetic', nyuv2:PATH (BTS sync folder, labelled .mat, .parquet), folder:PATH, ..."},
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "held-out depth data; synthetic: held-out scenes"})
    dataset_split: str | None = field(default=None, metadata={"help": "training split (nyu_mat: train)"})
    file_list: str | None = field(default=None, metadata={"help": "BTS file list for nyu_sync folders"})
    splits_path: str | None = field(default=None, metadata={"help": "splits.mat for the labelled NYUv2 .mat file"})
    depth_picture: str | None = field(
        default=None, metadata={"help": "an RGB image to run the fine-tuned pipeline on ('synthetic' = a view)"}
    )


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
    depth = estimator(image)["predicted_depth"]
    path = save_depth_picture(depth, Path(model_dir) / f"depth_{name}.png", image=np.asarray(image))
    print(
        f"pipeline('depth-estimation') on {image_arg} ({image.width}x{image.height}): depth {tuple(depth.shape)}, "
        f"{float(depth.min()):.2f}-{float(depth.max()):.2f} m, median {float(depth.median()):.2f} m -> {path}"
    )
    return path


def main(argv=None) -> int:
    script, run, folder, flags = parse_arguments(build_parser(FinetuneArguments, __doc__), argv)
    setup_logging(flags)
    synthetic = script.dataset == "synthetic"
    dataset = eval_dataset = None
    try:
        if not synthetic:
            dataset = load_stage_dataset(
                "finetune",
                script.dataset,
                run,
                folder,
                split=script.dataset_split,
                file_list=script.file_list,
                splits_path=script.splits_path,
                streaming=flags.streaming,
            )
        if script.eval_dataset:
            eval_dataset = load_eval_dataset(script.eval_dataset, run, folder, splits_path=script.splits_path)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"finetune.py: error: {error}")
    settings = stage_settings(
        run,
        flags,
        skip_if_complete=flags.resume_from_checkpoint == "latest",
        recipe=run.recipe or ("demo" if synthetic else "paper"),
    )
    result = run_stage("finetune", script.model_name_or_path, settings, dataset, eval_dataset)
    if is_main_process():
        if run.print_summary:
            print_results([result], f"fine-tuned checkpoint: {result.output_dir}")
        if script.depth_picture:
            depth_picture(result.output_dir, script.depth_picture, run.image_size)
    wait_for_everyone()
    push_from_main(run, result.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

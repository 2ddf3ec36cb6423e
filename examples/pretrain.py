"""MeSa pre-training: masked (SimMIM), geometric (self-supervised video) and supervised stages, one or all.

    accelerate launch examples/pretrain.py --objective all --output_dir mesa-pretrain
    accelerate launch examples/pretrain.py --objective masked --dataset /data/lsun_bedrooms --preset base \\
        --output_dir mesa-pretrain
    accelerate launch examples/pretrain.py --objective geometric --model_name_or_path mesa-pretrain/masked \\
        --dataset nyu_raw:/data/nyu_raw --eval_dataset nyuv2:/data/nyu_depth_v2_labeled.mat --output_dir mesa-pretrain
    python examples/pretrain.py --objective supervised --dataset folder:my_rgbd --depth_scale 0.001 \\
        --output_dir mesa-pretrain

With no dataset argument every stage trains on the synthetic RGB-D world (the ``demo`` preset and recipe). With
``--objective all`` each stage starts from the previous stage's folder ``<output_dir>/<stage>``; every stage folder
is a complete ``save_pretrained`` checkpoint. Several processes: see docs/training.md. A thin wrapper over
`mesa_hf.training.runner`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

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
)
from mesa_hf.training.recipes import PRETRAINING_ORDER, get_stage
from mesa_hf.training.runner import run_stages


@dataclass
class PretrainArguments:
    """What to pre-train, from what, on which data."""

    objective: str = field(default="all", metadata={"help": "stage to run", "choices": (*PRETRAINING_ORDER, "all")})
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "a preset (tiny/base/large/demo/test), a previous stage's folder or a Hub id; default: --preset"
        },
    )
    preset: str | None = field(default=None, metadata={"help": "default: 'demo' on synthetic data, else 'base'"})
    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "data of a single --objective: 'synthetic', an image folder (masked), FORMAT:PATH video "
            "(7scenes/tum/hololens/nyu_raw/frames/video) for geometric, nyuv2:PATH or folder:PATH for supervised"
        },
    )
    masked_dataset: str | None = field(default=None, metadata={"help": "data of the masked stage with --objective all"})
    geometric_dataset: str | None = field(default=None, metadata={"help": "geometric stage data with --objective all"})
    supervised_dataset: str | None = field(default=None, metadata={"help": "supervised data with --objective all"})
    eval_dataset: str | None = field(default=None, metadata={"help": "held-out depth data (nyuv2:PATH, folder:PATH)"})
    dataset_split: str | None = field(default=None, metadata={"help": "split of the training data (e.g. train)"})
    file_list: str | None = field(default=None, metadata={"help": "BTS file list for nyu_sync folders"})
    splits_path: str | None = field(default=None, metadata={"help": "splits.mat for the labelled NYUv2 .mat file"})
    frame_offsets: list[int] | None = field(default=None, metadata={"help": "geometric: source frames"})
    pose_source: str | None = field(
        default=None, metadata={"help": "geometric stage poses", "choices": ("network", "dataset")}
    )
    intrinsics: list[float] | None = field(
        default=None,
        metadata={
            "help": "geometric, video:PATH: FX FY CX CY in pixels of the video (else a <stem>.intrinsics.json "
            "sidecar or a cameras.json beside the videos)",
            "nargs": 4,
        },
    )


def parse_args(argv=None):
    parser = build_parser(PretrainArguments, __doc__)
    script, run, folder, flags = parse_arguments(parser, argv)
    if script.objective == "all" and script.dataset != "synthetic":
        parser.error("with --objective all, give --masked_dataset / --geometric_dataset / --supervised_dataset")
    if script.objective == "all" and flags.resume_from_checkpoint not in (None, "latest"):
        parser.error("with --objective all, --resume_from_checkpoint must be 'latest'")
    return script, run, folder, flags


def stage_datasets(script: PretrainArguments) -> dict[str, str]:
    """Dataset spec per stage to run ('synthetic' = the synthetic world)."""
    if script.objective == "all":
        return {stage: getattr(script, f"{stage}_dataset") or "synthetic" for stage in PRETRAINING_ORDER}
    return {script.objective: script.dataset}


def load_datasets(script: PretrainArguments, run, folder, specs, datasets, eval_datasets, streaming=False) -> None:
    """Load each stage's training (and held-out) dataset from its spec into `datasets` / `eval_datasets`
    (`streaming`: the training data as `datasets.IterableDataset` streams)."""
    for stage, spec in specs.items():
        if spec == "synthetic":
            continue
        datasets[stage] = load_stage_dataset(
            stage,
            spec,
            run,
            folder,
            split=script.dataset_split,
            file_list=script.file_list,
            splits_path=script.splits_path,
            intrinsics=script.intrinsics,
            frame_offsets=script.frame_offsets,
            streaming=streaming,
        )
        if script.eval_dataset and get_stage(stage).eval_kind == "depth":
            eval_datasets[stage] = load_eval_dataset(script.eval_dataset, run, folder)


def main(argv=None) -> int:
    script, run, folder, flags = parse_args(argv)
    setup_logging(flags)
    specs = stage_datasets(script)
    synthetic = all(spec == "synthetic" for spec in specs.values())
    preset = script.preset or ("demo" if synthetic else "base")
    datasets, eval_datasets = {}, {}
    try:
        load_datasets(script, run, folder, specs, datasets, eval_datasets, streaming=flags.streaming)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"pretrain.py: error: {error}")
    config_overrides = {}
    if script.pose_source:
        config_overrides["pose_source"] = script.pose_source
    if script.frame_offsets:
        config_overrides["frame_offsets"] = list(script.frame_offsets)
    settings = stage_settings(
        run,
        flags,
        skip_if_complete=flags.resume_from_checkpoint == "latest",
        recipe=run.recipe or ("demo" if synthetic else "paper"),
        config_overrides=config_overrides,
    )
    results = run_stages(list(specs), script.model_name_or_path or preset, settings, datasets, eval_datasets)
    if is_main_process() and run.print_summary:
        print_results(results, f"stage folders: {', '.join(r.output_dir for r in results)}")
    push_from_main(run, results[-1].output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

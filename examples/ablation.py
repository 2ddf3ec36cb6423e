"""MeSa's experiment in one command: from scratch, masked only, masked -> supervised, MeSa (masked -> geometric
-> supervised) and geometric only, each pre-trained with the same number of updates, probed with a frozen encoder,
fine-tuned identically and evaluated on the same held-out set, with 3 seeds; then results.json, report.md and the
figures (metrics, probe, per-layer CKA with intervals, training loss).

    python examples/ablation.py --quick                       # synthetic world, 1 seed (minutes on 2 CPU cores)
    python examples/ablation.py                               # synthetic world, 3 seeds
    python examples/ablation.py --resume_from_checkpoint latest   # continue a killed run (finished runs skipped)
    accelerate launch examples/ablation.py --preset base --pretrain_updates 100000 --finetune_updates 20000 \\
        --masked_dataset /data/imagenet/train --geometric_dataset nyu_raw:/data/nyu_raw \\
        --supervised_dataset nyu_sync:/data/sync --finetune_dataset nyu_sync:/data/sync \\
        --eval_dataset nyuv2:/data/nyu_depth_v2_labeled.mat --splits_path /data/splits.mat \\
        --ood_eval_dataset ibims1:/data/ibims1 --output_dir mesa-ablation

Every training flag of examples/pretrain.py (learning rate, batch, precision...) applies to every stage; the
number of updates of each stage is the ablation's budget. A thin wrapper over `mesa_hf.experiments.ablation`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from mesa_hf.data.specs import parse_dataset_spec
from mesa_hf.experiments.ablation import DEFAULT_VARIANTS, FULL, QUICK, VARIANTS, AblationSettings, run_ablation
from mesa_hf.training.cli import (
    build_parser,
    check_fsdp_flag,
    is_main_process,
    load_eval_dataset,
    load_stage_dataset,
    setup_logging,
    training_overrides,
)

DEFAULT_OUTPUT = {False: "outputs/ablation", True: "outputs/ablation-quick"}
PROTOCOL_OF_FORMAT = {"nyuv2": "nyuv2", "nyu_mat": "nyuv2", "nyu_sync": "nyuv2", "ibims1": "ibims1"}


@dataclass
class AblationArguments:
    """Which variants, how long, on which data."""

    quick: bool = field(
        default=False,
        metadata={
            "help": f"1 seed, {QUICK['pretrain_updates']} pre-training + {QUICK['finetune_updates']} fine-tuning "
            f"updates, a {QUICK['probe_updates']}-update probe"
        },
    )
    variants: list[str] = field(
        default_factory=lambda: list(DEFAULT_VARIANTS),
        metadata={"help": f"some of {', '.join(VARIANTS)}", "choices": tuple(VARIANTS)},
    )
    seeds: list[int] | None = field(
        default=None, metadata={"help": f"default {FULL['seeds']} ({QUICK['seeds']} with --quick)"}
    )
    pretrain_updates: int | None = field(
        default=None, metadata={"help": f"pre-training updates per variant (default {FULL['pretrain_updates']})"}
    )
    finetune_updates: int | None = field(
        default=None, metadata={"help": f"fine-tuning updates (default {FULL['finetune_updates']})"}
    )
    probe_updates: int | None = field(
        default=None,
        metadata={"help": f"frozen-encoder probe updates (default {FULL['probe_updates']}; 0 = no probe)"},
    )
    preset: str | None = field(default=None, metadata={"help": "architecture; default: 'demo' on synthetic data"})
    masked_dataset: str | None = field(default=None, metadata={"help": "masked stage: an image folder, hub:ID"})
    geometric_dataset: str | None = field(default=None, metadata={"help": "geometric stage: FORMAT:PATH video"})
    supervised_dataset: str | None = field(default=None, metadata={"help": "supervised stage: RGB-D FORMAT:PATH"})
    finetune_dataset: str | None = field(default=None, metadata={"help": "fine-tuning: RGB-D FORMAT:PATH"})
    eval_dataset: str | None = field(default=None, metadata={"help": "held-out set, e.g. nyuv2:PATH"})
    ood_eval_dataset: str | None = field(default=None, metadata={"help": "out-of-distribution set, e.g. ibims1:PATH"})
    eval_protocol: str | None = field(default=None, metadata={"help": "default: from the format (nyuv2, ibims1)"})
    ood_eval_protocol: str | None = field(default=None, metadata={"help": "default: from the format"})
    cka_images: int | None = field(
        default=None, metadata={"help": f"held-out images of the layer-wise CKA (default {FULL['cka_images']})"}
    )
    cka_permutations: int = field(default=100, metadata={"help": "shuffled pairings of the CKA's null (0 = none)"})
    dataset_split: str | None = field(default=None, metadata={"help": "split of the training data (e.g. train)"})
    splits_path: str | None = field(default=None, metadata={"help": "splits.mat for the labelled NYUv2 .mat file"})
    file_list: str | None = field(default=None, metadata={"help": "BTS file list for nyu_sync folders"})


def _protocol(spec: str | None, given: str | None, flag: str, parser) -> str | None:
    if spec is None:
        return None
    protocol = given or PROTOCOL_OF_FORMAT.get(parse_dataset_spec(spec)[0])
    if protocol is None:
        parser.error(f"--{flag} {spec!r}: give --{flag.replace('dataset', 'protocol')} (nyuv2, ibims1, kitti...)")
    return protocol


def parse_args(argv=None):
    parser = build_parser(AblationArguments, __doc__)
    for action in parser._actions:  # --output_dir has a default here (the other scripts require it)
        if action.dest == "output_dir":
            action.required, action.default = False, None
    script, run, folder, flags = parser.parse_args_into_dataclasses(args=argv)
    if flags.resume_from_checkpoint not in (None, "latest"):
        parser.error("--resume_from_checkpoint must be 'latest' (each run resumes its own stages)")
    for name in ("max_train_steps", "seed", "num_train_epochs"):
        if getattr(flags, name) is not None:
            parser.error(f"--{name} is set by the ablation (--pretrain_updates, --finetune_updates, --seeds)")
    if run.image_size is not None and len(run.image_size) != 2:
        parser.error(f"--image_size takes HEIGHT WIDTH, got {run.image_size}")
    check_fsdp_flag(parser, flags)
    flags.output_dir = flags.output_dir or DEFAULT_OUTPUT[script.quick]
    return parser, script, run, folder, flags


def load_data(script: AblationArguments, run, folder) -> tuple[dict, dict]:
    """(stage -> dataset, stage -> spec) of the stages given real data."""
    datasets, specs = {}, {}
    for stage in ("masked", "geometric", "supervised", "finetune"):
        spec = getattr(script, f"{stage}_dataset")
        if spec is None:
            continue
        datasets[stage] = load_stage_dataset(
            stage,
            spec,
            run,
            folder,
            split=script.dataset_split,
            file_list=script.file_list,
            splits_path=script.splits_path,
        )
        specs[stage] = spec
    return datasets, specs


def main(argv=None) -> int:
    parser, script, run, folder, flags = parse_args(argv)
    setup_logging(flags)
    defaults = QUICK if script.quick else FULL
    eval_protocol = _protocol(script.eval_dataset, script.eval_protocol, "eval_dataset", parser)
    ood_protocol = _protocol(script.ood_eval_dataset, script.ood_eval_protocol, "ood_eval_dataset", parser)
    try:
        datasets, specs = load_data(script, run, folder)
        eval_dataset = ood_dataset = None
        if script.eval_dataset:
            eval_dataset = load_eval_dataset(script.eval_dataset, run, folder, splits_path=script.splits_path)
        if script.ood_eval_dataset:
            ood_dataset = load_eval_dataset(script.ood_eval_dataset, run, folder)
        training = {
            k: v
            for k, v in training_overrides(flags).items()
            if k not in ("resume_from_checkpoint", "max_train_steps", "seed")
        }
        settings = AblationSettings(
            output_dir=flags.output_dir,
            variants=tuple(script.variants),
            seeds=tuple(script.seeds or defaults["seeds"]),
            pretrain_updates=script.pretrain_updates or defaults["pretrain_updates"],
            finetune_updates=script.finetune_updates or defaults["finetune_updates"],
            probe_updates=defaults["probe_updates"] if script.probe_updates is None else script.probe_updates,
            preset=script.preset or ("demo" if not datasets else "base"),
            recipe=run.recipe,
            training=training,
            backbone_overrides={"drop_path_rate": run.drop_path_rate} if run.drop_path_rate is not None else {},
            image_size=tuple(run.image_size) if run.image_size else None,
            datasets=datasets,
            data_descriptions=specs,
            eval_dataset=eval_dataset,
            eval_protocol=eval_protocol,
            ood_eval_dataset=ood_dataset,
            ood_eval_protocol=ood_protocol,
            cka_images=script.cka_images or defaults["cka_images"],
            cka_permutations=script.cka_permutations,
            num_synthetic_samples=run.num_synthetic_samples,
            num_eval_samples=run.num_eval_samples,
            cache_dir=run.cache_dir,
            resume=flags.resume_from_checkpoint == "latest",
        )
        settings.validate()
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"ablation.py: error: {error}")
    try:
        results = run_ablation(settings)
    except ValueError as error:
        sys.exit(f"ablation.py: error: {error}")
    if is_main_process():
        print(Path(flags.output_dir, "report.md").read_text())
        print(f"wrote {flags.output_dir}/results.json, report.md, metrics.png, cka.png, loss_curves.png")
        print(f"wall time of the runs: {results['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

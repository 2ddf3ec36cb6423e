"""The ``mesa-hf`` command line: ``mesa-hf evaluate | cka | predict`` (thin wrappers over library functions).

New subcommands register themselves in :data:`SUBCOMMANDS` with :func:`register_subcommand` (a name, a one-line
help, a function adding its arguments to an ``argparse`` parser and a function running it), e.g. a later
``convert`` or ``train``::

    register_subcommand("convert", "convert a MIM-Depth checkpoint", add_convert_arguments, run_convert)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register_subcommand(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Add (or replace) a ``mesa-hf <name>`` subcommand."""
    SUBCOMMANDS[name] = Subcommand(help, add_arguments, run)


# ------------------------------------------------------------------------------------------------ shared options

CHECKPOINT_HELP = "checkpoint folder (save_pretrained output) or Hub model id (offline: from the Hugging Face cache)"


def _add_runtime_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="images per forward pass")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flip", action="store_true", help="TTA: average with the horizontally flipped prediction")
    parser.add_argument(
        "--sliding-window",
        action="store_true",
        help="TTA: MIM-Depth's two overlapping full-height windows, overlap averaged",
    )
    parser.add_argument("--window-size", type=int, default=None, help="sliding window width (default: input height)")


def _add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="autocast precision; Swin-V2's cosine attention stays fp32",
    )


def _tta(args: argparse.Namespace):
    from mesa_hf.evaluation import TestTimeAugmentation

    return TestTimeAugmentation(flip=args.flip, sliding_window=args.sliding_window, window_size=args.window_size)


# ------------------------------------------------------------------------------------------------ evaluate


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from mesa_hf.evaluation import PROTOCOLS

    parser.add_argument("checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument(
        "--data",
        required=True,
        help="an RGB-D folder, read as training's folder:PATH (image_N + depth_N, rgb/ + depth/ with matching names, "
        "*_rgb + *_depth, BTS sync, a CSV image_path,depth_path inside, a datasets save_to_disk folder), "
        "or a FORMAT:PATH dataset spec as the training scripts take (nyuv2:labeled.mat, ibims1:PATH, ...)",
    )
    parser.add_argument(
        "--data-format",
        "--data_format",
        default="auto",
        help="'auto' (a folder or FORMAT:PATH) or a mesa_hf.data.load_depth_dataset format: "
        "nyu_mat (+ --splits-path: the official 654 NYUv2 test images), nyu_sync, ibims1, csv, ...",
    )
    parser.add_argument(
        "--split", default=None, help="split of nyu_mat / hub datasets (default: test; nyu_mat 'all') or DatasetDicts"
    )
    parser.add_argument("--splits-path", "--splits_path", default=None, help="splits.mat for nyu_mat")
    parser.add_argument("--file-list", "--file_list", default=None, help="BTS file list for --data-format nyu_sync")
    parser.add_argument(
        "--depth-scale",
        "--depth_scale",
        type=float,
        default=None,
        help="metres per stored depth unit (0.001 for mm, 0.0002 TUM, 0.00390625 KITTI); default: 16-bit depth is "
        "millimetres (or its PNG's depth_scale text chunk), float .npy/TIFF is metres",
    )
    parser.add_argument("--image-pattern", "--image_pattern", default=None, help="glob of the RGB files in --data")
    parser.add_argument("--depth-pattern", "--depth_pattern", default=None, help="glob of the depth files in --data")
    parser.add_argument(
        "--depth-format", "--depth_format", default=None, help="depth file format (sunrgbd, nyu_disparity, kitti, ...)"
    )
    parser.add_argument("--protocol", default="nyuv2", choices=sorted(PROTOCOLS), help="evaluation protocol")
    parser.add_argument("--median-scaling", action="store_true", help="per-image median scaling (self-supervised)")
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--output-json", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument(
        "--write-model-card",
        action="store_true",
        help="write the result as model-index metadata into <checkpoint>/README.md",
    )
    parser.add_argument("--dataset-name", default=None, help="dataset name for the model card (default by protocol)")
    _add_tta_arguments(parser)
    _add_dtype_argument(parser)
    _add_runtime_arguments(parser, batch_size=1)


_MODEL_CARD_DATASETS = {
    "nyuv2": ("NYU Depth V2", "nyu_depth_v2"),
    "ibims1": ("iBims-1", "ibims1"),
    "kitti": ("KITTI Eigen split", "kitti"),
}


def run_evaluate(args: argparse.Namespace) -> int:
    if args.protocol == "video":  # whole sequences: per-frame metrics + temporal consistency (TAE, flicker)
        from mesa_hf.evaluation.temporal import run_video_evaluation

        return run_video_evaluation(args, _tta(args))
    from mesa_hf.evaluation import get_protocol
    from mesa_hf.evaluation.evaluator import evaluate_model, write_model_card_results
    from mesa_hf.evaluation.folder import open_depth_dataset
    from mesa_hf.evaluation.inference import load_checkpoint

    if args.write_model_card and not Path(args.checkpoint).is_dir():
        raise ValueError(
            f"--write-model-card writes into a local checkpoint folder, and {args.checkpoint} is none "
            f"(for a Hub model: `hf download {args.checkpoint} --local-dir DIR`, then evaluate DIR)"
        )
    if args.no_progress:
        import datasets

        datasets.disable_progress_bars()
    model, processor = load_checkpoint(args.checkpoint)
    dataset = open_depth_dataset(
        args.data,
        data_format=args.data_format,
        depth_scale=args.depth_scale,
        depth_format=args.depth_format,
        split=args.split,
        splits_path=args.splits_path,
        file_list=args.file_list,
        image_pattern=args.image_pattern,
        depth_pattern=args.depth_pattern,
    )
    protocol = get_protocol(args.protocol, **({"median_scaling": True} if args.median_scaling else {}))
    result = evaluate_model(
        model,
        dataset,
        protocol=protocol,
        tta=_tta(args),
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        image_processor=processor,
        max_samples=args.max_samples,
        progress=not args.no_progress,
    )
    print(result.format_table())
    summary = result.to_dict()
    summary["checkpoint"] = str(args.checkpoint)
    summary["data"] = str(args.data)
    if args.output_json:
        args.output_json.parent.mkdir(parents=True, exist_ok=True)
        args.output_json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.output_json}")
    else:
        print(json.dumps({k: summary[k] for k in ("description", "metrics")}))
    if args.write_model_card:
        name, kind = _MODEL_CARD_DATASETS.get(protocol.name, (protocol.name, protocol.name))
        readme = write_model_card_results(
            args.checkpoint, result, dataset_name=args.dataset_name or name, dataset_type=kind
        )
        print(f"wrote model-index results to {readme}")
    return 0


# ------------------------------------------------------------------------------------------------ cka


def add_cka_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoints",
        nargs="+",
        help="reference checkpoint A then one or more checkpoints B compared with it (one curve per pair); "
        + CHECKPOINT_HELP,
    )
    parser.add_argument("--images", required=True, nargs="+", help="image files, folders or lists")
    parser.add_argument("--output-dir", type=Path, required=True, help="writes cka.csv and cka.png here")
    parser.add_argument("--labels", nargs="+", default=None, help="names of the checkpoints (default: folder names)")
    parser.add_argument("--input-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--pool", choices=["flatten", "mean"], default="flatten", help="per-image feature pooling")
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    _add_runtime_arguments(parser, batch_size=8)


def run_cka(args: argparse.Namespace) -> int:
    from mesa_hf.analysis import plot_cka_figure, write_cka_csv
    from mesa_hf.analysis.layerwise import layerwise_cka
    from mesa_hf.evaluation.inference import load_checkpoint
    from mesa_hf.evaluation.predict import collect_inputs

    if len(args.checkpoints) < 2:
        raise ValueError("mesa-hf cka needs at least two checkpoints (reference and one to compare)")
    labels = args.labels or [Path(c).name for c in args.checkpoints]
    if len(labels) != len(args.checkpoints):
        raise ValueError(f"--labels gives {len(labels)} names for {len(args.checkpoints)} checkpoints")
    frames = collect_inputs(args.images)[: args.max_images]
    images = [frame.load() for frame in frames]
    reference, processor = load_checkpoint(args.checkpoints[0])
    others = {f"{labels[0]} vs {label}": load_checkpoint(c)[0] for label, c in zip(labels[1:], args.checkpoints[1:])}
    matrices, names = layerwise_cka(
        reference,
        others,
        images,
        processor,
        batch_size=args.batch_size,
        input_size=tuple(args.input_size),
        pool=args.pool,
        device=args.device,
        progress=not args.no_progress,
    )
    csv_path = write_cka_csv(args.output_dir / "cka.csv", matrices, names)
    title = f"Layer-wise linear CKA (minibatch, unbiased HSIC), {len(images)} images, {args.pool} features"
    png_path = plot_cka_figure(args.output_dir / "cka.png", matrices, names, title=title)
    for label, matrix in matrices.items():
        diagonal = ", ".join(f"{n}={v:.3f}" for n, v in zip(names, matrix.diagonal()))
        print(f"{label}: {diagonal}")
    print(f"wrote {csv_path} and {png_path}")
    return 0


# ------------------------------------------------------------------------------------------------ predict


def _output_kinds(text: str) -> list[str]:
    """``ply,glb`` -> ["ply", "glb"], each one of the predict output kinds."""
    from mesa_hf.evaluation.predict import OUTPUT_KINDS

    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in OUTPUT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown output kind {text!r}; choose from {', '.join(OUTPUT_KINDS)}")
    return kinds


def _requested_intrinsics(args: argparse.Namespace):
    """(explicit CameraIntrinsics or None, field of view or None) from the predict flags; one-line errors for
    contradictory or incomplete flags and a bad field of view."""
    from mesa_hf.camera import CameraIntrinsics, check_intrinsics_request

    separate = {name: getattr(args, name) for name in ("fx", "fy", "cx", "cy")}
    if args.intrinsics and any(v is not None for v in separate.values()):
        raise ValueError("give --intrinsics FX FY CX CY or --fx --fy --cx --cy, not both")
    if any(v is not None for v in separate.values()):
        missing = [f"--{name}" for name, value in separate.items() if value is None]
        if missing:
            raise ValueError(f"--fx --fy --cx --cy go together: missing {' '.join(missing)}")
        values = list(separate.values())
    else:
        values = args.intrinsics
    if values:
        check_intrinsics_request(**dict(zip(("fx", "fy", "cx", "cy"), values)), fov=args.fov)
        return CameraIntrinsics(*values, source="given"), None
    check_intrinsics_request(fov=args.fov)
    return None, args.fov


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    from mesa_hf.evaluation.predict import DEFAULT_OUTPUTS, OUTPUT_KINDS
    from mesa_hf.evaluation.scene_files import EDGE_THRESHOLD

    parser.add_argument(
        "inputs",
        nargs="+",
        help="image files, folders (e.g. video frames), image lists (.txt), animated GIF/TIFF or video files",
    )
    parser.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    parser.add_argument("--output-dir", type=Path, required=True)
    camera = parser.add_argument_group(
        "camera intrinsics",
        "pixels of the input images; default: the photo's EXIF focal length, else the checkpoint's camera, else "
        "NYUv2's Kinect scaled to each image (marked assumed)",
    )
    camera.add_argument(
        "--intrinsics",
        type=float,
        nargs=4,
        default=None,
        metavar=("FX", "FY", "CX", "CY"),
        help="pinhole intrinsics fx fy cx cy in one flag (as --fx --fy --cx --cy)",
    )
    for name in ("fx", "fy", "cx", "cy"):
        camera.add_argument(f"--{name}", type=float, default=None, help=f"{name} in pixels (give all four)")
    camera.add_argument("--fov", type=float, default=None, help="horizontal field of view in degrees (0-180)")
    parser.add_argument(
        "--outputs",
        nargs="+",
        type=_output_kinds,
        default=[list(DEFAULT_OUTPUTS)],
        metavar="KIND[,KIND]",
        help=f"what to write, comma- or space-separated, from {', '.join(OUTPUT_KINDS)} "
        f"(default: {','.join(DEFAULT_OUTPUTS)}; ply, glb and exr add camera; glb and exr need the 3d extra)",
    )
    parser.add_argument(
        "--edge-threshold",
        type=float,
        default=EDGE_THRESHOLD,
        help="drop flying pixels from the PLY / GLB where the relative depth jump to a neighbour exceeds this "
        f"(default {EDGE_THRESHOLD}; 0 keeps all)",
    )
    parser.add_argument("--cmap", default="magma_r", help="matplotlib colormap of the colour PNG")
    parser.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable input (default: skip it with a warning, exit 1 at the end)",
    )
    parser.add_argument(
        "--backend",
        choices=["pytorch", "onnx"],
        default="pytorch",
        help="onnx: --checkpoint is a `mesa-hf export` folder",
    )
    _add_tta_arguments(parser)
    _add_dtype_argument(parser)
    _add_runtime_arguments(parser, batch_size=4)
    from mesa_hf.evaluation.predict_video import add_video_predict_arguments

    add_video_predict_arguments(parser)


class _CameraWarnings(logging.Handler):
    """Prints the intrinsics resolver's warnings (e.g. a corrupt EXIF block and the fallback used) as one line."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"mesa-hf predict: warning: {record.getMessage()}", file=sys.stderr)


def run_predict(args: argparse.Namespace) -> int:
    camera_logger = logging.getLogger("mesa_hf.camera")
    handler = _CameraWarnings(logging.WARNING)
    camera_logger.addHandler(handler)
    propagate, camera_logger.propagate = camera_logger.propagate, False
    try:
        return _run_predict(args)
    finally:
        camera_logger.removeHandler(handler)
        camera_logger.propagate = propagate


def _run_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from mesa_hf.evaluation.inference import load_checkpoint
    from mesa_hf.evaluation.predict import predict_to_files
    from mesa_hf.evaluation.scene_files import writer_missing

    def warn(failure) -> None:
        tqdm.write(f"mesa-hf predict: warning: {failure.error} (skipped)", file=sys.stderr)

    intrinsics, fov = _requested_intrinsics(args)  # bad flags fail before the model loads
    args.outputs = list(dict.fromkeys(kind for group in args.outputs for kind in group))
    if {"ply", "glb", "exr"} & set(args.outputs) and "camera" not in args.outputs:
        args.outputs.append("camera")  # 3-D files come with the intrinsics that made them
    for kind in ("glb", "exr"):
        reason = writer_missing(kind) if kind in args.outputs else None
        if reason:
            print(f"mesa-hf predict: warning: {reason}; not written", file=sys.stderr)
            args.outputs.remove(kind)
    from mesa_hf.evaluation.predict_video import check_videos, run_video_predictions, split_video_inputs

    videos, args.inputs = split_video_inputs(args.inputs)
    check_videos(videos)  # unreadable video files fail before the model loads
    if args.backend == "onnx":
        if videos:
            raise ValueError("--backend onnx predicts images; predict videos with the default PyTorch backend")
        if fov is not None:
            raise ValueError("--backend onnx takes --intrinsics or --fx --fy --cx --cy, not --fov")
        return _run_predict_onnx(args, intrinsics)
    model, processor = load_checkpoint(args.checkpoint)
    if videos:
        run_video_predictions(args, model, processor, videos, _tta(args), intrinsics, fov)
    if not args.inputs:
        return 0
    records = predict_to_files(
        model,
        args.inputs,
        args.output_dir,
        image_processor=processor,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        tta=_tta(args),
        intrinsics=intrinsics,
        outputs=args.outputs,
        cmap=args.cmap,
        input_size=tuple(args.input_size) if args.input_size else None,
        progress=not args.no_progress,
        strict=args.strict,
        on_failure=warn,
        fov=fov,
        edge_threshold=args.edge_threshold,
    )
    intrinsics_used = sorted({r["intrinsics"] for r in records})
    print(f"predicted {len(records)} images (dtype {args.dtype}, TTA {_tta(args).describe()}) into {args.output_dir}")
    print("depth PNG: uint16 millimetres (depth_scale text chunk '0.001 m per unit'; 0 = no depth); .npy: float32 m")
    if {"ply", "glb", "camera"} & set(args.outputs):
        for line in intrinsics_used:
            print(f"point-cloud intrinsics: {line}")
    dropped = [r["flying_pixels_dropped"] for r in records if "flying_pixels_dropped" in r]
    if dropped:
        print(
            f"flying pixels dropped from the PLY/GLB: {sum(dropped)} "
            f"(relative depth jump > {args.edge_threshold:g} between neighbours)"
        )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "predictions.json").write_text(json.dumps(records, indent=2) + "\n")
    if records.failures:
        total = len(records) + len(records.failures)
        print(f"mesa-hf predict: {len(records.failures)} of {total} inputs failed:", file=sys.stderr)
        for failure in records.failures:
            print(f"  {failure.error}", file=sys.stderr)
        return 1
    return 0


def _run_predict_onnx(args: argparse.Namespace, intrinsics) -> int:
    """`predict --backend onnx`: ONNX Runtime on a `mesa-hf export onnx` folder, the same output files."""
    from mesa_hf.onnx import predict_to_files_onnx

    if args.flip or args.sliding_window or args.dtype != "fp32" or args.input_size:
        raise SystemExit("mesa-hf predict: error: --backend onnx runs the export as is (no TTA, --dtype, --input-size)")
    records = predict_to_files_onnx(
        args.checkpoint,
        args.inputs,
        args.output_dir,
        args.batch_size,
        intrinsics,
        args.outputs,
        args.cmap,
        progress=not args.no_progress,
    )
    print(f"predicted {len(records)} images (ONNX Runtime, {args.checkpoint}) into {args.output_dir}")
    (args.output_dir / "predictions.json").write_text(json.dumps(records, indent=2) + "\n")
    return 0


register_subcommand(
    "evaluate", "score a checkpoint on a depth dataset under a protocol", add_evaluate_arguments, run_evaluate
)
register_subcommand("cka", "layer-wise CKA between checkpoints (CSV + PNG)", add_cka_arguments, run_cka)
register_subcommand(
    "predict", "depth maps, colour maps and point clouds for images", add_predict_arguments, run_predict
)

from mesa_hf.convert import add_convert_arguments, run_convert  # noqa: E402

# ------------------------------------------------------------------------------------------------ convert lsun


def add_convert_with_lsun_arguments(parser: argparse.ArgumentParser) -> None:
    """`convert`'s checkpoint arguments plus ``convert lsun LMDB_PATH OUT_DIR --format ...`` (LSUN LMDBs to
    webdataset / parquet shards)."""
    from mesa_hf.data.shards import SHARD_FORMATS

    add_convert_arguments(parser)
    actions = {action.dest: action for action in parser._actions}
    actions["kind"].choices = [*actions["kind"].choices, "lsun"]
    actions["kind"].help += "; lsun: an LSUN LMDB (or folder of them) to webdataset/parquet shards"
    actions["checkpoint"].help += " (lsun: the LMDB folder, or a folder of category LMDBs)"
    actions["output_dir"].help += " (lsun: a new folder for the shards)"
    lsun = parser.add_argument_group("convert lsun (CHECKPOINT is the LMDB folder, OUTPUT_DIR gets the shards)")
    lsun.add_argument("--format", choices=SHARD_FORMATS, default=None, help="shard format (default: webdataset)")
    lsun.add_argument("--shard-size", type=int, default=None, help="images per shard (default: 10000)")
    lsun.add_argument("--max-images", type=int, default=None, help="convert only the first N good images")
    lsun.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_convert_with_lsun(args: argparse.Namespace) -> int:
    lsun_options = (args.format, args.shard_size, args.max_images)
    if args.kind != "lsun":
        if any(option is not None for option in lsun_options) or args.no_progress:
            raise ValueError("--format, --shard-size, --max-images and --no-progress apply to `convert lsun` only")
        return run_convert(args)
    checkpoint_options = ("preset", "max_depth", "image_size", "window_size", "layer_norm_eps", "processor_size")
    given = [f"--{name.replace('_', '-')}" for name in checkpoint_options if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} apply to checkpoint conversion, not to `convert lsun`")
    from mesa_hf.data.lsun import DEFAULT_SHARD_ENTRIES, convert_lsun

    result = convert_lsun(
        args.checkpoint,
        args.output_dir,
        args.format or "webdataset",
        shard_size=args.shard_size or DEFAULT_SHARD_ENTRIES,
        max_images=args.max_images,
        progress=not args.no_progress,
    )
    print(
        f"wrote {result.num_written} images in {len(result.shards)} {args.format or 'webdataset'} shards to "
        f"{args.output_dir}; skipped {result.bad_entries.count} bad entries"
    )
    for example in result.bad_entries.examples:
        print(f"  skipped {example}")
    return 0


register_subcommand(
    "convert",
    "convert a SimMIM Swin-V2 or MIM-Depth checkpoint to MeSa, or LSUN LMDBs to shards",
    add_convert_with_lsun_arguments,
    run_convert_with_lsun,
)

from mesa_hf.demo.cli import add_demo_arguments, run_demo  # noqa: E402

register_subcommand("demo", "web demo (Gradio): depth of photos, point clouds", add_demo_arguments, run_demo)

from mesa_hf.onnx import add_export_arguments, run_export  # noqa: E402
from mesa_hf.web_export import add_web_export_arguments, run_web_export  # noqa: E402

EXPORT_FORMATS = {
    "onnx": ("ONNX + ONNX Runtime check", add_export_arguments, run_export),
    "web": (
        "a static page running the model in the browser (onnxruntime-web)",
        add_web_export_arguments,
        run_web_export,
    ),
}


def add_export_format_arguments(parser: argparse.ArgumentParser) -> None:
    """`mesa-hf export onnx|web ...`: one subparser per format."""
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    for name, (help_text, add_arguments, run) in EXPORT_FORMATS.items():
        sub = formats.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(_run_export=run)


def run_export_format(args: argparse.Namespace) -> int:
    return args._run_export(args)


register_subcommand(
    "export",
    "export a depth checkpoint (onnx: ONNX file; web: static browser page)",
    add_export_format_arguments,
    run_export_format,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesa-hf", description="MeSa monocular depth models (Hugging Face).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mesa-hf`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (FileNotFoundError, ValueError) as error:
        print(f"mesa-hf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

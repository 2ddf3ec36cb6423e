"""Layer-wise debiased CKA between checkpoints: how much each Swin-V2 block changes, with 95 % intervals.

Example (pre-trained vs fine-tuned encoder on NYUv2 test images; use >= 256 images for a CKA that carries a claim):

    python examples/cka.py pretrained/ finetuned/ --images ../shared/data/nyu_test10 --output-dir results/cka

Same arguments as `mesa-hf cka`, plus `--estimator full|minibatch` (default full: one unbiased HSIC over all images,
leave-one-image-out jackknife interval, permutation null) and `--permutations N`. Writes results/cka/cka.csv (pair,
layer_a, layer_b, cka), cka.json (every CKAResult field: intervals, biased CKA, self-HSIC, null) and cka.png.
"""

import argparse
from pathlib import Path

from mesa_hf.analysis import layerwise_cka_results, plot_cka_results, write_cka_csv, write_cka_results
from mesa_hf.cli import add_cka_arguments
from mesa_hf.evaluation.inference import load_checkpoint
from mesa_hf.evaluation.predict import collect_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cka_arguments(parser)
    parser.add_argument("--estimator", choices=["full", "minibatch"], default="full")
    parser.add_argument("--permutations", type=int, default=200, help="permutation-null draws (full estimator)")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error("needs at least two checkpoints (reference and one to compare)")
    labels = args.labels or [Path(c).name for c in args.checkpoints]
    if len(labels) != len(args.checkpoints):
        parser.error(f"--labels gives {len(labels)} names for {len(args.checkpoints)} checkpoints")
    images = [frame.load() for frame in collect_inputs(args.images)[: args.max_images]]
    reference, processor = load_checkpoint(args.checkpoints[0])
    others = {f"{labels[0]} vs {label}": load_checkpoint(c)[0] for label, c in zip(labels[1:], args.checkpoints[1:])}
    results = layerwise_cka_results(
        reference,
        others,
        images,
        processor,
        estimator=args.estimator,
        batch_size=args.batch_size,
        input_size=tuple(args.input_size),
        pool=args.pool,
        device=args.device,
        progress=not args.no_progress,
        num_permutations=args.permutations if args.estimator == "full" else 0,
    )
    first = next(iter(results.values()))
    csv_path = write_cka_csv(args.output_dir / "cka.csv", {k: r.cka for k, r in results.items()}, first.layers_a)
    json_path = write_cka_results(args.output_dir / "cka.json", results)
    png_path = plot_cka_results(args.output_dir / "cka.png", results)
    for label, result in results.items():
        d = result.diagonal()
        print(f"{label} ({result.estimator}, {result.num_images} images, {result.interval}):")
        for i, name in enumerate(d["layers"]):
            cells = [f"cka {_number(d['cka'][i])} [{_number(d['ci_low'][i])}, {_number(d['ci_high'][i])}]"]
            cells.append(f"self-HSIC {_number(d['self_hsic_a'][i], '.3g')} / {_number(d['self_hsic_b'][i], '.3g')}")
            if d["null_high"][i] is not None:
                cells.append(f"null {_number(d['null_mean'][i])} (95 % up to {_number(d['null_high'][i])})")
            print(f"  {name}: " + ", ".join(cells))
    print(f"wrote {csv_path}, {json_path} and {png_path}")


def _number(value: float | None, spec: str = ".3f") -> str:
    return "undefined" if value is None else format(value, spec)


if __name__ == "__main__":
    main()

"""The end of the main job (``examples/main_job.sh``): one result table over every stage folder it wrote, the
held-out comparison with the average-depth-map baseline, the total time, the paths written, and
``<run>/summary.json``.

    python -m mesa_hf.training.summary outputs/main-job --started 1767000000

``summary.json``: ``stages`` (per stage: folder, steps, first/last loss, held-out metric and its value before/after
training, the resolved recipe), ``final`` (held-out metrics of the last stage's model and of the average training
depth map), ``wall_time_s`` and ``paths``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .runner import STAGE_RESULTS_NAME, StageResult, headline_metric

RUN_ORDER = ("pretrain/masked", "pretrain/geometric", "pretrain/supervised", "finetuned")


def _results(run_dir: Path) -> list[tuple[Path, StageResult]]:
    found = []
    for relative in RUN_ORDER:
        path = run_dir / relative / STAGE_RESULTS_NAME
        if path.is_file():
            recorded = json.loads(path.read_text())
            fields = StageResult.__dataclass_fields__
            found.append((path.parent, StageResult(**{k: v for k, v in recorded.items() if k in fields})))
    if not found:
        raise FileNotFoundError(f"{run_dir}: no finished stage folder ({', '.join(RUN_ORDER)})")
    return found


def build_summary(run_dir: str | os.PathLike, wall_time_s: float | None = None) -> dict[str, Any]:
    """The ``summary.json`` content of a main-job folder."""
    run_dir = Path(run_dir)
    found = _results(run_dir)
    stages = {}
    for folder, result in found:
        key = headline_metric(result.stage, result.eval_after)
        stages[result.stage] = {
            "folder": str(folder),
            "steps": result.global_step,
            "first_loss": result.first_loss,
            "last_loss": result.last_loss,
            "held_out_metric": key,
            "before": result.eval_before.get(key),
            "after": result.eval_after.get(key),
            "resolved_recipe": result.resolved_recipe,
        }
    last = found[-1][1]
    pictures = sorted(str(p) for p in found[-1][0].glob("depth_*.png"))
    return {
        "stages": stages,
        "final": {"stage": last.stage, "model": last.eval_after, "average_depth_map": last.baseline},
        "wall_time_s": wall_time_s,
        "paths": {
            "stage_folders": [str(folder) for folder, _ in found],
            "depth_pictures": pictures,
            "summary": str(run_dir / "summary.json"),
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the main job's output folder")
    parser.add_argument("--started", type=float, default=None, help="start time (seconds since the epoch)")
    args = parser.parse_args(argv)
    from .cli import format_comparison, format_summary

    wall = round(time.time() - args.started, 1) if args.started else None
    summary = build_summary(args.run_dir, wall)
    path = Path(summary["paths"]["summary"])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, path)
    results = [result for _, result in _results(Path(args.run_dir))]
    print("\n" + format_summary(results))
    comparison = format_comparison(results[-1])
    if comparison:
        print("\n" + comparison)
    if wall is not None:
        print(f"\ntotal time: {wall / 60:.1f} min")
    print("wrote: " + ", ".join(summary["paths"]["stage_folders"] + summary["paths"]["depth_pictures"]))
    print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ablation (examples/ablation.py): budget split, comparisons, the report built only from results.json, and a
killed run on 2 processes resuming without re-running finished variants.

The end-to-end runs use the ``test`` preset with a few updates per stage (seconds each); module-scoped fixtures
share them between the assertions.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mesa_hf.experiments.ablation import (
    DEFAULT_VARIANTS,
    VARIANTS,
    AblationSettings,
    compare,
    last_stage_cka,
    mean_std,
    paper_claims,
    split_budget,
    variant_cka,
)
from mesa_hf.experiments.report import FIGURES
from mesa_hf.experiments.variants import stage_names

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "examples" / "ablation.py"
TEST_SIZE = [
    "--preset", "test", "--pretrain_updates", "6", "--finetune_updates", "4", "--per_device_train_batch_size", "2",
    "--num_synthetic_samples", "16", "--num_eval_samples", "8", "--cka_images", "8", "--drop_path_rate", "0",
    "--probe_updates", "3", "--cka_permutations", "20",
]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(cache))
    return env


def _command(args: list[str], processes: int = 1) -> list[str]:
    if processes == 1:
        return [sys.executable, str(ABLATION), *args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*launcher, str(ABLATION), *args]


def _run(args: list[str], cache: Path, processes: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(_command(args, processes), env=_env(cache), capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, f"ablation.py {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    return done


# ------------------------------------------------------------------------------------------------ pure functions


def test_split_budget_follows_the_demo_recipe_proportions_and_sums_exactly():
    # one update each, then the rest by the weights masked 120, geometric 240, supervised 500:
    # 297 * (120, 240, 500) / 860 = (41.44, 82.88, 172.67) -> 1 + (41, 82, 172) = 298, the two largest remainders
    # (geometric .88, supervised .67) get the last two
    assert split_budget(VARIANTS["mesa"], 300) == {"masked": 42, "geometric": 84, "supervised": 174}
    # 148 * (120, 500) / 620 = (28.65, 119.35) -> 1 + (28, 119) = 149, masked (.65) gets the last one
    assert split_budget(VARIANTS["masked_supervised"], 150) == {"masked": 30, "supervised": 120}
    assert split_budget(VARIANTS["masked"], 150) == {"masked": 150}
    assert split_budget(VARIANTS["scratch"], 150) == {}
    # 3 * (120, 240, 500) / 860 = (0.42, 0.84, 1.74) -> 1 + (0, 0, 1) = 4; geometric (.84) and supervised (.74) +1
    assert split_budget(VARIANTS["mesa"], 6) == {"masked": 1, "geometric": 2, "supervised": 3}
    assert split_budget(VARIANTS["mesa"], 3) == {"masked": 1, "geometric": 1, "supervised": 1}
    for total in range(3, 40):
        assert sum(split_budget(VARIANTS["mesa"], total).values()) == total
    with pytest.raises(ValueError, match="cannot be split over 3 stages"):
        split_budget(VARIANTS["mesa"], 2)


def test_mean_std_compare_and_the_paper_claims_by_hand():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    with pytest.raises(ValueError):
        mean_std([])
    summary = {
        "mesa": {"rmse": mean_std([0.80, 0.84]), "d1": mean_std([0.70, 0.72])},
        "masked": {"rmse": mean_std([1.00, 1.04]), "d1": mean_std([0.70, 0.74])},
    }
    result = compare(summary, "mesa", "masked")
    # RMSE: 0.82 vs 1.02, spread 2 * 0.02828 = 0.0566 < 0.2: better (lower), -19.6 %
    assert result["rmse"]["verdict"] == "better"
    assert math.isclose(result["rmse"]["relative_change_percent"], 100 * (0.82 - 1.02) / 1.02)
    assert math.isclose(result["rmse"]["seed_spread"], 2 * math.sqrt(0.0008), rel_tol=1e-9)
    # delta1: 0.71 vs 0.72, |difference| 0.01 < spread 0.01414 + 0.02828
    assert result["d1"]["verdict"] == "no difference"
    one_seed = {"mesa": {"rmse": mean_std([0.8])}, "masked": {"rmse": mean_std([1.0])}}
    assert compare(one_seed, "mesa", "masked")["rmse"]["verdict"].startswith("one seed")
    layers = ["embed", "s1.b0", "s2.b0", "s2.b1"]

    def curve(values, half_width):
        return {
            "layers": layers,
            "cka": values,
            "ci_low": [v - half_width for v in values],
            "ci_high": [v + half_width for v in values],
        }

    cka = {"mesa": curve([1.0, 0.9, 0.9, 0.92], 0.05), "masked": curve([1.0, 0.9, 0.5, 0.52], 0.05)}
    claims = paper_claims({"mesa_vs_masked": result}, cka, {})
    assert claims["rmse_vs_masked"]["statement"] == "agrees with the paper at this scale"
    assert claims["rmse_vs_masked"]["paper_change_percent"] == -17.1
    # the last stage (s2) is judged: both blocks' intervals lie above masked-only's
    assert claims["cka_vs_masked"]["verdict"] == "holds"
    assert claims["cka_vs_masked"]["layers"] == {"s2.b0": "higher", "s2.b1": "higher"}
    assert claims["cka_vs_masked"]["statement"].endswith("agrees with the paper at this scale")
    cka["mesa"] = curve([1.0, 0.9, 0.3, 0.32], 0.05)
    assert paper_claims({"mesa_vs_masked": result}, cka, {})["cka_vs_masked"]["verdict"] == "opposite"
    cka["mesa"] = curve([1.0, 0.9, 0.5, 0.55], 0.05)  # overlapping intervals: nothing is claimed
    judged = paper_claims({"mesa_vs_masked": result}, cka, {})["cka_vs_masked"]
    assert judged["verdict"] == "not shown" and "not reproduced" in judged["statement"]
    probe = {"mesa_vs_masked": compare(summary, "mesa", "masked")}
    assert paper_claims({}, {}, probe)["probe_vs_masked"]["verdict"] == "better"


def test_variant_cka_interval_adds_image_and_seed_uncertainty_in_quadrature():
    layers = ["embed", "s1.b0", "s1.b1"]

    def run(values, half_width):
        return {
            "cka": {
                "layers": layers,
                "values": values,
                "ci_low": [None if v is None else v - half_width for v in values],
                "ci_high": [None if v is None else v + half_width for v in values],
            }
        }

    own = [run([1.0, 0.6, 0.8], 0.03), run([1.0, 0.7, None], 0.04)]
    curve = variant_cka(own)
    # s1.b0: mean 0.65, seeds' std 0.0707; t(0.975, 1 dof) = 12.706: 12.706 * 0.0707 / sqrt 2 = 0.6353;
    # image part sqrt((0.03^2 + 0.04^2) / 2) = 0.03536; half-width hypot = 0.6363
    assert math.isclose(curve["mean"][1], 0.65)
    assert math.isclose(curve["ci_high"][1] - 0.65, math.hypot(12.7062047 * 0.1 / 2, math.sqrt(0.00125)), rel_tol=1e-6)
    # s1.b1 is undefined in the second run: one value, the image part alone
    assert math.isclose(curve["mean"][2], 0.8) and math.isclose(curve["ci_high"][2], 0.83)
    # the last stage's mean needs every block defined: only the first run counts
    assert math.isclose(curve["last_stage"]["mean"], 0.7) and curve["last_stage"]["n"] == 1
    assert curve["cka"] == curve["mean"]


def test_last_stage_cka_averages_the_last_swin_stage_blocks():
    cka = {
        "layers": ["embed", "s1.b0", "s2.b0", "s3.b0", "s3.b1", "s4.b0", "s4.b1"],
        "values": [1, 1, 1, 1, 1, 0.6, 0.8],
    }
    assert math.isclose(last_stage_cka(cka), 0.7)


def test_settings_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="unknown variants"):
        AblationSettings(tmp_path, variants=("mesa", "bogus")).validate()
    with pytest.raises(ValueError, match="without repeats"):
        AblationSettings(tmp_path, seeds=(0, 0)).validate()
    with pytest.raises(ValueError, match="cannot be split"):
        AblationSettings(tmp_path, pretrain_updates=2).validate()
    with pytest.raises(ValueError, match="cka_images must be >= 5"):
        AblationSettings(tmp_path, cka_images=3).validate()
    with pytest.raises(ValueError, match="needs its protocol"):
        AblationSettings(tmp_path, ood_eval_dataset=[{}]).validate()
    with pytest.raises(ValueError, match="held-out eval_dataset"):
        AblationSettings(tmp_path, datasets={"finetune": [{}]}).validate()
    AblationSettings(tmp_path).validate()


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ablation-datasets-cache")


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, cache) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ablation")
    done = _run([*TEST_SIZE, "--seeds", "0", "1", "--output_dir", str(out)], cache)
    return out, done


def _numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _printed_forms(value: float) -> set[str]:
    forms = {f"{value:.4f}", f"{value:+.1f}", str(value)}
    return {f.lstrip("+") for f in forms} | forms


def test_report_structure_figures_and_results(ablation):
    out, done = ablation
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for heading in (
        "# MeSa ablation",
        "## MeSa vs masked-only and vs masked → supervised",
        "### MeSa vs masked-only",
        "### MeSa vs masked → supervised",
        "## Frozen-encoder probe (mean ± std over seeds)",
        "## Held-out results (mean ± std over seeds)",
        "## Layer-wise CKA",
        "## Training loss per stage",
        "## Budget (optimizer updates per stage) and data",
        "## Runs",
    ):
        assert heading in report, heading
    for name in FIGURES.values():
        assert f"]({name})" in report
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE) and (out / name).stat().st_size > 5000
    assert results["settings"]["variants"] == list(DEFAULT_VARIANTS)
    assert len(results["runs"]) == 2 * len(DEFAULT_VARIANTS)
    for run in results["runs"]:
        pretraining = {k: v for k, v in run["budget"].items() if k not in ("finetune", "probe")}
        assert sum(pretraining.values()) == (0 if run["variant"] == "scratch" else 6), run["budget"]
        assert run["budget"]["finetune"] == 4 and run["budget"]["probe"] == 3
        assert [s["stage"] for s in run["stages"]] == [*stage_names(run["variant"]), "probe", "finetune"]
        assert [s["global_step"] for s in run["stages"]] == [run["budget"][s["stage"]] for s in run["stages"]]
        assert run["cka"]["layers"][0] == "embed"
        # nothing clipped: every CKA is a finite number (negative ones too) inside its interval, or undefined
        for value, low, high in zip(run["cka"]["values"], run["cka"]["ci_low"], run["cka"]["ci_high"]):
            assert value is None or (math.isfinite(value) and low <= value <= high)
        assert run["probe_metrics"]["rmse"] > 0
        assert run["metrics"]["rmse"] > 0 and 0 <= run["metrics"]["d1"] <= 1
    for variant in DEFAULT_VARIANTS:
        rmse = [r["metrics"]["rmse"] for r in results["runs"] if r["variant"] == variant]
        assert math.isclose(results["summary"][variant]["rmse"]["mean"], sum(rmse) / 2)
        assert results["summary"][variant]["rmse"]["n"] == 2
    # one table row per variant (plus the baseline), in the settings' order
    rows = [line for line in report.splitlines() if line.startswith("| ") and "±" in line]
    assert len(rows) == 2 * len(DEFAULT_VARIANTS)  # held-out results and the probe
    assert "average training depth map (baseline)" in report
    # the headline figure: MeSa vs masked-only RMSE change, from results.json
    change = results["comparisons"]["mesa_vs_masked"]["rmse"]["relative_change_percent"]
    assert f"{change:+.1f} %" in report
    assert results["claims"]["rmse_vs_masked"]["paper_change_percent"] == -17.1
    for reference in ("masked", "masked_supervised"):
        for claim in ("rmse", "probe", "cka"):
            statement = results["claims"][f"{claim}_vs_{reference}"]["statement"]
            assert statement[:1].upper() + statement[1:] in report  # as a sentence
    low, high = results["cka"]["mesa"]["last_stage"]["ci_low"], results["cka"]["mesa"]["last_stage"]["ci_high"]
    assert f"[{low:.4f}, {high:.4f}]" in report
    assert "wrote" in done.stdout and "report.md" in done.stdout


def test_every_number_in_the_report_comes_from_results_json(ablation):
    out, _ = ablation
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    allowed = set().union(*(_printed_forms(v) for v in _numbers(results)))
    # numbers standing alone (not part of a name such as log10, δ1, NYUv2, Swin-V2, s4.b0, metrics.png)
    found = re.findall(r"(?<![\w.δ-])[-+]?\d+(?:\.\d+)?(?![\w.])", report.replace("Swin-V2", ""))
    assert len(found) > 100
    stray = sorted({n for n in found if n not in allowed})
    assert not stray, f"numbers in report.md that are not values of results.json: {stray}"


def test_rerun_without_resume_is_refused_and_resume_skips_every_finished_run(ablation, cache):
    out, _ = ablation
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/result.json")}
    refused = _run([*TEST_SIZE, "--seeds", "0", "1", "--output_dir", str(out)], cache, check=False)
    assert refused.returncode != 0 and "already holds an ablation" in refused.stderr
    changed = _run([*TEST_SIZE, "--seeds", "0", "1", "--output_dir", str(out), "--finetune_updates", "5",
                    "--resume_from_checkpoint", "latest"], cache, check=False)  # fmt: skip
    assert changed.returncode != 0 and "different settings (budget, finetune_updates)" in changed.stderr
    again = _run(
        [*TEST_SIZE, "--seeds", "0", "1", "--output_dir", str(out), "--resume_from_checkpoint", "latest"], cache
    )
    results = json.loads((out / "results.json").read_text())
    assert all(run["skipped"] for run in results["runs"])
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/result.json")} == before
    assert "wall time of the runs" in again.stdout


def test_bad_flags_exit_with_one_line(tmp_path, cache):
    done = _run(["--variants", "bogus", "--output_dir", str(tmp_path)], cache, check=False)
    assert done.returncode == 2 and "invalid choice: 'bogus'" in done.stderr
    done = _run(["--seed", "3", "--output_dir", str(tmp_path)], cache, check=False)
    assert done.returncode == 2 and "--seed is set by the ablation" in done.stderr
    done = _run(["--eval_dataset", f"folder:{tmp_path}", "--output_dir", str(tmp_path)], cache, check=False)
    assert done.returncode == 2 and "give --eval_protocol" in done.stderr


def test_sigkill_on_two_processes_then_resume_skips_the_finished_variant(tmp_path, cache):
    out = tmp_path / "killed"
    args = [*TEST_SIZE, "--variants", "scratch", "masked", "--seeds", "0", "--pretrain_updates", "8",
            "--checkpointing_steps", "2", "--output_dir", str(out)]  # fmt: skip
    process = subprocess.Popen(_command(args, 2), env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "masked" / "seed-0" / "masked" / "checkpoints" / "step_4"
    deadline = time.time() + 300
    while not checkpoint.is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert len(workers) >= 2 and checkpoint.is_dir(), "the run finished (or failed) before it could be killed"
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    psutil.wait_procs(workers, timeout=30)
    finished = out / "scratch" / "seed-0" / "result.json"
    assert finished.is_file() and not (out / "masked" / "seed-0" / "result.json").exists()
    finished_at = finished.stat().st_mtime_ns
    _run([*args, "--resume_from_checkpoint", "latest"], cache, processes=2)
    results = json.loads((out / "results.json").read_text())
    assert [(r["variant"], r.get("skipped", False)) for r in results["runs"]] == [("scratch", True), ("masked", False)]
    assert finished.stat().st_mtime_ns == finished_at
    masked_stage = json.loads((out / "masked" / "seed-0" / "masked" / "stage_results.json").read_text())
    assert masked_stage["global_step"] == 8 and masked_stage["resumed_from"] is not None
    assert int(Path(masked_stage["resumed_from"]).name.split("_")[1]) >= 4
    assert (out / "report.md").is_file()

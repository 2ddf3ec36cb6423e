"""examples/pretrain.py end to end in subprocesses: `--objective all` on the synthetic world, and a run killed with
SIGKILL mid-way that resumes (`--resume_from_checkpoint latest`) to the uninterrupted run's weights."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "examples" / "pretrain.py"
SMALL = [
    "--preset", "test", "--image_size", "64", "64", "--num_synthetic_samples", "16", "--num_eval_samples", "4",
    "--per_device_train_batch_size", "4",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    # the same thread count as this process, so that float reductions run in the same order
    env.update(
        OMP_NUM_THREADS=str(torch.get_num_threads()), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1"
    )
    return env


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PRETRAIN), *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def test_pretrain_all_runs_every_stage_from_the_previous_folder(tmp_path):
    out = tmp_path / "run"
    done = _run(["--objective", "all", "--output_dir", str(out), "--max_train_steps", "3", *SMALL])
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("masked", "geometric", "supervised"):
        recorded = json.loads((out / stage / "stage_results.json").read_text())
        assert recorded["stage"] == stage and recorded["global_step"] == 3
        assert (out / stage / "model.safetensors").is_file() and (out / stage / "README.md").is_file()
    assert json.loads((out / "geometric" / "stage_results.json").read_text())["loading_info"]["newly_initialized"] == [
        "decoder",
        "depth_head",
        "scale_heads",
    ]
    config = json.loads((out / "supervised" / "config.json").read_text())
    assert [s["name"] for s in config["mesa_stages"]] == ["masked", "geometric", "supervised"]
    assert config["pose_source"] == "dataset"  # the demo recipe uses the synthetic world's camera poses
    assert "masked_loss" in done.stdout and "average training depth map" in done.stdout
    assert "as expected: newly initialised decoder, depth_head, scale_heads" in done.stderr
    assert "LOAD REPORT" not in done.stderr


def _load_pretrain():
    spec = importlib.util.spec_from_file_location("mesa_example_pretrain", PRETRAIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_sigkill_mid_run_resumes_to_the_uninterrupted_weights(tmp_path, capsys):
    args = ["--objective", "supervised", "--max_train_steps", "16", "--checkpointing_steps", "4", *SMALL]
    args += ["--num_eval_samples", "2"]
    # the uninterrupted reference runs in this process (same code path as the script)
    assert _load_pretrain().main([*args, "--output_dir", str(tmp_path / "uninterrupted")]) == 0
    capsys.readouterr()
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(PRETRAIN), *args, "--output_dir", str(killed)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = killed / "supervised" / "checkpoints" / "step_8"
    deadline = time.time() + 90
    while not checkpoint.is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "supervised" / "stage_results.json").exists()
    resumed = _run([*args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    recorded = json.loads((killed / "supervised" / "stage_results.json").read_text())
    assert recorded["resumed_from"] is not None and recorded["global_step"] == 16
    resumed_step = int(Path(recorded["resumed_from"]).name.split("_")[1])
    assert 8 <= resumed_step < 16

    a = load_file(killed / "supervised" / "model.safetensors")
    b = load_file(tmp_path / "uninterrupted" / "supervised" / "model.safetensors")
    assert a.keys() == b.keys()
    difference = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    print(f"SIGKILL after step_{resumed_step}, resumed: max |w_resumed - w_uninterrupted| = {difference}")
    assert difference == 0.0

"""Launching the example scripts on several CPU processes (``torchrun --standalone``, gloo) and comparing the weights
they write; shared by tests/test_multiprocess.py and tests/test_fsdp.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN, FINETUNE = ROOT / "examples" / "pretrain.py", ROOT / "examples" / "finetune.py"
STAGE_FILES = ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "stage_results.json")
# the command (finetune on the synthetic world, test preset, 3 updates) with drop path off
FINETUNE_ARGS = [
    "--model_name_or_path", "test", "--per_device_train_batch_size", "2", "--max_train_steps", "3",
    "--num_synthetic_samples", "16", "--num_eval_samples", "4", "--drop_path_rate", "0",
]  # fmt: skip
BATCHNORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def run_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TQDM_DISABLE="1",
        HF_DATASETS_CACHE=str(cache),
    )
    return env


def launch_command(script: Path, args: list[str], processes: int) -> list[str]:
    """``python script args`` for one process, else ``python -m torch.distributed.run --standalone ...``."""
    if processes == 1:
        return [sys.executable, str(script), *args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*launcher, str(script), *args]


def run_script(script: Path, args: list[str], cache: Path, processes: int = 2, timeout: float = 300, check=True):
    """Run `script` to the end; with `check`, assert exit code 0 (showing the output tails otherwise)."""
    done = subprocess.run(
        launch_command(script, args, processes), env=run_env(cache), capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"{script.name} {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def trainable_weights(folder: Path) -> dict:
    """Weights without BatchNorm running statistics (DDP keeps rank 0's, accumulation sees every micro-batch)."""
    weights = load_file(folder / "model.safetensors")
    return {k: v for k, v in weights.items() if not k.endswith(BATCHNORM_STATISTICS)}


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = trainable_weights(a), trainable_weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def complete_folder(folder: Path) -> dict:
    """Assert `folder` is a complete stage folder; its stage_results.json."""
    for name in STAGE_FILES:
        assert (folder / name).is_file(), folder / name
    return json.loads((folder / "stage_results.json").read_text())


def kill_after_checkpoint(
    script: Path, args: list[str], cache: Path, checkpoint: Path, processes: int = 2, timeout: float = 240
) -> None:
    """Start `script` on `processes` processes and SIGKILL the launcher and every worker as soon as `checkpoint`
    exists (torchrun's workers do not share its process group)."""
    process = subprocess.Popen(
        launch_command(script, args, processes),
        env=run_env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout
    while not checkpoint.is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert len(workers) >= processes, "the run finished before it could be killed"
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    psutil.wait_procs(workers, timeout=30)
    assert process.returncode == -signal.SIGKILL

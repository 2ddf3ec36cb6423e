"""Launching the example scripts on several CPU processes (``torchrun --standalone``, gloo, or two torchrun agents as
two simulated machines on localhost) and comparing the weights they write; shared by tests/test_multiprocess.py,
tests/test_fsdp.py and tests/test_push_to_hub.py. ``HOOKS`` (tests/subprocess_hooks) on PYTHONPATH gives every
launched process a `sitecustomize` that records file writes or redirects the Hub when the environment asks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "subprocess_hooks"
PRETRAIN, FINETUNE = ROOT / "examples" / "pretrain.py", ROOT / "examples" / "finetune.py"
STAGE_FILES = ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "stage_results.json")
# the command (finetune on the synthetic world, test preset, 3 updates) with drop path off
FINETUNE_ARGS = [
    "--model_name_or_path", "test", "--per_device_train_batch_size", "2", "--max_train_steps", "3",
    "--num_synthetic_samples", "16", "--num_eval_samples", "4", "--drop_path_rate", "0",
]  # fmt: skip
BATCHNORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def run_env(cache: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The launched scripts' environment: this checkout's src and the test hooks first, offline, 1 thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(HOOKS), env.get("PYTHONPATH", "")])
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TQDM_DISABLE="1",
        HF_DATASETS_CACHE=str(cache),
    )
    env.update(extra or {})
    return env


def launch_command(script: Path, args: list[str], processes: int) -> list[str]:
    """``python script args`` for one process, else ``python -m torch.distributed.run --standalone ...``."""
    if processes == 1:
        return [sys.executable, str(script), *args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*launcher, str(script), *args]


def run_script(
    script: Path, args: list[str], cache: Path, processes: int = 2, timeout: float = 300, check=True, env=None
):
    """Run `script` to the end (`env`: extra environment variables); with `check`, assert exit code 0 (showing the
    output tails otherwise)."""
    done = subprocess.run(
        launch_command(script, args, processes),
        env=run_env(cache, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert done.returncode == 0, f"{script.name} {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def free_port() -> int:
    """A TCP port nobody listens on now (the OS's pick), for one rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(
    script: Path, args: list[str], node_rank: int, port: int, nodes: int = 2, launcher: str = "torchrun"
) -> list[str]:
    """One machine's launcher of a `nodes`-machine job on localhost, 1 process per machine: a torchrun agent (static
    rendezvous) or ``accelerate launch --multi_gpu --num_machines`` (which wraps torchrun; ``--cpu`` would start
    one plain, undistributed process)."""
    if launcher == "torchrun":
        start = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc_per_node", "1"]
        rendezvous = ["--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port)]
    elif launcher == "accelerate":
        start = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", str(nodes)]
        start += ["--num_processes", str(nodes), "--mixed_precision", "no", "--dynamo_backend", "no"]
        rendezvous = ["--machine_rank", str(node_rank), "--main_process_ip", "127.0.0.1"]
        rendezvous += ["--main_process_port", str(port)]
    else:
        raise ValueError(f"launcher {launcher!r}: expected 'torchrun' or 'accelerate'")
    return [*start, *rendezvous, str(script), *args]


def run_nodes(
    script: Path, args: list[str], cache: Path, nodes: int = 2, timeout: float = 300, env=None, launcher="torchrun"
):
    """Run `script` as `nodes` launchers at once (simulated machines sharing this filesystem; `launcher` as in
    `node_command`); assert every one exits 0; their (stdout, stderr) by node rank."""
    port, logs = free_port(), Path(cache) / f"nodes-{os.getpid()}-{time.time_ns()}"
    logs.mkdir(parents=True)
    agents = []
    for rank in range(nodes):
        out, err = (open(logs / f"node{rank}.{kind}", "w") for kind in ("out", "err"))  # noqa: SIM115
        command = node_command(script, args, rank, port, nodes, launcher)
        agents.append((subprocess.Popen(command, env=run_env(cache, env), stdout=out, stderr=err), out, err))
    try:
        codes = [agent.wait(timeout=timeout) for agent, _, _ in agents]
    finally:
        for agent, out, err in agents:
            if agent.poll() is None:  # timed out: its workers are not in its process group
                for worker in psutil.Process(agent.pid).children(recursive=True):
                    worker.kill()
                agent.kill()
            out.close(), err.close()
    outputs = [((logs / f"node{r}.out").read_text(), (logs / f"node{r}.err").read_text()) for r in range(nodes)]
    for rank, (code, (stdout, stderr)) in enumerate(zip(codes, outputs, strict=True)):
        assert code == 0, f"node {rank}: {script.name} {' '.join(args)}\n{stdout[-2000:]}\n{stderr[-4000:]}"
    return outputs


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


def sigkill_and_resume(
    script: Path, args: list[str], runs: Path, cache: Path, kill_at: int = 4
) -> tuple[dict, int, float]:
    """Run `script` with `args` to the end in ``runs/uninterrupted``; run it again in ``runs/killed``, SIGKILLed
    once checkpoint ``step_{kill_at}`` exists, then resumed with ``--resume_from_checkpoint latest``. Returns the
    resumed run's stage_results.json, the step it resumed from and the max weight difference of the two runs."""
    run_script(script, [*args, "--output_dir", str(runs / "uninterrupted")], cache)
    killed = runs / "killed"
    kill_after_checkpoint(
        script, [*args, "--output_dir", str(killed)], cache, killed / "checkpoints" / f"step_{kill_at}"
    )
    assert not (killed / "stage_results.json").exists()
    run_script(script, [*args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"], cache)
    recorded = complete_folder(killed)
    resumed_step = int(Path(recorded["resumed_from"]).name.split("_")[1])
    return recorded, resumed_step, max_weight_difference(killed, runs / "uninterrupted")

"""Training on several processes: 2 CPU processes over gloo (``torchrun --standalone --nproc_per_node 2``) run the
scripts as a user would, finish every stage, train the same weights as their single-process twin with gradient
accumulation, and resume after SIGKILL to the uninterrupted weights. Two torchrun agents on localhost (``--nnodes 2
--nproc_per_node 1``, static rendezvous) stand in for two machines: the same weights as the standalone run, and only
the global main process writes (an audit hook in every process records its writes, tests/subprocess_hooks).

Each run takes tens of seconds on 2 CPU cores, so the runs are module-scoped fixtures shared by the assertions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .multiprocess_support import (
    FINETUNE,
    FINETUNE_ARGS,
    PRETRAIN,
    STAGE_FILES,
    run_nodes,
    sigkill_and_resume,
)
from .multiprocess_support import complete_folder as _complete
from .multiprocess_support import max_weight_difference as _max_difference
from .multiprocess_support import run_script as _run

MASKED_ARGS = [
    "--objective", "masked", "--preset", "test", "--image_size", "64", "64", "--per_device_train_batch_size", "2",
    "--max_train_steps", "3", "--num_synthetic_samples", "16", "--num_eval_samples", "4", "--drop_path_rate", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets-cache")


@pytest.fixture(scope="module")
def finetune_twins(tmp_path_factory, cache):
    """The issue's finetune command on 2 processes, and 1 process with accumulation 2 (the same total batch)."""
    root = tmp_path_factory.mktemp("finetune")
    two = _run(FINETUNE, [*FINETUNE_ARGS, "--output_dir", str(root / "two")], cache)
    _run(FINETUNE, [*FINETUNE_ARGS, "--gradient_accumulation_steps", "2", "--output_dir", str(root / "one")], cache, 1)
    return root, two


def test_finetune_on_two_processes_finishes_and_writes_one_complete_folder(finetune_twins):
    root, done = finetune_twins
    recorded = _complete(root / "two")
    assert recorded["global_step"] == 3 and recorded["eval_after"]["abs_rel"] > 0
    resolved = recorded["resolved_recipe"]
    assert (resolved["num_processes"], resolved["per_device_train_batch_size"]) == (2, 2)
    assert (resolved["gradient_accumulation_steps"], resolved["total_train_batch_size"]) == (1, 4)
    assert "2 process(es) x 2 per device x 1 accumulation = total batch 4" in done.stderr
    assert done.stdout.count("fine-tuned checkpoint:") == 1  # only the main process reports


def test_two_processes_train_the_weights_of_one_process_with_accumulation(finetune_twins):
    root, _ = finetune_twins
    one, two = (json.loads((root / n / "stage_results.json").read_text()) for n in ("one", "two"))
    assert one["resolved_recipe"]["total_train_batch_size"] == two["resolved_recipe"]["total_train_batch_size"] == 4
    difference = _max_difference(root / "one", root / "two")
    print(f"finetune, 3 updates: max |w(2 processes x 2) - w(1 process x 2 x accumulation 2)| = {difference:.2e}")
    assert difference < 1e-5
    # the held-out evaluation, sharded over 2 processes and gathered, equals the single-process one
    for key in ("abs_rel", "rmse", "d1"):
        assert two["eval_before"][key] == pytest.approx(one["eval_before"][key], abs=1e-6)


def test_two_machines_train_the_standalone_weights_and_only_the_global_main_process_writes(finetune_twins, cache):
    """The issue's command as 2 torchrun agents (node ranks 0 and 1, 1 process each) sharing this filesystem: each
    simulated machine's process is its local main process, so a local-main write would show up twice."""
    root, _ = finetune_twins
    output, writes = root / "two-machines", root / "two-machines-writes"
    hooks = {"MESA_TEST_WRITE_LOG": str(writes), "MESA_TEST_WRITE_ROOT": str(output)}
    (out0, _), (out1, err1) = run_nodes(FINETUNE, [*FINETUNE_ARGS, "--output_dir", str(output)], cache, env=hooks)
    recorded = _complete(output)
    assert (recorded["global_step"], recorded["resolved_recipe"]["num_processes"]) == (3, 2)
    standalone, machines = load_file(root / "two" / "model.safetensors"), load_file(output / "model.safetensors")
    assert standalone.keys() == machines.keys()
    assert all(torch.equal(standalone[k], machines[k]) for k in standalone)  # bit for bit, BatchNorm statistics too
    assert out0.count("fine-tuned checkpoint:") == 1 and "fine-tuned checkpoint:" not in out1
    assert "INFO" not in err1  # mesa-hf logs on the global main process only
    logs = {p.name: p.read_text().splitlines() for p in writes.glob("writes-node*-rank*.txt")}
    assert {"writes-node0-rank0.txt", "writes-node1-rank1.txt"} <= logs.keys()
    assert [name for name, lines in logs.items() if lines] == ["writes-node0-rank0.txt"]  # node 1 wrote nothing
    written = [line.split()[-1] for line in logs["writes-node0-rank0.txt"]]
    for name in STAGE_FILES:
        assert str(output / name) in written, name


def test_two_machines_under_accelerate_launch_train_the_standalone_weights(finetune_twins, cache, tmp_path):
    """``accelerate launch --multi_gpu --num_machines 2 --machine_rank 0|1 --num_processes 2`` on this CPU host."""
    root, _ = finetune_twins
    args = [*FINETUNE_ARGS, "--output_dir", str(tmp_path / "out")]
    (out0, _), (out1, _) = run_nodes(
        FINETUNE, args, cache, env={"HF_HOME": str(tmp_path / "hf")}, launcher="accelerate"
    )
    assert _complete(tmp_path / "out")["resolved_recipe"]["num_processes"] == 2
    standalone, machines = (
        load_file(root / "two" / "model.safetensors"),
        load_file(tmp_path / "out" / "model.safetensors"),
    )
    assert all(torch.equal(standalone[k], machines[k]) for k in standalone) and standalone.keys() == machines.keys()
    assert out0.count("fine-tuned checkpoint:") == 1 and "fine-tuned checkpoint:" not in out1


def test_masked_stage_on_two_processes_equals_accumulation(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("masked")
    _run(PRETRAIN, [*MASKED_ARGS, "--output_dir", str(root / "two")], cache)
    _run(PRETRAIN, [*MASKED_ARGS, "--gradient_accumulation_steps", "2", "--output_dir", str(root / "one")], cache, 1)
    difference = _max_difference(root / "one" / "masked", root / "two" / "masked")
    print(f"masked, 3 updates: max |w(2 processes) - w(1 process, accumulation 2)| = {difference:.2e}")
    assert difference < 1e-5
    one, two = (_complete(root / n / "masked") for n in ("one", "two"))
    assert two["eval_before"]["masked_loss"] == pytest.approx(one["eval_before"]["masked_loss"], rel=1e-5)


def test_pretrain_all_on_two_processes_completes_every_stage(tmp_path, cache):
    args = [
        "--objective", "all", "--preset", "test", "--image_size", "64", "64", "--num_synthetic_samples", "8",
        "--num_eval_samples", "2", "--per_device_train_batch_size", "2", "--max_train_steps", "2",
        "--output_dir", str(tmp_path),
    ]  # fmt: skip
    done = _run(PRETRAIN, args, cache)
    for stage in ("masked", "geometric", "supervised"):
        recorded = _complete(tmp_path / stage)
        assert recorded["stage"] == stage and recorded["global_step"] == 2
        assert recorded["resolved_recipe"]["num_processes"] == 2
    config = json.loads((tmp_path / "supervised" / "config.json").read_text())
    assert [s["name"] for s in config["mesa_stages"]] == ["masked", "geometric", "supervised"]
    assert "LOAD REPORT" not in done.stderr
    # run again with --resume_from_checkpoint latest: every process skips the finished stages
    again = _run(PRETRAIN, [*args, "--resume_from_checkpoint", "latest"], cache)
    assert again.stdout.count("(already complete)") == 3


def test_sigkill_on_two_processes_resumes_to_the_uninterrupted_weights(tmp_path, cache):
    args = [*FINETUNE_ARGS, "--max_train_steps", "8", "--checkpointing_steps", "2", "--save_total_limit", "5"]
    recorded, resumed_step, difference = sigkill_and_resume(FINETUNE, args, tmp_path, cache)
    assert recorded["global_step"] == 8 and 4 <= resumed_step < 8
    print(f"2 processes, SIGKILL after step_{resumed_step}, resumed: max |w - w_uninterrupted| = {difference}")
    assert difference == 0.0

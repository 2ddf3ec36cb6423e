"""``--fsdp full_shard`` / ``--fsdp shard_grad_op`` (FSDP2, `mesa_hf.training.sharding`) on 2 CPU processes over
gloo, launched as a user would (``torchrun --standalone --nproc_per_node 2 examples/finetune.py ... --fsdp MODE``):
the same weights as DDP after 3 updates, about half of the parameters on each rank, unsharded safetensors in the
stage folder equal to the sharded DCP state, SIGKILL + ``--resume_from_checkpoint latest`` exact, bf16 (autocast)
finite, and a one-line exit 2 on a single process.

Each run takes 10-30 s on 2 CPU cores; the runs are module-scoped fixtures shared by the assertions.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mesa_hf import MeSaForDepthEstimation
from mesa_hf.training import MeSaTrainingArguments
from mesa_hf.training.sharding import FSDP_STATE_DIR, apply_fsdp, check_fsdp_possible

from .helpers import tiny_depth_model
from .multiprocess_support import (
    BATCHNORM_STATISTICS,
    FINETUNE,
    FINETUNE_ARGS,
    PRETRAIN,
    ROOT,
    complete_folder,
    max_weight_difference,
    run_script,
    sigkill_and_resume,
)

WORKER = ROOT / "tests" / "fsdp_shard_worker.py"
MODES = ("full_shard", "shard_grad_op")
ACCUMULATION = ["--gradient_accumulation_steps", "2", "--max_grad_norm", "0.1"]  # + clipping that bites


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets-cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache):
    """``runs(name, accumulation=False)``: the issue's 3-update finetune command on 2 processes, DDP ("ddp") or
    ``--fsdp name`` (checkpointing the last update), optionally with `ACCUMULATION`; each run once per module."""
    root, done = tmp_path_factory.mktemp("fsdp"), {}

    def get(name: str, accumulation: bool = False) -> Path:
        key = f"{name}-accumulation" if accumulation else name
        if key not in done:
            extra = [] if name == "ddp" else ["--fsdp", name, "--checkpointing_steps", "3"]
            extra += ACCUMULATION if accumulation else []
            get.stderr[key] = run_script(
                FINETUNE, [*FINETUNE_ARGS, *extra, "--output_dir", str(root / key)], cache
            ).stderr
            done[key] = root / key
        return done[key]

    get.stderr = {}
    return get


@pytest.mark.parametrize(
    ("mode", "accumulation"), [("full_shard", False), ("shard_grad_op", False), ("full_shard", True)]
)
def test_fsdp_trains_the_weights_of_ddp(runs, mode, accumulation):
    difference = max_weight_difference(runs("ddp", accumulation), runs(mode, accumulation))
    what = ", accumulation 2, max_grad_norm 0.1" if accumulation else ""
    print(f"finetune, 3 updates, 2 processes{what}: max |w(--fsdp {mode}) - w(DDP)| = {difference:.2e}")
    assert difference < 1e-5
    # the run was sharded (rank 0 logs its share), not replicated
    logged = re.search(
        rf"fsdp {mode}: 5 Swinv2Layer blocks .* process 0 holds \d+ of \d+ parameter elements \(([\d.]+)%\)",
        runs.stderr[f"{mode}-accumulation" if accumulation else mode],
    )
    assert logged and 40 <= float(logged.group(1)) <= 60
    recorded = complete_folder(runs(mode, accumulation))
    assert recorded["global_step"] == 3 and recorded["resolved_recipe"]["num_processes"] == 2
    # sharded: one DCP file per rank, no Accelerate model/optimizer files
    checkpoint = runs(mode, accumulation) / "checkpoints" / "step_3"
    assert sorted(p.name for p in (checkpoint / FSDP_STATE_DIR).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not list(checkpoint.glob("model*.safetensors")) and not list(checkpoint.glob("optimizer*"))


@pytest.mark.parametrize("mode", MODES)
def test_each_rank_holds_about_half_of_the_parameters(cache, mode):
    done = run_script(WORKER, [mode], cache, timeout=120)
    lines = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("FSDP_SHARD ")]
    assert sorted(line["rank"] for line in lines) == [0, 1]
    for line in sorted(lines, key=lambda line: line["rank"]):
        share = line["local"] / line["total"]
        print(f"--fsdp {mode}: rank {line['rank']} holds {line['local']} of {line['total']} parameters ({share:.1%})")
        assert 0.4 <= share <= 0.6
        assert line["blocks"] == 5 and line["units"] == 6  # every Swinv2Layer, then the whole model
    assert sum(line["local"] for line in lines) == lines[0]["total"]
    rank0 = next(line for line in lines if line["rank"] == 0)
    assert rank0["gathered_equal"] is True  # the full state dict gathered to rank 0 = the weights before sharding
    assert next(line for line in lines if line["rank"] == 1)["gathered_keys"] == 0  # cpu_offload: rank 0 only


def _dcp_model_weights(folder: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The model entries of a checkpoint's sharded DCP state, assembled on one process."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(folder / FSDP_STATE_DIR, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    return state["train"]["model"]


def test_stage_folder_holds_the_full_weights_and_loads(runs, tmp_path):
    folder = runs("full_shard")
    model, info = MeSaForDepthEstimation.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["MeSaForDepthEstimation"]
    saved, loaded = load_file(folder / "model.safetensors"), model.state_dict()
    sharded = _dcp_model_weights(folder / "checkpoints" / "step_3", tmp_path)
    assert saved.keys() == loaded.keys() == sharded.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
        assert value.dtype == torch.float32 or key.endswith("num_batches_tracked"), key
        if not key.endswith(BATCHNORM_STATISTICS):  # gathered from the shards = the sharded state after step 3
            assert torch.equal(sharded[key], value), key


def test_sigkill_under_fsdp_resumes_to_the_uninterrupted_weights(tmp_path, cache):
    args = [*FINETUNE_ARGS, "--max_train_steps", "8", "--checkpointing_steps", "2", "--save_total_limit", "5"]
    args += ["--fsdp", "full_shard"]
    recorded, resumed_step, difference = sigkill_and_resume(FINETUNE, args, tmp_path, cache)
    assert recorded["global_step"] == 8 and 4 <= resumed_step < 8
    assert (Path(recorded["resumed_from"]) / FSDP_STATE_DIR / ".metadata").is_file()
    print(f"--fsdp full_shard, SIGKILL after step_{resumed_step}, resumed: max |w - w_uninterrupted| = {difference}")
    assert difference == 0.0


def test_every_pretraining_stage_trains_under_fsdp(tmp_path, cache):
    """masked (mask token), geometric (pose network), supervised (frozen modules), with accumulation and clipping."""
    args = [
        "--objective", "all", "--preset", "test", "--image_size", "64", "64", "--num_synthetic_samples", "8",
        "--num_eval_samples", "2", "--per_device_train_batch_size", "2", "--max_train_steps", "2",
        "--gradient_accumulation_steps", "2", "--max_grad_norm", "0.5", "--fsdp", "shard_grad_op",
        "--output_dir", str(tmp_path),
    ]  # fmt: skip
    done = run_script(PRETRAIN, args, cache)
    assert done.stderr.count("fsdp shard_grad_op: 5 Swinv2Layer blocks") == 3
    for stage in ("masked", "geometric", "supervised"):
        recorded = complete_folder(tmp_path / stage)
        assert recorded["stage"] == stage and recorded["global_step"] == 2
        assert all(math.isfinite(loss) for loss in recorded["loss_history"])


def test_fsdp_on_one_process_stops_with_one_line(tmp_path, cache):
    args = [*FINETUNE_ARGS, "--fsdp", "full_shard", "--output_dir", str(tmp_path / "one")]
    done = run_script(FINETUNE, args, cache, processes=1, timeout=120, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("finetune.py: error: fsdp='full_shard'") and "has 1" in lines[0]
    assert not (tmp_path / "one").exists()


def test_bf16_under_fsdp_is_finite(runs, tmp_path, cache):
    args = [*FINETUNE_ARGS, "--max_train_steps", "2", "--fsdp", "full_shard", "--mixed_precision", "bf16"]
    run_script(FINETUNE, [*args, "--output_dir", str(tmp_path)], cache)
    recorded = complete_folder(tmp_path)
    assert recorded["global_step"] == 2
    assert all(math.isfinite(loss) for loss in recorded["loss_history"]) and len(recorded["loss_history"]) == 2
    # autocast took effect: the first loss is near, but not equal to, the fp32 one of the same update
    fp32 = complete_folder(runs("full_shard"))["first_loss"]
    print(f"--fsdp full_shard, first loss: bf16 autocast {recorded['first_loss']:.6f}, fp32 {fp32:.6f}")
    assert recorded["first_loss"] != fp32 and recorded["first_loss"] == pytest.approx(fp32, rel=0.05)
    weights = load_file(tmp_path / "model.safetensors")  # fp32 parameters (autocast, no bf16 copies)
    floating = {k: v for k, v in weights.items() if v.is_floating_point()}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in floating.values())


def test_library_refuses_fsdp_that_cannot_take_effect():
    with pytest.raises(RuntimeError, match="has 1"):
        check_fsdp_possible("full_shard", 1)
    with pytest.raises(RuntimeError, match="process group"):
        check_fsdp_possible("shard_grad_op")
    with pytest.raises(RuntimeError, match="process group"):
        apply_fsdp(tiny_depth_model(), "full_shard")
    with pytest.raises(ValueError, match="fsdp must be one of"):
        MeSaTrainingArguments(output_dir="x", fsdp="hybrid_shard")
    with pytest.raises(ValueError, match="fp16"):
        MeSaTrainingArguments(output_dir="x", fsdp="full_shard", mixed_precision="fp16")

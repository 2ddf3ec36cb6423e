"""``--streaming``: a `datasets.IterableDataset` (``lsun:`` LMDB, ``webdataset:`` tar shards) split once over ranks
and DataLoader workers, repeated until ``max_train_steps``, shuffled, and resumed exactly after SIGKILL (twice) on
2 CPU processes: the same weights as the uninterrupted run, the same samples at every step, disjoint per rank.

Each 2-process run takes tens of seconds on 2 CPU cores; the LMDB and the shards are module-scoped fixtures.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from mesa_hf.data.specs import load_dataset_spec
from mesa_hf.training import MeSaTrainingArguments
from mesa_hf.training.cli import build_parser, parse_arguments
from mesa_hf.training.streaming import SAMPLE_KEY, KeyedCollator, StreamingRows, split_skip

from .multiprocess_support import PRETRAIN, kill_after_checkpoint, max_weight_difference, run_script
from .test_lsun import make_lsun_lmdb

STEPS = 8
STREAM_ARGS = [
    "--objective", "masked", "--streaming", "--recipe", "demo", "--preset", "test", "--image_size", "64", "64",
    "--per_device_train_batch_size", "2", "--dataloader_num_workers", "2", "--max_train_steps", str(STEPS),
    "--checkpointing_steps", "1", "--save_total_limit", "50", "--drop_path_rate", "0", "--shuffle_buffer_size", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def lsun_data(tmp_path_factory):
    """An LSUN-layout LMDB of 24 good + 2 bad entries (26 one-entry shards: 13 per rank) and its webdataset
    conversion (8 tar shards of 3 images: 4 per rank, 2 per worker). Returns (lmdb path, tar folder, good keys)."""
    from mesa_hf.data.lsun import convert_lsun

    root = tmp_path_factory.mktemp("stream-data")
    path, good, _ = make_lsun_lmdb(root, num_good=24)
    convert_lsun(path, root / "tars", "webdataset", shard_size=3, progress=False)
    return path, root / "tars", set(good)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets-cache")


class _KeepImage:
    """A transform stand-in: the image's size and the rng's first draw (so the tests see the seeding)."""

    rng = None

    def __call__(self, batch: dict) -> dict:
        return {"size": [np.array(batch["image"][0].size)], "draw": [np.array(self.rng.random())]}


def _stream_keys(path: Path, rank: int, num_workers: int, skip: int = 0, batches: int = 10) -> list[list[str]]:
    ds = load_dataset_spec(f"lsun:{path}", "images", streaming=True)
    rows = StreamingRows(ds, _KeepImage(), seed=3, rank=rank, world_size=2, num_workers=num_workers, buffer_size=4)
    rows.batch_size, rows.skip_batches = 2, skip
    loader = DataLoader(rows, batch_size=2, num_workers=num_workers, collate_fn=KeyedCollator(None))
    out, batch_iter = [], iter(loader)
    for _ in range(rows.drop_batches):
        next(batch_iter)
    while len(out) < batches:
        out.append(next(batch_iter)[SAMPLE_KEY])
    del batch_iter  # closes an in-process reader's LMDB transaction before a later DataLoader forks workers
    gc.collect()
    return out


def test_split_skip_skips_whole_rounds_in_the_workers():
    assert split_skip(5, 2) == (2, 1) and split_skip(6, 2) == (3, 0)
    assert split_skip(7, 0) == (7, 0) and split_skip(0, 3) == (0, 0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_repeats_is_disjoint_per_rank_and_skipping_continues_it_exactly(lsun_data, num_workers):
    path, _, good = lsun_data
    ranks = [_stream_keys(path, rank, num_workers, batches=12) for rank in range(2)]
    per_rank = [{k for batch in keys for k in batch} for keys in ranks]
    assert not per_rank[0] & per_rank[1]  # whole shards per rank
    assert {Path(k).name.split(".")[0] for k in per_rank[0] | per_rank[1]} == good  # 12 batches: more than a pass
    # a resumed stream (5 batches consumed) yields the next batches of the uninterrupted one
    assert _stream_keys(path, 0, num_workers, skip=5, batches=7) == ranks[0][5:]
    flat = [k for batch in ranks[0] for k in batch]
    assert flat[:8] != sorted(flat[:8])  # shuffled (shard order and a 4-sample buffer), not in key order


def test_more_workers_than_shards_per_rank_is_one_clear_error(lsun_data):
    path, _, _ = lsun_data
    ds = load_dataset_spec(f"lsun:{path}", "images", streaming=True, num_shards=4)
    with pytest.raises(ValueError, match="fewer than --dataloader_num_workers 3"):
        StreamingRows(ds, _KeepImage(), seed=0, rank=0, world_size=2, num_workers=3)


def test_streaming_needs_max_train_steps(tmp_path):
    with pytest.raises(ValueError, match="give max_train_steps"):
        MeSaTrainingArguments(output_dir=str(tmp_path), streaming=True)
    assert MeSaTrainingArguments(output_dir=str(tmp_path), streaming=True, max_train_steps=3).streaming

    @dataclasses.dataclass
    class Script:
        dataset: str = "x"

    parser = build_parser(Script)
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(parser, ["--output_dir", str(tmp_path), "--streaming"])
    assert exit_info.value.code == 2


def _step_keys(run: Path) -> dict[tuple[int, int], list[str]]:
    """(step, rank) -> the keys of that update's samples, from every checkpoint's per-rank data state."""
    found = {}
    for step_dir in (run / "masked" / "checkpoints").iterdir():
        step = int(step_dir.name.split("_")[1])
        for rank in range(2):
            state = json.loads((step_dir / f"data_state_rank{rank}.json").read_text())
            assert state["batches_consumed"] == step and state["world_size"] == 2
            found[(step, rank)] = state["last_update_keys"]
    return found


@pytest.mark.parametrize("source", ["lsun", "webdataset"])
def test_sigkill_twice_resumes_a_stream_exactly_on_two_processes(lsun_data, cache, tmp_path, source):
    path, tars, good = lsun_data
    args = [*STREAM_ARGS, "--dataset", f"lsun:{path}" if source == "lsun" else f"webdataset:{tars}"]
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    run_script(PRETRAIN, [*args, "--output_dir", str(uninterrupted)], cache)
    expected = _step_keys(uninterrupted)
    assert len(expected) == 2 * STEPS
    per_rank = [{k for (_, r), keys in expected.items() if r == rank for k in keys} for rank in range(2)]
    assert not per_rank[0] & per_rank[1]  # each rank read its own shards
    assert {Path(k).name.split(".")[0] for k in per_rank[0] | per_rank[1]} == good  # 8 updates: past one pass

    checkpoints = killed / "masked" / "checkpoints"
    kill_after_checkpoint(PRETRAIN, [*args, "--output_dir", str(killed)], cache, checkpoints / "step_2")
    resumed = [*args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"]
    kill_after_checkpoint(PRETRAIN, resumed, cache, checkpoints / "step_5")
    assert not (killed / "masked" / "stage_results.json").exists()
    run_script(PRETRAIN, resumed, cache)
    recorded = json.loads((killed / "masked" / "stage_results.json").read_text())
    resumed_step = int(Path(recorded["resumed_from"]).name.split("_")[1])
    assert recorded["global_step"] == STEPS and 5 <= resumed_step < STEPS
    assert _step_keys(killed) == expected  # every update drew the same samples on each rank
    difference = max_weight_difference(killed / "masked", uninterrupted / "masked")
    print(f"{source} stream, 2 processes x 2 workers, killed twice: max |w - w_uninterrupted| = {difference}")
    assert difference < 1e-6


def _write_rgbd_folder(root: Path, num: int = 6) -> None:
    from PIL import Image

    root.mkdir()
    for i in range(num):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(root / f"image_{i}.png")
        Image.fromarray((1000 + rng.integers(0, 2000, (72, 72))).astype(np.uint16)).save(root / f"depth_{i}.png")


def _one_process_stream(script: Path, args: list[str], out: Path, cache: Path) -> dict:
    steps = ["--max_train_steps", "3", "--checkpointing_steps", "3", "--recipe", "demo", "--image_size", "64", "64"]
    common = ["--streaming", *steps, "--per_device_train_batch_size", "2", "--drop_path_rate", "0"]
    run_script(script, [*args, *common, "--output_dir", str(out)], cache, processes=1)
    return json.loads(next(out.rglob("step_3/data_state_rank0.json")).read_text())


def test_finetune_streams_an_rgbd_folder_and_pretrain_a_parquet_folder(lsun_data, cache, tmp_path):
    from mesa_hf.data.lsun import convert_lsun
    from mesa_hf.training.runner import STAGE_RESULTS_NAME

    from .multiprocess_support import FINETUNE

    _write_rgbd_folder(tmp_path / "rgbd")
    finetune = ["--model_name_or_path", "test", "--dataset", f"folder:{tmp_path / 'rgbd'}"]
    state = _one_process_stream(FINETUNE, finetune, tmp_path / "finetune", cache)
    assert state["batches_consumed"] == 3 and state["world_size"] == 1 and state["num_shards"] == 6
    assert all(Path(k).name.startswith("image_") for k in state["last_update_keys"])
    assert json.loads((tmp_path / "finetune" / STAGE_RESULTS_NAME).read_text())["global_step"] == 3

    path, _, good = lsun_data
    convert_lsun(path, tmp_path / "parquet", "parquet", shard_size=3, progress=False)
    pretrain = ["--objective", "masked", "--preset", "test", "--dataset", f"parquet:{tmp_path / 'parquet'}"]
    state = _one_process_stream(PRETRAIN, pretrain, tmp_path / "pretrain", cache)
    assert state["batches_consumed"] == 3 and state["num_shards"] == 8
    assert {Path(k).name.split(".")[0] for k in state["last_update_keys"]} <= good


def test_data_state_round_trips_and_refuses_another_layout(lsun_data, tmp_path):
    from mesa_hf.training.runner import _stream_or_table
    from mesa_hf.training.streaming import load_data_state, save_data_state

    path, _, _ = lsun_data
    ds = load_dataset_spec(f"lsun:{path}", "images", streaming=True)
    rows = StreamingRows(ds, _KeepImage(), seed=1, rank=1, world_size=2, num_workers=2)
    rows.batch_size = 2
    save_data_state(tmp_path, rows, 7, ["a.webp", "b.webp"])
    assert json.loads((tmp_path / "data_state_rank1.json").read_text())["last_update_keys"] == ["a.webp", "b.webp"]
    assert load_data_state(tmp_path, rows) == 7 and (rows.skip_batches, rows.drop_batches) == (7, 1)
    other = StreamingRows(ds, _KeepImage(), seed=1, rank=1, world_size=2, num_workers=1)
    other.batch_size = 2
    with pytest.raises(ValueError, match="streamed with num_workers=2, this run has 1"):
        load_data_state(tmp_path, other)
    with pytest.raises(FileNotFoundError, match=r"data_state_rank0\.json"):
        load_data_state(tmp_path, StreamingRows(ds, _KeepImage(), seed=1, rank=0, world_size=2))
    with pytest.raises(ValueError, match="train it with --streaming"):
        _stream_or_table(ds, False, "masked")

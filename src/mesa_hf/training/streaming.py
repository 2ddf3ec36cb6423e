"""Streaming training data (``--streaming``): a `datasets.IterableDataset` read once per rank, repeated, shuffled,
and resumed exactly.

`StreamingRows` turns a stage's raw `datasets.IterableDataset` (``lsun:``, ``webdataset:``, ``parquet:``, image
folders, ...) into the stream one process trains on:

- **sharding**: ``IterableDataset.shard(world_size, rank, contiguous=False)`` gives each rank every
  ``world_size``-th shard, the same shards in every pass (`split_dataset_by_node` would reassign the shards after
  each pass's shard shuffle); DataLoader workers then split the rank's shards (datasets does that per worker).
  Nothing is split again: the loop does not hand the DataLoader to ``accelerator.prepare`` (Accelerate would
  dispatch from rank 0 or shard the batches a second time). Needs ``num_shards >= world_size x workers``.
- **equal steps**: each worker repeats its part forever (pass p reshuffled with ``seed + p``), so every rank draws
  batches until the loop stops at ``max_train_steps``; no rank runs out first and no collective hangs.
- **shuffle**: ``IterableDataset.shuffle(seed, buffer_size, max_buffer_input_shards=1)`` (the shard order, and a
  sample buffer fed by one shard at a time).
- **exact resume**: the stream is a pure function of (seed, rank, world size, workers, batch size), the DataLoader
  takes batch b from worker ``b % num_workers``, and augmentations are seeded by (seed, pass, sample key). A
  checkpoint records the batches each rank consumed (`save_data_state`, one file per rank); on resume each worker
  skips whole rounds of them as undecoded rows (`skip_batches`), and the loop drops the < num_workers batches left
  (`split_skip`). Nothing is taken from
  datasets' ``state_dict`` (which loses the shuffle buffer, and raises IndexError with shuffle + 2 workers in
  datasets 5.2).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

SAMPLE_KEY = "sample_key"
"""Row / batch entry holding each sample's key (its image path, else the hash of its bytes); not a model input."""
DATA_STATE_NAME = "data_state_rank{rank}.json"
DEFAULT_SHUFFLE_BUFFER = 1000


def sample_key(row: dict[str, Any]) -> str:
    """A stable key of an undecoded row: the path of its first image-like column (``{"bytes", "path"}``), else
    the SHA-1 of that column's bytes."""
    for value in row.values():
        if isinstance(value, dict) and ("bytes" in value or "path" in value):
            if value.get("path"):
                return str(value["path"])
            if value.get("bytes") is not None:
                return hashlib.sha1(value["bytes"]).hexdigest()
    raise ValueError(f"streaming: a row without an image column to key it by (columns {sorted(row)})")


def key_seed(key: str) -> int:
    """A 60-bit integer of `key` (for ``np.random.default_rng([seed, pass, key_seed(key)])``)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:15], 16)


def split_skip(batches: int, num_workers: int) -> tuple[int, int]:
    """Skipping the first `batches` batches of a DataLoader whose batch b comes from worker ``b % num_workers``:
    (batches each worker skips undecoded, batches the loop then drops). A new DataLoader starts at worker 0, so
    each worker skips whole rounds and the loop drops the ``batches % num_workers`` left (< num_workers)."""
    workers = max(num_workers, 1)
    return batches // workers, batches % workers


class StreamingRows(torch.utils.data.IterableDataset):
    """One rank's endless, shuffled, transformed stream of a `datasets.IterableDataset`.

    Args:
        dataset: the raw stream (its features decode the images; rows are read undecoded and decoded here).
        transform: a stage transform (``transform.rng`` is set per sample; called on ``{column: [value]}``).
        seed: seeds the shuffle (``seed + pass``) and the augmentations (seed, pass, sample key).
        rank, world_size: this process and the number of processes.
        num_workers: the DataLoader's workers (each must get at least one shard of the rank's part).
        buffer_size: shuffle buffer in samples.
        normalization: optional row -> row map after the transform (`stage_data.PixelNormalization`).
    """

    def __init__(
        self,
        dataset,
        transform: Callable,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int = 0,
        buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
        normalization: Callable | None = None,
    ):
        if buffer_size < 1:
            raise ValueError(f"streaming: the shuffle buffer must be >= 1 sample, got {buffer_size}")
        self.features = dataset.features
        self.num_shards = dataset.num_shards
        shards_per_rank = self.num_shards // world_size
        if max(num_workers, 1) > shards_per_rank:
            raise ValueError(
                f"streaming: {self.num_shards} shards give each of {world_size} processes {shards_per_rank}, fewer "
                f"than --dataloader_num_workers {max(num_workers, 1)}; use fewer workers or more shards"
            )
        # the rank's shards are fixed (every world_size-th), then shuffled among themselves pass after pass
        part = dataset.decode(False).shard(num_shards=world_size, index=rank, contiguous=False)
        # one input shard at a time: with datasets' multi-shard buffer (max_buffer_input_shards=10) one of two
        # 2-process resumes drew a sample elsewhere, probably the shared-epoch race `_shuffled` now avoids (not
        # re-measured with 10); the IndexError of shuffle + 2 workers + load_state_dict in datasets 5.2 is in that
        # path too
        self._part, self.buffer_size = part, buffer_size
        self.dataset = self._shuffled(0, seed)
        self.transform, self.normalization = transform, normalization
        self.seed, self.rank, self.world_size, self.num_workers = int(seed), rank, world_size, num_workers
        self.batch_size = 1  # set by the training loop (rows to skip per skipped batch)
        self.skip_batches = 0  # batches this rank already consumed (set on resume)

    @property
    def drop_batches(self) -> int:
        """Batches the training loop drops from a resumed stream before training (see `split_skip`)."""
        return split_skip(self.skip_batches, self.num_workers)[1]

    def describe(self) -> str:
        return (
            f"streaming: {self.num_shards} shards, rank {self.rank} of {self.world_size} reads every "
            f"{self.world_size}-th shard ({self.dataset.num_shards}), "
            f"{max(self.num_workers, 1)} reader(s), skipping {self.skip_batches} consumed batches"
        )

    def _shuffled(self, stream_pass: int, seed: int | None = None):
        """The rank's part shuffled for pass `stream_pass` with seed ``seed + stream_pass``.

        A new dataset per pass, never `set_epoch`: datasets keeps the epoch in a torch tensor in shared memory,
        which forked DataLoader workers share, so one worker's `set_epoch` would race with another's pass."""
        seed = self.seed if seed is None else seed
        return self._part.shuffle(seed=seed + stream_pass, buffer_size=self.buffer_size, max_buffer_input_shards=1)

    def _raw_rows(self) -> Iterator[tuple[int, dict]]:
        """(pass, undecoded row) of this worker's part, pass after pass."""
        stream_pass = 0
        while True:
            count = 0
            for row in self.dataset if stream_pass == 0 else self._shuffled(stream_pass):
                count += 1
                yield stream_pass, row
            if count == 0:
                raise ValueError(f"streaming: a reader of rank {self.rank} got no samples (too few shards or rows)")
            stream_pass += 1

    def _transformed(self, stream_pass: int, row: dict) -> dict[str, Any]:
        key = sample_key(row)
        decoded = self.features.decode_example(row)
        self.transform.rng = np.random.default_rng([self.seed, stream_pass, key_seed(key)])
        out = self.transform({column: [value] for column, value in decoded.items()})
        out = {column: values[0] for column, values in out.items()}
        if self.normalization is not None:
            out = self.normalization(out)
        out[SAMPLE_KEY] = key
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        workers = info.num_workers if info is not None else 1
        to_skip = split_skip(self.skip_batches, workers)[0] * self.batch_size
        for stream_pass, row in self._raw_rows():
            if to_skip:
                to_skip -= 1
                continue
            yield self._transformed(stream_pass, row)


class KeyedCollator:
    """`collate` over the rows, plus ``batch[SAMPLE_KEY]``: the list of the rows' keys (the loop pops it)."""

    def __init__(self, collate: Callable | None):
        self.collate = collate if collate is not None else torch.utils.data.default_collate

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [row.pop(SAMPLE_KEY) for row in rows]
        return {**self.collate(rows), SAMPLE_KEY: keys}


def data_state_path(checkpoint: str | Path, rank: int) -> Path:
    return Path(checkpoint) / DATA_STATE_NAME.format(rank=rank)


def save_data_state(checkpoint: str | Path, rows: StreamingRows, batches: int, last_keys: list[str]) -> None:
    """This rank's data-loader state in ``checkpoint/data_state_rank{R}.json``: the layout the stream depends on,
    `batches` consumed, and the keys of the samples of the last update."""
    state = {
        "rank": rows.rank,
        "world_size": rows.world_size,
        "num_workers": rows.num_workers,
        "batch_size": rows.batch_size,
        "seed": rows.seed,
        "num_shards": rows.num_shards,
        "batches_consumed": int(batches),
        "last_update_keys": list(last_keys),
    }
    path = data_state_path(checkpoint, rows.rank)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def load_data_state(checkpoint: str | Path, rows: StreamingRows) -> int:
    """The batches this rank consumed up to `checkpoint` (and sets ``rows.skip_batches``).

    Raises:
        FileNotFoundError: no state of this rank (not a streaming checkpoint, or more processes than it had).
        ValueError: the processes, workers, batch size, seed or shards differ from the checkpoint's (the stream
            would be another one).
    """
    path = data_state_path(checkpoint, rows.rank)
    if not path.is_file():
        raise FileNotFoundError(f"resume_from_checkpoint: {checkpoint} has no {path.name} (not a --streaming run?)")
    state = json.loads(path.read_text())
    for name in ("world_size", "num_workers", "batch_size", "seed", "num_shards"):
        if state[name] != getattr(rows, name):
            raise ValueError(
                f"resume_from_checkpoint: {checkpoint} streamed with {name}={state[name]}, this run has "
                f"{getattr(rows, name)}; resume a --streaming run with the same processes, workers, batch, seed, data"
            )
    rows.skip_batches = int(state["batches_consumed"])
    return rows.skip_batches


__all__ = [
    "DATA_STATE_NAME",
    "SAMPLE_KEY",
    "KeyedCollator",
    "StreamingRows",
    "load_data_state",
    "sample_key",
    "save_data_state",
    "split_skip",
]

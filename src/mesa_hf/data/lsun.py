"""LSUN as released: one LMDB per category (``bedroom_train_lmdb/`` holding ``data.mdb`` + ``lock.mdb``), keys
40-hex-digit ASCII image ids, values encoded image bytes (WebP for the released sets, JPEG in older copies).

:func:`load_lsun_dataset` reads one such LMDB or a folder of them as an ``images``-kind dataset (column ``image``):
an `IterableDataset` by default (the path for millions of images), a map-style `Dataset` with ``streaming=False``.

**Sharding.** The keys of every LMDB are scanned once (keys only, no values) and cut into ``num_shards`` contiguous
key ranges of equal size (±1 entry; a range may run across two LMDBs). The ranges are the ``gen_kwargs`` list of
``IterableDataset.from_generator``, so ``datasets.distributed.split_dataset_by_node`` gives each rank its own ranges
and DataLoader workers split a rank's ranges again: ranks × workers read disjoint samples, each exactly once.

**Lazy handles.** An LMDB is opened read-only (no lock file written) inside the process that reads it, on its first
range there, and kept open for that process. The datasets hold only paths, so no handle is ever pickled, and a
forked DataLoader worker closes its copies of the parent's handles right after the fork (``os.register_at_fork``)
and opens its own.

**Bad entries.** An empty value or bytes Pillow cannot decode completely are skipped, never raised: each is logged
(logger ``mesa_hf.data``, the first `bad_entries.MAX_LOGGED_BAD_ENTRIES` per process), each range ends with a one-line
summary when it had any, and :class:`BadEntries` counts them (``ds.bad_entries`` on an iterable dataset, for the
reading done in this process; ``ds.skipped_invalid`` on a map-style one).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .bad_entries import BadEntries, check_image_bytes, log_bad_entry
from .columns import IMAGE_FEATURES

logger = logging.getLogger("mesa_hf.data")

LMDB_DATA_FILE = "data.mdb"
SHARD_MULTIPLE = 64
"""The default shard count is rounded up to a multiple of this (8 ranks × 8 workers), so that the usual
ranks × workers products divide it and `split_dataset_by_node` splits by shard."""
DEFAULT_SHARD_ENTRIES = 10_000


def _import_lmdb():
    try:
        import lmdb
    except ImportError as err:
        raise ImportError("reading LSUN LMDBs needs the lmdb package: pip install 'mesa-hf[lsun]'") from err
    return lmdb


# ---------------------------------------------------------------- finding and opening LMDBs


def find_lmdbs(path: str | Path) -> list[Path]:
    """The LMDB folders of `path`: the folder itself when it holds ``data.mdb`` (a ``data.mdb`` file names its
    folder), else its sub-folders that do (sorted by name, one per category).

    Raises:
        FileNotFoundError: `path` does not exist. ValueError: neither `path` nor a sub-folder is an LMDB.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such LSUN LMDB folder")
    if path.is_file() and path.name == LMDB_DATA_FILE:
        path = path.parent
    if (path / LMDB_DATA_FILE).is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / LMDB_DATA_FILE).is_file()) if path.is_dir() else []
    if not found:
        raise ValueError(
            f"{path}: not an LSUN LMDB (no {LMDB_DATA_FILE} in it or in a sub-folder); pass a category folder such "
            "as bedroom_train_lmdb/ or a folder of them"
        )
    return found


_ENVIRONMENTS: dict[str, object] = {}
"""This process's open LMDB environments by folder (read-only, no lock file)."""
_OPENING = threading.Lock()
"""Serialises `open_lmdb`: datasets' ``shuffle()`` reads up to 10 shards at once from threads, and a second
``lmdb.open`` of a folder in one process raises."""


def _close_inherited_environments() -> None:
    """In a forked child (a DataLoader worker): close the copies of the parent's handles, which LMDB forbids using
    after a fork and py-lmdb counts as "already open", so that the child opens its own."""
    for env in _ENVIRONMENTS.values():
        with contextlib.suppress(Exception):  # a broken inherited handle must not stop the worker
            env.close()
    _ENVIRONMENTS.clear()
    global _OPENING
    _OPENING = threading.Lock()  # a lock held by another thread of the parent would never be released here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_environments)


def open_lmdb(path: str | Path):
    """A read-only `lmdb.Environment` of the LMDB folder `path`, opened once per process: a forked child closes the
    parent's copies and opens its own; handles are never pickled (the datasets only hold paths). No lock file is
    written, so a read-only copy of the data works.

    Raises:
        ValueError: `path` is not a readable LMDB.
    """
    with _OPENING:
        return _open_lmdb(path)


def _open_lmdb(path: str | Path):
    env = _ENVIRONMENTS.get(str(path))
    if env is None:
        lmdb = _import_lmdb()
        try:
            env = lmdb.open(
                str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1, subdir=True
            )
        except lmdb.Error as err:
            raise ValueError(f"{path}: not a readable LMDB ({err})") from err
        _ENVIRONMENTS[str(path)] = env
    return env


def lmdb_num_entries(path: str | Path) -> int:
    """Number of entries of an LMDB, from its header (no scan)."""
    return int(open_lmdb(path).stat()["entries"])


def iter_lmdb_items(path: str | Path, start: bytes | None = None, stop: bytes | None = None):
    """(key, value) pairs of an LMDB in key order, from `start` (inclusive, None = the first key) to `stop`
    (exclusive, None = the end). Values are the stored bytes."""
    env = open_lmdb(path)
    with env.begin(buffers=False) as txn:
        cursor = txn.cursor()
        positioned = cursor.set_range(start) if start is not None else cursor.first()
        if not positioned:
            return
        for key, value in cursor.iternext(keys=True, values=True):
            if stop is not None and key >= stop:
                return
            yield key, value


# ---------------------------------------------------------------- key-range shards


@dataclass(frozen=True)
class KeyRange:
    """Keys ``start <= key < stop`` of the LMDB folder `lmdb` (None = open end); `num_entries` of them."""

    lmdb: str
    start: bytes | None
    stop: bytes | None
    num_entries: int


@dataclass(frozen=True)
class LsunShard:
    """One unit of work: consecutive key ranges (usually one; two or more where a shard spans LMDBs)."""

    ranges: tuple[KeyRange, ...]

    @property
    def num_entries(self) -> int:
        return sum(r.num_entries for r in self.ranges)


def default_num_shards(total: int, shard_entries: int = DEFAULT_SHARD_ENTRIES) -> int:
    """About `shard_entries` entries per shard, rounded up to a multiple of :data:`SHARD_MULTIPLE`, at most one
    shard per entry."""
    wanted = math.ceil(total / shard_entries / SHARD_MULTIPLE) * SHARD_MULTIPLE
    return max(1, min(total, wanted))


def plan_shards(lmdbs: list[Path], num_shards: int | None = None) -> list[LsunShard]:
    """Cut the keys of `lmdbs` (in order) into `num_shards` contiguous shards of equal size (±1 entry).

    One pass over the keys (values are not read). `num_shards` defaults to :func:`default_num_shards`.
    """
    counts = [lmdb_num_entries(p) for p in lmdbs]
    total = sum(counts)
    if total == 0:
        raise ValueError(f"{', '.join(map(str, lmdbs))}: empty dataset, the LMDB has no entries")
    if num_shards is None:
        num_shards = default_num_shards(total)
    if not 1 <= num_shards <= total:
        raise ValueError(f"num_shards must be between 1 and the {total} entries, got {num_shards}")
    # shard s holds global entries [bounds[s], bounds[s + 1])
    bounds = [s * total // num_shards for s in range(num_shards + 1)]
    cut_points = set(bounds[1:-1])
    began = time.perf_counter()
    cut_keys: dict[int, bytes] = {}  # global position of a cut -> the key there
    starts = [sum(counts[:i]) for i in range(len(lmdbs) + 1)]  # global position of each LMDB's first entry
    for path, offset, count in zip(lmdbs, starts, counts):
        wanted = sorted(c - offset for c in cut_points if offset < c < offset + count)
        if not wanted:
            continue
        with open_lmdb(path).begin(buffers=False) as txn:
            targets = iter(wanted)
            target = next(targets)
            for position, key in enumerate(txn.cursor().iternext(keys=True, values=False)):
                if position == target:
                    cut_keys[offset + position] = key
                    target = next(targets, None)
                    if target is None:
                        break
    logger.info(
        "%d LSUN entries in %d LMDB(s) cut into %d shards in %.1f s",
        total,
        len(lmdbs),
        num_shards,
        time.perf_counter() - began,
    )
    shards = []
    for first, last in itertools.pairwise(bounds):
        ranges = []
        for path, lmdb_first, lmdb_end in zip(lmdbs, starts[:-1], starts[1:]):
            begin, end = max(first, lmdb_first), min(last, lmdb_end)
            if begin < end:
                start_key = None if begin == lmdb_first else cut_keys[begin]
                stop_key = None if end == lmdb_end else cut_keys[end]
                ranges.append(KeyRange(str(path), start_key, stop_key, end - begin))
        shards.append(LsunShard(tuple(ranges)))
    return shards


# ---------------------------------------------------------------- rows


def _range_rows(key_range: KeyRange, report: BadEntries | None) -> Iterator[dict]:
    category = Path(key_range.lmdb).name
    skipped = 0
    for key, value in iter_lmdb_items(key_range.lmdb, key_range.start, key_range.stop):
        name = key.decode("ascii", errors="replace")
        try:
            extension, _ = check_image_bytes(value)
        except ValueError as err:
            skipped += 1
            log_bad_entry(report, f"{category}/{name}", str(err))
            continue
        yield {"image": {"bytes": value, "path": f"{category}/{name}.{extension}"}}
    if skipped:
        logger.warning(
            "%s: skipped %d bad of %d entries in keys [%s, %s)",
            category,
            skipped,
            key_range.num_entries,
            (key_range.start or b"").decode("ascii", errors="replace") or "first",
            (key_range.stop or b"").decode("ascii", errors="replace") or "end",
        )


def lsun_rows(shards: list[LsunShard], report: BadEntries | None = None, stamps=None) -> Iterator[dict]:
    """``images``-kind rows (``{"image": {"bytes", "path": "<category>/<key>.<ext>"}}``) of `shards`, bad entries
    skipped and counted in `report`. `stamps` (the LMDBs' data file size and mtime) only feed datasets' cache
    fingerprint."""
    for shard in shards:
        for key_range in shard.ranges:
            yield from _range_rows(key_range, report)


@dataclass(frozen=True)
class LsunIndex:
    """What :func:`load_lsun_dataset` found: the LMDB folders and the shards (sizes before bad entries)."""

    lmdbs: tuple[str, ...]
    shards: tuple[LsunShard, ...]

    @property
    def num_entries(self) -> int:
        return sum(s.num_entries for s in self.shards)


def _file_stamp(path: Path) -> tuple[int, int]:
    st = (path / LMDB_DATA_FILE).stat()
    return st.st_size, st.st_mtime_ns


def load_lsun_dataset(
    path: str | Path,
    *,
    streaming: bool = True,
    num_shards: int | None = None,
    cache_dir: str | None = None,
):
    """LSUN LMDB(s) as an ``images``-kind dataset (one column ``image``).

    Args:
        path: one category LMDB folder (``data.mdb`` inside) or a folder of them.
        streaming: True (default): a `datasets.IterableDataset` of ``num_shards`` shards that decodes lazily;
            False: a map-style `datasets.Dataset` (the images' bytes copied into the Arrow cache; small sets only).
        num_shards: key-range shards (default :func:`default_num_shards`: ~10k entries each, a multiple of 64);
            choose a multiple of ranks × DataLoader workers.
        cache_dir: datasets cache of the map-style table.

    Returns:
        The dataset with ``.lsun_index`` (:class:`LsunIndex`) and either ``.bad_entries`` (:class:`BadEntries`,
        iterable) or ``.skipped_invalid`` (int, map-style).
    """
    from .loaders import build_dataset

    lmdbs = find_lmdbs(path)
    index = LsunIndex(tuple(map(str, lmdbs)), tuple(plan_shards(lmdbs, num_shards)))
    source = str(path)
    if streaming:
        from datasets import IterableDataset

        report = BadEntries()
        ds = IterableDataset.from_generator(
            lsun_rows, features=IMAGE_FEATURES, gen_kwargs={"shards": list(index.shards), "report": report}
        )
        ds.bad_entries = report
    else:
        gen_kwargs = {"shards": list(index.shards), "stamps": tuple(_file_stamp(p) for p in lmdbs)}
        ds = build_dataset(
            lsun_rows,
            gen_kwargs,
            IMAGE_FEATURES,
            num_candidates=index.num_entries,
            source=source,
            cache_dir=cache_dir,
        )
    ds.lsun_index = index
    return ds


# ---------------------------------------------------------------- conversion to shards


@dataclass
class LsunConversion:
    """What :func:`convert_lsun` wrote: `shards` (paths), `num_written` images, `bad_entries` skipped."""

    shards: list[Path]
    num_written: int
    bad_entries: BadEntries


def convert_lsun(
    path: str | Path,
    out_dir: str | Path,
    format: str = "webdataset",
    *,
    shard_size: int = DEFAULT_SHARD_ENTRIES,
    max_images: int | None = None,
    progress: bool = True,
) -> LsunConversion:
    """Copy the images of LSUN LMDB(s) into webdataset tar shards (members ``{key}.webp`` / ``.jpg``, the sniffed
    format) or parquet shards (an ``image`` column), `shard_size` images per shard, in key order.

    The bytes are copied unchanged; bad entries (empty or undecodable) are skipped and counted. The shards are
    written into ``<out_dir>.partial`` (each as ``.tmp``, renamed when complete), and that folder is renamed to
    `out_dir` at the end, so `out_dir` only ever holds a finished conversion.

    Raises:
        ValueError: `out_dir` exists and is not empty, a bad format or size; see :func:`find_lmdbs`.
    """
    from tqdm.auto import tqdm

    from .shards import ShardWriter

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    lmdbs = find_lmdbs(path)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir}: already exists and is not an empty folder; choose a new output folder")
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        import shutil

        shutil.rmtree(staging)  # left by an interrupted conversion
    writer = ShardWriter(staging, format, shard_size, prefix="lsun")
    report = BadEntries()
    total = sum(lmdb_num_entries(p) for p in lmdbs)
    bar = tqdm(total=min(total, max_images or total), unit="img", desc=f"lsun -> {format}", disable=not progress)
    try:
        for lmdb_path in lmdbs:
            for key, value in iter_lmdb_items(lmdb_path):
                if max_images is not None and writer.num_written >= max_images:
                    break
                name = key.decode("ascii", errors="replace")
                try:
                    extension, _ = check_image_bytes(value)
                except ValueError as err:
                    log_bad_entry(report, f"{lmdb_path.name}/{name}", str(err))
                    bar.set_postfix(bad=report.count)
                    continue
                writer.write(name, value, extension)
                bar.update(1)
        shards = writer.close()
    finally:
        bar.close()
    if writer.num_written == 0:
        raise ValueError(f"{path}: empty dataset, no decodable image in {total} entries ({report})")
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    os.replace(staging, out_dir)
    shards = [out_dir / p.name for p in shards]
    if report.count:
        logger.warning("%s: skipped %s", path, report)
    return LsunConversion(shards, writer.num_written, report)

"""Image shards for the ``images`` kind: webdataset tar shards and parquet shards, written and read.

A **webdataset** folder holds ``*.tar`` shards; each sample is the tar members sharing a key (the member name up to
its first dot), and its image is the member whose extension is an image's (``.webp``, ``.jpg``, ...), whatever the
extension (an LMDB may mix WebP and JPEG, which datasets' own ``webdataset`` builder, typed from the first
samples, does not take). A **parquet** folder holds ``*.parquet`` shards with one ``image`` column (the
``datasets.Image()`` struct of bytes and path), readable by ``datasets.load_dataset("parquet")``.

:class:`ShardWriter` writes either kind, each shard to a temporary name and renamed when complete.
:func:`load_webdataset_images` / :func:`load_parquet_images` read them back: an `IterableDataset` with one shard per
file (what `split_dataset_by_node` and DataLoader workers split), or a map-style `Dataset`.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

from .bad_entries import BadEntries, check_image_bytes, log_bad_entry
from .columns import IMAGE_FEATURES
from .folder import IMAGE_EXTENSIONS

SHARD_FORMATS = ("webdataset", "parquet")
_SUFFIX = {"webdataset": ".tar", "parquet": ".parquet"}
PARQUET_ROW_GROUP = 1000
"""Rows per parquet row group (the unit of datasets' ``reshard()``)."""


class ShardWriter:
    """Writes ``(key, image bytes, extension)`` samples into numbered shards ``{prefix}-{index:05d}.{tar|parquet}``
    of `shard_size` samples in `out_dir`. Each shard is written as ``<name>.tmp`` and renamed when closed."""

    def __init__(self, out_dir: str | Path, format: str, shard_size: int, prefix: str = "shard"):
        if format not in SHARD_FORMATS:
            raise ValueError(f"unknown shard format {format!r}; expected one of {SHARD_FORMATS}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.out_dir, self.format, self.shard_size, self.prefix = Path(out_dir), format, shard_size, prefix
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []
        self.num_written = 0
        self._rows: list[dict] = []
        self._in_shard = 0
        self._tar: tarfile.TarFile | None = None
        self._parquet = None
        self._tmp: Path | None = None

    def write(self, key: str, data: bytes, extension: str) -> None:
        if self._tmp is None:
            self._open()
        name = f"{key}.{extension}"
        if self.format == "webdataset":
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            self._tar.addfile(info, io.BytesIO(data))
        else:
            self._rows.append({"image": {"bytes": data, "path": name}})
            if len(self._rows) >= PARQUET_ROW_GROUP:
                self._flush_rows()
        self._in_shard += 1
        self.num_written += 1
        if self._in_shard >= self.shard_size:
            self._close_shard()

    def close(self) -> list[Path]:
        """Finish the open shard; returns every shard written."""
        if self._tmp is not None:
            self._close_shard()
        return self.paths

    def _open(self) -> None:
        final = self.out_dir / f"{self.prefix}-{len(self.paths):05d}{_SUFFIX[self.format]}"
        self._tmp = final.with_name(final.name + ".tmp")
        if self.format == "webdataset":
            self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - closed per shard
        else:
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self._tmp, IMAGE_FEATURES.arrow_schema)

    def _flush_rows(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._parquet.write_table(pa.Table.from_pylist(self._rows, schema=IMAGE_FEATURES.arrow_schema))
            self._rows = []

    def _close_shard(self) -> None:
        if self.format == "webdataset":
            self._tar.close()
            self._tar = None
        else:
            self._flush_rows()
            self._parquet.close()
            self._parquet = None
        final = self._tmp.with_name(self._tmp.name[: -len(".tmp")])
        os.replace(self._tmp, final)
        self.paths.append(final)
        self._tmp, self._in_shard = None, 0


# ---------------------------------------------------------------- reading


def find_shards(path: str | Path, suffix: str) -> list[str]:
    """Shard files: `path` itself (a file), a glob, or the ``*<suffix>`` files under a folder (sorted)."""
    text = str(path)
    if any(c in text for c in "*?["):
        files = sorted(glob.glob(text))
    elif Path(text).is_file():
        files = [text]
    elif Path(text).is_dir():
        files = sorted(str(p) for p in Path(text).rglob(f"*{suffix}"))
    else:
        raise FileNotFoundError(f"{path}: no such file or folder of {suffix} shards")
    if not files:
        raise ValueError(f"{path}: empty dataset, no {suffix} shards found")
    return files


def _sample_key(member_name: str) -> tuple[str, str]:
    """webdataset's split of a member name: (key = path up to the basename's first dot, extension after it)."""
    folder, _, base = member_name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _tar_samples(tar_path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample of a tar shard, read sequentially."""
    key, fields = None, {}
    with tarfile.open(tar_path, "r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            sample, extension = _sample_key(member.name)
            if key is not None and sample != key:
                yield key, fields
                fields = {}
            key = sample
            fields[extension] = tar.extractfile(member).read()
    if key is not None:
        yield key, fields


_IMAGE_SUFFIXES = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def webdataset_rows(shards: list[str], report: BadEntries | None = None) -> Iterator[dict]:
    """``images``-kind rows of webdataset tar shards; a sample without a decodable image is skipped and counted."""
    for tar_path in shards:
        name = Path(tar_path).name
        for key, fields in _tar_samples(tar_path):
            extension = next((e for e in fields if e.rsplit(".", 1)[-1] in _IMAGE_SUFFIXES), None)
            if extension is None:
                log_bad_entry(report, f"{name}/{key}", f"no image member (has {sorted(fields)})")
                continue
            try:
                check_image_bytes(fields[extension])
            except ValueError as err:
                log_bad_entry(report, f"{name}/{key}", str(err))
                continue
            yield {"image": {"bytes": fields[extension], "path": f"{key}.{extension}"}}


def _count_tar_samples(tar_path: str) -> int:
    with tarfile.open(tar_path, "r:*") as tar:
        return len({_sample_key(m.name)[0] for m in tar.getmembers() if m.isfile()})


def load_webdataset_images(path: str | Path, *, streaming: bool = True, cache_dir: str | None = None):
    """A folder (or glob, or file) of webdataset ``.tar`` shards as an ``images``-kind dataset.

    Returns:
        streaming: an `IterableDataset` with one shard per tar file and ``.bad_entries`` (:class:`BadEntries`);
        else a map-style `Dataset` with ``.skipped_invalid``.
    """
    from .loaders import build_dataset

    shards = find_shards(path, ".tar")
    if streaming:
        from datasets import IterableDataset

        report = BadEntries()
        ds = IterableDataset.from_generator(
            webdataset_rows, features=IMAGE_FEATURES, gen_kwargs={"shards": shards, "report": report}
        )
        ds.bad_entries = report
        return ds
    stamps = [(os.stat(s).st_size, os.stat(s).st_mtime_ns) for s in shards]
    total = sum(_count_tar_samples(s) for s in shards)
    return build_dataset(
        _webdataset_rows_stamped,
        {"shards": shards, "stamps": tuple(stamps)},
        IMAGE_FEATURES,
        num_candidates=total,
        source=str(path),
        cache_dir=cache_dir,
    )


def _webdataset_rows_stamped(shards: list[str], stamps) -> Iterator[dict]:
    """`webdataset_rows` with the shards' (size, mtime) in the arguments, for datasets' cache fingerprint."""
    yield from webdataset_rows(shards)


def load_parquet_images(path: str | Path, *, streaming: bool = True, cache_dir: str | None = None):
    """A folder (or glob, or file) of parquet shards with an ``image`` column as an ``images``-kind dataset
    (`datasets.load_dataset("parquet")`; streaming: one shard per file)."""
    from datasets import load_dataset

    files = find_shards(path, ".parquet")
    ds = load_dataset("parquet", data_files=files, split="train", streaming=streaming, cache_dir=cache_dir)
    if "image" not in (ds.features or {}):
        raise ValueError(f"{path}: parquet shards without an 'image' column (columns {list(ds.features or {})})")
    ds = ds.select_columns(["image"])
    return ds.cast(IMAGE_FEATURES)

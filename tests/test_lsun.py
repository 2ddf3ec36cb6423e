"""LSUN LMDBs as released (40-hex keys, WebP values) through the ``lsun:`` spec, its shards over ranks and workers,
and ``mesa-hf convert lsun`` to webdataset / parquet shards read back through ``webdataset:`` / ``parquet:``."""

from __future__ import annotations

import hashlib
import io
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

lmdb = pytest.importorskip("lmdb")

from datasets import Image as ImageFeature  # noqa: E402
from datasets import IterableDataset  # noqa: E402
from datasets.distributed import split_dataset_by_node  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from mesa_hf.cli import main  # noqa: E402
from mesa_hf.data.lsun import find_lmdbs, lsun_rows, plan_shards  # noqa: E402
from mesa_hf.data.specs import load_dataset_spec  # noqa: E402


def _key(category: str, i: int) -> str:
    return hashlib.sha1(f"{category}-{i}".encode()).hexdigest()


def _image(i: int) -> np.ndarray:
    """A distinct small RGB image per index: (6 + i % 4) x (8 + i) pixels."""
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (6 + i % 4, 8 + i, 3), dtype=np.uint8)


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {"quality": 95}))
    return buffer.getvalue()


def make_lsun_lmdb(folder: Path, category: str = "bedroom_train_lmdb", num_good: int = 12, offset: int = 0):
    """An LMDB laid out as LSUN releases it: 40-hex ASCII keys, lossless WebP values (one JPEG), plus one corrupt
    and one empty value. Returns (path, {key: pixels (None for JPEG: lossy)} of the good ones, bad keys)."""
    path = folder / category
    good: dict[str, np.ndarray | None] = {}
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(offset, offset + num_good):
            key = _key(category, i)
            fmt = "JPEG" if i == offset + 3 else "WEBP"
            txn.put(key.encode("ascii"), _encode(_image(i), fmt))
            good[key] = _image(i) if fmt == "WEBP" else None
        corrupt, empty = _key(category, 1000), _key(category, 1001)
        txn.put(corrupt.encode("ascii"), _encode(_image(0), "WEBP")[:40])  # truncated WebP
        txn.put(empty.encode("ascii"), b"")
    env.close()
    return path, good, {corrupt, empty}


def _shape_of(key: str, category: str = "bedroom_train_lmdb", offset: int = 0) -> tuple[int, int]:
    i = next(i for i in range(offset, offset + 100) if _key(category, i) == key)
    return _image(i).shape[:2]


def _key_of(row: dict) -> str:
    """The LSUN key of a row read with ``Image(decode=False)`` (its path is ``<category>/<key>.<ext>``)."""
    return Path(row["image"]["path"]).name.split(".")[0]


@pytest.fixture
def lsun(tmp_path):
    return make_lsun_lmdb(tmp_path)


def test_map_style_decodes_good_images_and_counts_bad_ones(lsun, tmp_path, caplog):
    path, good, bad = lsun
    with caplog.at_level(logging.WARNING, logger="mesa_hf.data"):
        ds = load_dataset_spec(f"lsun:{path}", "images", streaming=False, cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 12 and ds.skipped_invalid == 2
    assert ds.lsun_index.num_entries == 14
    assert all(k in caplog.text for k in bad)  # each bad key is logged
    keys = [_key_of(r) for r in ds.cast_column("image", ImageFeature(decode=False))]
    assert keys == sorted(good)  # key order
    for key, row in zip(keys, ds):
        image = row["image"]
        assert image.size[::-1] == _shape_of(key)
        if good[key] is not None:  # lossless WebP: the exact pixels
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), good[key])


def test_iterable_is_the_default_and_counts_bad_entries(lsun, caplog):
    path, good, bad = lsun
    with caplog.at_level(logging.WARNING, logger="mesa_hf.data"):
        ds = load_dataset_spec(f"lsun:{path}", "images")
        assert isinstance(ds, IterableDataset)
        assert ds.num_shards == 14  # default: ~10k per shard, a multiple of 64, at most one per entry
        sizes = [row["image"].size[::-1] for row in ds]
    assert sizes == [_shape_of(k) for k in sorted(good)]
    assert ds.bad_entries.count == 2
    assert {e.split(":")[0].split("/")[1] for e in ds.bad_entries.examples} == bad
    assert "skipped 1 bad of 1 entries" in caplog.text  # the per-range summary
    assert "undecodable image" in caplog.text and "empty value" in caplog.text


def test_bare_lmdb_path_is_read_as_lsun(lsun):
    path, good, _ = lsun
    ds = load_dataset_spec(str(path.parent), "images", streaming=False)
    assert len(ds) == len(good)


@pytest.mark.parametrize("num_shards", [None, 4])
def test_two_ranks_two_workers_read_every_good_key_once(lsun, num_shards):
    path, good, _ = lsun
    options = {"num_shards": num_shards} if num_shards else {}
    ds = load_dataset_spec(f"lsun:{path}", "images", **options).cast_column("image", ImageFeature(decode=False))
    seen: list[str] = []
    per_rank = []
    for rank in range(2):
        shard = split_dataset_by_node(ds, rank=rank, world_size=2)
        loader = DataLoader(shard, batch_size=None, num_workers=2)
        keys = [_key_of(row) for row in loader]
        per_rank.append(set(keys))
        seen.extend(keys)
    assert Counter(seen) == Counter(list(good))  # every good key exactly once over 2 ranks x 2 workers
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1]


def test_shards_span_several_lmdbs_in_equal_sizes(tmp_path):
    _, good_a, _ = make_lsun_lmdb(tmp_path, "bedroom_train_lmdb", num_good=5)
    _, good_b, _ = make_lsun_lmdb(tmp_path, "kitchen_train_lmdb", num_good=6)
    lmdbs = find_lmdbs(tmp_path)
    assert [p.name for p in lmdbs] == ["bedroom_train_lmdb", "kitchen_train_lmdb"]
    shards = plan_shards(lmdbs, num_shards=3)  # 7 + 8 entries -> 5 each, the middle one across both LMDBs
    assert [s.num_entries for s in shards] == [5, 5, 5]
    assert [len(s.ranges) for s in shards] == [1, 2, 1]
    keys = [_key_of(r) for s in shards for r in lsun_rows([s])]
    assert Counter(keys) == Counter([*good_a, *good_b])


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_convert_lsun_round_trips_keys_and_pixels(lsun, tmp_path, capsys, fmt):
    path, good, _ = lsun
    out = tmp_path / f"lsun_{fmt}"
    argv = ["convert", "lsun", str(path), str(out), "--format", fmt, "--shard-size", "5", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote 12 images in 3 {fmt} shards" in printed and "skipped 2 bad entries" in printed
    suffix = ".tar" if fmt == "webdataset" else ".parquet"
    assert sorted(p.name for p in out.iterdir()) == [f"lsun-{i:05d}{suffix}" for i in range(3)]
    assert not out.with_name(out.name + ".partial").exists()
    ds = load_dataset_spec(f"{fmt}:{out}", "images", streaming=True)
    assert isinstance(ds, IterableDataset) and ds.num_shards == 3
    raw = list(ds.cast_column("image", ImageFeature(decode=False)))
    assert [_key_of(r) for r in raw] == sorted(good)
    extensions = Counter(Path(r["image"]["path"]).suffix for r in raw)
    assert extensions == {".webp": 11, ".jpg": 1}
    original = {k: v for k, v in good.items() if v is not None}
    for row in raw:
        key = _key_of(row)
        pixels = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
        assert pixels.shape[:2] == _shape_of(key)
        if key in original:
            np.testing.assert_array_equal(pixels, original[key])
    # the same through the bare-folder inference and map-style
    assert len(load_dataset_spec(str(out), "images", streaming=False, cache_dir=str(tmp_path / "c"))) == 12


def test_convert_max_images_and_refuses_a_non_empty_output(lsun, tmp_path, capsys):
    path, good, _ = lsun
    out = tmp_path / "wds"
    assert main(["convert", "lsun", str(path), str(out), "--max-images", "4", "--no-progress"]) == 0
    ds = load_dataset_spec(f"webdataset:{out}", "images")
    assert [_key_of(r) for r in ds.cast_column("image", ImageFeature(decode=False))] == sorted(good)[:4]
    assert main(["convert", "lsun", str(path), str(out), "--no-progress"]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err


def test_webdataset_reader_skips_bad_members(tmp_path):
    import tarfile

    shard = tmp_path / "wds" / "a.tar"
    shard.parent.mkdir()
    members = {"k1.webp": _encode(_image(1), "WEBP"), "k2.webp": b"not an image", "k3.txt": b"caption only"}
    with tarfile.open(shard, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = load_dataset_spec(f"webdataset:{shard.parent}", "images")
    images = [row["image"] for row in ds]
    assert [im.size[::-1] for im in images] == [_image(1).shape[:2]]
    assert ds.bad_entries.count == 2


def test_not_an_lmdb_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"photos: not an LSUN LMDB \(no data.mdb"):
        load_dataset_spec(f"lsun:{tmp_path / 'photos'}", "images")
    broken = tmp_path / "broken_lmdb"
    broken.mkdir()
    (broken / "data.mdb").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="broken_lmdb: not a readable LMDB"):
        load_dataset_spec(f"lsun:{broken}", "images")
    with pytest.raises(FileNotFoundError, match="no such LSUN LMDB folder"):
        load_dataset_spec(f"lsun:{tmp_path / 'missing'}", "images")
    assert main(["convert", "lsun", str(tmp_path / "photos"), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not an LSUN LMDB" in err


def test_convert_options_of_the_other_kind_are_refused(lsun, tmp_path, capsys):
    path, _, _ = lsun
    assert main(["convert", "lsun", str(path), str(tmp_path / "o"), "--preset", "tiny", "--no-progress"]) == 2
    assert "--preset apply to checkpoint conversion" in capsys.readouterr().err
    assert main(["convert", "simmim", str(path), str(tmp_path / "o"), "--format", "parquet"]) == 2
    assert "apply to `convert lsun` only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

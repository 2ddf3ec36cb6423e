"""Loaders that turn real RGB-D data into the ``depth`` and ``images`` dataset kinds (see :mod:`.columns`).

All return a `datasets.Dataset` built with `Dataset.from_generator` and explicit Features (cached by datasets'
fingerprint of the file list and options), or an `IterableDataset` with ``streaming=True``. Each sample is
validated while it is read (:mod:`.validation`): a bad sample raises a ValueError/FileNotFoundError naming the
file, or with ``skip_invalid=True`` is skipped, logged, and counted in the returned dataset's
``skipped_invalid`` attribute (``Dataset`` only; a streaming dataset logs each skip as it meets it).
"""

from __future__ import annotations

import glob
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, IterableDataset, load_dataset
from datasets import Image as ImageFeature
from datasets.exceptions import DatasetGenerationError
from PIL import Image

from .columns import DEPTH_FEATURES, IMAGE_FEATURES, encode_depth, intrinsics_matrix
from .decoders import (
    check_depth_scale,
    decode_depth,
    depth_values_to_metres,
    read_depth_image,
    read_image_file,
    uses_default_integer_scale,
)
from .folder import (
    IMAGE_EXTENSIONS,
    csv_pairs,
    find_rgbd_pairs,
    is_saved_dataset,
    load_saved_depth_dataset,
    nyu_sync_pairs,
    subfolder_pairs,
)
from .validation import (
    DEFAULT_MAX_MEDIAN_DEPTH,
    SampleSkipper,
    check_depth,
    check_intrinsics,
    check_same_size,
    logger,
    raise_if_empty,
)

NYU_INTRINSICS = intrinsics_matrix(518.8579, 519.46961, 325.58245, 253.73617)
"""NYUv2 Kinect RGB camera (NYU toolbox ``camera_params.m``), pixels of the 640×480 image."""

DEPTH_DATASET_FORMATS = ("nyu_sync", "nyu_mat", "parquet", "hub", "ibims1", "folder", "csv")
IMAGE_DATASET_FORMATS = ("imagefolder", "hub", "lsun", "webdataset", "parquet")
"""``images``-kind spec formats: `load_image_dataset` (imagefolder, hub), :mod:`.lsun` (LSUN LMDBs), :mod:`.shards`
(webdataset tar / parquet shards)."""


# ---------------------------------------------------------------- building a dataset from a generator


def dataset_from_generator(generator: Callable[..., Iterable[dict]], gen_kwargs: dict, features, cache_dir=None):
    """`Dataset.from_generator`, re-raising the loader's own ValueError/FileNotFoundError (one line naming the file)
    instead of datasets' DatasetGenerationError wrapper."""
    try:
        return Dataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs, cache_dir=cache_dir)
    except DatasetGenerationError as err:
        cause = err.__cause__
        while isinstance(cause, DatasetGenerationError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, (ValueError, FileNotFoundError)):
            raise type(cause)(str(cause)) from err
        raise


def build_dataset(
    generator: Callable[..., Iterable[dict]],
    gen_kwargs: dict,
    features,
    *,
    num_candidates: int,
    source: str,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> Dataset | IterableDataset:
    """Run a row generator into a Dataset (or IterableDataset), unwrapping datasets' error wrapper so that the
    caller sees the loader's own ValueError/FileNotFoundError; attaches ``skipped_invalid``."""
    raise_if_empty(num_candidates, source)
    if streaming:
        return IterableDataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs)
    ds = dataset_from_generator(generator, gen_kwargs, features, cache_dir)
    skipped = num_candidates - len(ds)
    if len(ds) == 0:
        raise ValueError(f"{source}: empty dataset, all {num_candidates} samples were invalid and skipped")
    if skipped:
        logger.warning("%s: skipped %d invalid of %d samples", source, skipped, num_candidates)
    ds.skipped_invalid = skipped
    return ds


def _depth_row_from_files(record: dict, max_median_depth: float | None) -> dict:
    image_bytes, image_hw = read_image_file(record["image"])
    depth = decode_depth(record["depth"], record["depth_format"], record.get("depth_scale"))
    check_same_size(image_hw, depth.shape, str(record["image"]), str(record["depth"]))
    check_depth(depth, str(record["depth"]), max_median_depth)
    return {
        "image": {"bytes": image_bytes, "path": str(record["image"])},
        "depth": encode_depth(depth),
        "intrinsics": record.get("intrinsics"),
        "scene": record.get("scene") or "",
    }


def _depth_rows_from_files(records: list[dict], skip_invalid: bool, max_median_depth: float | None, name: str):
    skipper = SampleSkipper(skip_invalid, name)
    for record in records:
        row = skipper.run(_depth_row_from_files, record, max_median_depth)
        if row is not None:
            yield row


def _depth_row_from_arrays(
    image: np.ndarray, depth: np.ndarray, source: str, max_median_depth, intrinsics=None, scene=""
) -> dict:
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{source}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    check_same_size(image.shape[:2], depth.shape, source, source)
    check_depth(depth, source, max_median_depth)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    image_value = {"bytes": buffer.getvalue(), "path": None}
    return {"image": image_value, "depth": encode_depth(depth), "intrinsics": intrinsics, "scene": scene}


def file_stamp(path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None if it is missing: part of the rows' cache fingerprint, so that a file
    changed in place rebuilds the cached dataset."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _records(pairs: Sequence[tuple[Path, Path]], depth_format: str, depth_scale, intrinsics, scenes=None) -> list[dict]:
    k = None if intrinsics is None else check_intrinsics(intrinsics, "intrinsics").tolist()
    return [
        {
            "image": str(image),
            "depth": str(depth),
            "depth_format": depth_format,
            "depth_scale": depth_scale,
            "intrinsics": k,
            "scene": "" if scenes is None else scenes[i],
            "stamp": (file_stamp(image), file_stamp(depth)),
        }
        for i, (image, depth) in enumerate(pairs)
    ]


# ---------------------------------------------------------------- format-specific discovery


def _read_mat_scenes(handle, n: int) -> list[str]:
    try:
        refs = handle["scenes"][()].ravel()
        return ["".join(chr(c) for c in handle[ref][()].ravel()) for ref in refs][:n]
    except (KeyError, TypeError, ValueError):
        return [""] * n


def _nyu_mat_rows(mat_path: str, indices: list[int], skip_invalid: bool, max_median_depth, name: str, stamp=None):
    import h5py

    skipper = SampleSkipper(skip_invalid, name)
    with h5py.File(mat_path, "r") as handle:
        images, depths = handle["images"], handle["depths"]
        scenes = _read_mat_scenes(handle, images.shape[0])
        k = NYU_INTRINSICS.tolist()
        for i in indices:
            # MATLAB stores (H, W, 3, N) column-major: h5py sees (N, 3, W, H).
            source = f"{mat_path}[{i}]"
            row = skipper.run(
                _depth_row_from_arrays,
                images[i].transpose(2, 1, 0),
                depths[i].T,
                source,
                max_median_depth,
                k,
                scenes[i] if i < len(scenes) else "",
            )
            if row is not None:
                yield row


def _nyu_mat_indices(mat_path: Path, splits_path: str | Path | None, split: str | None) -> list[int]:
    import h5py

    if not mat_path.is_file():
        raise FileNotFoundError(f"{mat_path}: NYUv2 labelled .mat file not found")
    try:
        with h5py.File(mat_path, "r") as handle:
            if "images" not in handle or "depths" not in handle:
                raise ValueError(f"{mat_path}: expected HDF5 datasets 'images' and 'depths', got {list(handle)}")
            n = handle["images"].shape[0]
            if handle["depths"].shape[0] != n:
                raise ValueError(f"{mat_path}: {n} images but {handle['depths'].shape[0]} depth maps")
    except OSError as err:
        raise ValueError(f"{mat_path}: not a readable HDF5 (MATLAB v7.3) file ({err})") from err
    if split in (None, "all"):
        return list(range(n))
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or 'all' for nyu_mat, got {split!r}")
    if splits_path is None:
        raise ValueError("nyu_mat with split='train'/'test' needs splits_path (the official splits.mat)")
    import scipy.io

    splits = scipy.io.loadmat(str(splits_path))
    key = "trainNdxs" if split == "train" else "testNdxs"
    indices = [int(i) - 1 for i in np.asarray(splits[key]).ravel()]  # 1-based MATLAB indices
    if indices and (min(indices) < 0 or max(indices) >= n):
        raise ValueError(f"{splits_path}: {key} indexes beyond the {n} samples of {mat_path}")
    return indices


def _ibims1_mat_row(mat_path: str, max_median_depth) -> dict:
    import scipy.io

    try:
        data = scipy.io.loadmat(mat_path, squeeze_me=False)["data"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{mat_path}: not an iBims-1 .mat file with a 'data' struct ({err})") from err
    fields = data.dtype.names or ()
    if "rgb" not in fields or "depth" not in fields:
        raise ValueError(f"{mat_path}: the 'data' struct needs fields 'rgb' and 'depth', has {fields}")
    calib = np.asarray(data["calib"][0, 0], dtype=np.float32).tolist() if "calib" in fields else None
    image, depth = np.asarray(data["rgb"][0, 0]), np.asarray(data["depth"][0, 0], dtype=np.float32)
    for mask in ("mask_invalid", "mask_transp"):  # 1 = valid, as in the official evaluation script
        if mask in fields:
            depth = depth * (np.asarray(data[mask][0, 0]) != 0)
    return _depth_row_from_arrays(image, depth, mat_path, max_median_depth, calib, Path(mat_path).stem)


def _ibims1_mat_rows(mat_paths: list[str], skip_invalid: bool, max_median_depth, name: str, stamps=None):
    skipper = SampleSkipper(skip_invalid, name)
    for mat_path in mat_paths:
        row = skipper.run(_ibims1_mat_row, mat_path, max_median_depth)
        if row is not None:
            yield row


def _decode_depth_image(value: dict, source: str, depth_scale: float | None) -> np.ndarray:
    """A table's depth image in metres, by the ``"auto"`` unit rule of :func:`.decoders.depth_values_to_metres`."""
    raw, file_scale = read_depth_image(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"], source)
    return depth_values_to_metres(raw, source, depth_scale, file_scale)


def _table_rows(load_kwargs: dict, depth_column: str, depth_scale, skip_invalid, max_median_depth, name, intrinsics):
    table = load_dataset(**load_kwargs)
    if "image" not in table.column_names or depth_column not in table.column_names:
        raise ValueError(f"{name}: expected columns 'image' and {depth_column!r}, got {table.column_names}")
    table = table.cast_column("image", ImageFeature(decode=False)).cast_column(depth_column, ImageFeature(decode=False))
    skipper = SampleSkipper(skip_invalid, name)

    def convert(i, example):
        source = f"{name}[{i}]"
        depth = _decode_depth_image(example[depth_column], source, depth_scale)
        with Image.open(io.BytesIO(example["image"]["bytes"])) as img:
            image = np.asarray(img.convert("RGB"))
        return _depth_row_from_arrays(image, depth, source, max_median_depth, intrinsics, example.get("scene") or "")

    for i, example in enumerate(table):
        row = skipper.run(convert, i, example)
        if row is not None:
            yield row


# ---------------------------------------------------------------- public API


def load_depth_dataset(
    format: str,
    path: str | Path,
    *,
    split: str | None = None,
    depth_format: str | None = None,
    depth_scale: float | None = None,
    intrinsics=None,
    file_list: str | Path | None = None,
    splits_path: str | Path | None = None,
    image_pattern: str | None = None,
    depth_pattern: str | None = None,
    depth_column: str = "depth_map",
    max_median_depth: float | None = DEFAULT_MAX_MEDIAN_DEPTH,
    skip_invalid: bool = False,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> Dataset | IterableDataset:
    """Load real RGB-D data as a ``depth``-kind dataset (columns ``image``, ``depth`` [m], ``intrinsics``, ``scene``).

    Args:
        format: where the data comes from:
            ``"folder"`` any RGB-D folder read by :func:`.folder.find_rgbd_pairs`: ``image_N`` + ``depth_N``
            files, ``rgb/`` + ``depth/`` with matching names, ``*_rgb.*`` + ``*_depth.*``, BTS sync folders, a CSV
            file list inside, a ``save_to_disk`` folder, or ``image_pattern``/``depth_pattern`` globs;
            ``"nyu_sync"`` BTS/GLPDepth NYUv2 folder (``scene/rgb_XXXXX.jpg`` + ``scene/sync_depth_XXXXX.png``
            in mm, or ``rgb/`` + ``depth/`` folders), read from ``file_list`` (BTS
            ``nyudepthv2_{train,test}_files_with_gt.txt``) or by scanning ``path``;
            ``"nyu_mat"`` the official ``nyu_depth_v2_labeled.mat`` with ``splits_path``
            (``splits.mat``, 795 train / 654 test); ``"parquet"`` local parquet file(s) in the Hub NYUv2 layout
            (``image``, ``depth_map``); ``"hub"`` a Hub dataset id in that layout; ``"ibims1"`` the iBims-1 core
            release's ``*.mat`` files (struct ``data`` with ``rgb``, ``depth`` [m], ``calib`` 3×3; ``mask_invalid``
            and ``mask_transp`` zero the depth as in the official evaluation) or ``rgb/*.png`` +
            ``depth/*.npy`` (metres) / ``depth/*.png`` (×50/65535); ``"csv"`` a CSV file with
            ``image_path``, ``depth_path`` (relative to the CSV) and optional ``scene`` columns.
        path: root folder, .mat file, parquet file/glob, Hub id or CSV file.
        split: ``"train"``/``"test"``/``"all"`` for ``nyu_mat``; the split name for ``hub``/``parquet`` and
            ``save_to_disk`` DatasetDicts.
        depth_format: depth file format for ``folder``/``csv`` (see :mod:`.decoders`); default ``"auto"``:
            integer depth (16-bit PNG) × ``depth_scale``, default 0.001 (millimetres) or the PNG's own
            ``depth_scale`` text chunk; float depth (``.npy``, TIFF) in metres. E.g. ``"sunrgbd"``,
            ``"nyu_disparity"``, ``"kitti"``, ``"tum"``.
        depth_scale: metres per stored depth unit (0.001 for millimetres, 0.0002 for TUM, 1/256 for KITTI);
            replaces the format's own scale.
        image_pattern, depth_pattern: ``folder`` globs relative to ``path`` when its layout is not recognised.
        intrinsics: 3×3 matrix or (fx, fy, cx, cy) for every sample (NYU formats default to the NYU camera).
        max_median_depth: unit check (median valid depth above this is an error); None disables it.
        skip_invalid: skip (and count, in ``ds.skipped_invalid``) bad samples instead of raising.
        streaming: return an ``IterableDataset`` that reads the files lazily.
        cache_dir: where datasets writes the Arrow cache.

    Raises:
        FolderLayoutError (a ValueError): a ``folder`` whose layout is not recognised; the message lists the files
        found and the options to pass.
    """
    check_depth_scale(depth_scale)
    path = Path(path) if format not in ("hub", "parquet") else path
    name = f"{format}:{path}"
    common = {"skip_invalid": skip_invalid, "max_median_depth": max_median_depth, "name": name}
    build = {"features": DEPTH_FEATURES, "source": name, "streaming": streaming, "cache_dir": cache_dir}

    if format == "nyu_mat":
        indices = _nyu_mat_indices(path, splits_path, split)
        kwargs = {"mat_path": str(path), "indices": indices, "stamp": file_stamp(path), **common}
        return build_dataset(_nyu_mat_rows, kwargs, num_candidates=len(indices), **build)

    if format in ("parquet", "hub"):
        if format == "parquet":
            files = [str(path)] if Path(path).exists() else sorted(glob.glob(str(path)))
            if not files:
                raise FileNotFoundError(f"{path}: no parquet file found")
            load_kwargs = {"path": "parquet", "data_files": files, "split": "train"}
            num = sum(_parquet_num_rows(f) for f in files)
        else:
            load_kwargs = {"path": str(path), "split": split or "train"}
            num = 1  # unknown before reading; emptiness is checked after building
        k = None if intrinsics is None else check_intrinsics(intrinsics, "intrinsics").tolist()
        kwargs = {
            "load_kwargs": load_kwargs,
            "depth_column": depth_column,
            "depth_scale": depth_scale,
            "intrinsics": k,
            **common,
        }
        ds = build_dataset(_table_rows, kwargs, num_candidates=num, **build)
        if format == "hub" and not streaming:
            ds.skipped_invalid = None
        return ds

    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset path not found")
    scenes = None
    if format == "nyu_sync":
        pairs, scenes = nyu_sync_pairs(path, file_list)
        depth_format = depth_format or "nyu"
        intrinsics = NYU_INTRINSICS if intrinsics is None else intrinsics
    elif format == "ibims1" and any(path.glob("*.mat")):
        mats = sorted(str(p) for p in path.glob("*.mat"))
        kwargs = {"mat_paths": mats, "stamps": [file_stamp(m) for m in mats], **common}
        return build_dataset(_ibims1_mat_rows, kwargs, num_candidates=len(mats), **build)
    elif format == "ibims1":
        pairs, scenes = subfolder_pairs(path) or ([], None)
        formats = {depth.suffix for _, depth in pairs}
        depth_format = depth_format or ("ibims1_png" if formats == {".png"} else "npy")
    elif format == "folder":
        if is_saved_dataset(path):
            return load_saved_depth_dataset(path, split)
        found = find_rgbd_pairs(path, image_pattern, depth_pattern)
        pairs, scenes, depth_format = found.pairs, found.scenes, depth_format or "auto"
        if found.layout == "nyu_sync" and intrinsics is None:
            intrinsics = NYU_INTRINSICS
        assumed = depth_format == "auto" and depth_scale is None and found.layout != "nyu_sync"
        if assumed and pairs and uses_default_integer_scale(pairs[0][1]):
            logger.warning(
                "%s (%s): integer depth files without depth_scale are read as millimetres (0.001 m per unit); "
                "pass depth_scale (--depth_scale, metres per stored unit) if they are not",
                path,
                found.layout,
            )
    elif format == "csv":
        pairs, scenes = csv_pairs(path)
        depth_format = depth_format or "auto"
    else:
        raise ValueError(f"unknown depth dataset format {format!r}; expected one of {DEPTH_DATASET_FORMATS}")
    records = _records(pairs, depth_format, depth_scale, intrinsics, scenes)
    return build_dataset(_depth_rows_from_files, {"records": records, **common}, num_candidates=len(records), **build)


def _parquet_num_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def load_image_dataset(
    path: str | Path,
    *,
    split: str = "train",
    image_column: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> Dataset | IterableDataset:
    """Load an ``images``-kind dataset (one column, ``image``) for the masked objective.

    Args:
        path: a local image folder (ImageNet/LSUN extracted as files, read with datasets' ``imagefolder``
            builder, sub-folders allowed) or a Hub dataset id (e.g. ``"ILSVRC/imagenet-1k"``).
        split: the split to read.
        image_column: the source's image column (default: the first ``Image`` feature).
        streaming: return an ``IterableDataset``.
    """
    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"{local}: expected an image folder")
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in local.rglob("*")):
            raise ValueError(f"{local}: empty dataset, no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
        ds = load_dataset("imagefolder", data_dir=str(local), split=split, streaming=streaming, cache_dir=cache_dir)
    else:
        ds = load_dataset(str(path), split=split, streaming=streaming, cache_dir=cache_dir)
    features = ds.features or {}
    if image_column is None:
        image_column = next((c for c, f in features.items() if isinstance(f, ImageFeature)), None)
    if image_column is None or image_column not in features:
        raise ValueError(f"{path}: no image column found (columns {list(features)}); pass image_column=")
    ds = ds.select_columns([image_column])
    if image_column != "image":
        ds = ds.rename_column(image_column, "image")
    if not streaming:
        raise_if_empty(len(ds), str(path), "images")
    return ds.cast(IMAGE_FEATURES) if not streaming else ds

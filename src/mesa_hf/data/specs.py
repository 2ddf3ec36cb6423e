"""Dataset specs (``FORMAT:PATH``) as the training scripts and the command line take them, resolved to HF Datasets."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("mesa_hf.data")


@dataclass
class FolderOptions:
    """How to read a ``folder:PATH`` RGB-D dataset: the depth unit and, when the layout is not recognised, patterns.

    ``depth_scale`` applies to every depth format that stores scaled values (it replaces the format's own scale).
    """

    depth_scale: float | None = field(
        default=None,
        metadata={
            "help": "metres per stored depth unit (0.001 for millimetre PNGs, 0.0002 for TUM, 0.00390625 for KITTI); "
            "default: 16-bit depth is millimetres (or its PNG's depth_scale text chunk), float .npy/TIFF is metres"
        },
    )
    image_pattern: str | None = field(
        default=None, metadata={"help": "glob of the RGB files relative to the folder, e.g. 'rgb/*.jpg'"}
    )
    depth_pattern: str | None = field(
        default=None, metadata={"help": "glob of the depth files relative to the folder, paired in sorted order"}
    )
    depth_format: str | None = field(
        default=None,
        metadata={"help": "depth file format when the unit is not a plain scale: sunrgbd, nyu_disparity, ... "},
    )


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """``"FORMAT:PATH"`` → (FORMAT, PATH); a bare path → ("", PATH)."""
    if re.match(r"^[A-Za-z0-9_]+:", spec) and not re.match(r"^[A-Za-z]:[\\/]", spec):
        fmt, _, path = spec.partition(":")
        return fmt, path
    return "", spec


def _infer_depth_format(path: Path, loader_kwargs: dict) -> str:
    """The loader format of a ``nyuv2:PATH`` (or bare PATH) spec, from the path itself."""
    if path.suffix == ".mat":
        return "nyu_mat"
    if path.suffix == ".parquet" or "*" in str(path):
        return "parquet"
    if path.suffix == ".csv":
        return "csv"
    if path.is_dir() and loader_kwargs.get("file_list") is None and not any(path.rglob("sync_depth_*.png")):
        # not a BTS sync folder: read it with the folder reader (image_N/depth_N, rgb/ + depth/, ...), NYU camera
        from .loaders import NYU_INTRINSICS

        logger.info("%s is not a BTS sync folder; reading it as folder:%s with the NYUv2 camera", path, path)
        loader_kwargs.setdefault("intrinsics", NYU_INTRINSICS)
        return "folder"
    return "nyu_sync"


def _depth_loader_kwargs(spec: str, fmt: str, folder: FolderOptions | None, loader_kwargs: dict) -> dict:
    """`loader_kwargs` with the FolderOptions that are set (explicit loader kwargs win)."""
    if folder is None:
        return loader_kwargs
    if (folder.image_pattern or folder.depth_pattern) and fmt != "folder":
        _, path = parse_dataset_spec(spec)
        raise ValueError(f"dataset {spec!r}: image_pattern/depth_pattern apply to folders; use 'folder:{path}'")
    options = {
        "depth_scale": folder.depth_scale,
        "image_pattern": folder.image_pattern,
        "depth_pattern": folder.depth_pattern,
        "depth_format": folder.depth_format,
    }
    return {**{k: v for k, v in options.items() if v is not None}, **loader_kwargs}


def _infer_image_format(path: Path) -> str:
    """The images format of a bare path: ``lsun`` for an LMDB (or a folder of them), ``webdataset`` / ``parquet``
    for a folder of such shards without image files, else ``imagefolder``."""
    if not path.is_dir():
        return "imagefolder"
    if (path / "data.mdb").is_file() or any((p / "data.mdb").is_file() for p in path.iterdir() if p.is_dir()):
        return "lsun"
    from .folder import IMAGE_EXTENSIONS

    if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*")):  # stops at the first image file
        return "imagefolder"
    for suffix, fmt in ((".tar", "webdataset"), (".parquet", "parquet")):
        if any(path.rglob(f"*{suffix}")):
            return fmt
    return "imagefolder"


def _load_images_spec(spec: str, fmt: str, path: str, split, cache_dir, streaming: bool | None, loader_kwargs: dict):
    """The ``images`` kind of :func:`load_dataset_spec`."""
    from .loaders import IMAGE_DATASET_FORMATS, load_image_dataset

    if fmt not in IMAGE_DATASET_FORMATS:
        raise ValueError(
            f"dataset {spec!r}: the masked stage reads {', '.join(f + ':PATH' for f in IMAGE_DATASET_FORMATS)} "
            f"or a bare image folder, not {fmt!r}"
        )
    if fmt == "lsun":
        from .lsun import load_lsun_dataset

        stream = True if streaming is None else streaming
        return load_lsun_dataset(path, streaming=stream, cache_dir=cache_dir, **loader_kwargs)
    if loader_kwargs:
        raise ValueError(f"dataset {spec!r}: options {sorted(loader_kwargs)} do not apply to {fmt!r} images")
    if fmt == "webdataset":
        from .shards import load_webdataset_images

        return load_webdataset_images(path, streaming=True if streaming is None else streaming, cache_dir=cache_dir)
    if fmt == "parquet":
        from .shards import load_parquet_images

        return load_parquet_images(path, streaming=bool(streaming), cache_dir=cache_dir)
    return load_image_dataset(path, split=split or "train", cache_dir=cache_dir, streaming=bool(streaming))


def load_dataset_spec(
    spec: str,
    kind: str,
    split: str | None = None,
    cache_dir=None,
    folder: FolderOptions | None = None,
    streaming: bool | None = None,
    **loader_kwargs,
):
    """Load the dataset named by `spec` for a stage of `kind`.

    `spec` is ``FORMAT:PATH`` or a bare ``PATH``:

    - images (masked stage): ``imagefolder:PATH`` or a bare folder (ImageNet/LSUN extracted as files),
      ``hub:DATASET_ID``, ``lsun:PATH`` (an LSUN category LMDB as released, or a folder of them),
      ``webdataset:PATH`` (a folder of ``.tar`` shards, e.g. from ``mesa-hf convert lsun``), ``parquet:PATH`` (a
      folder or glob of parquet shards with an ``image`` column); a bare path holding ``data.mdb``, ``.tar`` or
      ``.parquet`` shards (and no image files) is read as those;
    - video (geometric stage): ``7scenes:PATH``, ``tum:PATH``, ``hololens:PATH``, ``nyu_raw:PATH``
      (NYUv2 raw scenes), ``frames:PATH``, ``video:PATH`` (an mp4/mov/mkv/webm/avi file or a folder of them;
      intrinsics from ``intrinsics=``, a ``<stem>.intrinsics.json`` sidecar or ``cameras.json``);
    - depth (supervised, finetune, evaluation): ``folder:PATH`` (any RGB-D folder: ``image_N``/``depth_N``,
      ``rgb/`` + ``depth/``, ``*_rgb``/``*_depth``, BTS sync, a CSV list inside, or `folder` patterns; see
      :mod:`mesa_hf.data.folder`), ``nyuv2:PATH`` (a ``.mat`` labelled file, a ``.parquet`` file or glob, a BTS
      "sync" folder, or another RGB-D folder of NYUv2 images, read as ``folder:`` with the NYU camera),
      ``nyu_sync:``, ``nyu_mat:``, ``parquet:``, ``hub:``, ``ibims1:``, ``csv:``; a bare path is ``nyuv2:PATH``.

    `folder` gives the depth unit (``depth_scale``, metres per stored unit), ``depth_format`` and, for
    ``folder:``, ``image_pattern``/``depth_pattern``; `loader_kwargs` go to the `mesa_hf.data` loader (e.g.
    ``file_list``, ``splits_path``, ``frame_offsets``; ``num_shards`` for ``lsun:``) and win over `folder`.
    `streaming`: an `IterableDataset` (True) or a map-style `Dataset` (False); None = the format's default,
    streaming for ``lsun:`` and ``webdataset:``, map-style for the others (depth: map-style; video: never streamed).

    Raises:
        FolderLayoutError (a ValueError): a folder whose layout is not recognised (the message lists its files and
        the options to pass); ValueError / FileNotFoundError for other bad specs.
    """
    fmt, path = parse_dataset_spec(spec)
    if kind == "images":
        return _load_images_spec(
            spec, fmt or _infer_image_format(Path(path)), path, split, cache_dir, streaming, loader_kwargs
        )
    if kind == "video":
        try:
            from .video import load_video_dataset
        except ImportError as err:  # pragma: no cover - depends on the data package version
            raise ImportError(
                "the geometric stage on real video needs mesa_hf.data.video (load_video_dataset)"
            ) from err
        if not fmt:
            raise ValueError(
                f"dataset {spec!r}: name the video format, e.g. '7scenes:{spec}', 'tum:{spec}', 'nyu_raw:{spec}' "
                f"or 'frames:{spec}'"
            )
        if streaming:
            raise ValueError(f"dataset {spec!r}: video datasets are not streamed; leave out --streaming")
        return load_video_dataset(fmt, path, cache_dir=cache_dir, **loader_kwargs)
    if kind == "depth":
        from .loaders import load_depth_dataset

        if fmt in ("", "nyuv2"):
            fmt = _infer_depth_format(Path(path), loader_kwargs)
        if fmt == "nyu_mat" and split is None:
            split = "train"
        loader_kwargs = _depth_loader_kwargs(spec, fmt, folder, loader_kwargs)
        if streaming:
            loader_kwargs["streaming"] = True
        return load_depth_dataset(fmt, path, split=split, cache_dir=cache_dir, **loader_kwargs)
    raise ValueError(f"unknown dataset kind {kind!r}")

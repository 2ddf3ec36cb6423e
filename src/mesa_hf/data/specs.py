"""Dataset specs (``FORMAT:PATH``) as the training scripts and the command line take them, resolved to HF Datasets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FolderOptions:
    """How to read a ``folder:PATH`` RGB-D dataset: the depth unit and, when the layout is not recognised, patterns."""

    depth_scale: float | None = field(
        default=None, metadata={"help": "metres per stored depth unit (0.001 for millimetre PNGs, 1.0 for .npy metres)"}
    )
    image_pattern: str | None = field(default=None, metadata={"help": "glob of the RGB files inside the folder"})
    depth_pattern: str | None = field(default=None, metadata={"help": "glob of the depth files inside the folder"})


def _infer_depth_format(path: Path) -> str:
    if path.suffix == ".mat":
        return "nyu_mat"
    if path.suffix == ".parquet" or "*" in str(path):
        return "parquet"
    if path.suffix == ".csv":
        return "csv"
    return "nyu_sync"


def load_dataset_spec(
    spec: str,
    kind: str,
    split: str | None = None,
    cache_dir=None,
    folder: FolderOptions | None = None,
    **loader_kwargs,
):
    """Load the dataset named by `spec` for a stage of `kind`.

    `spec` is ``FORMAT:PATH`` or a bare ``PATH``:

    - images (masked stage): ``imagefolder:PATH`` or a bare folder (ImageNet/LSUN extracted as files), or
      ``hub:DATASET_ID``;
    - video (geometric stage): ``7scenes:PATH``, ``tum:PATH``, ``hololens:PATH``, ``nyu_raw:PATH``
      (NYUv2 raw scenes), ``frames:PATH``, ``video:PATH`` (an mp4/mov/mkv/webm/avi file or a folder of them;
      intrinsics from ``intrinsics=``, a ``<stem>.intrinsics.json`` sidecar or ``cameras.json``);
    - depth (supervised, finetune, evaluation): ``nyuv2:PATH`` (a ``.mat`` labelled file, a ``.parquet`` file or
      glob, or a BTS "sync" folder), ``nyu_sync:``, ``nyu_mat:``, ``parquet:``, ``hub:``, ``ibims1:``, ``csv:``,
      ``folder:``; a bare path is read as ``nyuv2:PATH``.

    `folder` describes a ``folder:`` dataset (depth unit, patterns); `loader_kwargs` go to the `mesa_hf.data`
    loader (e.g. ``file_list``, ``splits_path``, ``frame_offsets``).
    """
    fmt, _, path = spec.partition(":") if re.match(r"^[A-Za-z0-9_]+:", spec) else ("", "", spec)
    if kind == "images":
        from .loaders import load_image_dataset

        if fmt not in ("", "imagefolder", "hub"):
            raise ValueError(f"dataset {spec!r}: the masked stage reads an image folder or 'hub:ID', not {fmt!r}")
        return load_image_dataset(path, split=split or "train", cache_dir=cache_dir)
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
        return load_video_dataset(fmt, path, cache_dir=cache_dir, **loader_kwargs)
    if kind == "depth":
        from .loaders import load_depth_dataset

        if fmt in ("", "nyuv2"):
            fmt = _infer_depth_format(Path(path))
        if fmt == "nyu_mat" and split is None:
            split = "train"
        return load_depth_dataset(fmt, path, split=split, cache_dir=cache_dir, **loader_kwargs)
    raise ValueError(f"unknown dataset kind {kind!r}")

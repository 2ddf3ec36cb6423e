"""The dataset of ``mesa-hf evaluate --data``: a thin adapter over :mod:`mesa_hf.data`, so evaluation reads a folder
with the same reader (:mod:`mesa_hf.data.folder`), depth decoding and load-time checks as training."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_depth_dataset(
    path: str | Path,
    data_format: str = "auto",
    depth_scale: float | None = None,
    depth_format: str | None = None,
    split: str | None = None,
    splits_path: str | Path | None = None,
    file_list: str | Path | None = None,
    image_pattern: str | None = None,
    depth_pattern: str | None = None,
) -> Any:
    """A ``datasets.Dataset`` with ``image`` (PIL) and ``depth`` ((H, W) float32 metres, numpy) for evaluation.

    Args:
        path: with ``data_format="auto"``, a folder (any layout of :mod:`mesa_hf.data.folder`, or a ``save_to_disk``
            folder) or a ``FORMAT:PATH`` dataset spec as the training scripts take it (``nyuv2:labeled.mat``, ...).
        data_format: ``"auto"`` or a :func:`mesa_hf.data.load_depth_dataset` format (``nyu_mat`` with
            ``splits_path`` for the official 654 NYUv2 test images, ``nyu_sync``, ``ibims1``, ``csv``, ...).
        depth_scale: metres per stored depth unit (default: 16-bit depth is millimetres, float depth metres).
        depth_format, image_pattern, depth_pattern: as :class:`mesa_hf.data.specs.FolderOptions`.
        split: the split of a ``nyu_mat``/``hub`` dataset (default ``"test"``) or of a saved DatasetDict.
        splits_path, file_list: ``splits.mat`` for ``nyu_mat``; a BTS file list for ``nyu_sync``.
    """
    from mesa_hf.data.specs import FolderOptions, load_dataset_spec, parse_dataset_spec

    if data_format != "auto":
        spec = f"{data_format}:{path}"
    elif Path(path).exists() or not parse_dataset_spec(str(path))[0]:
        spec = f"folder:{path}"
    else:
        spec = str(path)
    is_folder = parse_dataset_spec(spec)[0] == "folder"
    options = {k: v for k, v in (("splits_path", splits_path), ("file_list", file_list)) if v is not None}
    dataset = load_dataset_spec(
        spec,
        "depth",
        split=split if split is not None or is_folder else "test",
        folder=FolderOptions(depth_scale, image_pattern, depth_pattern, depth_format),
        **options,
    )
    return dataset.with_format("numpy", columns=["depth"], output_all_columns=True)

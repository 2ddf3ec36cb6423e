"""A minimal paired RGB / ground-truth-depth folder reader for evaluation from the command line.

Recognised layouts (first match wins):

1. a CSV file in the folder with columns ``image_path,depth_path`` (paths relative to the folder),
   e.g. ``nyu_test10/nyu2_mini_test.csv``;
2. sub-folders ``rgb/`` (or ``image/``, ``images/``) and ``depth/`` with files matched by stem;
3. files named ``*image*`` / ``*rgb*`` next to the same name with ``depth`` instead (``image_0.png`` <->
   ``depth_0.png``).

Depth files: 16-bit PNG (metres = value * scale; scale from the PNG's ``depth_scale`` text chunk, else
``depth_scale``, default 0.001 = millimetres) or ``.npy`` float metres (singleton axes squeezed).
A ``datasets`` folder saved with ``save_to_disk`` (columns ``image``, ``depth``) is loaded with
``datasets.load_from_disk`` instead.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .io import DEPTH_PNG_SCALE_KEY

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")
_DEPTH_SUFFIXES = (".png", ".npy")


def read_depth_file(path: str | Path, depth_scale: float = 0.001) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit PNG (scale from its text chunk or ``depth_scale``) or a ``.npy``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth file not found: {path}")
    if path.suffix.lower() == ".npy":
        depth = np.load(path).astype(np.float32)
        depth = depth.reshape([s for s in depth.shape if s != 1] or [1])
    else:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
            units = np.asarray(im)
        if units.dtype == np.uint8:
            raise ValueError(f"{path}: 8-bit PNG is not a depth map (expected 16-bit depth in millimetres)")
        scale = float(text[DEPTH_PNG_SCALE_KEY].split()[0]) if DEPTH_PNG_SCALE_KEY in text else depth_scale
        depth = units.astype(np.float32) * np.float32(scale)
    if depth.ndim != 2:
        raise ValueError(f"{path}: depth must be an (H, W) map, got shape {depth.shape}")
    return depth


def _find_pairs(root: Path) -> list[tuple[Path, Path]]:
    csvs = sorted(root.glob("*.csv"))
    for csv_path in csvs:
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and {"image_path", "depth_path"} <= set(rows[0]):
            return [(root / r["image_path"], root / r["depth_path"]) for r in rows]
    depth_dir = root / "depth"
    for name in ("rgb", "image", "images"):
        image_dir = root / name
        if image_dir.is_dir() and depth_dir.is_dir():
            depth_by_stem = {p.stem: p for p in depth_dir.iterdir() if p.suffix.lower() in _DEPTH_SUFFIXES}
            pairs = []
            for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES):
                if image.stem not in depth_by_stem:
                    raise FileNotFoundError(f"no depth file named {image.stem}.* in {depth_dir} for {image}")
                pairs.append((image, depth_by_stem[image.stem]))
            return pairs
    pairs = []
    for image in sorted(p for p in root.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES):
        for token in ("image", "rgb"):
            if token in image.stem:
                stem = image.stem.replace(token, "depth")
                matches = [root / f"{stem}{s}" for s in _DEPTH_SUFFIXES if (root / f"{stem}{s}").is_file()]
                if matches:
                    pairs.append((image, matches[0]))
                break
    return pairs


class DepthFolder:
    """Indexable of ``{"image": PIL RGB, "depth": (H, W) float32 metres, "image_path", "depth_path"}``."""

    def __init__(self, root: str | Path, depth_scale: float = 0.001) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self.depth_scale = depth_scale
        self.pairs = _find_pairs(self.root)
        if not self.pairs:
            raise ValueError(
                f"no image/depth pairs found in {self.root}: expected a CSV with image_path,depth_path, rgb/ + depth/ "
                "sub-folders, or image_*/depth_* files"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, depth_path = self.pairs[index]
        from mesa_hf.image_processing_mesa import load_rgb_image

        image = Image.fromarray(load_rgb_image(str(image_path)))
        return {
            "image": image,
            "depth": read_depth_file(depth_path, self.depth_scale),
            "image_path": str(image_path),
            "depth_path": str(depth_path),
        }


def open_depth_dataset(
    path: str | Path,
    data_format: str = "auto",
    depth_scale: float = 0.001,
    depth_format: str | None = None,
    split: str | None = None,
    splits_path: str | Path | None = None,
    file_list: str | Path | None = None,
) -> Any:
    """An indexable depth dataset (``image``, ``depth`` metres) for evaluation.

    ``data_format="auto"``: a ``datasets`` folder saved with ``save_to_disk`` or a :class:`DepthFolder`
    (``depth_scale`` = metres per stored unit of 16-bit PNGs without a ``depth_scale`` text chunk).
    Any other value is a format of :func:`mesa_hf.data.load_depth_dataset` (``nyu_mat`` with ``splits_path`` for
    the official 654 NYUv2 test images, ``nyu_sync``, ``ibims1``, ``csv``, ``folder``, ``parquet``, ...).
    """
    path = Path(path)
    if data_format != "auto":
        from mesa_hf.data import load_depth_dataset

        return load_depth_dataset(
            data_format,
            path,
            split=split,
            depth_format=depth_format,
            depth_scale=None if depth_format is None else 1.0 / depth_scale,  # the data layer wants units per metre
            splits_path=splits_path,
            file_list=file_list,
        )
    if not path.exists():
        raise FileNotFoundError(f"dataset folder not found: {path}")
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        import datasets

        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            split = split or ("test" if "test" in dataset else next(iter(dataset)))
            dataset = dataset[split]
        missing = {"image", "depth"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"dataset at {path} lacks columns {sorted(missing)} (has {dataset.column_names})")
        return dataset.with_format("numpy", columns=["depth"], output_all_columns=True)
    return DepthFolder(path, depth_scale)

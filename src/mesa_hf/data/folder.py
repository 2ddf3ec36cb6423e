"""One reader for folders of paired RGB images and depth maps, used by training (``--dataset folder:PATH``),
evaluation (``mesa-hf evaluate --data PATH``) and :func:`~mesa_hf.data.load_depth_dataset` (``"folder"``).

:func:`find_rgbd_pairs` recognises these layouts without being told (the first that applies wins):

1. ``image_pattern`` + ``depth_pattern`` when given: globs relative to the folder (``**`` allowed), paired in
   natural sorted order (``2`` before ``10``);
2. a CSV file in the folder with ``image_path`` and ``depth_path`` columns (paths relative to the CSV; optional
   ``scene``);
3. the BTS/GLPDepth NYUv2 "sync" layout: ``rgb_N.jpg`` with ``sync_depth_N.png`` beside it or in a sibling
   ``depth/`` folder (``rgb/`` + ``depth/``), at any depth below the folder;
4. ``rgb/`` (or ``image/``, ``images/``, ``color/``) and ``depth/`` sub-folders with files of the same name
   (``rgb/a/x.jpg`` ↔ ``depth/a/x.png``), at any depth below the folder;
5. files side by side whose names differ only in an image word and ``depth``: ``image_N`` ↔ ``depth_N``,
   ``N_rgb`` ↔ ``N_depth``, ``frame.color`` ↔ ``frame.depth`` (image words: image, img, rgb, color, colour).

The depth unit follows :func:`~mesa_hf.data.decode_depth`'s ``"auto"`` format: integer depth (16-bit PNG) is
``value × depth_scale`` metres with ``depth_scale`` defaulting to the PNG's own ``depth_scale`` text chunk, else
0.001 (millimetres); float depth (``.npy``, float TIFF) is metres. A folder that matches no layout raises
:class:`FolderLayoutError`, which lists what the folder holds and the options to pass.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")
DEPTH_EXTENSIONS = (".png", ".npy", ".tif", ".tiff", ".pgm")
IMAGE_FOLDER_NAMES = ("rgb", "image", "images", "color", "colour")
_IMAGE_WORD = re.compile(r"(?<![a-z])(?:image|img|rgb|colou?r)(?![a-z])", re.IGNORECASE)
_DEPTH_WORD = re.compile(r"(?<![a-z])depth(?![a-z])", re.IGNORECASE)

RECOGNISED_LAYOUTS = (
    "image_N + depth_N files side by side (also N_rgb + N_depth, x.color + x.depth), "
    "rgb/ (or image/, images/, color/) + depth/ sub-folders with matching names, "
    "BTS sync rgb_N.jpg + sync_depth_N.png, a CSV with image_path,depth_path columns, "
    "a datasets save_to_disk folder"
)
PATTERN_HINT = (
    "--image_pattern GLOB --depth_pattern GLOB (relative to the folder, paired in sorted order, e.g. "
    "--image_pattern 'left/*.jpg' --depth_pattern 'gt/*.png') and --depth_scale (metres per stored unit: 0.001 "
    "for millimetre PNGs, the default for 16-bit depth; float .npy/TIFF depth is read as metres)"
)


class FolderLayoutError(ValueError):
    """A dataset folder whose RGB-D layout is not recognised or is inconsistent; the message says what was found
    and which options (``image_pattern``, ``depth_pattern``, ``depth_scale``) to pass."""


@dataclass
class RGBDPairs:
    """The (image, depth) file pairs found in a folder, the layout that matched and a scene name per pair."""

    root: Path
    layout: str
    pairs: list[tuple[Path, Path]]
    scenes: list[str]

    def __len__(self) -> int:
        return len(self.pairs)


def natural_key(path: Path) -> list:
    """Sort key ordering numbers by value: ``image_2`` before ``image_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.as_posix())]


def _files(root: Path) -> Iterator[Path]:
    """Every file below `root`, skipping hidden files and folders."""
    for path in root.rglob("*"):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def _scene(root: Path, folder: Path) -> str:
    relative = folder.relative_to(root).as_posix()
    return root.name if relative == "." else relative


def find_rgbd_pairs(root: str | Path, image_pattern: str | None = None, depth_pattern: str | None = None) -> RGBDPairs:
    """Find the (image, depth) pairs of an RGB-D folder (layouts in the module docstring).

    Raises:
        FileNotFoundError: `root` is not a folder.
        FolderLayoutError: no layout matched, only one pattern was given, or a layout matched only in part.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    if (image_pattern is None) != (depth_pattern is None):
        raise FolderLayoutError(f"{root}: give both image_pattern and depth_pattern (got only one)")
    if image_pattern is not None:
        pairs = glob_pairs(root, image_pattern, depth_pattern)
        return RGBDPairs(root, "patterns", pairs, [_scene(root, image.parent) for image, _ in pairs])
    csvs = [p for p in sorted(root.glob("*.csv")) if _csv_columns(p) is not None]
    if len(csvs) > 1:
        names = ", ".join(p.name for p in csvs)
        raise FolderLayoutError(f"{root}: several CSV file lists ({names}); name one, e.g. 'csv:{csvs[0]}'")
    if csvs:
        pairs, scenes = csv_pairs(csvs[0])
        return RGBDPairs(root, f"csv {csvs[0].name}", pairs, scenes or [""] * len(pairs))
    if any(root.rglob("sync_depth_*.png")) and any(root.rglob("rgb_*.jpg")):
        pairs, scenes = nyu_sync_pairs(root)
        return RGBDPairs(root, "nyu_sync", pairs, scenes)
    for finder, layout in ((subfolder_pairs, "rgb/ + depth/"), (side_by_side_pairs, "image_N + depth_N")):
        found = finder(root)
        if found is not None:
            pairs, scenes = found
            return RGBDPairs(root, layout, pairs, scenes)
    raise FolderLayoutError(
        f"{root}: no RGB-D layout recognised; found {describe_folder(root)}. Recognised without options: "
        f"{RECOGNISED_LAYOUTS}. Otherwise pass {PATTERN_HINT}"
    )


def describe_folder(root: Path, max_examples: int = 2) -> str:
    """What a folder holds, for error messages: file counts by extension with example names, sub-folders."""
    files = sorted(_files(root), key=natural_key)
    if not files:
        return "no files"
    extensions = [p.suffix.lower() or "(no extension)" for p in files]
    by_extension = Counter(extensions)
    parts = []
    for extension, count in by_extension.most_common(6):
        examples = [p.relative_to(root).as_posix() for p, e in zip(files, extensions) if e == extension]
        parts.append(f"{count} {extension} (e.g. {', '.join(examples[:max_examples])})")
    text = f"{len(files)} files: " + "; ".join(parts)
    if len(by_extension) > 6:
        text += f"; {len(by_extension) - 6} more extensions"
    folders = sorted(p.name + "/" for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if folders:
        text += f"; sub-folders {', '.join(folders[:8])}" + (" ..." if len(folders) > 8 else "")
    return text


# ---------------------------------------------------------------- layouts


def glob_pairs(root: Path, image_pattern: str, depth_pattern: str) -> list[tuple[Path, Path]]:
    """Images and depth files matched by two globs relative to `root`, paired in natural sorted order."""
    matches = []
    for pattern in (image_pattern, depth_pattern):
        try:
            matches.append(sorted((p for p in root.glob(pattern) if p.is_file()), key=natural_key))
        except (NotImplementedError, ValueError) as err:
            message = f"{root}: pattern {pattern!r} must be a glob relative to the folder ({err})"
            raise FolderLayoutError(message) from err
    images, depths = matches
    if not images:
        raise FolderLayoutError(
            f"{root}: empty dataset, no file matches image_pattern {image_pattern!r}; the folder holds "
            f"{describe_folder(root)}"
        )
    if len(images) != len(depths):
        raise FolderLayoutError(
            f"{root}: {len(images)} images match {image_pattern!r} but {len(depths)} depth files match "
            f"{depth_pattern!r}; they are paired in sorted order and must be equally many"
        )
    return list(zip(images, depths))


def _csv_columns(csv_path: Path) -> tuple[str, str] | None:
    """The image and depth column names of a CSV file list, or None when it has none."""
    with open(csv_path, newline="") as handle:
        columns = next(csv.reader(handle), [])
    image_col = next((c for c in ("image_path", "image", "rgb", "file_name") if c in columns), None)
    depth_col = next((c for c in ("depth_path", "depth", "depth_map", "depth_file_name") if c in columns), None)
    return None if image_col is None or depth_col is None else (image_col, depth_col)


def csv_pairs(csv_path: Path) -> tuple[list[tuple[Path, Path]], list[str] | None]:
    """Pairs of a CSV file list (``image_path``, ``depth_path`` relative to the CSV; optional ``scene``)."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: CSV file not found")
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return [], None
    columns = _csv_columns(csv_path)
    if columns is None:
        raise ValueError(
            f"{csv_path}: needs an image column (image_path) and a depth column (depth_path), got {list(rows[0])}"
        )
    image_col, depth_col = columns
    pairs = [(csv_path.parent / r[image_col], csv_path.parent / r[depth_col]) for r in rows]
    scenes = [r.get("scene", "") for r in rows] if "scene" in rows[0] else None
    return pairs, scenes


def nyu_sync_pairs(root: Path, file_list: str | Path | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(rgb, sync_depth) pairs of the BTS/GLPDepth NYUv2 "sync" layout, from a BTS file list or a folder scan."""
    pairs, scenes = [], []
    if file_list is not None:
        file_list = Path(file_list)
        if not file_list.is_file():
            raise FileNotFoundError(f"{file_list}: file list not found")
        for line_no, line in enumerate(file_list.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or parts[1] == "None":
                raise ValueError(f"{file_list}:{line_no}: expected 'rgb_path depth_path [focal]', got {line!r}")
            rgb, depth = parts[0].lstrip("/"), parts[1].lstrip("/")
            pairs.append((root / rgb, root / depth))
            scenes.append(Path(rgb).parent.as_posix())
        return pairs, scenes
    for rgb in sorted(root.rglob("rgb_*.jpg"), key=natural_key):
        name = rgb.name.replace("rgb_", "sync_depth_").replace(".jpg", ".png")
        candidates = [rgb.with_name(name), rgb.parent.parent / "depth" / name]
        depth = next((c for c in candidates if c.is_file()), candidates[0])
        pairs.append((rgb, depth))
        scenes.append(_scene(root, rgb.parent) if rgb.parent.name != "rgb" else _scene(root, rgb.parent.parent))
    return pairs, scenes


def _depth_names(stem: str) -> list[str]:
    """The depth file stems an image stem may pair with: itself, and each image word replaced by ``depth``."""
    replaced = [stem[: m.start()] + "depth" + stem[m.end() :] for m in _IMAGE_WORD.finditer(stem)]
    return [name.lower() for name in (stem, *replaced)]


def _pair_by_name(
    images: list[Path], depth_by_key: dict[tuple[str, str], Path], key, where: str
) -> list[tuple[Path, Path]]:
    """Pair each image with the depth file of a matching name; raise if only some images have one."""
    pairs, unmatched = [], []
    for image in images:
        depth = next((depth_by_key[k] for k in key(image) if k in depth_by_key), None)
        if depth is None:
            unmatched.append(image)
        else:
            pairs.append((image, depth))
    if pairs and unmatched:
        raise FolderLayoutError(
            f"{where}: {len(unmatched)} of {len(images)} images have no depth file of the same name "
            f"(first: {unmatched[0]}); remove them or pass {PATTERN_HINT}"
        )
    return pairs


def subfolder_pairs(root: Path) -> tuple[list[tuple[Path, Path]], list[str]] | None:
    """Pairs of ``rgb/`` (``image/``, ``images/``, ``color/``) + sibling ``depth/`` folders, matched by relative
    name without extension (or with an image word replaced by ``depth``); None when there are no such folders."""
    image_dirs = [
        d
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=natural_key)
        if d.name.lower() in IMAGE_FOLDER_NAMES and (d.parent / "depth").is_dir()
    ]
    pairs, scenes = [], []
    for image_dir in image_dirs:
        depth_dir = image_dir.parent / "depth"
        depth_by_key = {
            (p.relative_to(depth_dir).parent.as_posix(), p.stem.lower()): p
            for p in sorted(_files(depth_dir), key=natural_key)
            if p.suffix.lower() in DEPTH_EXTENSIONS
        }
        images = sorted((p for p in _files(image_dir) if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)

        def key(image, image_dir=image_dir):
            folder = image.relative_to(image_dir).parent.as_posix()
            return [(folder, name) for name in _depth_names(image.stem)]

        found = _pair_by_name(images, depth_by_key, key, f"{image_dir} + {depth_dir}")
        pairs += found
        scenes += [_scene(root, image_dir.parent)] * len(found)
    return (pairs, scenes) if pairs else None


def side_by_side_pairs(root: Path) -> tuple[list[tuple[Path, Path]], list[str]] | None:
    """Pairs of files in one folder whose names differ in an image word and ``depth`` (``image_0.png`` ↔
    ``depth_0.png``), at any depth below `root`; None when no file name has an image word with a depth partner."""
    files = sorted(_files(root), key=natural_key)
    depth_by_key = {
        (p.parent.as_posix(), p.stem.lower()): p
        for p in files
        if p.suffix.lower() in DEPTH_EXTENSIONS and _DEPTH_WORD.search(p.stem)
    }
    images = [
        p
        for p in files
        if p.suffix.lower() in IMAGE_EXTENSIONS and _IMAGE_WORD.search(p.stem) and not _DEPTH_WORD.search(p.stem)
    ]

    def key(image):
        return [(image.parent.as_posix(), name) for name in _depth_names(image.stem)[1:]]

    pairs = _pair_by_name(images, depth_by_key, key, str(root))
    return (pairs, [_scene(root, image.parent) for image, _ in pairs]) if pairs else None


# ---------------------------------------------------------------- datasets saved with save_to_disk


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()


def load_saved_depth_dataset(path: Path, split: str | None = None):
    """A ``save_to_disk`` folder with ``image`` and ``depth`` columns (a DatasetDict: `split`, else ``test``, else
    its first split)."""
    import datasets

    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        split = split or ("test" if "test" in dataset else next(iter(dataset)))
        if split not in dataset:
            raise ValueError(f"dataset at {path} has splits {list(dataset)}, not {split!r}")
        dataset = dataset[split]
    missing = {"image", "depth"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"dataset at {path} lacks columns {sorted(missing)} (has {dataset.column_names})")
    return dataset

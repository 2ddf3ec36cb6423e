"""Image bytes that cannot be read, skipped and counted rather than raised: shared by the LSUN LMDB reader
(`mesa_hf.data.lsun`) and the webdataset / parquet shard readers (`mesa_hf.data.shards`).

Each skipped entry is logged (logger ``mesa_hf.data``, the first :data:`MAX_LOGGED_BAD_ENTRIES` per process) and
counted in a :class:`BadEntries`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

logger = logging.getLogger("mesa_hf.data")

MAX_LOGGED_BAD_ENTRIES = 20
_FORMAT_EXTENSIONS = {"WEBP": "webp", "JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def check_image_bytes(value: bytes | None) -> tuple[str, tuple[int, int]]:
    """Decode `value` completely with Pillow.

    Returns:
        (file extension of the sniffed format, e.g. ``"webp"``, (height, width)).
    Raises:
        ValueError: empty or undecodable bytes (the message says which).
    """
    if not value:
        raise ValueError("empty value")
    try:
        with Image.open(io.BytesIO(value)) as img:
            img.load()
            return _FORMAT_EXTENSIONS.get(img.format or "", (img.format or "img").lower()), (img.height, img.width)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"undecodable image ({type(err).__name__}: {err})") from err


@dataclass
class BadEntries:
    """Entries skipped while reading: ``count`` and, per entry, ``"<source>/<key>: <why>"`` in ``examples`` (the
    first :data:`MAX_LOGGED_BAD_ENTRIES`). Counts the reading done in this process only (DataLoader workers log
    theirs)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_LOGGED_BAD_ENTRIES:
            self.examples.append(f"{where}: {reason}")

    def __str__(self) -> str:
        return f"{self.count} bad entries skipped" + (f" (first: {self.examples[0]})" if self.examples else "")


_logged_bad_entries = 0


def log_bad_entry(report: BadEntries | None, where: str, reason: str) -> None:
    """Count a skipped entry in `report` and log it (the first :data:`MAX_LOGGED_BAD_ENTRIES` of this process)."""
    global _logged_bad_entries
    if report is not None:
        report.add(where, reason)
    if _logged_bad_entries < MAX_LOGGED_BAD_ENTRIES:
        _logged_bad_entries += 1
        logger.warning("skipping bad entry %s: %s", where, reason)


__all__ = ["MAX_LOGGED_BAD_ENTRIES", "BadEntries", "check_image_bytes", "log_bad_entry"]

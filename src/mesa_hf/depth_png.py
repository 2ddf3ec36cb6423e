"""The 16-bit depth PNG's scale text chunk, shared by the writer (`mesa_hf.evaluation.io.save_depth_png16`,
used by ``mesa-hf predict``) and the readers (`mesa_hf.evaluation.io.load_depth_png16`, the data loaders'
``"auto"`` depth format)."""

from __future__ import annotations

from collections.abc import Mapping

DEPTH_PNG_SCALE_KEY = "depth_scale"
"""PNG text chunk holding ``"<metres> m per unit"``."""


def depth_png_scale_text(scale: float) -> str:
    """The chunk's text for ``scale`` metres per stored unit, e.g. ``"0.001 m per unit"``."""
    return f"{scale:g} m per unit"


def png_text_scale(text: Mapping[str, object], source: object) -> float | None:
    """Metres per stored unit from a PNG's text chunks (``Image.text``), or None when it has no scale chunk.

    Raises ValueError naming ``source`` when the chunk is there but does not start with a number."""
    if DEPTH_PNG_SCALE_KEY not in text:
        return None
    value = text[DEPTH_PNG_SCALE_KEY]
    try:
        return float(str(value).split()[0])
    except (ValueError, IndexError) as err:
        raise ValueError(f"{source}: unreadable {DEPTH_PNG_SCALE_KEY!r} text chunk {value!r}") from err

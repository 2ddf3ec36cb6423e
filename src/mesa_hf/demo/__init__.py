"""The web demo (``mesa-hf demo``): a Gradio page for images and point clouds of one checkpoint, served offline.

:mod:`mesa_hf.demo.engine` holds what the page computes (no Gradio needed); :mod:`mesa_hf.demo.app` builds the page
(``pip install "mesa-hf[demo]"``). ``build_demo`` and ``launch_demo`` are imported from there on first use, so
importing this package does not import Gradio.
"""

from __future__ import annotations

from typing import Any

from .engine import DEFAULT_CHECKPOINT, DemoEngine, DemoLimits, DepthResult, get_engine, resolve_checkpoint

__all__ = [
    "DEFAULT_CHECKPOINT",
    "DemoEngine",
    "DemoLimits",
    "DepthResult",
    "build_demo",
    "get_engine",
    "launch_demo",
    "resolve_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in ("build_demo", "launch_demo"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

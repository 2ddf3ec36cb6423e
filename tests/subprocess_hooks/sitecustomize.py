"""Start-up hooks of the processes the tests launch, each switched on by an environment variable:

* ``MESA_TEST_WRITE_LOG=DIR`` with ``MESA_TEST_WRITE_ROOT=PATH``: every file opened for writing, directory made and
  rename under PATH is appended to ``DIR/writes-node<GROUP_RANK>-rank<RANK>.txt`` (a Python audit hook; files written
  by native code, e.g. safetensors, show up through the mkdir/rename of their folder).
* ``MESA_TEST_LOCAL_HUB=DIR``: `HfApi.create_repo` / `upload_folder` go to ``DIR/remote`` and each upload writes a
  marker in ``DIR/uploads``; at exit every worker writes ``DIR/exit-rank<RANK>`` with the uploads it saw by then.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path


def _watch_writes(log_dir: str, root: str) -> None:
    rank, node = os.environ.get("RANK", "none"), os.environ.get("GROUP_RANK", "none")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(log_dir) / f"writes-node{node}-rank{rank}.txt", "a", buffering=1)  # noqa: SIM115
    root = os.path.realpath(root)
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def under_root(path) -> str | None:
        if isinstance(path, int):
            return None
        path = os.path.realpath(os.fsdecode(path))
        return path if path == root or path.startswith(root + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            is_write = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & writing)
            paths = [under_root(path)] if is_write else []
        elif event in ("os.mkdir", "os.rename"):
            paths = [under_root(p) for p in (args[:1] if event == "os.mkdir" else args[:2])]
        else:
            return
        paths = [p for p in paths if p]
        if paths:
            log.write(f"{event} {' '.join(paths)}\n")

    sys.addaudithook(hook)


def _local_hub(folder: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from mesa_test_local_hub import LocalHub

    folder = Path(folder)
    LocalHub(folder / "remote", markers=folder / "uploads").install()
    rank = os.environ.get("RANK")
    if rank is not None:

        def record_exit() -> None:  # registered first, so it runs after the script's own exit handlers
            seen = sorted(p.name for p in (folder / "uploads").glob("upload-*"))
            folder.mkdir(parents=True, exist_ok=True)  # the main process may not have made it yet
            (folder / f"exit-rank{rank}").write_text("\n".join(seen))

        atexit.register(record_exit)


if os.environ.get("MESA_TEST_WRITE_LOG"):
    _watch_writes(os.environ["MESA_TEST_WRITE_LOG"], os.environ["MESA_TEST_WRITE_ROOT"])
if os.environ.get("MESA_TEST_LOCAL_HUB"):
    _local_hub(os.environ["MESA_TEST_LOCAL_HUB"])

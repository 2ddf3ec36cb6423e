"""Test setup: offline Hugging Face libraries with a temporary cache, set before any HF import."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="mesa-hf-tests-hf-home-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["HF_HOME"] = os.environ.get("MESA_HF_TEST_HF_HOME", _HF_HOME)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def running_in_ci() -> bool:
    """True when the environment variable CI is set to anything but empty, 0, false or no (CI=true in CI)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real RGB-D samples beside the repository (../shared/data), for the extra real-data checks.

    Every capability is also tested on generated fixtures (tests/rgbd_fixtures.py); a missing folder skips the
    real-data checks, except under CI=true, where it fails them naming the folder.
    """
    if not SHARED_DATA.is_dir():
        message = f"real RGB-D samples not found: {SHARED_DATA} is missing (../shared/data beside the repository)"
        if running_in_ci():
            pytest.fail(f"CI is set and {message}; the real-data checks must run in CI", pytrace=False)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def nyu_test_folder(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A generated ``nyu_test10``-style folder of 3 views at 480x640 (``image_i.png``, ``depth_i.png`` in mm,
    ``nyu2_mini_test.csv``) and its stored depths in metres."""
    from .rgbd_fixtures import write_nyu_test_folder

    root = tmp_path_factory.mktemp("nyu_test3")
    _, depths = write_nyu_test_folder(root, num=3)
    return root, depths


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield

"""Every code block of README.md runs as written, in a folder laid out like a user's after `make demo`.

A block is skipped only when the line before it says why (``<!-- readme-test: skip: REASON -->``): blocks that
need a GPU, the network, a dataset download, or are the test command itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaImageProcessor

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SKIP_MARK = re.compile(r"<!--\s*readme-test:\s*skip:\s*(?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[A-Za-z]*)\s*$")


def readme_blocks() -> list[tuple[int, str, str, str | None]]:
    """(line number, language, code, skip reason) for every fenced block of README.md."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match or not match.group("lang"):
            index += 1
            continue
        start = index
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        skip = SKIP_MARK.search(previous)
        blocks.append((start + 1, match.group("lang"), "\n".join(lines[start + 1 : end]), skip and skip["reason"]))
        index = end + 1
    return blocks


BLOCKS = [block for block in readme_blocks() if block[1] in ("python", "bash")]
RUNNABLE = [block for block in BLOCKS if block[3] is None]  # skipped blocks are checked for a reason, not collected


def test_readme_has_runnable_blocks_and_every_skip_has_a_reason():
    assert len(RUNNABLE) >= 4
    for line, _, _, reason in BLOCKS:
        assert reason is None or len(reason) > 10, f"README.md:{line}: a skipped block must say why"


def _textured_photo(height: int = 480, width: int = 640, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    base = np.stack([rows * 200, cols * 200, (rows + cols) * 100], axis=2)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """A working folder as after `make demo`: a checkpoint, a photo and a small RGB-D folder in millimetres."""
    root = tmp_path_factory.mktemp("readme-user")
    torch.manual_seed(0)
    model = MeSaForDepthEstimation(MeSaConfig.from_preset("test")).eval()
    model.save_pretrained(root / "outputs" / "main-job" / "finetuned")
    MeSaImageProcessor().save_pretrained(root / "outputs" / "main-job" / "finetuned")
    _textured_photo().save(root / "photo.png")
    rgbd = root / "my_rgbd"
    rgbd.mkdir()
    for i in range(3):
        _textured_photo(seed=i + 1).save(rgbd / f"image_{i}.png")
        depth_mm = (1000 + 300 * i + np.linspace(0, 2000, 640)[None, :] + np.zeros((480, 1))).astype(np.uint16)
        Image.fromarray(depth_mm).save(rgbd / f"depth_{i}.png")
    (root / "examples").symlink_to(REPO / "examples")
    return root


@pytest.mark.parametrize("line,language,code,skip", RUNNABLE, ids=[f"README.md:{b[0]}-{b[1]}" for b in RUNNABLE])
def test_readme_block_runs(line, language, code, skip, user_folder):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "2")
    if language == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=user_folder, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (
        f"README.md:{line} ({language}) failed:\n{code}\n--- output ---\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )

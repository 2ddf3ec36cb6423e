"""Checkpoint arguments given as Hub model ids: offline they load from the Hugging Face cache, else one clear line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants, scan_cache_dir
from PIL import Image

from mesa_hf import MeSaImageProcessor
from mesa_hf.cli import main
from mesa_hf.evaluation.inference import load_checkpoint
from mesa_hf.hub import resolve_checkpoint

from .helpers import tiny_depth_model

REPO_ID = "mesa-test-org/tiny-mesa"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """Put `folder`'s files into `cache` in huggingface_hub's layout: ``models--org--name/blobs/<sha256>``,
    ``snapshots/<commit>/<file>`` symlinked to its blob, ``refs/main`` holding the commit. Returns the snapshot."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """A Hugging Face cache holding a tiny MeSa checkpoint as ``REPO_ID`` (the cache the tests' process reads)."""
    folder = tmp_path / "saved"
    tiny_depth_model(seed=3).save_pretrained(folder)
    MeSaImageProcessor(size={"height": 64, "width": 96}).save_pretrained(folder)
    cache = tmp_path / "hf-home" / "hub"
    write_hub_cache(cache, REPO_ID, folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hand_written_cache_is_what_huggingface_hub_reads(hub_cache):
    (repo,) = scan_cache_dir(hub_cache).repos
    assert repo.repo_id == REPO_ID and set(repo.refs) == {"main"}
    (revision,) = repo.revisions
    assert revision.commit_hash == COMMIT
    assert {f.file_name for f in revision.files} == {"config.json", "model.safetensors", "preprocessor_config.json"}


def test_hub_id_loads_offline_from_the_cache(hub_cache):
    assert constants.HF_HUB_OFFLINE, "the tests run offline (conftest)"
    assert resolve_checkpoint(REPO_ID) == hub_cache / "models--mesa-test-org--tiny-mesa" / "snapshots" / COMMIT
    model, processor = load_checkpoint(REPO_ID)
    reference = tiny_depth_model(seed=3)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert processor.size == {"height": 64, "width": 96}
    assert resolve_checkpoint(REPO_ID, revision=COMMIT).name == COMMIT


def test_missing_hub_id_is_one_clear_line(hub_cache, tmp_path, capsys):
    with pytest.raises(FileNotFoundError) as raised:
        resolve_checkpoint("mesa-test-org/not-there")
    message = str(raised.value)
    assert "'mesa-test-org/not-there' not found" in message and str(hub_cache) in message
    assert "HF_HUB_OFFLINE is set" in message and "hf download mesa-test-org/not-there" in message
    image = tmp_path / "room.png"
    Image.fromarray(np.zeros((64, 96, 3), dtype=np.uint8)).save(image)
    for argv in (
        ["predict", str(image), "--checkpoint", "mesa-test-org/not-there", "--output-dir", str(tmp_path / "out")],
        ["evaluate", "mesa-test-org/not-there", "--data", str(tmp_path)],
        ["cka", REPO_ID, "mesa-test-org/not-there", "--images", str(image), "--output-dir", str(tmp_path / "cka")],
    ):
        assert main(argv) == 2, argv[0]
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(err) == 1 and "HF_HUB_OFFLINE is set" in err[0], argv[0]
    # a path that cannot be a Hub id keeps the folder message
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        resolve_checkpoint(tmp_path / "no" / "such" / "folder")


def test_evaluate_write_model_card_needs_a_local_folder(hub_cache, tmp_path, capsys):
    assert main(["evaluate", REPO_ID, "--data", str(tmp_path), "--write-model-card"]) == 2
    assert "--write-model-card writes into a local checkpoint folder" in capsys.readouterr().err


def test_cli_predicts_with_a_hub_id_in_a_fresh_offline_hf_home(tmp_path):
    """The console command in a new process whose HF_HOME is a temporary cache (nothing monkeypatched)."""
    folder = tmp_path / "saved"
    tiny_depth_model(seed=3).save_pretrained(folder)
    MeSaImageProcessor(size={"height": 64, "width": 96}).save_pretrained(folder)
    hf_home = tmp_path / "hf-home"
    write_hub_cache(hf_home / "hub", REPO_ID, folder)
    image = tmp_path / "room.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(image)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    command = [sys.executable, "-m", "mesa_hf.cli", "predict", str(image), "--checkpoint", REPO_ID]
    command += ["--output-dir", str(tmp_path / "out"), "--outputs", "npy", "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "out" / "room_depth.npy").shape == (64, 96)
    command[command.index(REPO_ID)] = "mesa-test-org/not-there"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"not a model in the Hugging Face cache ({hf_home / 'hub'})" in done.stderr

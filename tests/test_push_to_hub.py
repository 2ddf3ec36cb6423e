"""`--push_to_hub` offline: HfApi.create_repo / upload_folder redirected to a temporary "remote" folder; the pushed
folder then loads with from_pretrained and with pipeline("depth-estimation"). On 2 torchrun processes the Hub is
redirected in every process (tests/subprocess_hooks/sitecustomize.py): rank 0 uploads once, rank 1 waits for it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaImageProcessor
from mesa_hf.hub import build_model_card, push_to_hub

from .multiprocess_support import FINETUNE, FINETUNE_ARGS, run_script
from .subprocess_hooks.mesa_test_local_hub import LocalHub

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def local_hub(tmp_path, monkeypatch) -> LocalHub:
    hub = LocalHub(tmp_path / "remote")
    hub.install(monkeypatch.setattr)
    return hub


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"mesa_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_push_to_hub_writes_a_loadable_repository(local_hub):
    torch.manual_seed(0)
    model = MeSaForDepthEstimation(MeSaConfig.from_preset("test")).eval()
    processor = MeSaImageProcessor(size={"height": 64, "width": 64})
    card = build_model_card(
        model,
        model_id="someone/mesa-test",
        stages=[{"name": "finetune", "objective": "SiLog", "data": "synthetic", "steps": 3, "notes": "-"}],
    )
    url = push_to_hub(model, processor, "someone/mesa-test", model_card=card, private=True)
    assert url.endswith("/commit/1")
    assert local_hub.created == [{"repo_id": "someone/mesa-test", "repo_type": "model", "private": True}]
    remote = local_hub.root / "someone/mesa-test"
    files = set(local_hub.commits[0]["files"])
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= files
    assert {"modeling_mesa.py", "configuration_mesa.py"} <= files  # the code for trust_remote_code
    assert "auto_map" in json.loads((remote / "config.json").read_text())
    assert "| finetune | SiLog | synthetic | 3 |" in (remote / "README.md").read_text()
    reloaded = MeSaForDepthEstimation.from_pretrained(remote).eval()
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded(pixels).predicted_depth, model(pixels).predicted_depth)


def test_finetune_script_pushes_its_folder_and_the_pipeline_loads_it(tmp_path, local_hub, capsys):
    finetune = _load_script("finetune")
    argv = [
        "--model_name_or_path", "test", "--output_dir", str(tmp_path / "ft"), "--max_train_steps", "3",
        "--per_device_train_batch_size", "4", "--num_synthetic_samples", "8", "--num_eval_samples", "4",
        "--image_size", "64", "64", "--checkpointing_steps", "100",
        "--push_to_hub", "--hub_model_id", "someone/mesa-ft",
    ]  # fmt: skip
    assert finetune.main(argv) == 0
    out = capsys.readouterr().out
    assert "pushed: https://huggingface.co/someone/mesa-ft/commit/1" in out and "average training depth map" in out
    remote = local_hub.root / "someone/mesa-ft"
    results = json.loads((remote / "stage_results.json").read_text())
    assert results["stage"] == "finetune" and results["global_step"] == 3
    card = (remote / "README.md").read_text()
    assert "someone/mesa-ft" in card and "| finetune |" in card and "held-out" in card
    from transformers import pipeline

    estimator = pipeline("depth-estimation", model=str(remote))
    image = Image.fromarray((np.random.default_rng(0).random((50, 80, 3)) * 255).astype(np.uint8))
    prediction = estimator(image)
    assert tuple(prediction["predicted_depth"].shape) == (50, 80)
    assert torch.isfinite(prediction["predicted_depth"]).all()


def test_push_needs_a_repository_name(tmp_path, capsys):
    finetune = _load_script("finetune")
    with pytest.raises(SystemExit):
        finetune.main(["--model_name_or_path", "test", "--output_dir", str(tmp_path), "--push_to_hub"])
    assert "--push_to_hub needs --hub_model_id" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # stopped before anything was trained or written


def test_two_processes_push_once_from_the_main_process_and_the_other_waits(tmp_path):
    hub = tmp_path / "hub"
    args = [*FINETUNE_ARGS, "--output_dir", str(tmp_path / "ft"), "--push_to_hub", "--hub_model_id", "someone/mesa-2p"]
    done = run_script(FINETUNE, args, tmp_path / "cache", processes=2, env={"MESA_TEST_LOCAL_HUB": str(hub)})
    uploads = sorted(p.name for p in (hub / "uploads").iterdir())
    assert len(uploads) == 1 and uploads[0].startswith("upload-rank0-")  # one upload, from the main process
    assert done.stdout.count("pushed: https://huggingface.co/someone/mesa-2p/commit/1") == 1
    # every worker ran the hooks; rank 1 left only after the upload (it waited at the barrier): without the barrier
    # in push_from_main, rank 1 exits having seen no upload (checked) and this fails
    assert (hub / "exit-rank0").read_text() == (hub / "exit-rank1").read_text() == uploads[0]
    remote = hub / "remote" / "someone/mesa-2p"
    results = json.loads((remote / "stage_results.json").read_text())
    assert results["global_step"] == 3 and results["resolved_recipe"]["num_processes"] == 2
    assert MeSaForDepthEstimation.from_pretrained(remote).config.model_type == "mesa"

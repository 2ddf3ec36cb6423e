import os

import pytest
import yaml
from huggingface_hub import ModelCard

from mesa_hf import MeSaImageProcessor, save_for_sharing
from mesa_hf.hub import atomic_save_pretrained, build_model_card

from .helpers import tiny_depth_model

RESULT = {
    "dataset": "NYUv2",
    "protocol": "nyuv2: Eigen crop, 1e-3-10 m, no TTA",
    "abs_rel": 0.1234,
    "rmse": 0.4567,
    "log10": 0.05,
    "d1": 0.81,
    "d2": 0.95,
    "d3": 0.99,
}


def test_model_card_is_filled_with_stages_results_and_metadata(tmp_path):
    model = tiny_depth_model()
    stages = [
        {"name": "masked", "objective": "SimMIM", "data": "synthetic images", "steps": 200, "notes": "192x192"},
        {"name": "finetune", "objective": "SiLog", "data": "NYUv2 sync", "steps": 300, "notes": "480x480"},
    ]
    card = build_model_card(model, model_id="mesa-test", preset="test", stages=stages, results=[RESULT])
    text = str(card)
    assert "{{" not in text and "{%" not in text
    assert "| masked | SimMIM | synthetic images | 200 | 192x192 |" in text
    assert "| NYUv2 | nyuv2: Eigen crop, 1e-3-10 m, no TTA | 0.1234 | 0.4567 |" in text
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["pipeline_tag"] == "depth-estimation" and metadata["library_name"] == "transformers"
    metrics = {m["type"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    assert metrics["rmse"] == pytest.approx(0.4567) and metrics["d1"] == pytest.approx(0.81)

    folder = save_for_sharing(model, MeSaImageProcessor(), tmp_path / "card", model_card=card)
    assert ModelCard.load(folder / "README.md").data.pipeline_tag == "depth-estimation"


def test_atomic_save_keeps_the_old_checkpoint_when_writing_fails(tmp_path):
    target = tmp_path / "checkpoint"
    tiny_depth_model().save_pretrained(target)
    before = sorted(os.listdir(target))

    def failing_save(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save_pretrained(failing_save, target)
    assert sorted(os.listdir(target)) == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"], "temporary folders left behind"


def test_baselines_go_in_the_text_never_in_the_model_index():
    baseline = {**RESULT, "name": "average training depth map", "abs_rel": 0.4321, "rmse": 1.2345}
    baseline.pop("log10")
    card = build_model_card(tiny_depth_model(), model_id="mesa-test", results=[RESULT], baselines=[baseline])
    text = str(card)
    metadata = yaml.safe_load(text.split("---")[1])
    (entry,) = metadata["model-index"]
    values = [m["value"] for result in entry["results"] for m in result["metrics"]]
    assert len(values) == 6 and pytest.approx(0.4321) not in values and pytest.approx(1.2345) not in values
    assert "| average training depth map | nyuv2: Eigen crop, 1e-3-10 m, no TTA | 0.4321 | 1.2345 |  | 0.8100 |" in text
    assert text.index("| NYUv2 |") < text.index("references that are not this model") < text.index("0.4321")
    # no baselines: no comparison paragraph
    assert "references that are not this model" not in str(build_model_card(tiny_depth_model(), model_id="m"))


def test_stage_card_keeps_the_average_depth_baseline_out_of_the_model_index(tmp_path):
    from mesa_hf.training.runner import card_baselines, card_results

    after = {"abs_rel": 0.2, "rmse": 0.5, "log10": 0.08, "d1": 0.7, "d2": 0.9, "d3": 0.97}
    baseline = {"abs_rel": 0.45, "rmse": 1.1, "log10": 0.2, "d1": 0.3, "d2": 0.6, "d3": 0.8}
    recorded = {"eval_after": after, "baseline": baseline}
    card = build_model_card(
        tiny_depth_model(), model_id="stage", results=card_results(recorded), baselines=card_baselines(recorded)
    )
    metadata = yaml.safe_load(str(card).split("---")[1])
    (entry,) = metadata["model-index"]
    datasets = {result["dataset"]["name"] for result in entry["results"]}
    metrics = {m["type"]: m["value"] for result in entry["results"] for m in result["metrics"]}
    assert datasets == {"held-out"} and metrics["abs_rel"] == pytest.approx(0.2) and metrics["d1"] == pytest.approx(0.7)
    assert "| held-out: average training depth map |" in str(card) and "| 0.4500 | 1.1000 |" in str(card)

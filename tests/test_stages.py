"""The stage registry and run_stage: defaults with sources, collation, every objective learning on the synthetic
world at test size, and stage chaining (encoder tensors carried exactly, new heads initialised, stages recorded)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaForMaskedImageModeling, MeSaForSelfSupervisedDepth
from mesa_hf.training import MeSaTrainingArguments
from mesa_hf.training.stage_eval import depth_metrics, evaluate_constant_map, mean_depth_map
from mesa_hf.training.stages import (
    EXPECTED_LOADING_MESSAGES,
    STAGES,
    StageResult,
    get_stage,
    hyperparameter_table,
    load_stage_model,
    run_stage,
    run_stages,
    stack_collator,
    training_arguments,
)

SIZE = (64, 64)
COMMON = {"image_size": SIZE, "num_eval_samples": 6, "checkpointing_steps": None, "logging_steps": 5}


def _window_means(losses: list[float], window: int) -> tuple[float, float]:
    return sum(losses[:window]) / window, sum(losses[-window:]) / window


# ------------------------------------------------------------------------------------------- registry and defaults


def test_registry_maps_each_stage_to_its_model_class_and_data_kind():
    assert get_stage("masked").model_class is MeSaForMaskedImageModeling
    assert get_stage("geometric").model_class is MeSaForSelfSupervisedDepth
    assert get_stage("supervised").model_class is MeSaForDepthEstimation
    assert get_stage("finetune").model_class is MeSaForDepthEstimation
    assert [STAGES[s].dataset_kind for s in ("masked", "geometric", "supervised", "finetune")] == [
        "images",
        "video",
        "depth",
        "depth",
    ]
    with pytest.raises(ValueError, match="unknown stage 'pose'"):
        get_stage("pose")


def test_finetune_defaults_are_the_mim_depth_nyuv2_recipe(tmp_path):
    args = training_arguments("finetune", tmp_path, config=MeSaConfig.from_preset("base"))
    assert (args.per_device_train_batch_size, args.num_train_epochs) == (24, 25)
    assert (args.learning_rate, args.min_learning_rate, args.weight_decay) == (5e-4, 3e-5, 0.05)
    assert (args.layer_decay, args.lr_schedule, args.final_subdir) == (0.9, "mim_depth", "")
    large = training_arguments("finetune", tmp_path, config=MeSaConfig.from_preset("large"))
    assert large.layer_decay == 0.85
    assert STAGES["finetune"].backbone["image_size"].value == 480
    assert STAGES["finetune"].backbone["window_size"].value == 30
    # every default names its source
    rows = hyperparameter_table()
    assert rows and all(row["source"] for row in rows)
    # SimMIM warm-up epochs become steps from the dataset size; overrides win; None overrides are ignored
    masked = training_arguments("masked", tmp_path, num_train_samples=1280, learning_rate=1e-3, max_train_steps=None)
    assert masked.num_warmup_steps == 10 * (1280 // 128) and masked.learning_rate == 1e-3
    assert masked.max_grad_norm == 5.0 and masked.layer_decay is None
    with pytest.raises(ValueError, match="recipe must be one of"):
        training_arguments("masked", tmp_path, recipe="fast")


def test_stack_collator_stacks_shared_keys_and_rejects_ragged_rows():
    rows = [
        {"pixel_values": torch.full((3, 4, 4), float(i)), "labels": torch.ones(4, 4), "name": "x"} for i in range(3)
    ]
    rows[1]["extra"] = torch.zeros(2)
    batch = stack_collator(rows)
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (3, 3, 4, 4) and batch["pixel_values"][2].eq(2).all()
    rows[2]["labels"] = torch.ones(5, 4)
    with pytest.raises(ValueError, match="rows of `labels` differ in shape"):
        stack_collator(rows)
    with pytest.raises(ValueError, match="empty batch"):
        stack_collator([])


def test_depth_metrics_and_mean_depth_map_by_hand():
    gt = torch.tensor([[[1.0, 2.0], [4.0, 0.0]]])
    pred = torch.tensor([[[1.0, 1.0], [5.0, 3.0]]])
    metrics = depth_metrics(pred, gt)
    # valid pixels 1, 2, 4 (0 = no ground truth): abs_rel = (0 + 0.5 + 0.25) / 3, delta1: 1 and 1.25 -> 1/3 below
    assert metrics["abs_rel"] == pytest.approx(0.25)
    assert metrics["rmse"] == pytest.approx(((0 + 1 + 1) / 3) ** 0.5)
    assert metrics["d1"] == pytest.approx(1 / 3)
    # median scaling: pred x 2 on the valid pixels (median 1 -> 2), the same for any global scale of pred
    scaled = depth_metrics(pred * 3.0, gt, median_scaling=True)
    assert scaled["abs_rel"] == pytest.approx((1.0 + 0.0 + 1.5) / 3)
    assert depth_metrics(pred, gt, median_scaling=True)["abs_rel"] == pytest.approx(scaled["abs_rel"])
    rows = [{"labels": torch.tensor([[1.0, 0.0]])}, {"labels": torch.tensor([[3.0, 0.0]])}]
    assert mean_depth_map(rows).tolist() == [[2.0, 2.0]]  # the never-valid pixel gets the overall mean
    baseline = evaluate_constant_map(torch.tensor([[2.0, 2.0]]), rows)
    assert baseline["abs_rel"] == pytest.approx((1.0 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="shape"):
        depth_metrics(pred, gt[..., :1])


# ------------------------------------------------------------------------------------------- learning and chaining


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    """masked -> geometric -> supervised on the synthetic world (test preset, 64x64), then finetune."""
    root = tmp_path_factory.mktemp("stages")
    steps = {"masked": 40, "geometric": 40, "supervised": 60}
    results = {}
    source = "test"
    for stage, lr in (("masked", 2e-3), ("geometric", 1e-3), ("supervised", 2e-3)):
        results[stage] = run_stage(
            stage,
            source,
            output_dir=root / stage,
            max_train_steps=steps[stage],
            learning_rate=lr,
            num_synthetic_samples=48,
            per_device_train_batch_size=8 if stage != "geometric" else 4,
            **COMMON,
        )
        source = str(root / stage)
    return root, results


def test_every_objective_loss_falls_on_the_synthetic_world(chained):
    _, results = chained
    for stage in results:
        losses = json.loads((result_path := (chained[0] / stage / "stage_results.json")).read_text())["loss_curve"]
        first, last = losses[0], min(losses[-2:])
        assert last < first, f"{stage}: loss did not fall ({losses}, {result_path})"
        print(f"{stage}: windowed loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    masked = results["masked"]
    assert masked.eval_after["masked_loss"] < 0.8 * masked.eval_before["masked_loss"]
    supervised = results["supervised"]
    assert supervised.eval_after["abs_rel"] < supervised.eval_before["abs_rel"]
    print(
        "held-out: masked loss {:.3f} -> {:.3f}; geometric median-scaled AbsRel {:.3f} -> {:.3f}; "
        "supervised AbsRel {:.3f} -> {:.3f} (average depth map {:.3f})".format(
            masked.eval_before["masked_loss"],
            masked.eval_after["masked_loss"],
            results["geometric"].eval_before["median_scaled_abs_rel"],
            results["geometric"].eval_after["median_scaled_abs_rel"],
            supervised.eval_before["abs_rel"],
            supervised.eval_after["abs_rel"],
            supervised.baseline["abs_rel"],
        )
    )


def test_next_stage_carries_the_encoder_exactly_and_initialises_new_heads(chained):
    root, results = chained
    saved = load_file(root / "masked" / "model.safetensors")
    model, info = load_stage_model("geometric", root / "masked", {"pose_source": "dataset"})
    state = model.state_dict()
    backbone_keys = [k for k in saved if k.startswith(("backbone.", "encoder_norm.")) and "mask_token" not in k]
    assert backbone_keys
    for key in backbone_keys:
        assert torch.equal(state[key], saved[key]), key
    expected = EXPECTED_LOADING_MESSAGES[("masked", "geometric")]
    assert info["newly_initialized"] == ["decoder", "depth_head", "scale_heads"]
    assert info["unused"] == sorted(expected["unused"])
    assert results["geometric"].loading_info["newly_initialized"] == ["decoder", "depth_head", "scale_heads"]
    # geometric -> supervised carries encoder, decoder and head; only scale_heads stay behind
    assert results["supervised"].loading_info == {"newly_initialized": [], "unused": ["scale_heads"]}
    geometric = load_file(root / "geometric" / "model.safetensors")
    depth, _ = load_stage_model("supervised", root / "geometric")
    for key, value in depth.state_dict().items():
        if key in geometric and not key.endswith("num_batches_tracked"):
            assert torch.equal(value, geometric[key]), key


def test_stage_folders_are_complete_and_record_the_stages(chained):
    root = chained[0]
    folder = root / "supervised"
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "stage_results.json"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert [s["name"] for s in config["mesa_stages"]] == ["masked", "geometric", "supervised"]
    assert config["mesa_stages"][2]["steps"] == 60
    card = (folder / "README.md").read_text()
    assert "| geometric |" in card and "average training depth map" in card
    reloaded = MeSaForDepthEstimation.from_pretrained(folder)
    assert [s["name"] for s in reloaded.config.mesa_stages] == ["masked", "geometric", "supervised"]
    # finetune from the supervised folder: nothing new, nothing unused; a finished stage is skipped on request
    finetuned = run_stage(
        "finetune", str(folder), output_dir=root / "finetune", max_train_steps=2, num_synthetic_samples=16, **COMMON
    )
    assert finetuned.loading_info == {"newly_initialized": [], "unused": []}
    assert [s["name"] for s in finetuned.stages] == ["masked", "geometric", "supervised", "finetune"]
    again = run_stage("finetune", str(folder), output_dir=root / "finetune", skip_if_complete=True, **COMMON)
    assert isinstance(again, StageResult) and again.skipped and again.global_step == 2


def test_run_stages_and_explicit_arguments(tmp_path):
    args = MeSaTrainingArguments(
        output_dir=str(tmp_path / "masked"), per_device_train_batch_size=4, max_train_steps=2, layer_decay=None
    )
    result = run_stage("masked", "test", None, args, image_size=SIZE, num_synthetic_samples=8, num_eval_samples=4)
    assert result.global_step == 2 and (tmp_path / "masked" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="neither a preset"):
        run_stages(["supervised"], "no-such-folder", tmp_path, max_train_steps=1, **COMMON)


def test_local_metrics_fallback_matches_the_evaluation_package():
    evaluation = pytest.importorskip("mesa_hf.evaluation")
    from mesa_hf.training.stage_eval import _local_depth_metrics

    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 20, 30, generator=generator) * 5 + 0.5
    pred = gt * (1 + 0.2 * torch.randn(gt.shape, generator=generator)).clamp(0.3, 3)
    for median_scaling in (False, True):
        local = _local_depth_metrics(pred, gt, 1e-3, 10.0, median_scaling)
        package = evaluation.compute_depth_metrics(pred, gt, crop=None, median_scaling=median_scaling)
        assert local == pytest.approx({k: package[k] for k in local}, abs=1e-9)


def test_paper_recipe_changes_resolution_and_window_per_stage(tmp_path):
    """SimMIM at 192 px / window 12, geometric at 288x384, supervised at 480 px / window 30 (MIM-Depth); the encoder
    carries over although the windows change (Swin-V2's continuous position bias)."""
    results = run_stages(
        ["masked", "geometric", "supervised"],
        "test",
        tmp_path,
        recipe="paper",
        num_synthetic_samples=2,
        num_eval_samples=1,
        max_train_steps=1,
        per_device_train_batch_size=2,
        checkpointing_steps=None,
    )
    geometry = []
    for result in results:
        backbone = json.loads((tmp_path / result.stage / "config.json").read_text())["backbone_config"]
        geometry.append((backbone["image_size"], backbone["window_size"]))
    assert geometry == [(192, 12), ([288, 384], 12), (480, 30)]
    assert results[1].loading_info["newly_initialized"] == ["decoder", "depth_head", "pose_network", "scale_heads"]
    assert results[2].loading_info["unused"] == ["pose_network", "scale_heads"]
    masked = load_file(tmp_path / "masked" / "model.safetensors")
    geometric, _ = load_stage_model("geometric", tmp_path / "masked")
    key = "backbone.encoder.layers.0.blocks.0.attention.self.logit_scale"
    assert torch.equal(geometric.state_dict()[key], masked[key])

"""The stage registry and run_stage: defaults with sources, collation, every objective learning on the synthetic
world at test size, and stage chaining (encoder tensors carried exactly, new heads initialised, stages recorded)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from mesa_hf import MeSaConfig, MeSaForDepthEstimation, MeSaForMaskedImageModeling, MeSaForSelfSupervisedDepth
from mesa_hf.training import MeSaTrainingArguments
from mesa_hf.training.recipes import (
    EXPECTED_LOADING_MESSAGES,
    PROBE,
    STAGES,
    get_stage,
    hyperparameter_table,
    resolve_recipe,
    training_arguments,
)
from mesa_hf.training.runner import (
    StageResult,
    StageSettings,
    load_stage_model,
    prepare_stage_modules,
    run_stage,
    run_stages,
)
from mesa_hf.training.stage_data import stack_collator
from mesa_hf.training.stage_eval import depth_metrics, eval_dataloader, evaluate_constant_map, mean_depth_map

SIZE = (64, 64)


def settings(output_dir, num_eval_samples=6, num_synthetic_samples=None, **training) -> StageSettings:
    """Test-size stage settings: 64x64, no checkpoints, `training` = MeSaTrainingArguments overrides."""
    training = {"checkpointing_steps": None, "logging_steps": 5, **training}
    return StageSettings(
        output_dir=output_dir,
        image_size=SIZE,
        num_eval_samples=num_eval_samples,
        num_synthetic_samples=num_synthetic_samples,
        training=training,
    )


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
    # SimMIM warm-up epochs become updates from the dataset size; overrides win; None overrides are ignored
    masked = training_arguments(
        "masked", tmp_path, num_train_samples=1280, learning_rate=1e-3, max_train_steps=None,
        per_device_train_batch_size=128, gradient_accumulation_steps=1,
    )  # fmt: skip
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
    held_out = [{"pixel_values": torch.zeros(3, 1, 2), **row} for row in rows]
    baseline = evaluate_constant_map(torch.tensor([[2.0, 2.0]]), eval_dataloader(held_out, batch_size=1))
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
        batch = 8 if stage != "geometric" else 4
        stage_settings = settings(
            root / stage, num_synthetic_samples=48, max_train_steps=steps[stage], learning_rate=lr,
            per_device_train_batch_size=batch,
        )  # fmt: skip
        results[stage] = run_stage(stage, source, stage_settings)
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
        "finetune", str(folder), settings(root / "finetune", num_synthetic_samples=16, max_train_steps=2)
    )
    assert finetuned.loading_info == {"newly_initialized": [], "unused": []}
    assert [s["name"] for s in finetuned.stages] == ["masked", "geometric", "supervised", "finetune"]
    again = run_stage("finetune", str(folder), StageSettings(output_dir=root / "finetune", skip_if_complete=True))
    assert isinstance(again, StageResult) and again.skipped and again.global_step == 2


def test_probe_freezes_the_encoder_and_draws_the_same_new_head_from_any_start(chained, caplog):
    root, _ = chained
    heads = {}
    for start in ("masked", "supervised"):
        probe_settings = settings(root / f"probe-{start}", max_train_steps=3, per_device_train_batch_size=4)
        probe_settings.num_synthetic_samples = 16
        with caplog.at_level(logging.INFO, logger="mesa_hf.training.runner"):
            result = run_stage(PROBE, root / start, probe_settings)
        assert result.stage == "probe" and result.global_step == 3
        assert "abs_rel" in result.eval_after and "masked_loss" not in result.eval_after
        trained = load_file(str(root / f"probe-{start}" / "model.safetensors"))
        carried = load_file(str(root / start / "model.safetensors"))
        encoder = [k for k in trained if k.startswith("backbone.encoder.")]
        assert encoder and all(torch.equal(trained[k], carried[k]) for k in encoder)  # frozen: not one bit moved
        assert not any("image_branch" in k for k in trained)  # the probe's head sees the encoder alone
        heads[start] = MeSaForDepthEstimation.from_pretrained(root / f"probe-{start}")
    assert not any("do not expect" in r.getMessage() for r in caplog.records)
    # the fresh head is the same draw for both starts (the run's seed), so only the encoder differs
    torch.manual_seed(0)
    fresh = {}
    for start in ("masked", "supervised"):
        model, _ = load_stage_model(PROBE, root / start, PROBE.config_values("demo"))
        prepare_stage_modules(model, PROBE, seed=42)
        fresh[start] = model
        assert not any(p.requires_grad for p in model.backbone.parameters())
        assert all(p.requires_grad for p in model.decoder.parameters())
    for (name, a), b in zip(
        fresh["masked"].decoder.state_dict().items(), fresh["supervised"].decoder.state_dict().values()
    ):
        assert torch.equal(a, b), name


def test_run_stages_and_explicit_arguments(tmp_path):
    args = MeSaTrainingArguments(
        output_dir=str(tmp_path / "masked"), per_device_train_batch_size=4, max_train_steps=2, layer_decay=None
    )
    explicit = StageSettings(
        output_dir=tmp_path / "masked", args=args, image_size=SIZE, num_synthetic_samples=8, num_eval_samples=4
    )
    result = run_stage("masked", "test", explicit)
    assert result.global_step == 2 and (tmp_path / "masked" / "model.safetensors").is_file()
    assert result.resolved_recipe["per_device_train_batch_size"] == 4
    with pytest.raises(ValueError, match="neither a preset"):
        run_stages(["supervised"], "no-such-folder", settings(tmp_path, max_train_steps=1))


def test_paper_recipe_changes_resolution_and_window_per_stage(tmp_path):
    """SimMIM at 192 px / window 12, geometric at 288x384, supervised at 480 px / window 30 (MIM-Depth); the encoder
    carries over although the windows change (Swin-V2's continuous position bias)."""
    paper = StageSettings(
        output_dir=tmp_path,
        recipe="paper",
        num_synthetic_samples=2,
        num_eval_samples=1,
        training={"max_train_steps": 1, "per_device_train_batch_size": 2, "checkpointing_steps": None},
    )
    results = run_stages(["masked", "geometric", "supervised"], "test", paper)
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


# ------------------------------------------------------------------------------------------- the resolver


def test_resolved_recipe_for_16_processes_of_batch_128_masked(tmp_path):
    """SimMIM on 16 GPUs x 128: total 2048, lr 1e-4 x 2048 / 512, 10 warm-up epochs in updates (ImageNet-1k)."""
    num_samples = 1_281_167
    args, resolved = resolve_recipe(
        "masked", tmp_path, num_processes=16, per_device_train_batch_size=128, num_train_samples=num_samples
    )
    per_epoch = (num_samples // 128) // 16  # Accelerate: each process draws every 16th batch of 128
    assert per_epoch == 625
    assert (resolved.total_train_batch_size, resolved.gradient_accumulation_steps) == (2048, 1)
    assert args.learning_rate == pytest.approx(1e-4 * 2048 / 512) and resolved.learning_rate == args.learning_rate
    assert args.min_learning_rate == pytest.approx(5e-6 * 2048 / 512)
    assert args.num_warmup_steps == 10 * per_epoch == resolved.num_warmup_steps
    assert resolved.updates_per_epoch == per_epoch and resolved.total_updates == 800 * per_epoch
    line = resolved.describe()
    assert "16 process(es) x 128 per device x 1 accumulation = total batch 2048" in line
    assert "6250 warm-up updates (10 epochs x 625)" in line and "linear: base 0.0001 x 2048 / 512" in line


def test_resolver_chooses_accumulation_and_checks_the_total_batch(tmp_path):
    # one GPU, per-device batch only: accumulation reaches the paper's 2048, so warm-up counts updates, not batches
    _, one = resolve_recipe("masked", tmp_path, num_processes=1, num_train_samples=128 * 160)
    assert (one.per_device_train_batch_size, one.gradient_accumulation_steps, one.total_train_batch_size) == (
        128, 16, 2048,
    )  # fmt: skip
    assert one.num_warmup_steps == 10 * 10  # 160 batches / 16 = 10 updates per epoch
    # fine-tuning on 8 GPUs: MIM-Depth's total batch 24 = 8 x 3, its learning rate unchanged
    args, _ = resolve_recipe("finetune", tmp_path, num_processes=8)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.learning_rate) == (3, 1, 5e-4)
    # a total batch flag: the accumulation follows; a total that cannot be reached is a clear error
    _, forced = resolve_recipe("masked", tmp_path, num_processes=2, per_device_train_batch_size=64,
                               total_train_batch_size=512)  # fmt: skip
    assert forced.gradient_accumulation_steps == 4 and forced.learning_rate == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="total batch 500 is not 2 processes"):
        resolve_recipe("masked", tmp_path, num_processes=2, per_device_train_batch_size=64, total_train_batch_size=500)
    # explicit per-device batch and accumulation are kept, the learning rate follows the resulting total
    _, given = resolve_recipe("masked", tmp_path, num_processes=2, per_device_train_batch_size=8,
                              gradient_accumulation_steps=2)  # fmt: skip
    assert given.total_train_batch_size == 32 and given.learning_rate == pytest.approx(1e-4 * 32 / 512)
    # the demo recipe keeps its per-device batch and learning rate on any number of processes
    demo_args, demo = resolve_recipe("finetune", tmp_path, "demo", num_processes=2)
    assert (demo.per_device_train_batch_size, demo.total_train_batch_size, demo_args.learning_rate) == (8, 16, 5e-4)


# ------------------------------------------------------------------------------------------- loading report, processor


def test_expected_loading_messages_are_one_line_and_others_in_full(caplog):
    from mesa_hf.training.runner import report_loading

    expected = {
        "missing_keys": ["decoder.conv.weight", "depth_head.0.bias"],
        "unexpected_keys": ["mim_decoder.0.weight"],
    }
    with caplog.at_level(logging.INFO, logger="mesa_hf"):
        report_loading("supervised", "run/masked", "masked", expected)
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.INFO
    assert "as expected: newly initialised decoder, depth_head; not used mim_decoder" in caplog.messages[0]
    caplog.clear()
    surprising = {"missing_keys": ["backbone.encoder.layers.0.blocks.0.output.dense.weight"], "unexpected_keys": []}
    with caplog.at_level(logging.INFO, logger="mesa_hf"):
        report_loading("finetune", "run/supervised", "supervised", surprising)
    assert caplog.records[0].levelno == logging.WARNING
    assert "backbone.encoder.layers.0.blocks.0.output.dense.weight" in caplog.messages[0]


@pytest.mark.parametrize("start_kind", ["processor-without-normalisation", "converted-mim-depth"])
def test_training_keeps_the_starting_processor_and_its_normalisation(start_kind, tmp_path, monkeypatch):
    """A checkpoint whose processor does not normalise (a converted MIM-Depth one: `mesa-hf convert mim-depth`): one
    fine-tuning step trains on [0, 1] inputs and the stage folder keeps do_normalize=False."""
    from pathlib import Path

    from mesa_hf import MeSaImageProcessor
    from mesa_hf.convert import convert_checkpoint, save_converted
    from mesa_hf.training import runner

    start = tmp_path / "mim-depth-like"
    if start_kind == "converted-mim-depth":  # the reference MIM-Depth state dict committed for the conversion tests
        reference = Path(__file__).resolve().parent / "data" / "convert" / "mim_depth_128.safetensors"
        save_converted(convert_checkpoint("mim-depth", reference, max_depth=10.0), start)
    else:
        MeSaForDepthEstimation(MeSaConfig.from_preset("test")).save_pretrained(start)
        MeSaImageProcessor(do_normalize=False).save_pretrained(start)
    seen = {}

    def recording_train(model, train_dataset, args, **kwargs):
        pixels = torch.stack([train_dataset[i]["pixel_values"] for i in range(len(train_dataset))])
        seen["range"] = (float(pixels.min()), float(pixels.max()))
        return real_train(model, train_dataset, args, **kwargs)

    real_train = runner.train
    monkeypatch.setattr(runner, "train", recording_train)
    result = run_stage(
        "finetune", start, settings(tmp_path / "out", num_eval_samples=2, num_synthetic_samples=4,
                                    max_train_steps=1, per_device_train_batch_size=2)
    )  # fmt: skip
    assert result.global_step == 1
    low, high = seen["range"]
    assert low >= -1e-5 and high <= 1 + 1e-5 and high > 0.5, seen
    saved = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert saved["do_normalize"] is False
    if start_kind != "converted-mim-depth":
        assert saved["size"] == {"height": 64, "width": 64}  # the processor records the size it trained at

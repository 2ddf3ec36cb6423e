"""The scripts' flags (generated from the dataclasses through HfArgumentParser) and the main job's summary.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mesa_hf.data.specs import FolderOptions
from mesa_hf.training import MeSaTrainingArguments
from mesa_hf.training.cli import TrainingFlags, build_parser, parse_arguments, stage_settings, training_overrides
from mesa_hf.training.summary import build_summary
from mesa_hf.training.summary import main as summary_main


@dataclasses.dataclass
class _Script:
    model_name_or_path: str = dataclasses.field(default="test", metadata={"help": "a preset"})


def test_training_flags_are_generated_from_the_training_arguments():
    library = {f.name: f for f in dataclasses.fields(MeSaTrainingArguments)}
    flags = {f.name: f for f in dataclasses.fields(TrainingFlags)}
    assert set(flags) == set(library) - {"final_subdir"}
    for name, flag in flags.items():
        assert library[name].metadata["help"] in flag.metadata["help"], name
        if name not in ("output_dir", "with_tracking", "use_cpu", "torch_compile", "streaming"):
            assert flag.default is None, name  # unset flags keep the recipe's value
    parser = build_parser(_Script)
    help_text = parser.format_help()
    assert "--depth_scale" in help_text and "metres per stored depth unit" in help_text
    assert "--total_batch_size" in help_text and "--drop_path_rate" in help_text
    _, run, folder, parsed = parse_arguments(
        parser,
        ["--output_dir", "out", "--learning_rate", "3e-4", "--lr_schedule", "cosine", "--use_cpu",
         "--depth_scale", "0.001", "--image_size", "48", "64", "--total_batch_size", "8", "--drop_path_rate", "0"],
    )  # fmt: skip
    assert isinstance(folder, FolderOptions) and folder.depth_scale == 0.001
    overrides = training_overrides(parsed)
    assert overrides == {"learning_rate": 3e-4, "lr_schedule": "cosine", "use_cpu": True}
    settings = stage_settings(run, parsed, skip_if_complete=False, recipe="demo")
    assert settings.image_size == (48, 64) and settings.total_train_batch_size == 8
    assert settings.backbone_overrides == {"drop_path_rate": 0.0} and settings.output_dir == "out"
    with pytest.raises(SystemExit):
        parse_arguments(parser, ["--output_dir", "out", "--lr_schedule", "step"])
    with pytest.raises(SystemExit):
        parse_arguments(parser, ["--output_dir", "out", "--image_size", "48"])


def _stage(folder, stage, steps, before, after, baseline=None):
    folder.mkdir(parents=True)
    key = {"masked": "masked_loss", "geometric": "median_scaled_abs_rel"}.get(stage, "abs_rel")
    record = {
        "stage": stage, "output_dir": str(folder), "global_step": steps, "first_loss": 1.0, "last_loss": 0.5,
        "loss_curve": [1.0, 0.5], "eval_before": {key: before}, "eval_after": {key: after, "rmse": 0.3, "d1": 0.9},
        "baseline": baseline or {}, "resolved_recipe": {"total_train_batch_size": 8},
    }  # fmt: skip
    (folder / "stage_results.json").write_text(json.dumps(record))


def test_main_job_summary_lists_every_stage_the_baseline_and_the_paths(tmp_path, capsys):
    for stage, before, after in (("masked", 0.9, 0.4), ("geometric", 0.3, 0.2), ("supervised", 0.5, 0.25)):
        _stage(tmp_path / "pretrain" / stage, stage, 10, before, after)
    _stage(tmp_path / "finetuned", "finetune", 20, 0.25, 0.2, baseline={"abs_rel": 0.3, "rmse": 0.5, "d1": 0.6})
    (tmp_path / "finetuned" / "depth_photo.png").write_bytes(b"png")
    summary = build_summary(tmp_path, wall_time_s=12.5)
    assert list(summary["stages"]) == ["masked", "geometric", "supervised", "finetune"]
    assert summary["stages"]["masked"] == {
        "folder": str(tmp_path / "pretrain" / "masked"), "steps": 10, "first_loss": 1.0, "last_loss": 0.5,
        "held_out_metric": "masked_loss", "before": 0.9, "after": 0.4, "resolved_recipe": {"total_train_batch_size": 8},
    }  # fmt: skip
    assert summary["final"]["model"]["abs_rel"] == 0.2 and summary["final"]["average_depth_map"]["abs_rel"] == 0.3
    assert summary["wall_time_s"] == 12.5
    assert summary["paths"]["depth_pictures"] == [str(tmp_path / "finetuned" / "depth_photo.png")]
    assert summary_main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "average training depth map" in printed and "finetune" in printed and "summary.json" in printed
    assert json.loads((tmp_path / "summary.json").read_text())["stages"]["finetune"]["after"] == 0.2
    with pytest.raises(FileNotFoundError, match="no finished stage folder"):
        build_summary(tmp_path / "empty")

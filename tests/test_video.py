"""Video files: PyAV reading (sampling, rotation, errors), `mesa-hf predict clip.mp4`, the `video:` dataset for the
geometric stage, temporal consistency metrics and `mesa-hf evaluate --protocol video`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from mesa_hf import MeSaImageProcessor
from mesa_hf.camera import intrinsics_from_fov
from mesa_hf.cli import main
from mesa_hf.data.specs import load_dataset_spec
from mesa_hf.data.synthetic import synthetic_clip
from mesa_hf.data.video_files import (
    VideoReadError,
    iter_video_frames,
    probe_video,
    read_video_metadata,
    write_video,
)
from mesa_hf.evaluation.io import colorize_depth
from mesa_hf.evaluation.predict_video import predict_video_file
from mesa_hf.evaluation.temporal import flicker, temporal_alignment_error

from .helpers import tiny_depth_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-mesa"
    tiny_depth_model(seed=0).save_pretrained(path)
    MeSaImageProcessor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def synthetic_sequence():
    """12 consecutive synthetic-world frames (64x80) with exact depth and camera-to-world poses."""
    return synthetic_clip(7, 0, 64, 80, frame_offsets=tuple(range(1, 12)))


def _numbered_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Frames whose grey level encodes their number (20 * i), to check which frames a sampler kept."""
    return [np.full((height, width, 3), 20 * i, dtype=np.uint8) for i in range(count)]


def _frame_numbers(frames) -> list[int]:
    return [round(f.image.mean() / 20) for f in frames]


# ------------------------------------------------------------------------------------------------ reading


def test_reader_streams_samples_and_resizes(tmp_path):
    path = write_video(tmp_path / "count.mp4", _numbered_frames(10), fps=10)
    info = probe_video(path)
    assert (info.height, info.width, info.num_frames, info.fps, info.rotation) == (48, 64, 10, 10.0, 0)
    frames = list(iter_video_frames(path))
    assert _frame_numbers(frames) == list(range(10))
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(10) / 10, atol=1e-6)
    assert _frame_numbers(iter_video_frames(path, stride=3)) == [0, 3, 6, 9]
    assert _frame_numbers(iter_video_frames(path, target_fps=4)) == [0, 3, 5, 8]  # first frame at/after k/4 s
    assert _frame_numbers(iter_video_frames(path, stride=2, max_frames=3)) == [0, 2, 4]
    small = next(iter_video_frames(path, max_size=32))
    assert small.image.shape == (24, 32, 3) and small.image.dtype == np.uint8
    with pytest.raises(ValueError, match="not both"):
        next(iter_video_frames(path, stride=2, target_fps=3))


def test_reader_applies_rotation_metadata(tmp_path):
    upright = np.zeros((32, 48, 3), np.uint8)
    upright[:8, :8] = 255  # a white marker in the top-left corner of the upright picture
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what a phone held sideways stores: (48, 32)
    container = av.open(str(tmp_path / "phone.mp4"), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 32, 48, "yuv420p"
    stream.set_display_rotation(-90)  # display matrix: show the stored frame turned 90° clockwise
    for _ in range(2):
        for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    info = probe_video(tmp_path / "phone.mp4")
    assert (info.height, info.width, info.rotation) == (32, 48, -90)
    frame = next(iter_video_frames(tmp_path / "phone.mp4")).image
    assert frame.shape == (32, 48, 3)
    assert frame[:8, :8].mean() > 240 and frame[-8:, -8:].mean() < 15 and frame[:8, -8:].mean() < 15
    resized = next(iter_video_frames(tmp_path / "phone.mp4", max_size=24)).image
    assert resized.shape == (16, 24, 3) and resized[:3, :3].mean() > 200


def _audio_only(path: Path) -> Path:
    container = av.open(str(path), "w", format="mp4")
    stream = container.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 16000
    for packet in [*stream.encode(frame), *stream.encode()]:
        container.mux(packet)
    container.close()
    return path


def _bad_videos(tmp_path: Path) -> dict[str, Path]:
    good = write_video(tmp_path / "good.mp4", _numbered_frames(4), fps=10).read_bytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good[:32] + np.random.default_rng(0).bytes(4000))  # mp4 signature, then garbage
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    unknown = bytearray(good)  # the sample entry's codec 'avc1' renamed: a codec FFmpeg has no decoder for
    at = unknown.find(b"avc1", unknown.find(b"stsd"))
    unknown[at : at + 4] = b"zzzz"
    codec = tmp_path / "codec.mp4"
    codec.write_bytes(bytes(unknown))
    return {"corrupt": corrupt, "audio": _audio_only(tmp_path / "voice.mp4"), "empty": empty, "codec": codec}


def test_bad_video_files_give_one_line_errors_naming_the_file(tmp_path, checkpoint, capsys):
    bad = _bad_videos(tmp_path)
    expected = {
        "corrupt": "not a readable video",
        "audio": "no video stream",
        "empty": "empty file",
        "codec": "unsupported video codec",
    }
    for kind, path in bad.items():
        with pytest.raises(VideoReadError, match=expected[kind]) as error:
            list(iter_video_frames(path))
        assert str(path) in str(error.value) and "\n" not in str(error.value)
        status = main(["predict", str(path), "--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert status == 2 and str(path) in err and expected[kind] in err and len(err.splitlines()) == 1, err


# ------------------------------------------------------------------------------------------------ predicting


def _check_prediction(out: Path, name: str, frames: int, height: int, width: int, fps: float):
    data = np.load(out / f"{name}_depth.npz")
    depth = data["depth"]
    assert depth.shape == (frames, height, width) and depth.dtype == np.float16
    assert str(data["units"]) == "m" and np.all(np.isfinite(depth)) and depth.min() > 0 and depth.max() <= 10.0
    np.testing.assert_allclose(np.diff(data["timestamps_s"]), 1 / fps, atol=2e-3)
    near, far = (float(v) for v in data["depth_range_m"])
    record = json.loads((out / "video_predictions.json").read_text())[0]
    assert record["num_frames"] == frames and record["depth_range_m"] == pytest.approx([near, far])
    assert (
        f"near {near:.4f} m to far {far:.4f} m in every frame"
        in read_video_metadata(out / f"{name}_depth.mp4")["comment"]
    )
    colour = [f.image for f in iter_video_frames(out / f"{name}_depth.mp4")]
    assert len(colour) == frames
    assert colour[0].shape[:2] == (height + height % 2, width + width % 2)  # H.264 pads odd sizes by one pixel
    # every decoded frame is the clip-wide colour map of its depth (one range); compared in luma averaged over 4x4
    # blocks, since H.264 (yuv420p) halves the chroma resolution and quantises fine detail
    for decoded, d in zip(colour, depth):
        clip_wide = colorize_depth(d.astype(np.float32), vmin=near, vmax=far)
        assert np.abs(_block_luma(decoded[:height, :width]) - _block_luma(clip_wide)).mean() < 3.0
    return data


def _block_luma(rgb: np.ndarray, block: int = 4) -> np.ndarray:
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    h, w = luma.shape[0] // block * block, luma.shape[1] // block * block
    return luma[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))


def test_predict_generated_video_writes_npz_mp4_and_png16(checkpoint, synthetic_sequence, tmp_path, capsys):
    clip = write_video(tmp_path / "room.mp4", synthetic_sequence["images"][:6], fps=12)
    out = tmp_path / "pred"
    args = ["predict", str(clip), "--checkpoint", str(checkpoint), "--output-dir", str(out), "--no-progress"]
    assert main([*args, "--video-outputs", "mp4", "npz", "png16", "--batch-size", "4", "--fov", "60"]) == 0
    printed = capsys.readouterr().out
    assert "6 frames 80x64 at 12 fps; colour range" in printed and "the same in every frame" in printed
    data = _check_prediction(out, "room", 6, 64, 80, 12)
    # the camera through mesa_hf.camera's resolver, at the predicted size
    np.testing.assert_allclose(data["intrinsics"], intrinsics_from_fov(64, 80, 60.0).matrix())
    assert str(data["intrinsics_source"]) == "fov"
    assert json.loads((out / "video_predictions.json").read_text())[0]["intrinsics"]["source"] == "fov"
    pngs = sorted((out / "room_depth_frames").glob("*.png"))
    assert len(pngs) == 6
    millimetres = np.asarray(Image.open(pngs[3])).astype(np.float32) / 1000
    np.testing.assert_allclose(millimetres, data["depth"][3].astype(np.float32), atol=2e-3)


def check_predict_real_hololens_video_from_a_folder(checkpoint, shared_data, tmp_path):
    """Real-data check (called from tests/test_data_video.py's real-sequence test)."""
    images = sorted((shared_data / "hololens20" / "images").glob("*.png"))[:8]
    folder = tmp_path / "videos"
    write_video(folder / "hololens.mp4", [np.asarray(Image.open(p).convert("RGB")) for p in images], fps=30)
    out = tmp_path / "pred"
    args = ["predict", str(folder), "--checkpoint", str(checkpoint), "--output-dir", str(out), "--no-progress"]
    assert main([*args, "--max-frames", "5", "--max-size", "160"]) == 0
    _check_prediction(out, "hololens", 5, 107, 160, 30)  # 540x360 -> 160x107


class _HalfConstantDepth(torch.nn.Module):
    """Depth 2 m on the left half of every frame; on the right 1 + 6 x the frame's mean brightness (varies)."""

    def forward(self, pixel_values):
        batch, _, height, width = pixel_values.shape
        right = 1.0 + 6.0 * (pixel_values[:, :, :, width // 2 :].mean(dim=(1, 2, 3)) * 0.229 + 0.485)
        depth = torch.full((batch, height, width), 2.0)
        depth[:, :, width // 2 :] = right[:, None, None].clamp(0.5, 9.0)
        return {"predicted_depth": depth}


def test_constant_depth_region_keeps_its_colour_across_frames(tmp_path):
    frames = []
    for i in range(6):
        frame = np.full((64, 96, 3), 128, np.uint8)
        frame[:, 48:] = 30 + 40 * i  # the right half gets brighter: its depth changes frame by frame
        frames.append(frame)
    clip = write_video(tmp_path / "half.mp4", frames, fps=10)
    result = predict_video_file(_HalfConstantDepth(), MeSaImageProcessor(), clip, tmp_path / "out", progress=False)
    depth = np.load(result.npz)["depth"].astype(np.float32)
    assert np.ptp(depth[:, :, 48:].mean(axis=(1, 2))) > 1.0  # the per-frame depth range really varies
    colours = np.stack([f.image for f in iter_video_frames(result.mp4)])
    left = colours[:, 8:56, 4:40].reshape(len(colours), -1, 3).mean(axis=1)
    assert np.abs(left - left[0]).max() < 3.0  # same depth, same colour in every frame
    expected = colorize_depth(
        np.full((1, 1), 2.0, np.float32), vmin=result.depth_range_m[0], vmax=result.depth_range_m[1]
    )[0, 0]
    assert np.abs(left[0] - expected).max() < 6.0
    fixed = predict_video_file(
        _HalfConstantDepth(),
        MeSaImageProcessor(),
        clip,
        tmp_path / "fixed",
        depth_range=(1.0, 8.0),
        outputs=("mp4",),
        progress=False,
    )
    assert fixed.depth_range_m == (1.0, 8.0) and fixed.range_source == "fixed" and fixed.npz is None


# ------------------------------------------------------------------------------------------------ temporal metrics


def test_temporal_alignment_error_of_ground_truth_and_of_scale_jitter(synthetic_sequence):
    depth = np.stack(synthetic_sequence["depths"])
    poses, k = synthetic_sequence["poses"], synthetic_sequence["intrinsics"]
    exact = temporal_alignment_error(depth, poses, k, depth, return_details=True)
    assert exact.tae < 0.01 and exact.scale == pytest.approx(1.0) and exact.num_pairs == 11
    assert temporal_alignment_error(depth * 3.0, poses, k, depth) == pytest.approx(exact.tae, abs=1e-6)
    factors = np.random.default_rng(0).uniform(0.9, 1.1, len(depth))  # per-frame scale jitter of ±10 %
    jittered = temporal_alignment_error(depth * factors[:, None, None], poses, k, depth)
    ratio = factors[:-1] / factors[1:]  # hand-derived: forward |s_i/s_j - 1|, backward |s_j/s_i - 1|
    expected = np.mean((np.abs(ratio - 1) + np.abs(1 / ratio - 1)) / 2)
    assert jittered > 0.05 and jittered == pytest.approx(expected, abs=0.003)
    without_gt = temporal_alignment_error(depth, poses, k)  # no scale, no occlusion mask: occlusions count
    assert exact.tae < without_gt < 0.01
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_alignment_error(depth[:1], poses[:1], k)


def test_flicker_is_zero_for_a_repeated_frame_and_sees_scale_jitter(synthetic_sequence):
    from mesa_hf.evaluation.inference import DepthPredictor

    model = tiny_depth_model(seed=1)
    image = synthetic_sequence["images"][0]
    pixel_values = MeSaImageProcessor()(images=image, return_tensors="pt")["pixel_values"]
    predictor = DepthPredictor(model, device="cpu")
    predictions = np.stack([predictor(pixel_values)[0].numpy() for _ in range(4)])
    images = np.stack([np.asarray(Image.fromarray(image).resize(predictions.shape[:0:-1]))] * 4)
    still = flicker(predictions, images)
    assert still == {"flicker": 0.0, "median_jitter": 0.0, "static_fraction": 1.0}
    scaled = predictions * np.array([1.0, 1.1, 1.0, 1.1])[:, None, None]
    jitter = flicker(scaled, images)
    assert jitter["flicker"] == pytest.approx(0.1 / 1.05, rel=1e-4)
    assert jitter["median_jitter"] == pytest.approx(np.log(1.1), rel=1e-4)


def test_evaluate_protocol_video_reports_frame_and_temporal_metrics(checkpoint, tmp_path, capsys):
    report = tmp_path / "video.json"
    args = ["evaluate", str(checkpoint), "--data", "synthetic:4", "--protocol", "video", "--no-progress"]
    assert main([*args, "--output-json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "protocol=video" in out and "tae=" in out and "flicker=" in out and "abs_rel" in out
    summary = json.loads(report.read_text())
    assert summary["num_sequences"] == 2 and summary["num_frames"] == 8
    assert set(summary["temporal"]) == {"tae", "flicker", "median_jitter"}
    assert 0 < summary["temporal"]["tae"] < 5 and summary["metrics"]["abs_rel"] > 0


def check_evaluate_protocol_video_on_hololens(checkpoint, shared_data, capsys):
    """Real-data check (called from tests/test_data_video.py's real-sequence test)."""
    data = shared_data / "hololens20"
    args = ["evaluate", str(checkpoint), "--data", f"hololens:{data}", "--protocol", "video", "--max-samples", "4"]
    assert main([*args, "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(summary["temporal"]["tae"]) and summary["metrics"]["abs_rel"] > 0


# ------------------------------------------------------------------------------------------------ geometric stage


@pytest.fixture(scope="module")
def training_videos(tmp_path_factory, synthetic_sequence):
    folder = tmp_path_factory.mktemp("train_videos")
    frames = synthetic_sequence["images"]
    write_video(folder / "walk.mp4", frames[:8], fps=10)
    write_video(folder / "tripod.mp4", [frames[0]] * 5, fps=10)  # camera not moving
    return folder


def test_video_dataset_intrinsics_sources_and_static_clips(training_videos, tmp_path, caplog):
    walk, tripod = training_videos / "walk.mp4", training_videos / "tripod.mp4"
    with pytest.raises(ValueError, match="three ways") as error:
        load_dataset_spec(f"video:{walk}", "video", cache_dir=str(tmp_path))
    message = str(error.value)
    assert str(walk) in message and "--intrinsics" in message and "walk.intrinsics.json" in message
    assert "cameras.json" in message
    k = (64.8, 69.3, 39.5, 31.5)
    ds = load_dataset_spec(f"video:{walk}", "video", cache_dir=str(tmp_path), intrinsics=k, max_size=40)
    assert len(ds) == 6 and ds[0]["image"].size == (40, 32) and ds[0]["poses"] is None
    assert ds[0]["source_offsets"] == [-1, 1] and [ds[i]["frame_index"] for i in range(6)] == list(range(1, 7))
    # intrinsics follow the resize to 40x32: f' = f / 2, c' = (c + 0.5) / 2 - 0.5
    np.testing.assert_allclose(ds[0]["intrinsics"], [[32.4, 0, 19.5], [0, 34.65, 15.5], [0, 0, 1]], atol=1e-4)
    copy = tmp_path / "cams"
    copy.mkdir()
    for video in (walk, tripod):
        (copy / video.name).write_bytes(video.read_bytes())
    (copy / "cameras.json").write_text(json.dumps({"fx": 60, "fy": 61, "cx": 39.5, "cy": 31.5}))
    (copy / "walk.intrinsics.json").write_text(
        json.dumps({"fx": 130, "fy": 130, "cx": 79, "cy": 63, "width": 160, "height": 128})
    )
    with caplog.at_level(logging.INFO, logger="mesa_hf.data"):
        ds = load_dataset_spec(f"video:{copy}", "video", cache_dir=str(tmp_path))
    assert ds.skipped_static == 3 and len(ds) == 6 and {r["scene"] for r in ds} == {"walk.mp4"}
    assert "skipped 3 near-static clips of 9" in caplog.text
    np.testing.assert_allclose(ds[0]["intrinsics"][0], [65.0, 0, 39.25], atol=1e-4)  # sidecar at 160x128, halved


def test_geometric_stage_trains_from_mp4_with_intrinsics_and_sidecar(training_videos, tmp_path):
    from mesa_hf.training.runner import StageSettings, run_stage

    walk = training_videos / "walk.mp4"
    sidecar_dir = tmp_path / "sidecar"
    sidecar_dir.mkdir()
    (sidecar_dir / "walk.mp4").write_bytes(walk.read_bytes())
    (sidecar_dir / "walk.intrinsics.json").write_text(json.dumps({"fx": 64.8, "fy": 69.3, "cx": 39.5, "cy": 31.5}))
    for name, spec, options in (
        ("given", f"video:{walk}", {"intrinsics": (64.8, 69.3, 39.5, 31.5)}),
        ("sidecar", f"video:{sidecar_dir / 'walk.mp4'}", {}),
    ):
        dataset = load_dataset_spec(spec, "video", cache_dir=str(tmp_path / "cache"), **options)
        settings = StageSettings(
            output_dir=tmp_path / name,
            recipe="demo",
            image_size=(64, 64),
            config_overrides={"pose_source": "network"},
            training={
                "max_train_steps": 2,
                "per_device_train_batch_size": 2,
                "checkpointing_steps": None,
                "logging_steps": 1,
            },
        )
        result = run_stage("geometric", "test", settings, dataset)
        assert result.global_step == 2 and np.isfinite(result.last_loss)
        assert (tmp_path / name / "model.safetensors").is_file()
        assert "poses from the network" in result.stages[-1]["notes"]


def check_temporal_alignment_error_of_real_ground_truth_is_small(shared_data):
    """Real-data check (called from tests/test_data_video.py's real-sequence test)."""
    from mesa_hf.data.video import load_video_sequences

    sequence = load_video_sequences(f"hololens:{shared_data / 'hololens20'}", max_frames=5)[0]
    depth = np.stack(sequence["depths"])
    assert depth.shape == (5, 360, 540)
    exact = temporal_alignment_error(depth, sequence["poses"], sequence["intrinsics"], depth)
    factors = np.random.default_rng(0).uniform(0.9, 1.1, len(depth))
    jittered = temporal_alignment_error(
        depth * factors[:, None, None], sequence["poses"], sequence["intrinsics"], depth
    )
    assert exact < 0.01 < 0.05 < jittered  # real sensor depth + poses agree: the pose convention is right


def test_pretrain_example_takes_intrinsics_for_a_video(training_videos, tmp_path, capsys, monkeypatch):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "examples" / "pretrain.py"
    spec = importlib.util.spec_from_file_location("mesa_example_pretrain_video", script)
    pretrain = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, pretrain)  # its dataclasses look their module up there
    spec.loader.exec_module(pretrain)
    args = ["--objective", "geometric", "--preset", "test", "--dataset", f"video:{training_videos / 'walk.mp4'}"]
    args += ["--pose_source", "network", "--recipe", "demo", "--image_size", "64", "64", "--max_train_steps", "1"]
    args += ["--per_device_train_batch_size", "2", "--cache_dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit, match="three ways"):  # one line, no traceback
        pretrain.main([*args, "--output_dir", str(tmp_path / "none")])
    assert not (tmp_path / "none" / "geometric" / "model.safetensors").exists()  # failed before training
    assert (
        pretrain.main([*args, "--intrinsics", "64.8", "69.3", "39.5", "31.5", "--output_dir", str(tmp_path / "k")]) == 0
    )
    assert "geometric        1" in capsys.readouterr().out


def test_video_sequences_of_a_frames_folder_read_depth_in_metres_per_stored_unit(synthetic_sequence, tmp_path):
    """`--protocol video --depth-scale 0.001` on frames + millimetre PNGs: the same unit as everywhere else."""
    folder = tmp_path / "walk"
    (folder / "images").mkdir(parents=True)
    (folder / "depth").mkdir()
    for i in range(3):
        Image.fromarray(synthetic_sequence["images"][i]).save(folder / "images" / f"{i:04d}.png")
        millimetres = np.round(synthetic_sequence["depths"][i] * 1000).astype(np.uint16)
        Image.fromarray(millimetres).save(folder / "depth" / f"{i:04d}.png")
    k = np.asarray(synthetic_sequence["intrinsics"], dtype=np.float64).reshape(3, 3)
    np.savetxt(folder / "K.txt", k)
    from mesa_hf.data.video import load_video_sequences

    (sequence,) = load_video_sequences(f"frames:{folder}", depth_scale=0.001)
    np.testing.assert_allclose(sequence["depths"][1], synthetic_sequence["depths"][1], atol=6e-4)

"""The intrinsics resolver (mesa_hf.camera): every source, their precedence, EXIF fixtures and bad input."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from mesa_hf import MeSaConfig
from mesa_hf.camera import (
    NYU_CAMERA,
    CameraIntrinsics,
    IntrinsicsError,
    backproject_pixel,
    intrinsics_from_fov,
    measure_distance,
    nyu_camera,
    resolve_intrinsics,
)
from mesa_hf.cli import main
from mesa_hf.data.transforms import resize_intrinsics

TRAINING_CAMERA = {"fx": 600.0, "fy": 610.0, "cx": 330.0, "cy": 250.0, "width": 640, "height": 480}


def _photo(path, size=(64, 48), orientation=None, **exif_tags):
    """A JPEG of ``size`` (W, H) whose Exif sub-IFD holds ``exif_tags`` (tag id -> value)."""
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for name, value in exif_tags.items():
        sub[ExifTags.Base[name]] = value
    Image.new("RGB", size, (90, 120, 150)).save(path, "JPEG", exif=exif)
    return path


def test_exif_35mm_equivalent_26mm_at_4032x3024(tmp_path):
    photo = _photo(tmp_path / "phone.jpg", size=(4032, 3024), FocalLengthIn35mmFilm=26)
    camera = resolve_intrinsics(photo)
    expected = 26 / 36 * 4032  # 2912 px
    assert camera.source == "exif" and "FocalLengthIn35mmFilm 26 mm" in camera.detail
    assert abs(camera.fx - expected) / expected < 0.005 and camera.fx == camera.fy
    assert (camera.width, camera.height) == (4032, 3024)
    assert (camera.cx, camera.cy) == (4031 / 2, 3023 / 2)
    # at another output size the same photo gives the same camera, scaled
    small = resolve_intrinsics(photo, size=(756, 1008))
    assert small.fx == pytest.approx(expected / 4, rel=1e-9)
    horizontal, _ = camera.field_of_view
    assert horizontal == pytest.approx(math.degrees(2 * math.atan(18 / 26)), rel=1e-9)  # 36 mm frame at 26 mm


def test_exif_focal_length_with_focal_plane_resolution(tmp_path):
    # 4.25 mm lens, 720 px/mm on the sensor (7200 per cm, unit 3), sensor image 4032 wide, photo 2016 wide
    photo = _photo(
        tmp_path / "camera.jpg",
        size=(2016, 1512),
        FocalLength=4.25,
        FocalPlaneXResolution=7200.0,
        FocalPlaneYResolution=7200.0,
        FocalPlaneResolutionUnit=3,
        ExifImageWidth=4032,
        ExifImageHeight=3024,
    )
    camera = resolve_intrinsics(photo)
    assert camera.source == "exif" and camera.fx == pytest.approx(4.25 * 720 * 0.5) and camera.fy == camera.fx
    # the focal length alone (no sensor size) is not enough: next source
    bare = _photo(tmp_path / "bare.jpg", FocalLength=4.25)
    assert resolve_intrinsics(bare).source == "assumed"


def test_exif_orientation_gives_the_upright_size(tmp_path):
    photo = _photo(tmp_path / "rotated.jpg", size=(64, 48), orientation=6, FocalLengthIn35mmFilm=36)
    camera = resolve_intrinsics(photo)  # shown upright 48 wide, 64 high
    assert (camera.width, camera.height) == (48, 64) and camera.fx == pytest.approx(64.0)


def test_every_source_and_its_precedence(tmp_path):
    photo = _photo(tmp_path / "exif.jpg", size=(640, 480), FocalLengthIn35mmFilm=24)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (640, 480)).save(plain)
    config = MeSaConfig.from_preset("test", camera_intrinsics=TRAINING_CAMERA)
    size = (480, 640)

    given = resolve_intrinsics(photo, size=size, fx=500, fy=501, cx=320, cy=240, config=config)
    assert given.source == "given" and (given.fx, given.fy, given.cx, given.cy) == (500, 501, 320, 240)
    only_fx = resolve_intrinsics(size=size, fx=500)
    assert (only_fx.fy, only_fx.cx, only_fx.cy) == (500, 319.5, 239.5)

    fov = resolve_intrinsics(photo, fov=90, config=config)  # beats EXIF and the checkpoint
    assert fov.source == "fov" and fov.fx == pytest.approx(320.0) and fov.field_of_view[0] == pytest.approx(90.0)

    exif = resolve_intrinsics(photo, config=config)  # beats the checkpoint
    assert exif.source == "exif" and exif.fx == pytest.approx(24 / 36 * 640)

    checkpoint = resolve_intrinsics(plain, config=config)  # beats the assumption
    assert checkpoint.source == "checkpoint" and checkpoint.fx == 600.0 and checkpoint.cy == 250.0
    half = resolve_intrinsics(size=(240, 320), config=config.to_dict())  # a dict config, scaled to the image
    np.testing.assert_allclose(half.matrix(), resize_intrinsics(checkpoint.matrix(), (480, 640), (240, 320)))

    assumed = resolve_intrinsics(plain)
    assert assumed.source == "assumed" and "NYUv2 Kinect" in assumed.describe()
    assert (assumed.fx, assumed.fy, assumed.cx, assumed.cy) == pytest.approx(
        tuple(NYU_CAMERA[k] for k in ("fx", "fy", "cx", "cy"))
    )
    np.testing.assert_allclose(
        resolve_intrinsics(size=(96, 128)).matrix(),
        resize_intrinsics(nyu_camera(480, 640).matrix(), (480, 640), (96, 128)),
        rtol=1e-6,
    )


def test_camera_intrinsics_helpers():
    camera = intrinsics_from_fov(480, 640, 60.0)
    assert camera.matrix().shape == (3, 3) and camera.matrix()[2].tolist() == [0, 0, 1]
    horizontal, vertical = camera.field_of_view
    assert horizontal == pytest.approx(60.0)
    assert vertical == pytest.approx(math.degrees(2 * math.atan(240 / camera.fy)))
    assert camera.focal_length == camera.fx == pytest.approx(320 / math.tan(math.radians(30)))
    scaled = camera.scaled_to(240, 320)
    assert scaled.field_of_view == pytest.approx(camera.field_of_view)  # resizing keeps the field of view
    assert (scaled.cx, scaled.cy) == pytest.approx((159.5, 119.5))
    record = json.loads(json.dumps(camera.to_dict()))
    assert record["source"] == "fov" and record["matrix"] == camera.matrix().tolist()
    assert record["field_of_view_deg"]["horizontal"] == pytest.approx(60.0)
    unsized = CameraIntrinsics(100, 100, 10, 10)
    assert unsized.scaled_to(20, 30) == CameraIntrinsics(100, 100, 10, 10, 30, 20)
    with pytest.raises(IntrinsicsError, match="image size"):
        unsized.field_of_view  # noqa: B018


@pytest.mark.parametrize("fov", [0, -10, 180, 200, float("nan"), "wide"])
def test_bad_field_of_view(fov):
    with pytest.raises(IntrinsicsError, match="field of view"):
        resolve_intrinsics(size=(48, 64), fov=fov)


def test_contradictory_and_bad_values():
    with pytest.raises(IntrinsicsError, match="not both"):
        resolve_intrinsics(size=(48, 64), fx=50, fov=60)
    with pytest.raises(IntrinsicsError, match="without fx"):
        resolve_intrinsics(size=(48, 64), cx=30)
    with pytest.raises(IntrinsicsError, match="fx must be a positive"):
        resolve_intrinsics(size=(48, 64), fx=0)
    with pytest.raises(IntrinsicsError, match="image size"):
        resolve_intrinsics()
    with pytest.raises(IntrinsicsError, match="source"):
        CameraIntrinsics(1, 1, 0, 0, source="guessed")


def test_corrupt_exif_warns_and_names_the_fallback(tmp_path, caplog):
    photo = tmp_path / "corrupt.jpg"
    Image.new("RGB", (64, 48)).save(photo, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12")
    with caplog.at_level(logging.WARNING, logger="mesa_hf.camera"):
        camera = resolve_intrinsics(photo)
    assert camera.source == "assumed"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "corrupt EXIF" in messages[0] and "NYUv2 camera (assumed)" in messages[0]
    assert "\n" not in messages[0]
    caplog.clear()
    config = MeSaConfig.from_preset("test", camera_intrinsics=TRAINING_CAMERA)
    with caplog.at_level(logging.WARNING, logger="mesa_hf.camera"):
        assert resolve_intrinsics(photo, config=config).source == "checkpoint"
    assert "the checkpoint's camera" in caplog.records[0].getMessage()
    zero = _photo(tmp_path / "zero.jpg", FocalLengthIn35mmFilm=0)  # unusable value: no warning, next source
    assert resolve_intrinsics(zero).source == "assumed"


def test_config_field_round_trip_and_validation(tmp_path):
    assert MeSaConfig.from_preset("test").camera_intrinsics is None  # backward compatible default
    config = MeSaConfig.from_preset("test", camera_intrinsics=TRAINING_CAMERA)
    config.save_pretrained(tmp_path)
    assert MeSaConfig.from_pretrained(tmp_path).camera_intrinsics == TRAINING_CAMERA
    with pytest.raises(ValueError, match="camera_intrinsics"):
        MeSaConfig.from_preset("test", camera_intrinsics={"fx": 1.0})
    with pytest.raises(ValueError, match="positive"):
        MeSaConfig.from_preset("test", camera_intrinsics={**TRAINING_CAMERA, "fx": -1.0})


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fov", "0"], "field of view must be between 0 and 180"),
        (["--fov", "180"], "field of view must be between 0 and 180"),
        (["--fov", "60", "--fx", "1", "--fy", "1", "--cx", "1", "--cy", "1"], "not both"),
        (["--intrinsics", "1", "1", "1", "1", "--fx", "2"], "not both"),
        (["--fx", "500"], "missing --fy --cx --cy"),
        (["--fx", "-5", "--fy", "1", "--cx", "1", "--cy", "1"], "fx must be a positive"),
    ],
)
def test_cli_bad_intrinsics_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    status = main(
        ["predict", str(image), "--checkpoint", str(tmp_path / "none"), "--output-dir", str(tmp_path)] + flags
    )
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_post_process_returns_each_images_intrinsics_at_its_output_size(tmp_path):
    from mesa_hf import MeSaImageProcessor

    phone = _photo(tmp_path / "phone.jpg", size=(128, 96), FocalLengthIn35mmFilm=26)  # EXIF camera
    plain = Image.new("RGB", (80, 120))  # portrait, no EXIF: the checkpoint's camera
    processor = MeSaImageProcessor()
    inputs = processor([str(phone), plain], return_tensors="pt")
    assert inputs["original_sizes"].tolist() == [[96, 128], [120, 80]]
    batch, _, height, width = inputs["pixel_values"].shape
    outputs = {"predicted_depth": torch.rand(batch, height, width) + 1.0}
    config = MeSaConfig.from_preset("test", camera_intrinsics=TRAINING_CAMERA)
    results = processor.post_process_depth_estimation(
        outputs,
        target_sizes=inputs["original_sizes"],
        reshaped_input_sizes=inputs["reshaped_input_sizes"],
        return_intrinsics=True,
        images=[str(phone), plain],
        config=config,
    )
    expected = [resolve_intrinsics(str(phone), size=(96, 128)), resolve_intrinsics(size=(120, 80), config=config)]
    assert [r["intrinsics_source"] for r in results] == ["exif", "checkpoint"]
    for result, camera, size in zip(results, expected, [(96, 128), (120, 80)]):
        assert tuple(result["predicted_depth"].shape) == size
        assert result["intrinsics"].dtype == torch.float32 and result["intrinsics"].shape == (3, 3)
        np.testing.assert_allclose(result["intrinsics"].numpy(), camera.matrix(), rtol=1e-6)
        assert float(result["field_of_view"]) == pytest.approx(camera.field_of_view[0], rel=1e-6)
        assert float(result["focal_length"]) == pytest.approx(camera.fx, rel=1e-6)
    assert float(results[0]["focal_length"]) == pytest.approx(26 / 36 * 128, rel=1e-6)
    assert float(results[1]["focal_length"]) == pytest.approx(600.0 * 80 / 640, rel=1e-6)

    # one explicit camera for the batch, scaled to each output; fov; and nothing extra unless asked
    given = CameraIntrinsics(200.0, 200.0, 63.5, 47.5, 128, 96)
    scaled = processor.post_process_depth_estimation(
        outputs, inputs["original_sizes"], return_intrinsics=True, intrinsics=given
    )
    assert (
        float(scaled[1]["focal_length"]) == pytest.approx(200.0 * 80 / 128)
        and scaled[1]["intrinsics_source"] == "given"
    )
    wide = processor.post_process_depth_estimation(outputs, inputs["original_sizes"], return_intrinsics=True, fov=90)
    assert [float(r["field_of_view"]) for r in wide] == pytest.approx([90.0, 90.0])
    assert set(processor.post_process_depth_estimation(outputs)[0]) == {"predicted_depth"}
    with pytest.raises(ValueError, match="1 images for a batch of 2"):
        processor.post_process_depth_estimation(outputs, return_intrinsics=True, images=[plain])


def test_camera_module_imports_only_numpy_pil_and_the_standard_library():
    # copied next to shared checkpoints with the image processor (trust_remote_code), where mesa_hf may be absent
    import ast
    import sys
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "src" / "mesa_hf" / "camera.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"camera.py: relative import of {node.module}"
            imported.add(node.module.split(".")[0])
    assert imported - {"numpy", "PIL"} <= set(sys.stdlib_module_names), imported


def test_pipeline_drops_extra_keys_and_the_two_line_way_gives_the_camera(tmp_path):
    # transformers' depth-estimation pipeline keeps only predicted_depth and depth; docs/prediction.md shows the
    # resolver call beside it, which gives the camera at the pipeline's output size
    from transformers import pipeline

    from mesa_hf import MeSaImageProcessor

    from .helpers import tiny_depth_model

    tiny_depth_model().save_pretrained(tmp_path / "ckpt")
    MeSaImageProcessor().save_pretrained(tmp_path / "ckpt")
    photo = _photo(tmp_path / "phone.jpg", size=(96, 72), FocalLengthIn35mmFilm=26)
    estimator = pipeline("depth-estimation", model=str(tmp_path / "ckpt"), device="cpu")
    result = estimator(str(photo))
    camera = resolve_intrinsics(str(photo), config=estimator.model.config)
    assert set(result) == {"predicted_depth", "depth"}
    assert (camera.height, camera.width) == tuple(result["predicted_depth"].shape) == (72, 96)
    assert camera.source == "exif" and camera.fx == pytest.approx(26 / 36 * 96)


def test_measure_distance_back_projects_both_pixels():
    camera = CameraIntrinsics(100.0, 120.0, 31.5, 23.5, 64, 48, "given")
    depth = np.full((48, 64), 2.0, dtype=np.float32)
    depth[10, 50] = 4.0
    measured = measure_distance(depth, camera, (11.5, 23.4), (50, 10))  # A rounds to (12, 23)
    assert measured.pixels == ((12, 23), (50, 10)) and measured.depths == (2.0, 4.0)
    a = [(12 - 31.5) * 2 / 100, (23 - 23.5) * 2 / 120, 2.0]  # hand-derived X = (u - cx) Z / fx, ...
    b = [(50 - 31.5) * 4 / 100, (10 - 23.5) * 4 / 120, 4.0]
    np.testing.assert_allclose(measured.points, [a, b], rtol=1e-12)
    assert measured.distance == pytest.approx(math.dist(a, b), rel=1e-12)
    np.testing.assert_allclose(backproject_pixel(12, 23, 2.0, camera), a, rtol=1e-12)
    # intrinsics of another size are scaled to the depth map's: the same camera at twice the resolution
    half = measure_distance(depth, camera.scaled_to(96, 128), (12, 23), (50, 10))
    assert half.intrinsics.matrix() == pytest.approx(camera.matrix()) and half.distance == pytest.approx(
        measured.distance
    )


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [((64, 0), (1, 1), "outside the 64x48"), ((0, -1), (1, 1), "outside"), ((3, 3), (5, 5), "no depth at pixel")],
)
def test_measure_distance_bad_points(first, second, message):
    depth = np.ones((48, 64), dtype=np.float32)
    depth[5, 5] = np.nan
    with pytest.raises(ValueError, match=message):
        measure_distance(depth, nyu_camera(48, 64), first, second)


def test_measure_wall_to_wall_in_a_rendered_room_with_true_depth():
    # an empty 4.0 x 2.8 x 6.0 m room (mesa_hf.data.synthetic), the camera in the middle of its width and height
    # looking down the room: symmetric pixels on the two side walls (floor and ceiling) lie at the same depth and
    # height, so the distance between their points is the room's width (height)
    from mesa_hf.data.synthetic import default_intrinsics, empty_room, look_pose, render

    height, width = 96, 128
    room = empty_room((4.0, 2.8, 6.0))
    k = default_intrinsics(height, width)
    _image, depth = render(room, look_pose([2.0, 1.4, 0.4]), k, height, width)
    camera = CameraIntrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], width, height, "given")
    for row in (40, 48, 55):
        wall_to_wall = measure_distance(depth, camera, (2, row), (width - 3, row))
        assert wall_to_wall.points[0][0] < 0 < wall_to_wall.points[1][0]
        assert wall_to_wall.distance == pytest.approx(4.0, rel=0.01)
    for column in (50, 64, 80):
        floor_to_ceiling = measure_distance(depth, camera, (column, 1), (column, height - 2))
        assert floor_to_ceiling.distance == pytest.approx(2.8, rel=0.01)
    print(
        f"\nwall to wall {wall_to_wall.distance:.4f} m (4.0), floor to ceiling {floor_to_ceiling.distance:.4f} m (2.8)"
    )

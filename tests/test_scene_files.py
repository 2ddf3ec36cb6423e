"""3-D files (mesa_hf.evaluation.scene_files): PLY / GLB / EXR round trips through their libraries, the
flying-pixel filter, and `mesa-hf predict --outputs ply,glb,exr` with the camera JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from mesa_hf import MeSaImageProcessor
from mesa_hf.camera import CameraIntrinsics, intrinsics_from_fov, resolve_intrinsics
from mesa_hf.cli import main
from mesa_hf.evaluation.io import point_map
from mesa_hf.evaluation.scene_files import (
    EDGE_THRESHOLD,
    GLTF_FROM_CAMERA,
    flying_pixel_mask,
    grid_faces,
    kept_pixels,
    load_depth_exr,
    save_depth_exr,
    save_mesh_glb,
    save_point_cloud,
)

from .helpers import tiny_depth_model

trimesh = pytest.importorskip("trimesh")

CAMERA = CameraIntrinsics(40.0, 42.0, 15.5, 11.0, 32, 24)


def _colors(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _load_mesh(path: Path):
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return loaded


def test_point_map_back_projects_each_pixel():
    depth = np.full((24, 32), 2.0, np.float32)
    points = point_map(depth, CAMERA)
    row, col = 5, 20
    np.testing.assert_allclose(points[row, col], [(col - 15.5) * 2 / 40, (row - 11.0) * 2 / 42, 2.0], rtol=1e-6)
    # intrinsics of another size are scaled to the depth map's
    np.testing.assert_allclose(
        point_map(depth[::2, ::2], CAMERA)[2, 3], point_map(depth[::2, ::2], CAMERA.scaled_to(12, 16))[2, 3]
    )


def test_fronto_parallel_plane_loses_no_points_and_round_trips(tmp_path):
    depth = np.full((24, 32), 2.5, np.float32)
    colors = _colors(24, 32)
    assert not flying_pixel_mask(depth).any()
    ply, count, dropped = save_point_cloud(tmp_path / "plane.ply", depth, CAMERA, colors)
    assert (count, dropped) == (24 * 32, 0)
    cloud = trimesh.load(ply, process=False)
    expected = point_map(depth, CAMERA).reshape(-1, 3)
    np.testing.assert_allclose(cloud.vertices, expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(cloud.colors)[:, :3], colors.reshape(-1, 3))

    glb, vertices, dropped = save_mesh_glb(tmp_path / "plane.glb", depth, CAMERA, colors)
    assert (vertices, dropped) == (24 * 32, 0)
    mesh = _load_mesh(glb)
    np.testing.assert_allclose(mesh.vertices, expected * GLTF_FROM_CAMERA, atol=1e-5)  # glTF: y up, -z forward
    assert len(mesh.faces) == 2 * 23 * 31
    assert (mesh.face_normals[:, 2] > 0.99).all()  # front faces towards the camera at the origin
    np.testing.assert_array_equal(np.asarray(mesh.visual.vertex_colors)[:, :3], colors.reshape(-1, 3))


def test_slanted_plane_loses_no_points():
    # a plane turned 30 degrees about the vertical axis: depth changes smoothly, a few % per pixel at most
    u = np.arange(32, dtype=np.float64)
    x_over_z = (u - CAMERA.cx) / CAMERA.fx
    depth = np.repeat((2.0 / (1 + np.tan(np.radians(30)) * x_over_z))[None], 24, axis=0).astype(np.float32)
    assert np.abs(np.diff(depth, axis=1) / depth[:, 1:]).max() < EDGE_THRESHOLD
    assert kept_pixels(depth)[1] == 0


def test_step_edge_loses_only_its_border(tmp_path):
    depth = np.full((24, 32), 1.0, np.float32)
    depth[:, 16:] = 3.0  # a wall 2 m behind a box edge at column 16
    depth[0, 0] = 0.0  # no depth: neither kept nor counted as flying
    keep, dropped = kept_pixels(depth)
    flying = flying_pixel_mask(depth) & (depth > 0)
    assert set(np.nonzero(flying)[1]) == {15, 16} and flying[:, 15].all() and flying[:, 16].all()
    assert dropped == 2 * 24 and keep.sum() == 24 * 32 - 1 - 2 * 24
    ply, count, dropped_ply = save_point_cloud(tmp_path / "step.ply", depth, CAMERA, _colors(24, 32))
    glb, vertices, dropped_glb = save_mesh_glb(tmp_path / "step.glb", depth, CAMERA, _colors(24, 32))
    assert count == vertices == keep.sum() and dropped_ply == dropped_glb == dropped
    expected = point_map(depth, CAMERA)[keep]
    np.testing.assert_allclose(trimesh.load(ply, process=False).vertices, expected, atol=1e-5)
    mesh = _load_mesh(glb)
    np.testing.assert_allclose(mesh.vertices, expected * GLTF_FROM_CAMERA, atol=1e-5)
    # no triangle bridges the step: every face lies on one side
    z = -mesh.vertices[mesh.faces][..., 2]
    assert np.allclose(z.min(axis=1), z.max(axis=1))
    assert not flying_pixel_mask(depth, edge_threshold=0).any()  # 0 keeps everything


def test_grid_faces_skip_missing_pixels():
    keep = np.ones((3, 3), bool)
    assert len(grid_faces(keep)) == 8
    keep[1, 1] = False  # the centre touches all four blocks: each keeps only its triangle without it
    faces = grid_faces(keep)
    assert len(faces) == 2 and faces.max() == 7


def test_exr_round_trip(tmp_path):
    pytest.importorskip("OpenEXR")
    depth = np.linspace(0.3, 9.7, 24 * 32, dtype=np.float32).reshape(24, 32)
    depth[3, 4] = np.nan
    path = save_depth_exr(tmp_path / "d_depth.exr", depth)
    back = load_depth_exr(path)
    assert back.dtype == np.float32 and back.shape == (24, 32) and back[3, 4] == 0.0
    mask = np.isfinite(depth)
    np.testing.assert_array_equal(back[mask], depth[mask])  # float32: exact
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


# ------------------------------------------------------------------------------------------------ mesa-hf predict


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-mesa"
    tiny_depth_model(seed=0).save_pretrained(path)
    MeSaImageProcessor().save_pretrained(path)
    return path


def _photo(path: Path, exif_focal_35mm: int | None = None, size=(64, 48)) -> Path:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    if exif_focal_35mm is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = exif_focal_35mm
    image.save(path, "JPEG", exif=exif)
    return path


def _predict(checkpoint, inputs, out, *flags):
    command = ["predict", *map(str, inputs), "--checkpoint", str(checkpoint), "--output-dir", str(out)]
    return main(command + ["--input-size", "64", "64", "--no-progress", *flags])


def test_predict_writes_ply_glb_exr_that_read_back(checkpoint, tmp_path, capsys):
    pytest.importorskip("OpenEXR")
    photo = _photo(tmp_path / "photo.jpg")
    out = tmp_path / "pred"
    assert _predict(checkpoint, [photo], out, "--outputs", "ply,glb,exr", "--fov", "70") == 0
    printed = capsys.readouterr().out
    assert "(fov: 70 degrees horizontal)" in printed and "flying pixels dropped from the PLY/GLB" in printed
    camera_record = json.loads((out / "photo_camera.json").read_text())
    camera = intrinsics_from_fov(48, 64, 70.0)
    assert camera_record["source"] == "fov" and camera_record["matrix"] == camera.matrix().tolist()
    assert camera_record["field_of_view_deg"]["horizontal"] == pytest.approx(70.0)
    depth = load_depth_exr(out / "photo_depth.exr")
    assert depth.shape == (48, 64) and (depth > 0).all()
    keep, dropped = kept_pixels(depth, EDGE_THRESHOLD)
    assert camera_record["flying_pixels_dropped"] == dropped
    record = json.loads((out / "predictions.json").read_text())[0]
    assert record["intrinsics_source"] == "fov" and record["flying_pixels_dropped"] == dropped
    expected = point_map(depth, camera)[keep]
    np.testing.assert_allclose(trimesh.load(out / "photo.ply", process=False).vertices, expected, atol=1e-5)
    np.testing.assert_allclose(_load_mesh(out / "photo.glb").vertices, expected * GLTF_FROM_CAMERA, atol=1e-5)
    assert not (out / "photo_depth.npy").exists()  # only what was asked for


def test_predict_takes_exif_and_warns_on_corrupt_exif(checkpoint, tmp_path, capsys):
    phone = _photo(tmp_path / "phone.jpg", exif_focal_35mm=26)
    corrupt = tmp_path / "corrupt.jpg"
    Image.new("RGB", (64, 48)).save(corrupt, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12")
    out = tmp_path / "pred"
    assert _predict(checkpoint, [phone, corrupt], out, "--outputs", "npy", "camera") == 0
    captured = capsys.readouterr()
    phone_camera = json.loads((out / "phone_camera.json").read_text())
    assert phone_camera["source"] == "exif" and phone_camera["fx"] == pytest.approx(26 / 36 * 64)
    assert phone_camera["matrix"] == resolve_intrinsics(phone).matrix().tolist()
    assert json.loads((out / "corrupt_camera.json").read_text())["source"] == "assumed"
    warnings = [line for line in captured.err.splitlines() if "EXIF" in line]
    assert len(warnings) == 1 and "corrupt EXIF" in warnings[0] and "using the NYUv2 camera (assumed)" in warnings[0]
    assert "Traceback" not in captured.err


def test_predict_without_a_writer_library_says_so(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "OpenEXR", None)  # import fails as if not installed
    out = tmp_path / "pred"
    assert _predict(checkpoint, [_photo(tmp_path / "p.jpg")], out, "--outputs", "npy,exr") == 0
    err = capsys.readouterr().err
    assert "exr output needs the openexr package (pip install 'mesa-hf[3d]'); not written" in err
    assert (out / "p_depth.npy").exists() and not (out / "p_depth.exr").exists()


def test_predict_rejects_an_unknown_output_kind(capsys):
    with pytest.raises(SystemExit) as error:
        main(["predict", "x.png", "--checkpoint", "c", "--output-dir", "o", "--outputs", "ply,obj"])
    assert error.value.code == 2 and "unknown output kind 'ply,obj'" in capsys.readouterr().err

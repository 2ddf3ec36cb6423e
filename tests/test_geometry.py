"""Camera geometry (mesa_hf.geometry): poses, back-projection, projection and warping against hand-derived values."""

import math
from pathlib import Path

import pytest
import torch

from mesa_hf.geometry import (
    backproject,
    disp_to_depth,
    pose_vec_to_matrix,
    project,
    relative_pose,
    warp_frame,
)

from .helpers import seven_scenes_warp_errors
from .rgbd_fixtures import write_7scenes_folder


def _intrinsics(fx=10.0, fy=12.0, cx=3.5, cy=2.5, batch=1, dtype=torch.float32):
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)
    return K.expand(batch, 3, 3).clone()


def _translation(tx=0.0, ty=0.0, tz=0.0, batch=1, dtype=torch.float32):
    T = torch.eye(4, dtype=dtype).repeat(batch, 1, 1)
    T[:, :3, 3] = torch.tensor([tx, ty, tz], dtype=dtype)
    return T


def test_disp_to_depth_endpoints():
    scaled, depth = disp_to_depth(torch.tensor([0.0, 1.0]), min_depth=0.1, max_depth=10.0)
    torch.testing.assert_close(depth, torch.tensor([10.0, 0.1]))
    torch.testing.assert_close(scaled, torch.tensor([0.1, 10.0]))
    with pytest.raises(ValueError, match="min_depth"):
        disp_to_depth(torch.tensor([0.5]), min_depth=1.0, max_depth=0.5)


def test_pose_zero_vector_is_identity():
    M = pose_vec_to_matrix(torch.zeros(2, 1, 3), torch.zeros(2, 1, 3))
    assert M.shape == (2, 4, 4)
    torch.testing.assert_close(M, torch.eye(4).expand(2, 4, 4))


def test_rotation_of_half_pi_about_z_maps_x_to_y():
    M = pose_vec_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]), torch.tensor([[1.0, 2.0, 3.0]]))
    x_axis = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # rotate x to y, then translate by (1, 2, 3)
    torch.testing.assert_close(M[0] @ x_axis, torch.tensor([1.0, 3.0, 3.0, 1.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(M[0, :3, 3], torch.tensor([1.0, 2.0, 3.0]))


def test_pose_invert_gives_the_inverse_and_rotations_are_proper():
    gen = torch.Generator().manual_seed(0)
    axisangle, translation = torch.randn(4, 1, 3, generator=gen), torch.randn(4, 1, 3, generator=gen)
    M = pose_vec_to_matrix(axisangle, translation)
    M_inv = pose_vec_to_matrix(axisangle, translation, invert=True)
    torch.testing.assert_close(M_inv @ M, torch.eye(4).expand(4, 4, 4), rtol=0, atol=1e-5)
    torch.testing.assert_close(M_inv, torch.linalg.inv(M), rtol=0, atol=1e-5)
    R = M[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(4, 3, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(4), rtol=0, atol=1e-5)
    # the rotation axis is fixed by its own rotation
    torch.testing.assert_close((R @ axisangle.transpose(1, 2)), axisangle.transpose(1, 2), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="axisangle"):
        pose_vec_to_matrix(torch.zeros(2, 4), torch.zeros(2, 3))


def test_backproject_then_project_returns_the_pixel_grid():
    height, width = 5, 8
    K = _intrinsics(dtype=torch.float64, batch=2)
    depth = 0.5 + torch.rand(2, 1, height, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    points = backproject(depth, torch.linalg.inv(K))
    assert points.shape == (2, 4, height * width)
    torch.testing.assert_close(points[:, 2], depth.reshape(2, -1))  # z = depth
    torch.testing.assert_close(points[:, 3], torch.ones(2, height * width, dtype=torch.float64))
    grid = project(points, K, torch.eye(4, dtype=torch.float64).expand(2, 4, 4), height, width)
    assert grid.shape == (2, height, width, 2)
    u = (grid[..., 0] + 1) / 2 * (width - 1)
    v = (grid[..., 1] + 1) / 2 * (height - 1)
    expected_v, expected_u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    # exact up to Monodepth2's 1e-7 guard in the division by z (a relative error of 1e-7 / z)
    torch.testing.assert_close(u, expected_u.expand(2, -1, -1), rtol=0, atol=1e-5)
    torch.testing.assert_close(v, expected_v.expand(2, -1, -1), rtol=0, atol=1e-5)
    # corners map to -1 and +1 (align_corners=True convention)
    assert grid[0, 0, 0].tolist() == pytest.approx([-1.0, -1.0])
    assert grid[0, -1, -1].tolist() == pytest.approx([1.0, 1.0])


def test_backproject_a_known_pixel():
    K = _intrinsics(fx=2.0, fy=2.0, cx=1.0, cy=0.0)
    depth = torch.full((1, 1, 2, 4), 3.0)
    points = backproject(depth, torch.linalg.inv(K))
    # pixel (u=3, v=1) -> x = (3 - 1) / 2 * 3 = 3, y = (1 - 0) / 2 * 3 = 1.5, z = 3
    torch.testing.assert_close(points[0, :, 1 * 4 + 3], torch.tensor([3.0, 1.5, 3.0, 1.0]))


def test_warp_with_identity_pose_returns_the_source():
    source = torch.rand(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    depth = torch.full((2, 1, 6, 8), 2.0)
    warped, valid = warp_frame(source, depth, torch.eye(4).expand(2, 4, 4), _intrinsics(batch=2))
    torch.testing.assert_close(warped, source, rtol=0, atol=1e-5)
    assert valid.shape == (2, 1, 6, 8) and bool(valid.all())


def test_warp_plane_by_known_translation_shifts_the_image():
    # fronto-parallel plane at Z = 5 m, fx = 10 px: a source camera displaced so that target points have
    # x_source = x_target + tx sees them at u_source = u_target + fx * tx / Z
    height, width = 6, 9
    source = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    depth = torch.full((1, 1, height, width), 5.0)
    K = _intrinsics(fx=10.0, fy=10.0, cx=4.0, cy=2.5)
    warped, valid = warp_frame(source, depth, _translation(tx=1.0), K)  # 2-pixel shift
    torch.testing.assert_close(warped[..., : width - 2], source[..., 2:], rtol=0, atol=1e-5)
    assert valid[..., : width - 2].all() and not valid[..., width - 2 :].any()
    # the border columns repeat the source's last column (padding_mode="border")
    torch.testing.assert_close(warped[..., -1], source[..., -1], rtol=0, atol=1e-5)

    warped_half, _ = warp_frame(source, depth, _translation(tx=0.25), K)  # half-pixel shift: bilinear average
    torch.testing.assert_close(
        warped_half[..., : width - 1], (source[..., :-1] + source[..., 1:]) / 2, rtol=0, atol=1e-5
    )

    warped_y, valid_y = warp_frame(source, depth, _translation(ty=-0.5), K)  # 1 pixel up
    torch.testing.assert_close(warped_y[..., 1:, :], source[..., :-1, :], rtol=0, atol=1e-5)
    assert not valid_y[..., 0, :].any() and valid_y[..., 1:, :].all()


def test_warp_marks_points_behind_the_camera_invalid():
    source = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    depth = torch.full((1, 1, 4, 4), 1.0)
    _, valid = warp_frame(source, depth, _translation(tz=-2.0), _intrinsics(fx=2.0, fy=2.0, cx=1.5, cy=1.5))
    assert not valid.any()


def test_relative_pose_of_camera_to_world_poses():
    # target camera at the world origin; source camera 1 m to the left (x = -1), both looking along +z:
    # a target point (0, 0, 5) is at (1, 0, 5) in the source camera
    T_world_from_target = torch.eye(4)[None]
    T_world_from_source = _translation(tx=-1.0)
    T = relative_pose(T_world_from_target, T_world_from_source)
    torch.testing.assert_close(T @ torch.tensor([0.0, 0.0, 5.0, 1.0]), torch.tensor([[1.0, 0.0, 5.0, 1.0]]))
    # rotated poses: relative_pose(A, B) maps through the world, so B @ rel == A
    gen = torch.Generator().manual_seed(3)
    A = pose_vec_to_matrix(torch.randn(3, 3, generator=gen), torch.randn(3, 3, generator=gen))
    B = pose_vec_to_matrix(torch.randn(3, 3, generator=gen), torch.randn(3, 3, generator=gen))
    torch.testing.assert_close(B @ relative_pose(A, B), A, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="T_world_from_source"):
        relative_pose(A, B[:, :3])


@pytest.mark.parametrize(("target_index", "source_index"), [(0, 6), (9, 5)])
def test_warp_7scenes_frames_with_true_depth_and_pose(tmp_path, target_index, source_index):
    # a generated 7-Scenes folder (colour JPEG, depth PNG in mm, camera-to-world pose files, K file) rendered from
    # the synthetic world: the true relative pose aligns the frames, the reversed one or none does not
    write_7scenes_folder(tmp_path / "7scenes", num_frames=10, height=120, width=160)
    errors = seven_scenes_warp_errors(tmp_path / "7scenes", target_index, source_index, step=1)
    assert errors["true"] < 0.3 * errors["none"], errors
    assert errors["reversed"] > 2 * errors["true"], errors


def test_warp_frame_rejects_mismatched_inputs():
    K = _intrinsics()
    with pytest.raises(ValueError, match="depth size"):
        warp_frame(torch.rand(1, 3, 6, 8), torch.ones(1, 1, 6, 7), torch.eye(4)[None], K)
    with pytest.raises(ValueError, match="depth must be"):
        warp_frame(torch.rand(1, 3, 6, 8), torch.ones(1, 6, 8), torch.eye(4)[None], K)
    with pytest.raises(ValueError, match="inv_K"):
        backproject(torch.ones(1, 1, 6, 8), torch.eye(2)[None])


@pytest.mark.parametrize("module", ["geometry", "losses"])
def test_shared_maths_modules_import_only_torch_and_the_standard_library(module):
    # these files are copied next to shared checkpoints for trust_remote_code, where mesa_hf may not be installed
    import ast
    import sys

    source = Path(__file__).resolve().parents[1] / "src" / "mesa_hf" / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{source.name}: relative import of {node.module}"
            imported.add(node.module.split(".")[0])
    assert imported - {"torch"} <= set(sys.stdlib_module_names), imported

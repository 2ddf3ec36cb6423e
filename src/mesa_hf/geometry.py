"""Camera geometry for the geometric (self-supervised video) objective, as in Monodepth2.

Conventions:

- pixel centres sit at integer coordinates: column ``u`` in ``0 .. W-1``, row ``v`` in ``0 .. H-1``; intrinsics
  `K` are in pixels of the image they are used with, ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``;
- camera frame: x right, y down, z forward (depth = z, metres);
- a pose ``T_a_from_b`` (4x4) maps homogeneous points of camera *b* into camera *a*; dataset poses are
  camera-to-world, ``T_world_from_camera``;
- sampling grids are normalised as ``u / (W - 1) * 2 - 1``, which is what `grid_sample(..., align_corners=True)`
  expects (the reference's behaviour under the torch it was written for).

This file is copied next to checkpoints written for sharing, so it imports only torch and the standard library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_PROJECTION_EPS = 1e-7
_INSIDE_TOLERANCE_PX = 1e-3


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Monodepth2's sigmoid output -> depth: ``scaled = 1/max + (1/min - 1/max) * disp``, ``depth = 1 / scaled``.

    `disp` in [0, 1] (any shape); depths in metres. Returns ``(scaled_disp, depth)``: disp 0 -> `max_depth`,
    disp 1 -> `min_depth`.
    """
    if not 0 < min_depth < max_depth:
        raise ValueError(f"disp_to_depth: need 0 < min_depth < max_depth, got {min_depth} and {max_depth}")
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * disp
    return scaled_disp, 1.0 / scaled_disp


def _as_vectors(name: str, vec: torch.Tensor) -> torch.Tensor:
    """(B, 3) or (B, 1, 3) -> (B, 3)."""
    if vec.ndim == 3 and vec.shape[1] == 1 and vec.shape[2] == 3:
        return vec[:, 0]
    if vec.ndim == 2 and vec.shape[1] == 3:
        return vec
    raise ValueError(f"pose_vec_to_matrix: {name} must be (B, 3) or (B, 1, 3), got {tuple(vec.shape)}")


def axisangle_to_rotation(axisangle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle vectors (B, 3) (angle = norm, radians) -> rotation matrices (B, 3, 3).

    Same numbers as Monodepth2's ``rot_from_axisangle`` (axis = vec / (angle + 1e-7)); zero vector -> identity.
    """
    axisangle = _as_vectors("axisangle", axisangle)
    angle = axisangle.norm(dim=1, keepdim=True)  # (B, 1)
    axis = axisangle / (angle + 1e-7)
    cos = torch.cos(angle)[..., None]  # (B, 1, 1)
    sin = torch.sin(angle)[..., None]
    x, y, z = axis.unbind(dim=1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).view(-1, 3, 3)
    outer = axis[:, :, None] * axis[:, None, :]
    eye = torch.eye(3, dtype=axisangle.dtype, device=axisangle.device).expand_as(outer)
    return cos * eye + sin * cross + (1 - cos) * outer


def pose_vec_to_matrix(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """Monodepth2's ``transformation_from_parameters``: (axis-angle, translation) -> (B, 4, 4) rigid transform.

    `axisangle`, `translation`: (B, 3) or (B, 1, 3) (radians, metres). Without `invert` the matrix is
    ``[[R, t], [0, 1]]`` (rotate, then translate); with `invert` it is its inverse ``[[R^T, -R^T t], [0, 1]]``.
    """
    rotation = axisangle_to_rotation(axisangle)
    translation = _as_vectors("translation", translation)
    if translation.shape[0] != rotation.shape[0]:
        raise ValueError(
            f"pose_vec_to_matrix: batch sizes differ (axisangle {rotation.shape[0]}, "
            f"translation {translation.shape[0]})"
        )
    translation = translation.to(rotation.dtype)
    if invert:
        rotation = rotation.transpose(1, 2)
        translation = -(rotation @ translation[:, :, None])[:, :, 0]
    matrix = torch.zeros(rotation.shape[0], 4, 4, dtype=rotation.dtype, device=rotation.device)
    matrix[:, :3, :3] = rotation
    matrix[:, :3, 3] = translation
    matrix[:, 3, 3] = 1.0
    return matrix


def _as_homogeneous_4x4(name: str, matrix: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) or (B, 4, 4) -> (B, 4, 4), embedding a 3x3 matrix in the identity."""
    if matrix.ndim == 3 and tuple(matrix.shape[1:]) == (4, 4):
        return matrix
    if matrix.ndim == 3 and tuple(matrix.shape[1:]) == (3, 3):
        out = torch.eye(4, dtype=matrix.dtype, device=matrix.device).repeat(matrix.shape[0], 1, 1)
        out[:, :3, :3] = matrix
        return out
    raise ValueError(f"{name} must be (B, 3, 3) or (B, 4, 4), got {tuple(matrix.shape)}")


def pixel_grid(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Homogeneous pixel coordinates (3, H*W): rows u (column index), v (row index), 1; row-major order."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device), torch.arange(width, dtype=dtype, device=device), indexing="ij"
    )
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width, dtype=dtype, device=device)])


def backproject(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """Lift every pixel to a 3-D camera point: ``depth * K^-1 [u, v, 1]^T``.

    `depth`: (B, 1, H, W) metres; `inv_K`: (B, 3, 3) or (B, 4, 4) (only the top-left 3x3 is used).
    Returns homogeneous camera points (B, 4, H*W), pixels in row-major order.
    """
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"backproject: depth must be (B, 1, H, W), got {tuple(depth.shape)}")
    inv_K = _as_homogeneous_4x4("backproject: inv_K", inv_K)
    batch, _, height, width = depth.shape
    if inv_K.shape[0] != batch:
        raise ValueError(f"backproject: inv_K batch {inv_K.shape[0]} != depth batch {batch}")
    pixels = pixel_grid(height, width, dtype=depth.dtype, device=depth.device)
    rays = inv_K[:, :3, :3].to(depth.dtype) @ pixels  # (B, 3, N)
    points = depth.reshape(batch, 1, -1) * rays
    return torch.cat([points, torch.ones_like(points[:, :1])], dim=1)


def _project_pixels(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (B, 4, N) -> pixel coordinates (B, 2, N) and camera depth z (B, N) after the transform `T`."""
    if points.ndim != 3 or points.shape[1] != 4:
        raise ValueError(f"project: points must be (B, 4, N), got {tuple(points.shape)}")
    K = _as_homogeneous_4x4("project: K", K).to(points.dtype)
    T = _as_homogeneous_4x4("project: T", T).to(points.dtype)
    projection = (K @ T)[:, :3, :]
    camera = projection @ points
    z = camera[:, 2]
    return camera[:, :2] / (z[:, None] + _PROJECTION_EPS), z


def _normalise_grid(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates (B, 2, H*W) -> grid_sample grid (B, H, W, 2) for align_corners=True."""
    if height < 2 or width < 2:
        raise ValueError(f"project: height and width must be >= 2, got {height}x{width}")
    if pixels.shape[-1] != height * width:
        raise ValueError(f"project: {pixels.shape[-1]} points do not form a {height}x{width} image")
    grid = pixels.reshape(pixels.shape[0], 2, height, width).permute(0, 2, 3, 1)
    scale = torch.tensor([width - 1, height - 1], dtype=grid.dtype, device=grid.device)
    return grid / scale * 2 - 1


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Transform camera points by `T` and project them with `K` (Monodepth2's ``Project3D``).

    `points`: (B, 4, H*W) homogeneous (from `backproject` at ``height x width``); `K`, `T`: (B, 3, 3) or (B, 4, 4).
    Returns the sampling grid (B, H, W, 2), (x, y) = ``(u / (W-1), v / (H-1)) * 2 - 1``, for
    `grid_sample(..., align_corners=True)`; points behind the camera give meaningless coordinates (see `warp_frame`).
    """
    pixels, _ = _project_pixels(points, K, T)
    return _normalise_grid(pixels, height, width)


def warp_frame(
    source: torch.Tensor, depth: torch.Tensor, T_target_to_source: torch.Tensor, K: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesise the target view from a source frame, given the target's depth and the relative pose.

    `source`: (B, C, H, W) image; `depth`: (B, 1, H, W) target depth in metres; `T_target_to_source`: (B, 4, 4)
    mapping target-camera points into the source camera (see `relative_pose`); `K`: (B, 3, 3) pixel intrinsics
    shared by both frames. Samples with ``grid_sample(padding_mode="border", align_corners=True)``.

    Returns ``(warped (B, C, H, W), valid_mask (B, 1, H, W) bool)``; the mask is True where the target pixel
    projects in front of the source camera and inside the source image.
    """
    if source.ndim != 4:
        raise ValueError(f"warp_frame: source must be (B, C, H, W), got {tuple(source.shape)}")
    if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[0] != source.shape[0]:
        raise ValueError(f"warp_frame: depth must be (B, 1, H, W) with B = {source.shape[0]}, got {tuple(depth.shape)}")
    if depth.shape[-2:] != source.shape[-2:]:
        raise ValueError(f"warp_frame: depth size {tuple(depth.shape[-2:])} != source size {tuple(source.shape[-2:])}")
    height, width = depth.shape[-2:]
    K = _as_homogeneous_4x4("warp_frame: K", K).to(depth.dtype)
    points = backproject(depth, torch.linalg.inv(K))
    pixels, z = _project_pixels(points, K, T_target_to_source)
    grid = _normalise_grid(pixels, height, width)
    warped = F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    u, v = pixels[:, 0], pixels[:, 1]  # (B, H*W); tolerance absorbs float rounding at the border pixels
    tol = _INSIDE_TOLERANCE_PX
    inside = ((u >= -tol) & (u <= width - 1 + tol) & (v >= -tol) & (v <= height - 1 + tol)).reshape(-1, height, width)
    in_front = (z > _PROJECTION_EPS).reshape(-1, height, width)
    return warped, (inside & in_front)[:, None]


def relative_pose(T_world_from_target: torch.Tensor, T_world_from_source: torch.Tensor) -> torch.Tensor:
    """``T_target_to_source = inverse(T_world_from_source) @ T_world_from_target`` (B, 4, 4).

    Inputs are camera-to-world poses (B, 4, 4) of the target and source frames; the result maps homogeneous
    target-camera points into the source camera, as `warp_frame` expects.
    """
    for name, pose in (("T_world_from_target", T_world_from_target), ("T_world_from_source", T_world_from_source)):
        if pose.ndim != 3 or tuple(pose.shape[1:]) != (4, 4):
            raise ValueError(f"relative_pose: {name} must be (B, 4, 4), got {tuple(pose.shape)}")
    return torch.linalg.inv(T_world_from_source) @ T_world_from_target


__all__ = [
    "axisangle_to_rotation",
    "backproject",
    "disp_to_depth",
    "pixel_grid",
    "pose_vec_to_matrix",
    "project",
    "relative_pose",
    "warp_frame",
]

"""World checks: can the synthetic world's video teach depth to the geometric stage's photometric objective?

Each check warps the clip's source frames into its target with the true (or a perturbed) target depth and the true
relative pose, through the objective's own code (`mesa_hf.geometry.warp_frame`, `mesa_hf.losses.photometric_error`,
the stage loss of `mesa_hf.modeling_mesa.self_supervised_scale_loss`), and reads the mean per-pixel minimum of the
photometric error over the sources. A world fit for the objective scores low at the true depth, clearly higher for
a flat plane or a mis-scaled depth, and lets a free per-pixel depth map optimised under the objective find the
truth. Rendering checks: a camera shifted by half a pixel sees a bilinear half-pixel shift of the unshifted image
(the image is band-limited, so resampling it in a warp does not change it).

`python benchmarks/data.py` prints them; tests/test_world_checks.py asserts them on the demo recipe's clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..evaluation.metrics import median_scale
from ..geometry import relative_pose
from ..losses import photometric_error

DEPTH_BINS = ((0.0, 2.0), (2.0, 4.0), (4.0, 7.0), (7.0, float("inf")))  # metres, for the scale sweep


@dataclass
class ClipBatch:
    """Synthetic clips as tensors: ``target`` (B, 3, H, W) and ``sources`` (B, S, 3, H, W) in [0, 1], the target's
    ``depth`` (B, 1, H, W) metres, ``poses`` (B, S, 4, 4) target->source, ``intrinsics`` (B, 3, 3) pixels."""

    target: torch.Tensor
    sources: torch.Tensor
    depth: torch.Tensor
    poses: torch.Tensor
    intrinsics: torch.Tensor

    @classmethod
    def from_clips(cls, clips: Sequence[dict]) -> ClipBatch:
        """Stack `synthetic.synthetic_clip` outputs (target first, its sources after)."""
        if not clips:
            raise ValueError("ClipBatch.from_clips: no clips")

        def images(clip, index):
            return torch.from_numpy(np.stack(clip["images"][index]).astype(np.float32) / 255.0)

        target = torch.stack([images(c, 0).permute(2, 0, 1) for c in clips])
        sources = torch.stack([images(c, slice(1, None)).permute(0, 3, 1, 2) for c in clips])
        depth = torch.stack([torch.from_numpy(np.asarray(c["depths"][0], np.float32))[None] for c in clips])
        poses = []
        for c in clips:
            world = torch.as_tensor(np.asarray(c["poses"]), dtype=torch.float64)
            poses.append(relative_pose(world[:1].expand(len(world) - 1, 4, 4), world[1:]))
        intrinsics = torch.stack([torch.as_tensor(np.asarray(c["intrinsics"]), dtype=torch.float32) for c in clips])
        return cls(target, sources, depth, torch.stack(poses).float(), intrinsics)

    @property
    def num_sources(self) -> int:
        return self.sources.shape[1]


def warped_errors(batch: ClipBatch, depth: torch.Tensor, ssim_weight: float = 0.85) -> torch.Tensor:
    """Photometric error (B, S, H, W) of each source warped into the target with `depth` (B, 1, H, W) metres."""
    from ..modeling_mesa import reprojection_errors

    return reprojection_errors(depth, batch.target, batch.sources, batch.poses, batch.intrinsics, ssim_weight)


def unwarped_errors(batch: ClipBatch, ssim_weight: float = 0.85) -> torch.Tensor:
    """Photometric error (B, S, H, W) of each source against the target without warping."""
    return torch.cat(
        [photometric_error(batch.sources[:, j], batch.target, ssim_weight) for j in range(batch.num_sources)], dim=1
    )


def flat_plane_depth(depth: torch.Tensor) -> torch.Tensor:
    """A fronto-parallel plane at each image's median depth: (B, 1, H, W) like `depth`."""
    median = depth.flatten(1).median(dim=1).values
    return median.view(-1, 1, 1, 1).expand_as(depth).contiguous()


def contrast_table(batch: ClipBatch, ssim_weight: float = 0.85) -> dict[str, float]:
    """Mean per-pixel minimum photometric error over the sources for the true depth, the true depth x 1.3, a flat
    plane at the median depth and the unwarped sources."""
    with torch.no_grad():
        return {
            "true depth": warped_errors(batch, batch.depth, ssim_weight).min(1).values.mean().item(),
            "true x 1.3": warped_errors(batch, batch.depth * 1.3, ssim_weight).min(1).values.mean().item(),
            "flat plane": warped_errors(batch, flat_plane_depth(batch.depth), ssim_weight).min(1).values.mean().item(),
            "unwarped": unwarped_errors(batch, ssim_weight).min(1).values.mean().item(),
        }


def depth_scale_sweep(
    batch: ClipBatch, alphas: Sequence[float], bins=DEPTH_BINS, ssim_weight: float = 0.85
) -> dict[tuple[float, float], np.ndarray]:
    """Mean per-pixel minimum photometric error of the depth x alpha, per true-depth bin: {bin: (len(alphas),)}."""
    errors = []
    with torch.no_grad():
        for alpha in alphas:
            errors.append(warped_errors(batch, batch.depth * float(alpha), ssim_weight).min(1).values)
    stacked = torch.stack(errors)  # (A, B, H, W)
    depth = batch.depth[:, 0]
    out = {}
    for lo, hi in bins:
        in_bin = (depth >= lo) & (depth < hi)
        if in_bin.any():
            out[(lo, hi)] = stacked[:, in_bin].mean(1).double().numpy()
    return out


def camera_flows(batch: ClipBatch) -> dict[str, float]:
    """Median image motion (pixels) between target and sources, over pixels, sources and clips.

    ``translational``: the motion that the camera's translation adds for points at the image's median depth
    (the depth-dependent part, the parallax); ``rotational``: the motion of the rotation alone (points at
    infinity), which carries no depth."""
    h, w = batch.depth.shape[-2:]
    k = batch.intrinsics.double()
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(h * w, dtype=torch.float64)])  # (3, N)
    rays = torch.linalg.inv(k) @ pixels  # (B, 3, N)
    median = batch.depth.flatten(1).median(dim=1).values.double()
    trans, rot = [], []
    for j in range(batch.num_sources):
        pose = batch.poses[:, j].double()
        rotated = pose[:, :3, :3] @ rays
        moved = rotated * median.view(-1, 1, 1) + pose[:, :3, 3:]

        def to_pixels(points):
            projected = k @ points
            return projected[:, :2] / projected[:, 2:]

        at_infinity = to_pixels(rotated)
        rot.append((at_infinity - pixels[:2]).norm(dim=1))
        trans.append((to_pixels(moved) - at_infinity).norm(dim=1))
    return {"translational": torch.cat(trans).median().item(), "rotational": torch.cat(rot).median().item()}


def half_pixel_shift_error(render_view, intrinsics: np.ndarray) -> float:
    """Mean L1 (images in [0, 1]) between a view rendered with the principal point moved by half a pixel and the
    bilinear half-pixel shift of the unmoved render (the average of neighbouring pixels), the larger of the two
    image axes.

    ``render_view(intrinsics) -> image (H, W, 3) uint8`` renders the same camera pose with other intrinsics. Moving
    ``cx`` by -0.5 px makes pixel u see what pixel u + 0.5 saw, so a band-limited image gives the same numbers as
    interpolating the unmoved one."""
    base = np.asarray(render_view(np.asarray(intrinsics, dtype=np.float64)), dtype=np.float64) / 255.0
    errors = []
    for axis in (0, 1):  # 0: rows (cy), 1: columns (cx)
        k = np.array(intrinsics, dtype=np.float64)
        k[1 - axis, 2] -= 0.5
        moved = np.asarray(render_view(k), dtype=np.float64) / 255.0
        n = base.shape[axis]
        first, second = np.take(base, range(n - 1), axis=axis), np.take(base, range(1, n), axis=axis)
        errors.append(np.abs(np.take(moved, range(n - 1), axis=axis) - (first + second) / 2).mean())
    return float(max(errors))


def fit_free_depth(
    batch: ClipBatch,
    steps: int = 300,
    learning_rate: float = 0.05,
    initial_depth: float = 3.0,
    ssim_weight: float = 0.85,
    smoothness_weight: float = 1e-3,
    levels: int = 1,
) -> torch.Tensor:
    """A free per-pixel depth map (B, 1, H, W) fitted to the clips under the geometric stage's loss
    (`modeling_mesa.self_supervised_scale_loss`: minimum reprojection, auto-masking, edge-aware smoothness at
    `smoothness_weight`), with the true poses, from a constant `initial_depth` metres.

    The parameters are log-depth maps at `levels` resolutions (full, 1/2, 1/4, ...), summed after bilinear
    upsampling (1: one full-resolution map); Adam at `learning_rate` for `steps` steps."""
    from ..modeling_mesa import self_supervised_scale_loss

    b, _, h, w = batch.depth.shape
    params = [
        torch.full((b, 1, max(h >> i, 2), max(w >> i, 2)), float(np.log(initial_depth)) if i == 0 else 0.0)
        for i in range(levels)
    ]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    identity = unwarped_errors(batch, ssim_weight)

    def depth_of():
        log_depth = params[0]
        for p in params[1:]:
            log_depth = log_depth + torch.nn.functional.interpolate(
                p, size=(h, w), mode="bilinear", align_corners=False
            )
        return log_depth.exp()

    for _ in range(steps):
        optimizer.zero_grad()
        loss, _ = self_supervised_scale_loss(
            depth_of(),
            batch.target,
            batch.sources,
            batch.poses,
            batch.intrinsics,
            identity,
            ssim_weight,
            smoothness_weight,
        )
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return depth_of()


def median_scaled_abs_rel(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """AbsRel over all pixels after per-image median scaling (pred, gt: (B, 1, H, W) or (B, H, W) metres)."""
    pred, gt = pred.reshape(-1, *pred.shape[-2:]).double(), gt.reshape(-1, *gt.shape[-2:]).double()
    scaled = median_scale(pred, gt, torch.ones_like(gt, dtype=torch.bool))  # (B, H, W)
    return ((scaled - gt).abs() / gt).mean().item()


__all__ = [
    "DEPTH_BINS",
    "ClipBatch",
    "camera_flows",
    "contrast_table",
    "depth_scale_sweep",
    "fit_free_depth",
    "flat_plane_depth",
    "half_pixel_shift_error",
    "median_scaled_abs_rel",
    "unwarped_errors",
    "warped_errors",
]

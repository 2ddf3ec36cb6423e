"""World checks (issue 23, 2a-d) on the demo recipe's geometric clips: the synthetic video can teach depth to the
geometric stage's photometric objective. Warping goes through geometry.warp_frame and losses.photometric_error
(mesa_hf.data.world_checks); each number is the mean per-pixel minimum over the sources."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from mesa_hf.data.synthetic import Trajectory, default_intrinsics, make_room, render, synthetic_clip
from mesa_hf.data.world_checks import (
    ClipBatch,
    camera_flows,
    contrast_table,
    depth_scale_sweep,
    fit_free_depth,
    flat_plane_depth,
    half_pixel_shift_error,
    median_scaled_abs_rel,
)
from mesa_hf.training.recipes import STAGES

HEIGHT, WIDTH = 96, 128  # the demo recipe's frames
GEOMETRIC = STAGES["geometric"]
DEMO_OFFSETS = tuple(GEOMETRIC.config_values("demo")["frame_offsets"])


@functools.cache
def demo_clips(count: int) -> ClipBatch:
    """The first `count` clips of the demo recipe's geometric training world (its seed and frame offsets)."""
    clips = [synthetic_clip(GEOMETRIC.synthetic_seed, i, HEIGHT, WIDTH, DEMO_OFFSETS) for i in range(count)]
    return ClipBatch.from_clips(clips)


def test_demo_video_has_indoor_parallax():
    flows = camera_flows(demo_clips(8))
    print(f"demo clips {DEMO_OFFSETS}: median flow at the median depth {flows}")
    assert flows["translational"] >= 3.0  # px of parallax at the median depth
    assert flows["rotational"] > 0.5  # the motion also turns the camera (reported beside the parallax)


def test_error_at_the_truth_is_small_and_a_flat_plane_scores_clearly_worse():  # (a)
    table = contrast_table(demo_clips(8))
    print("contrast table:", {k: round(v, 4) for k, v in table.items()})
    assert table["true depth"] <= 0.25 * table["unwarped"]
    assert table["flat plane"] >= 3.0 * table["true depth"]
    assert table["true x 1.3"] > table["flat plane"] > table["true depth"]


def test_depth_scale_sweep_is_lowest_at_the_true_scale_in_every_depth_bin():  # (b)
    alphas = np.array([0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03, 1.05, 1.1, 1.15, 1.2, 1.25])
    sweep = depth_scale_sweep(demo_clips(16), alphas)
    # the demo rooms are NYUv2-like: their clips reach about 5 m, so the > 7 m bin is empty there and is checked
    # wherever it has pixels; the three nearer bins must all be present
    assert {(0.0, 2.0), (2.0, 4.0), (4.0, 7.0)} <= set(sweep)
    for (lo, hi), errors in sweep.items():
        best = alphas[int(np.argmin(errors))]
        print(f"depth {lo}-{hi} m: lowest error at alpha {best}")
        assert abs(best - 1.0) <= 0.02 + 1e-9, (lo, hi, best)
        assert errors[0] > errors.min() and errors[-1] > errors.min()


def test_free_depth_map_under_the_stage_loss_finds_the_geometry():  # (c)
    torch.manual_seed(0)
    batch = demo_clips(2)
    smoothness = GEOMETRIC.config_values("demo")["smoothness_weight"]
    fitted = fit_free_depth(batch, steps=300, learning_rate=0.02, smoothness_weight=smoothness, levels=4)
    abs_rel = median_scaled_abs_rel(fitted, batch.depth)
    start = median_scaled_abs_rel(flat_plane_depth(batch.depth), batch.depth)  # any constant depth scores this
    print(f"free depth map: median-scaled AbsRel {abs_rel:.4f} (constant start {start:.4f})")
    assert abs_rel <= 0.15
    assert abs_rel < start


@pytest.mark.parametrize("view", range(3))
def test_half_pixel_camera_shift_is_a_bilinear_half_pixel_image_shift(view):  # (d)
    room = make_room(np.random.default_rng([GEOMETRIC.synthetic_seed, view]))
    pose = Trajectory.random(room, np.random.default_rng([GEOMETRIC.synthetic_seed, view, 1])).pose(100.0 + 37 * view)
    k = default_intrinsics(HEIGHT, WIDTH)
    error = half_pixel_shift_error(lambda kk: render(room, pose, kk, HEIGHT, WIDTH)[0], k)
    print(f"view {view}: half-pixel shift mean L1 {error:.4f}")
    assert error <= 0.005

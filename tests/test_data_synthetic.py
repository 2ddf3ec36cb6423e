"""The synthetic RGB-D world: analytic depth, multi-view consistency of depth + intrinsics + poses, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from mesa_hf.data.synthetic import (
    CEILING_FACE,
    FLOOR_FACE,
    FLOOR_TILE_SIZE,
    TEXEL_SIZE,
    WALL_FACES,
    default_intrinsics,
    empty_room,
    look_pose,
    make_room,
    render,
    synthetic_clip,
    synthetic_depth_dataset,
    synthetic_image_dataset,
    synthetic_video_dataset,
)


def test_camera_facing_a_wall_sees_its_distance():
    room = empty_room((10.0, 10.0, 10.0))
    k = default_intrinsics(48, 64)
    image, depth = render(room, look_pose([5.0, 5.0, 7.75]), k, 48, 64)
    assert depth.dtype == np.float32 and depth.shape == (48, 64) and image.shape == (48, 64, 3)
    np.testing.assert_array_equal(depth, np.full((48, 64), 2.25, np.float32))  # the wall at z = 10
    assert image.std() > 5  # textured, not flat


def test_floor_depth_is_analytic():
    # level camera 1.5 m above the floor: a pixel row v below the centre sees the floor at z = 1.5 * fy / (v - cy)
    room = empty_room((40.0, 3.0, 40.0))
    h, w = 60, 80
    k = default_intrinsics(h, w)
    _, depth = render(room, look_pose([20.0, 1.5, 1.0]), k, h, w)
    rows = np.arange(h)
    floor_rows = rows[rows > k[1, 2] + 2]
    expected = 1.5 * k[1, 1] / (floor_rows - k[1, 2])
    np.testing.assert_allclose(depth[floor_rows, w // 2], expected, rtol=1e-5)
    ceiling_rows = rows[rows < k[1, 2] - 2]
    np.testing.assert_allclose(depth[ceiling_rows, 10], 1.5 * k[1, 1] / (k[1, 2] - ceiling_rows), rtol=1e-5)


def test_rooms_carry_metric_texture_floor_tiles_and_one_wall_paint():
    for seed in range(4):
        room = make_room(seed)
        np.testing.assert_array_equal(room.texel_scale, 1 / TEXEL_SIZE)  # one metric texture scale everywhere
        assert room.pattern_index[FLOOR_FACE] == len(room.patterns) - 1  # the floor tiles
        assert (room.pattern_index[np.arange(len(room.pattern_index)) != FLOOR_FACE] < len(room.patterns) - 1).all()
        walls = room.colours[list(WALL_FACES)]
        assert (walls == walls[0]).all()
        ceiling = room.colours[CEILING_FACE]
        assert (ceiling == ceiling[:, :1]).all() and ceiling.min() > 0.6  # light grey
        assert room.colours[FLOOR_FACE, 0].max() <= 0.6
    assert abs(FLOOR_TILE_SIZE - 0.64) < 1e-12


@pytest.mark.parametrize("band_limited", [True, False])
def test_floor_grout_lines_lie_every_tile_size_along_the_floor(band_limited):
    # a camera 1.5 m up looking straight down: the floor image is a scaled copy of the tile pattern, so the dark
    # grout columns repeat every FLOOR_TILE_SIZE metres = FLOOR_TILE_SIZE * fx / 1.5 pixels (the band-limited
    # render blurs the 2.8-px grout lines to a shallower dip: under 0.6x the median column, not 0.5x)
    room = empty_room((20.0, 3.0, 20.0))
    h, w = 120, 160
    k = default_intrinsics(h, w)
    image, depth = render(room, look_pose([10.0, 1.5, 10.0], pitch=-np.pi / 2 + 1e-6), k, h, w, band_limited)
    np.testing.assert_allclose(depth, 1.5, rtol=1e-4)
    columns = image.astype(np.float64).mean(axis=(0, 2))
    dark = columns < 0.6 * np.median(columns)
    starts = np.flatnonzero(dark[1:] & ~dark[:-1]) + 1
    assert len(starts) >= 2
    np.testing.assert_allclose(np.diff(starts), FLOOR_TILE_SIZE * k[0, 0] / 1.5, atol=1.5)


def bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    du, dv = u - u0, v - v0
    if img.ndim == 3:
        du, dv = du[:, None], dv[:, None]
    return (
        img[v0, u0] * (1 - du) * (1 - dv)
        + img[v0, u0 + 1] * du * (1 - dv)
        + img[v0 + 1, u0] * (1 - du) * dv
        + img[v0 + 1, u0 + 1] * du * dv
    )


def test_depth_intrinsics_and_poses_reproject_between_frames():
    h, w = 96, 128
    clip = synthetic_clip(seed=3, index=0, height=h, width=w, frame_offsets=(4,), speed=0.05)
    (img_a, img_b), (depth_a, depth_b), (pose_a, pose_b) = clip["images"], clip["depths"], clip["poses"]
    k = clip["intrinsics"]
    assert np.linalg.norm(pose_a[:3, 3] - pose_b[:3, 3]) > 0.05  # the camera moved
    # back-project every pixel of A, move it into B's camera frame, project
    v, u = np.mgrid[0:h, 0:w].reshape(2, -1).astype(np.float64)
    z = depth_a.reshape(-1).astype(np.float64)
    pts_a = np.stack([(u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z, np.ones_like(z)])
    pts_b = (np.linalg.inv(pose_b) @ pose_a @ pts_a)[:3]
    ub, vb = k[0, 0] * pts_b[0] / pts_b[2] + k[0, 2], k[1, 1] * pts_b[1] / pts_b[2] + k[1, 2]
    inside = (pts_b[2] > 0.1) & (ub >= 0) & (ub <= w - 2) & (vb >= 0) & (vb <= h - 2)
    ub, vb, zb = ub[inside], vb[inside], pts_b[2][inside]
    # visible in B (not occluded): B's own depth there agrees
    depth_b_at = bilinear(depth_b.astype(np.float64), ub, vb)
    relative = np.abs(depth_b_at - zb) / zb
    visible = relative < 0.05  # not occluded in B, not at a depth edge
    assert inside.mean() > 0.6 and visible.mean() > 0.8
    print(f"synthetic depth consistency: median relative depth difference {np.median(relative):.2e}")
    assert np.median(relative) < 1e-3  # B's rendered depth is where A's depth + poses put the points
    # B's depth at the projected pixel, lifted back to 3-D and projected into A, returns to the start pixel
    ub, vb, zb_at = ub[visible], vb[visible], depth_b_at[visible]
    back_b = np.stack([(ub - k[0, 2]) / k[0, 0] * zb_at, (vb - k[1, 2]) / k[1, 1] * zb_at, zb_at, np.ones_like(zb_at)])
    back_a = (np.linalg.inv(pose_a) @ pose_b @ back_b)[:3]
    ua, va = k[0, 0] * back_a[0] / back_a[2] + k[0, 2], k[1, 1] * back_a[1] / back_a[2] + k[1, 2]
    error = np.hypot(ua - u[inside][visible], va - v[inside][visible])
    print(f"synthetic reprojection: mean round-trip error {error.mean():.4f} px over {error.size} pixels")
    assert error.mean() < 0.5, error.mean()
    # and the colour seen at the projected pixel is the colour of the start pixel (view-consistent textures)
    colour_a = img_a.reshape(-1, 3)[inside][visible].astype(np.float64)
    warped = bilinear(img_b.astype(np.float64), ub, vb)
    unwarped = img_b.reshape(-1, 3)[inside][visible].astype(np.float64)
    err_w, err_i = np.abs(warped - colour_a).mean(), np.abs(unwarped - colour_a).mean()
    print(f"synthetic colour error: warped {err_w:.2f} vs unwarped {err_i:.2f} (0-255)")
    assert err_w < 0.35 * err_i


def test_depth_range_is_indoor():
    ds = synthetic_depth_dataset(8, 24, 32, seed=1)
    depths = np.stack([np.asarray(d) for d in ds["depth"]])
    assert depths.min() > 0.3 and depths.max() < 12.0 and 1.0 < np.median(depths) < 5.0


def test_same_seed_same_samples_other_seed_differs(tmp_path):
    a = synthetic_video_dataset(2, 24, 32, seed=5, cache_dir=str(tmp_path / "a"))
    b = synthetic_video_dataset(2, 24, 32, seed=5, cache_dir=str(tmp_path / "b"))
    c = synthetic_video_dataset(2, 24, 32, seed=6, cache_dir=str(tmp_path / "c"))
    for key in ("image", "depth"):
        np.testing.assert_array_equal(np.asarray(a[1][key]), np.asarray(b[1][key]))
        assert not np.array_equal(np.asarray(a[1][key]), np.asarray(c[1][key]))
    np.testing.assert_array_equal(a[1]["poses"], b[1]["poses"])
    assert np.asarray(a[0]["poses"]).shape == (3, 4, 4) and a[0]["source_offsets"] == [-1, 1]
    assert len(a[0]["source_images"]) == 2 and a[0]["source_images"][0].size == (32, 24)


def test_image_kind_and_streaming():
    images = synthetic_image_dataset(3, 16, 24, seed=2)
    assert images.column_names == ["image"] and images[2]["image"].size == (24, 16)
    streamed = next(iter(synthetic_depth_dataset(3, 16, 24, seed=2, streaming=True)))
    np.testing.assert_array_equal(np.asarray(streamed["image"]), np.asarray(images[0]["image"]))
    with pytest.raises(ValueError, match="frame_offsets"):
        synthetic_video_dataset(1, 16, 16, frame_offsets=(0,))

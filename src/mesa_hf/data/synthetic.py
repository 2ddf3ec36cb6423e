"""The synthetic RGB-D world: procedurally generated indoor rooms rendered by a vectorised numpy ray caster.

A :class:`Room` is an axis-aligned box (x right, y up, z forward in world coordinates, metres; floor at y = 0)
holding axis-aligned furniture-like boxes (cupboards, tables made of a top and four legs, pictures on the walls)
and spheres. Every surface carries its own procedurally generated texture (multi-octave value noise mixed with
stripes, tiles or checks), looked up bilinearly at the surface point's 2-D coordinates in its face plane, and
lambertian shading from a point light below the ceiling: colours are a deterministic function of the 3-D surface
point, so they are identical from every view point (what photometric self-supervision needs).

The rooms carry the monocular depth cues of real interiors: every texture has the same metric scale
(`TEXEL_SIZE` metres per texel), so texture density in the image grows with distance; the floor is laid with
square tiles (`FLOOR_TILE_SIZE`), whose grout lines converge in perspective; and surfaces look like what they are
(one paint for the four walls, a light ceiling, a darker floor; furniture and pictures in random colours).

:func:`render` casts rays through a pinhole camera (OpenCV convention: camera x right, y down, z forward) and
returns the RGB image and the exact **z-depth** at each pixel centre (distance along the optical axis, the
convention of depth maps). By default the image is band-limited: textures are looked up in a Gaussian mip pyramid
at the level of each sample's footprint (ray differentials) and every pixel averages 2 x 2 such samples, so that
the image of a surface point does not change with sub-pixel camera motion and a warp can resample it
(`mesa_hf.data.world_checks` measures this); ``band_limited=False`` keeps the original one-sample, point-sampled
renderer. Rooms are 3.6–9 m × 2.5–3.2 m × 3.6–10 m, so depths span about 0.5–10 m like NYUv2. Cameras move on
smooth trajectories (sums of sinusoids in position and heading) inside a free region away from the furniture.
Everything is deterministic per seed.

The three dataset kinds are :func:`synthetic_depth_dataset`, :func:`synthetic_video_dataset` and
:func:`synthetic_image_dataset` (columns as in :mod:`.columns`).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, IterableDataset
from PIL import Image

from .columns import DEPTH_FEATURES, IMAGE_FEATURES, VIDEO_FEATURES

TEXTURE_SIZE = 256
NUM_ROOM_FACES = 6  # object ids 0..5: the room's faces -x, +x, floor (-y), ceiling (+y), -z, +z
WALL_FACES, FLOOR_FACE, CEILING_FACE = (0, 1, 4, 5), 2, 3
TEXEL_SIZE = 0.02  # metres per texel on every surface (one texture period: TEXTURE_SIZE x 2 cm = 5.12 m)
FLOOR_TILES_PER_PERIOD = 8  # floor tiles of 5.12 m / 8 = 0.64 m
FLOOR_TILE_SIZE = TEXTURE_SIZE * TEXEL_SIZE / FLOOR_TILES_PER_PERIOD
MID_DETAIL_GAIN, FINE_DETAIL_GAIN = 0.45, 0.2  # amplitude of the 16–32 cm and 4–8 cm detail in every pattern
WALL_CONTRAST = 0.4  # the wall paint's dark shade, as a fraction of its light one
# Part of every synthetic dataset's fingerprint: datasets caches `Dataset.from_generator` by the generator's name and
# arguments, not by the renderer's code, so a world that renders differently must bump this (3: mid-scale detail).
WORLD_VERSION = 3


@dataclass
class Room:
    """A textured box room. ``boxes`` (B, 2, 3) min/max corners, ``spheres`` (S, 4) centre + radius, metres.

    Per object (the 6 room faces, then the boxes, then the spheres): ``pattern_index`` into ``patterns``
    (N, T, T) (the shared :func:`texture_bank`), ``colours`` (objects, 2, 3) the albedos the pattern mixes
    (value 1 → first colour), ``texel_scale`` (objects,) texels per metre (``1 / TEXEL_SIZE`` in generated
    rooms), ``texel_offset`` (objects, 2) texels.
    ``light`` (3,) point-light position; ``camera_box`` (2, 3) the region cameras may occupy.
    """

    size: np.ndarray
    boxes: np.ndarray
    spheres: np.ndarray
    patterns: np.ndarray
    pattern_index: np.ndarray
    colours: np.ndarray
    texel_scale: np.ndarray
    texel_offset: np.ndarray
    light: np.ndarray
    camera_box: np.ndarray
    ambient: float = 0.35
    diffuse: float = 0.75


# ---------------------------------------------------------------- textures


def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells) matrix that bilinearly upsamples a periodic grid of ``cells`` values to ``size`` samples."""
    pos = np.arange(size) * cells / size
    i0 = np.floor(pos).astype(int)
    frac = pos - i0
    m = np.zeros((size, cells), dtype=np.float32)
    m[np.arange(size), i0 % cells] += 1 - frac
    m[np.arange(size), (i0 + 1) % cells] += frac
    return m


def make_pattern(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A random periodic scalar pattern (size, size) float32 in [0, 1]: multi-octave value noise (4 to 128
    cells per period) under a random motif (plain, bent stripes, tiles with grout lines, or checks), with a strong
    mid-scale component (16–32 cm cells, `MID_DETAIL_GAIN`) and a weaker fine one (4–8 cm, `FINE_DETAIL_GAIN`).

    The mid scale is what a 96x128 view resolves at every depth of a room (a 16 cm cell is 5 px wide at 3 m and
    still 2 px at 8 m), so the band-limited render keeps texture detail whose image size shrinks with distance:
    without it, mip filtering leaves the far walls almost uniform (docs/datasets.md, "The synthetic world is
    band-limited")."""
    layers = []
    for k in range(6):
        m = _interp_matrix(size, 4 * 2**k)
        layers.append(m @ rng.random((m.shape[1],) * 2, dtype=np.float32) @ m.T)
    coarse = sum(0.6**k * layer for k, layer in enumerate(layers)) / sum(0.6**k for k in range(6))
    mid = layers[2] + layers[3] - 1.0  # zero-mean detail at 8–16 texels (16–32 cm)
    fine = layers[4] + layers[5] - 1.0  # zero-mean detail at 2–4 texels (4–8 cm)
    u = np.arange(size, dtype=np.float32)[None, :] / size
    v = np.arange(size, dtype=np.float32)[:, None] / size
    kind = rng.integers(4)
    if kind == 1:  # stripes bent by noise (wood, fabric)
        freq = rng.integers(4, 16)
        motif = 0.5 + 0.5 * np.sin(2 * np.pi * (freq * (u if rng.random() < 0.5 else v) + 1.5 * coarse))
    elif kind == 2:  # tiles with grout lines
        n = int(rng.integers(2, 8))
        motif = np.where(((u * n) % 1.0 < 0.06) | ((v * n) % 1.0 < 0.06), 0.0, 0.6 + 0.4 * coarse)
    elif kind == 3:  # checks
        n = int(rng.integers(2, 8))
        motif = ((np.floor(u * n) + np.floor(v * n)) % 2) * 0.6 + 0.4 * coarse
    else:
        motif = (coarse - coarse.min()) / (np.ptp(coarse) + 1e-6)
    return np.clip(0.6 * motif + 0.2 + MID_DETAIL_GAIN * mid + FINE_DETAIL_GAIN * fine, 0.0, 1.0).astype(np.float32)


def make_floor_tiles(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A periodic floor-tile pattern (size, size) float32 in [0, 1]: `FLOOR_TILES_PER_PERIOD` square tiles per
    period along each axis, separated by dark grout lines 5 % of a tile wide, each tile textured by value noise."""
    u = np.arange(size, dtype=np.float32)[None, :] / size
    v = np.arange(size, dtype=np.float32)[:, None] / size
    n = FLOOR_TILES_PER_PERIOD
    grout = ((u * n) % 1.0 < 0.05) | ((v * n) % 1.0 < 0.05)
    return np.where(grout, 0.0, 0.55 + 0.45 * make_pattern(rng, size)).astype(np.float32)


@functools.lru_cache(maxsize=2)
def texture_bank(num_textures: int = 48, seed: int = 1234, size: int = TEXTURE_SIZE) -> np.ndarray:
    """The shared bank of scalar patterns (num_textures + 1, size, size) that rooms draw from (each object then
    gets its own two colours and texel offset): `num_textures` random patterns, then the floor tiles (last)."""
    rng = np.random.default_rng(seed)
    bank = np.stack([make_pattern(rng, size) for _ in range(num_textures)] + [make_floor_tiles(rng, size)])
    bank.setflags(write=False)
    return bank


MIP_SIGMA = 0.7  # Gaussian prefilter of mip level l: sigma = MIP_SIGMA * 2**l texels
MIP_BIAS = 0.0  # added to log2(footprint) when choosing the mip level (> 0 blurs more)


@dataclass(frozen=True)
class MipPyramid:
    """Prefiltered, subsampled copies of a pattern bank, flattened for vectorised lookup.

    Level ``l`` holds the patterns low-passed by a periodic Gaussian of ``MIP_SIGMA * 2**l`` texels and sampled
    every ``2**l`` texels (sample ``j`` sits at texel ``j * 2**l``): ``flat[offsets[l] + n * s*s + row * s + col]``
    with ``s = sizes[l]``.
    """

    flat: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray

    @property
    def num_levels(self) -> int:
        return len(self.sizes)


def build_mip_pyramid(patterns: np.ndarray, sigma: float = MIP_SIGMA) -> MipPyramid:
    """The :class:`MipPyramid` of periodic patterns (N, T, T) (T a power of two), filtered exactly in Fourier space."""
    size = patterns.shape[-1]
    if patterns.shape[-2] != size or size & (size - 1):
        raise ValueError(f"patterns must be square with a power-of-two side, got {patterns.shape[1:]}")
    spectrum = np.fft.rfft2(patterns.astype(np.float64))
    freq2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2  # (cycles / texel)^2
    levels = []
    for level in range(int(np.log2(size)) + 1):
        gain = np.exp(-2.0 * np.pi**2 * (sigma * 2**level) ** 2 * freq2)
        filtered = np.fft.irfft2(spectrum * gain, s=(size, size))
        levels.append(filtered[:, :: 2**level, :: 2**level].astype(np.float32))
    sizes = np.array([lv.shape[-1] for lv in levels], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([lv.size for lv in levels])[:-1]]).astype(np.int64)
    flat = np.concatenate([lv.reshape(-1) for lv in levels])
    flat.setflags(write=False)
    return MipPyramid(flat, offsets, sizes)


_PYRAMIDS: dict[int, tuple[np.ndarray, MipPyramid]] = {}


def mip_pyramid(patterns: np.ndarray) -> MipPyramid:
    """The cached :class:`MipPyramid` of a pattern bank (rooms share `texture_bank`'s, so it is built once)."""
    entry = _PYRAMIDS.get(id(patterns))
    if entry is None or entry[0] is not patterns:
        if len(_PYRAMIDS) >= 4:
            _PYRAMIDS.clear()
        entry = (patterns, build_mip_pyramid(patterns, MIP_SIGMA))
        _PYRAMIDS[id(patterns)] = entry
    return entry[1]


# ---------------------------------------------------------------- rooms


def make_room(seed: int | np.random.Generator, num_spheres: int | None = None, furnished: bool = True) -> Room:
    """A random furnished room, deterministic per seed."""
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    size = np.array([rng.uniform(3.6, 9.0), rng.uniform(2.5, 3.2), rng.uniform(3.6, 10.0)])
    boxes, spheres = [], []
    margin = 1.3  # cameras stay this far from the walls; furniture is at most 0.8 m deep
    if furnished:
        for wall in range(4):  # 0: x=0, 1: x=Lx, 2: z=0, 3: z=Lz
            along, across = (2, 0) if wall < 2 else (0, 2)
            at_max = wall % 2 == 1
            for _ in range(rng.integers(1, 4)):
                width = rng.uniform(0.5, min(2.0, size[along] - 0.2))
                depth = rng.uniform(0.3, 0.8)
                start = rng.uniform(0.0, size[along] - width)
                lo, hi = np.zeros(3), np.zeros(3)
                lo[along], hi[along] = start, start + width
                gap = rng.uniform(0.0, 0.05)
                lo[across] = size[across] - gap - depth if at_max else gap
                hi[across] = lo[across] + depth
                kind = rng.random()
                if kind < 0.25:  # a table: top + 4 legs
                    top_h = rng.uniform(0.65, 0.8)
                    boxes.append(_box(lo, hi, top_h - 0.04, top_h))
                    leg = 0.05
                    for cx in (lo[0], hi[0] - leg):
                        for cz in (lo[2], hi[2] - leg):
                            boxes.append(np.array([[cx, 0.0, cz], [cx + leg, top_h - 0.04, cz + leg]]))
                else:
                    boxes.append(_box(lo, hi, 0.0, rng.uniform(0.4, 2.1)))
                if rng.random() < 0.5:  # a picture on the wall
                    plo, phi = lo.copy(), hi.copy()
                    plo[along] = start + rng.uniform(0.0, 0.3)
                    phi[along] = min(plo[along] + rng.uniform(0.4, 1.2), size[along] - 0.05)
                    plo[across] = size[across] - 0.02 if at_max else 0.0
                    phi[across] = plo[across] + 0.02
                    boxes.append(_box(plo, phi, rng.uniform(2.15, 2.3), min(size[1] - 0.1, rng.uniform(2.4, 2.7))))
        n_spheres = rng.integers(1, 4) if num_spheres is None else num_spheres
        for _ in range(n_spheres):
            r = rng.uniform(0.12, 0.4)
            # in the band between the walls and the camera region
            side = rng.integers(4)
            c = np.array([rng.uniform(r, size[0] - r), r, rng.uniform(r, size[2] - r)])
            axis = 0 if side < 2 else 2
            c[axis] = rng.uniform(r + 0.05, margin - 0.3) if side % 2 == 0 else size[axis] - rng.uniform(r + 0.05, 1.0)
            c[axis] = np.clip(c[axis], r, size[axis] - r)
            c[1] = r if rng.random() < 0.6 else rng.uniform(r + 0.5, 1.8)
            spheres.append(np.array([*c, r]))
    boxes_arr = np.array(boxes, dtype=np.float64).reshape(-1, 2, 3)
    spheres_arr = np.array(spheres, dtype=np.float64).reshape(-1, 4)
    n_obj = NUM_ROOM_FACES + len(boxes_arr) + len(spheres_arr)
    patterns = texture_bank()
    pattern_index = rng.integers(0, len(patterns) - 1, n_obj)
    pattern_index[FLOOR_FACE] = len(patterns) - 1
    colours = np.stack([rng.uniform(0.15, 0.95, (n_obj, 3)), rng.uniform(0.03, 0.6, (n_obj, 3))], axis=1)
    wall_paint, ceiling, floor = rng.uniform(0.55, 0.9, 3), rng.uniform(0.85, 0.95), rng.uniform(0.2, 0.6, 3)
    colours[list(WALL_FACES)] = np.stack([wall_paint, WALL_CONTRAST * wall_paint])
    colours[CEILING_FACE] = np.array([[ceiling], [0.8 * ceiling]])  # grey
    colours[FLOOR_FACE] = np.stack([floor, 0.35 * floor])
    texel_scale = np.full(n_obj, 1 / TEXEL_SIZE)
    texel_offset = rng.uniform(0, TEXTURE_SIZE, (n_obj, 2))
    light = np.array([size[0] * rng.uniform(0.3, 0.7), size[1] - 0.3, size[2] * rng.uniform(0.3, 0.7)])
    camera_box = np.array([[margin, 1.1, margin], [size[0] - margin, 1.7, size[2] - margin]])
    return Room(
        size, boxes_arr, spheres_arr, patterns, pattern_index, colours, texel_scale, texel_offset, light, camera_box
    )


def _box(lo: np.ndarray, hi: np.ndarray, y0: float, y1: float) -> np.ndarray:
    lo, hi = lo.copy(), hi.copy()
    lo[1], hi[1] = y0, y1
    return np.stack([lo, hi])


def empty_room(size: tuple[float, float, float], seed: int = 0) -> Room:
    """An unfurnished textured room of the given (x, y, z) size in metres (used by analytic checks)."""
    room = make_room(seed, furnished=False)
    room.size = np.asarray(size, dtype=np.float64)
    room.light = room.size * np.array([0.5, 0.9, 0.5])
    room.camera_box = np.stack([np.zeros(3), room.size])
    return room


# ---------------------------------------------------------------- cameras


def look_pose(position, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world 4×4 (OpenCV camera axes) at ``position`` looking along heading ``yaw`` (radians, 0 = +z,
    positive turns towards +x), tilted up by ``pitch`` and rolled by ``roll``."""
    forward = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        right, down = c * right + s * down, -s * right + c * down
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, position
    return pose


@dataclass
class Trajectory:
    """A smooth camera path inside ``room.camera_box``: position and heading are sums of sinusoids of the frame
    number; ``speed`` is the typical motion per frame in metres."""

    centre: np.ndarray
    amplitude: np.ndarray
    frequency: np.ndarray
    phase: np.ndarray
    yaw0: float
    yaw_rate: float
    yaw_amp: float
    yaw_freq: float
    pitch_amp: float
    pitch_freq: float

    @classmethod
    def random(cls, room: Room, rng: np.random.Generator, speed: float = 0.05) -> Trajectory:
        lo, hi = room.camera_box
        centre, half = (lo + hi) / 2, (hi - lo) / 2
        amplitude = half * rng.uniform(0.4, 1.0, 3)
        frequency = speed / np.maximum(amplitude, 1e-3) * rng.uniform(0.5, 1.0, 3)
        return cls(
            centre=centre,
            amplitude=amplitude,
            frequency=frequency,
            phase=rng.uniform(0, 2 * np.pi, 3),
            yaw0=rng.uniform(-np.pi, np.pi),
            yaw_rate=rng.uniform(-0.02, 0.02),
            yaw_amp=rng.uniform(0.1, 0.6),
            yaw_freq=rng.uniform(0.01, 0.04),
            pitch_amp=rng.uniform(0.0, 0.15),
            pitch_freq=rng.uniform(0.01, 0.05),
        )

    def pose(self, frame: float) -> np.ndarray:
        """Camera-to-world 4×4 at a (possibly fractional) frame number."""
        position = self.centre + self.amplitude * np.sin(self.frequency * frame + self.phase)
        yaw = self.yaw0 + self.yaw_rate * frame + self.yaw_amp * np.sin(self.yaw_freq * frame)
        pitch = -0.1 + self.pitch_amp * np.sin(self.pitch_freq * frame + 1.0)
        return look_pose(position, yaw, pitch)


def default_intrinsics(height: int, width: int) -> np.ndarray:
    """NYUv2-like pinhole intrinsics scaled to (height, width): fx = 0.8107·W, fy = 1.0822·H, centred."""
    return np.array(
        [[0.8107 * width, 0.0, (width - 1) / 2], [0.0, 1.0822 * height, (height - 1) / 2], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


# ---------------------------------------------------------------- the ray caster


@functools.lru_cache(maxsize=16)
def _pixel_rays(height: int, width: int, fx: float, fy: float, cx: float, cy: float):
    x = ((np.arange(width, dtype=np.float64) - cx) / fx).astype(np.float32)[None, :]
    y = ((np.arange(height, dtype=np.float64) - cy) / fy).astype(np.float32)[:, None]
    return x, y


def _project_bounds(corners: np.ndarray, world_to_cam: np.ndarray, k: np.ndarray, height: int, width: int):
    """Pixel rectangle (r0, r1, c0, c1) holding the projection of 3-D points, or None if none is in view;
    the whole image if a point lies behind the camera."""
    cam = corners @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam[:, 2]
    if np.all(z <= 1e-6):
        return None
    if np.any(z <= 1e-2):
        return 0, height, 0, width
    u = k[0, 0] * cam[:, 0] / z + k[0, 2]
    v = k[1, 1] * cam[:, 1] / z + k[1, 2]
    c0, c1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, width)
    r0, r1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, height)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


SUPERSAMPLING = 2  # band-limited renders shade SUPERSAMPLING x SUPERSAMPLING samples per pixel


def render(
    room: Room, cam_to_world: np.ndarray, intrinsics: np.ndarray, height: int, width: int, band_limited: bool = True
):
    """Render one view.

    Args:
        room: the scene.
        cam_to_world: (4, 4) camera-to-world pose (OpenCV camera axes, metres); the camera must be inside the room.
        intrinsics: (3, 3) pinhole matrix in pixels (pixel centres at integer coordinates).
        height, width: image size.
        band_limited: a view-consistent, band-limited image. Every texture sample is filtered to its footprint
            (trilinear lookup in the patterns' :class:`MipPyramid`, the level ``log2`` of the texel footprint
            from the ray differentials), and each pixel averages `SUPERSAMPLING`² such samples spread evenly over
            its area, which also antialiases the edges of objects. A surface point then looks the same from
            every view, and warping the image resamples it faithfully. The depth is still cast through the pixel
            centre. False: the original renderer, one bilinear sample of the full-resolution texture per pixel
            centre (aliased beyond about 2 m).

    Returns:
        image (H, W, 3) uint8, depth (H, W) float32 z-depth in metres (every pixel valid).
    """
    if not band_limited:
        image, depth = _ray_cast(room, cam_to_world, intrinsics, height, width, texture="point")
        return _to_uint8(image), depth
    s = SUPERSAMPLING
    fine = np.array(intrinsics, dtype=np.float64)
    # sample (s*u + i) of the fine grid sits at pixel u + (i - (s-1)/2) / s: the s samples average to the centre
    fine[:2, :2] *= s
    fine[:2, 2] = fine[:2, 2] * s + (s - 1) / 2
    image, _ = _ray_cast(room, cam_to_world, fine, height * s, width * s, texture="filtered")
    image = image.reshape(height, s, width, s, 3).mean(axis=(1, 3))
    _, depth = _ray_cast(room, cam_to_world, intrinsics, height, width, texture=None)
    return _to_uint8(image), depth


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image + 0.5, 0.0, 255.0).astype(np.uint8)


def _ray_cast(room: Room, cam_to_world, intrinsics, height: int, width: int, texture: str | None):
    """One ray per pixel centre: (image (H, W, 3) float32 0-255 or None, z-depth (H, W) float32).

    ``texture``: ``"point"`` (one bilinear lookup of the full-resolution texture), ``"filtered"`` (the mip level
    of the sample's footprint) or None (depth only).
    """
    pose = np.asarray(cam_to_world, dtype=np.float64)
    k = np.asarray(intrinsics, dtype=np.float64)
    rot, origin = pose[:3, :3], pose[:3, 3]
    if np.any(origin <= 0) or np.any(origin >= room.size):
        raise ValueError(f"camera position {origin.tolist()} is outside the room {room.size.tolist()}")
    xs, ys = _pixel_rays(height, width, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
    # world ray directions with camera z = 1, so the ray parameter t is the z-depth
    d = [float(rot[a, 0]) * xs + float(rot[a, 1]) * ys + float(rot[a, 2]) for a in range(3)]
    o = [float(v) for v in origin]
    world_to_cam = np.linalg.inv(pose)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = [np.float32(1.0) / da for da in d]
        # the room: exit distance along each axis, nearest wins
        t_axis = [np.maximum((float(room.size[a]) - o[a]) * inv[a], -o[a] * inv[a]) for a in range(3)]
        t = np.minimum(np.minimum(t_axis[0], t_axis[1]), t_axis[2])
        axis = np.where(t_axis[0] <= t, 0, np.where(t_axis[1] <= t, 1, 2)).astype(np.int8)
        # object id: room faces 0..5 = 2 * axis + (direction > 0)
        obj = 2 * axis.astype(np.int32) + (np.where(axis == 0, d[0], np.where(axis == 1, d[1], d[2])) > 0)
        for b, (lo, hi) in enumerate(room.boxes):
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            rect = _project_bounds(corners, world_to_cam, k, height, width)
            if rect is None:
                continue
            sl = np.s_[rect[0] : rect[1], rect[2] : rect[3]]
            near, far, near_axis = None, None, None
            for a in range(3):
                ia = inv[a][sl]
                t0, t1 = (float(lo[a]) - o[a]) * ia, (float(hi[a]) - o[a]) * ia
                t_lo, t_hi = np.minimum(t0, t1), np.maximum(t0, t1)
                if near is None:
                    near, far, near_axis = t_lo, t_hi, np.zeros(t_lo.shape, np.int8)
                else:
                    bigger = t_lo > near
                    near = np.maximum(t_lo, near)
                    near_axis[bigger] = a
                    far = np.minimum(far, t_hi)
            hit = (near <= far) & (near > 0) & (near < t[sl])
            t[sl][hit] = near[hit]
            axis[sl][hit] = near_axis[hit]
            obj[sl][hit] = NUM_ROOM_FACES + b
        normal_override = []
        for s, (cx, cy, cz, r) in enumerate(room.spheres):
            corners = np.array(
                [[cx + i * r, cy + j * r, cz + m * r] for i in (-1, 1) for j in (-1, 1) for m in (-1, 1)]
            )
            rect = _project_bounds(corners, world_to_cam, k, height, width)
            if rect is None:
                continue
            sl = np.s_[rect[0] : rect[1], rect[2] : rect[3]]
            dx, dy, dz = (da[sl] for da in d)
            ox, oy, oz = o[0] - float(cx), o[1] - float(cy), o[2] - float(cz)
            a2 = dx * dx + dy * dy + dz * dz
            half_b = dx * ox + dy * oy + dz * oz
            disc = half_b * half_b - a2 * (ox * ox + oy * oy + oz * oz - float(r) ** 2)
            t_hit = (-half_b - np.sqrt(np.maximum(disc, 0))) / a2
            hit = (disc > 0) & (t_hit > 0) & (t_hit < t[sl])
            if not hit.any():
                continue
            t[sl][hit] = t_hit[hit]
            obj[sl][hit] = NUM_ROOM_FACES + len(room.boxes) + s
            n_s = np.stack(
                [(o[a] + t_hit[hit] * d[a][sl][hit] - float(c)) / float(r) for a, c in enumerate((cx, cy, cz))]
            )
            axis[sl][hit] = np.argmax(np.abs(n_s), axis=0)  # texture plane: the dominant normal axis
            normal_override.append((sl, hit, n_s))

        if texture is None:
            return None, t.astype(np.float32)
        # surface points; texture coordinates in the face plane
        # (x-faces: (z, y), floor/ceiling: (x, z), z-faces: (x, y))
        p = [o[a] + t * d[a] for a in range(3)]
        u = np.where(axis == 0, p[2], p[0])
        v = np.where(axis == 1, p[2], p[1])
        scale = np.take(room.texel_scale.astype(np.float32), obj)
        fu = u * scale + np.take(room.texel_offset[:, 0].astype(np.float32), obj)
        fv = v * scale + np.take(room.texel_offset[:, 1].astype(np.float32), obj)
        pattern_index = np.take(room.pattern_index.astype(np.int32), obj)
        if texture == "filtered":
            level = np.log2(_texel_footprint(d, t, axis, normal_override, rot, k) * scale) + MIP_BIAS
            pattern = _mip_lookup(mip_pyramid(room.patterns), pattern_index, fu, fv, level)
        else:
            pattern = _bilinear(room.patterns, pattern_index, fu, fv)

        # lambertian shading from the point light; axis faces have normal -sign(direction) along their axis
        to_light = [float(room.light[a]) - p[a] for a in range(3)]
        dist2 = to_light[0] * to_light[0] + to_light[1] * to_light[1] + to_light[2] * to_light[2]
        along = np.where(axis == 0, to_light[0] * d[0], np.where(axis == 1, to_light[1] * d[1], to_light[2] * d[2]))
        # -sign(d_axis) * to_light_axis, computed without sign(): -(to_light_axis * d_axis) / |d_axis|
        d_abs = np.abs(np.where(axis == 0, d[0], np.where(axis == 1, d[1], d[2])))
        n_dot_l = -along / d_abs
        for sl, hit, n_s in normal_override:
            n_dot_l[sl][hit] = sum(n_s[a] * to_light[a][sl][hit] for a in range(3))
        cos = np.maximum(n_dot_l, 0) / np.sqrt(dist2)
        shade = room.ambient + room.diffuse * cos * (6.0 / (6.0 + dist2))
        colours = room.colours.astype(np.float32)
        bright, dark = colours[:, 0][obj], colours[:, 1][obj]
        image = (dark + (bright - dark) * pattern[..., None]) * (shade * 255.0)[..., None]
    return image, t.astype(np.float32)


def _texel_footprint(d, t, axis, normal_override, rot, k) -> np.ndarray:
    """Surface metres per pixel at each pixel centre (H, W): the longer of the two ray differentials, i.e. how far
    the surface point moves in its texture plane when the pixel moves by one column or one row.

    A one-column step turns the ray (camera z = 1) by ``rx = R[:, 0] / fx``; on a surface with normal n the hit
    point moves by ``t * (rx - (n . rx) / (n . d) * d)`` (t the z-depth), projected on the face's texture axes.
    """
    steps = [rot[:, 0] / k[0, 0], rot[:, 1] / k[1, 1]]  # world ray change per column / per row
    n_dot_d = np.where(axis == 0, d[0], np.where(axis == 1, d[1], d[2]))
    n_dot_step = [np.where(axis == 0, float(st[0]), np.where(axis == 1, float(st[1]), float(st[2]))) for st in steps]
    for sl, hit, n_s in normal_override:
        n_dot_d[sl][hit] = sum(n_s[a] * d[a][sl][hit] for a in range(3))
        for st, n_dot in zip(steps, n_dot_step):
            n_dot[sl][hit] = sum(n_s[a] * float(st[a]) for a in range(3))
    longest = None
    for st, n_dot in zip(steps, n_dot_step):
        ratio = n_dot / n_dot_d
        move = [t * (float(st[a]) - ratio * d[a]) for a in range(3)]
        along_u = np.where(axis == 0, move[2], move[0])
        along_v = np.where(axis == 1, move[2], move[1])
        length2 = along_u * along_u + along_v * along_v
        longest = length2 if longest is None else np.maximum(longest, length2)
    return np.sqrt(longest)


def _mip_lookup(pyramid: MipPyramid, index: np.ndarray, fu: np.ndarray, fv: np.ndarray, level: np.ndarray):
    """Trilinear lookup: bilinear in the two mip levels around ``level`` (H, W) (clamped to the pyramid), blended
    linearly; fu, fv in level-0 texels, ``index`` (H, W) the pattern per pixel. Returns (H, W) float32."""
    level = np.clip(np.nan_to_num(level, nan=0.0), 0.0, pyramid.num_levels - 1).astype(np.float32)
    lo = np.minimum(np.floor(level).astype(np.int32), pyramid.num_levels - 2)
    blend = level - lo
    out = None
    for lv, weight in ((lo, 1.0 - blend), (lo + 1, blend)):
        size = pyramid.sizes[lv]
        factor = np.ldexp(np.float32(1.0), -lv)  # 2**-level
        value = _bilinear_flat(pyramid.flat, pyramid.offsets[lv] + index * size * size, size, fu * factor, fv * factor)
        out = value * weight if out is None else out + value * weight
    return out


def _bilinear_flat(flat: np.ndarray, base, size, fu: np.ndarray, fv: np.ndarray) -> np.ndarray:
    """Bilinear, periodic lookup in square grids stored flat: grid ``flat[base + row * size + col]`` (base and the
    power-of-two size per pixel or shared) at coordinates fu (column), fv (row) → (H, W) float32."""
    iu, iv = np.floor(fu), np.floor(fv)
    wu, wv = fu - iu, fv - iv
    mask = size - 1
    iu = iu.astype(np.int64) & mask
    iv = iv.astype(np.int64) & mask
    iu1, iv1 = (iu + 1) & mask, (iv + 1) & mask
    row0, row1 = base + iv * size, base + iv1 * size
    top = np.take(flat, row0 + iu)
    top += (np.take(flat, row0 + iu1) - top) * wu
    bottom = np.take(flat, row1 + iu)
    bottom += (np.take(flat, row1 + iu1) - bottom) * wu
    return top + (bottom - top) * wv


def _bilinear(patterns: np.ndarray, index: np.ndarray, fu: np.ndarray, fv: np.ndarray) -> np.ndarray:
    """Bilinear, periodic lookup of scalar patterns (N, T, T) at texel coordinates fu, fv (H, W) of pattern
    ``index`` (H, W) → (H, W) float32."""
    size = patterns.shape[1]
    return _bilinear_flat(patterns.reshape(-1), index * (size * size), size, fu, fv)


# ---------------------------------------------------------------- the three dataset kinds


def _png_bytes(image: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def synthetic_view(seed: int, index: int, height: int, width: int, views_per_room: int = 4, band_limited: bool = True):
    """Render sample ``index`` of a synthetic set: (image, depth, intrinsics, cam_to_world, scene name)."""
    room_id = index // views_per_room
    room = make_room(np.random.default_rng([seed, room_id]))
    trajectory = Trajectory.random(room, np.random.default_rng([seed, room_id, 1]))
    frame = np.random.default_rng([seed, room_id, 2, index % views_per_room]).uniform(0.0, 2000.0)
    k = default_intrinsics(height, width)
    pose = trajectory.pose(frame)
    image, depth = render(room, pose, k, height, width, band_limited)
    return image, depth, k, pose, f"synthetic-{seed}-{room_id}"


def synthetic_clip(
    seed: int,
    index: int,
    height: int,
    width: int,
    frame_offsets=(-1, 1),
    speed: float = 0.05,
    clips_per_room: int = 4,
    band_limited: bool = True,
):
    """Clip ``index`` of a synthetic video set: frames at ``target + offset`` along one smooth trajectory.

    Returns:
        dict with ``images`` (S + 1 uint8 frames, target first), ``depths`` (S + 1 float32 z-depth maps),
        ``poses`` (S + 1, 4, 4) camera-to-world, ``intrinsics`` (3, 3), ``scene``, ``frame`` (the target's frame
        number on the trajectory).
    """
    room_id = index // clips_per_room
    room = make_room(np.random.default_rng([seed, room_id]))
    trajectory = Trajectory.random(room, np.random.default_rng([seed, room_id, 1]), speed=speed)
    target = int(np.random.default_rng([seed, room_id, 3, index % clips_per_room]).integers(0, 2000))
    k = default_intrinsics(height, width)
    frames = [target, *(target + int(o) for o in frame_offsets)]
    poses = np.stack([trajectory.pose(f) for f in frames])
    rendered = [render(room, pose, k, height, width, band_limited) for pose in poses]
    return {
        "images": [r[0] for r in rendered],
        "depths": [r[1] for r in rendered],
        "poses": poses,
        "intrinsics": k,
        "scene": f"synthetic-{seed}-{room_id}",
        "frame": target,
    }


def _depth_rows(num_samples, height, width, seed, views_per_room, band_limited=True, world_version=WORLD_VERSION):
    for i in range(num_samples):
        image, depth, k, _, scene = synthetic_view(seed, i, height, width, views_per_room, band_limited)
        yield {"image": _png_bytes(image), "depth": depth, "intrinsics": k.astype(np.float32).tolist(), "scene": scene}


def _video_rows(
    num_clips, height, width, seed, frame_offsets, speed, clips_per_room, band_limited=True, world_version=WORLD_VERSION
):
    for i in range(num_clips):
        clip = synthetic_clip(seed, i, height, width, frame_offsets, speed, clips_per_room, band_limited)
        yield {
            "image": _png_bytes(clip["images"][0]),
            "source_images": [_png_bytes(im) for im in clip["images"][1:]],
            "source_offsets": [int(o) for o in frame_offsets],
            "intrinsics": clip["intrinsics"].astype(np.float32).tolist(),
            "poses": clip["poses"].astype(np.float32).tolist(),
            "depth": clip["depths"][0],
            "scene": clip["scene"],
            "frame_index": clip["frame"],
        }


def _image_rows(num_samples, height, width, seed, views_per_room, band_limited=True, world_version=WORLD_VERSION):
    for i in range(num_samples):
        yield {"image": _png_bytes(synthetic_view(seed, i, height, width, views_per_room, band_limited)[0])}


def _build(generator, features, gen_kwargs, streaming, cache_dir):
    gen_kwargs = {**gen_kwargs, "world_version": WORLD_VERSION}  # a new world is a new cache entry
    if streaming:
        return IterableDataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs)
    return Dataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs, cache_dir=cache_dir)


def _check_size(num: int, height: int, width: int) -> None:
    if num < 1:
        raise ValueError(f"the number of samples must be >= 1, got {num}")
    if height < 8 or width < 8:
        raise ValueError(f"height and width must be >= 8 pixels, got {height}x{width}")


def synthetic_depth_dataset(
    num_samples: int,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    views_per_room: int = 4,
    streaming: bool = False,
    cache_dir: str | None = None,
    band_limited: bool = True,
) -> Dataset | IterableDataset:
    """``depth``-kind synthetic dataset: random views (``views_per_room`` per room) with exact z-depth in metres,
    NYUv2-like intrinsics and the room as ``scene``. ``band_limited``: see :func:`render`. Deterministic per
    ``seed``."""
    _check_size(num_samples, height, width)
    kwargs = {"num_samples": num_samples, "height": height, "width": width, "seed": seed}
    kwargs.update(views_per_room=views_per_room, band_limited=bool(band_limited))
    return _build(_depth_rows, DEPTH_FEATURES, kwargs, streaming, cache_dir)


def synthetic_video_dataset(
    num_clips: int,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    frame_offsets: tuple[int, ...] = (-1, 1),
    speed: float = 0.05,
    clips_per_room: int = 4,
    streaming: bool = False,
    cache_dir: str | None = None,
    band_limited: bool = True,
) -> Dataset | IterableDataset:
    """``video``-kind synthetic dataset: per row a target frame, source frames at ``frame_offsets`` along a smooth
    trajectory (about ``speed`` metres per frame), intrinsics, camera-to-world poses (target first) and the target's
    depth. ``band_limited``: see :func:`render`. Deterministic per ``seed``."""
    _check_size(num_clips, height, width)
    if not frame_offsets or 0 in frame_offsets:
        raise ValueError(f"frame_offsets must be non-empty and non-zero, got {frame_offsets}")
    kwargs = {"num_clips": num_clips, "height": height, "width": width, "seed": seed}
    kwargs.update(
        frame_offsets=tuple(int(o) for o in frame_offsets),
        speed=speed,
        clips_per_room=clips_per_room,
        band_limited=bool(band_limited),
    )
    return _build(_video_rows, VIDEO_FEATURES, kwargs, streaming, cache_dir)


def synthetic_image_dataset(
    num_samples: int,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    views_per_room: int = 4,
    streaming: bool = False,
    cache_dir: str | None = None,
    band_limited: bool = True,
) -> Dataset | IterableDataset:
    """``images``-kind synthetic dataset (the RGB of :func:`synthetic_depth_dataset` views). Deterministic per seed."""
    _check_size(num_samples, height, width)
    kwargs = {"num_samples": num_samples, "height": height, "width": width, "seed": seed}
    kwargs.update(views_per_room=views_per_room, band_limited=bool(band_limited))
    return _build(_image_rows, IMAGE_FEATURES, kwargs, streaming, cache_dir)

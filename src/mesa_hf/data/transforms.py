"""Per-stage transforms for `Dataset.with_transform` / `set_transform` (batch dict of lists in, dict of lists out).

:func:`build_transform` is the factory: ``build_transform("supervised" | "geometric" | "masked" | "eval", ...)``.

Outputs (torch tensors, one per row):

- depth kind (``"supervised"`` training, ``"eval"``): ``pixel_values`` float32 (3, H, W) normalised with the
  ImageNet mean/std after rescaling by 1/255 (what ``MeSaImageProcessor`` does), ``labels`` float32 (H, W) metres
  (0 = no ground truth), ``intrinsics`` float32 (3, 3) when the rows have them.
- video kind (``"geometric"``): ``pixel_values`` (3, H, W) target and ``source_pixel_values`` (S, 3, H, W), both
  photometrically jittered (same jitter for all frames of a row) and normalised — the inputs of the depth and
  pose networks; ``target_image`` (3, H, W) and ``source_images`` (S, 3, H, W) in [0, 1] **without** jitter (what
  Monodepth2's photometric loss compares); ``intrinsics`` (3, 3) of the output pixels; ``poses`` (S, 4, 4)
  **target→source** transforms ``T = inv(P_source) @ P_target`` (maps target-camera points into each source
  camera; the matrix ``mesa_hf.geometry.warp_frame`` takes) when the rows have camera-to-world poses; ``labels``
  (H, W) target depth when the rows have depth.
- images kind (``"masked"``): ``pixel_values`` (3, S, S) and ``bool_masked_pos`` bool (num_patches,) flat over the
  model-patch grid (SimMIM).

Geometry follows every operation: crops shift the principal point, resizes scale it with pixel centres at integer
coordinates (``c' = (c + 0.5)·s − 0.5``), horizontal flips map ``cx → W − 1 − cx`` and mirror the poses
(``T → F T F`` with ``F = diag(−1, 1, 1, 1)``).

Randomness comes from a ``numpy.random.Generator`` owned by the transform (``seed`` argument) and replaceable as
``transform.rng``: the training loop's dataset wrapper sets one per (seed, epoch, row), so every augmentation of a row,
CutDepth included, depends on nothing else (resume, worker count and draw order do not change it). MIM-Depth applies
CutDepth to every 4th sample it loads; here each row gets it with probability ``cutdepth_prob`` (a quarter), drawn
from that generator, so a different quarter of the rows gets it in every epoch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .columns import relative_poses

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TRANSFORM_NAMES = ("supervised", "eval", "geometric", "masked")  # what `build_transform(stage)` accepts


# ---------------------------------------------------------------- geometric operations on (image, depth, K)


def _as_rgb(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    return arr


def _as_depth(depth) -> np.ndarray:
    arr = np.asarray(depth, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a depth map (H, W), got shape {arr.shape}")
    arr = arr.copy()
    arr[~np.isfinite(arr)] = 0.0
    return arr


def crop_intrinsics(k: np.ndarray, top: int, left: int) -> np.ndarray:
    """Intrinsics after cropping at (top, left): the principal point moves by the offset."""
    k = np.array(k, dtype=np.float32)
    k[0, 2] -= left
    k[1, 2] -= top
    return k


def flip_intrinsics(k: np.ndarray, width: int) -> np.ndarray:
    """Intrinsics after a horizontal flip of an image ``width`` pixels wide: ``cx → width − 1 − cx``."""
    k = np.array(k, dtype=np.float32)
    k[0, 2] = width - 1 - k[0, 2]
    return k


def resize_intrinsics(k: np.ndarray, old_hw: Sequence[int], new_hw: Sequence[int]) -> np.ndarray:
    """Intrinsics after resizing (pixel centres at integer coordinates): f' = f·s, c' = (c + 0.5)·s − 0.5."""
    k = np.array(k, dtype=np.float32)
    sy, sx = new_hw[0] / old_hw[0], new_hw[1] / old_hw[1]
    k[0, 0] *= sx
    k[1, 1] *= sy
    k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
    k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
    return k


FLIP_X = np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)


def flip_poses(transforms: np.ndarray) -> np.ndarray:
    """Rigid transforms between cameras (…, 4, 4) after mirroring every image horizontally: ``F T F``."""
    return (FLIP_X @ np.asarray(transforms, dtype=np.float32) @ FLIP_X).astype(np.float32)


def resize_image(image: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """Bilinear resize of a uint8 RGB image to (H, W)."""
    if tuple(image.shape[:2]) == tuple(hw):
        return image
    return np.asarray(Image.fromarray(image).resize((hw[1], hw[0]), Image.BILINEAR))


def resize_depth_nearest(depth: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a depth map (never blends valid and missing depth)."""
    if tuple(depth.shape) == tuple(hw):
        return depth
    return np.asarray(Image.fromarray(depth, mode="F").resize((hw[1], hw[0]), Image.NEAREST), dtype=np.float32)


def normalize(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W): rescale by 1/255 then ImageNet mean/std."""
    x = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def to_unit(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0)


# ---------------------------------------------------------------- photometric operations (image only)


def sample_jitter(
    rng: np.random.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    gamma: tuple[float, float] = (0.8, 1.2),
    hue: float = 20 / 180,
    saturation: float = 30 / 255,
    value: float = 20 / 255,
    p: float = 0.5,
) -> dict:
    """Random jitter parameters in the spirit of MIM-Depth's albumentations chain (RandomBrightnessContrast,
    RandomGamma, HueSaturationValue, each applied with probability ``p``); hue is a fraction of the colour circle,
    saturation/value shifts are in [0, 1] units. Draw once and apply to every frame of a clip."""
    params = {}
    if rng.random() < p:
        params["contrast"] = 1.0 + rng.uniform(-contrast, contrast)
        params["brightness"] = rng.uniform(-brightness, brightness)
    if rng.random() < p:
        params["gamma"] = rng.uniform(*gamma)
    if rng.random() < p:
        params["hue"] = rng.uniform(-hue, hue)
        params["saturation"] = rng.uniform(-saturation, saturation)
        params["value"] = rng.uniform(-value, value)
    return params


def apply_jitter(image: np.ndarray, params: dict) -> np.ndarray:
    """Apply :func:`sample_jitter` parameters to a uint8 RGB image (returns uint8).

    Brightness/contrast and gamma act through one 256-entry lookup table; hue/saturation/value shifts are done in
    PIL's 8-bit HSV space (hue wraps around the colour circle)."""
    if not params:
        return image
    if "contrast" in params or "gamma" in params:
        x = np.arange(256, dtype=np.float64) / 255.0
        if "contrast" in params:
            x = np.clip(x * params["contrast"] + params["brightness"], 0.0, 1.0)
        if "gamma" in params:
            x = np.power(x, params["gamma"])
        lut = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        image = np.take(lut, image)
    if "hue" in params:
        hsv = np.asarray(Image.fromarray(np.ascontiguousarray(image)).convert("HSV"), dtype=np.int16)
        hue = (hsv[..., 0] + round(params["hue"] * 256)) % 256
        sat = np.clip(hsv[..., 1] + round(params["saturation"] * 255), 0, 255)
        val = np.clip(hsv[..., 2] + round(params["value"] * 255), 0, 255)
        hsv = np.stack([hue, sat, val], axis=-1).astype(np.uint8)
        image = np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))
    return image


def cut_depth(
    image: np.ndarray, depth: np.ndarray, rng: np.random.Generator, max_depth: float = 10.0, p: float = 0.75
) -> np.ndarray:
    """MIM-Depth/GLPDepth vertical CutDepth: overwrite a vertical strip of the RGB with the depth.

    alpha, beta ~ U(0, 1); the strip starts at column ``int(alpha·W)`` and is ``int(max((W − alpha·W)·beta·p, 1))``
    wide. The depth is written as ``depth / max_depth`` scaled to the image's 0–255 range. (The reference code
    writes the raw uint16 millimetre values into the uint8 image, which wraps them; we use the normalised depth
    instead, a deliberate departure.)
    """
    width = image.shape[1]
    alpha, beta = rng.random(), rng.random()
    left = int(alpha * width)
    strip = int(max((width - alpha * width) * beta * p, 1))
    out = image.copy()
    values = np.clip(depth[:, left : left + strip] / max_depth, 0.0, 1.0) * 255.0
    out[:, left : left + strip, :] = (values + 0.5).astype(np.uint8)[..., None]
    return out


# ---------------------------------------------------------------- SimMIM


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.67, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``scale`` of the area with aspect ratio in ``ratio`` (the
    RandomResizedCrop sampling: 10 tries, then a centre crop with the ratio clamped)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class MaskGenerator:
    """SimMIM's random patch mask: ``mask_ratio`` of the ``mask_patch_size`` patches of an ``input_size`` image are
    masked; returned flat over the ``model_patch_size`` grid ((input_size / model_patch_size)² booleans)."""

    def __init__(self, input_size: int = 192, mask_patch_size: int = 32, model_patch_size: int = 4, mask_ratio=0.6):
        if input_size % mask_patch_size or mask_patch_size % model_patch_size:
            raise ValueError(
                f"input_size {input_size} must be a multiple of mask_patch_size {mask_patch_size}, "
                f"itself a multiple of model_patch_size {model_patch_size}"
            )
        self.grid = input_size // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.mask_count = math.ceil(self.grid**2 * mask_ratio)

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros(self.grid**2, dtype=bool)
        mask[rng.permutation(self.grid**2)[: self.mask_count]] = True
        mask = mask.reshape(self.grid, self.grid).repeat(self.scale, 0).repeat(self.scale, 1)
        return mask.reshape(-1)


# ---------------------------------------------------------------- the per-stage transforms


class DepthTransform:
    """Supervised depth transform (MIM-Depth's NYUv2 recipe when ``train``): CutDepth with probability
    ``cutdepth_prob`` (MIM-Depth: every 4th sample), horizontal flip (``flip_prob`` 0.5), random crop to
    ``crop_size``, photometric jitter; optional ``resize`` first. Without ``train`` only the optional resize is
    applied."""

    def __init__(
        self,
        train: bool = True,
        crop_size: tuple[int, int] | None = (480, 480),
        resize: tuple[int, int] | None = None,
        flip_prob: float = 0.5,
        jitter: bool = True,
        cutdepth_prob: float = 0.25,
        max_depth: float = 10.0,
        seed: int | None = None,
    ):
        self.train, self.crop_size, self.resize, self.jitter = train, crop_size, resize, jitter
        self.flip_prob = flip_prob
        if not 0.0 <= cutdepth_prob <= 1.0:
            raise ValueError(f"cutdepth_prob must be in [0, 1], got {cutdepth_prob}")
        self.cutdepth_prob, self.max_depth = cutdepth_prob, max_depth
        self.rng = np.random.default_rng(seed)

    def sample(self, image, depth, intrinsics=None) -> dict:
        image, depth = _as_rgb(image), _as_depth(depth)
        if image.shape[:2] != depth.shape:
            raise ValueError(f"image size {image.shape[:2]} and depth size {depth.shape} differ")
        k = None if intrinsics is None else np.asarray(intrinsics, dtype=np.float32)
        if self.resize is not None:
            if k is not None:
                k = resize_intrinsics(k, image.shape[:2], self.resize)
            image, depth = resize_image(image, self.resize), resize_depth_nearest(depth, self.resize)
        if self.train:
            if self.cutdepth_prob and self.rng.random() < self.cutdepth_prob:
                image = cut_depth(image, depth, self.rng, self.max_depth)
            if self.rng.random() < self.flip_prob:
                image, depth = image[:, ::-1], depth[:, ::-1]
                k = None if k is None else flip_intrinsics(k, image.shape[1])
            if self.crop_size is not None:
                ch, cw = self.crop_size
                h, w = depth.shape
                if ch > h or cw > w:
                    raise ValueError(f"crop_size {self.crop_size} is larger than the image ({h}, {w})")
                top, left = int(self.rng.integers(0, h - ch + 1)), int(self.rng.integers(0, w - cw + 1))
                image, depth = image[top : top + ch, left : left + cw], depth[top : top + ch, left : left + cw]
                k = None if k is None else crop_intrinsics(k, top, left)
            if self.jitter:
                image = apply_jitter(np.ascontiguousarray(image), sample_jitter(self.rng))
        out = {"pixel_values": normalize(image), "labels": torch.from_numpy(np.array(depth, dtype=np.float32))}
        if k is not None:
            out["intrinsics"] = torch.from_numpy(np.array(k, dtype=np.float32))
        return out

    def __call__(self, batch: dict) -> dict:
        ks = batch.get("intrinsics") or [None] * len(batch["image"])
        rows = [self.sample(im, d, k) for im, d, k in zip(batch["image"], batch["depth"], ks)]
        return _collect(rows)


class VideoTransform:
    """Geometric-stage transform: resize every frame to ``size`` (H, W), optional random crop to ``crop_size``,
    horizontal flip (``flip_prob`` 0.5, all frames, intrinsics and poses together) and one photometric jitter for
    the whole clip (p applied per operation) on the network inputs only."""

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        crop_size: tuple[int, int] | None = None,
        train: bool = True,
        flip_prob: float = 0.5,
        jitter: bool = True,
        seed: int | None = None,
    ):
        self.size, self.crop_size, self.train, self.jitter = size, crop_size, train, jitter
        self.flip_prob = flip_prob
        self.rng = np.random.default_rng(seed)

    def sample(self, image, sources, intrinsics, poses=None, depth=None) -> dict:
        if intrinsics is None:
            raise ValueError("video sample has no intrinsics; the geometric objective needs them")
        frames = [_as_rgb(image), *(_as_rgb(s) for s in sources)]
        hw = frames[0].shape[:2]
        if any(f.shape[:2] != hw for f in frames):
            raise ValueError(f"frames of one clip differ in size: {[f.shape[:2] for f in frames]}")
        k = np.asarray(intrinsics, dtype=np.float32)
        rel = None if poses is None else relative_poses(np.asarray(poses, dtype=np.float32))
        depth = None if depth is None else _as_depth(depth)
        if self.size is not None:
            k = resize_intrinsics(k, hw, self.size)
            frames = [resize_image(f, self.size) for f in frames]
            depth = None if depth is None else resize_depth_nearest(depth, self.size)
            hw = tuple(self.size)
        if self.train and self.crop_size is not None:
            ch, cw = self.crop_size
            if ch > hw[0] or cw > hw[1]:
                raise ValueError(f"crop_size {self.crop_size} is larger than the frames {hw}")
            top, left = int(self.rng.integers(0, hw[0] - ch + 1)), int(self.rng.integers(0, hw[1] - cw + 1))
            frames = [f[top : top + ch, left : left + cw] for f in frames]
            depth = None if depth is None else depth[top : top + ch, left : left + cw]
            k = crop_intrinsics(k, top, left)
        if self.train and self.rng.random() < self.flip_prob:
            frames = [f[:, ::-1] for f in frames]
            depth = None if depth is None else depth[:, ::-1]
            k = flip_intrinsics(k, frames[0].shape[1])
            rel = None if rel is None else flip_poses(rel)
        frames = [np.ascontiguousarray(f) for f in frames]
        params = sample_jitter(self.rng) if self.train and self.jitter else {}
        jittered = [apply_jitter(f, params) for f in frames]
        out = {
            "pixel_values": normalize(jittered[0]),
            "source_pixel_values": torch.stack([normalize(f) for f in jittered[1:]]),
            "target_image": to_unit(frames[0]),
            "source_images": torch.stack([to_unit(f) for f in frames[1:]]),
            "intrinsics": torch.from_numpy(np.array(k, dtype=np.float32)),
        }
        if rel is not None:
            out["poses"] = torch.from_numpy(rel)
        if depth is not None:
            out["labels"] = torch.from_numpy(np.array(depth, dtype=np.float32))
        return out

    def __call__(self, batch: dict) -> dict:
        n = len(batch["image"])
        poses = batch.get("poses") or [None] * n
        depths = batch.get("depth") or [None] * n
        rows = [
            self.sample(im, src, k, p, d)
            for im, src, k, p, d in zip(batch["image"], batch["source_images"], batch["intrinsics"], poses, depths)
        ]
        return _collect(rows)


class MaskedImageTransform:
    """SimMIM transform: random-resized crop (scale 0.67–1, ratio 3/4–4/3) to ``input_size`` square, horizontal
    flip, normalisation, and the patch mask as ``bool_masked_pos``."""

    def __init__(
        self,
        input_size: int = 192,
        mask_patch_size: int = 32,
        model_patch_size: int = 4,
        mask_ratio: float = 0.6,
        scale: tuple[float, float] = (0.67, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        seed: int | None = None,
    ):
        self.input_size, self.scale, self.ratio = input_size, scale, ratio
        self.mask = MaskGenerator(input_size, mask_patch_size, model_patch_size, mask_ratio)
        self.rng = np.random.default_rng(seed)

    def sample(self, image) -> dict:
        image = _as_rgb(image)
        top, left, h, w = random_resized_crop_box(self.rng, *image.shape[:2], self.scale, self.ratio)
        crop = resize_image(np.ascontiguousarray(image[top : top + h, left : left + w]), (self.input_size,) * 2)
        if self.rng.random() < 0.5:
            crop = np.ascontiguousarray(crop[:, ::-1])
        return {"pixel_values": normalize(crop), "bool_masked_pos": torch.from_numpy(self.mask(self.rng))}

    def __call__(self, batch: dict) -> dict:
        return _collect([self.sample(im) for im in batch["image"]])


def _collect(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if all(k in r for r in rows)] if rows else []
    return {k: [r[k] for r in rows] for k in keys}


def build_transform(stage: str, **kwargs) -> Callable[[dict], dict]:
    """The transform of a training stage, for ``dataset.with_transform(...)``.

    Args:
        stage: ``"supervised"`` (depth kind, training augmentation: :class:`DepthTransform`), ``"eval"`` (depth kind,
            no augmentation), ``"geometric"`` (video kind: :class:`VideoTransform`) or ``"masked"`` (images kind,
            SimMIM: :class:`MaskedImageTransform`).
        **kwargs: the chosen class's arguments (e.g. ``crop_size=(480, 480)``, ``size=(192, 256)``,
            ``input_size=192``, ``seed=0``).
    """
    builders: dict[str, Callable[..., Callable[[dict], dict]]] = {
        "supervised": functools.partial(DepthTransform, train=True),
        "eval": functools.partial(DepthTransform, train=False),
        "geometric": VideoTransform,
        "masked": MaskedImageTransform,
    }
    if stage not in builders:
        raise ValueError(f"unknown stage {stage!r}; expected one of {TRANSFORM_NAMES}")
    return builders[stage](**kwargs)

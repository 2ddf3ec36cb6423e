"""The rows a stage trains and evaluates on: synthetic-world datasets, the per-stage transforms, augmentations
seeded by (seed, epoch, row), the pixel normalisation of the starting checkpoint's image processor, and collation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..configuration_mesa import MeSaConfig
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from ..image_processing_mesa import MeSaImageProcessor

PIXEL_KEYS = ("pixel_values", "source_pixel_values")  # network inputs; target_image / source_images stay [0, 1]


def stack_collator(rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Collate transformed rows (dicts of tensors) into a batch: every key present in all rows, stacked."""
    if not rows:
        raise ValueError("stack_collator: empty batch")
    keys = [k for k in rows[0] if all(k in r and r[k] is not None for r in rows)]
    batch = {}
    for key in keys:
        values = [r[key] for r in rows]
        if not isinstance(values[0], torch.Tensor):
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(f"stack_collator: rows of `{key}` differ in shape {sorted(shapes)}; crop or resize them")
        batch[key] = torch.stack(values)
    return batch


class PixelNormalization:
    """Re-normalise the transforms' network inputs as an image processor would: the transforms rescale by 1/255
    and normalise with the ImageNet mean/std; this maps those (3, H, W) tensors to the processor's
    ``rescale_factor`` / ``do_rescale`` / ``do_normalize`` / ``image_mean`` / ``image_std``. Identity (None from
    `for_processor`) for a processor that does what the transforms do."""

    def __init__(self, processor: MeSaImageProcessor):
        scale = float(processor.rescale_factor) * 255.0 if processor.do_rescale else 255.0
        mean = np.asarray(processor.image_mean if processor.do_normalize else [0.0] * 3, dtype=np.float64)
        std = np.asarray(processor.image_std if processor.do_normalize else [1.0] * 3, dtype=np.float64)
        # ImageNet-normalised x -> unit u = x * s_in + m_in -> raw units u * scale -> (raw - mean) / std
        self.weight = torch.tensor(IMAGENET_STD * scale / std, dtype=torch.float32).view(3, 1, 1)
        self.bias = torch.tensor((IMAGENET_MEAN * scale - mean) / std, dtype=torch.float32).view(3, 1, 1)

    @staticmethod
    def for_processor(processor: MeSaImageProcessor | None) -> PixelNormalization | None:
        if processor is None:
            return None
        same = (
            processor.do_rescale
            and abs(float(processor.rescale_factor) - 1 / 255) < 1e-12
            and processor.do_normalize
            and np.allclose(processor.image_mean, IMAGENET_MEAN, atol=1e-6)
            and np.allclose(processor.image_std, IMAGENET_STD, atol=1e-6)
        )
        return None if same else PixelNormalization(processor)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        for key in PIXEL_KEYS:
            if key in row:
                row[key] = row[key] * self.weight + self.bias
        return row


class SeededTransformDataset(torch.utils.data.Dataset):
    """Rows of a raw dataset through a random transform whose randomness depends only on (seed, epoch, row
    index), not on the order rows are drawn in, nor on the process that draws them.

    A resumed run (whose skipped batches are never drawn), DataLoader workers, several processes and an
    uninterrupted single-process run therefore see the same augmentations. The training loop calls `set_epoch`
    at the start of every epoch; a held-out set keeps epoch 0 (the same masks and crops at every evaluation,
    without keeping the rows in memory). `normalization` (a `PixelNormalization`) maps the network inputs to the
    starting checkpoint's image processor.
    """

    def __init__(self, dataset, transform, seed: int, normalization: Callable | None = None):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, int(seed), 0
        self.normalization = normalization

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        row = self.dataset[index]
        self.transform.rng = np.random.default_rng([self.seed, self.epoch, index])
        out = self.transform({key: [value] for key, value in row.items()})
        out = {key: values[0] for key, values in out.items()}
        return self.normalization(out) if self.normalization is not None else out


def synthetic_dataset(kind: str, num_samples: int, image_size: Sequence[int], seed: int, cache_dir=None, **kwargs):
    """A synthetic-world dataset of `kind` (``images``, ``video``, ``depth``) rendered at `image_size` (H, W)."""
    from ..data.synthetic import synthetic_depth_dataset, synthetic_image_dataset, synthetic_video_dataset

    height, width = (int(s) for s in image_size)
    builders = {"images": synthetic_image_dataset, "video": synthetic_video_dataset, "depth": synthetic_depth_dataset}
    if kind not in builders:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(builders)}")
    return builders[kind](num_samples, height=height, width=width, seed=seed, cache_dir=cache_dir, **kwargs)


def image_size_of(config: MeSaConfig) -> tuple[int, int]:
    """The backbone's build-time input size (H, W)."""
    size = config.backbone_config.image_size
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def masked_training_transform(config: MeSaConfig, image_size: Sequence[int], seed: int | None = None, **options: Any):
    """SimMIM rows: square crops of the largest multiple of the mask patch that fits `image_size` (H, W), with
    masks; `options` go to `MaskedImageTransform`."""
    height, width = (int(s) for s in image_size)
    multiple = max(config.mask_patch_size, config.encoder_stride)
    side = min(height, width) // multiple * multiple
    if side < multiple:
        raise ValueError(f"image_size {tuple(image_size)} is smaller than one mask patch ({multiple} px)")
    return build_transform(
        "masked",
        input_size=side,
        mask_patch_size=config.mask_patch_size,
        model_patch_size=config.patch_size,
        mask_ratio=config.mask_ratio,
        seed=seed,
        **options,
    )


def video_training_transform(config: MeSaConfig, image_size: Sequence[int], seed: int | None = None, **options: Any):
    """Video clips resized to `image_size` (H, W); `options` go to `VideoTransform`."""
    height, width = (int(s) for s in image_size)
    return build_transform("geometric", size=(height, width), seed=seed, **options)


def depth_training_transform(config: MeSaConfig, image_size: Sequence[int], seed: int | None = None, **options: Any):
    """RGB-D rows: random crops of `image_size` (H, W) with the depth augmentations; `options` go to
    `DepthTransform`."""
    height, width = (int(s) for s in image_size)
    return build_transform("supervised", crop_size=(height, width), max_depth=config.max_depth, seed=seed, **options)


def build_eval_transform(kind: str, config: MeSaConfig, image_size: Sequence[int], seed: int = 0):
    """The transform of a held-out set of `kind`: depth rows as they are (full resolution, no crop; the model pads
    to its stride), or SimMIM rows (``"images"``) with masks at `image_size`."""
    builders = {
        "images": lambda: masked_training_transform(config, image_size, seed=seed),
        "depth": lambda: build_transform("eval"),
    }
    if kind not in builders:
        raise ValueError(f"unknown held-out kind {kind!r}; expected one of {sorted(builders)}")
    return builders[kind]()


def stage_processor(source, image_size: Sequence[int]) -> MeSaImageProcessor:
    """The image processor a stage trains with and saves: the starting checkpoint's (a folder or Hub id with a
    ``preprocessor_config.json``: its rescaling and normalisation) or the default one, at `image_size` (H, W)."""
    from pathlib import Path

    size = {"height": int(image_size[0]), "width": int(image_size[1])}
    name = str(source) if isinstance(source, str) or hasattr(source, "__fspath__") else None
    local = name is not None and Path(name).is_dir()
    if (local and (Path(name) / "preprocessor_config.json").is_file()) or (name and not local and "/" in name):
        try:
            processor = MeSaImageProcessor.from_pretrained(name)
        except OSError:  # a Hub model without a processor, or not in the offline cache
            processor = None
        if processor is not None:
            processor.size = size
            return processor
    return MeSaImageProcessor(size=size)


__all__ = [
    "PixelNormalization",
    "SeededTransformDataset",
    "build_eval_transform",
    "depth_training_transform",
    "image_size_of",
    "masked_training_transform",
    "stack_collator",
    "stage_processor",
    "synthetic_dataset",
    "video_training_transform",
]

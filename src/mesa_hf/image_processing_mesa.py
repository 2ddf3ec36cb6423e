"""MeSa image processor (pure PIL/NumPy backend; no torchvision).

This file is copied next to checkpoints written for sharing (``trust_remote_code``), so it imports only numpy,
PIL, torch, transformers, the standard library and ``camera.py`` (copied with it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.nn import functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import PaddingMode, pad
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    get_image_size,
)
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

from .camera import CameraIntrinsics, resolve_intrinsics

_PIL_MODES_TO_RGB = {"RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "L", "1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
_PIL_HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _high_bit_to_uint8(array: np.ndarray, source: str) -> np.ndarray:
    """Map a 16-bit / 32-bit integer or float image to uint8 (16-bit: /257; float: assumed in [0, 1])."""
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{source}: image has non-finite pixel values")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"{source}: float images must hold values in [0, 1], got [{array.min()}, {array.max()}]")
        return np.round(array * 255).astype(np.uint8)
    if array.dtype == np.uint8:
        return array
    if array.min() < 0 or array.max() > 65535:
        raise ValueError(f"{source}: integer images must hold values in [0, 65535], got [{array.min()}, {array.max()}]")
    return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)


def _pil_to_rgb_array(image: Image.Image, source: str) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{source}: image is empty ({image.width}x{image.height})")
    if image.mode in _PIL_HIGH_BIT_MODES:
        gray = _high_bit_to_uint8(np.asarray(image), source)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode not in _PIL_MODES_TO_RGB:
        raise ValueError(f"{source}: unsupported PIL image mode {image.mode!r}")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        # composite on black so transparent pixels do not carry arbitrary colours
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))


def _array_to_rgb_array(array: np.ndarray, source: str) -> np.ndarray:
    if array.size == 0:
        raise ValueError(f"{source}: image is empty (shape {array.shape})")
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first -> channels-last
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{source}: expected an image of shape (H, W), (H, W, C) or (C, H, W) with C in 1, 3 or 4 channels; "
            f"got shape {array.shape}"
        )
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{source}: unsupported image dtype {array.dtype}")
    array = _high_bit_to_uint8(array, source)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        alpha = array[..., 3:].astype(np.float32) / 255.0
        array = np.round(array[..., :3].astype(np.float32) * alpha).astype(np.uint8)
    return np.ascontiguousarray(array)


def load_rgb_image(image: Any, index: int = 0) -> np.ndarray:
    """Turn a path, PIL image, numpy array or torch tensor into an (H, W, 3) uint8 RGB array.

    Handles RGB, RGBA (composited on black), grayscale, palette, 16-bit and EXIF-rotated images; raises
    `ValueError` (or `FileNotFoundError`) naming the input for unreadable, empty or wrong-channel images.
    """
    source = f"image {index}"
    if isinstance(image, (str, os.PathLike)):
        source = f"image file {os.fspath(image)!r}"
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{source} does not exist")
        try:
            with Image.open(image) as opened:
                opened.load()
                return _pil_to_rgb_array(opened, source)
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{source} cannot be read as an image: {error}") from error
    if isinstance(image, Image.Image):
        return _pil_to_rgb_array(image, source)
    if isinstance(image, torch.Tensor):
        return _array_to_rgb_array(image.detach().cpu().numpy(), source)
    if isinstance(image, np.ndarray):
        return _array_to_rgb_array(image, source)
    raise ValueError(f"{source}: expected a file path, PIL image, numpy array or torch tensor, got {type(image)}")


class MeSaImageProcessor(DPTImageProcessorPil):
    r"""Image processor for MeSa depth models.

    Keeps the aspect ratio, resizes so that both sides are multiples of `ensure_multiple_of` (32, the encoder
    stride) near `size` (default 480x640, NYUv2's resolution: scaling as little as possible), rescales to [0, 1] and
    normalises with the ImageNet mean/std. Accepts RGB, RGBA, grayscale, 16-bit and EXIF-rotated images, paths,
    numpy arrays and tensors. `post_process_depth_estimation` returns depth in metres at each original size.

    A batch of images whose resized sizes differ is padded to the largest one at the bottom and right with zeros
    after normalisation (the ImageNet mean colour), as transformers' DETR and SAM processors pad batches. The
    output then holds, besides `pixel_values` (B, 3, H, W), each image's `original_sizes` (B, 2) and
    `reshaped_input_sizes` (B, 2: its content before padding), which `post_process_depth_estimation` uses to crop
    each map back to its content and resize it to its own size. The model ignores both keys, so `model(**inputs)`
    works. Padding is not free for the other content: Swin-V2 windows and the decoder's convolutions let padded
    pixels change the depth of real pixels near the padding (docs/prediction.md measures how much); same-size
    images are never padded.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 480, "width": 640}
    keep_aspect_ratio = True
    ensure_multiple_of = 32
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_pad = False

    def preprocess(self, images: Any, segmentation_maps: Any = None, **kwargs: Any) -> BatchFeature:
        if segmentation_maps is not None:
            raise ValueError("MeSaImageProcessor does not process segmentation maps")
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("no images given: the list is empty")
            arrays = [load_rgb_image(image, index) for index, image in enumerate(images)]
        else:
            arrays = [load_rgb_image(images)]
        kwargs.pop("input_data_format", None)
        kwargs.pop("do_convert_rgb", None)
        return_tensors = kwargs.pop("return_tensors", None)
        data_format = ChannelDimension(kwargs.get("data_format") or ChannelDimension.FIRST)
        processed = super().preprocess(
            arrays, input_data_format="channels_last", do_convert_rgb=False, return_tensors=None, **kwargs
        )["pixel_values"]
        reshaped_input_sizes = [get_image_size(image, channel_dim=data_format) for image in processed]
        data = {
            "pixel_values": self.pad_to_largest(processed, reshaped_input_sizes, data_format),
            "original_sizes": [array.shape[:2] for array in arrays],
            "reshaped_input_sizes": reshaped_input_sizes,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def pad_to_largest(
        images: list[np.ndarray], sizes: list[tuple[int, int]], data_format: ChannelDimension
    ) -> list[np.ndarray]:
        """Zero-pad each image at the bottom and right to the largest height and width among `sizes` (H, W)."""
        height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
        return [
            image
            if (h, w) == (height, width)
            else pad(
                image,
                padding=((0, height - h), (0, width - w)),
                mode=PaddingMode.CONSTANT,
                constant_values=0.0,
                data_format=data_format,
                input_data_format=data_format,
            )
            for image, (h, w) in zip(images, sizes)
        ]

    def post_process_depth_estimation(
        self,
        outputs: Any,
        target_sizes: torch.Tensor | Sequence[tuple[int, int]] | None = None,
        reshaped_input_sizes: torch.Tensor | Sequence[tuple[int, int]] | None = None,
        return_intrinsics: bool = False,
        images: Sequence[Any] | None = None,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics] | None = None,
        fov: float | None = None,
        config: Any = None,
    ) -> list[dict[str, Any]]:
        """Crop each `outputs.predicted_depth` (B, h, w) map to its `reshaped_input_sizes` entry (the image's
        content before batch padding) and resize it to its `target_sizes` entry (H, W), in metres.

        For a padded batch pass both from the processor's output: ``target_sizes=inputs["original_sizes"],
        reshaped_input_sizes=inputs["reshaped_input_sizes"]``. Bilinear resizing keeps values inside the predicted
        range (bicubic would overshoot past max_depth or 0). Returns one `{"predicted_depth": (H, W) tensor}` per
        image.

        With `return_intrinsics`, each dict also holds the camera at the output size (H, W), from
        `mesa_hf.camera.resolve_intrinsics`: `intrinsics` (3, 3) float32 pixels, `field_of_view` (horizontal,
        degrees, as Depth Pro's), `focal_length` (fx, pixels) and `intrinsics_source` (`given`, `fov`, `exif`,
        `checkpoint` or `assumed`). The camera is `intrinsics` (one for all images or one per image, scaled to each
        output size; without a size: pixels of the output), else `fov` (horizontal degrees), else the EXIF of
        `images` (paths or PIL images, one per image), else `config.camera_intrinsics` (pass `model.config`),
        else NYUv2's Kinect camera scaled to the output size.
        """
        predicted_depth = outputs["predicted_depth"] if isinstance(outputs, dict) else outputs.predicted_depth
        if predicted_depth.ndim == 4 and predicted_depth.shape[1] == 1:
            predicted_depth = predicted_depth[:, 0]
        if predicted_depth.ndim != 3:
            raise ValueError(f"predicted_depth must be (batch, height, width), got {tuple(predicted_depth.shape)}")
        if isinstance(intrinsics, CameraIntrinsics):
            intrinsics = [intrinsics] * len(predicted_depth)
        for name, sizes in (
            ("target sizes", target_sizes),
            ("reshaped input sizes", reshaped_input_sizes),
            ("images", images),
            ("intrinsics", intrinsics),
        ):
            if sizes is not None and len(sizes) != len(predicted_depth):
                raise ValueError(f"got {len(sizes)} {name} for a batch of {len(predicted_depth)} predicted depth maps")
        results = []
        for index, depth in enumerate(predicted_depth):
            if reshaped_input_sizes is not None:
                height, width = (int(s) for s in reshaped_input_sizes[index])
                if height > depth.shape[0] or width > depth.shape[1]:
                    raise ValueError(
                        f"reshaped input size {(height, width)} of image {index} exceeds its predicted depth map "
                        f"{tuple(depth.shape)}"
                    )
                depth = depth[:height, :width]
            if target_sizes is not None:
                size = tuple(int(s) for s in target_sizes[index])
                if size != tuple(depth.shape):
                    depth = F.interpolate(depth[None, None].float(), size=size, mode="bilinear", align_corners=False)
                    depth = depth[0, 0]
            result: dict[str, Any] = {"predicted_depth": depth}
            if return_intrinsics:
                size = tuple(depth.shape)
                if intrinsics is not None:
                    camera = intrinsics[index].scaled_to(*size)
                else:
                    image = None if images is None else images[index]
                    camera = resolve_intrinsics(image, size=size, fov=fov, config=config)
                result["intrinsics"] = torch.as_tensor(camera.matrix(), dtype=torch.float32)
                result["field_of_view"] = torch.tensor(camera.field_of_view[0], dtype=torch.float32)
                result["focal_length"] = torch.tensor(camera.focal_length, dtype=torch.float32)
                result["intrinsics_source"] = camera.source
            results.append(result)
        return results


__all__ = ["MeSaImageProcessor", "load_rgb_image"]

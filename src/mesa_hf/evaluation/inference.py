"""Batched depth inference around a MeSa model: device, precision (autocast), test-time augmentation.

The model is any ``transformers`` depth model whose ``forward(pixel_values)`` returns an output with
``predicted_depth`` (B, H, W) in metres at the input size (``MeSaForDepthEstimation``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .tta import TestTimeAugmentation

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> cuda if available, else mps, else cpu; errors name the unavailable device."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available; use --device cpu")
    return device


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; choose one of {sorted(DTYPES)}")
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


class DepthPredictor:
    """Callable ``pixel_values (B, 3, H, W) -> depth (B, H, W)`` float32 metres, with TTA and precision.

    Args:
        model: depth model (put in eval mode and moved to ``device`` here).
        device: torch device or name (``None`` = best available).
        dtype: "fp32", "bf16" or "fp16" (autocast; weights stay fp32; Swin-V2's cosine attention computes in
            fp32 inside the model, see `mesa_hf.attention_mesa.cosine_attention_in_float32`).
        tta: test-time augmentation applied around the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "fp32",
        tta: TestTimeAugmentation | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.tta = tta or TestTimeAugmentation()
        self.model = model.to(self.device).eval()

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = self.model(pixel_values=pixel_values)
        depth = outputs["predicted_depth"] if isinstance(outputs, dict) else outputs.predicted_depth
        return depth.float()

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device, dtype=torch.float32)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.tta.wrap(self._forward)(pixel_values).float()


def resize_depth_bilinear(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (H, W) or (B, H, W) depth to ``size`` (keeps values within the input range)."""
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    squeeze = depth.ndim == 2
    x = depth[None, None] if squeeze else depth[:, None]
    x = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return x[0, 0] if squeeze else x[:, 0]


def preprocess_images(
    image_processor: Any, images: Sequence[Any], input_size: tuple[int, int] | None = None
) -> list[torch.Tensor]:
    """Each image through the processor separately -> list of (3, h, w) tensors (sizes may differ)."""
    kwargs: dict[str, Any] = {"return_tensors": "pt"}
    if input_size is not None:
        kwargs["size"] = {"height": int(input_size[0]), "width": int(input_size[1])}
    return [image_processor(images=image, **kwargs)["pixel_values"][0] for image in images]


def batches_of_equal_shape(
    tensors: Sequence[torch.Tensor], batch_size: int
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Group consecutive tensors of the same shape into stacks of at most ``batch_size``: (indices, stack)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    group: list[int] = []
    for index, tensor in enumerate(tensors):
        if group and (len(group) == batch_size or tensors[group[0]].shape != tensor.shape):
            yield group, torch.stack([tensors[i] for i in group])
            group = []
        group.append(index)
    if group:
        yield group, torch.stack([tensors[i] for i in group])


def image_size(image: Any) -> tuple[int, int]:
    """(height, width) of a PIL image, (H, W[, C]) array or (C, H, W) tensor."""
    if hasattr(image, "size") and not isinstance(image, np.ndarray | torch.Tensor):
        width, height = image.size
        return int(height), int(width)
    shape = tuple(image.shape)
    if isinstance(image, torch.Tensor) and len(shape) == 3 and shape[0] in (1, 3, 4):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _drop_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


@contextmanager
def load_report_held_back():
    """While open, transformers' ``from_pretrained`` LOAD REPORT (missing / unexpected keys) is not logged; every
    other transformers message passes."""
    hf_logger = logging.getLogger("transformers.modeling_utils")
    hf_logger.addFilter(_drop_load_report)
    try:
        yield
    finally:
        hf_logger.removeFilter(_drop_load_report)


def load_checkpoint(
    checkpoint: str | Any, revision: str | None = None, quiet: bool = False
) -> tuple[torch.nn.Module, Any]:
    """(MeSaForDepthEstimation, MeSaImageProcessor) from a local checkpoint folder or a Hub model id (offline:
    from the Hugging Face cache; see `mesa_hf.hub.resolve_checkpoint`).

    Checkpoints of other MeSa objectives load too (the encoder is carried; a missing depth decoder is freshly
    initialised), which is what layer-wise CKA of the encoder needs. `quiet` holds back transformers' load report
    (for callers that compare encoders only and expect the decoder to be missing).
    """
    from mesa_hf import MeSaForDepthEstimation, MeSaImageProcessor
    from mesa_hf.hub import resolve_checkpoint

    path = resolve_checkpoint(checkpoint, revision=revision)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint folder: no config.json")
    if quiet:
        with load_report_held_back():
            model = MeSaForDepthEstimation.from_pretrained(path)
    else:
        model = MeSaForDepthEstimation.from_pretrained(path)
    if (path / "preprocessor_config.json").is_file():
        processor = MeSaImageProcessor.from_pretrained(path)
    else:
        processor = MeSaImageProcessor()
    return model, processor

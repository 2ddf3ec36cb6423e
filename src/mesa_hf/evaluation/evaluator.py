"""Evaluate a depth model on a dataset under a named protocol."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .inference import DepthPredictor, batches_of_equal_shape, preprocess_images, resize_depth_bilinear
from .metrics import METRIC_NAMES, format_metrics_table
from .protocols import EvaluationProtocol, get_protocol
from .tta import TestTimeAugmentation


@dataclass
class EvaluationResult:
    """Dataset metrics (mean over images) with the protocol and TTA they were measured under."""

    metrics: dict[str, float]
    pooled_metrics: dict[str, float]
    num_images: int
    protocol: EvaluationProtocol
    tta: TestTimeAugmentation
    dtype: str = "fp32"
    per_image: list[dict[str, float]] = field(default_factory=list)

    @property
    def description(self) -> str:
        return self.protocol.describe(self.tta) + f" | images={self.num_images} | dtype={self.dtype}"

    def format_table(self, digits: int = 4) -> str:
        """Metric table preceded by the protocol line (print this, never bare numbers)."""
        return format_metrics_table(self.metrics, title=self.description, digits=digits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol.name,
            "description": self.description,
            "crop": self.protocol.crop,
            "min_depth": self.protocol.min_depth,
            "max_depth": self.protocol.max_depth,
            "input_size": list(self.protocol.input_size) if self.protocol.input_size else None,
            "median_scaling": self.protocol.median_scaling,
            "tta": {
                "flip": self.tta.flip,
                "sliding_window": self.tta.sliding_window,
                "window_size": self.tta.window_size,
                "num_windows": self.tta.num_windows,
                "label": self.tta.describe(),
            },
            "dtype": self.dtype,
            "num_images": self.num_images,
            "metrics": self.metrics,
            "pooled_metrics": self.pooled_metrics,
            "per_image": self.per_image,
        }

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _default_image_processor(model: torch.nn.Module) -> Any:
    from mesa_hf import MeSaImageProcessor

    source = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    if source and Path(source, "preprocessor_config.json").is_file():
        return MeSaImageProcessor.from_pretrained(source)
    return MeSaImageProcessor()


def _sample_depth(sample: dict[str, Any], index: int) -> np.ndarray:
    if "depth" not in sample:
        raise ValueError(f"sample {index} has no 'depth' column (columns: {sorted(sample)})")
    depth = np.asarray(sample["depth"], dtype=np.float32)
    if depth.ndim == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.ndim != 2:
        raise ValueError(f"sample {index}: 'depth' must be an (H, W) map in metres, got shape {depth.shape}")
    return depth


def evaluate_model(
    model: torch.nn.Module,
    dataset: Sequence[dict[str, Any]],
    protocol: str | EvaluationProtocol = "nyuv2",
    tta: TestTimeAugmentation | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    dtype: str = "fp32",
    image_processor: Any = None,
    max_samples: int | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Predict every sample's depth and score it under ``protocol``.

    Args:
        model: depth model returning ``predicted_depth`` (B, H, W) metres at the input size.
        dataset: indexable of dicts with ``image`` (PIL image / path / array) and ``depth`` ((H, W) float metres,
            0 or non-finite = no ground truth), and optionally ``mask`` ((H, W) bool, used when the protocol says
            so, e.g. iBims-1's invalid/transparent masks). A list of dicts or a ``datasets.Dataset``.
        protocol: protocol name or object (crop, range, input size, scaling).
        tta: test-time augmentation (flip, sliding window).
        batch_size: images per forward pass (consecutive images of equal processed size are batched).
        device, dtype: inference device and autocast precision ("fp32", "bf16", "fp16").
        image_processor: defaults to the checkpoint's ``MeSaImageProcessor`` (or a default one).
        max_samples: evaluate only the first N samples.

    Returns:
        :class:`EvaluationResult` (mean over images; pooled-pixel metrics too).
    """
    protocol = get_protocol(protocol)
    tta = tta or TestTimeAugmentation()
    if tta.sliding_window and tta.window_size is None and protocol.input_size is not None:
        tta = dataclasses.replace(tta, window_size=protocol.input_size[0])  # state the resolved size
    image_processor = image_processor or _default_image_processor(model)
    predictor = DepthPredictor(model, device=device, dtype=dtype, tta=tta)
    num = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    if num == 0:
        raise ValueError("the dataset is empty: nothing to evaluate")
    accumulator = protocol.accumulator()
    per_image: list[dict[str, float]] = []
    bar = tqdm(total=num, desc=f"evaluate [{protocol.name}, TTA {tta.describe()}]", disable=not progress)
    for start in range(0, num, batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, num))]
        images = [s["image"] for s in samples]
        pixel_values = preprocess_images(image_processor, images, protocol.input_size)
        for group, stack in batches_of_equal_shape(pixel_values, batch_size):
            depth = predictor(stack).cpu()
            for k, i in enumerate(group):
                index = start + i
                gt = _sample_depth(samples[i], index)
                pred = resize_depth_bilinear(depth[k], gt.shape)
                mask = samples[i].get("mask") if protocol.use_dataset_mask else None
                try:
                    metrics = accumulator.update(pred, gt, valid_mask=None if mask is None else np.asarray(mask))
                except ValueError as error:
                    raise ValueError(f"sample {index}: {error}") from None
                per_image.extend(metrics)
        bar.update(len(samples))
    bar.close()
    return EvaluationResult(
        metrics=accumulator.compute(),
        pooled_metrics=accumulator.compute_pooled(),
        num_images=accumulator.num_images,
        protocol=protocol,
        tta=tta,
        dtype=dtype if isinstance(dtype, str) else str(dtype),
        per_image=per_image,
    )


def model_index_results(result: EvaluationResult, dataset_name: str, dataset_type: str) -> list[Any]:
    """``huggingface_hub.EvalResult`` entries (one per metric) for a model card's model-index."""
    from huggingface_hub import EvalResult

    config = result.protocol.name + ("" if not result.tta.enabled else f"+tta:{result.tta.short_label()}")
    if result.protocol.median_scaling:
        config += "+median-scaled"
    return [
        EvalResult(
            task_type="depth-estimation",
            task_name="Monocular depth estimation",
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=name,
            metric_name=f"{name} ({config})",
            metric_value=round(float(result.metrics[name]), 6),
            metric_config=config,
            metric_args={"protocol": result.description},
        )
        for name in METRIC_NAMES
    ]


def write_model_card_results(
    checkpoint_dir: str | Path,
    result: EvaluationResult,
    dataset_name: str = "NYU Depth V2",
    dataset_type: str = "nyu_depth_v2",
    model_name: str | None = None,
) -> Path:
    """Write ``result`` as model-index metadata into ``<checkpoint_dir>/README.md`` (created if missing; offline).

    Existing results for other datasets/metric configs are kept; results with the same dataset, metric and
    protocol are replaced.
    """
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {checkpoint_dir}")
    readme = checkpoint_dir / "README.md"
    model_name = model_name or checkpoint_dir.name
    new_results = model_index_results(result, dataset_name, dataset_type)
    if readme.is_file():
        card = ModelCard.load(readme)
    else:
        card = ModelCard(
            f"---\nlibrary_name: transformers\n---\n\n# {model_name}\n\nMeSa monocular depth model (mesa-hf). "
            "Evaluation results are in the metadata above.\n"
        )
    data: ModelCardData = card.data
    existing = list(data.eval_results or [])
    keep = [
        r
        for r in existing
        if not any(
            (r.dataset_type, r.metric_type, r.metric_config) == (n.dataset_type, n.metric_type, n.metric_config)
            for n in new_results
        )
    ]
    data.eval_results = keep + new_results
    data.model_name = data.model_name or model_name
    data.pipeline_tag = data.pipeline_tag or "depth-estimation"
    tags = list(data.tags or [])
    if "depth-estimation" not in tags:
        data.tags = [*tags, "depth-estimation"]
    # round trip through the model-index helpers validates the structure before anything is written
    model_index_to_eval_results(eval_results_to_model_index(data.model_name, data.eval_results))
    card.save(readme)
    return readme

"""mesa-hf: MeSa monocular depth models for Hugging Face transformers.

Importing the package registers MeSa with transformers' Auto classes (AutoConfig, AutoModelForDepthEstimation,
AutoImageProcessor), so `pipeline("depth-estimation", model=<checkpoint>)` works on MeSa checkpoints.
"""

import importlib.util

__version__ = "0.1.0"

# Without torch only `mesa_hf.onnx`'s ONNX Runtime inference is usable; everything else needs torch.
if importlib.util.find_spec("torch") is not None:
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForDepthEstimation,
        AutoModelForMaskedImageModeling,
    )

    from .configuration_mesa import PRESETS, MeSaConfig
    from .hub import save_for_sharing
    from .image_processing_mesa import MeSaImageProcessor
    from .modeling_mesa import (
        MeSaForDepthEstimation,
        MeSaForMaskedImageModeling,
        MeSaForSelfSupervisedDepth,
        MeSaPreTrainedModel,
    )

    AutoConfig.register(MeSaConfig.model_type, MeSaConfig, exist_ok=True)
    AutoModelForDepthEstimation.register(MeSaConfig, MeSaForDepthEstimation, exist_ok=True)
    AutoModelForMaskedImageModeling.register(MeSaConfig, MeSaForMaskedImageModeling, exist_ok=True)
    AutoImageProcessor.register(MeSaConfig, image_processor_classes={"pil": MeSaImageProcessor}, exist_ok=True)

__all__ = [
    "PRESETS",
    "MeSaConfig",
    "MeSaForDepthEstimation",
    "MeSaForMaskedImageModeling",
    "MeSaForSelfSupervisedDepth",
    "MeSaImageProcessor",
    "MeSaPreTrainedModel",
    "__version__",
    "save_for_sharing",
]

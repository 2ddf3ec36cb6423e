"""mesa-hf: MeSa monocular depth models for Hugging Face transformers."""

from .configuration_mesa import PRESETS, MeSaConfig

__version__ = "0.1.0"

__all__ = ["PRESETS", "MeSaConfig", "__version__"]

"""HF Datasets for every MeSa stage: loaders for real RGB-D formats, the synthetic RGB-D world, and transforms.

Column names of the three dataset kinds (``depth``, ``video``, ``images``) are defined in :mod:`.columns`.
"""

from .columns import DEPTH_FEATURES, IMAGE_FEATURES, VIDEO_FEATURES, features_for, intrinsics_matrix, relative_poses
from .decoders import DEPTH_FORMATS, decode_depth
from .loaders import NYU_INTRINSICS, load_depth_dataset, load_image_dataset

__all__ = [
    "DEPTH_FEATURES",
    "DEPTH_FORMATS",
    "IMAGE_FEATURES",
    "NYU_INTRINSICS",
    "VIDEO_FEATURES",
    "decode_depth",
    "features_for",
    "intrinsics_matrix",
    "load_depth_dataset",
    "load_image_dataset",
    "relative_poses",
]

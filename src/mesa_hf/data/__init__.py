"""HF Datasets for every MeSa stage: loaders for real RGB-D formats, the synthetic RGB-D world, and transforms.

Column names of the three dataset kinds (``depth``, ``video``, ``images``) are defined in :mod:`.columns`;
``docs/datasets.md`` shows how to point each stage at real data.
"""

from .columns import DEPTH_FEATURES, IMAGE_FEATURES, VIDEO_FEATURES, features_for, intrinsics_matrix, relative_poses
from .decoders import DEPTH_FORMATS, decode_depth
from .folder import FolderLayoutError, find_rgbd_pairs
from .loaders import DEPTH_DATASET_FORMATS, NYU_INTRINSICS, load_depth_dataset, load_image_dataset
from .synthetic import synthetic_depth_dataset, synthetic_image_dataset, synthetic_video_dataset
from .transforms import TRANSFORM_NAMES, build_transform
from .video import VIDEO_DATASET_FORMATS, load_video_dataset

__all__ = [
    "DEPTH_DATASET_FORMATS",
    "DEPTH_FEATURES",
    "DEPTH_FORMATS",
    "IMAGE_FEATURES",
    "NYU_INTRINSICS",
    "TRANSFORM_NAMES",
    "VIDEO_DATASET_FORMATS",
    "VIDEO_FEATURES",
    "FolderLayoutError",
    "build_transform",
    "decode_depth",
    "features_for",
    "find_rgbd_pairs",
    "intrinsics_matrix",
    "load_depth_dataset",
    "load_image_dataset",
    "load_video_dataset",
    "relative_poses",
    "synthetic_depth_dataset",
    "synthetic_image_dataset",
    "synthetic_video_dataset",
]

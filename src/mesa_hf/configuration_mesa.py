"""MeSa configuration and the one registry of named presets.

This file is copied next to checkpoints written for sharing (``trust_remote_code``), so it imports only
``transformers`` and the standard library.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

DECODER_TYPES = ("mim", "multiscale")
POSE_SOURCES = ("network", "dataset")
DEPTH_HEAD_OUTPUTS = ("depth", "disparity")
WINDOW_ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")

_ALL_STAGES = ["stage1", "stage2", "stage3", "stage4"]

# One registry of named architectures. Each entry gives the Swin-V2 encoder shape and the decoder choice;
# everything else keeps the MeSaConfig defaults. Fine-tuning geometry (MIM-Depth): 480x480 crops, window 30,
# pretrained windows [12, 12, 12, 6] (SimMIM pre-training at 192x192 with window 12).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "backbone": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]},
        "decoder_type": "mim",
    },
    "base": {
        "backbone": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "drop_path_rate": 0.3},
        "decoder_type": "mim",
    },
    "large": {
        "backbone": {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48], "drop_path_rate": 0.5},
        "decoder_type": "mim",
    },
    # A few-million-parameter model that learns on 2 CPU cores in minutes (the offline demo, docs/design.md §6).
    "demo": {
        "backbone": {
            "embed_dim": 32,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 2, 4, 8],
            "image_size": [96, 128],
            "window_size": 6,
            "pretrained_window_sizes": [0, 0, 0, 0],
            "drop_path_rate": 0.0,
        },
        "decoder_type": "multiscale",
        "decoder_hidden_size": 32,
        "decoder_image_branch": True,
    },
    # Unit-test size: runs a forward pass in milliseconds.
    "test": {
        "backbone": {
            "embed_dim": 16,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 2, 2, 4],
            "image_size": 64,
            "window_size": 4,
            "pretrained_window_sizes": [0, 0, 0, 0],
            "drop_path_rate": 0.0,
        },
        "decoder_type": "mim",
        "num_filters": [8, 8, 8],
        "decoder_hidden_size": 16,
        "pose_hidden_sizes": [8, 16, 32, 64],
        "pose_depths": [1, 1, 1, 1],
        "pose_embedding_size": 8,
    },
}

_SWINV2_DEFAULTS: dict[str, Any] = {
    "image_size": 480,
    "patch_size": 4,
    "embed_dim": 96,
    "depths": [2, 2, 6, 2],
    "num_heads": [3, 6, 12, 24],
    "window_size": 30,
    "pretrained_window_sizes": [12, 12, 12, 6],
    "drop_path_rate": 0.1,
    "out_features": list(_ALL_STAGES),
}


class MeSaConfig(PreTrainedConfig):
    r"""Configuration of a MeSa model through every stage (masked, geometric, supervised, fine-tuning).

    Args:
        backbone_config (`Swinv2Config` or `dict`): the Swin-V2 encoder. `image_size` fixes each stage's window
            and shift at build time: set it to the training crop (480 for NYUv2 fine-tuning).
        decoder_type (`str`): `"mim"` (MIM-Depth: stage-4 features, deconvolutions) or `"multiscale"` (fuses all
            four stages, FPN-style; learns far faster from scratch at small scale).
        num_deconv, num_filters, deconv_kernels: the MIM-Depth deconvolution decoder.
        decoder_hidden_size (`int`, *optional*): channels after the decoder's 3x3 conv; `None` = `embed_dim`.
        decoder_image_branch (`bool`): with the multiscale decoder, a shallow convolutional branch on the input image
            (`MeSaImageBranch`) whose stride-4 and stride-8 maps are added to the first two stage maps (the
            `demo` preset: a Swin-V2 trained from scratch for minutes learns image detail slowly; docs/benchmarks.md).
        max_depth, min_depth (`float`): depth range in metres; the head predicts `sigmoid * max_depth` (default
            `depth_head_output`).
        depth_head_output (`str`): what the depth heads' sigmoid means. `"depth"` (default, MIM-Depth): depth /
            `max_depth`, clamped below at `min_depth`. `"disparity"` (Monodepth2's `disp_to_depth`): a disparity
            between `1 / disp_max_depth` and `1 / disp_min_depth`, so depth spans `[disp_min_depth, disp_max_depth]`.
            The prototype (docs/design.md §6) found `"depth"` stable where Monodepth2's disparity collapsed the scale
            with a learned pose.
        silog_lambda (`float`): the variance weight of the SiLog loss.
        mask_ratio, mask_patch_size, norm_target, norm_target_patch_size: the masked (SimMIM) objective.
        disp_min_depth, disp_max_depth (`float`): the depth range of `depth_head_output="disparity"`, metres.
        frame_offsets, ssim_weight, smoothness_weight, num_scales, pose_source, pose_*: the geometric
            (self-supervised video) objective and its pose network.
        depth_scale_search (`bool`): the geometric loss first rescales each image's depth by the factor in
            [0.5, 2] with the lowest photometric loss (`modeling_mesa.photometric_depth_scale`), and pulls the depth
            towards that scale with weight `depth_scale_weight` (squared log-ratio). With metric dataset poses a
            network that gets a room's scale wrong by more than about 20 % otherwise sees no structure signal.
        window_attention (`str`): `"sdpa"` (fused) or `"eager"` (transformers' stock Swin-V2 attention).
        camera_intrinsics (`dict`, *optional*): the camera the checkpoint was trained on, `{"fx", "fy", "cx", "cy",
            "width", "height"}` in pixels of a `width` x `height` image (e.g. NYUv2's Kinect at 640x480). Predictions
            use it, scaled to each image, when neither the user nor the photo's EXIF gives one
            (`mesa_hf.camera.resolve_intrinsics`); `None` (default): the NYUv2 camera, marked as assumed.
    """

    model_type = "mesa"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig, model_type="swinv2", init_kwargs=copy.deepcopy(_SWINV2_DEFAULTS)
        ),
    }

    backbone_config: dict | PreTrainedConfig | None = None
    # depth decoder
    decoder_type: str = "mim"
    num_deconv: int = 3
    num_filters: list[int] | tuple[int, ...] = (32, 32, 32)
    deconv_kernels: list[int] | tuple[int, ...] = (2, 2, 2)
    decoder_hidden_size: int | None = None
    decoder_image_branch: bool = False
    max_depth: float = 10.0
    min_depth: float = 1e-3
    depth_head_output: str = "depth"
    disp_min_depth: float = 0.1
    disp_max_depth: float = 10.0
    initializer_range: float = 0.02
    # supervised objective
    silog_lambda: float = 0.5
    # masked objective (SimMIM)
    mask_ratio: float = 0.6
    mask_patch_size: int = 32
    norm_target: bool = False
    norm_target_patch_size: int = 47
    # geometric objective (Monodepth2-style)
    frame_offsets: list[int] | tuple[int, ...] = (-1, 1)
    ssim_weight: float = 0.85
    smoothness_weight: float = 1e-3
    num_scales: int = 4
    pose_source: str = "network"
    pose_hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    pose_depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    pose_embedding_size: int = 64
    pose_rotation_scale: float = 0.01
    pose_translation_scale: float = 0.1
    depth_scale_search: bool = False
    depth_scale_weight: float = 0.01
    # encoder attention kernel
    window_attention: str = "sdpa"
    # the training camera (intrinsics at a reference size) predictions fall back to
    camera_intrinsics: dict | None = None

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:
            self.backbone_config = AutoConfig.for_model("swinv2", **copy.deepcopy(_SWINV2_DEFAULTS))
        elif isinstance(self.backbone_config, dict):
            backbone = {**copy.deepcopy(_SWINV2_DEFAULTS), **self.backbone_config}
            backbone.pop("model_type", None)
            self.backbone_config = AutoConfig.for_model("swinv2", **backbone)
        for name in ("num_filters", "deconv_kernels", "frame_offsets", "pose_hidden_sizes", "pose_depths"):
            setattr(self, name, list(getattr(self, name)))
        super().__post_init__(**kwargs)
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the field when the configuration cannot describe a working model."""
        if self.backbone_config.model_type != "swinv2":
            raise ValueError(
                f"MeSa needs a Swin-V2 backbone_config, got model_type={self.backbone_config.model_type!r}"
            )
        if self.backbone_config.use_absolute_embeddings:
            raise ValueError("backbone_config.use_absolute_embeddings=True is not supported by Swinv2Backbone")
        if self.decoder_type not in DECODER_TYPES:
            raise ValueError(f"decoder_type must be one of {DECODER_TYPES}, got {self.decoder_type!r}")
        if self.decoder_image_branch and self.decoder_type != "multiscale":
            raise ValueError(f"decoder_image_branch needs decoder_type='multiscale', got {self.decoder_type!r}")
        if len(self.num_filters) != self.num_deconv or len(self.deconv_kernels) != self.num_deconv:
            raise ValueError(
                f"num_filters ({self.num_filters}) and deconv_kernels ({self.deconv_kernels}) need num_deconv="
                f"{self.num_deconv} entries each"
            )
        if any(k not in (2, 3, 4) for k in self.deconv_kernels):
            raise ValueError(f"deconv_kernels entries must be 2, 3 or 4, got {self.deconv_kernels}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth} and {self.max_depth}")
        if self.depth_head_output not in DEPTH_HEAD_OUTPUTS:
            raise ValueError(f"depth_head_output must be one of {DEPTH_HEAD_OUTPUTS}, got {self.depth_head_output!r}")
        if not 0 < self.disp_min_depth < self.disp_max_depth:
            raise ValueError(
                f"need 0 < disp_min_depth < disp_max_depth, got {self.disp_min_depth} and {self.disp_max_depth}"
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        model_patch = self.patch_size
        if self.mask_patch_size % model_patch:
            raise ValueError(
                f"mask_patch_size ({self.mask_patch_size}) must be a multiple of the model patch size ({model_patch})"
            )
        if 0 in self.frame_offsets:
            raise ValueError(
                f"frame_offsets are source frames relative to the target and cannot hold 0: {self.frame_offsets}"
            )
        if self.depth_scale_weight < 0:
            raise ValueError(f"depth_scale_weight must be >= 0, got {self.depth_scale_weight}")
        if self.pose_source not in POSE_SOURCES:
            raise ValueError(f"pose_source must be one of {POSE_SOURCES}, got {self.pose_source!r}")
        if self.window_attention not in WINDOW_ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"window_attention must be one of {WINDOW_ATTENTION_IMPLEMENTATIONS}, got {self.window_attention!r}"
            )
        if self.num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {self.num_scales}")
        self._validate_camera_intrinsics()

    def _validate_camera_intrinsics(self) -> None:
        camera = self.camera_intrinsics
        if camera is None:
            return
        keys = ("fx", "fy", "cx", "cy", "width", "height")
        if not isinstance(camera, dict) or sorted(camera) != sorted(keys):
            raise ValueError(f"camera_intrinsics must be None or a dict with exactly the keys {keys}, got {camera!r}")
        if not all(isinstance(camera[k], int | float) and not isinstance(camera[k], bool) for k in keys):
            raise ValueError(f"camera_intrinsics values must be numbers (pixels), got {camera!r}")
        if min(camera["fx"], camera["fy"], camera["width"], camera["height"]) <= 0:
            raise ValueError(f"camera_intrinsics fx, fy, width and height must be positive, got {camera!r}")

    @property
    def patch_size(self) -> int:
        patch = self.backbone_config.patch_size
        return patch if isinstance(patch, int) else int(patch[0])

    @property
    def encoder_stride(self) -> int:
        """Input pixels per stage-4 feature (32 for patch 4 and four stages)."""
        return self.patch_size * 2 ** (len(self.backbone_config.depths) - 1)

    @property
    def stage_channels(self) -> list[int]:
        """Channels of the four stage outputs, e.g. [96, 192, 384, 768] for tiny."""
        embed = self.backbone_config.embed_dim
        return [embed * 2**i for i in range(len(self.backbone_config.depths))]

    @classmethod
    def available_presets(cls) -> list[str]:
        return sorted(PRESETS)

    @classmethod
    def from_preset(cls, name: str, backbone_overrides: dict[str, Any] | None = None, **overrides: Any) -> MeSaConfig:
        """Build a config from a named preset (`tiny`, `base`, `large`, `demo`, `test`).

        `backbone_overrides` change the Swin-V2 fields (e.g. `{"image_size": 192, "window_size": 12}` for SimMIM
        pre-training); other keyword arguments change MeSa fields.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown MeSa preset {name!r}; available: {', '.join(sorted(PRESETS))}")
        preset = copy.deepcopy(PRESETS[name])
        backbone = {**_SWINV2_DEFAULTS, **preset.pop("backbone"), **(backbone_overrides or {})}
        return cls(backbone_config=backbone, **{**preset, **overrides})


__all__ = ["PRESETS", "MeSaConfig"]

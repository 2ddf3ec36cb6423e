"""MeSa models: transformers' Swin-V2 encoder with the MIM-Depth (or a multi-scale) depth decoder.

This file is copied next to checkpoints written for sharing (``trust_remote_code``), so it imports only torch,
transformers and sibling modules of this folder.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel, ResNetConfig, ResNetModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_outputs import DepthEstimatorOutput, MaskedImageModelingOutput
from transformers.utils import ModelOutput

from .attention_mesa import set_window_attention
from .configuration_mesa import MeSaConfig
from .geometry import disp_to_depth, pose_vec_to_matrix, warp_frame
from .losses import (
    edge_aware_smoothness,
    mask_to_pixel_mask,
    min_reprojection_loss,
    norm_targets,
    photometric_error,
    silog_loss,
    simmim_loss,
)


def _deconv_padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 transposed conv exactly double the size (MIM-Depth)."""
    return {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel_size]


class MeSaDepthDecoder(nn.Module):
    """MIM-Depth's decoder: stage-4 features (stride 32) -> deconvolutions (x2 each) -> 3x3 conv -> two bilinear x2.

    Input (B, C4, H/32, W/32); output (B, hidden, H, W) for the default three deconvolutions.
    """

    def __init__(self, config: MeSaConfig):
        super().__init__()
        in_channels = config.stage_channels[-1]
        hidden = config.decoder_hidden_size or config.backbone_config.embed_dim
        layers: list[nn.Module] = []
        for filters, kernel in zip(config.num_filters, config.deconv_kernels):
            padding, output_padding = _deconv_padding(kernel)
            layers += [
                nn.ConvTranspose2d(
                    in_channels, filters, kernel, stride=2, padding=padding, output_padding=output_padding, bias=False
                ),
                nn.BatchNorm2d(filters),
                nn.ReLU(inplace=True),
            ]
            in_channels = filters
        self.deconv_layers = nn.Sequential(*layers)
        self.conv_layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.upsample_factor = config.encoder_stride // 2**config.num_deconv

    @property
    def intermediate_channels(self) -> list[int]:
        """Channels of the intermediate maps `forward(..., return_intermediate=True)` returns, finest first."""
        return [m.num_features for m in self.deconv_layers if isinstance(m, nn.BatchNorm2d)][::-1]

    def forward(
        self, stage_features: list[torch.Tensor], return_intermediate: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = stage_features[-1]
        intermediate = []
        for index, layer in enumerate(self.deconv_layers):
            hidden = layer(hidden)
            if index % 3 == 2:  # after each deconv - BN - ReLU block: strides 16, 8, 4
                intermediate.append(hidden)
        hidden = self.conv_layers(hidden)
        # MIM-Depth upsamples with two successive bilinear x2 steps (not one x4)
        for _ in range(int(math.log2(self.upsample_factor))):
            hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False)
        return (hidden, intermediate[::-1]) if return_intermediate else hidden


class MeSaImageBranch(nn.Module):
    """A shallow convolutional branch on the (normalised, stride-padded) input image: conv3x3-BN-ReLU at strides 2,
    4 and 8, with the widths of the first two encoder stages. (B, 3, H, W) -> maps (B, C_1, H/4, W/4) and
    (B, C_2, H/8, W/8), added to the encoder's first two stage maps by `MeSaMultiScaleDecoder`."""

    def __init__(self, config: MeSaConfig):
        super().__init__()
        first, second = config.stage_channels[:2]

        def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            )

        self.stride4 = nn.Sequential(
            conv_bn_relu(config.backbone_config.num_channels, first // 2), conv_bn_relu(first // 2, first)
        )
        self.stride8 = conv_bn_relu(first, second)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stride4 = self.stride4(pixel_values)
        return stride4, self.stride8(stride4)


class MeSaMultiScaleDecoder(nn.Module):
    """FPN-style decoder fusing all four stages (top-down, x2 bilinear + lateral 1x1), then to full resolution.

    Learns much faster than the stage-4-only decoder when a small model is trained from scratch.
    Input: the four stage maps (B, C_i, H/2^(i+2), W/2^(i+2)); output (B, hidden, H, W).
    """

    def __init__(self, config: MeSaConfig):
        super().__init__()
        hidden = config.decoder_hidden_size or config.backbone_config.embed_dim
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, hidden, kernel_size=1) for c in config.stage_channels)
        self.fuse_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())
            for _ in config.stage_channels[:-1]
        )
        self.conv_layers = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.upsample_factor = config.patch_size
        self.image_branch = MeSaImageBranch(config) if config.decoder_image_branch else None

    @property
    def intermediate_channels(self) -> list[int]:
        """Channels of the intermediate maps `forward(..., return_intermediate=True)` returns, finest first."""
        return [conv.out_channels for conv in self.lateral_convs[:-1]]

    def forward(
        self,
        stage_features: list[torch.Tensor],
        return_intermediate: bool = False,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """`pixel_values` (B, 3, H, W): the encoder's input, needed (only) by `image_branch`."""
        if self.image_branch is not None:
            if pixel_values is None:
                raise ValueError("this decoder has an image branch (config.decoder_image_branch): pass pixel_values")
            stride4, stride8 = self.image_branch(pixel_values)
            stage_features = [stage_features[0] + stride4, stage_features[1] + stride8, *stage_features[2:]]
        fused = self.lateral_convs[-1](stage_features[-1])
        intermediate = []
        for level in range(len(stage_features) - 2, -1, -1):
            lateral = self.lateral_convs[level](stage_features[level])
            fused = F.interpolate(fused, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
            fused = self.fuse_convs[level](fused)
            intermediate.append(fused)  # strides 16, 8, 4
        hidden = self.conv_layers(fused)
        hidden = F.interpolate(hidden, scale_factor=self.upsample_factor, mode="bilinear", align_corners=False)
        return (hidden, intermediate[::-1]) if return_intermediate else hidden


def logits_to_depth(logits: torch.Tensor, config: MeSaConfig) -> torch.Tensor:
    """A depth head's output (any shape) -> depth in metres, as `config.depth_head_output` says.

    `"depth"`: ``sigmoid * max_depth`` clamped below at `min_depth` (a saturated sigmoid would otherwise give exactly
    0 m in float32). `"disparity"`: Monodepth2's ``1 / (1/disp_max_depth + (1/disp_min_depth - 1/disp_max_depth) *
    sigmoid)``.
    """
    if config.depth_head_output == "disparity":
        return disp_to_depth(torch.sigmoid(logits), config.disp_min_depth, config.disp_max_depth)[1]
    return (torch.sigmoid(logits) * config.max_depth).clamp_min(config.min_depth)


class MeSaDepthHead(nn.Module):
    """conv3x3 - ReLU - conv3x3 to one channel, then `logits_to_depth`: (B, hidden, H, W) -> (B, H, W) metres."""

    def __init__(self, config: MeSaConfig):
        super().__init__()
        hidden = config.decoder_hidden_size or config.backbone_config.embed_dim
        self.conv1 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1)
        self.activation = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden, 1, kernel_size=3, padding=1)
        self.config = config

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return logits_to_depth(self.conv2(self.activation(self.conv1(hidden))).squeeze(1), self.config)


class MeSaPreTrainedModel(PreTrainedModel):
    """Base class: the Swin-V2 encoder every MeSa objective shares, held as `backbone` (+ `encoder_norm`).

    `backbone` has the parameter names of transformers' `Swinv2Backbone`, so its state dict loads into a stock
    `Swinv2Backbone` and back, and `NextStage.from_pretrained(previous_stage_dir)` carries the encoder.
    """

    config: MeSaConfig
    config_class = MeSaConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["Swinv2Stage"]

    def _build_encoder(self, config: MeSaConfig) -> None:
        self.backbone = load_backbone(config)
        # transformers builds these two norms with nn.LayerNorm's default eps; use the configured one (MIM-Depth: 1e-6)
        eps = config.backbone_config.layer_norm_eps
        self.backbone.embeddings.norm.eps = eps
        for stage in self.backbone.encoder.layers:
            if stage.downsample is not None:
                stage.downsample.norm.eps = eps
        # The reference encoder ends with a LayerNorm on the last stage; transformers' backbone returns raw stages.
        self.encoder_norm = nn.LayerNorm(config.stage_channels[-1], eps=config.backbone_config.layer_norm_eps)
        set_window_attention(self.backbone, config.window_attention)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # MIM-Depth initialises its decoder and head convolutions with N(0, 0.001)
            init.normal_(module.weight, mean=0.0, std=0.001)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)

    def _output_flags(
        self, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
    ) -> tuple[bool, bool]:
        """Resolve `output_hidden_states` and `return_dict` against the config; attention maps are not returned."""
        if output_attentions:
            raise ValueError(f"{type(self).__name__} does not return attention maps")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return bool(output_hidden_states), self.config.return_dict if return_dict is None else return_dict

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        channels = self.config.backbone_config.num_channels
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[1] != channels:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"pixel_values must be a (batch, {channels}, height, width) tensor, got {shape}")
        if pixel_values.shape[-2] < 1 or pixel_values.shape[-1] < 1 or pixel_values.shape[0] < 1:
            raise ValueError(f"pixel_values is empty: shape {tuple(pixel_values.shape)}")

    def _pad_to_stride(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Replicate-pad right/bottom so height and width are multiples of the encoder stride (32)."""
        stride = self.config.encoder_stride
        height, width = pixel_values.shape[-2:]
        pad_h, pad_w = (-height) % stride, (-width) % stride
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h), mode="replicate")
        return pixel_values

    @contextmanager
    def _capture_block_outputs(self, enabled: bool):
        """Collect every Swin-V2 block's output as (B, C, h, w) while the context is open (when enabled)."""
        captured: list[torch.Tensor] = []
        handles = []
        if enabled:

            def hook(module, args, output):
                height, width = args[1]
                tokens = output[0]
                captured.append(tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width))

            for stage in self.backbone.encoder.layers:
                handles += [block.register_forward_hook(hook) for block in stage.blocks]
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def _decode(self, stage_features: list[torch.Tensor], pixel_values: torch.Tensor, **kwargs):
        """The depth decoder on the stage maps (the multiscale decoder also gets the input for its image branch)."""
        if isinstance(self.decoder, MeSaMultiScaleDecoder):
            kwargs["pixel_values"] = pixel_values
        return self.decoder(stage_features, **kwargs)

    def encode(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...] | None]:
        """Run the Swin-V2 encoder on a stride-padded batch.

        Returns the four stage maps (B, C_i, h_i, w_i) (the last one after `encoder_norm`) and, when asked, the
        hidden states: the patch-embedding output followed by every block's output, each (B, C, h, w).
        `bool_masked_pos` (B, num_patches) replaces masked patch embeddings by `backbone.embeddings.mask_token`.
        """
        embeddings, dimensions = self.backbone.embeddings(pixel_values, bool_masked_pos=bool_masked_pos)
        with self._capture_block_outputs(output_hidden_states) as block_outputs:
            encoder_outputs = self.backbone.encoder(
                embeddings,
                dimensions,
                output_hidden_states=True,
                output_hidden_states_before_downsampling=True,
                return_dict=True,
            )
        stage_features = list(encoder_outputs.reshaped_hidden_states[1:])
        last = stage_features[-1]
        stage_features[-1] = self.encoder_norm(last.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        hidden_states = None
        if output_hidden_states:
            hidden_states = (encoder_outputs.reshaped_hidden_states[0], *block_outputs)
        return stage_features, hidden_states


class MeSaForDepthEstimation(MeSaPreTrainedModel):
    """MeSa monocular depth model: Swin-V2 encoder + depth decoder + ``sigmoid * max_depth`` head (or Monodepth2's
    disparity mapping, `config.depth_head_output`).

    `forward(pixel_values (B, 3, H, W), labels (B, H, W) metres or None)` returns a `DepthEstimatorOutput` with
    `predicted_depth` (B, H, W) in metres at the input size (any H, W: padded inside, cropped back) and, with
    labels, the SiLog loss over valid pixels (labels > 0 and finite).
    """

    def __init__(self, config: MeSaConfig):
        super().__init__(config)
        self._build_encoder(config)
        self.decoder = MeSaDepthDecoder(config) if config.decoder_type == "mim" else MeSaMultiScaleDecoder(config)
        self.depth_head = MeSaDepthHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DepthEstimatorOutput | tuple:
        output_hidden_states, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        self._check_pixel_values(pixel_values)
        height, width = pixel_values.shape[-2:]
        padded = self._pad_to_stride(pixel_values)
        stage_features, hidden_states = self.encode(padded, output_hidden_states=output_hidden_states)
        predicted_depth = self.depth_head(self._decode(stage_features, padded))[:, :height, :width]

        loss = None
        if labels is not None:
            if labels.ndim == 4 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.shape != predicted_depth.shape:
                raise ValueError(
                    f"labels must be (batch, height, width) depth in metres matching pixel_values; got "
                    f"{tuple(labels.shape)} for predictions of shape {tuple(predicted_depth.shape)}"
                )
            loss = silog_loss(predicted_depth, labels.to(predicted_depth.dtype), lambd=self.config.silog_lambda)

        if not return_dict:
            output = (predicted_depth,) + ((hidden_states,) if output_hidden_states else ())
            return ((loss,) + output) if loss is not None else output
        return DepthEstimatorOutput(loss=loss, predicted_depth=predicted_depth, hidden_states=hidden_states)


class MeSaForMaskedImageModeling(MeSaPreTrainedModel):
    """The masked objective (SimMIM) on the MeSa encoder.

    Masked patch embeddings are replaced by a learned mask token (`backbone.embeddings.mask_token`, zero-initialised
    as in transformers' Swin-V2); a 1x1 conv to ``encoder_stride**2 * 3`` channels + PixelShuffle(encoder_stride)
    reconstructs the image from the stage-4 features; the loss is L1 over masked pixels (`simmim_loss`), optionally
    against per-patch normalised targets (`config.norm_target`). Inputs: `pixel_values` (B, 3, H, W) with H, W
    multiples of `config.mask_patch_size` and of the encoder stride; `bool_masked_pos` (B, H/4 * W/4) on the
    model-patch grid, True = masked.
    """

    def __init__(self, config: MeSaConfig):
        super().__init__(config)
        self._build_encoder(config)
        self.backbone.embeddings.mask_token = nn.Parameter(torch.zeros(1, 1, config.backbone_config.embed_dim))
        stride = config.encoder_stride
        self.mim_decoder = nn.Sequential(
            nn.Conv2d(config.stage_channels[-1], stride**2 * config.backbone_config.num_channels, kernel_size=1),
            nn.PixelShuffle(stride),
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedImageModelingOutput | tuple:
        output_hidden_states, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        self._check_pixel_values(pixel_values)
        batch, _, height, width = pixel_values.shape
        multiple = math.lcm(self.config.mask_patch_size, self.config.encoder_stride)
        if height % multiple or width % multiple:
            raise ValueError(
                f"pixel_values height and width must be multiples of {multiple} (mask patch size and encoder stride)"
                f" for masked image modelling, got {height}x{width}"
            )
        patch = self.config.patch_size
        if bool_masked_pos is not None:
            bool_masked_pos = bool_masked_pos.reshape(batch, -1)
            if bool_masked_pos.shape[1] != (height // patch) * (width // patch):
                raise ValueError(
                    f"bool_masked_pos must have (height/{patch}) * (width/{patch}) = "
                    f"{(height // patch) * (width // patch)} entries per image, got {bool_masked_pos.shape[1]}"
                )
        stage_features, hidden_states = self.encode(
            pixel_values, bool_masked_pos=bool_masked_pos, output_hidden_states=output_hidden_states
        )
        reconstruction = self.mim_decoder(stage_features[-1])

        loss = None
        if bool_masked_pos is not None:
            pixel_mask = mask_to_pixel_mask(bool_masked_pos, patch, height, width)
            target = (
                norm_targets(pixel_values, self.config.norm_target_patch_size)
                if self.config.norm_target
                else pixel_values
            )
            loss = simmim_loss(target, reconstruction, pixel_mask)

        if not return_dict:
            output = (reconstruction,) + ((hidden_states,) if output_hidden_states else ())
            return ((loss,) + output) if loss is not None else output
        return MaskedImageModelingOutput(loss=loss, reconstruction=reconstruction, hidden_states=hidden_states)


@dataclass
class MeSaSelfSupervisedOutput(ModelOutput):
    """Output of `MeSaForSelfSupervisedDepth`.

    loss: scalar, photometric reprojection + edge-aware smoothness averaged over scales.
    predicted_depth: (B, H, W) metres at full resolution.
    poses: (B, S, 4, 4) target->source transforms used for warping (from the dataset or the pose network).
    auto_mask: (B, 1, H, W) bool, pixels where a warped source beat the unwarped ones (full scale).
    depth_scale: (B,) the factor the photometric loss rescaled each image's depth by (`config.depth_scale_search`;
        None without it).
    hidden_states: as `MeSaForDepthEstimation`.
    """

    loss: torch.Tensor | None = None
    predicted_depth: torch.Tensor | None = None
    poses: torch.Tensor | None = None
    auto_mask: torch.Tensor | None = None
    depth_scale: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class MeSaPoseNetwork(nn.Module):
    """Monodepth2's pose network on transformers' ResNet: two frames (6 channels, temporal order) -> 4x4 motion.

    A ResNet encoder, Monodepth2's pose decoder (1x1 squeeze, two 3x3 convs, 1x1 to 6), a spatial mean, then
    axis-angle and translation scaled by `pose_rotation_scale` / `pose_translation_scale`.
    """

    def __init__(self, config: MeSaConfig):
        super().__init__()
        self.encoder = ResNetModel(
            ResNetConfig(
                num_channels=2 * config.backbone_config.num_channels,
                embedding_size=config.pose_embedding_size,
                hidden_sizes=list(config.pose_hidden_sizes),
                depths=list(config.pose_depths),
                layer_type="basic",
            )
        )
        channels = config.pose_hidden_sizes[-1]
        self.decoder = nn.Sequential(
            nn.Conv2d(channels, 256, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 6, kernel_size=1),
        )
        self.rotation_scale = config.pose_rotation_scale
        self.translation_scale = config.pose_translation_scale

    def forward(self, earlier: torch.Tensor, later: torch.Tensor, invert: bool) -> torch.Tensor:
        """(B, 3, H, W) frames in temporal order -> (B, 4, 4); `invert` gives the later-to-earlier motion."""
        features = self.encoder(torch.cat([earlier, later], dim=1)).last_hidden_state
        motion = self.decoder(features).mean(dim=(2, 3))
        axisangle = motion[:, :3] * self.rotation_scale
        translation = motion[:, 3:] * self.translation_scale
        return pose_vec_to_matrix(axisangle, translation, invert=invert)


def _to_image_size(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """`depth` (B, 1, h, w) bilinearly resized to `image`'s (H, W) (unchanged when it is already that size)."""
    if depth.shape[-2:] == image.shape[-2:]:
        return depth
    return F.interpolate(depth, size=image.shape[-2:], mode="bilinear", align_corners=False)


def reprojection_errors(
    depth: torch.Tensor,
    target_image: torch.Tensor,
    source_images: torch.Tensor,
    poses: torch.Tensor,
    intrinsics: torch.Tensor,
    ssim_weight: float,
) -> torch.Tensor:
    """Photometric error (B, S, H, W) of each source (`source_images` (B, S, 3, H, W) in [0, 1], `poses` (B, S, 4, 4)
    target->source) warped into `target_image` (B, 3, H, W) with `depth` (B, 1, H, W) metres and `intrinsics`."""
    return torch.cat(
        [
            photometric_error(
                warp_frame(source_images[:, j], depth, poses[:, j], intrinsics)[0], target_image, ssim_weight
            )
            for j in range(poses.shape[1])
        ],
        dim=1,
    )


def self_supervised_scale_loss(
    scale_depth: torch.Tensor,
    target_image: torch.Tensor,
    source_images: torch.Tensor,
    poses: torch.Tensor,
    intrinsics: torch.Tensor,
    identity_errors: torch.Tensor | None,
    ssim_weight: float,
    smoothness_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale of the geometric objective (Monodepth2): per-pixel minimum reprojection with auto-masking plus
    edge-aware smoothness of the disparity.

    `scale_depth` (B, 1, h, w) metres is upsampled to the images' (H, W) for warping; every source
    (`source_images` (B, S, 3, H, W) in [0, 1], `poses` (B, S, 4, 4) target->source, `intrinsics` (B, 3, 3)) is
    warped into `target_image` (B, 3, H, W); `identity_errors` (B, S, H, W) are the unwarped sources' errors (None:
    no auto-masking). The smoothness of ``1 / scale_depth`` against the target at (h, w) is weighted by
    `smoothness_weight` (the caller's ``smoothness_weight / 2**scale``). Returns ``(loss, auto_mask (B, 1, H, W))``.
    """
    height, width = target_image.shape[-2:]
    full_depth = _to_image_size(scale_depth, target_image)
    reprojection = reprojection_errors(full_depth, target_image, source_images, poses, intrinsics, ssim_weight)
    per_pixel, auto_mask = min_reprojection_loss(reprojection, identity_errors)
    image = target_image
    if scale_depth.shape[-2:] != (height, width):
        image = F.interpolate(target_image, size=scale_depth.shape[-2:], mode="bilinear", align_corners=False)
    smoothness = edge_aware_smoothness(1.0 / scale_depth, image)
    return per_pixel.mean() + smoothness_weight * smoothness, auto_mask


@torch.no_grad()
def photometric_depth_scale(
    depth: torch.Tensor,
    target_image: torch.Tensor,
    source_images: torch.Tensor,
    poses: torch.Tensor,
    intrinsics: torch.Tensor,
    identity_errors: torch.Tensor | None,
    ssim_weight: float,
    scale_range: tuple[float, float] = (0.5, 2.0),
    coarse_steps: int = 7,
    fine_steps: int = 5,
) -> torch.Tensor:
    """The factor (B,) that, multiplying each image's `depth` (B, 1, h, w) metres, gives the lowest mean photometric
    loss of `self_supervised_scale_loss` (minimum reprojection with auto-masking, no smoothness; inputs as there).

    A coarse-to-fine search without gradient: `coarse_steps` factors spaced geometrically over `scale_range`, then
    `fine_steps` over one coarse step around the best. With known (metric) poses the photometric loss only sees
    structure near the right scale (about ±20 %): a network that cannot yet tell each room's scale gets the structure
    signal at the best scale instead (the depth-factorisation idea of MonoIndoor, docs/training.md).
    """
    low, high = scale_range
    if not 0 < low < 1 < high or coarse_steps < 2 or fine_steps < 1:
        raise ValueError(f"need 0 < low < 1 < high and coarse_steps >= 2, got {scale_range}, {coarse_steps}")
    depth = _to_image_size(depth, target_image)
    batch = depth.shape[0]

    def errors_of(factors: torch.Tensor) -> torch.Tensor:  # (B, K) factors -> (B, K) mean per-image losses
        columns = []
        for k in range(factors.shape[1]):
            scaled = depth * factors[:, k].view(batch, 1, 1, 1)
            reprojection = reprojection_errors(scaled, target_image, source_images, poses, intrinsics, ssim_weight)
            columns.append(min_reprojection_loss(reprojection, identity_errors)[0].flatten(1).mean(1))
        return torch.stack(columns, dim=1)

    log_low, log_high = math.log(low), math.log(high)
    step = (log_high - log_low) / (coarse_steps - 1)
    coarse = torch.linspace(log_low, log_high, coarse_steps, device=depth.device).exp().expand(batch, -1)
    best = coarse.gather(1, errors_of(coarse).argmin(1, keepdim=True))
    if fine_steps == 1:
        return best[:, 0]
    fine = best * torch.linspace(-step / 2, step / 2, fine_steps, device=depth.device).exp()[None]
    return fine.gather(1, errors_of(fine).argmin(1, keepdim=True))[:, 0]


class MeSaForSelfSupervisedDepth(MeSaPreTrainedModel):
    """The geometric objective: self-supervised depth from video (Monodepth2-style) on the MeSa depth network.

    The depth network has the attributes and parameter names of `MeSaForDepthEstimation` (`backbone`,
    `encoder_norm`, `decoder`, `depth_head`), so the next stage carries encoder and decoder; `scale_heads` (depth at
    strides 4, 8, 16 for the multi-scale loss) and `pose_network` are this stage's own.

    Camera motion comes from the pose network (`config.pose_source="network"`) or from the batch's `poses`
    (`"dataset"`: datasets that know their camera poses). For each scale, depth is upsampled to full resolution,
    every source frame is warped into the target, and the loss is the per-pixel minimum photometric error
    (0.85 SSIM + 0.15 L1) with auto-masking, plus edge-aware smoothness of mean-normalised disparity weighted
    `smoothness_weight / 2**scale`; averaged over scales.

    Inputs: `pixel_values` (B, 3, H, W) and `source_pixel_values` (B, S, 3, H, W) normalised network inputs;
    `target_image` (B, 3, H, W) and `source_images` (B, S, 3, H, W) in [0, 1] for the photometric loss;
    `intrinsics` (B, 3, 3) pixels; `poses` (B, S, 4, 4) target->source transforms (required for "dataset").
    S must equal `len(config.frame_offsets)`; H and W must be multiples of the encoder stride.
    """

    def __init__(self, config: MeSaConfig):
        super().__init__(config)
        self._build_encoder(config)
        self.decoder = MeSaDepthDecoder(config) if config.decoder_type == "mim" else MeSaMultiScaleDecoder(config)
        self.depth_head = MeSaDepthHead(config)
        scale_channels = self.decoder.intermediate_channels[: max(config.num_scales - 1, 0)]
        self.scale_heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=3, padding=1) for c in scale_channels)
        self.pose_network = MeSaPoseNetwork(config) if config.pose_source == "network" else None
        self.post_init()

    def _check_video_inputs(self, pixel_values, source_pixel_values, target_image, source_images, intrinsics, poses):
        batch, _, height, width = pixel_values.shape
        num_sources = len(self.config.frame_offsets)
        expected = {
            "source_pixel_values": (source_pixel_values, (batch, num_sources, 3, height, width)),
            "target_image": (target_image, (batch, 3, height, width)),
            "source_images": (source_images, (batch, num_sources, 3, height, width)),
            "intrinsics": (intrinsics, (batch, 3, 3)),
        }
        if self.config.pose_source == "dataset" or poses is not None:
            expected["poses"] = (poses, (batch, num_sources, 4, 4))
        for name, (tensor, shape) in expected.items():
            if tensor is None:
                raise ValueError(f"MeSaForSelfSupervisedDepth needs `{name}` of shape {shape}")
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"`{name}` must have shape {shape} (S = len(frame_offsets)), got {tuple(tensor.shape)}"
                )
        stride = self.config.encoder_stride
        if height % stride or width % stride:
            raise ValueError(f"height and width must be multiples of {stride} for the geometric objective")

    def predict_poses(self, pixel_values: torch.Tensor, source_pixel_values: torch.Tensor) -> torch.Tensor:
        """Target->source transforms (B, S, 4, 4) from the pose network, frames fed in temporal order."""
        poses = []
        for index, offset in enumerate(self.config.frame_offsets):
            source = source_pixel_values[:, index]
            if offset < 0:
                poses.append(self.pose_network(source, pixel_values, invert=True))
            else:
                poses.append(self.pose_network(pixel_values, source, invert=False))
        return torch.stack(poses, dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        source_pixel_values: torch.Tensor | None = None,
        target_image: torch.Tensor | None = None,
        source_images: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        poses: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MeSaSelfSupervisedOutput | tuple:
        output_hidden_states, return_dict = self._output_flags(None, output_hidden_states, return_dict)
        self._check_pixel_values(pixel_values)
        stage_features, hidden_states = self.encode(pixel_values, output_hidden_states=output_hidden_states)
        hidden, intermediate = self._decode(stage_features, pixel_values, return_intermediate=True)
        depth = self.depth_head(hidden)
        if source_pixel_values is None and target_image is None:  # depth only (inference)
            output = MeSaSelfSupervisedOutput(predicted_depth=depth, hidden_states=hidden_states)
            return output if return_dict else output.to_tuple()

        self._check_video_inputs(pixel_values, source_pixel_values, target_image, source_images, intrinsics, poses)
        if self.config.pose_source == "network":
            poses = self.predict_poses(pixel_values, source_pixel_values)
        scale_depths = [depth[:, None]] + [
            logits_to_depth(head(feature), self.config) for head, feature in zip(self.scale_heads, intermediate)
        ]
        identity = torch.cat(
            [
                photometric_error(source_images[:, j], target_image, self.config.ssim_weight)
                for j in range(poses.shape[1])
            ],
            dim=1,
        )
        depth_scale, scale_pull = None, None
        if self.config.depth_scale_search:
            depth_scale = photometric_depth_scale(
                depth[:, None].detach(), target_image, source_images, poses, intrinsics, identity,
                self.config.ssim_weight,
            )  # fmt: skip
            log_factor = depth_scale.log().view(-1, 1, 1, 1)
            # each scale's depth moves towards the found scale (the squared log-ratio); the loss sees the rescaled one
            scale_pull = torch.stack(
                [(d.log() - (d.detach().log() + log_factor)).pow(2).mean() for d in scale_depths]
            ).mean()
            scale_depths = [d * log_factor.exp() for d in scale_depths]
        losses, auto_mask = [], None
        for scale, scale_depth in enumerate(scale_depths):
            scale_loss, mask = self_supervised_scale_loss(
                scale_depth,
                target_image,
                source_images,
                poses,
                intrinsics,
                identity,
                self.config.ssim_weight,
                self.config.smoothness_weight / 2**scale,
            )
            if scale == 0:
                auto_mask = mask
            losses.append(scale_loss)
        loss = torch.stack(losses).mean()
        if scale_pull is not None:
            loss = loss + self.config.depth_scale_weight * scale_pull
        output = MeSaSelfSupervisedOutput(
            loss=loss,
            predicted_depth=depth,
            poses=poses,
            auto_mask=auto_mask,
            depth_scale=depth_scale,
            hidden_states=hidden_states,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "MeSaDepthDecoder",
    "MeSaForDepthEstimation",
    "MeSaForMaskedImageModeling",
    "MeSaForSelfSupervisedDepth",
    "MeSaMultiScaleDecoder",
    "MeSaPoseNetwork",
    "MeSaPreTrainedModel",
    "MeSaSelfSupervisedOutput",
    "photometric_depth_scale",
    "reprojection_errors",
    "self_supervised_scale_loss",
]

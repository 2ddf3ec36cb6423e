"""MeSa models: transformers' Swin-V2 encoder with the MIM-Depth (or a multi-scale) depth decoder.

This file is copied next to checkpoints written for sharing (``trust_remote_code``), so it imports only torch,
transformers and sibling modules of this folder.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.modeling_outputs import DepthEstimatorOutput

from .configuration_mesa import MeSaConfig
from .losses import silog_loss


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

    def forward(self, stage_features: list[torch.Tensor]) -> torch.Tensor:
        hidden = self.conv_layers(self.deconv_layers(stage_features[-1]))
        # MIM-Depth upsamples with two successive bilinear x2 steps (not one x4)
        for _ in range(int(math.log2(self.upsample_factor))):
            hidden = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False)
        return hidden


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

    def forward(self, stage_features: list[torch.Tensor]) -> torch.Tensor:
        fused = self.lateral_convs[-1](stage_features[-1])
        for level in range(len(stage_features) - 2, -1, -1):
            lateral = self.lateral_convs[level](stage_features[level])
            fused = F.interpolate(fused, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
            fused = self.fuse_convs[level](fused)
        hidden = self.conv_layers(fused)
        return F.interpolate(hidden, scale_factor=self.upsample_factor, mode="bilinear", align_corners=False)


class MeSaDepthHead(nn.Module):
    """conv3x3 - ReLU - conv3x3 to one channel, then ``sigmoid * max_depth``: (B, hidden, H, W) -> (B, H, W) metres.

    The result is clamped below at `min_depth`: a saturated sigmoid would otherwise give exactly 0 m in float32.
    """

    def __init__(self, config: MeSaConfig):
        super().__init__()
        hidden = config.decoder_hidden_size or config.backbone_config.embed_dim
        self.conv1 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1)
        self.activation = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden, 1, kernel_size=3, padding=1)
        self.max_depth = config.max_depth
        self.min_depth = config.min_depth

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.conv2(self.activation(self.conv1(hidden)))
        return (torch.sigmoid(logits).squeeze(1) * self.max_depth).clamp_min(self.min_depth)


class MeSaPreTrainedModel(PreTrainedModel):
    """Base class: the Swin-V2 encoder every MeSa objective shares, held as `backbone` (+ `encoder_norm`).

    `backbone` has the parameter names of transformers' `Swinv2Backbone`, so its state dict loads into a stock
    `Swinv2Backbone` and back, and `NextStage.from_pretrained(previous_stage_dir)` carries the encoder.
    """

    config: MeSaConfig
    config_class = MeSaConfig
    base_model_prefix = "mesa"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["Swinv2Stage"]

    def _build_encoder(self, config: MeSaConfig) -> None:
        self.backbone = load_backbone(config)
        # The reference encoder ends with a LayerNorm on the last stage; transformers' backbone returns raw stages.
        self.encoder_norm = nn.LayerNorm(config.stage_channels[-1], eps=config.backbone_config.layer_norm_eps)
        if config.window_attention == "sdpa":
            raise NotImplementedError("window_attention='sdpa' is not available yet; use 'eager'")

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
    """MeSa monocular depth model: Swin-V2 encoder + depth decoder + ``sigmoid * max_depth`` head.

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
        if output_attentions:
            raise ValueError("MeSaForDepthEstimation does not return attention maps")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        self._check_pixel_values(pixel_values)
        height, width = pixel_values.shape[-2:]
        stage_features, hidden_states = self.encode(
            self._pad_to_stride(pixel_values), output_hidden_states=output_hidden_states
        )
        predicted_depth = self.depth_head(self.decoder(stage_features))[:, :height, :width]

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


__all__ = ["MeSaDepthDecoder", "MeSaForDepthEstimation", "MeSaMultiScaleDecoder", "MeSaPreTrainedModel"]

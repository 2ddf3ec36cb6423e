"""Convert released SimMIM Swin-V2 and MIM-Depth-Estimation checkpoints into MeSa checkpoints.

Two source layouts are understood, both from the original Swin-V2 implementation:

- **SimMIM** (microsoft/Swin-Transformer ``models/swin_transformer_v2.py`` + ``models/simmim.py``): the encoder under
  ``encoder.`` (``patch_embed``, ``layers.{i}.blocks.{j}`` with ``attn.cpb_mlp``, ``attn.q_bias``/``v_bias``,
  ``layers.{i}.downsample`` at the end of stage i, a final ``norm``, ``mask_token``), the reconstruction head as
  ``decoder.0`` (1x1 conv before a pixel shuffle). Layer norms use eps 1e-5. SimMIM checkpoints written by the
  MIM-Depth-style code name the MLP ``rpe_mlp`` and use eps 1e-6: the MLP's name selects the epsilon.
- **MIM-Depth** (SwinTransformer/MIM-Depth-Estimation ``models/model.py``): the same encoder with ``attn.rpe_mlp``,
  a final ``norm3`` and eps 1e-6 everywhere (``LayerNormFP32``), plus ``decoder.deconv_layers``,
  ``decoder.conv_layers`` and ``last_layer_depth.{0,2}``.

Both map onto transformers' ``Swinv2Backbone`` inside MeSa (``backbone.*``), the final norm onto ``encoder_norm``,
MIM-Depth's decoder onto ``decoder``/``depth_head`` and SimMIM's head onto ``mim_decoder``. The architecture is read
from the tensors (embedding width, depths, heads, MLP ratio, per-stage windows and pretrained windows); the input
size is chosen so that transformers' per-stage windows (``min(stage resolution, window)``) equal the checkpoint's.
"""

from __future__ import annotations

import argparse
import pickle
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .configuration_mesa import MeSaConfig
from .image_processing_mesa import MeSaImageProcessor
from .modeling_mesa import MeSaForDepthEstimation, MeSaForMaskedImageModeling, MeSaPreTrainedModel

CONVERSION_KINDS = ("simmim", "mim-depth")
# Buffers the original implementation stores but transformers recomputes (non-persistent there): never loaded.
IGNORED_BUFFERS = ("relative_coords_table", "relative_position_index", "attn_mask")
# Layer-norm epsilon of each source implementation, told apart by the name of the position-bias MLP:
# microsoft/Swin-Transformer (cpb_mlp) uses nn.LayerNorm (1e-5); the MIM-Depth-style code (rpe_mlp) LayerNormFP32(1e-6).
LAYER_NORM_EPS = {"cpb_mlp": 1e-5, "rpe_mlp": 1e-6}
_WRAPPER_KEYS = ("model", "state_dict", "module")
_PREFIXES = ("module.", "model.")


# ------------------------------------------------------------------------------------------------ reading


class _StandIn:
    """Replaces any pickled non-torch object (configs, namespaces) while a checkpoint is read; keeps nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _StandIn:
        return _StandIn()

    @classmethod
    def _new(cls, *args: Any, **kwargs: Any) -> _StandIn:
        return cls()


_SAFE_BUILTINS = {"set", "frozenset", "slice", "complex", "range", "bytearray", "dict", "list", "tuple", "object"}


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Resolves torch (tensor rebuilding), collections.OrderedDict and plain builtins; every other global is a
    stand-in class, so reading a checkpoint never imports or runs code named by the file."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch."):
            return super().find_class(module, name)
        if (module, name) in {("collections", "OrderedDict"), ("collections", "defaultdict")}:
            return super().find_class(module, name)
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if name in {"__reduce__", "_reconstructor"} or module == "copyreg":
            return _StandIn._new
        return _StandIn


_tensors_only_pickle = types.SimpleNamespace(
    Unpickler=_TensorsOnlyUnpickler, load=pickle.load, loads=pickle.loads, __name__="pickle"
)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (`.pth`/`.pt`/`.ckpt`/`.bin` via torch.load, `.safetensors`) into a flat state dict.

    Unwraps ``{"model": ...}``, ``{"state_dict": ...}`` and ``{"module": ...}`` and strips a leading ``module.``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return unwrap_state_dict(load_file(str(path)), source=str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "weights_only" not in str(error) and "Weights only" not in str(error):
            raise ValueError(f"{path}: cannot read checkpoint: {error}") from error
        # Training checkpoints also pickle configs (yacs CfgNode, argparse Namespace, ...): read them with stand-ins
        # for every non-torch class, so nothing from the file is imported or run and no extra package is needed.
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_tensors_only_pickle)
        except Exception as inner:
            raise ValueError(f"{path}: cannot read checkpoint: {inner}") from inner
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a (possibly wrapped) state dict, with DDP/Lightning ``module.``/``model.`` prefixes removed."""
    for _ in range(3):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if not isinstance(obj, dict) or inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{source}: no state dict found (expected tensors, or one under 'model', 'state_dict' or 'module'); "
            f"top-level entries: {keys}"
        )
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def split_encoder(state: dict[str, torch.Tensor], source: str = "checkpoint") -> tuple[dict, dict]:
    """Split into (encoder tensors without their ``encoder.``/``backbone.`` prefix, everything else).

    A bare encoder state dict (keys start with ``patch_embed.``) is returned whole as the encoder.
    """
    for prefix in ("encoder.", "backbone.", ""):
        if f"{prefix}patch_embed.proj.weight" in state:
            if not prefix:
                return dict(state), {}
            encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
            return encoder, rest
    if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in state):
        raise ValueError(f"{source}: this is already a transformers Swin-V2 / MeSa state dict; load it directly")
    raise ValueError(
        f"{source}: unknown key layout: no Swin-V2 'patch_embed.proj.weight' (bare or under 'encoder.' / "
        f"'backbone.'); first keys: {sorted(state)[:6]}"
    )


# ------------------------------------------------------------------------------------------------ architecture


@dataclass
class SwinV2Architecture:
    """What a Swin-V2 encoder state dict says about its shape; windows are the per-stage effective windows."""

    embed_dim: int
    patch_size: int
    num_channels: int
    depths: list[int]
    num_heads: list[int]
    mlp_ratio: float
    qkv_bias: bool
    stage_windows: list[int] | None = None
    pretrained_window_sizes: list[int] | None = None
    final_norm: str = "norm"
    position_mlp: str = "cpb_mlp"
    notes: list[str] = field(default_factory=list)


def pretrained_window_from_table(table: torch.Tensor) -> int:
    """The pretrained window P a stored log-spaced relative-coordinate table (1, 2W-1, 2W-1, 2) was built with.

    The table's largest entry is log2(8 (W-1)/(P-1) + 1) / 3, so P = 8 (W-1) / (2^(3 v) - 1) + 1. Returns 0
    ("same as the window") for W = 1, where the table carries no information.
    """
    window = (table.shape[1] + 1) // 2
    if window == 1:
        return 0
    value = float(table[0, -1, -1, 0])
    if value <= 0:
        raise ValueError(f"relative_coords_table of window {window} has a non-positive corner value {value}")
    pretrained = 8 * (window - 1) / (2 ** (3 * value) - 1) + 1
    if abs(pretrained - round(pretrained)) > 1e-2:
        raise ValueError(
            f"relative_coords_table of window {window} is not a log-spaced table of an integer pretrained window "
            f"(got {pretrained:.3f}): an unsupported relative_coords_table_type"
        )
    return round(pretrained)


def infer_swinv2_architecture(encoder: dict[str, torch.Tensor]) -> SwinV2Architecture:
    """Read embedding width, patch size, depths, heads, MLP ratio, windows and pretrained windows from the tensors."""
    proj = encoder["patch_embed.proj.weight"]
    embed_dim, num_channels, patch_size = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    if "layers.0.blocks.0.attn.relative_position_bias_table" in encoder:
        raise ValueError("this is a Swin-V1 checkpoint (relative_position_bias_table); MeSa needs Swin-V2")
    block_pattern = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
    blocks: dict[int, set[int]] = {}
    for key in encoder:
        match = block_pattern.match(key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise ValueError(f"cannot read the stages from the encoder keys (found stage indices {sorted(blocks)})")
    depths = [max(blocks[i]) + 1 for i in range(len(blocks))]
    num_heads, windows, pretrained = [], [], []
    for stage, depth in enumerate(depths):
        prefix = f"layers.{stage}.blocks.0.attn."
        if prefix + "logit_scale" not in encoder:
            raise ValueError(f"no {prefix}logit_scale: only cosine-attention Swin-V2 checkpoints are supported")
        num_heads.append(int(encoder[prefix + "logit_scale"].shape[0]))
        tables = [encoder.get(f"layers.{stage}.blocks.{j}.attn.relative_coords_table") for j in range(depth)]
        if tables[0] is not None:
            windows.append((int(tables[0].shape[1]) + 1) // 2)
            values = {pretrained_window_from_table(t) for t in tables if t is not None}
            if len(values) != 1:
                raise ValueError(f"stage {stage} blocks disagree on their pretrained window: {sorted(values)}")
            pretrained.append(values.pop())
    fc1 = encoder["layers.0.blocks.0.mlp.fc1.weight"]
    final_norm = "norm" if "norm.weight" in encoder else f"norm{len(depths) - 1}"
    if f"{final_norm}.weight" not in encoder:
        raise ValueError(f"no final layer norm ('norm' or '{final_norm}') in the encoder")
    return SwinV2Architecture(
        embed_dim=embed_dim,
        patch_size=patch_size,
        num_channels=num_channels,
        depths=depths,
        num_heads=num_heads,
        mlp_ratio=fc1.shape[0] / fc1.shape[1],
        qkv_bias="layers.0.blocks.0.attn.q_bias" in encoder,
        stage_windows=windows if len(windows) == len(depths) else None,
        pretrained_window_sizes=pretrained if len(pretrained) == len(depths) else None,
        final_norm=final_norm,
        position_mlp="rpe_mlp" if "layers.0.blocks.0.attn.rpe_mlp.0.weight" in encoder else "cpb_mlp",
    )


def geometry_for_windows(stage_windows: list[int], patch_size: int) -> tuple[int, int]:
    """(image_size, window_size) at which transformers' per-stage windows min(resolution_i, window) equal these.

    Stage i of an image of side S has resolution S / (patch * 2^i). E.g. [8, 8, 8, 4] -> (128, 8) and
    [30, 30, 30, 15] -> (480, 30) for patch 4. Shifted windows then run where the resolution exceeds the window.
    """
    window = max(stage_windows)
    smaller = [i for i, w in enumerate(stage_windows) if w < window]
    stage = smaller[0] if smaller else len(stage_windows) - 1
    image_size = stage_windows[stage] * patch_size * 2**stage
    resolutions = [image_size // (patch_size * 2**i) for i in range(len(stage_windows))]
    achieved = [min(r, window) for r in resolutions]
    if achieved != list(stage_windows):
        raise ValueError(
            f"no input size gives the checkpoint's per-stage windows {stage_windows} in transformers' Swin-V2 "
            f"(window {window} at {image_size}x{image_size} gives {achieved})"
        )
    return image_size, window


# ------------------------------------------------------------------------------------------------ key mapping

_BLOCK_RENAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.logit_scale": "attention.self.logit_scale",
    "attn.q_bias": "attention.self.query.bias",
    "attn.v_bias": "attention.self.value.bias",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


def convert_encoder_state_dict(encoder: dict[str, torch.Tensor], final_norm: str) -> tuple[dict, list[str]]:
    """Original Swin-V2 encoder keys -> MeSa keys (``backbone.*``, ``encoder_norm.*``).

    Returns (converted tensors, source keys that have no counterpart). ``qkv.weight`` is split into query, key and
    value; ``cpb_mlp``/``rpe_mlp`` become ``continuous_position_bias_mlp``; stored buffers are skipped.
    """
    converted: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    block_pattern = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)")
    for key, tensor in encoder.items():
        if key.rsplit(".", 1)[-1] in IGNORED_BUFFERS:
            continue
        if key.startswith("patch_embed.proj."):
            converted["backbone.embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = tensor
        elif key.startswith("patch_embed.norm."):
            converted["backbone.embeddings.norm." + key.rsplit(".", 1)[1]] = tensor
        elif key == "mask_token":
            converted["backbone.embeddings.mask_token"] = tensor
        elif key.startswith(final_norm + ".") and key.count(".") == 1:
            converted["encoder_norm." + key.rsplit(".", 1)[1]] = tensor
        elif re.fullmatch(r"layers\.\d+\.downsample\.(reduction|norm)\.(weight|bias)", key):
            converted["backbone.encoder." + key] = tensor
        elif match := block_pattern.fullmatch(key):
            stage, block, rest = match.groups()
            prefix = f"backbone.encoder.layers.{stage}.blocks.{block}."
            if rest == "attn.qkv.weight":
                query, key_, value = tensor.chunk(3, dim=0)
                converted[prefix + "attention.self.query.weight"] = query
                converted[prefix + "attention.self.key.weight"] = key_
                converted[prefix + "attention.self.value.weight"] = value
                continue
            cpb = re.fullmatch(r"attn\.(?:cpb_mlp|rpe_mlp)\.(\d+\.(?:weight|bias))", rest)
            if cpb:
                converted[prefix + "attention.self.continuous_position_bias_mlp." + cpb[1]] = tensor
                continue
            module, _, leaf = rest.rpartition(".")
            if module in _BLOCK_RENAMES:
                converted[prefix + _BLOCK_RENAMES[module] + "." + leaf] = tensor
            elif rest in _BLOCK_RENAMES:
                converted[prefix + _BLOCK_RENAMES[rest]] = tensor
            else:
                unused.append(key)
        else:
            unused.append(key)
    return converted, unused


def convert_mim_depth_head(rest: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """MIM-Depth's ``decoder.*`` and ``last_layer_depth.{0,2}`` -> MeSa ``decoder.*`` and ``depth_head.conv{1,2}``."""
    converted, unused = {}, []
    for key, tensor in rest.items():
        if re.fullmatch(r"decoder\.(deconv_layers|conv_layers)\.\d+\.\w+", key):
            converted[key] = tensor
        elif match := re.fullmatch(r"last_layer_depth\.([02])\.(weight|bias)", key):
            converted[f"depth_head.conv{1 if match[1] == '0' else 2}.{match[2]}"] = tensor
        else:
            unused.append(key)
    return converted, unused


def convert_simmim_head(rest: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """SimMIM's ``decoder.0`` (1x1 conv before the pixel shuffle) -> MeSa ``mim_decoder.0``."""
    converted, unused = {}, []
    for key, tensor in rest.items():
        if match := re.fullmatch(r"decoder\.0\.(weight|bias)", key):
            converted[f"mim_decoder.0.{match[1]}"] = tensor
        else:
            unused.append(key)
    return converted, unused


def _mim_depth_decoder_fields(head: dict[str, torch.Tensor]) -> dict[str, Any]:
    """num_deconv, num_filters, deconv_kernels and decoder_hidden_size read from converted decoder tensors."""
    deconvs = sorted(
        (int(m[1]), t) for k, t in head.items() if (m := re.fullmatch(r"decoder\.deconv_layers\.(\d+)\.weight", k))
    )
    deconvs = [t for index, t in deconvs if index % 3 == 0]
    if not deconvs or "decoder.conv_layers.0.weight" not in head or "depth_head.conv2.weight" not in head:
        raise ValueError(
            "no MIM-Depth decoder/head (decoder.deconv_layers.*, decoder.conv_layers.*, last_layer_depth.*) in the "
            "checkpoint; convert encoder-only (SimMIM) checkpoints with kind 'simmim'"
        )
    return {
        "num_deconv": len(deconvs),
        "num_filters": [int(t.shape[1]) for t in deconvs],
        "deconv_kernels": [int(t.shape[2]) for t in deconvs],
        "decoder_hidden_size": int(head["decoder.conv_layers.0.weight"].shape[0]),
    }


# ------------------------------------------------------------------------------------------------ building


def build_converted_config(
    kind: str,
    architecture: SwinV2Architecture,
    decoder_fields: dict[str, Any] | None = None,
    preset: str | None = None,
    image_size: int | None = None,
    window_size: int | None = None,
    layer_norm_eps: float | None = None,
    **overrides: Any,
) -> MeSaConfig:
    """The MeSaConfig of a converted checkpoint: the inferred architecture, or `preset` with the inferred geometry.

    `image_size`/`window_size` override the geometry read from the relative-coordinate tables (needed when the
    checkpoint does not store them); pretrained windows default to the checkpoint's windows. `layer_norm_eps`
    defaults to the source implementation's (1e-5 with ``cpb_mlp``, 1e-6 with ``rpe_mlp``).
    """
    if kind not in CONVERSION_KINDS:
        raise ValueError(f"kind must be one of {CONVERSION_KINDS}, got {kind!r}")
    eps = LAYER_NORM_EPS[architecture.position_mlp] if layer_norm_eps is None else layer_norm_eps
    geometry: dict[str, Any] = {"layer_norm_eps": eps}
    if architecture.stage_windows is not None:
        geometry["image_size"], geometry["window_size"] = geometry_for_windows(
            architecture.stage_windows, architecture.patch_size
        )
        geometry["pretrained_window_sizes"] = list(architecture.pretrained_window_sizes)
    elif image_size is None or window_size is None:
        raise ValueError(
            "the checkpoint stores no relative_coords_table buffers, so its windows are unknown: pass --image-size "
            "and --window-size (e.g. 192 and 12 for SimMIM pre-training, 480 and 30 for MIM-Depth NYUv2)"
        )
    if image_size is not None:
        geometry["image_size"] = image_size
    if window_size is not None:
        geometry["window_size"] = window_size
    if "pretrained_window_sizes" not in geometry:
        stage_sizes = [
            geometry["image_size"] // (architecture.patch_size * 2**i) for i in range(len(architecture.depths))
        ]
        geometry["pretrained_window_sizes"] = [min(s, geometry["window_size"]) for s in stage_sizes]
    decoder_fields = dict(decoder_fields or {})
    if preset is not None:
        return MeSaConfig.from_preset(preset, backbone_overrides=geometry, **decoder_fields, **overrides)
    if decoder_fields.get("decoder_hidden_size") == architecture.embed_dim:
        decoder_fields["decoder_hidden_size"] = None
    backbone = {
        "embed_dim": architecture.embed_dim,
        "patch_size": architecture.patch_size,
        "num_channels": architecture.num_channels,
        "depths": architecture.depths,
        "num_heads": architecture.num_heads,
        "mlp_ratio": architecture.mlp_ratio,
        "qkv_bias": architecture.qkv_bias,
        **geometry,
    }
    return MeSaConfig(backbone_config=backbone, decoder_type="mim", **decoder_fields, **overrides)


def set_layer_norm_eps(model: MeSaPreTrainedModel, eps: float) -> list[str]:
    """Set `eps` on every LayerNorm of the encoder (incl. the patch-embedding and patch-merging norms, which
    transformers builds with the 1e-5 default whatever `layer_norm_eps` says). Returns the modules changed."""
    changed = []
    for name, module in [*model.backbone.named_modules(prefix="backbone"), ("encoder_norm", model.encoder_norm)]:
        if isinstance(module, nn.LayerNorm) and module.eps != eps:
            module.eps = eps
            changed.append(name)
    return changed


def load_converted_state_dict(
    model: nn.Module, converted: dict[str, torch.Tensor], optional: tuple[str, ...] = (), what: str = "the model"
) -> list[str]:
    """Load strictly: every shape must match and every key must be used; keys starting with `optional` may be
    missing (they keep their initialisation; returned). Raises ValueError naming the differing parameters."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted]
    allowed_missing = [k for k in missing if k.startswith(optional) or k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in allowed_missing]
    unexpected = [k for k in converted if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in converted and converted[k].shape != expected[k].shape
    ]
    if shapes or missing or unexpected:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} parameter(s) differ in shape: " + "; ".join(_head(shapes)))
        if missing:
            parts.append(f"{len(missing)} missing from the checkpoint: " + ", ".join(_head(missing)))
        if unexpected:
            parts.append(f"{len(unexpected)} not in {what}: " + ", ".join(_head(unexpected)))
        raise ValueError(f"the checkpoint does not fit {what}: " + " | ".join(parts))
    with torch.no_grad():
        result = model.load_state_dict(
            {k: v.to(expected[k].dtype) for k, v in converted.items()}, strict=False, assign=False
        )
    if set(result.missing_keys) - set(allowed_missing) or result.unexpected_keys:
        raise RuntimeError(f"internal error loading converted weights: {result}")
    return allowed_missing


def _head(items: list[str], limit: int = 8) -> list[str]:
    return items[:limit] + ([f"... ({len(items) - limit} more)"] if len(items) > limit else [])


@dataclass
class ConversionResult:
    model: MeSaPreTrainedModel
    image_processor: MeSaImageProcessor
    architecture: SwinV2Architecture
    initialised: list[str]  # MeSa keys absent from the checkpoint (kept at their initialisation)
    skipped: list[str]  # source keys deliberately not loaded (stored buffers)


def convert_checkpoint(
    kind: str,
    checkpoint: str | Path | dict[str, torch.Tensor],
    preset: str | None = None,
    max_depth: float | None = None,
    image_size: int | None = None,
    window_size: int | None = None,
    layer_norm_eps: float | None = None,
    processor_size: tuple[int, int] | None = None,
) -> ConversionResult:
    """Convert a SimMIM (`kind="simmim"`) or MIM-Depth (`kind="mim-depth"`) checkpoint into a MeSa model (eval mode).

    `checkpoint`: a file path or an already loaded state dict. `preset`: check the weights against a MeSa preset
    (error naming the differing shapes) instead of inferring the architecture. `max_depth` (metres, MIM-Depth:
    10 for NYUv2, 80 for KITTI) is not stored in checkpoints. The image processor normalises with ImageNet
    mean/std for SimMIM and not at all for MIM-Depth (which feeds [0, 1] RGB).
    """
    if kind not in CONVERSION_KINDS:
        raise ValueError(f"kind must be one of {CONVERSION_KINDS}, got {kind!r}")
    source = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "state dict"
    state = load_state_dict_file(checkpoint) if isinstance(checkpoint, (str, Path)) else unwrap_state_dict(checkpoint)
    encoder, rest = split_encoder(state, source)
    architecture = infer_swinv2_architecture(encoder)
    converted, unused = convert_encoder_state_dict(encoder, architecture.final_norm)
    skipped = [k for k in encoder if k.rsplit(".", 1)[-1] in IGNORED_BUFFERS]
    overrides: dict[str, Any] = {} if max_depth is None else {"max_depth": float(max_depth)}
    if kind == "mim-depth":
        head, unused_head = convert_mim_depth_head(rest)
        decoder_fields = _mim_depth_decoder_fields(head)
        model_class, optional = MeSaForDepthEstimation, ()
    else:
        head, unused_head = convert_simmim_head(rest)
        decoder_fields = None
        model_class, optional = MeSaForMaskedImageModeling, ("mim_decoder.", "backbone.embeddings.mask_token")
    unused += unused_head
    if unused:
        raise ValueError(f"{source}: {len(unused)} key(s) have no MeSa counterpart: {', '.join(_head(unused))}")
    config = build_converted_config(
        kind,
        architecture,
        decoder_fields,
        preset,
        image_size=image_size,
        window_size=window_size,
        layer_norm_eps=layer_norm_eps,
        **overrides,
    )
    model = model_class(config).eval()
    what = f"preset {preset!r}" if preset else "the inferred architecture"
    try:
        initialised = load_converted_state_dict(model, {**converted, **head}, optional=optional, what=what)
    except ValueError as error:
        backbone = config.backbone_config
        raise ValueError(
            f"{source}: checkpoint has embed_dim {architecture.embed_dim}, depths {architecture.depths}, heads "
            f"{architecture.num_heads}; {what} has embed_dim {backbone.embed_dim}, depths {list(backbone.depths)}, "
            f"heads {list(backbone.num_heads)}. {error}"
        ) from error
    set_layer_norm_eps(model, config.backbone_config.layer_norm_eps)
    if kind == "mim-depth":
        size = processor_size or (480, 640)
        processor = MeSaImageProcessor(do_normalize=False, size={"height": size[0], "width": size[1]})
    else:
        side = config.backbone_config.image_size
        size = processor_size or (side, side)
        processor = MeSaImageProcessor(size={"height": size[0], "width": size[1]})
    return ConversionResult(model, processor, architecture, initialised, skipped)


def save_converted(result: ConversionResult, output_dir: str | Path, source: str = "") -> Path:
    """Write the converted model for sharing (safetensors, config, processor, modelling code, model card)."""
    from .hub import build_model_card, save_for_sharing

    masked = isinstance(result.model, MeSaForMaskedImageModeling)
    stage = {
        "name": "converted",
        "objective": "SimMIM (original Swin-V2 code)" if masked else "MIM-Depth supervised depth (original code)",
        "data": "as recorded for the source checkpoint",
        "steps": "-",
        "notes": f"weights converted by `mesa-hf convert` from {Path(source).name or 'a state dict'}",
    }
    card = build_model_card(
        result.model, model_id=Path(output_dir).name, image_processor=result.image_processor, stages=[stage]
    )
    return save_for_sharing(result.model, result.image_processor, output_dir, model_card=card)


# ------------------------------------------------------------------------------------------------ command line


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=CONVERSION_KINDS, help="source: SimMIM Swin-V2 or MIM-Depth-Estimation")
    parser.add_argument("checkpoint", type=Path, help=".pth / .ckpt / .safetensors file")
    parser.add_argument("output_dir", type=Path, help="folder for the MeSa checkpoint (written atomically)")
    parser.add_argument("--preset", default=None, help="check against a MeSa preset (tiny, base, large, ...)")
    parser.add_argument(
        "--max-depth", type=float, default=None, help="metres: 10 for NYUv2 (default), 80 for KITTI (MIM-Depth)"
    )
    parser.add_argument("--image-size", type=int, default=None, help="override the inferred input size")
    parser.add_argument("--window-size", type=int, default=None, help="override the inferred window size")
    parser.add_argument(
        "--layer-norm-eps",
        type=float,
        default=None,
        help="override the inferred epsilon (1e-5 for cpb_mlp / Swin-Transformer, 1e-6 for rpe_mlp / MIM-Depth code)",
    )
    parser.add_argument(
        "--processor-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="image processor resize target (default 480x640 for mim-depth, the model input size for simmim)",
    )


def run_convert(args: argparse.Namespace) -> int:
    result = convert_checkpoint(
        args.kind,
        args.checkpoint,
        preset=args.preset,
        max_depth=args.max_depth,
        image_size=args.image_size,
        window_size=args.window_size,
        layer_norm_eps=args.layer_norm_eps,
        processor_size=tuple(args.processor_size) if args.processor_size else None,
    )
    backbone = result.model.config.backbone_config
    architecture = result.architecture
    print(
        f"converted {args.kind} checkpoint {args.checkpoint}: embed_dim {backbone.embed_dim}, depths "
        f"{list(backbone.depths)}, heads {list(backbone.num_heads)}, input {backbone.image_size} window "
        f"{backbone.window_size} (stage windows {architecture.stage_windows}), pretrained windows "
        f"{list(backbone.pretrained_window_sizes)}, layer-norm eps {backbone.layer_norm_eps}"
    )
    if result.skipped:
        print(f"skipped {len(result.skipped)} stored buffers (relative_coords_table / relative_position_index)")
    if result.initialised:
        print(f"not in the checkpoint, left initialised: {', '.join(result.initialised)}")
    path = save_converted(result, args.output_dir, source=str(args.checkpoint))
    print(f"wrote {type(result.model).__name__} to {path}")
    return 0


__all__ = [
    "CONVERSION_KINDS",
    "ConversionResult",
    "SwinV2Architecture",
    "build_converted_config",
    "convert_checkpoint",
    "convert_encoder_state_dict",
    "geometry_for_windows",
    "infer_swinv2_architecture",
    "load_state_dict_file",
    "pretrained_window_from_table",
    "save_converted",
    "unwrap_state_dict",
]

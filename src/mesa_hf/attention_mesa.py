"""A fused window attention for transformers' Swin-V2 (`Swinv2Backbone`, `Swinv2Model`, ...).

`set_window_attention(model, "sdpa")` swaps, in place, every `Swinv2Layer` and `Swinv2SelfAttention` of a model for
subclasses whose forward runs the cosine window attention through `torch.nn.functional.scaled_dot_product_attention`;
`set_window_attention(model, "eager")` puts transformers' stock computation back. The swap changes the class of the
existing modules only: no parameter or buffer is added, renamed or reshaped, so state dicts stay interchangeable with
stock Swin-V2 checkpoints.

What the fused path does, per layer (the maths is the stock module's, see `Swinv2SelfAttention.forward`):

* one gather takes the tokens to padded, cyclically shifted windows (and one gather back crops and un-shifts),
  with the windows of a shifted layer grouped by which shift mask they need: interior windows need none, the last
  window row, the last window column and the corner window each need one pattern;
* q, k and v come from one matrix product with the three weights concatenated (cached when no gradient is needed);
* queries and keys are L2-normalised and the queries pre-scaled by the clamped exp logit scale, so that SDPA runs with
  `scale=1.0` and one float mask per window group: the continuous position bias `16 * sigmoid(cpb_mlp(table))`
  gathered by `relative_position_index`, plus the shift mask of that group;
* the bias and the group masks are cached while no gradient is needed (eval, `torch.no_grad`), keyed on the
  versions of the tensors they come from, so an optimizer step, `load_state_dict` or `.to()` invalidates them;
* on CPU with gradients, a custom op (`torch.library.custom_op`, one opaque op for torch.compile) runs the
  fused kernel forward and a chunked backward that also gives the bias gradient (the score gradient summed over
  windows); CPU SDPA would otherwise drop to its slow math path whenever the mask needs a gradient;
* under torch.compile (`torch.compiler.is_compiling()`) nothing is cached, the window plan is built in the graph
  from static-shape index arithmetic and padded query rows are computed: the fused encoder is one graph, no break.

On CUDA, whenever the mask needs a gradient, SDPA is pinned to the memory-efficient and math backends (cuDNN,
tried first on H100/H200, has no gradient for a float mask).

Attention dropout in training runs SDPA with `dropout_p`; `output_attentions=True` falls back to the stock
computation for that call. Both implementations compute the attention in float32 under fp16/bf16 autocast and with
half-precision weights (`cosine_attention_in_float32`).

This file is copied next to checkpoints shared with `trust_remote_code`: it imports only torch, transformers and the
standard library.
"""

from __future__ import annotations

import contextlib
import functools
import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.models.swinv2.modeling_swinv2 import Swinv2Layer, Swinv2SelfAttention

WINDOW_ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")

# transformers' Swinv2SelfAttention adds the layer's -100 shift mask to the scores twice (modeling_swinv2.py, the
# `attention_mask is not None` branch); the fused path matches the stock module, so checkpoints behave the same.
SHIFT_MASK_VALUE = -200.0
# Largest logit scale of Swin-V2's cosine attention (log(1 / 0.01) before the exponential).
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
# Elements of one score chunk ((window, head) pairs x N x N) in the CPU backward: 16 MiB in float32. Smaller chunks
# were no faster on one thread and far slower with several threads on a busy machine (one sync per small op).
_BACKWARD_CHUNK_ELEMENTS = 1 << 22

# SDPA backends that give the gradient of a float attention mask, in order (memory-efficient, then math)
_MASK_GRADIENT_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def set_window_attention(model: nn.Module, implementation: str) -> None:
    """Select the window attention of every Swin-V2 layer in `model`, in place.

    Args:
        model: any module holding transformers' Swin-V2 layers (`Swinv2Backbone`, `Swinv2Model`, a model around one).
        implementation: `"sdpa"` (fused, this module) or `"eager"` (transformers' stock computation, run in float32
            at any precision by `Float32Swinv2SelfAttention`).

    Raises:
        ValueError: unknown `implementation`, or `model` holds no `Swinv2Layer`.
    """
    if implementation not in WINDOW_ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"window attention implementation must be one of {WINDOW_ATTENTION_IMPLEMENTATIONS}, got {implementation!r}"
        )
    layers = [module for module in model.modules() if isinstance(module, Swinv2Layer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} holds no Swin-V2 layer (transformers' Swinv2Layer) to swap")
    for layer in layers:
        attention = layer.attention.self
        if implementation == "sdpa":
            layer.__class__ = SdpaSwinv2Layer
            attention.__class__ = SdpaSwinv2SelfAttention
        else:
            layer.__class__ = Swinv2Layer
            attention.__class__ = Float32Swinv2SelfAttention
        for module in (layer, attention):
            module.__dict__.pop("_mesa_cache", None)


def get_window_attention(model: nn.Module) -> str:
    """The implementation of the first Swin-V2 layer of `model`: `"sdpa"` or `"eager"`."""
    for module in model.modules():
        if isinstance(module, Swinv2Layer):
            return "sdpa" if isinstance(module, SdpaSwinv2Layer) else "eager"
    raise ValueError(f"{type(model).__name__} holds no Swin-V2 layer (transformers' Swinv2Layer)")


def _tensor_versions(tensors) -> tuple:
    """A key that changes when any tensor is replaced (`.to()`, `param.data = ...`) or updated in place."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def _cached(module: nn.Module, name: str, key, build):
    """One-entry cache per (module, name, autograd mode): returns build() and remembers it under `key()`.

    While torch.compile traces (`torch.compiler.is_compiling()`) nothing is cached: `build()` goes into the graph
    (the key reads data pointers and tensor versions, and inference mode cannot be queried inside a graph).
    """
    if torch.compiler.is_compiling():
        return build()
    name, key = _mode_name(name), key()
    cache = module.__dict__.setdefault("_mesa_cache", {})
    entry = cache.get(name)
    if entry is not None and entry[0] == key:
        return entry[1]
    value = build()
    cache[name] = (key, value)
    return value


def _mode_name(name: str) -> str:
    """Cache entry name per autograd mode (`name` outside inference mode, `name/inference` inside)."""
    return f"{name}/inference" if torch.is_inference_mode_enabled() else name


def shift_mask_patterns(window_size: int, shift_size: int, device=None) -> torch.Tensor:
    """The shift masks of the window groups of a shifted Swin layer, shape (4, N, N) with N = window_size**2.

    Group 0: interior windows (all zeros); 1: last window column; 2: last window row; 3: the corner window. Within the
    last window of an axis, the first `window_size - shift_size` positions belong to one image region and the rest to
    the region that wrapped around; tokens of different regions get `SHIFT_MASK_VALUE`.
    """
    position = torch.arange(window_size, device=device)
    wrapped = (position >= window_size - shift_size).long() + 1
    masks = []
    for last_row, last_col in ((False, False), (False, True), (True, False), (True, True)):
        rows = wrapped if last_row else torch.zeros_like(wrapped)
        cols = wrapped if last_col else torch.zeros_like(wrapped)
        label = (rows[:, None] * 3 + cols[None, :]).reshape(-1)
        different = label[:, None] != label[None, :]
        masks.append(different.float() * SHIFT_MASK_VALUE)
    return torch.stack(masks)


def _window_plan(batch: int, height: int, width: int, window: int, shift: int, device) -> dict:
    """Gather indices between tokens (B, H*W) and padded, shifted windows grouped by shift-mask pattern.

    Returns a dict: `gather` (num_windows*N,) token row for each window position (pad positions point at row 0 and
    are listed in `pad`), `scatter` (B*H*W,) the window position of each token, `groups` the number of windows in
    each mask group (groups of size 0 dropped, with `group_ids` their pattern index), `padded` (H_pad, W_pad).
    `pad` is None without padding; while torch.compile traces, a (num_windows*N,) bool mask instead of row indices.
    """
    height_pad = math.ceil(height / window) * window
    width_pad = math.ceil(width / window) * window
    rows, cols = height_pad // window, width_pad // window
    if shift > 0:
        interior_r, interior_c = torch.arange(rows - 1), torch.arange(cols - 1)
        last_r, last_c = torch.tensor([rows - 1]), torch.tensor([cols - 1])
        group_windows = [(interior_r, interior_c), (interior_r, last_c), (last_r, interior_c), (last_r, last_c)]
    else:
        group_windows = [(torch.arange(rows), torch.arange(cols))]
    inner = torch.arange(window)
    batch_index = torch.arange(batch)
    gathers, groups, group_ids = [], [], []
    for group_id, (window_rows, window_cols) in enumerate(group_windows):
        count = len(window_rows) * len(window_cols)
        if count == 0:
            continue
        # padded-and-rolled coordinates (B, wr, wc, i, j) -> source coordinates in the padded image
        y = (window_rows[:, None, None, None] * window + inner[None, None, :, None]).expand(
            -1, len(window_cols), -1, window
        )
        x = (window_cols[None, :, None, None] * window + inner[None, None, None, :]).expand(
            len(window_rows), -1, window, -1
        )
        y = (y + shift) % height_pad
        x = (x + shift) % width_pad
        token = torch.where((y < height) & (x < width), y * width + x, -1)
        token = token[None] + 0 * batch_index[:, None, None, None, None]
        token = torch.where(token >= 0, token + (batch_index * height * width)[:, None, None, None, None], -1)
        gathers.append(token.reshape(-1))
        groups.append(count * batch)
        group_ids.append(group_id)
    gather = torch.cat(gathers)
    valid = gather >= 0
    total = batch * height * width
    # each token sits at exactly one valid window position: sorting the positions by token gives the inverse map
    # (static shapes, so torch.compile traces it; padding positions sort last, past `total`)
    scatter = torch.argsort(torch.where(valid, gather, total), stable=True)[:total]
    if height_pad == height and width_pad == width:
        pad = None
    elif torch.compiler.is_compiling():
        pad = ~valid  # a mask, not row indices: nonzero's output size depends on the data
    else:
        pad = torch.nonzero(~valid).flatten()
    return {
        "gather": gather.clamp_min(0).to(device),
        "pad": pad.to(device) if pad is not None else None,
        "scatter": scatter.to(device),
        "groups": groups,
        "group_ids": group_ids,
        "padded": (height_pad, width_pad),
    }


def _largest_divisor_at_most(value: int, limit: int) -> int:
    return max(d for d in range(1, value + 1) if value % d == 0 and d <= max(1, limit))


def _cpu_window_attention_forward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output (W, heads, N, d) and log-sum-exp (W, heads, N) of torch's fused CPU kernel (no (N, N) scores kept)."""
    output, logsumexp = _flash_cpu(query, key, value, 0.0, False, attn_mask=mask.unsqueeze(0), scale=1.0)
    return output.contiguous(), logsumexp.contiguous()


def _cpu_window_attention_backward(
    grad_output: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    output: torch.Tensor,
    logsumexp: torch.Tensor,
    need_mask_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (W, heads, N, d) and the mask gradient (heads, N, N; zeros unless `need_mask_grad`).

    Recomputes the probabilities from the saved log-sum-exp in cache-sized chunks of (window, head) pairs, reusing
    two chunk buffers; the mask gradient is the score gradient summed over windows.
    """
    windows, heads, tokens, head_size = query.shape
    rows = windows * heads
    per_head = tokens * tokens
    if heads * per_head <= _BACKWARD_CHUNK_ELEMENTS:
        # whole windows per chunk: the mask repeated for the chunk's windows, built once
        chunk = min(windows, _BACKWARD_CHUNK_ELEMENTS // (heads * per_head)) * heads
        chunk_mask = mask.expand(chunk // heads, heads, tokens, tokens).reshape(chunk, tokens, tokens)
    else:
        # part of one window's heads per chunk: a slice of the mask
        chunk = _largest_divisor_at_most(heads, _BACKWARD_CHUNK_ELEMENTS // per_head)
        chunk_mask = None
    flat_shape = (rows, tokens, head_size)
    query_f, key_f, value_f = (t.reshape(flat_shape) for t in (query, key, value))
    grad_output_f = grad_output.reshape(flat_shape)
    logsumexp_f = logsumexp.reshape(rows, tokens, 1).to(query.dtype)
    # D = rowsum(dO * O): the softmax backward's correction term
    delta = (grad_output * output).sum(-1, keepdim=True).reshape(rows, tokens, 1)
    grad_query, grad_key, grad_value = (torch.empty(flat_shape, dtype=query.dtype) for _ in range(3))
    accumulate = torch.promote_types(mask.dtype, torch.float32)
    grad_mask = torch.zeros(mask.shape, dtype=accumulate) if need_mask_grad else None
    probs_buffer = torch.empty(chunk, tokens, tokens, dtype=query.dtype)
    grad_scores_buffer = torch.empty(chunk, tokens, tokens, dtype=query.dtype)
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        part, count = slice(start, stop), stop - start
        probs, grad_scores = probs_buffer[:count], grad_scores_buffer[:count]
        head = start % heads
        part_mask = chunk_mask[:count] if chunk_mask is not None else mask[head : head + count]
        torch.baddbmm(part_mask, query_f[part], key_f[part].transpose(1, 2), out=probs)
        probs.sub_(logsumexp_f[part]).exp_()
        torch.bmm(grad_output_f[part], value_f[part].transpose(1, 2), out=grad_scores)
        grad_scores.sub_(delta[part]).mul_(probs)
        if need_mask_grad:
            if chunk_mask is not None:
                grad_mask += grad_scores.view(count // heads, heads, tokens, tokens).sum(0, dtype=accumulate)
            else:
                grad_mask[head : head + count] += grad_scores
        torch.bmm(grad_scores, key_f[part], out=grad_query[part])
        torch.bmm(grad_scores.transpose(1, 2), query_f[part], out=grad_key[part])
        torch.bmm(probs.transpose(1, 2), grad_output_f[part], out=grad_value[part])
    shape = (windows, heads, tokens, head_size)
    if grad_mask is None:
        grad_mask = torch.zeros_like(mask)
    return grad_query.view(shape), grad_key.view(shape), grad_value.view(shape), grad_mask.to(mask.dtype)


def _register_cpu_window_attention() -> None:
    """`torch.ops.mesa_hf.cpu_window_attention(_backward)`: the CPU kernel and its chunked backward as custom ops.

    torch.compile sees each as one opaque op (shapes from the fake implementations): no graph break, and autograd
    (eager or AOT) calls the backward op. Registered once per process: a copy of this file loaded through
    `trust_remote_code` reuses the ops the first import registered.
    """
    if _flash_cpu is None or hasattr(torch.ops.mesa_hf, "cpu_window_attention"):
        return
    forward = torch.library.custom_op("mesa_hf::cpu_window_attention", mutates_args=())(_cpu_window_attention_forward)
    backward = torch.library.custom_op("mesa_hf::cpu_window_attention_backward", mutates_args=())(
        _cpu_window_attention_backward
    )

    @forward.register_fake
    def _(query, key, value, mask):
        return query.new_empty(query.shape[:-1] + value.shape[-1:]), query.new_empty(query.shape[:-1])

    @backward.register_fake
    def _(grad_output, query, key, value, mask, output, logsumexp, need_mask_grad):
        return tuple(t.new_empty(t.shape) for t in (query, key, value, mask))  # contiguous, as the kernel's

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs, *output)

    def backward_rule(ctx, grad_output, grad_logsumexp):
        query, key, value, mask, output, logsumexp = ctx.saved_tensors
        need_mask_grad = ctx.needs_input_grad[3]
        grads = torch.ops.mesa_hf.cpu_window_attention_backward(
            grad_output.contiguous(), query, key, value, mask, output, logsumexp, need_mask_grad
        )
        return grads[0], grads[1], grads[2], grads[3] if need_mask_grad else None

    forward.register_autograd(backward_rule, setup_context=setup_context)


_register_cpu_window_attention()


def cpu_window_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """softmax(q kᵀ + mask) v for (W, heads, N, d) windows sharing one (heads, N, N) mask, with the mask's gradient,
    on CPU (`torch.ops.mesa_hf.cpu_window_attention`)."""
    return torch.ops.mesa_hf.cpu_window_attention(query, key, value, mask)[0]


class _Reindex(torch.autograd.Function):
    """Rows `source[index]`, zeroed at rows `zero_rows`; backward: `grad[inverse]`, zeroed at rows `inverse_zero_rows`
    (each None, row indices or a bool row mask).

    `index` and `inverse` are inverse maps between the rows of `source` and the rows of the output, apart from the
    zeroed rows (padding): then the backward is a gather too (torch's index_select backward, a scatter-add, is far
    slower on several CPU threads).
    """

    @staticmethod
    def forward(ctx, source, index, inverse, zero_rows, inverse_zero_rows):
        ctx.save_for_backward(inverse, inverse_zero_rows)
        return _zero_rows(source.index_select(0, index), zero_rows)

    @staticmethod
    def backward(ctx, grad_output):
        inverse, inverse_zero_rows = ctx.saved_tensors
        return _zero_rows(grad_output.index_select(0, inverse), inverse_zero_rows), None, None, None, None


def _zero_rows(rows: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    """`rows` with the rows `zero` set to 0: `zero` is None, row indices, or a bool mask over the rows."""
    if zero is None:
        return rows
    if zero.dtype == torch.bool:
        return rows.masked_fill(zero[:, None], 0.0)
    return rows.index_fill_(0, zero, 0.0)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, dropout: float):
    """softmax(q kᵀ + mask) v for (W, heads, N, d) windows sharing the (heads, N, N) float mask."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value, mask))
    if query.device.type == "cuda" and mask.requires_grad and torch.is_grad_enabled():
        # cuDNN attention (tried first on H100/H200) has no gradient for a float mask, flash takes no mask at all:
        # pin the backends that return the mask's (the position bias's) gradient
        with sdpa_kernel(_MASK_GRADIENT_BACKENDS):
            return F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask.unsqueeze(0), dropout_p=dropout, scale=1.0
            )
    if dropout > 0.0 or not needs_grad or query.device.type != "cpu" or _flash_cpu is None:
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask.unsqueeze(0), dropout_p=dropout, scale=1.0
        )
    return cpu_window_attention(query, key, value, mask)


# --- precision: Swin-V2's cosine attention always runs in float32 ---------------------------------------------------

_HALF_DTYPES = {torch.float16, torch.bfloat16}


@contextlib.contextmanager
def _float32_tensors(module: nn.Module):
    """Temporarily replace `module`'s half-precision parameters and buffers by float32 copies (autograd reaches the
    originals); the caches built from the copies are dropped on exit, so none outlives them."""
    swapped = []
    for owner in module.modules():
        for store in (owner._parameters, owner._buffers):
            for name, tensor in store.items():
                if tensor is not None and tensor.dtype in _HALF_DTYPES:
                    swapped.append((store, name, tensor))
                    store[name] = tensor.float()
    try:
        yield
    finally:
        for store, name, tensor in swapped:
            store[name] = tensor
        if swapped:
            for owner in module.modules():
                owner.__dict__.pop("_mesa_cache", None)


def cosine_attention_in_float32(method):
    """Run a Swin-V2 cosine-attention method in float32 with autocast off; outputs come back in the input's dtype.

    In float16, the 1e-12 floor of the query/key norm underflows to 0, so the all-zero queries of padding tokens give
    0/0 = NaN, and bfloat16 resolves `exp(logit_scale) * cos(q, k)` (up to 100) only to about 0.5. Under autocast
    (fp16/bf16 training or inference) and for weights stored in half precision (`from_pretrained(..., dtype=
    torch.float16)`, a half-precision pipeline) the attention therefore computes in float32; the rest of the network
    keeps the caller's precision. Float32 and float64 models outside autocast run the method unchanged.
    """

    @functools.wraps(method)
    def run(self, hidden_states: torch.Tensor, *args, **kwargs):
        device_type = hidden_states.device.type
        dtype = hidden_states.dtype
        half = {dtype, self.logit_scale.dtype} & _HALF_DTYPES
        if not half and not torch.is_autocast_enabled(device_type):
            return method(self, hidden_states, *args, **kwargs)
        args = tuple(a.float() if torch.is_tensor(a) and a.dtype in _HALF_DTYPES else a for a in args)
        hidden_states = hidden_states.float() if dtype in _HALF_DTYPES else hidden_states
        with torch.autocast(device_type, enabled=False), _float32_tensors(self):
            output = method(self, hidden_states, *args, **kwargs)
        if isinstance(output, tuple):
            return tuple(o.to(dtype) if torch.is_tensor(o) else o for o in output)
        return output.to(dtype)

    return run


class Float32Swinv2SelfAttention(Swinv2SelfAttention):
    """transformers' Swin-V2 self-attention (the `"eager"` implementation) run in float32 at any precision."""

    forward = cosine_attention_in_float32(Swinv2SelfAttention.forward)


class SdpaSwinv2SelfAttention(Float32Swinv2SelfAttention):
    """Swin-V2 cosine window attention through `scaled_dot_product_attention`; same parameters as the stock module.

    `forward` (the stock signature, used by the stock layer with `output_attentions=True`) stays transformers' code;
    `SdpaSwinv2Layer` calls `window_attention` instead.
    """

    def position_bias(self) -> torch.Tensor:
        """16 * sigmoid(cpb_mlp(relative_coords_table)) gathered to (heads, N, N), N = window tokens."""
        table = self.continuous_position_bias_mlp(self.relative_coords_table).view(-1, self.num_attention_heads)
        table = 16 * torch.sigmoid(table.t())  # elementwise, so it commutes with the gather below
        tokens = self.window_size[0] * self.window_size[1]
        return table.index_select(1, self.relative_position_index.view(-1)).view(-1, tokens, tokens)

    def _bias_tensors(self) -> list[torch.Tensor]:
        return [
            *self.continuous_position_bias_mlp.parameters(),
            self.relative_coords_table,
            self.relative_position_index,
        ]

    def group_masks(self, shift_size: int, dtype: torch.dtype, device) -> list[torch.Tensor]:
        """Float masks (heads, N, N), one per window group: the position bias plus the group's shift mask."""

        def build():
            bias = self.position_bias().to(dtype)
            if shift_size <= 0:
                return [bias]
            patterns = shift_mask_patterns(self.window_size[0], shift_size, device=device).to(dtype)
            return [bias + pattern for pattern in patterns]

        tensors = self._bias_tensors()
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return build()
        # one entry per mode: inference-mode tensors cannot serve autograd, and callers that alternate
        # torch.no_grad (transformers' pipelines) with torch.inference_mode must not rebuild the masks every call
        return _cached(self, "group_masks", lambda: (_tensor_versions(tensors), shift_size, dtype, str(device)), build)

    def qkv_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The query, key and value projections as one (3C, C) weight and (3C,) bias."""
        linears = (self.query, self.key, self.value)

        def build():
            weight = torch.cat([linear.weight for linear in linears])
            if all(linear.bias is None for linear in linears):
                return weight, None
            biases = [
                linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
                for linear in linears
            ]
            return weight, torch.cat(biases)

        tensors = [t for linear in linears for t in (linear.weight, linear.bias) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return build()
        return _cached(self, "qkv", lambda: _tensor_versions(tensors), build)

    @cosine_attention_in_float32
    def window_attention(
        self,
        windows: torch.Tensor,
        groups: list[int],
        group_ids: list[int],
        shift_size: int,
        query_rows: list | None = None,
    ):
        """Attention within each window.

        Args:
            windows: (num_windows, N, C) tokens, windows of the same mask group consecutive.
            groups: number of windows in each group, in order; `group_ids`: each group's pattern index
                (see `shift_mask_patterns`; ignored when `shift_size` is 0).
            query_rows: per group, None or the `padded_query_subsets` of its windows (padded queries skipped).
        Returns:
            (num_windows, N, C) context before the output projection.
        """
        num_windows, tokens, channels = windows.shape
        heads, head_size = self.num_attention_heads, self.attention_head_size
        weight, bias = self.qkv_weight()
        qkv = F.linear(windows, weight, bias).view(num_windows, tokens, 3, heads, head_size)
        # cosine attention: L2-normalised queries and keys in one pass, queries also scaled by the logit scale
        query_key = qkv[:, :, :2]
        logit_scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp().view(1, heads, 1)
        factor = torch.cat([logit_scale, torch.ones_like(logit_scale)]).to(qkv.dtype)  # (2, heads, 1)
        norm = torch.linalg.vector_norm(query_key, dim=-1, keepdim=True).clamp_min(1e-12)
        query_key = query_key * (factor / norm)
        query = query_key[:, :, 0].transpose(1, 2)
        key = query_key[:, :, 1].transpose(1, 2)
        value = qkv[:, :, 2].transpose(1, 2)
        masks = self.group_masks(shift_size, query.dtype, query.device)
        dropout = self.dropout.p if self.training else 0.0
        outputs, start = [], 0
        for index, (count, group_id) in enumerate(zip(groups, group_ids)):
            part = slice(start, start + count)
            mask = masks[group_id if shift_size > 0 else 0]
            subsets = query_rows[index] if query_rows is not None else None
            if subsets is not None:
                outputs.append(_attend_valid_queries(query[part], key[part], value[part], mask, dropout, subsets))
            else:
                outputs.append(_attend(query[part], key[part], value[part], mask, dropout))
            start += count
        context = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return context.transpose(1, 2).reshape(num_windows, tokens, channels)


class SdpaSwinv2Layer(Swinv2Layer):
    """Swin-V2 block whose window attention runs `SdpaSwinv2SelfAttention.window_attention`; same parameters."""

    def window_plan(self, batch: int, height: int, width: int, device) -> dict:
        return _cached(
            self,
            "plan",  # one per mode: inference-mode index tensors cannot be saved for a later backward
            lambda: (batch, height, width, str(device)),
            lambda: _window_plan(batch, height, width, self.window_size, self.shift_size, device),
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        input_dimensions: tuple[int, int],
        output_attentions: bool | None = False,
    ) -> tuple[torch.Tensor, ...]:
        if output_attentions:
            return super().forward(hidden_states, input_dimensions, output_attentions=output_attentions)
        if _TRACEABLE:
            return (traceable_layer_forward(self, hidden_states, input_dimensions),)
        height, width = input_dimensions
        batch_size, _, channels = hidden_states.shape
        tokens = self.window_size * self.window_size
        plan = self.window_plan(batch_size, height, width, hidden_states.device)
        flat = hidden_states.reshape(batch_size * height * width, channels)
        windows = _Reindex.apply(flat, plan["gather"], plan["scatter"], plan["pad"], None).view(-1, tokens, channels)
        attention = self.attention
        context = attention.self.window_attention(
            windows, plan["groups"], plan["group_ids"], self.shift_size, padded_query_subsets(plan, tokens)
        )
        if _SKIP_PADDED_QUERIES:  # crop first, then project: padded rows are neither projected nor read
            context = _Reindex.apply(context.reshape(-1, channels), plan["scatter"], plan["gather"], None, plan["pad"])
            attention_output = attention.output(context, None)
        else:
            attention_output = attention.output(context, windows)
            attention_output = _Reindex.apply(
                attention_output.reshape(-1, channels), plan["scatter"], plan["gather"], None, plan["pad"]
            )
        attention_output = attention_output.view(batch_size, height * width, channels)

        hidden_states = hidden_states + self.drop_path(self.layernorm_before(attention_output))
        layer_output = self.output(self.intermediate(hidden_states))
        layer_output = hidden_states + self.drop_path(self.layernorm_after(layer_output))
        return (layer_output,)


# ------------------------------------------------------------------------------------------------ padded queries
# Windows that reach past the image's right or bottom edge hold zero padding tokens. Stock Swin-V2 attends from and
# to them; their keys change the real tokens' outputs (they stay), but their query rows are cropped away after the
# attention: those rows are skipped (e.g. stages 3-4 at 480x640, window 30: a third of the attention rows).

_SKIP_PADDED_QUERIES = True
# Groups with fewer padded query rows than this fraction run whole (stages 1-2 at 480x640, window 30: 11 %).
_MIN_PADDED_FRACTION = 0.25


@contextmanager
def padded_query_skipping(enabled: bool):
    """Turn the skipping of padded query rows on or off while the context is open (for comparisons; default on)."""
    global _SKIP_PADDED_QUERIES
    previous, _SKIP_PADDED_QUERIES = _SKIP_PADDED_QUERIES, enabled
    try:
        yield
    finally:
        _SKIP_PADDED_QUERIES = previous


def padded_query_subsets(plan: dict, tokens: int) -> list | None:
    """Per window group of `plan`: None (no padded query) or [(window indices, valid rows or None), ...].

    Windows of a group are split by their pattern of valid positions; `valid rows` is None for fully valid windows.
    Computed once per plan (the plan is cached per input shape). None while torch.compile traces.
    """
    if not _SKIP_PADDED_QUERIES or plan["pad"] is None or torch.compiler.is_compiling():
        return None  # compiled: every query row runs (numpy and data-dependent shapes cannot enter a graph)
    if "query_subsets" not in plan:
        device = plan["gather"].device
        valid = np.ones(sum(plan["groups"]) * tokens, dtype=bool)
        valid[plan["pad"].cpu().numpy()] = False
        valid = valid.reshape(-1, tokens)
        subsets, start = [], 0
        for count in plan["groups"]:
            group = valid[start : start + count]
            start += count
            if 1.0 - group.mean() < _MIN_PADDED_FRACTION:  # the gathers would cost more than the rows saved
                subsets.append(None)
                continue
            patterns, inverse = np.unique(group, axis=0, return_inverse=True)
            entries = []
            for number, pattern in enumerate(patterns):
                indices = np.nonzero(inverse.reshape(-1) == number)[0]
                if indices[-1] - indices[0] + 1 == len(indices):  # consecutive windows: a view, no copy
                    windows = slice(int(indices[0]), int(indices[-1]) + 1)
                else:
                    windows = torch.from_numpy(indices).to(device)
                rows = None if pattern.all() else torch.from_numpy(np.nonzero(pattern)[0]).to(device)
                entries.append((windows, rows))
            subsets.append(entries)
        plan["query_subsets"] = subsets
    return plan["query_subsets"]


def _attend_valid_queries(query, key, value, mask, dropout: float, subsets: list) -> torch.Tensor:
    """`_attend` for (W, heads, N, d) windows computing only the valid query rows.

    Padded rows are left uninitialised: the layer crops them before anything reads them (forward or backward).
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value, mask))
    if needs_grad and dropout == 0.0 and query.device.type == "cpu" and _flash_cpu is not None:
        return _attend(query, key, value, mask, dropout)  # the custom CPU backward takes square masks only
    output = torch.empty_like(query)
    for windows, rows in subsets:
        contiguous = isinstance(windows, slice)
        if contiguous:
            q, k, v = query[windows], key[windows], value[windows]
        else:
            q, k, v = query.index_select(0, windows), key.index_select(0, windows), value.index_select(0, windows)
        if rows is None:
            part = _attend(q, k, v, mask, dropout)
        else:
            part = _attend(q.index_select(2, rows), k, v, mask.index_select(1, rows), dropout)
        if contiguous and rows is None:
            output[windows].copy_(part)
        elif contiguous:
            output[windows].index_copy_(2, rows, part)
        else:
            full = part if rows is None else torch.empty_like(q).index_copy_(2, rows, part)
            output.index_copy_(0, windows, full)
    return output


# ------------------------------------------------------------------------------------------------ traceable path
# For graph exporters (torch.onnx.export, torch.export): the same maths in plain tensor ops, with the window plan
# built from Python integers (numpy) and no caches, custom autograd functions or data-dependent indexing. The eager
# fused path above is untouched; `traceable_window_attention()` selects this one while it is open.

_TRACEABLE = False


@contextmanager
def traceable_window_attention():
    """While open, every `SdpaSwinv2Layer` runs `traceable_layer_forward` (exportable; outputs match the fused path)."""
    global _TRACEABLE
    previous, _TRACEABLE = _TRACEABLE, True
    try:
        yield
    finally:
        _TRACEABLE = previous


def window_plan_arrays(height: int, width: int, window: int, shift: int) -> dict:
    """The window plan of `_window_plan` for one image, as numpy arrays (batch-independent, built from ints).

    Returns `gather` (num_windows*N,) token index of each window position (0 at padding), `valid` (num_windows*N,)
    False at padding, `scatter` (H*W,) the window position of each token, `groups` / `group_ids` as `_window_plan`.
    """
    height_pad, width_pad = math.ceil(height / window) * window, math.ceil(width / window) * window
    rows, cols = height_pad // window, width_pad // window
    if shift > 0:
        interior_r, interior_c = np.arange(rows - 1), np.arange(cols - 1)
        last_r, last_c = np.array([rows - 1]), np.array([cols - 1])
        group_windows = [(interior_r, interior_c), (interior_r, last_c), (last_r, interior_c), (last_r, last_c)]
    else:
        group_windows = [(np.arange(rows), np.arange(cols))]
    inner = np.arange(window)
    gathers, groups, group_ids = [], [], []
    for group_id, (window_rows, window_cols) in enumerate(group_windows):
        if len(window_rows) * len(window_cols) == 0:
            continue
        shape = (len(window_rows), len(window_cols), window, window)
        y = np.broadcast_to(window_rows[:, None, None, None] * window + inner[None, None, :, None], shape)
        x = np.broadcast_to(window_cols[None, :, None, None] * window + inner[None, None, None, :], shape)
        y, x = (y + shift) % height_pad, (x + shift) % width_pad
        gathers.append(np.where((y < height) & (x < width), y * width + x, -1).reshape(-1))
        groups.append(len(window_rows) * len(window_cols))
        group_ids.append(group_id)
    gather = np.concatenate(gathers)
    valid = gather >= 0
    scatter = np.empty(height * width, dtype=np.int64)
    scatter[gather[valid]] = np.nonzero(valid)[0]
    return {
        "gather": np.where(valid, gather, 0).astype(np.int64),
        "valid": valid,
        "scatter": scatter,
        "groups": groups,
        "group_ids": group_ids,
    }


def traceable_window_attention_forward(
    attention: SdpaSwinv2SelfAttention, windows: torch.Tensor, groups: list[int], group_ids: list[int], shift: int
) -> torch.Tensor:
    """`SdpaSwinv2SelfAttention.window_attention` on (B, num_windows, N, C) windows, in plain matmul/softmax ops."""
    batch, num_windows, tokens, channels = windows.shape
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    linears = (attention.query, attention.key, attention.value)
    weight = torch.cat([linear.weight for linear in linears])
    bias = None
    if any(linear.bias is not None for linear in linears):
        bias = torch.cat(
            [lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in linears]
        )
    qkv = F.linear(windows, weight, bias).view(batch, num_windows, tokens, 3, heads, head_size)
    qkv = qkv.permute(3, 0, 1, 4, 2, 5)  # (3, B, W, heads, N, d)
    query, key, value = qkv[0], qkv[1], qkv[2]
    logit_scale = torch.clamp(attention.logit_scale, max=LOGIT_SCALE_MAX).exp().view(heads, 1, 1)
    query = query * (logit_scale / torch.linalg.vector_norm(query, dim=-1, keepdim=True).clamp_min(1e-12))
    key = key / torch.linalg.vector_norm(key, dim=-1, keepdim=True).clamp_min(1e-12)
    bias_table = attention.position_bias().to(query.dtype)
    masks = [bias_table]
    if shift > 0:
        patterns = shift_mask_patterns(attention.window_size[0], shift, device=query.device).to(query.dtype)
        masks = [bias_table + pattern for pattern in patterns]
    outputs, start = [], 0
    for count, group_id in zip(groups, group_ids):
        part = slice(start, start + count)
        scores = torch.matmul(query[:, part], key[:, part].transpose(-1, -2)) + masks[group_id if shift > 0 else 0]
        outputs.append(torch.matmul(torch.softmax(scores, dim=-1), value[:, part]))
        start += count
    context = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    return context.transpose(2, 3).reshape(batch, num_windows, tokens, channels)


def traceable_layer_forward(
    layer: SdpaSwinv2Layer, hidden_states: torch.Tensor, input_dimensions: tuple[int, int]
) -> torch.Tensor:
    """`SdpaSwinv2Layer.forward` (inference) in exportable ops: (B, H*W, C) -> (B, H*W, C); any batch size."""
    height, width = (int(d) for d in input_dimensions)
    batch, _, channels = hidden_states.shape
    tokens = layer.window_size * layer.window_size
    plan = window_plan_arrays(height, width, layer.window_size, layer.shift_size)
    windows = hidden_states.index_select(1, torch.from_numpy(plan["gather"]).to(hidden_states.device))
    if not plan["valid"].all():
        valid = torch.from_numpy(plan["valid"].astype(np.float32)).to(hidden_states.device, hidden_states.dtype)
        windows = windows * valid[None, :, None]
    windows = windows.view(batch, -1, tokens, channels)
    attention = layer.attention
    context = traceable_window_attention_forward(
        attention.self, windows, plan["groups"], plan["group_ids"], layer.shift_size
    )
    attention_output = attention.output(context, windows).reshape(batch, -1, channels)
    attention_output = attention_output.index_select(1, torch.from_numpy(plan["scatter"]).to(hidden_states.device))
    hidden_states = hidden_states + layer.drop_path(layer.layernorm_before(attention_output))
    layer_output = layer.output(layer.intermediate(hidden_states))
    return hidden_states + layer.drop_path(layer.layernorm_after(layer_output))

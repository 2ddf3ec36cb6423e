"""torch.compile: the fused Swin-V2 attention compiles in one graph, matches eager, and `--torch_compile` trains.

The parity tests use the "aot_eager" backend (dynamo + AOT autograd, the same graphs and custom ops as inductor
without inductor's code generation, which takes minutes on a 2-core CPU); graph breaks are counted by dynamo, whatever
the backend. Speed: benchmarks/encoder.py --compile.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from safetensors.torch import load_file

from mesa_hf import MeSaConfig, MeSaForDepthEstimation
from mesa_hf.attention_mesa import cpu_window_attention
from mesa_hf.training import MeSaTrainingArguments, train

from .test_attention import feature_loss, model_pair, pixels, small_config
from .test_training import make_args, slanted_planes


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fused_encoder_compiles_without_graph_breaks(mode):
    """One graph for the whole fused encoder (shifted and padded windows, 4 stages), in eval and in training."""
    _, sdpa = model_pair(small_config())
    sdpa.train(mode == "train")
    with torch.set_grad_enabled(mode == "train"):
        explanation = torch._dynamo.explain(sdpa)(pixels(batch=1))
    reasons = [str(reason.reason).splitlines()[0] for reason in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1
    if mode == "train":  # the CPU kernel with the bias gradient is in the graph as one custom op
        graph_code = "\n".join(graph.code for graph in explanation.graphs)
        assert "mesa_hf.cpu_window_attention" in graph_code


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_compiled_fused_encoder_matches_eager(mode):
    _, sdpa = model_pair(small_config())
    sdpa.train(mode == "train")
    compiled = torch.compile(sdpa, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break raises
    x = pixels(batch=1)
    with torch.set_grad_enabled(mode == "train"):
        eager_maps = sdpa(x).feature_maps
        compiled_maps = compiled(x).feature_maps
    assert [m.shape for m in compiled_maps] == [m.shape for m in eager_maps]
    assert max((a - b).abs().max().item() for a, b in zip(eager_maps, compiled_maps, strict=True)) <= 1e-5
    if mode == "eval":
        return
    parameters = list(sdpa.parameters())
    eager_grads = torch.autograd.grad(feature_loss(eager_maps), parameters)
    compiled_grads = torch.autograd.grad(feature_loss(compiled_maps), parameters)
    for (name, _), expected, actual in zip(sdpa.named_parameters(), eager_grads, compiled_grads, strict=True):
        assert expected.norm() > 0, name
        assert (expected - actual).abs().max() <= 1e-5 * (1 + expected.abs().max()), name


def test_cpu_window_attention_custom_op():
    """torch.library.opcheck: schema, fake (meta) shapes, autograd registration and AOT dispatch of the custom op."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 9, 4, generator=generator, requires_grad=True) for _ in range(3))
    mask = torch.randn(2, 9, 9, generator=generator, requires_grad=True)
    torch.library.opcheck(torch.ops.mesa_hf.cpu_window_attention.default, (q, k, v, mask))
    output = cpu_window_attention(q, k, v, mask)
    assert output.shape == (3, 2, 9, 4)
    expected = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1) @ v
    assert (output - expected).abs().max() <= 1e-5


def test_torch_compile_trains_like_eager(tmp_path):
    """3 updates of the MeSa depth model (test preset, fused attention) with torch_compile=True equal eager's."""
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = MeSaForDepthEstimation(MeSaConfig.from_preset("test"))
        options = {"torch_compile": True, "torch_compile_backend": "aot_eager"} if compiled else {}
        # adam_epsilon 1e-3: the decoder's conv biases before BatchNorm have a gradient that is 0 up to rounding
        # (~1e-9), which AdamW with epsilon 1e-8 turns into steps of +-lr whose sign the rounding picks
        args = make_args(
            tmp_path / str(compiled), learning_rate=1e-3, adam_epsilon=1e-3, max_train_steps=3, seed=0, **options
        )
        results[compiled] = train(model, slanted_planes(num_samples=24), args)
        assert (getattr(model, "_compiled_call_impl", None) is not None) == compiled
    eager, compiled = results[False], results[True]
    assert compiled.global_step == eager.global_step == 3
    assert max(abs(a - b) for a, b in zip(eager.losses, compiled.losses, strict=True)) <= 1e-5
    weights_eager = load_file(f"{eager.final_model_dir}/model.safetensors")
    weights_compiled = load_file(f"{compiled.final_model_dir}/model.safetensors")
    assert weights_compiled.keys() == weights_eager.keys()  # no _orig_mod. prefix
    assert max((weights_eager[k] - weights_compiled[k]).abs().max().item() for k in weights_eager) <= 1e-5


def test_compile_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="torch_compile_mode must be one of"):
        MeSaTrainingArguments(output_dir=str(tmp_path), torch_compile=True, torch_compile_mode="fast")
    with pytest.raises(ValueError, match="need torch_compile=True"):
        MeSaTrainingArguments(output_dir=str(tmp_path), torch_compile_backend="aot_eager")


def test_torch_compile_flags_reach_the_training_arguments():
    """The scripts' `--torch_compile` flags (generated from MeSaTrainingArguments) become training overrides."""
    from mesa_hf.training.cli import build_parser, parse_arguments, training_overrides

    from .test_training_cli import _Script

    argv = ["--output_dir", "out", "--torch_compile", "--torch_compile_backend", "aot_eager"]
    _, _, _, flags = parse_arguments(build_parser(_Script), argv)
    assert training_overrides(flags) == {"torch_compile": True, "torch_compile_backend": "aot_eager"}
    _, _, _, flags = parse_arguments(build_parser(_Script), ["--output_dir", "out"])
    assert "torch_compile" not in training_overrides(flags)  # off unless asked: the recipe's value stays

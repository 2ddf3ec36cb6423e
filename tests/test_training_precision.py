"""Mixed precision in training: 3 steps of the depth model give finite losses in bf16 (through the Accelerate loop)
and in fp16 (a direct autocast step: on a CPU, Accelerate accepts ``mixed_precision="fp16"`` but runs without
autocast, so the loop would train in fp32 there)."""

from __future__ import annotations

import math

import torch

from mesa_hf import MeSaConfig, MeSaForDepthEstimation
from mesa_hf.training import MeSaTrainingArguments, build_accelerator, train


def _depth_rows(num: int = 6, size: int = 64) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "pixel_values": torch.randn(3, size, size, generator=generator),
            "labels": torch.rand(size, size, generator=generator) * 5 + 0.5,
        }
        for _ in range(num)
    ]


def test_bf16_training_steps_give_finite_losses(tmp_path):
    model = MeSaForDepthEstimation(MeSaConfig.from_preset("test"))
    args = MeSaTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_train_steps=3, mixed_precision="bf16",
        checkpointing_steps=None, layer_decay=None, use_cpu=True,
    )  # fmt: skip
    result = train(model, _depth_rows(), args)
    assert result.global_step == 3 and len(result.losses) == 3
    assert all(math.isfinite(loss) and loss > 0 for loss in result.losses), result.losses


def test_fp16_on_cpu_is_not_autocast_by_accelerate_so_a_direct_fp16_step_is_checked(tmp_path):
    accelerator = build_accelerator(
        MeSaTrainingArguments(output_dir=str(tmp_path), mixed_precision="fp16", use_cpu=True)
    )
    assert accelerator.native_amp is False  # the reason for the direct autocast below
    torch.manual_seed(0)
    model = MeSaForDepthEstimation(MeSaConfig.from_preset("test"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = _depth_rows(4)
    losses, dtypes = [], set()
    for step in range(3):
        batch = {k: torch.stack([r[k] for r in rows[step % 2 * 2 : step % 2 * 2 + 2]]) for k in rows[0]}
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(**batch)
            dtypes.add(out.predicted_depth.dtype)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(out.loss.detach()))
        assert torch.isfinite(out.predicted_depth).all()
    assert all(math.isfinite(loss) for loss in losses), losses
    print(f"fp16 autocast on CPU: losses {losses}, prediction dtypes {dtypes}")

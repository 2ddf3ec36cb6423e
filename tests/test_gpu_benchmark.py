"""benchmarks/gpu.py runs on CPU at tiny size (`--device cpu --quick`) and writes the expected table."""

from __future__ import annotations

import json
from pathlib import Path

from .helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def load_benchmark():
    return load_script(SCRIPT, "gpu_benchmark")


def test_gpu_benchmark_quick_on_cpu(tmp_path):
    benchmark = load_benchmark()
    table, rows_file = tmp_path / "gpu.md", tmp_path / "gpu.json"
    rows = benchmark.main(["--device", "cpu", "--quick", "--output", str(table), "--json", str(rows_file)])
    text = table.read_text()
    assert "| section | case | result | value | detail |" in text
    assert json.loads(rows_file.read_text())["rows"] == rows
    by_case = {(r["section"], r["case"], r["result"]): r for r in rows}
    # fused equals stock in fp32 (outputs, all gradients, the position-bias MLP's gradients)
    for result in ("output max abs / rel", "grad max abs / rel (all)", "grad max abs / rel (cpb_mlp)"):
        relative = float(by_case[("correctness", "fp32 60x100 w4", result)]["value"].split(" / ")[1])
        assert relative < 1e-3, result
    # the math backend gives the mask's gradient on CPU; cuDNN is no CPU backend
    assert by_case[("backend", "fp32 pinned math", "ok")]
    assert ("backend", "fp32 pinned cudnn", "error") in by_case
    trained = [r for r in rows if r["section"] == "train" and r["result"] == "images/s"]
    assert {r["case"] for r in trained} == {
        f"{case} {attention} eager"
        for case in ("mim 64x64 w4", "finetune 64x64 w4")
        for attention in ("fused", "stock")
    }
    assert all(float(r["value"]) > 0 for r in trained)
    assert sum(r["section"] == "infer" and float(r["value"]) > 0 for r in rows) == 2
    assert rows[-1]["section"] == "ddp/fsdp" and rows[-1]["result"] == "not measured"
    assert "error" not in {r["result"] for r in rows if r["section"] != "backend"}

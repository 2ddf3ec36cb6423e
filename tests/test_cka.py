"""Linear and minibatch CKA (mesa_hf.analysis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mesa_hf.analysis import (
    MinibatchCKA,
    gram_linear,
    linear_cka,
    plot_cka_figure,
    read_cka_csv,
    unbiased_hsic,
    write_cka_csv,
)


def _features(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    y = torch.tanh(x[:, :6] @ torch.randn(6, 9, generator=g)) + 0.3 * torch.randn(n, 9, generator=g)
    return x.double(), y.double()


def test_linear_cka_of_identical_features_is_one():
    x, _ = _features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    wide = torch.randn(10, 300)  # n < d: the Gram-matrix path
    assert linear_cka(wide, wide) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(wide.numpy(), wide.reshape(10, 3, 100)) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_hand_computed():
    # 1-D features: CKA = squared Pearson correlation. x_c = (-1, 0, 1), y_c = (-4, -1, 5)/3:
    # (x_c . y_c)^2 / (|x_c|^2 |y_c|^2) = 3^2 / (2 * 14/3) = 27/28.
    assert linear_cka(np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [4.0]])) == pytest.approx(27 / 28)
    # X = (e1, e2, -e1, -e2) (already centred), Y = first column: ||YᵀX||² = 4, ||XᵀX|| = 2√2, ||YᵀY|| = 2.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert linear_cka(x, x[:, :1]) == pytest.approx(4 / (2 * math.sqrt(2) * 2))
    assert linear_cka(x, x[:, :1]) == pytest.approx(1 / math.sqrt(2))


def test_invariance_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = _features()
    base = linear_cka(x, y)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-10)  # centring removes offsets
    not_orthogonal = torch.diag(torch.linspace(0.1, 3.0, 12, dtype=torch.float64))
    assert linear_cka(x @ not_orthogonal, y) != pytest.approx(base, rel=1e-3)  # the test can fail
    mb = MinibatchCKA(2, 1)
    mb.update([x, 3.0 * x @ q], [y])
    assert mb.compute()[0, 0] == pytest.approx(mb.compute()[1, 0], rel=1e-10)


def test_unbiased_hsic_equals_u_centred_inner_product():
    """Song et al.'s unbiased HSIC equals the U-centred inner product (Székely & Rizzo), computed independently."""
    x, y = _features(n=9)
    k, gram_l = gram_linear(x), gram_linear(y)
    m = k.shape[0]

    def u_centre(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        np.fill_diagonal(a, 0.0)
        row = a.sum(axis=1, keepdims=True) / (m - 2)
        col = a.sum(axis=0, keepdims=True) / (m - 2)
        out = a - row - col + a.sum() / ((m - 1) * (m - 2))
        np.fill_diagonal(out, 0.0)
        return out

    expected = (u_centre(k.numpy()) * u_centre(gram_l.numpy())).sum() / (m * (m - 3))
    assert float(unbiased_hsic(k, gram_l)) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="more than 3"):
        unbiased_hsic(k[:3, :3], gram_l[:3, :3])


def test_minibatch_cka_approaches_full_batch_as_batches_grow():
    n = 512
    x, y = _features(n=n, seed=1)
    full = MinibatchCKA(1, 1)
    full.update([x], [y])  # one batch of all examples = full-batch CKA with the unbiased HSIC
    full_value = float(full.compute()[0, 0])
    errors = {}
    g = torch.Generator().manual_seed(0)
    for batch_size in (8, 32, 128, 512):
        values = []
        for _ in range(4):  # average over shuffles
            perm = torch.randperm(n, generator=g)
            mb = MinibatchCKA(1, 1)
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                mb.update([x[idx]], [y[idx]])
            values.append(float(mb.compute()[0, 0]))
        errors[batch_size] = float(np.mean(np.abs(np.array(values) - full_value)))
    print(f"full-batch CKA unbiased {full_value:.4f}, biased {linear_cka(x, y):.4f}; |minibatch - full|: {errors}")
    assert errors[8] > errors[32] > errors[128] > errors[512]
    assert errors[512] == pytest.approx(0.0, abs=1e-12)
    assert errors[128] < 0.5 * errors[8]
    assert full_value == pytest.approx(linear_cka(x, y), abs=0.02)  # the biased estimate is close at n=512


def test_minibatch_cka_matrix_over_layer_pairs():
    x, y = _features(n=48)
    layers_a = [x, y, x**2]
    layers_b = [x, y]
    mb = MinibatchCKA(3, 2)
    for start in range(0, 48, 16):
        mb.update([f[start : start + 16] for f in layers_a], [f[start : start + 16] for f in layers_b])
    matrix = mb.compute()
    assert matrix.shape == (3, 2)
    assert matrix[0, 0] == pytest.approx(1.0) and matrix[1, 1] == pytest.approx(1.0)
    assert 0 < matrix[0, 1] < 1 and matrix[0, 1] == pytest.approx(matrix[1, 0])
    with pytest.raises(ValueError, match="expected 3 layers"):
        mb.update([x[:8]], [x[:8], y[:8]])
    with pytest.raises(ValueError, match="same examples"):
        mb.update([x[:8], x[:8], x[:9]], [x[:8], y[:8]])
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x[:5], y[:6])


def test_a_layer_whose_features_do_not_vary_has_no_cka():
    x, y = _features(n=16)
    constant = torch.ones(16, 5, dtype=torch.float64) * torch.arange(5.0, dtype=torch.float64)
    mb = MinibatchCKA(2, 2)
    mb.update([x, constant], [x, y])
    with pytest.raises(ValueError, match="zero self-HSIC"):
        mb.compute()
    matrix = mb.compute(undefined="nan")
    assert matrix[0, 0] == pytest.approx(1.0) and 0 < matrix[0, 1] < 1
    assert np.isnan(matrix[1]).all()
    with pytest.raises(ValueError, match="'raise' or 'nan'"):
        mb.compute(undefined="zero")


def test_csv_round_trip_and_png(tmp_path):
    names = [f"block{i}" for i in range(5)]
    rng = np.random.default_rng(0)
    matrices = {"A vs B": rng.uniform(0, 1, (5, 5)), "A vs C": rng.uniform(0, 1, (5, 5))}
    csv_path = write_cka_csv(tmp_path / "cka.csv", matrices, names)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "pair,layer_a,layer_b,index_a,index_b,cka" and len(lines) == 1 + 2 * 25
    back = read_cka_csv(csv_path)
    np.testing.assert_allclose(back["A vs C"], matrices["A vs C"], atol=1e-6)
    png = plot_cka_figure(tmp_path / "cka.png", matrices, names)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 800 and im.size[1] > 400
    with pytest.raises(ValueError, match="shape"):
        write_cka_csv(tmp_path / "bad.csv", {"x": np.zeros((2, 2))}, names)

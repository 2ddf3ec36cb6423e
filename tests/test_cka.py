"""Linear, full-batch debiased and minibatch CKA, their intervals and null, figures and verdict (mesa_hf.analysis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mesa_hf.analysis import (
    GramAccumulator,
    MinibatchCKA,
    accumulate_gram,
    cka_from_grams,
    gram_linear,
    later_layers_change_less,
    layerwise_cka,
    layerwise_cka_results,
    linear_cka,
    plot_cka_figure,
    plot_cka_results,
    plot_layer_cka,
    read_cka_csv,
    unbiased_hsic,
    write_cka_csv,
    write_cka_results,
)

from .helpers import tiny_depth_model


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


# ------------------------------------------------------------------------------------------- full-batch debiased


def _full(x: torch.Tensor, y: torch.Tensor, **kwargs):
    return cka_from_grams([gram_linear(x)], [gram_linear(y)], **kwargs)


def test_full_batch_debiased_cka_of_identical_features_is_one_and_invariant():
    x, y = _features(n=80)
    same = _full(x, x, num_permutations=0)
    assert same.cka[0, 0] == pytest.approx(1.0, abs=1e-12) and same.biased[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert same.ci_low[0, 0] == pytest.approx(1.0, abs=1e-9) and same.ci_high[0, 0] == pytest.approx(1.0, abs=1e-9)
    base = _full(x, y, num_permutations=0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    for transformed in (x @ q, 7.5 * x, 0.01 * x @ q, x + 5.0):
        other = _full(transformed, 3.0 * y, num_permutations=0)
        assert other.cka[0, 0] == pytest.approx(base.cka[0, 0], rel=1e-9)
        assert other.biased[0, 0] == pytest.approx(base.biased[0, 0], rel=1e-9)
    stretched = x @ torch.diag(torch.linspace(0.1, 3.0, 12, dtype=torch.float64))
    assert _full(stretched, y, num_permutations=0).cka[0, 0] != pytest.approx(base.cka[0, 0], rel=1e-3)


def test_full_batch_equals_one_minibatch_of_everything_and_biased_equals_linear_cka():
    x, y = _features(n=50, seed=2)
    full = _full(x, y, num_permutations=0)
    one_batch = MinibatchCKA(1, 1)
    one_batch.update([x], [y])
    assert full.cka[0, 0] == pytest.approx(float(one_batch.compute()[0, 0]), rel=1e-12)
    assert full.biased[0, 0] == pytest.approx(linear_cka(x, y), rel=1e-12)
    assert full.self_hsic_a[0] == pytest.approx(float(unbiased_hsic(gram_linear(x), gram_linear(x))), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_debiased_cka_of_independent_random_features_is_within_3_over_n_of_zero(seed):
    n, d = 256, 1024
    g = torch.Generator().manual_seed(100 + seed)
    x, y = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    result = _full(x, y, num_permutations=50, seed=seed)
    assert abs(result.cka[0, 0]) <= 3 / n, result.cka[0, 0]
    assert result.biased[0, 0] > 0.5  # the biased estimator is far from 0 here (d >> n): the test can fail
    assert result.ci_low[0, 0] < 0 < result.ci_high[0, 0]


def test_biased_and_debiased_agree_when_images_far_outnumber_feature_dimensions():
    g = torch.Generator().manual_seed(5)
    n = 2000
    z = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x = torch.cat([z, torch.randn(n, 1, generator=g, dtype=torch.float64)], dim=1)
    y = z @ torch.randn(3, 4, generator=g, dtype=torch.float64) + 0.5 * torch.randn(
        n, 4, generator=g, dtype=torch.float64
    )
    result = _full(x, y, num_permutations=0)
    print(f"n={n}: debiased {result.cka[0, 0]:.4f}, biased {result.biased[0, 0]:.4f}")
    assert 0.2 < result.cka[0, 0] < 0.95
    assert result.biased[0, 0] == pytest.approx(result.cka[0, 0], abs=0.01)
    small = _full(x[:24], y[:24], num_permutations=0)  # few images: the two estimators part
    assert abs(small.biased[0, 0] - small.cka[0, 0]) > 3 * abs(result.biased[0, 0] - result.cka[0, 0])


def test_chunked_gram_accumulation_equals_the_one_shot_gram(tmp_path):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(21, 4, 5, 6, generator=g, dtype=torch.float64) + 3.0  # 120 features per example, not centred
    flat = x.reshape(21, -1)
    torch.testing.assert_close(accumulate_gram(flat[:, c : c + 7] for c in range(0, 120, 7)), flat @ flat.T)
    centred = flat - flat.mean(dim=0)
    acc = GramAccumulator(21, chunk_size=11, directory=tmp_path)
    for start in (0, 8, 16):  # image batches of 8, 8, 5, out of order
        acc.update(x[start : start + 8].float(), start) if start != 8 else None
    with pytest.raises(ValueError, match="missing the features of 8 of 21"):
        acc.compute()
    acc.update(x[8:16], 8)
    torch.testing.assert_close(
        acc.compute(), centred.float().double() @ centred.float().double().T, rtol=1e-5, atol=1e-4
    )
    one_chunk = GramAccumulator(21, chunk_size=1000)
    one_chunk.update(x, 0)
    torch.testing.assert_close(acc.compute(), one_chunk.compute(), rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="values per example"):
        acc.update(torch.zeros(2, 7), 0)
    with pytest.raises(ValueError, match="outside"):
        acc.update(torch.zeros(2, 120), 20)
    acc.close()
    one_chunk.close()
    assert not list(tmp_path.iterdir())  # the stored features are deleted


def test_jackknife_equals_brute_force_leave_one_out_and_shrinks_with_n():
    x, y = _features(n=40, seed=4)
    result = _full(x, y, num_permutations=0)
    leave_out = []
    for i in range(40):
        keep = [j for j in range(40) if j != i]
        mb = MinibatchCKA(1, 1)
        mb.update([x[keep]], [y[keep]])
        leave_out.append(float(mb.compute()[0, 0]))
    leave_out = np.array(leave_out)
    se = math.sqrt(39 / 40 * ((leave_out - leave_out.mean()) ** 2).sum())
    assert result.ci_high[0, 0] - result.cka[0, 0] == pytest.approx(1.959964 * se, rel=1e-5)
    assert result.ci_low[0, 0] < result.cka[0, 0] < result.ci_high[0, 0]
    widths = {}
    for n in (64, 512):
        x, y = _features(n=n, seed=6)
        r = _full(x, y, num_permutations=0)
        assert r.ci_low[0, 0] < r.cka[0, 0] < r.ci_high[0, 0]
        widths[n] = r.ci_high[0, 0] - r.ci_low[0, 0]
    print(f"jackknife 95 % interval width: {widths}")
    assert widths[512] < 0.5 * widths[64]


def test_permutation_null_is_near_zero_and_below_a_real_similarity():
    x, y = _features(n=256, seed=8)
    result = _full(x, y, num_permutations=100, seed=1)
    null = f"{result.null_mean[0]:.4f} [{result.null_low[0]:.4f}, {result.null_high[0]:.4f}]"
    print(f"cka {result.cka[0, 0]:.3f}, null mean and 95 % range {null}")
    assert abs(result.null_mean[0]) < 0.01
    assert result.null_low[0] < 0 < result.null_high[0] < 0.05 < result.cka[0, 0]
    assert result.p_value[0] == pytest.approx(1 / 101)
    again = _full(x, y, num_permutations=100, seed=1)
    assert again.null_high[0] == result.null_high[0]  # seeded
    shuffled = _full(x, y[torch.randperm(256, generator=torch.Generator().manual_seed(0))], num_permutations=100)
    assert shuffled.p_value[0] > 0.01  # no pairing left to find


def test_negative_values_are_kept_and_a_constant_layer_reports_its_self_hsic():
    g = torch.Generator().manual_seed(0)
    values = []
    for _ in range(10):
        x, y = torch.randn(12, 40, generator=g), torch.randn(12, 40, generator=g)
        values.append(_full(x, y, num_permutations=0).cka[0, 0])
    assert min(values) < 0  # not clipped to [0, 1]
    x, y = _features(n=16)
    constant = torch.ones(16, 5, dtype=torch.float64) * torch.arange(5.0, dtype=torch.float64)
    result = cka_from_grams([gram_linear(x), gram_linear(constant)], [gram_linear(y)], ["good", "flat"], ["y"])
    assert result.self_hsic_a[1] == pytest.approx(0.0, abs=1e-9) and result.self_hsic_a[0] > 0
    assert np.isnan(result.cka[1, 0]) and np.isfinite(result.cka[0, 0])
    diagonal = result.diagonal()
    assert diagonal["layers"] == ["good"] and diagonal["self_hsic_a"][0] == pytest.approx(result.self_hsic_a[0])
    with pytest.raises(ValueError, match=r"non-positive self-HSIC .*\['flat'\]"):
        cka_from_grams([gram_linear(constant)], [gram_linear(y)], ["flat"], ["y"], undefined="raise")
    with pytest.raises(ValueError, match="at least 5 images"):
        _full(x[:4], y[:4])
    with pytest.raises(ValueError, match="same images"):
        cka_from_grams([gram_linear(x)], [gram_linear(y[:10])])


def test_minibatch_result_has_a_leave_one_batch_out_jackknife():
    x, y = _features(n=64, seed=9)
    mb = MinibatchCKA(1, 1)
    batches = [range(i, i + 16) for i in range(0, 64, 16)]
    for b in batches:
        mb.update([x[list(b)]], [y[list(b)]])
    result = mb.result(["l"], ["l"])
    leave_out = []
    for skip in range(4):
        other = MinibatchCKA(1, 1)
        for k, b in enumerate(batches):
            if k != skip:
                other.update([x[list(b)]], [y[list(b)]])
        leave_out.append(float(other.compute()[0, 0]))
    se = math.sqrt(3 / 4 * ((np.array(leave_out) - np.mean(leave_out)) ** 2).sum())
    assert result.estimator == "minibatch" and result.num_images == 64
    assert result.ci_high[0, 0] - result.cka[0, 0] == pytest.approx(1.959964 * se, rel=1e-5)
    assert result.biased is None and np.isnan(result.null_mean).all()


def test_later_layers_change_less_only_where_intervals_do_not_overlap():
    layers = ["embed", "s1.b0", "s2.b0", "s2.b1"]

    def curve(values, half_width):
        return {
            "layers": layers,
            "cka": values,
            "ci_low": [None if v is None else v - half_width for v in values],
            "ci_high": [None if v is None else v + half_width for v in values],
        }

    mesa = curve([1.0, 0.9, 0.7, 0.6], 0.02)
    masked = curve([1.0, 0.9, 0.5, 0.4], 0.02)
    verdict = later_layers_change_less(mesa, masked)
    assert verdict["verdict"] == "holds" and verdict["layers"] == {"s2.b0": "higher", "s2.b1": "higher"}
    assert "s2.b0, s2.b1" in verdict["statement"] and not any(c.isdigit() for c in verdict["statement"].split("s2")[0])
    wide = later_layers_change_less(curve([1.0, 0.9, 0.7, 0.43], 0.05), masked)  # s2.b1: 0.38..0.48 vs 0.38..0.42
    assert wide["verdict"] == "partly" and wide["layers"] == {"s2.b0": "higher", "s2.b1": "overlap"}
    assert later_layers_change_less(masked, mesa)["verdict"] == "opposite"
    assert later_layers_change_less(curve([1.0, 0.9, 0.55, 0.45], 0.1), masked)["verdict"] == "not shown"
    mixed = later_layers_change_less(curve([1.0, 0.9, 0.7, 0.2], 0.02), masked)
    assert mixed["verdict"] == "mixed" and mixed["layers"]["s2.b1"] == "lower"
    undefined = later_layers_change_less(curve([1.0, 0.9, None, None], 0.02), masked)
    assert undefined["verdict"] == "undefined"
    chosen = later_layers_change_less(mesa, masked, layers=["embed", "s1.b0"])
    assert chosen["verdict"] == "not shown"
    with pytest.raises(ValueError, match="different layers"):
        later_layers_change_less(mesa, {**masked, "layers": layers[::-1]})


# ------------------------------------------------------------------------------------------- on a model


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, size=(1, 32, 48, 3))
    return list((0.5 * base + 0.5 * rng.uniform(0, 255, size=(count, 32, 48, 3))).astype(np.uint8))


def test_layerwise_full_and_minibatch_results_on_a_tiny_model(tmp_path):
    from mesa_hf import MeSaImageProcessor

    reference = tiny_depth_model(seed=0)
    changed = tiny_depth_model(seed=0)
    with torch.no_grad():  # change only the last stage: the layers before keep CKA 1
        for parameter in changed.backbone.encoder.layers[-1].parameters():
            parameter.add_(2.0 * torch.randn_like(parameter))
    images, processor = _images(12), MeSaImageProcessor()
    kwargs = dict(input_size=(32, 48), progress=False, batch_size=5)
    results = layerwise_cka_results(
        reference,
        {"same": tiny_depth_model(seed=0), "changed": changed},
        images,
        processor,
        **kwargs,
        num_permutations=20,
        chunk_size=100,
        work_dir=tmp_path,
    )
    assert not list(tmp_path.iterdir())  # stored features removed
    same, result = results["same"], results["changed"]
    names = result.layers_a
    assert names[0] == "embed" and result.cka.shape == (len(names), len(names)) and result.num_images == 12
    np.testing.assert_allclose(np.diagonal(same.cka), 1.0, atol=1e-6)
    last = [i for i, n in enumerate(names) if n.startswith("s4.")]
    assert np.diagonal(result.cka)[: last[0]] == pytest.approx(1.0, abs=1e-6)
    assert all(result.cka[i, i] < 0.99 for i in last)
    assert (result.ci_low <= result.cka + 1e-12).all() and (result.cka <= result.ci_high + 1e-12).all()
    assert np.isfinite(result.null_high).all() and (result.self_hsic_a > 0).all()
    one_chunk = layerwise_cka_results(
        reference, {"changed": changed}, images, processor, **kwargs, num_permutations=0, chunk_size=10**6
    )["changed"]
    np.testing.assert_allclose(one_chunk.cka, result.cka, rtol=1e-6, atol=1e-9)
    minibatch = layerwise_cka_results(
        reference, {"changed": changed}, images, processor, estimator="minibatch", **kwargs
    )["changed"]
    matrices, layer_names = layerwise_cka(reference, {"changed": changed}, images, processor, **kwargs)
    np.testing.assert_allclose(matrices["changed"], minibatch.cka)
    assert layer_names == names and minibatch.interval == "jackknife, leave one of 3 batches out"
    with pytest.raises(ValueError, match="estimator must be one of"):
        layerwise_cka_results(reference, {"x": changed}, images, processor, estimator="bootstrap", **kwargs)
    with pytest.raises(ValueError, match="at least 5 images"):
        layerwise_cka_results(reference, {"x": changed}, images[:4], processor, **kwargs)

    png = plot_cka_results(tmp_path / "fig" / "cka.png", results)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    saved = json.loads(write_cka_results(tmp_path / "cka.json", results).read_text())
    assert saved["changed"]["layers_a"] == names and saved["changed"]["estimator"] == "full"
    assert saved["changed"]["cka"][0][0] == pytest.approx(result.cka[0, 0])
    curves = {"mesa": result.diagonal(), "masked": minibatch.diagonal()}
    assert plot_layer_cka(tmp_path / "curves.png", curves, "per layer").read_bytes()[:4] == b"\x89PNG"


def test_figure_axes_cover_negative_values(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from mesa_hf.analysis.plotting import _value_limits

    low, high = _value_limits([np.array([0.5, -0.46, np.nan]), np.array([1.2])])
    assert low < -0.46 and high > 1.2
    names = ["a", "b"]
    matrix = np.array([[-0.46, 0.2], [0.1, 0.9]])
    png = plot_cka_figure(tmp_path / "neg.png", {"x": matrix}, names, intervals={"x": (matrix - 0.1, matrix + 0.1)})
    assert png.exists() and not (tmp_path / "neg.png.tmp").exists()

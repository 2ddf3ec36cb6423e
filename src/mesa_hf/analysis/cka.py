"""Centred kernel alignment (CKA) between representations.

- Linear CKA (Kornblith et al. 2019): ``||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)`` on column-centred X (n, d1), Y (n, d2)
  (the biased estimator; :func:`linear_cka`).
- Debiased linear CKA (Song et al. 2012 unbiased HSIC, as in Nguyen et al. 2021):
  ``HSIC₁(K, L) / sqrt(HSIC₁(K, K) · HSIC₁(L, L))`` on the (n, n) linear Gram matrices K = X Xᵀ, L = Y Yᵀ.
  :func:`cka_from_grams` computes it full-batch (one U-statistic over all n images, every image pair used), with a
  leave-one-image-out jackknife interval and a permutation null (images of B shuffled against those of A).
  :class:`GramAccumulator` builds the exact Gram from image batches, summing ``X_c X_cᵀ`` over feature chunks so
  memory stays at n² plus one (n, chunk) block.
- Minibatch CKA (Nguyen et al. 2021): the HSIC₁ terms of (m, m) batch Grams summed over batches, then normalised
  once (:class:`MinibatchCKA`), with a leave-one-batch-out jackknife interval.

The debiased value is *not* bounded to [0, 1]: a negative value means no detectable similarity and is reported as
it is. A layer whose self-HSIC is not positive (features that do not vary over the images) has no CKA (NaN, or an
error), and its self-HSIC is reported so the reason is visible.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def _as_features(x: ArrayLike, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float64))
    if t.ndim < 2:
        raise ValueError(f"{name} must be (n, d) features (or (n, ...) to be flattened), got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1).to(dtype=torch.float64)


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Biased linear CKA of features x (n, d1) and y (n, d2) of the same n examples; in [0, 1].

    Extra trailing dimensions are flattened. Computed via the (n, n) Gram matrices when that is cheaper.
    """
    x, y = _as_features(x, "x"), _as_features(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must describe the same examples: x has {x.shape[0]} rows, y has {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("linear_cka needs at least 2 examples")
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    n = x.shape[0]
    if n < min(x.shape[1], y.shape[1]):
        # ||YᵀX||²_F = tr(K L) with K = X Xᵀ, L = Y Yᵀ; ||XᵀX||_F = ||K||_F.
        k, gram_l = x @ x.T, y @ y.T
        cross, norm_x, norm_y = (k * gram_l).sum(), k.norm(), gram_l.norm()
    else:
        cross, norm_x, norm_y = (y.T @ x).pow(2).sum(), (x.T @ x).norm(), (y.T @ y).norm()
    if norm_x == 0 or norm_y == 0:
        raise ValueError("linear_cka is undefined for constant features (zero variance after centring)")
    return float(cross / (norm_x * norm_y))


def unbiased_hsic(k: torch.Tensor, gram_l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC₁ (Song et al. 2012) of two (m, m) Gram matrices, m > 3.

    With zero diagonals: ``(tr(K L) + ΣK·ΣL / ((m−1)(m−2)) − 2·1ᵀ K L 1 / (m−2)) / (m (m−3))``.
    """
    m = k.shape[0]
    if m <= 3:
        raise ValueError(f"unbiased HSIC needs more than 3 examples per batch, got {m}")
    k = k.clone()
    gram_l = gram_l.clone()
    k.fill_diagonal_(0)
    gram_l.fill_diagonal_(0)
    trace_kl = (k * gram_l.T).sum()
    sum_k, sum_l = k.sum(), gram_l.sum()
    ones_k_l_ones = k.sum(dim=0) @ gram_l.sum(dim=1)
    return (trace_kl + sum_k * sum_l / ((m - 1) * (m - 2)) - 2 * ones_k_l_ones / (m - 2)) / (m * (m - 3))


def gram_linear(x: ArrayLike) -> torch.Tensor:
    """Linear-kernel Gram matrix ``X Xᵀ`` (m, m) of features (m, ...) flattened per example, float64."""
    x = _as_features(x, "features")
    return x @ x.T


def accumulate_gram(chunks: Iterable[ArrayLike]) -> torch.Tensor:
    """Exact linear Gram ``X Xᵀ`` (n, n), float64 on the chunks' device, from the column chunks ``X_c`` (n, d_c) of
    features X (n, d).

    ``Σ_c X_c X_cᵀ = X Xᵀ``: only one chunk is in memory at a time besides the (n, n) sum.
    """
    gram = None
    for chunk in chunks:
        x = _as_features(chunk, "feature chunk")
        if gram is None:
            gram = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
        elif x.shape[0] != gram.shape[0]:
            raise ValueError(f"feature chunks must all hold the same {gram.shape[0]} examples, got {x.shape[0]}")
        gram += x @ x.T
    if gram is None:
        raise ValueError("accumulate_gram got no feature chunks")
    return gram


class GramAccumulator:
    """Centred linear Gram matrix (n, n) of n examples whose features (n, d) arrive in batches of examples.

    Every image pair needs its product, so each batch's flattened features are written to a float32 file-backed
    array (n, d) in ``directory`` (a temporary folder by default; n·d·4 bytes on disk). :meth:`compute` then reads
    ``chunk_size`` feature columns at a time, centres them over the n examples and sums ``X_c X_cᵀ``: memory holds
    the (n, n) result and one (n, chunk_size) block.
    """

    def __init__(self, num_examples: int, chunk_size: int = 8192, directory: str | Path | None = None) -> None:
        if num_examples < 1:
            raise ValueError(f"GramAccumulator needs at least one example, got {num_examples}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.num_examples, self.chunk_size = int(num_examples), int(chunk_size)
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="mesa-cka-")
        self._directory = Path(directory if directory is not None else self._tmp.name)
        self._store: np.memmap | None = None
        self._filled = np.zeros(self.num_examples, dtype=bool)

    def update(self, features: ArrayLike, start: int) -> None:
        """Store the features (b, ...) of examples ``start .. start + b - 1`` (flattened per example)."""
        if isinstance(features, torch.Tensor):
            t = features.detach().to(device="cpu", dtype=torch.float32)
        else:
            t = torch.from_numpy(np.asarray(features, dtype=np.float32))
        if t.ndim < 2:
            raise ValueError(f"features must be (b, ...) per example, got shape {tuple(t.shape)}")
        x = t.reshape(t.shape[0], -1).numpy()
        stop = start + x.shape[0]
        if start < 0 or stop > self.num_examples:
            raise ValueError(f"examples {start}..{stop - 1} are outside 0..{self.num_examples - 1}")
        if self._store is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            handle, path = tempfile.mkstemp(suffix=".f32", dir=self._directory)
            os.close(handle)
            self._store = np.memmap(path, dtype=np.float32, mode="w+", shape=(self.num_examples, x.shape[1]))
        elif x.shape[1] != self._store.shape[1]:
            raise ValueError(
                f"features have {x.shape[1]} values per example, earlier batches had {self._store.shape[1]}"
            )
        self._store[start:stop] = x
        self._filled[start:stop] = True

    def compute(self) -> torch.Tensor:
        """(n, n) float64 Gram of the column-centred features."""
        if self._store is None or not self._filled.all():
            missing = int((~self._filled).sum())
            raise ValueError(f"GramAccumulator is missing the features of {missing} of {self.num_examples} examples")
        width = self._store.shape[1]

        def centred_chunks():
            for begin in range(0, width, self.chunk_size):
                chunk = torch.from_numpy(np.asarray(self._store[:, begin : begin + self.chunk_size], dtype=np.float64))
                yield chunk - chunk.mean(dim=0, keepdim=True)

        return accumulate_gram(centred_chunks())

    def close(self) -> None:
        """Delete the stored features."""
        path = None if self._store is None else self._store.filename
        self._store = None
        if path is not None:
            Path(path).unlink(missing_ok=True)
        if self._tmp is not None:
            self._tmp.cleanup()


def _double_centred(gram: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11ᵀ/n``: the Gram of the column-centred features, in O(n²)."""
    gram = gram.to(torch.float64)
    return gram - gram.mean(dim=0, keepdim=True) - gram.mean(dim=1, keepdim=True) + gram.mean()


def _zero_diagonal(gram: torch.Tensor) -> torch.Tensor:
    gram = gram.to(torch.float64).clone()
    gram.fill_diagonal_(0)
    return gram


def _hsic_from_sums(trace_kl, sum_k, sum_l, ones_k_l_ones, m: int):
    return (trace_kl + sum_k * sum_l / ((m - 1) * (m - 2)) - 2 * ones_k_l_ones / (m - 2)) / (m * (m - 3))


def _hsic_and_leave_one_out(k: torch.Tensor, gram_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased HSIC₁ of zero-diagonal symmetric Grams (n, n), and the n values with example i left out, in O(n²).

    Removing example i: ``tr(KL) -= 2 t_i`` (t = rowsum(K∘L)), ``ΣK -= 2 k_i`` (k = rowsum K), and
    ``1ᵀKL1 = Σ_b k_b l_b`` becomes ``Σ_b k_b l_b - k_i l_i - (L k)_i - (K l)_i + t_i``.
    """
    n = k.shape[0]
    rows_kl = (k * gram_l).sum(dim=1)
    row_k, row_l = k.sum(dim=1), gram_l.sum(dim=1)
    trace_kl, sum_k, sum_l, ones = rows_kl.sum(), row_k.sum(), row_l.sum(), row_k @ row_l
    full = _hsic_from_sums(trace_kl, sum_k, sum_l, ones, n)
    loo = _hsic_from_sums(
        trace_kl - 2 * rows_kl,
        sum_k - 2 * row_k,
        sum_l - 2 * row_l,
        ones - row_k * row_l - gram_l @ row_k - k @ row_l + rows_kl,
        n - 1,
    )
    return full, loo


def _ratio(cross: torch.Tensor, self_a: torch.Tensor, self_b: torch.Tensor) -> torch.Tensor:
    """``cross / sqrt(self_a · self_b)``, NaN where a self-HSIC is not positive (no CKA defined)."""
    defined = (self_a > 0) & (self_b > 0)
    denom = torch.sqrt(torch.where(defined, self_a * self_b, torch.ones_like(cross)))
    return torch.where(defined, cross / denom, torch.full_like(cross, torch.nan))


def _jackknife_interval(estimate: np.ndarray, leave_out: np.ndarray, confidence: float) -> tuple[np.ndarray, ...]:
    """Normal-approximation jackknife interval ``estimate ± z · se``; ``leave_out`` (..., g) holds the g
    leave-one-out values (NaN in any of them gives a NaN interval)."""
    g = leave_out.shape[-1]
    spread = ((leave_out - leave_out.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    se = np.sqrt((g - 1) / g * spread)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    return estimate - z * se, estimate + z * se, se


def _check_undefined(undefined: str) -> None:
    if undefined not in ("raise", "nan"):
        raise ValueError(f"undefined must be 'raise' or 'nan', got {undefined!r}")


@dataclass
class CKAResult:
    """CKA between every layer of model A and every layer of model B on the same images, with its uncertainty.

    Arrays are float64 numpy; NaN marks a layer pair with no CKA (a self-HSIC that is not positive).

    - ``cka`` (L_A, L_B): debiased CKA (unbiased HSIC); not clipped, may be negative.
    - ``ci_low``, ``ci_high`` (L_A, L_B): ``confidence`` jackknife interval (leave one image out for ``"full"``,
      leave one batch out for ``"minibatch"``; NaN with a single batch).
    - ``biased`` (L_A, L_B): the biased linear CKA (centred Grams, Kornblith et al.) for comparison with published
      heatmaps; ``"full"`` only (None for ``"minibatch"``).
    - ``self_hsic_a`` (L_A,), ``self_hsic_b`` (L_B,): unbiased self-HSIC of each layer (units: squared feature
      units; ≤ 0 means the layer's features do not vary over the images).
    - ``null_mean``, ``null_low``, ``null_high``, ``p_value`` (min(L_A, L_B),): permutation null of the same-index
      pair (i, i): CKA with B's images shuffled against A's, ``num_permutations`` times; its mean and
      ``confidence`` quantile range, and the one-sided p-value ``(1 + #{null ≥ cka}) / (1 + num_permutations)``.
      NaN when no permutations were run.
    """

    estimator: str
    num_images: int
    layers_a: list[str]
    layers_b: list[str]
    cka: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    self_hsic_a: np.ndarray
    self_hsic_b: np.ndarray
    biased: np.ndarray | None = None
    null_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    null_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    null_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    p_value: np.ndarray = field(default_factory=lambda: np.zeros(0))
    num_permutations: int = 0
    confidence: float = 0.95
    interval: str = "jackknife, leave one image out"

    def diagonal(self) -> dict[str, Any]:
        """Per-layer values of the same-index pairs (i, i) as JSON-ready lists (None for NaN):
        ``layers, cka, ci_low, ci_high, biased, self_hsic_a, self_hsic_b, null_mean, null_low, null_high,
        p_value``."""
        num = min(len(self.layers_a), len(self.layers_b))
        out: dict[str, Any] = {"layers": list(self.layers_a[:num])}
        for name in ("cka", "ci_low", "ci_high", "biased"):
            matrix = getattr(self, name)
            out[name] = None if matrix is None else _listed(np.diagonal(matrix)[:num])
        for name in ("self_hsic_a", "self_hsic_b"):
            out[name] = _listed(getattr(self, name)[:num])
        for name in ("null_mean", "null_low", "null_high", "p_value"):
            values = getattr(self, name)
            out[name] = _listed(values) if len(values) else [None] * num
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (matrices as nested lists, NaN as None)."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            out[name] = _listed(value) if isinstance(value, np.ndarray) else value
        return out


def _listed(values: np.ndarray) -> list:
    array = np.asarray(values, dtype=np.float64)
    return [_listed(row) for row in array] if array.ndim > 1 else [float(v) if np.isfinite(v) else None for v in array]


def _layer_names(names: Sequence[str] | None, count: int, which: str) -> list[str]:
    if names is None:
        return [str(i) for i in range(count)]
    if len(names) != count:
        raise ValueError(f"{len(names)} layer names given for {count} layers of {which}")
    return list(names)


def cka_from_grams(
    grams_a: Sequence[torch.Tensor],
    grams_b: Sequence[torch.Tensor],
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    num_permutations: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    undefined: str = "nan",
) -> CKAResult:
    """Full-batch debiased linear CKA of every (layer of A, layer of B) pair from the layers' (n, n) Gram matrices.

    One unbiased HSIC over all n images (n ≥ 5 for the jackknife), a leave-one-image-out jackknife interval for
    every pair, and a permutation null for the same-index pairs (see :class:`CKAResult`). ``undefined="raise"``
    raises ValueError when a layer's self-HSIC is not positive; ``"nan"`` leaves NaN in its row / column.
    """
    _check_undefined(undefined)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_permutations < 0:
        raise ValueError(f"num_permutations must be >= 0, got {num_permutations}")
    if not grams_a or not grams_b:
        raise ValueError("cka_from_grams needs at least one Gram matrix for A and one for B")
    shapes = {tuple(g.shape) for g in [*grams_a, *grams_b]}
    n = next(iter(shapes))[0]
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or n != next(iter(shapes))[1]:
        raise ValueError(f"Gram matrices must all be square over the same images, got shapes {sorted(shapes)}")
    if n < 5:
        raise ValueError(f"full-batch CKA with a jackknife needs at least 5 images, got {n}")
    names_a = _layer_names(layers_a, len(grams_a), "A")
    names_b = _layer_names(layers_b, len(grams_b), "B")
    zero_a = [_zero_diagonal(g) for g in grams_a]
    zero_b = [_zero_diagonal(g) for g in grams_b]
    self_a = [_hsic_and_leave_one_out(k, k) for k in zero_a]
    self_b = [_hsic_and_leave_one_out(k, k) for k in zero_b]
    hsic_aa = torch.stack([full for full, _ in self_a])
    hsic_bb = torch.stack([full for full, _ in self_b])
    if undefined == "raise" and ((hsic_aa <= 0).any() or (hsic_bb <= 0).any()):
        bad = [names_a[i] for i in torch.nonzero(hsic_aa <= 0).flatten()]
        bad += [names_b[j] for j in torch.nonzero(hsic_bb <= 0).flatten()]
        raise ValueError(f"CKA is undefined for layers with non-positive self-HSIC (constant features): {bad}")

    centred_a = [_double_centred(g) for g in grams_a]
    centred_b = [_double_centred(g) for g in grams_b]
    cka = np.full((len(grams_a), len(grams_b)), np.nan)
    biased = np.full_like(cka, np.nan)
    leave_out = np.full((*cka.shape, n), np.nan)
    for i, k in enumerate(zero_a):
        for j, gram_l in enumerate(zero_b):
            full, loo = _hsic_and_leave_one_out(k, gram_l)
            cka[i, j] = float(_ratio(full, hsic_aa[i], hsic_bb[j]))
            leave_out[i, j] = _ratio(loo, self_a[i][1], self_b[j][1]).numpy()
            norms = centred_a[i].norm() * centred_b[j].norm()
            biased[i, j] = float((centred_a[i] * centred_b[j]).sum() / norms) if norms > 0 else np.nan
    ci_low, ci_high, _ = _jackknife_interval(cka, leave_out, confidence)

    num_diagonal = min(len(grams_a), len(grams_b))
    null_mean, null_low, null_high, p_value = (np.full(num_diagonal, np.nan) for _ in range(4))
    if num_permutations:
        generator = torch.Generator().manual_seed(seed)
        perms = [torch.randperm(n, generator=generator) for _ in range(num_permutations)]
        for i in range(num_diagonal):
            k, gram_l = zero_a[i], zero_b[i]
            row_k, row_l = k.sum(dim=1), gram_l.sum(dim=1)
            null = torch.stack(
                [
                    _hsic_from_sums((k * gram_l[p][:, p]).sum(), row_k.sum(), row_l.sum(), row_k @ row_l[p], n)
                    for p in perms
                ]
            )
            null = _ratio(null, hsic_aa[i], hsic_bb[i]).numpy()
            if np.isfinite(null).all():
                tail = (1 - confidence) / 2
                null_mean[i] = null.mean()
                null_low[i], null_high[i] = np.quantile(null, [tail, 1 - tail])
                p_value[i] = (1 + (null >= cka[i, i]).sum()) / (1 + num_permutations)
    return CKAResult(
        estimator="full",
        num_images=n,
        layers_a=names_a,
        layers_b=names_b,
        cka=cka,
        ci_low=ci_low,
        ci_high=ci_high,
        self_hsic_a=hsic_aa.numpy(),
        self_hsic_b=hsic_bb.numpy(),
        biased=biased,
        null_mean=null_mean,
        null_low=null_low,
        null_high=null_high,
        p_value=p_value,
        num_permutations=num_permutations,
        confidence=confidence,
        interval="jackknife, leave one image out",
    )


class MinibatchCKA:
    """Minibatch linear CKA between every layer of model A and every layer of model B.

    Call :meth:`update` once per batch with the per-layer features of both models on the same images; then
    :meth:`compute` returns the (num_layers_a, num_layers_b) CKA matrix and :meth:`result` a :class:`CKAResult`
    with a leave-one-batch-out jackknife interval. Features (m, ...) are flattened per example; batches need
    m > 3 examples.
    """

    def __init__(self, num_layers_a: int, num_layers_b: int | None = None) -> None:
        self.num_layers_a = int(num_layers_a)
        self.num_layers_b = int(num_layers_a if num_layers_b is None else num_layers_b)
        self.reset()

    def reset(self) -> None:
        self.hsic_ab = torch.zeros(self.num_layers_a, self.num_layers_b, dtype=torch.float64)
        self.hsic_aa = torch.zeros(self.num_layers_a, dtype=torch.float64)
        self.hsic_bb = torch.zeros(self.num_layers_b, dtype=torch.float64)
        self.num_batches = 0
        self.num_examples = 0
        self._batch_terms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def update(self, features_a: Sequence[ArrayLike], features_b: Sequence[ArrayLike]) -> None:
        """Add one batch: ``features_a[i]`` is layer i of model A on the batch, (m, ...); same m everywhere."""
        if len(features_a) != self.num_layers_a or len(features_b) != self.num_layers_b:
            raise ValueError(
                f"expected {self.num_layers_a} layers for A and {self.num_layers_b} for B, "
                f"got {len(features_a)} and {len(features_b)}"
            )
        grams_a = [gram_linear(f) for f in features_a]
        grams_b = [gram_linear(f) for f in features_b]
        sizes = {g.shape[0] for g in grams_a + grams_b}
        if len(sizes) != 1:
            raise ValueError(f"all layers must hold the same examples; got batch sizes {sorted(sizes)}")
        ab = torch.stack([torch.stack([unbiased_hsic(ka, lb) for lb in grams_b]) for ka in grams_a])
        aa = torch.stack([unbiased_hsic(ka, ka) for ka in grams_a])
        bb = torch.stack([unbiased_hsic(lb, lb) for lb in grams_b])
        ab, aa, bb = ab.cpu(), aa.cpu(), bb.cpu()
        self.hsic_ab += ab
        self.hsic_aa += aa
        self.hsic_bb += bb
        self._batch_terms.append((ab, aa, bb))
        self.num_batches += 1
        self.num_examples += sizes.pop()

    def compute(self, undefined: str = "raise") -> np.ndarray:
        """(num_layers_a, num_layers_b) float64 array of minibatch CKA values (not clipped; may be negative).

        A layer whose features do not vary over the images (self-HSIC <= 0) has no CKA: ``undefined="raise"``
        raises ValueError, ``"nan"`` puts NaN in its row / column.
        """
        _check_undefined(undefined)
        if self.num_batches == 0:
            raise ValueError("MinibatchCKA is empty: call update() with at least one batch first")
        if undefined == "raise" and ((self.hsic_aa <= 0).any() or (self.hsic_bb <= 0).any()):
            raise ValueError("minibatch CKA is undefined for a layer with zero self-HSIC (constant features)")
        return _ratio(self.hsic_ab, self.hsic_aa[:, None], self.hsic_bb[None, :]).numpy()

    def result(
        self,
        layers_a: Sequence[str] | None = None,
        layers_b: Sequence[str] | None = None,
        confidence: float = 0.95,
        undefined: str = "nan",
    ) -> CKAResult:
        """:class:`CKAResult` of the batches so far: leave-one-batch-out jackknife interval (NaN with one batch),
        self-HSIC as the mean over batches, no biased CKA and no permutation null."""
        cka = self.compute(undefined)
        if self.num_batches > 1:
            leave_out = np.stack(
                [
                    _ratio(self.hsic_ab - ab, (self.hsic_aa - aa)[:, None], (self.hsic_bb - bb)[None, :]).numpy()
                    for ab, aa, bb in self._batch_terms
                ],
                axis=-1,
            )
            ci_low, ci_high, _ = _jackknife_interval(cka, leave_out, confidence)
        else:
            ci_low, ci_high = np.full_like(cka, np.nan), np.full_like(cka, np.nan)
        num_diagonal = min(self.num_layers_a, self.num_layers_b)
        return CKAResult(
            estimator="minibatch",
            num_images=self.num_examples,
            layers_a=_layer_names(layers_a, self.num_layers_a, "A"),
            layers_b=_layer_names(layers_b, self.num_layers_b, "B"),
            cka=cka,
            ci_low=ci_low,
            ci_high=ci_high,
            self_hsic_a=(self.hsic_aa / self.num_batches).numpy(),
            self_hsic_b=(self.hsic_bb / self.num_batches).numpy(),
            null_mean=np.full(num_diagonal, np.nan),
            null_low=np.full(num_diagonal, np.nan),
            null_high=np.full(num_diagonal, np.nan),
            p_value=np.full(num_diagonal, np.nan),
            confidence=confidence,
            interval=f"jackknife, leave one of {self.num_batches} batches out",
        )


def _last_stage_layers(layers: Sequence[str]) -> list[str]:
    stages = [int(name[1:].split(".")[0]) for name in layers if name.startswith("s") and "." in name]
    if not stages:
        raise ValueError(f"no Swin-V2 block names (s<stage>.b<block>) among the layers {list(layers)}")
    return [name for name in layers if name.startswith(f"s{max(stages)}.")]


def later_layers_change_less(
    a: Mapping[str, Sequence],
    b: Mapping[str, Sequence],
    name_a: str = "MeSa",
    name_b: str = "masked-only",
    layers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Whether A's later layers change less in fine-tuning than B's (higher CKA between pre-trained and fine-tuned
    encoder), counted only on layers where the two intervals do not overlap.

    Args:
        a, b: per-layer curves with ``layers``, ``cka``, ``ci_low``, ``ci_high`` (lists, None for undefined), e.g.
            :meth:`CKAResult.diagonal`; the same layer names in both.
        layers: the layers judged; default the last Swin-V2 stage's blocks (``s<last>.b*``).

    Returns:
        ``{"verdict", "layers": {layer: "higher" | "lower" | "overlap" | "undefined"}, "statement"}``. The verdict
        is ``"holds"`` (A higher on every judged layer), ``"opposite"`` (lower on every one), ``"partly"`` /
        ``"partly opposite"`` (higher / lower on some, overlapping on the rest), ``"mixed"`` (higher on some,
        lower on others), ``"not shown"`` (the intervals overlap wherever both are defined) or ``"undefined"``
        (no judged layer has both intervals). The statement names layers, holds no numbers.
    """
    if list(a["layers"]) != list(b["layers"]):
        raise ValueError(f"{name_a} and {name_b} have different layers: {list(a['layers'])} vs {list(b['layers'])}")
    names = list(a["layers"])
    judged = _last_stage_layers(names) if layers is None else list(layers)
    unknown = [name for name in judged if name not in names]
    if unknown or not judged:
        raise ValueError(f"layers to judge {unknown or judged} are not among {names}")
    per_layer: dict[str, str] = {}
    for name in judged:
        i = names.index(name)
        bounds = [curve[key][i] for curve in (a, b) for key in ("ci_low", "ci_high")]
        if any(v is None or not np.isfinite(v) for v in bounds):
            per_layer[name] = "undefined"
        elif bounds[0] > bounds[3]:
            per_layer[name] = "higher"
        elif bounds[1] < bounds[2]:
            per_layer[name] = "lower"
        else:
            per_layer[name] = "overlap"
    higher = [n for n, v in per_layer.items() if v == "higher"]
    lower = [n for n, v in per_layer.items() if v == "lower"]
    overlap = [n for n, v in per_layer.items() if v == "overlap"]
    defined = higher + lower + overlap
    listed = ", ".join
    if not defined:
        verdict = "undefined"
        statement = f"No claim: no judged layer ({listed(judged)}) has a CKA interval for both {name_a} and {name_b}"
    elif higher and lower:
        verdict = "mixed"
        statement = (
            f"Mixed: {name_a}'s CKA is above {name_b}'s on {listed(higher)} and below it on {listed(lower)}, "
            "with non-overlapping intervals"
        )
    elif higher:
        verdict = "holds" if len(higher) == len(defined) else "partly"
        statement = f"{name_a}'s later layers change less in fine-tuning than {name_b}'s on {listed(higher)}"
        statement += " (non-overlapping CKA intervals)"
        if overlap:
            statement += f"; the intervals overlap on {listed(overlap)}"
    elif lower:
        verdict = "opposite" if len(lower) == len(defined) else "partly opposite"
        statement = f"{name_a}'s later layers change more in fine-tuning than {name_b}'s on {listed(lower)}"
        statement += " (non-overlapping CKA intervals), the opposite of the paper"
        if overlap:
            statement += f"; the intervals overlap on {listed(overlap)}"
    else:
        verdict = "not shown"
        statement = (
            f"Not shown: the CKA intervals of {name_a} and {name_b} overlap on every judged layer ({listed(overlap)})"
        )
    undefined = [n for n, v in per_layer.items() if v == "undefined"]
    if undefined and defined:
        statement += f"; no interval on {listed(undefined)}"
    return {"verdict": verdict, "layers": per_layer, "statement": statement + "."}

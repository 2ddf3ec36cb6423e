"""Centred kernel alignment (CKA) between representations.

- Linear CKA (Kornblith et al. 2019): ``||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)`` on column-centred X (n, d1), Y (n, d2).
- Minibatch CKA (Nguyen et al. 2021): unbiased HSIC (Song et al. 2012) of linear kernels accumulated over
  batches, ``CKA = mean_b HSIC₁(K_b, L_b) / sqrt(mean_b HSIC₁(K_b, K_b) · mean_b HSIC₁(L_b, L_b))``, so that many
  images and large feature maps fit in memory: each batch only needs its (m, m) Gram matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def _as_features(x: ArrayLike, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float64))
    if t.ndim < 2:
        raise ValueError(f"{name} must be (n, d) features (or (n, ...) to be flattened), got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1).to(dtype=torch.float64)


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear CKA of features x (n, d1) and y (n, d2) of the same n examples; in [0, 1].

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


class MinibatchCKA:
    """Minibatch linear CKA between every layer of model A and every layer of model B.

    Call :meth:`update` once per batch with the per-layer features of both models on the same images; then
    :meth:`compute` returns the (num_layers_a, num_layers_b) CKA matrix. Features (m, ...) are flattened per
    example; batches need m > 3 examples.
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
        for i, ka in enumerate(grams_a):
            self.hsic_aa[i] += unbiased_hsic(ka, ka)
            for j, lb in enumerate(grams_b):
                self.hsic_ab[i, j] += unbiased_hsic(ka, lb)
        for j, lb in enumerate(grams_b):
            self.hsic_bb[j] += unbiased_hsic(lb, lb)
        self.num_batches += 1

    def compute(self, undefined: str = "raise") -> np.ndarray:
        """(num_layers_a, num_layers_b) float64 array of minibatch CKA values.

        A layer whose features do not vary over the images (self-HSIC <= 0) has no CKA: ``undefined="raise"``
        raises ValueError, ``"nan"`` puts NaN in its row / column.
        """
        if undefined not in ("raise", "nan"):
            raise ValueError(f"undefined must be 'raise' or 'nan', got {undefined!r}")
        if self.num_batches == 0:
            raise ValueError("MinibatchCKA is empty: call update() with at least one batch first")
        denom = torch.sqrt(self.hsic_aa[:, None].clamp_min(0) * self.hsic_bb[None, :].clamp_min(0))
        if (denom == 0).any() and undefined == "raise":
            raise ValueError("minibatch CKA is undefined for a layer with zero self-HSIC (constant features)")
        return torch.where(denom > 0, self.hsic_ab / denom.clamp_min(1e-300), torch.nan).numpy()

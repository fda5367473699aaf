"""Linear CKA between every pair of layers of two models, accumulated over minibatches.

Centred kernel alignment (Kornblith et al. 2019) compares two representations of the same
inputs: ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels
``K = X X^T``. Computed on a whole dataset it needs every layer's features of every image at
once. Nguyen, Raghu and Kornblith (2021, "Do Wide and Deep Networks Learn the Same Things?")
average the *unbiased* HSIC estimator (Song et al. 2012) over minibatches instead::

    CKA_minibatch = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) * mean_b HSIC_1(L_b, L_b))

which converges to the full-data value as the number of batches grows and holds only
``layers_a x layers_b`` running sums: memory does not grow with the number of images.
The unbiased estimator needs at least 4 images per batch. Like every linear CKA it is
invariant to orthogonal transforms and isotropic scaling of either side, not to arbitrary
invertible linear maps.
"""

from __future__ import annotations

import torch

from atml import timemap


def gram(features: torch.Tensor) -> torch.Tensor:
    """The linear kernel ``X X^T`` of ``(n, d)`` features, in float64 (HSIC subtracts large, close numbers)."""
    x = features.reshape(len(features), -1).double()
    return x @ x.T


def hsic_unbiased(k: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012)'s unbiased HSIC estimator of two ``(n, n)`` kernels ``K`` and ``L`` (here ``k``, ``m``;
    n >= 4): ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``, ``~``: diagonal zeroed."""
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs at least 4 samples per batch, got {n}")
    k = k - torch.diag(torch.diagonal(k))
    m = m - torch.diag(torch.diagonal(m))
    trace = (k * m).sum()  # tr(K L) for symmetric kernels
    sums = k.sum() * m.sum() / ((n - 1) * (n - 2))
    cross = 2 * (k.sum(0) @ m.sum(0)) / (n - 2)
    return (trace + sums - cross) / (n * (n - 3))


class MinibatchCKA:
    """Running sums of the unbiased HSIC between every layer of A and every layer of B.

    ``update`` takes one batch's features, one ``(n, d_i)`` tensor per layer (any widths), for
    the same ``n`` images on both sides; ``value()`` is the ``(layers_a, layers_b)`` CKA matrix.
    Pass the same list as both sides for a model against itself.
    """

    def __init__(self, layers_a: int, layers_b: int) -> None:
        self.cross = torch.zeros(layers_a, layers_b, dtype=torch.float64)
        self.self_a = torch.zeros(layers_a, dtype=torch.float64)
        self.self_b = torch.zeros(layers_b, dtype=torch.float64)
        self.batches = 0
        self.images = 0

    def update(self, features_a: list[torch.Tensor], features_b: list[torch.Tensor]) -> None:
        if len(features_a) != len(self.self_a) or len(features_b) != len(self.self_b):
            raise ValueError(f"expected {len(self.self_a)} and {len(self.self_b)} layers, got {len(features_a)} and "
                             f"{len(features_b)}")
        grams_a = [gram(f) for f in features_a]
        grams_b = grams_a if features_b is features_a else [gram(f) for f in features_b]
        for i, k in enumerate(grams_a):
            self.self_a[i] += hsic_unbiased(k, k).cpu()
            for j, m in enumerate(grams_b):
                self.cross[i, j] += hsic_unbiased(k, m).cpu()
        for j, m in enumerate(grams_b):
            self.self_b[j] += hsic_unbiased(m, m).cpu()
        self.batches += 1
        self.images += len(features_a[0])

    def value(self) -> torch.Tensor:
        """The CKA matrix; NaN where a layer's self-HSIC is not positive (a constant layer: no signal)."""
        if not self.batches:
            raise ValueError("no batches were added")
        norm = torch.sqrt(torch.outer(self.self_a, self.self_b))
        return torch.where(norm > 0, self.cross / norm.clamp_min(1e-300), torch.full_like(norm, float("nan")))


@timemap.counted("analysis")
def cka(x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """CKA of two ``(n, d)`` feature sets of the same inputs: unbiased HSIC on the whole set (``batch_size``
    None) or averaged over minibatches of ``batch_size``."""
    acc = MinibatchCKA(1, 1)
    step = batch_size or len(x)
    for start in range(0, len(x) - step + 1, step):  # whole batches only: every batch has the same weight
        acc.update([x[start:start + step]], [y[start:start + step]])
    return float(acc.value()[0, 0])

"""Sample quality without Inception: Frechet distance, precision/recall, class coverage.

All functions take feature arrays ``(N, D)`` from one feature extractor; which extractor
(and how many samples, against which reference split) must be stated with every number.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from atml import timemap


class InvalidMetric(ValueError):
    """A figure that cannot be computed honestly from these samples; the message says why."""


@timemap.counted("analysis")
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to a and b."""
    return frechet_from_statistics(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


@timemap.counted("analysis")
def frechet_from_statistics(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray,
                            eps: float = 1e-6, imaginary_tolerance: float = 1e-3) -> float:
    """The Frechet distance of two Gaussians, with pytorch-fid's numerical safeguards.

    A singular product (rank-deficient covariances, few samples) is retried with ``eps``
    added to both diagonals. The square root of a product of covariance matrices is real;
    a tiny imaginary part is rounding and dropped, a larger one (any diagonal entry above
    ``imaginary_tolerance``) means the result is not a distance and raises :class:`InvalidMetric`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # rank-deficient with few samples; handled below
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(cov_a)) * eps
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if not np.isfinite(covmean).all():
        raise InvalidMetric("the covariance product has no finite square root, even regularised")
    if np.iscomplexobj(covmean):
        worst = float(np.abs(np.diagonal(covmean).imag).max())
        if worst > imaginary_tolerance:
            raise InvalidMetric(f"the square root of the covariance product has an imaginary part of {worst:.3g} "
                                f"(tolerance {imaginary_tolerance:g}); the Frechet distance is not defined here")
        covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


@timemap.counted("analysis")
def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds.

    Precision: share of generated samples inside the real manifold (quality);
    recall: share of real samples inside the generated manifold (coverage; low = mode collapse).
    """
    return _coverage(real, fake, k), _coverage(fake, real, k)


def _coverage(manifold: np.ndarray, queries: np.ndarray, k: int, chunk: int = 1024) -> float:
    """Share of ``queries`` within the k-NN radius of at least one manifold sample (exact)."""
    radii = NearestNeighbors(n_neighbors=k + 1).fit(manifold).kneighbors(manifold)[0][:, -1]  # (M,); self is 0th
    inside = [(pairwise_distances(block, manifold) <= radii[None]).any(axis=1)  # (chunk, M) at a time
              for block in np.array_split(queries, max(1, len(queries) // chunk))]
    return float(np.concatenate(inside).mean())


@timemap.counted("analysis")
def class_histogram(predictions: np.ndarray, classes: int) -> tuple[np.ndarray, float]:
    """Share of samples per predicted class and its entropy normalised to [0, 1] (1: uniform)."""
    hist = np.bincount(predictions, minlength=classes) / max(len(predictions), 1)
    nonzero = hist[hist > 0]
    return hist, float(-(nonzero * np.log(nonzero)).sum() / np.log(classes)) + 0.0  # + 0.0: never -0.0

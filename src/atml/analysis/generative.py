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


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to a and b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # rank-deficient with few samples; handled below
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():  # near-singular product: regularise, as pytorch-fid does
            offset = np.eye(len(cov_a)) * 1e-6
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


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


def class_histogram(predictions: np.ndarray, classes: int) -> tuple[np.ndarray, float]:
    """Share of samples per predicted class and its entropy normalised to [0, 1] (1: uniform)."""
    hist = np.bincount(predictions, minlength=classes) / max(len(predictions), 1)
    nonzero = hist[hist > 0]
    return hist, float(-(nonzero * np.log(nonzero)).sum() / np.log(classes))

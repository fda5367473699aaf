"""How well features separate classes, in numbers and in 2-D pictures.

Everything here takes plain arrays (features ``(N, D)``, integer labels ``(N,)``) and
uses scikit-learn (k-NN, logistic regression, silhouette, t-SNE, PCA), umap-learn, and
openTSNE for t-SNE when it is installed.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import confusion_matrix, silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from atml import timemap
from atml.errors import UsageError


def _cv(labels: np.ndarray, seed: int) -> StratifiedKFold:
    folds = int(min(5, np.bincount(labels).min()))
    return StratifiedKFold(n_splits=max(folds, 2), shuffle=True, random_state=seed)


@timemap.counted("analysis")
def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a k-nearest-neighbour classifier (cosine distance)."""
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine")
    return float(cross_val_score(knn, features, labels, cv=_cv(labels, seed)).mean())


@timemap.counted("analysis")
def linear_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float, np.ndarray]:
    """Cross-validated logistic-regression accuracy and the out-of-fold predictions."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny smoke sets
        predictions = cross_val_predict(probe, features, labels, cv=_cv(labels, seed))
    return float((predictions == labels).mean()), predictions


@timemap.counted("analysis")
def silhouette(features: np.ndarray, labels: np.ndarray, metric: str = "cosine") -> float:
    """Mean silhouette of the true classes: 1 tight and apart, 0 overlapping (cosine for
    features, euclidean for 2-D embeddings, where distances are what the picture shows)."""
    return float(silhouette_score(features, labels, metric=metric))


@timemap.counted("analysis")
def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between two feature sets of N inputs."""
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    return float(cross / (np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")))


@timemap.counted("analysis")
def reduce(features: np.ndarray, dims: int = 50, seed: int = 0) -> np.ndarray:
    """PCA to at most ``dims`` dimensions, the usual first step before t-SNE/UMAP."""
    dims = min(dims, features.shape[0] - 1, features.shape[1])
    return PCA(n_components=dims, random_state=seed).fit_transform(features) if features.shape[1] > dims else features


def tsne_backend() -> str:
    """``openTSNE`` when it is installed (FFT-accelerated, faster on large samples), else scikit-learn.

    ``ATML_TSNE=sklearn`` (or ``opentsne``) forces one.
    """
    wanted = os.environ.get("ATML_TSNE", "auto").lower()
    if wanted == "sklearn":
        return "scikit-learn"
    try:
        import openTSNE  # noqa: F401 - probing for the optional backend
    except ImportError:
        if wanted == "opentsne":
            raise UsageError("ATML_TSNE=opentsne but openTSNE is not installed: pip install openTSNE") from None
        return "scikit-learn"
    return "openTSNE"


@timemap.counted("analysis")
def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE after PCA to 50 dimensions, PCA initialisation, perplexity adapted to small samples.

    :func:`perplexity_for` keeps it below a third of the samples, so openTSNE never lowers it
    itself (it printed a raw "Perplexity value 5 is too high" line per call on small sets).
    """
    perplexity = perplexity_for(len(features))
    x = reduce(features, seed=seed)
    if tsne_backend() == "openTSNE":
        from openTSNE import TSNE as OpenTSNE

        return np.asarray(OpenTSNE(n_components=2, perplexity=perplexity, initialization="pca", random_state=seed,
                                   n_jobs=-1, verbose=False).fit(np.ascontiguousarray(x, dtype=np.float64)))
    result: np.ndarray = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)
    return result


def perplexity_for(samples: int) -> float:
    """t-SNE perplexity: 30, or a quarter of the samples when fewer (at least 5), never above a third of them."""
    return float(min(30, max(5, (samples - 1) / 4), max(1, (samples - 1) / 3)))


def _umap() -> Any:
    """umap-learn, imported with its numba functions compiled ``cache=True`` (umap 0.5 caches none of them): the
    machine code is written beside umap's sources (or to numba's user cache) by the first process and read by every
    later one, instead of being compiled again in each (about 8 s on 2 cores). Imported here, not at the top: a run
    that draws no UMAP never loads numba."""
    import sys

    if "umap" in sys.modules:
        return sys.modules["umap"]
    import numba

    njit = numba.njit

    def cached(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cache", True)
        return njit(*args, **kwargs)

    numba.njit = cached  # umap (and pynndescent) decorate at import: only while they are imported
    try:
        import umap
    finally:
        numba.njit = njit
    return umap


@timemap.counted("analysis")
def umap_embed(features: np.ndarray, seed: int = 0) -> np.ndarray:
    umap = _umap()
    neighbours = int(min(15, len(features) - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": determinism wanted
        reducer = umap.UMAP(n_neighbors=neighbours, random_state=seed)
        result: np.ndarray = reducer.fit_transform(reduce(features, seed=seed))
        return result


def confusion(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    result: np.ndarray = confusion_matrix(labels, predictions, labels=list(range(classes)))
    return result


@timemap.counted("analysis")
def closest_class_pairs(features: np.ndarray, labels: np.ndarray, top: int = 5) -> list[tuple[int, int, float]]:
    """Class pairs whose feature centroids have the highest cosine similarity."""
    centroids = np.stack([features[labels == c].mean(0) for c in np.unique(labels)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
    sims = centroids @ centroids.T
    pairs = [(i, j, float(sims[i, j])) for i in range(len(sims)) for j in range(i + 1, len(sims))]
    return sorted(pairs, key=lambda p: -p[2])[:top]


def balanced_indices(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Up to ``per_class`` random indices of each class, sorted."""
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return torch.cat(picks).sort().values

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


PROBE_C = 0.5
"""The logistic probe's inverse L2 strength (scikit-learn's ``C``)."""


def probe_device(device: torch.device) -> torch.device | None:
    """Where a run on ``device`` fits its k-NN and logistic probes: a CUDA device itself (in torch), else None
    (scikit-learn on the host; its numbers are what the torch versions are tested against)."""
    return device if device.type == "cuda" else None


@timemap.counted("analysis")
def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0,
                 device: torch.device | None = None) -> float:
    """Cross-validated accuracy of a k-nearest-neighbour classifier (cosine distance): scikit-learn's, or on
    ``device`` (see :func:`probe_device`) the same classifier as one matrix product per fold (:func:`knn_predict`),
    the same folds."""
    if device is None:
        knn = KNeighborsClassifier(n_neighbors=k, metric="cosine")
        return float(cross_val_score(knn, features, labels, cv=_cv(labels, seed)).mean())
    x, y = torch.as_tensor(features, device=device, dtype=torch.float32), torch.as_tensor(labels, device=device)
    scores = [float((knn_predict(x[train], y[train], x[test], k) == y[test]).double().mean())
              for train, test in _cv(labels, seed).split(features, labels)]
    return float(np.mean(scores))


def knn_predict(train: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """scikit-learn's ``KNeighborsClassifier(n_neighbors=k, metric="cosine")`` prediction: the majority class of the
    ``k`` most cosine-similar training rows, a tie going to the smallest class."""
    unit = torch.nn.functional.normalize(train, dim=1)
    nearest = (torch.nn.functional.normalize(queries, dim=1) @ unit.T).topk(min(k, len(train)), dim=1).indices
    votes = torch.nn.functional.one_hot(labels[nearest], int(labels.max()) + 1).sum(1)
    return votes.argmax(1)  # the first of equal counts: the smallest class, as scikit-learn's mode


@timemap.counted("analysis")
def linear_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0,
                 device: torch.device | None = None) -> tuple[float, np.ndarray]:
    """Cross-validated logistic-regression accuracy and the out-of-fold predictions: scikit-learn's (standardised,
    L2 with ``C`` = :data:`PROBE_C`, L-BFGS), or on ``device`` (see :func:`probe_device`) the same objective fitted
    there (:func:`fit_logistic`), the same folds."""
    if device is None:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=PROBE_C))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on tiny smoke sets
            predictions = cross_val_predict(probe, features, labels, cv=_cv(labels, seed))
        return float((predictions == labels).mean()), predictions
    x = torch.as_tensor(features, device=device, dtype=torch.float64)
    y = torch.as_tensor(labels, device=device)
    predictions = np.empty_like(labels)
    for train, test in _cv(labels, seed).split(features, labels):
        predictions[test] = probe_predict(x[train], y[train], x[test], int(labels.max()) + 1).cpu().numpy()
    return float((predictions == labels).mean()), predictions


def probe_predict(train: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, classes: int,
                  c: float = PROBE_C) -> torch.Tensor:
    """The classes a logistic probe fitted on ``train`` (standardised by its mean and deviation, as scikit-learn's
    ``StandardScaler``) predicts for ``queries``, in float64 on their device."""
    train, queries = train.double(), queries.double()
    mean, std = train.mean(0), train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature, as StandardScaler leaves it
    weight, bias = fit_logistic((train - mean) / std, labels, classes, c)
    return (((queries - mean) / std) @ weight + bias).argmax(1)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, c: float = PROBE_C,
                 max_iter: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS on ``x``'s device, scikit-learn's objective: ``C`` times the summed
    cross-entropy plus half the squared weights (the intercept unpenalised), divided by the rows (a rescaling with
    the same minimum). Returns the weights ``(D, classes)`` and the intercept ``(classes,)``."""
    weight = torch.zeros(x.shape[1], classes, dtype=x.dtype, device=x.device, requires_grad=True)
    bias = torch.zeros(classes, dtype=x.dtype, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=1e-6,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (c * torch.nn.functional.cross_entropy(x @ weight + bias, y, reduction="sum")
                + 0.5 * weight.pow(2).sum()) / len(x)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return weight.detach(), bias.detach()


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

import numpy as np
import pytest
import torch

from atml.analysis import representation as rep
from atml.models import layers as layers_lib


def _clusters(n_per=30, classes=3, dim=10, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 5
    labels = np.repeat(np.arange(classes), n_per)
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), dim)), labels


def test_cka_is_one_for_rotations_and_scalings_and_low_for_unrelated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20))
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert rep.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
    assert rep.linear_cka(x, rng.normal(size=(200, 20))) < 0.2


def test_separable_clusters_score_high_and_shuffled_labels_low():
    feats, labels = _clusters()
    assert rep.knn_accuracy(feats, labels) == 1.0
    assert rep.linear_probe(feats, labels)[0] == 1.0
    assert rep.silhouette(feats, labels) > 0.8
    shuffled = np.random.default_rng(1).permutation(labels)
    assert rep.silhouette(feats, shuffled) < 0.1 and rep.knn_accuracy(feats, shuffled) < 0.6


@pytest.mark.slow
def test_embeddings_are_2d_and_keep_clusters_apart():
    feats, labels = _clusters(dim=60)
    for embed in (rep.tsne, rep.umap_embed):
        points = embed(feats, seed=0)
        assert points.shape == (len(labels), 2)
        assert rep.knn_accuracy(points, labels) > 0.95


@pytest.mark.parametrize("backend, name", [("sklearn", "scikit-learn"), ("opentsne", "openTSNE")])
def test_both_tsne_backends_keep_clusters_apart(monkeypatch, backend, name):
    pytest.importorskip("openTSNE")  # installed by the test extra; optional for users
    monkeypatch.setenv("ATML_TSNE", backend)
    assert rep.tsne_backend() == name
    feats, labels = _clusters(dim=60)
    points = rep.tsne(feats, seed=0)
    assert points.shape == (len(labels), 2) and rep.knn_accuracy(points, labels) > 0.95


def test_hooks_are_removed_and_outputs_unchanged():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    with layers_lib.recorded(model, {"conv": model[0]}) as store:
        during = model(x)
    assert store["conv"].shape == (2, 4)  # pooled over space
    assert torch.equal(before, during) and not model[0]._forward_hooks


def test_closest_pairs_and_balanced_sample():
    feats = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [-1, 0]], dtype=float)
    labels = np.array([0, 1, 2, 3, 4])
    (a, b, sim), *_ = rep.closest_class_pairs(feats, labels)
    assert {a, b} in ({0, 1}, {2, 3}) and sim > 0.99
    idx = rep.balanced_indices(torch.tensor([0] * 10 + [1] * 3), per_class=4)
    assert torch.bincount(torch.tensor([0] * 10 + [1] * 3)[idx]).tolist() == [4, 3]


def test_tsne_on_a_small_set_prints_nothing_of_its_own(capfd, caplog):
    """openTSNE lowered a perplexity above a third of the samples itself and printed a raw line per call."""
    import numpy as np

    from atml.analysis import representation as rep

    assert rep.perplexity_for(9) == pytest.approx(8 / 3) and rep.perplexity_for(1000) == 30
    xy = rep.tsne(np.random.default_rng(0).normal(size=(9, 20)), seed=0)
    assert xy.shape == (9, 2)
    out = capfd.readouterr()
    assert "too high" not in out.out + out.err + caplog.text


def test_umap_s_compiled_functions_are_cached_across_processes():
    """umap 0.5 compiles its numba functions afresh in every process (about 8 s here); atml imports it with
    cache=True, so the machine code of the layout step and the distances is kept for the next process. In a fresh
    process (another test may already have imported umap without it), and numba.njit is restored afterwards."""
    import subprocess
    import sys

    probe = ("from atml.analysis.representation import _umap\n"
             "_umap()\n"
             "import numba, umap.layouts as layouts, umap.distances as distances\n"
             "print(type(layouts._nb_optimize_layout_euclidean_single_epoch._cache).__name__,"
             " type(distances.euclidean._cache).__name__, numba.njit.__module__)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["FunctionCache", "FunctionCache", "numba.core.decorators"], done.stderr[-2000:]


def _digits_features(noise: float = 0.0):
    """scikit-learn's digits (1,797 images, 64 pixels), optionally with noise to make the classes overlap."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    return (x + noise * rng.standard_normal(x.shape)).astype(np.float32), y


@pytest.mark.parametrize("noise", [0.0, 6.0])
def test_the_torch_knn_is_scikit_learns_classifier(noise):
    x, y = _digits_features(noise)
    ours = rep.knn_accuracy(x, y, seed=3, device=torch.device("cpu"))
    theirs = rep.knn_accuracy(x, y, seed=3)
    assert ours == pytest.approx(theirs, abs=1 / len(y))  # at most one of 1,797 points decided otherwise (a tie)
    from sklearn.neighbors import KNeighborsClassifier

    train, queries = torch.as_tensor(x[:1200]), torch.as_tensor(x[1200:])
    predicted = rep.knn_predict(train, torch.as_tensor(y[:1200]), queries, 5).numpy()
    expected = KNeighborsClassifier(5, metric="cosine").fit(x[:1200], y[:1200]).predict(x[1200:])
    assert (predicted == expected).mean() >= 0.998


@pytest.mark.parametrize("noise", [0.0, 6.0])
def test_the_torch_logistic_probe_fits_scikit_learns_objective(noise):
    x, y = _digits_features(noise)
    acc, predictions = rep.linear_probe(x, y, seed=3, device=torch.device("cpu"))
    sk_acc, sk_predictions = rep.linear_probe(x, y, seed=3)
    assert acc == pytest.approx(sk_acc, abs=0.005)  # the same optimum, reached by another L-BFGS
    assert (predictions == sk_predictions).mean() >= 0.99
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(x)
    sk = LogisticRegression(C=rep.PROBE_C, max_iter=5000, tol=1e-8).fit(scaled, y)
    weight, bias = rep.fit_logistic(torch.as_tensor(scaled, dtype=torch.float64), torch.as_tensor(y), 10)
    # multinomial logits are defined up to a constant per row: compare the centred logits of the two fits
    ours, theirs = scaled @ weight.numpy() + bias.numpy(), sk.decision_function(scaled)
    centred = [v - v.mean(1, keepdims=True) for v in (ours, theirs)]
    assert np.abs(centred[0] - centred[1]).max() < 0.05 * np.abs(centred[1]).max()

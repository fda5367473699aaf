"""``compare.probe``: many models on one dataset, side by side. Each model's frozen features from the layer
before its head (a CNN's pooled features, a ViT's pre-logits, CLIP's image embedding), at its own
preprocessing; a logistic-regression probe and a k-NN classifier fitted on the training split and scored on the
held-out split (scikit-learn); feature size, parameters and images/s on the run's device. One table and one bar
chart sorted by probe accuracy (Kornblith et al. 2019; CLIP's Table 10 linear probes)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from atml import figures
from atml.analysis import representation as rep
from atml.context import RunContext
from atml.errors import UsageError
from atml.models import layers as layers_lib
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Metrics, Results, RunResults, Table, fixed
from atml.suite.compare import common
from atml.suite.compare.config import PROBE_PRESETS as PRESETS
from atml.suite.compare.config import ProbeConfig as Config
from atml.train.features import FrozenFeatures, extract

KNN_NEIGHBOURS = 10


@dataclasses.dataclass
class Data:
    """compare.probe's own results data: the models in the order of their probe accuracy, best first."""

    ranking: list[str]


def run(cfg: Config, ctx: RunContext) -> Results:
    models = common.load_models(cfg, ctx)
    data = common.load_data(cfg, ctx, models, limits=(cfg.train_limit, cfg.val_limit))
    if len(set(data.train.labels.tolist())) < 2:
        raise UsageError(f"data={cfg.data} has fewer than two classes in its training split: nothing to probe")
    out = Results(notes=common.source_notes(cfg, models, data.name) + [
        f"Probe: scikit-learn logistic regression (C={cfg.probe_c}, standardised features) fitted on "
        f"{len(data.train)} training images, scored on {len(data.val)} held-out ones; k-NN: {KNN_NEIGHBOURS} "
        "nearest neighbours by cosine similarity. Features: a CNN's pooled features, a ViT's pre-logits (its class "
        "token after the final norm), CLIP's image embedding. Images/s: the held-out pass (uint8 images in memory "
        "to features on the host), after the training pass warmed the model up."])
    rows: list[list[Any]] = []
    for subject in models:
        ctx.step(f"{subject.label}: features of {len(data.train)} + {len(data.val)} images")
        frozen = FrozenFeatures(subject.preprocess, subject.model, layers_lib.features).to(ctx.device)
        kw: dict[str, Any] = {"batch_size": cfg.batch_size, "device": ctx.device, "amp": cfg.amp,
                              "progress": ctx.progress}
        f_train, _ = extract(frozen, data.train.images, desc=f"{subject.label} train", **kw)
        f_val, ips = extract(frozen, data.val.images, desc=f"{subject.label} val", **kw)  # warmed up by train
        probe_acc, knn_acc = scores(f_train.numpy(), data.train.labels.numpy(), f_val.numpy(),
                                    data.val.labels.numpy(), cfg.probe_c, cfg.seed, rep.probe_device(ctx.device))
        for name, value, unit in (("probe_acc", probe_acc, ""), ("knn_acc", knn_acc, ""),
                                  ("feature_dim", f_train.shape[1], ""), ("params_m", subject.parameters / 1e6, "M"),
                                  ("images_per_s", ips, "img/s")):
            out.add(name, value, unit, model=subject.label)
        rows.append([subject.label, subject.weights, probe_acc, knn_acc, int(f_train.shape[1]),
                     subject.parameters / 1e6, ips])
    rows.sort(key=lambda r: -r[2])
    out.tables.append(Table(f"Frozen features of each model on {data.name}: probe and k-NN accuracy on "
                            f"{len(data.val)} held-out images",
                            ["model", "weights", "probe acc", "k-NN acc", "feature dim", "params (M)", "img/s"],
                            rows))
    out.keep(Data([r[0] for r in rows]))
    out.add_figures(ctx.save_figure(bar_chart(rows, data.name), "probe_accuracy"))
    return out


def scores(f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray, c: float,
           seed: int, device: torch.device | None = None) -> tuple[float, float]:
    """Logistic-regression probe and cosine k-NN accuracy on the held-out split: scikit-learn's, or on ``device``
    (:func:`atml.analysis.representation.probe_device`) the same classifiers in torch."""
    if device is not None:
        x, y, queries = (torch.as_tensor(a, device=device) for a in (f_train, y_train, f_val))
        truth = torch.as_tensor(y_val, device=device)
        classes = int(max(y_train.max(), y_val.max())) + 1
        probe = rep.probe_predict(x, y, queries, classes, c)
        knn = rep.knn_predict(x.float(), y, queries.float(), min(KNN_NEIGHBOURS, len(f_train)))
        return float((probe == truth).double().mean()), float((knn == truth).double().mean())
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    probe.fit(f_train, y_train)
    knn = KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBOURS, len(f_train)), metric="cosine")
    knn.fit(f_train, y_train)
    return float(probe.score(f_val, y_val)), float(knn.score(f_val, y_val))


@figures.styled
def bar_chart(rows: list[list[Any]], data_name: str) -> Any:
    """Probe and k-NN accuracy per model, best probe first."""
    fig, axes = figures.figure(1, width=1.0, height=0.5 + 0.32 * len(rows))
    ax = axes[0][0]
    y = np.arange(len(rows))[::-1]
    ax.barh(y + 0.2, [r[2] for r in rows], height=0.4, color=figures.palette(0), label="logistic probe")
    ax.barh(y - 0.2, [r[3] for r in rows], height=0.4, color=figures.palette(1), label=f"{KNN_NEIGHBOURS}-NN")
    ax.set_yticks(y, labels=[r[0] for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"held-out accuracy ({data_name})")
    figures.legend_below(fig, ax.get_legend_handles_labels()[0], ncol=2)
    return fig


def discuss(results: RunResults) -> list[str]:
    m, ranking = results.metrics, results.read(Data).ranking
    acc = {name: m.value("probe_acc", model=name) for name in ranking}
    knn = {name: m.value("knn_acc", model=name) for name in ranking}
    text = [f"Probe accuracy, best first: {', '.join(f'{n} {acc[n]:.3f}' for n in ranking)}."]
    if len(ranking) > 1:
        best_probe = [n for n in ranking if acc[n] == acc[ranking[0]]]
        best_knn = [n for n in ranking if knn[n] == max(knn.values())]
        text.append(f"Best k-NN accuracy ({max(knn.values()):.3f}): {', '.join(best_knn)}; best probe accuracy "
                    f"({acc[ranking[0]]:.3f}): {', '.join(best_probe)}"
                    + ("; the two agree." if set(best_knn) == set(best_probe) else "; the two disagree."))
    return text


def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    acc, knn = m.by("probe_acc", "model"), m.by("knn_acc", "model")
    return "probe / k-NN acc: " + "; ".join(f"{k} {fixed(acc[k])} / {fixed(knn[k])}"
                                             for k in sorted(acc, key=lambda k: -acc[k]))


REFERENCES: tuple[Reference, ...] = (
    Reference("compare.probe", "OpenAI CLIP ViT-B/32 linear probe on CIFAR-10 (CLIP paper, Table 10)", 0.951,
              "Radford et al. 2021, Table 10", "recalled", "probe_acc", None, {"preset": "full", "data": "cifar10"},
              {"model": "ViT-B-32@openai"}),
    Reference("compare.probe", "OpenAI CLIP RN50 linear probe on CIFAR-10 (CLIP paper, Table 10)", 0.887,
              "Radford et al. 2021, Table 10", "recalled"),
    Reference("compare.probe", "ImageNet ResNet logistic-regression probe on CIFAR-10 at 224 (about 90-93%)", 0.915,
              "Kornblith et al. 2019, tables", "recalled", "probe_acc", None,
              {"preset": "full", "data": "cifar10", "weights": "imagenet"}, {"model": "resnet152"}),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair):
shown for scale (tolerance None): CLIP's probes use all 50,000 training images and tuned L2 strength."""

EXPERIMENT = Experiment(data=Data, name="compare.probe",
                        summary="Many models on one dataset: frozen-feature logistic probe and k-NN, size, speed",
                        config_cls=Config, presets=PRESETS, run=run, discuss=discuss, references=REFERENCES,
                        readme_row=readme_row)

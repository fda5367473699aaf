"""Published figures a run is compared with (``shared/REFERENCES.md``), as data.

Each reference names the metric it compares with and the conditions under which the
comparison is fair (preset, data, architecture, weights). A run that does not meet them
is marked "not comparable" with the reason, never silently compared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atml.results import RunResults


@dataclasses.dataclass(frozen=True)
class Reference:
    experiment: str
    what: str
    value: float | None
    """None for a qualitative finding."""
    source: str
    status: str
    """"checked" (seen in the source) or "recalled" (widely quoted; approximate)."""
    metric: str | None = None
    """The name of the run's metric this compares with; None for context shown beside the results."""
    tolerance: float | None = None
    """Absolute tolerance for "within"; None: compare only for context."""
    requires: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Config values (and the preset) a run must have for the comparison to be fair."""
    condition: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The condition of the metric compared with (e.g. ``{"resolution": 32}``)."""


_CIFAR_HEAD = {"preset": "full", "data": "cifar10", "arch": "resnet152", "weights": "imagenet", "epochs": 10}

REFERENCES: tuple[Reference, ...] = (
    Reference("resnet.head", "head only, CIFAR-10 at 32x32, 10 epochs: val acc (seed report)", 0.4307,
              "seed report (Assignment 0)", "checked", "val_acc", 0.05, _CIFAR_HEAD, {"resolution": 32}),
    Reference("resnet.head", "head only, CIFAR-10 upsampled to 224x224, 10 epochs: val acc (seed report)",
              0.8717, "seed report (Assignment 0)", "checked", "val_acc", 0.05, _CIFAR_HEAD, {"resolution": 224}),
    Reference("resnet.head", "ImageNet ResNet logistic-regression probe on CIFAR-10 at 224", 0.915,
              "Kornblith et al. 2019, tables (about 90-93%)", "recalled", "val_acc", None, _CIFAR_HEAD,
              {"resolution": 224}),
    Reference("resnet.head", "ResNet-152 torchvision IMAGENET1K_V2 ImageNet-1k validation top-1 (resize 232, "
              "bilinear, centre crop 224)", 0.82284, "torchvision model docs (ResNet152_Weights)", "checked",
              "pretrained_val_acc", 0.005, {"preset": "full", "data": "imagenet", "arch": "resnet152",
                                            "weights": "imagenet", "val_limit": 0}, {"top_k": 1}),
    Reference("resnet.head", "ResNet-152 torchvision IMAGENET1K_V1 ImageNet-1k validation top-1 (resize 256, "
              "bilinear, centre crop 224)", 0.78312, "torchvision model docs (ResNet152_Weights)", "checked",
              "pretrained_val_acc", 0.005, {"preset": "full", "data": "imagenet", "arch": "resnet152",
                                            "weights": "imagenet-v1", "val_limit": 0}, {"top_k": 1}),
)


_VAE_SEED = {"preset": "full", "data": "fashion-mnist", "epochs": 20, "latent_dim": 20, "kl_weight": 1.0}

REFERENCES += (
    Reference("vae.train", "FashionMNIST VAE, MSE (sum) + KL, 20 epochs: final train loss (seed report)", 23.11,
              "seed report (Assignment 0)", "checked", "train_loss", 1.5, _VAE_SEED),
    Reference("vae.train", "FashionMNIST VAE, MSE (sum) + KL, 20 epochs: final validation loss (seed report)", 23.31,
              "seed report (Assignment 0)", "checked", "val_loss", 1.5, _VAE_SEED),
    Reference("vae.train", "VAE (1 stochastic layer, k=1) test NLL on binarised MNIST, Bernoulli decoder: a different "
              "likelihood (binary pixels) from atml's Gaussian -ELBO on grey levels, so shown for scale only", 86.76,
              "Burda et al. 2016", "recalled"),
    Reference("vae.collapse", "active unit threshold Cov_x(E_q[z_i]) (the rule atml applies)", 0.01,
              "Burda et al. 2016; jxhe/vae-lagging-encoder calc_au", "checked"),
)


_CIFAR_TRANSFER = {"preset": "full", "data": "cifar10", "arch": "resnet152", "weights": "imagenet"}
_CIFAR_GAN = {"preset": "full", "data": "cifar10"}  # atml's GAN trains on FashionMNIST: context only

REFERENCES += (
    Reference("resnet.skip", "plain (no-skip) deep nets train worse than shallower plain nets; residual nets do not "
              "(plain-56 > plain-20 error on CIFAR-10)", None, "He et al. 2016, Fig. 6", "recalled"),
    Reference("resnet.transfer", "full fine-tuning of ImageNet ResNets on CIFAR-10 (about 97-98%)", 0.975,
              "Kornblith et al. 2019, tables", "recalled", "best_val_acc", None, _CIFAR_TRANSFER,
              {"init": "pretrained", "regime": "full"}),
    Reference("resnet.transfer", "ImageNet ResNet logistic-regression probe on CIFAR-10 at 224 (about 90-93%)", 0.915,
              "Kornblith et al. 2019, tables", "recalled", "best_val_acc", None, _CIFAR_TRANSFER,
              {"init": "pretrained", "regime": "head"}),
    Reference("resnet.transfer", "fixed-feature / fine-tuned transfer accuracy tracks ImageNet accuracy (r)", 0.99,
              "Kornblith et al. 2019 (abstract; 0.96 for fine-tuning)", "checked"),
    Reference("gan.dcgan", "Inception FID between CIFAR-10 train and test (the floor of that protocol)", 3.15,
              "pytorch-gan-metrics README", "checked", "inception_fid", None, _CIFAR_GAN),
    Reference("gan.dcgan", "DCGAN on CIFAR-10, Inception FID (reimplementation 1)", 41.75,
              "w86763777/pytorch-gan-collections", "checked", "inception_fid", None, _CIFAR_GAN),
    Reference("gan.dcgan", "DCGAN on CIFAR-10, Inception FID (reimplementation 2)", 24.85,
              "xyfJASON/GANs-Implementations", "checked", "inception_fid", None, _CIFAR_GAN),
)


_DEIT_CIFAR = {"preset": "full", "data": "cifar10", "arch": "deit_small_patch16_224", "weights": "imagenet"}

REFERENCES += (
    Reference("vit.classify", "DeiT-Small/16 ImageNet-1k validation top-1 (resize 248, bicubic, centre crop 224)",
              0.7986, "timm results table (deit_small_patch16_224); facebookresearch/deit README: 79.9", "checked",
              "val_acc", 0.005, {"preset": "full", "data": "imagenet", "arch": "deit_small_patch16_224",
                                 "weights": "imagenet"}, {"top_k": 1}),
    Reference("vit.pooling", "DeiT-Small, CIFAR-10 linear probe on the CLS token (seed report)", 0.95,
              "seed report (Assignment 0)", "checked", "val_acc", 0.05, _DEIT_CIFAR, {"pooling": "cls"}),
    Reference("vit.pooling", "DeiT-Small, CIFAR-10 linear probe on mean-pooled patch tokens (seed report)", 0.95,
              "seed report (Assignment 0)", "checked", "val_acc", 0.05, _DEIT_CIFAR, {"pooling": "mean"}),
    Reference("vit.masking", "ViTs keep about 60% ImageNet top-1 with 80% of the image randomly occluded", 0.60,
              "Naseer et al. 2021, Intriguing Properties of Vision Transformers (abstract)", "checked"),
    Reference("vit.attention", "mean attention distance grows with depth; some early heads attend globally",
              None, "Dosovitskiy et al. 2021, Fig. 7", "recalled"),
)


_CLIP_STL = {"preset": "full", "data": "stl10", "arch": "ViT-B-32", "weights": "openai"}

REFERENCES += (
    Reference("clip.zeroshot", "OpenAI CLIP ViT-B/32 zero-shot STL-10 (CLIP paper, Table 11)", 0.97,
              "Radford et al. 2021, Table 11", "recalled", "best_prompt_set_acc", 0.02, _CLIP_STL),
    Reference("clip.zeroshot", "ViT-B/32 OpenAI weights, zero-shot CIFAR-10 (CLIP_benchmark protocol)", 0.8983,
              "open_clip docs/openclip_classification_results.csv", "checked"),
    Reference("clip.zeroshot", "ViT-B/32 OpenAI weights, zero-shot CIFAR-100 (CLIP_benchmark protocol)", 0.6423,
              "open_clip docs/openclip_classification_results.csv", "checked"),
    Reference("clip.gap", "the modality gap already exists at random initialisation (cone effect)", None,
              "Liang et al. 2022, Mind the Gap", "recalled"),
    Reference("clip.align", "the modality gap already exists at random initialisation (cone effect)", None,
              "Liang et al. 2022, Mind the Gap", "recalled"),
)


def for_experiment(name: str) -> list[Reference]:
    return [r for r in REFERENCES if r.experiment == name]


def values(experiment: str, metric: str, field: str, *, source: str) -> dict[Any, float]:
    """``{condition[field]: value}`` of an experiment's references to ``metric`` from ``source`` (for figures:
    each published figure is written once, here)."""
    return {r.condition[field]: r.value for r in for_experiment(experiment)
            if r.metric == metric and field in r.condition and source in r.source and r.value is not None}


def compare(ref: Reference, results: RunResults, cfg: Any) -> dict[str, Any]:
    """One row of the comparison table: the reference, our number, and a verdict."""
    label = ref.metric and "_".join([ref.metric, *(str(v) for v in ref.condition.values())])  # the flat key
    row: dict[str, Any] = {"what": ref.what, "reference": ref.value, "source": ref.source, "source_status": ref.status,
           "metric": label, "condition": dict(ref.condition), "ours": None, "tolerance": ref.tolerance}
    if ref.metric is None:
        return {**row, "status": "context", "reason": "background figure, not a result of this run"}
    row["ours"] = results.metrics.get(ref.metric, **ref.condition)
    if results.rehearsal or results.preset == "rehearsal":
        return {**row, "status": "not comparable",
                "reason": "rehearsal run: generated data and random weights, a measure of time and memory only"}
    unmet = _unmet(ref, results, cfg)
    if unmet:
        return {**row, "status": "not comparable", "reason": "; ".join(unmet)}
    if row["ours"] is None:
        return {**row, "status": "not comparable", "reason": f"this run has no {label}"}
    if ref.tolerance is None or ref.value is None:
        return {**row, "status": "context", "reason": "different protocol; shown for scale"}
    within = abs(row["ours"] - ref.value) <= ref.tolerance
    return {**row, "status": "within" if within else "outside",
            "reason": f"|ours - reference| {'<=' if within else '>'} {ref.tolerance}"}


def compare_all(experiment: str, results: RunResults, cfg: Any) -> list[dict[str, Any]]:
    return [compare(ref, results, cfg) for ref in for_experiment(experiment)]


def _unmet(ref: Reference, results: RunResults, cfg: Any) -> list[str]:
    unmet = []
    for key, wanted in ref.requires.items():
        have = results.preset if key == "preset" else getattr(cfg, key, None)
        if have != wanted:
            unmet.append(f"{key} is {have!r}, the reference used {wanted!r}")
    return unmet

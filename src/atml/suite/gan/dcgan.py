"""``gan.dcgan``: a DCGAN on FashionMNIST with sample grids, loss curves and offline quality numbers.

Quality: the Frechet distance between real and generated images in the feature space of
a small CNN classifier atml trains on the same data ("FD-atml-cnn", not Inception FID:
its numbers are comparable only to themselves), precision/recall in that space, and the
class histogram of generated samples under the classifier (mode collapse shows as low
entropy and low recall). The distance between two real splits is the floor.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import torch
from matplotlib.lines import Line2D

from atml import benchmark as bench_lib
from atml import figures
from atml.analysis import generative, inception
from atml.context import RunContext
from atml.models import factory
from atml.models.classifier import SmallCNN
from atml.models.gan import DCGAN, to_unit
from atml.models.preprocess import Preprocess
from atml.models.registry import UNIT_GREY_28
from atml.provenance import CachedFile
from atml.references import Reference
from atml.registry import Experiment
from atml.results import Bench, Metrics, Results, RunResults, counted, fixed
from atml.storage import sha256sum
from atml.suite import grayscale
from atml.suite.gan.config import PRESETS
from atml.suite.gan.config import DCGANConfig as Config
from atml.train import gan_recipe
from atml.train.loop import Batches, Fit, History, StepOutput, classification_step, fit


def scoring_input() -> Preprocess:
    """The scoring CNN's preprocessing: uint8 grey images to [0, 1] (a new module each time: ``to`` moves it)."""
    return Preprocess(UNIT_GREY_28)


def classify_step(unit: Preprocess, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> StepOutput:
    return classification_step(model, (unit(batch[0]), batch[1]))


def train_classifier(cfg: Config, ctx: RunContext, data: Any) -> tuple[SmallCNN, float]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = SmallCNN(len(data.train.classes)).to(ctx.device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    rows = fit(Fit(model, optim, Batches((data.train.images, data.train.labels), 128, shuffle=True, seed=cfg.seed),
                   Batches((data.val.images, data.val.labels), 1024), cfg.classifier_epochs, ctx.device, ctx.run,
                   stage="fd_classifier", step=functools.partial(classify_step, scoring_input().to(ctx.device)),
                   checkpoint_path=ctx.checkpoint("fd_classifier"),
                   progress=ctx.progress, say=ctx.say))
    return model.eval(), rows.last("val", "acc")


@torch.no_grad()
def embed(classifier: SmallCNN, images01: torch.Tensor, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Classifier features (N, 128) and predicted classes (N,) for images in [0, 1]."""
    feats, preds = [], []
    for batch in images01.split(512):
        f = classifier.forward_features(batch.to(device))
        feats.append(f.cpu())
        preds.append(classifier.head(f).argmax(1).cpu())
    return torch.cat(feats).numpy().astype(np.float64), torch.cat(preds).numpy()


@torch.no_grad()
def generate(model: DCGAN, n: int, seed: int, device: torch.device) -> torch.Tensor:
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([to_unit(model.sample(len(c), generator, device)).cpu().clamp(0, 1)
                      for c in torch.arange(n).split(500)])


def run(cfg: Config, ctx: RunContext) -> Results:
    data = grayscale.load_data(cfg, ctx)
    classifier, classifier_acc = train_classifier(cfg, ctx, data)
    model, rows = train_gan(cfg, ctx, data)
    last_train = rows.phase("train")[-1]
    # Two disjoint halves of the validation split, neither seen by the generator or the feature CNN:
    # generated vs half A, and the floor half B vs half A, with the same number of images each.
    n = min(cfg.eval_samples, len(data.val) // 2)
    ctx.step(f"scoring {n} generated images against {n} real ones: Frechet distance, precision/recall, classes")
    unit = scoring_input()
    real_a, real_b = unit(data.val.images[:n]), unit(data.val.images[n:2 * n])
    fake = generate(model, n, cfg.seed + 1, ctx.device)
    (f_a, _), (f_b, _), (f_fake, p_fake) = (embed(classifier, x, ctx.device) for x in (real_a, real_b, fake))
    precision, recall = generative.precision_recall(f_a, f_fake)
    hist, entropy = generative.class_histogram(p_fake, len(data.train.classes))
    invalid: list[str] = []
    metrics = {**frechet_or_reason("fd_cnn", f_a, f_fake, invalid),
               **frechet_or_reason("fd_cnn_floor", f_a, f_b, invalid),
               "precision": precision, "recall": recall, "class_entropy": entropy,
               "classifier_val_acc": classifier_acc, "eval_samples": n,
               "final_d_real": last_train["d_real"], "final_d_fake": last_train["d_fake"]}
    metrics.update(inception_metrics(cfg, ctx, real_a, fake))
    out = Results(warnings=sample_warnings(n, f_a.shape[1], metrics))
    out.keep(Data(list(data.train.classes), hist.tolist()))
    for name, value in metrics.items():
        out.add(name, value)
    grids = [f"figures/{p.name}" for p in gan_recipe.sample_paths(ctx.run.figures)] if ctx.is_main else []
    out.add_figures(f for p in grids for f in (p, p.replace(".png", ".pdf")))
    out.add_figures(ctx.save_figure(curves_figure(rows), "gan_curves"))
    out.add_figures(ctx.save_figure(histogram_figure(hist, data.train.classes, entropy), "class_histogram"))
    out.notes += [f"DCGAN (width {cfg.width}, z in R^{cfg.latent_dim}), Adam lr {cfg.lr:g}, beta1 {cfg.beta1}, "
                  f"batch {cfg.batch_size}, {counted(cfg.epochs, 'epoch')}; non-saturating generator loss.",
                  f"FD-atml-cnn: Frechet distance in the 128-d features of a small CNN trained by atml on the "
                  f"same training split (validation accuracy {classifier_acc:.3f}); {n} generated images vs "
                  f"{n} validation images (half A). Its floor: {n} other validation images (half B) vs the "
                  "same half A, so neither side was seen by the feature CNN and the sample counts match. "
                  "Not Inception FID: compare it only with other FD-atml-cnn numbers.",
                  inception_note(metrics, n), *invalid]
    return out


def train_gan(cfg: Config, ctx: RunContext, data: Any) -> tuple[DCGAN, History]:
    """The DCGAN trained from its seeded initialisation: fixed-noise grids saved as it goes, stopped with its last
    good checkpoint when the discriminator wins outright."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        built = factory.create("dcgan", family="gan", latent_dim=cfg.latent_dim, width=cfg.width)
    model, preprocess = built.model.to(ctx.device), built.preprocess.to(ctx.device)
    optim = gan_recipe.optimizer(model, cfg.lr, cfg.beta1, cfg.g_lr_scale)
    sample_epochs = {1, cfg.epochs, *range(cfg.sample_every, cfg.epochs + 1, cfg.sample_every)}
    samples = gan_recipe.FixedNoiseSamples(model, sample_epochs, lambda e, x: save_grid(ctx, e, x), seed=cfg.seed)
    guard = gan_recipe.DiscriminatorWinsGuard(cfg.d_win_threshold)
    rows = fit(Fit(model, optim, Batches((data.train.images,), cfg.batch_size, shuffle=True, seed=cfg.seed),
                   Batches((data.val.images,), 512), cfg.epochs, ctx.device, ctx.run, stage="gan",
                   step=gan_recipe.GANStep(optim, preprocess), callbacks=[samples, guard],
                   checkpoint_path=ctx.checkpoint("gan"),
                   ddp=False,  # two alternating updates per step: GANStep averages each one's gradients
                   progress=ctx.progress, say=ctx.say))
    return model, rows


def sample_warnings(n: int, dim: int, metrics: dict[str, float]) -> list[str]:
    """Frechet distances and precision/recall from fewer images than their features have dimensions are unreliable."""
    out = []
    if n < dim:
        out.append(f"FD-atml-cnn and precision/recall compare {n} generated with {n} validation images in {dim}-d "
                   f"features: with fewer images than dimensions the covariances are singular and the distance is "
                   f"dominated by sampling noise; use at least {dim} (eval_samples and a larger validation split)")
    if "inception_fid" in metrics and n < 2048:
        out.append(f"Inception FID/KID from {n} images per side (2048-d features): FID is biased upwards at this size "
                   "and compares only with FIDs from the same number of images")
    return out


def frechet_or_reason(name: str, a: np.ndarray, b: np.ndarray, invalid: list[str]) -> dict[str, float]:
    """``{name: distance}``, or nothing and the reason appended to ``invalid``."""
    try:
        return {name: generative.frechet_distance(a, b)}
    except generative.InvalidMetric as err:
        invalid.append(f"{name} is not reported: {err}.")
        return {}


def inception_metrics(cfg: Config, ctx: RunContext, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Inception FID/KID when verified weights are at hand; nothing (and a note) otherwise."""
    path = inception.locate(cfg.inception, offline=ctx.offline)
    if path is None:
        return {}
    model = inception.extractor(path, ctx.device)
    ctx.record_source("inception_weights", CachedFile(str(path), sha256sum(path)))
    return inception.fid_kid(inception.features(model, real, ctx.device), inception.features(model, fake, ctx.device),
                             seed=cfg.seed)


def inception_note(metrics: dict[str, Any], n: int) -> str:
    if "inception_fid" not in metrics:
        return ("Inception FID/KID: not computed - inception=off (smoke/demo: Inception features of 28 px digits "
                "say little), or the torch-fidelity Inception-v3 weights "
                f"({inception.FILENAME}) were neither in the torch hub cache nor downloadable.")
    return (f"Inception FID/KID: torch-fidelity inception-v3-compat pool features (2048-d), {n} generated vs {n} "
            "validation images, KID with 100 subsets; grayscale images replicated to RGB and resized to 299 px.")


def save_grid(ctx: RunContext, epoch: int, images: torch.Tensor) -> None:
    ctx.save_figure(image_grid(to_unit(images).clamp(0, 1), f"fixed noise, epoch {epoch}"),
                    f"samples_epoch_{epoch:03d}")


@figures.styled
def image_grid(images: torch.Tensor, title: str) -> Any:
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=8, padding=1, pad_value=1.0)[0]  # (H, W)
    fig, axes = figures.figure(1, width=1.0, height=3.5)
    ax = axes[0][0]
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    return fig


@figures.styled
def curves_figure(rows: History) -> Any:
    fig, axes = figures.figure(3, width=2.0, height=2.0)
    train = rows.phase("train")
    epochs = [r.epoch for r in train]
    g, d = figures.palette(0), figures.palette(1)
    for ax, (g_key, d_key) in ((axes[0][0], ("loss", "loss_d")), (axes[0][2], ("grad_norm_g", "grad_norm_d"))):
        ax.plot(epochs, [r[g_key] for r in train], "-", color=g, marker="o", ms=2)
        ax.plot(epochs, [r[d_key] for r in train], "-", color=d, marker="s", ms=2)
    axes[0][1].plot(epochs, [r["d_real"] for r in train], "-", color=d, marker="s", ms=2)
    axes[0][1].plot(epochs, [r["d_fake"] for r in train], "--", color=d, marker="^", ms=2)
    for ax, title in zip(axes[0], ("losses", "discriminator outputs", "gradient norms")):
        ax.set_ylabel(title)
        ax.set_xlabel("epoch")
        figures.epoch_axis(ax)
    figures.legend_below(fig, [Line2D([], [], color=g, marker="o", ms=3, label="generator"),
                             Line2D([], [], color=d, marker="s", ms=3, label="discriminator; D(x) on real"),
                             Line2D([], [], color=d, ls="--", marker="^", ms=3, label="D(G(z)) on generated")],
                       ncol=3)
    return fig


@figures.styled
def histogram_figure(hist: np.ndarray, classes: list[str], entropy: float) -> Any:
    fig, axes = figures.figure(1, width=1.0, height=2.2)
    ax = axes[0][0]
    ax.bar(range(len(classes)), hist)
    ax.axhline(1 / len(classes), color="k", ls=":", lw=0.8, label="uniform")
    ax.set_xticks(range(len(classes)), labels=classes, rotation=90)
    ax.set_ylabel("share of generated samples")
    ax.set_title(f"classes of generated samples (entropy {entropy:.2f} of 1)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


@dataclasses.dataclass
class Data:
    """gan.dcgan's own results data: the share of generated samples the feature CNN puts in each class."""

    classes: list[str]
    class_histogram: list[float]


def discuss(results: RunResults) -> list[str]:
    m = results.metrics.flat()  # no conditions here: every name is a single number
    data = results.read(Data)
    hist = data.class_histogram
    rare = [c for c, h in zip(data.classes, hist) if h < 0.25 / len(hist)]
    fd = (f"FD-atml-cnn between {m['eval_samples']:.0f} generated and {m['eval_samples']:.0f} real validation images "
          f"is {m['fd_cnn']:.2f}" if "fd_cnn" in m else "FD-atml-cnn could not be computed (see the notes)")
    floor = (f"; between two disjoint halves of the real validation images it is {m['fd_cnn_floor']:.2f} (the floor "
             "this extractor and sample size allow)." if "fd_cnn_floor" in m else ".")
    return [
        fd + floor,
        f"Precision {m['precision']:.2f} (generated samples that look real), recall {m['recall']:.2f} "
        "(real variety the generator covers).",
        f"Class entropy of generated samples: {m['class_entropy']:.2f} of 1; "
        + (f"rare or missing classes: {', '.join(rare)} - a sign of partial mode collapse." if rare
           else "every class appears at least a quarter as often as uniform: no sign of mode collapse."),
        f"At the end D(x) = {m['final_d_real']:.2f} and D(G(z)) = {m['final_d_fake']:.2f}"
        + (": the game is balanced." if 0.2 < m["final_d_fake"] < 0.8 else ": the discriminator dominates."),
    ]


def bench(cfg: Config) -> Bench:
    """DCGAN trained on atml's in-memory batches vs a per-sample PIL Dataset + DataLoader (same order and seed)."""
    def build() -> tuple[Any, ...]:
        built = factory.create("dcgan", family="gan", latent_dim=cfg.latent_dim, width=cfg.width)
        model = built.model.to(ctx.device)
        optim = gan_recipe.optimizer(model, cfg.lr, cfg.beta1, cfg.g_lr_scale)
        return model, optim, gan_recipe.GANStep(optim, built.preprocess.to(ctx.device)), ()

    with bench_lib.scratch_context(cfg) as ctx:
        data = grayscale.load_data(cfg, ctx)
        timings, model = bench_lib.time_both_data_paths(data.train.images, cfg, ctx.device, build)
        z = torch.randn(256, cfg.latent_dim, device=ctx.device)
        gan: Any = model
        throughput = bench_lib.model_throughput(lambda b: gan.discriminator(gan.generator(b)), z, ctx.device, 256)
    return bench_lib.summarise(f"gan.dcgan {len(data.train)} train images ({data.name}), "
                               f"{counted(cfg.epochs, 'epoch')}, batch "
                               f"{cfg.batch_size}, width {cfg.width}, device {ctx.device}; model forward = G then D",
                               timings, throughput, "final G loss")



def readme_row(m: Metrics, _data: object) -> str:
    """This experiment's row in README's demo results table (:mod:`atml.reporting.readme`)."""
    v = m.flat()
    fd = f"FD-atml-cnn {fixed(v['fd_cnn'], 1)}" if "fd_cnn" in v else "FD-atml-cnn not computed"
    floor = f" (real-vs-real floor {fixed(v['fd_cnn_floor'], 1)})" if "fd_cnn_floor" in v else ""
    return (f"{fd}{floor}, precision {fixed(v['precision'], 2)}, recall {fixed(v['recall'], 2)}, class entropy "
            f"{fixed(v['class_entropy'], 2)}")



_CIFAR_GAN = {"preset": "full", "data": "cifar10"}

REFERENCES: tuple[Reference, ...] = (
    Reference("gan.dcgan", "Inception FID between CIFAR-10 train and test (the floor of that protocol)", 3.15,
              "pytorch-gan-metrics README", "checked", "inception_fid", None, _CIFAR_GAN),
    Reference("gan.dcgan", "DCGAN on CIFAR-10, Inception FID (reimplementation 1)", 41.75,
              "w86763777/pytorch-gan-collections", "checked", "inception_fid", None, _CIFAR_GAN),
    Reference("gan.dcgan", "DCGAN on CIFAR-10, Inception FID (reimplementation 2)", 24.85,
              "xyfJASON/GANs-Implementations", "checked", "inception_fid", None, _CIFAR_GAN),
)
"""The published figures this experiment is compared with (:mod:`atml.references` decides when it is fair)."""

EXPERIMENT = Experiment(data=Data, name="gan.dcgan",
                        summary="DCGAN on FashionMNIST: sample grids, losses, offline Frechet distance, mode collapse",
                        config_cls=Config, presets=PRESETS, run=run, bench=bench, discuss=discuss,
                        readme_row=readme_row,
                        references=REFERENCES)

"""One model registry: for each model and weights tag, where the weights come from, how to check them, the
preprocessing they expect and what the model exposes, in the style of timm's ``pretrained_cfg`` and
open_clip's ``pretrained.py``.

    lookup("cnn", "resnet152").weights["imagenet"]      # torchvision ResNet152_Weights.IMAGENET1K_V2
    lookup("vit", "timm/vit_small_patch14_dinov2")       # built from timm's own pretrained_cfg
    lookup("clip", "ViT-B-16").weights["laion2b_s34b_b88k"]

atml's own entries are written out below (the course models and the demo's stand-ins, whose
weights tag is ``digits`` in every family: atml trains them on scikit-learn digits and caches
them). Every other timm, torchvision or open_clip model gets its entry from that library's own
tables when it is looked up, so the loaders never hold a list of names. The builders
(:mod:`atml.models.resnet`, :mod:`atml.models.vit`, :mod:`atml.models.clip`) ask this module
which weights a tag means and load them by their ``source``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from collections.abc import Mapping
from typing import Any, Literal

from atml.errors import UsageError

Family = Literal["cnn", "vit", "clip", "vae", "gan"]
FAMILIES: tuple[Family, ...] = typing.get_args(Family)
"""Every kind of model atml builds (:func:`atml.models.factory.create`), listed once."""
TRANSFORMERS_FOLDER = "auto"
RANDOM_FILE = "pretrained-file"
"""A CNN's random weights written to a file and read back through the weights-file path: the offline stand-in for
pretrained weights at resnet.transfer's smoke and rehearsal presets."""
"""The ViT arch name that takes its shape and preprocessing from a transformers folder (``backend=hf``, weights=FOLDER):
it has no entry here."""

TIMM = "timm/"
"""The prefix that names any timm model (``timm/convnext_tiny``, ``timm/vit_small_patch14_dinov2``)."""
Backend = Literal["timm", "hf"]
"""Which library runs a ViT: timm, or Hugging Face transformers."""
BACKENDS: tuple[Backend, ...] = typing.get_args(Backend)
DEIT_SMALL = "deit_small_patch16_224"
HF_DEIT = "facebook/deit-small-patch16-224"
"""DeiT-Small's ImageNet weights as a transformers model on the Hugging Face hub (``backend=hf``)."""

DEMO_TAG = "digits"
"""The demo stand-ins' weights, in every family: trained by atml on scikit-learn digits (cached)."""
DEMO_ALIASES = ("pretrain-digits", "train-digits")
"""Earlier spellings of ``digits`` (resnet.* and vit.*/clip.*), still read from saved configs."""

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


Source = Literal["torchvision", "url", "timm-hub", "open_clip-hub", "atml", "none"]
"""Where a weights tag's file comes from."""
Builder = Literal["torchvision", "timm", "open_clip", "atml", "transformers"]
"""Which library builds the architecture."""
Exposes = Literal["features", "stages", "skips", "tokens", "attention", "image-text embeddings", "latent", "generator",
                  "discriminator"]
"""What a model gives the experiments."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What the weights expect: normalisation, input size, resize rule."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    interpolation: str = "bilinear"
    crop_pct: float = 1.0


TIMM_DEFAULT = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 224, "bicubic", 0.875)
"""What timm assumes for a key its ``pretrained_cfg`` lacks (``timm.data`` DEFAULT_CROP_PCT and its ImageNet
statistics)."""


def preprocessing_from(values: Mapping[str, Any], default: Preprocessing) -> Preprocessing:
    """The one conversion of a library's description of its weights' input into :class:`Preprocessing`, each key
    taken from ``values`` when it says, else from ``default``.

    Reads timm's ``pretrained_cfg`` (``mean``, ``std``, ``input_size`` ``(3, H, W)``, ``interpolation``,
    ``crop_pct``), open_clip's pretrained and model configs (``image_size``), a transformers image processor
    (``image_mean``, ``image_std``) and torchvision's ``weights.transforms()`` attributes (``crop_size``,
    ``resize_size``, an ``InterpolationMode``).
    """
    def first(*keys: str) -> Any:
        return next((values[k] for k in keys if values.get(k) is not None), None)

    size = first("input_size", "image_size", "crop_size")
    side = int(size[-1] if isinstance(size, (tuple, list)) else size) if size is not None else default.input_size
    interpolation = first("interpolation")
    resize = first("resize_size")
    crop_pct = first("crop_pct")
    if crop_pct is None and resize is not None:
        crop_pct = side / int(resize[0] if isinstance(resize, (tuple, list)) else resize)
    return Preprocessing(tuple(first("mean", "image_mean") or default.mean), tuple(first("std", "image_std")
                                                                                    or default.std),
                         side, str(getattr(interpolation, "value", interpolation) or default.interpolation),
                         float(crop_pct) if crop_pct is not None else default.crop_pct)


@dataclasses.dataclass(frozen=True)
class Weights:
    """One weights tag of one model."""

    tag: str
    source: Source
    """torchvision | url | timm-hub | open_clip-hub | atml (trained by atml's recipe) | none (random)."""
    location: str
    """torchvision enum ``ResNet152_Weights.IMAGENET1K_V2`` | a URL | ``repo`` on the Hugging Face hub |
    the atml recipe's name."""
    check: str
    """How the file is verified: the SHA-256 prefix in its name, the Hugging Face blob name (SHA-256), or
    atml's own cache (its SHA-256 recorded in env.json)."""
    preprocessing: Preprocessing
    description: str


@dataclasses.dataclass(frozen=True)
class Model:
    """One model name: how it is built and what the experiments can read from it."""

    name: str
    family: Family
    builder: Builder
    """torchvision | timm | open_clip | atml."""
    exposes: tuple[Exposes, ...]
    """What the model gives the experiments: features, stages, skips (ResNets), tokens, attention,
    image-text embeddings."""
    weights: Mapping[str, Weights]
    preprocessing: Preprocessing
    """For random initialisation: the normalisation of the model's published weights."""


_TORCHVISION_RESIZE = {"IMAGENET1K_V1": 256, "IMAGENET1K_V2": 232}
"""The short side torchvision's ResNet weights are evaluated at before the 224 centre crop (their transforms)."""


def _torchvision_resnet(name: str, enum: str, tags: Mapping[str, str]) -> Model:
    def pre(member: str) -> Preprocessing:
        return Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 224, "bilinear", 224 / _TORCHVISION_RESIZE[member])

    return Model(name, "cnn", "torchvision", ("features", "stages", "skips"), {
        tag: Weights(tag, "torchvision", f"{enum}.{member}", "SHA-256 prefix in the file name (torch.hub)",
                     pre(member), f"torchvision {enum}.{member}") for tag, member in tags.items()},
        pre(tags["imagenet"]))


def _demo(name: str, family: Family, exposes: tuple[Exposes, ...], size: int, recipe: str, what: str,
          interpolation: str = "bilinear") -> Model:
    pre = Preprocessing(HALF, HALF, size, interpolation)
    return Model(name, family, "atml", exposes, {DEMO_TAG: Weights(
        DEMO_TAG, "atml", recipe, "atml's cache ($ATML_CACHE/pretrained), SHA-256 recorded in env.json", pre, what)},
        pre)


_V1_V2 = {"imagenet": "IMAGENET1K_V2", "imagenet-v1": "IMAGENET1K_V1"}
_DEIT_PRE = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 224, "bicubic", 0.9)
"""timm's pretrained_cfg for deit_small_patch16_224 (short side 248), the pipeline its published top-1 was measured
with."""
_CLIP_PRE = Preprocessing(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, 224, "bicubic", 1.0)
UNIT_GREY_28 = Preprocessing((0.0,), (1.0,), 28)
"""The VAE's input (and the small CNN that scores the DCGAN): one grey channel in [0, 1] at 28 px (MNIST-sized)."""
SIGNED_GREY_28 = Preprocessing((0.5,), (0.5,), 28)
"""The DCGAN discriminator's input: one grey channel in [-1, 1] at 28 px, the range of its generator's tanh."""

MODELS: dict[tuple[str, str], Model] = {(m.family, m.name): m for m in (
    _torchvision_resnet("resnet152", "ResNet152_Weights", _V1_V2),
    _torchvision_resnet("resnet50", "ResNet50_Weights", _V1_V2),
    _torchvision_resnet("resnet18", "ResNet18_Weights", {"imagenet": "IMAGENET1K_V1", "imagenet-v1": "IMAGENET1K_V1"}),
    _demo("digits-resnet", "cnn", ("features", "stages", "skips"), 32, "atml.train.pretrain",
          "atml's digits ResNet (2 blocks per stage) pretrained on digits 0-4"),
    _demo("digits-resnet-small", "cnn", ("features", "stages", "skips"), 32, "atml.train.pretrain",
          "atml's small digits ResNet (1 block per stage) pretrained on digits 0-4"),
    Model("deit_small_patch16_224", "vit", "timm", ("tokens", "attention"), {"imagenet": Weights(
        "imagenet", "url", "https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth",
        "SHA-256 prefix in the file name (torch.hub); backend=hf: facebook/deit-small-patch16-224, Hugging Face "
        "blob name", _DEIT_PRE, "DeiT-Small/16 ImageNet-1k, official release")}, _DEIT_PRE),
    _demo("vit-digits", "vit", ("tokens", "attention"), 32, "atml.train.vit_recipe",
          "atml's small ViT (patch 4, 32 px) trained on digits 0-4", "bicubic"),
    Model("ViT-B-32", "clip", "open_clip", ("image-text embeddings",), {"openai": Weights(
        "openai", "open_clip-hub", "timm/vit_base_patch32_clip_224.openai", "Hugging Face blob name (SHA-256)",
        _CLIP_PRE, "OpenAI CLIP ViT-B/32 via open_clip")}, _CLIP_PRE),
    _demo("clip-digits", "clip", ("image-text embeddings",), 32, "atml.train.clip_recipe",
          "atml's tiny CLIP trained with open_clip's loss on captioned digits", "bicubic"),
    Model("mlp-vae", "vae", "atml", ("latent",), {}, UNIT_GREY_28),
    Model("dcgan", "gan", "atml", ("generator", "discriminator"), {}, SIGNED_GREY_28),
)}
"""atml's own entries. The VAE and the DCGAN have no published weights: the vae.* and gan.* experiments train them
from a seeded random initialisation."""


def is_path(spec: str) -> bool:
    """A weights spec that names a file or folder, not a tag."""
    return os.sep in spec or spec.endswith((".pth", ".pt", ".safetensors", ".bin"))


def canonical_weights(tag: str) -> str:
    """One spelling for the demo's weights: ``digits`` (earlier ``pretrain-digits`` / ``train-digits``)."""
    return DEMO_TAG if tag in DEMO_ALIASES else tag


def lookup(family: str, name: str) -> Model:
    """The registry entry for ``name`` in ``family``: atml's own, or one built from timm/torchvision/open_clip."""
    if (family, name) in MODELS:
        entry = MODELS[(family, name)]
        if entry.builder == "open_clip":  # open_clip's other tags for the same model, atml's entries first
            return dataclasses.replace(entry, weights={**_from_library(family, name).weights, **entry.weights})
        return entry
    return _from_library(family, name)


@functools.cache
def _from_library(family: str, name: str) -> Model:
    if family in ("cnn", "vit") and name.startswith("timm/"):
        return _timm_entry(family, name)
    if family == "vit" and name == TRANSFORMERS_FOLDER:
        return Model(name, "vit", "transformers", ("features", "tokens", "attention"), {},
                     MODELS[("vit", DEIT_SMALL)].preprocessing)
    if family == "cnn":
        return _torchvision_entry(name)
    if family == "clip":
        return _open_clip_entry(name)
    raise UsageError(f"arch={name!r} is not in atml's model registry for the {family} experiments")


def _timm_entry(family: str, name: str) -> Model:
    import timm

    cfg = timm.models.get_pretrained_cfg(name.removeprefix("timm/"))
    values = dataclasses.asdict(cfg) if cfg is not None else {}
    pre = preprocessing_from(values, TIMM_DEFAULT)
    weights = {}
    if values.get("hf_hub_id"):
        weights["imagenet"] = Weights("imagenet", "timm-hub", values["hf_hub_id"],
                                      "Hugging Face blob name (SHA-256)", pre,
                                      f"timm {values['hf_hub_id']} (timm's default weights for it)")
    kind: Family = "cnn" if family == "cnn" else "vit"
    exposes: tuple[Exposes, ...] = ("features", "stages") if kind == "cnn" else ("tokens", "attention")
    return Model(name, kind, "timm", exposes, weights, pre)


def _torchvision_entry(name: str) -> Model:
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    weights = {}
    for tag, member in (("imagenet", enum.DEFAULT.name), ("imagenet-v1", "IMAGENET1K_V1")):
        if member in enum.__members__:
            transform = enum[member].transforms()
            pre = preprocessing_from(vars(transform), TIMM_DEFAULT)
            weights[tag] = Weights(tag, "torchvision", f"{enum.__name__}.{member}",
                                   "SHA-256 prefix in the file name (torch.hub)", pre,
                                   f"torchvision {enum.__name__}.{member}")
    is_resnet = name.startswith(("resnet", "resnext", "wide_resnet"))
    default = next(iter(weights.values())).preprocessing if weights else Preprocessing(IMAGENET_MEAN, IMAGENET_STD,
                                                                                         224)
    return Model(name, "cnn", "torchvision", ("features", "stages", "skips") if is_resnet else ("features", "stages"),
                 weights, default)


def _open_clip_entry(name: str) -> Model:
    import open_clip

    weights, default = {}, None
    own = preprocessing_from((open_clip.get_model_config(name) or {}).get("preprocess_cfg", {}), _CLIP_PRE)
    for tag in open_clip.list_pretrained_tags_by_model(name):  # each key the weights' own, else the model config's
        cfg = open_clip.get_pretrained_cfg(name, tag)
        pre = preprocessing_from({k: cfg.get(k) for k in ("mean", "std", "interpolation")}, own)
        default = default or pre
        repo = (cfg.get("hf_hub") or "").strip("/")
        weights[tag] = Weights(tag, "open_clip-hub" if repo else "url", repo or cfg.get("url", ""),
                               "Hugging Face blob name (SHA-256)" if repo else "none published", pre,
                               f"open_clip {name} {tag}")
    return Model(name, "clip", "open_clip", ("image-text embeddings",), weights, default or _CLIP_PRE)


def demo_models(family: str) -> tuple[str, ...]:
    """The models with atml-trained weights in ``family`` (where ``weights=digits`` applies)."""
    return tuple(m.name for m in MODELS.values() if m.family == family and DEMO_TAG in m.weights)


def weight_tags(family: str, name: str) -> tuple[str, ...]:
    """The named weights ``name`` has (``random`` and a file path are always accepted besides)."""
    return tuple(lookup(family, name).weights)


def table(family: str | None = None) -> list[dict[str, Any]]:
    """atml's own entries as rows (README, ``atml models``): model, weights tag, source, check, preprocessing."""
    random = {m.name: Weights("random", "none", "trained by the experiment from a seeded initialisation", "none",
                              m.preprocessing, "random initialisation") for m in MODELS.values() if not m.weights}
    return [{"family": m.family, "model": m.name, "builder": m.builder, "weights": w.tag, "source": w.source,
             "location": w.location, "check": w.check, "mean": w.preprocessing.mean, "std": w.preprocessing.std,
             "input_size": w.preprocessing.input_size, "exposes": ", ".join(m.exposes)}
            for m in MODELS.values() if family in (None, m.family)
            for w in (m.weights or {"random": random[m.name]}).values()]

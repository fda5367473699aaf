"""CLIP through open_clip: OpenAI's ViT-B/32, or the demo's tiny CLIP built by the same code.

Weights (``weights=``):

* ``openai``: OpenAI's ViT-B/32 as open_clip publishes it on the Hugging Face hub
  (``timm/vit_base_patch32_clip_224.openai``, ``open_clip_model.safetensors``), from the
  local Hugging Face cache or downloaded when online. OpenAI's own ``ViT-B-32.pt`` is a
  TorchScript archive, not a state dict, and is not read (no ``weights_only`` load exists
  for it).
* ``random``: open_clip's own initialisation, said so everywhere.
* a path: an open_clip state dict (``.safetensors``, or ``.pt``/``.pth``/``.bin`` read
  with ``weights_only=True``), or a folder holding ``open_clip_model.safetensors`` (a
  Hugging Face snapshot of the model).
* ``digits``: the demo's tiny CLIP trained by atml (:mod:`atml.train.clip_recipe`).

The tokenizer is open_clip's BPE tokenizer, whose vocabulary ships inside the package,
so text encoding never needs the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atml.errors import UsageError, WeightsError
from atml.models import registry
from atml.models import weights as weights_lib
from atml.models.preprocess import Preprocess
from atml.models.registry import Preprocessing
from atml.models.types import Built, FamilySpec, ImageTextModel


@dataclasses.dataclass(frozen=True)
class Arch:
    open_clip_name: str | None
    """A model config that ships with open_clip, or None for a custom one."""
    context_length: int
    preprocessing: Preprocessing
    custom: dict[str, Any] | None = None


ARCHS = {  # preprocessing from the model registry
    "ViT-B-32": Arch("ViT-B-32", 77, registry.MODELS[("clip", "ViT-B-32")].preprocessing),
    "clip-digits": Arch(None, 16, registry.MODELS[("clip", "clip-digits")].preprocessing, custom={
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 96, "layers": 3, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }),
}


class CLIPModel(nn.Module):
    """An open_clip CLIP with its preprocessing and tokenizer; embeddings raw or L2-normalised."""

    def __init__(self, model: nn.Module, arch_name: str, arch: Arch | None = None, tokenizer: Any = None) -> None:
        super().__init__()
        import open_clip

        self.model: Any = model  # open_clip's CLIP (or CustomTextCLIP)
        self.arch_name = arch_name
        self.arch = arch or ARCHS[arch_name]
        self.preprocessing = self.arch.preprocessing
        self.preprocess = Preprocess(self.preprocessing)
        self.weights_sha256 = ""
        """The weights' digest (or spec and seed for random ones): the key of the embedding cache."""
        # OpenAI's BPE vocabulary ships with open_clip; other tokenizers (SigLIP's) are passed in
        self.tokenizer = tokenizer or open_clip.get_tokenizer("ViT-B-32")

    @property
    def sigmoid(self) -> bool:
        """Trained with SigLIP's pairwise sigmoid loss (a learnt logit bias), not CLIP's softmax over the batch."""
        return getattr(self.model, "logit_bias", None) is not None

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        out: torch.Tensor = self.tokenizer(texts, context_length=self.arch.context_length)
        return out

    def encode_images(self, images: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
        """uint8 images of any size -> embeddings ``(N, D)``."""
        out: torch.Tensor = self.model.encode_image(self.preprocess(images), normalize=normalize)
        return out

    def encode_texts(self, texts: list[str], *, normalize: bool = False) -> torch.Tensor:
        tokens = self.tokenize(texts).to(self.preprocess.mean.device)
        out: torch.Tensor = self.model.encode_text(tokens, normalize=normalize)
        return out


def check_arch(arch_name: str) -> None:
    """Refuse a name that is neither atml's nor one of open_clip's model configs."""
    import open_clip

    if arch_name in ARCHS or arch_name in open_clip.list_models():
        return
    close = [m for m in open_clip.list_models() if arch_name.lower()[:5] in m.lower()][:8]
    raise UsageError(f"arch={arch_name!r} is not an open_clip model"
                     + (f"; similar: {', '.join(close)}" if close else "")
                     + f"; open_clip.list_models() lists all {len(open_clip.list_models())}, and clip-digits is the "
                     "demo's tiny CLIP")


def build(arch_name: str, weights: weights_lib.Resolved, *, offline: bool = True, seed: int = 0) -> Built[CLIPModel]:
    """The model with the resolved ``weights`` (:func:`atml.models.weights.resolve`) loaded.

    ``arch_name``: any open_clip model config (``ViT-B-16``, ``RN50``, ``ViT-B-16-SigLIP``, ...)
    or the demo's ``clip-digits``; ``seed``: open_clip's random initialisation; ``offline``: where
    a Hugging Face tokenizer (SigLIP's) may come from.
    """
    check_arch(arch_name)
    entry = registry.lookup("clip", arch_name)
    state, info, pretrained_cfg = weights.state, weights.info, weights.config
    if info.spec == "random":
        info = dataclasses.replace(info, description=f"open_clip's random initialisation of {arch_name} (seed "
                                                       f"{seed}; no pretrained weights)")
    quick_gelu = pretrained_cfg.get("quick_gelu", arch_name == "ViT-B-32")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _open_clip_model(arch_name, quick_gelu)
    if state is not None:
        try:
            model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
        except RuntimeError as err:
            lines = " ".join(line.strip() for line in str(err).splitlines()[1:3])
            raise WeightsError(f"{info.file or info.spec} does not fit open_clip {arch_name}: "
                               f"{lines[:300]}") from err
    if arch_name in ARCHS:
        built = CLIPModel(model.eval(), arch_name)
        return Built(built, built.preprocess, info)
    chosen = entry.weights.get(info.spec)  # the registry's conversion of the tag's input, done once there
    pre = chosen.preprocessing if chosen is not None else entry.preprocessing  # random or a file: the model's own
    towers: Any = model  # open_clip's CLIP: the visual tower's image_size is an int or (H, W), as its config says
    size = towers.visual.image_size
    side = int(size[-1] if isinstance(size, (tuple, list)) else size)
    arch = Arch(None, int(towers.context_length), dataclasses.replace(pre, input_size=side, crop_pct=1.0))
    built = CLIPModel(model.eval(), arch_name, arch, tokenizer(arch_name, offline=offline))
    return Built(built, built.preprocess, info)


def tokenizer(arch_name: str, *, offline: bool) -> Any:
    """open_clip's tokenizer for the model: OpenAI's BPE (shipped), or a Hugging Face tokenizer (SigLIP's)."""
    import open_clip

    text_cfg = open_clip.get_model_config(arch_name).get("text_cfg", {})
    repo = text_cfg.get("hf_tokenizer_name")
    if not repo:
        return open_clip.get_tokenizer(arch_name)
    folder = weights_lib.hf_snapshot(repo, ["tokenizer*", "special_tokens_map.json", "*.model", "vocab*",
                                            "config.json"], offline=offline)
    if folder is None:
        raise WeightsError(f"{arch_name} tokenizes text with the Hugging Face tokenizer {repo}, which is not in the "
                           "Hugging Face cache" + (" and offline mode forbids downloading" if offline else "")
                           + f"; run once online, or put it there with huggingface-cli download {repo}")
    with _quiet_open_clip():
        return open_clip.tokenizer.HFTokenizer(folder, context_length=text_cfg.get("context_length", 77),
                                               **text_cfg.get("tokenizer_kwargs", {}))


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's own log records for the duration of the block, and nothing else.

    open_clip logs through the root logger (``logging.warning``), so a filter on the root
    logger picks its records by the file that made them; other code keeps logging.
    """
    package = str(Path(open_clip_file()).parent)

    def keep(record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(package)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def open_clip_file() -> str:
    import open_clip

    out: str = open_clip.__file__
    return out


def _open_clip_model(arch_name: str, quick_gelu: bool) -> nn.Module:
    import open_clip

    arch = ARCHS.get(arch_name)
    if arch is None or arch.open_clip_name:
        with _quiet_open_clip():  # its "no pretrained weights loaded" warning: atml loads them itself
            out: nn.Module = open_clip.create_model(arch_name, pretrained=None, quick_gelu=quick_gelu)
            return out
    cfg = arch.custom or {}
    model: nn.Module = open_clip.CLIP(cfg["embed_dim"], open_clip.CLIPVisionCfg(**cfg["vision_cfg"]),
                                      open_clip.CLIPTextCfg(**cfg["text_cfg"]), quick_gelu=False)
    return model


# -- the family, as the factory and compare.* know it --------------------------------------
def _layers(model: CLIPModel) -> dict[str, nn.Module]:
    """The image tower's transformer blocks, or a ResNet tower's four stages."""
    visual: Any = model.model.visual
    if hasattr(visual, "transformer"):
        return {f"block{i}": block for i, block in enumerate(visual.transformer.resblocks)}
    return {name: getattr(visual, name) for name in ("layer1", "layer2", "layer3", "layer4")}


def _prefix_tokens(model: CLIPModel) -> int:
    return 1  # the class token


def _features(model: CLIPModel, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = model.model.encode_image(x)
    return out


def _build_entry(entry: registry.Model, weights: weights_lib.Resolved, *, num_classes: int, offline: bool,
                 keep_head: bool, **options: Any) -> Built[CLIPModel]:
    return build(entry.name, weights, offline=offline, **options)


SPEC = FamilySpec("clip", CLIPModel, ImageTextModel, check_arch, _build_entry, _layers, _prefix_tokens, _features,
                  options=("seed",))
"""CLIP: any open_clip model and pretrained tag, and the demo's tiny CLIP (``clip.*``)."""

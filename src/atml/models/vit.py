"""Vision Transformers from timm or Hugging Face transformers, behind one small interface.

:class:`ViT` splits a classifier into the three steps the ViT experiments need:
``embed`` (patch tokens + class token, position embeddings added), ``encode`` (the
blocks and the final norm) and ``classify`` (the head on the class token). Dropping
tokens for masking, probing CLS vs mean-pooled tokens and reading attention then work
the same way for both backends.

Attention probabilities: both libraries default to fused kernels that never form the
attention matrix. :meth:`ViT.attention` switches the model to its unfused path for the
duration of a ``with`` block (timm: ``fused_attn = False``; transformers: the ``eager``
implementation), records each layer's ``(batch, heads, tokens, tokens)`` softmax output
with forward hooks, and restores the model and removes the hooks afterwards.

Weights (``weights=``):

* ``imagenet``: DeiT-Small/16 ImageNet-1k weights. timm: the official DeiT release file
  ``deit_small_patch16_224-cd65a155.pth`` in the torch hub cache (downloaded when
  online; its SHA-256 prefix is checked). transformers: ``facebook/deit-small-patch16-224``
  from the Hugging Face cache or hub, or the same DeiT file converted.
* ``random``: freshly initialised, said so everywhere.
* a path: a timm-style state dict (``.pth``/``.pt`` with ``weights_only=True``, or
  ``.safetensors``), or a transformers model folder (``config.json`` + weights).
* ``digits``: the demo's small ViT trained by atml (:mod:`atml.train.vit_recipe`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atml.errors import UsageError, WeightsError
from atml.models import registry
from atml.models import weights as weights_lib
from atml.models.preprocess import Preprocess
from atml.models.registry import BACKENDS as BACKENDS
from atml.models.registry import DEIT_SMALL as DEIT_SMALL
from atml.models.registry import TIMM as TIMM
from atml.models.registry import Backend as Backend
from atml.models.registry import Preprocessing
from atml.models.types import Built, FamilySpec, TokenModel
from atml.provenance import WeightsInfo

DEIT_URL = registry.MODELS[("vit", DEIT_SMALL)].weights["imagenet"].location
BICUBIC_HALF = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224, "bicubic", 1.0)
"""ViTImageProcessor's defaults (a transformers folder without its own preprocessor_config.json)."""


@dataclasses.dataclass(frozen=True)
class Arch:
    """A ViT shape both backends can build (its preprocessing is the registry entry's)."""

    image_size: int
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float


ARCHS = {
    DEIT_SMALL: Arch(224, 16, 384, 12, 6, 4.0),
    "vit-digits": Arch(32, 4, 96, 4, 3, 2.0),
}


class ViT(nn.Module):
    """A ViT classifier with token-level access and attention capture; one subclass per backend.

    Tokens are ``[CLS, registers..., patches...]``: ``num_prefix_tokens`` counts the class
    token and any register tokens (DINOv2 with registers: 5), so patch ``i`` is token
    ``num_prefix_tokens + i`` whatever the model.
    """

    backend: str

    def __init__(self, model: nn.Module, arch: Arch, preprocessing: Preprocessing, classes: list[str],
                 num_prefix_tokens: int = 1) -> None:
        super().__init__()
        self.model: Any = model  # timm's VisionTransformer or transformers' ViTForImageClassification
        self.arch = arch
        self.preprocessing = preprocessing
        self.classes = classes
        self.preprocess = Preprocess(preprocessing)
        self.grid = arch.image_size // arch.patch_size
        self.num_prefix_tokens = num_prefix_tokens

    @property
    def has_head(self) -> bool:
        """False for a backbone published without a classifier (DINOv2): ``classify`` then returns features."""
        return True

    @property
    def num_features(self) -> int:
        return self.arch.dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> tokens ``(B, 1 + N, D)`` with position embeddings added."""
        raise NotImplementedError

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> the final (normed) tokens; any subset of patch tokens may be passed."""
        raise NotImplementedError

    def classify(self, encoded: torch.Tensor) -> torch.Tensor:
        """The head on the class token."""
        raise NotImplementedError

    def attention_modules(self) -> list[Any]:
        """Each layer's attention module (the backend's own class)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for normalised images; ``keep`` ``(B, K)``: indices of the patches to keep (the rest dropped)."""
        tokens = self.embed(x)
        if keep is not None:
            tokens = drop_tokens(tokens, keep, self.num_prefix_tokens)
        return self.classify(self.encode(tokens))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens ``(B, 1 + N, D)`` for normalised images (CLS first)."""
        return self.encode(self.embed(x))

    @contextlib.contextmanager
    def attention(self, consume: Callable[[torch.Tensor], None] | None = None) -> Iterator[list[torch.Tensor]]:
        """Within the block, every forward appends each layer's attention ``(B, H, T, T)``, in order.

        With ``consume``, each layer's attention is passed to it as the model computes it and
        nothing is kept: memory holds one layer's maps, not all of them (DINOv2 at 518 px:
        45 MB per image and layer, 0.5 GB per image for its 12 layers).
        """
        maps: list[torch.Tensor] = []
        with self._unfused(consume or maps.append):
            yield maps

    def _unfused(self, keep: Callable[[torch.Tensor], None]) -> contextlib.AbstractContextManager[None]:
        """The model on its unfused attention path, each layer's probabilities passed to ``keep``."""
        raise NotImplementedError


class TimmViT(ViT):
    """A timm ``VisionTransformer``: attention read at ``attn_drop`` with ``fused_attn`` off."""

    backend = "timm"

    @property
    def has_head(self) -> bool:
        return bool(getattr(self.model, "num_classes", 1) > 0)

    def set_head(self, weight: torch.Tensor, bias: torch.Tensor, classes: list[str]) -> None:
        """Give the ViT a linear classifier (fitted elsewhere, e.g. a probe on its own features)."""
        self.model.reset_classifier(len(classes))
        with torch.no_grad():
            self.model.head.weight.copy_(weight)
            self.model.head.bias.copy_(bias)
        self.model.head.to(self.model.cls_token.device)
        self.classes = list(classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.norm_pre(self.model._pos_embed(self.model.patch_embed(x)))
        return out

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.norm(self.model.blocks(tokens))
        return out

    def classify(self, encoded: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.forward_head(encoded)
        return out

    def attention_modules(self) -> list[Any]:
        return [block.attn for block in self.model.blocks]

    @contextlib.contextmanager
    def _unfused(self, keep: Callable[[torch.Tensor], None]) -> Iterator[None]:
        modules = self.attention_modules()
        saved = [m.fused_attn for m in modules]
        handles = []
        for m in modules:
            m.fused_attn = False
            handles.append(m.attn_drop.register_forward_hook(lambda _m, _i, out: keep(out.detach())))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for m, fused in zip(modules, saved):
                m.fused_attn = fused


class HFViT(ViT):
    """A transformers ``ViTForImageClassification``: attention from the ``eager`` implementation's outputs."""

    backend = "hf"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.vit.embeddings(x)
        return out

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        for layer in self.model.vit.layers:
            tokens = layer(tokens, None)
        out: torch.Tensor = self.model.vit.layernorm(tokens)
        return out

    def classify(self, encoded: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.classifier(encoded[:, 0])
        return out

    def attention_modules(self) -> list[Any]:
        return [layer.attention for layer in self.model.vit.layers]

    @contextlib.contextmanager
    def _unfused(self, keep: Callable[[torch.Tensor], None]) -> Iterator[None]:
        saved = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        handles = [m.register_forward_hook(lambda _m, _i, out: keep(out[1].detach()))
                   for m in self.attention_modules()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self.model.set_attn_implementation(saved)


def _built(model: ViT, info: WeightsInfo) -> Built[ViT]:
    return Built(model, model.preprocess, info)


def _cls_token(tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    return tokens[:, 0]


def _mean_of_patches(tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    return tokens[:, prefix:].mean(1)


POOLINGS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"cls": _cls_token, "mean": _mean_of_patches}
"""Token 0 is the class token; patches start after the class and register tokens (``prefix`` of them)."""


def pooled_features(model: ViT, x: torch.Tensor) -> torch.Tensor:
    """``[CLS, mean of patches]`` side by side, ``(B, 2 * D)``, from one forward pass."""
    tokens = model.tokens(x)
    return torch.cat([fn(tokens, model.num_prefix_tokens) for fn in POOLINGS.values()], dim=1)


def drop_tokens(tokens: torch.Tensor, keep: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """Keep the ``prefix`` tokens and the patch tokens at ``keep`` ``(B, K)``."""
    patches = tokens[:, prefix:]
    index = keep.to(tokens.device).unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    return torch.cat([tokens[:, :prefix], patches.gather(1, index)], dim=1)


def build(arch_name: str, weights: weights_lib.Resolved, *, backend: str = "timm", num_classes: int = 1000,
          classes: list[str] | None = None, input_size: int = 0) -> Built[ViT]:
    """The model with the resolved ``weights`` (:func:`atml.models.weights.resolve`) loaded.

    ``arch_name``: DeiT-Small, the demo's ``vit-digits``, or ``timm/NAME`` for any timm
    VisionTransformer (``input_size``: build it at this size instead of its own, position
    embeddings resampled). A head in the weights sets the number of classes; ``classes`` names
    them (default: the weights' own, ImageNet's for 1,000, else their indices).
    """
    if backend not in BACKENDS:
        raise UsageError(f"backend={backend!r} is not valid; choose one of {', '.join(BACKENDS)}")
    check_arch(arch_name, backend)
    if weights.folder is not None:
        return _from_folder(arch_name, weights, weights.folder, classes)
    if arch_name.startswith(TIMM):
        return _build_any_timm(arch_name.removeprefix(TIMM), weights, input_size=input_size, num_classes=num_classes)
    arch, pre = ARCHS[arch_name], registry.MODELS[("vit", arch_name)].preprocessing
    state, info = weights.state, weights.info
    if state is not None and "head.weight" in state:
        num_classes = state["head.weight"].shape[0]
    classes = classes or weights.classes or (imagenet_classes() if num_classes == 1000
                                             else [str(i) for i in range(num_classes)])
    timm_model = _timm_model(arch_name, arch, num_classes)
    if state is not None:
        _load_timm_state(timm_model, state, info.file or info.spec)
    if backend == "timm":
        return _built(TimmViT(timm_model.eval(), arch, pre, classes), info)
    hf_model = hf_from_timm(timm_model, arch, classes)
    info = dataclasses.replace(info, description=info.description + " (converted timm -> transformers)")
    return _built(HFViT(hf_model, arch, pre, classes), info)


AUTO = registry.TRANSFORMERS_FOLDER


def check_arch(arch_name: str, backend: str = "timm") -> None:
    """Refuse an arch that is neither atml's, ``timm/NAME`` of a timm model, nor ``auto`` (transformers folders)."""
    if arch_name in ARCHS or arch_name == AUTO:
        return
    if arch_name.startswith(TIMM):
        import timm

        if backend == "hf":
            raise UsageError(f"arch={arch_name} is a timm model: use backend=timm (backend=hf reads transformers "
                             f"folders, with arch={AUTO})")
        if timm.is_model(arch_name.removeprefix(TIMM)):
            return
        close = timm.list_models(f"*{arch_name.removeprefix(TIMM).split('_')[0]}*")[:6]
        raise UsageError(f"arch={arch_name!r}: timm has no model {arch_name.removeprefix(TIMM)!r}"
                         + (f"; similar: {', '.join(TIMM + c for c in close)}" if close else ""))
    raise UsageError(f"arch={arch_name!r} is not valid; choose one of {', '.join(ARCHS)}, timm/NAME for any timm "
                     f"ViT (timm/vit_small_patch14_dinov2, timm/vit_base_patch16_224, ...), or {AUTO} with "
                     "backend=hf and a transformers folder")


def _build_any_timm(name: str, weights: weights_lib.Resolved, *, input_size: int, num_classes: int) -> Built[ViT]:
    """Any timm ``VisionTransformer`` (class token required; register tokens and any patch size handled)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    file, state, info = weights.file, weights.state, weights.info
    kwargs: dict[str, Any] = {"pretrained": file is not None}
    if file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": file}
    if input_size:
        kwargs["img_size"] = input_size
    if state is not None:  # a state dict's own head sets the classes; without one, a fresh head of num_classes
        kwargs["num_classes"] = state["head.weight"].shape[0] if "head.weight" in state else num_classes
    try:
        model: Any = timm.create_model(name, **kwargs)
    except (AssertionError, ValueError, TypeError) as err:  # timm's own checks of img_size and patch size
        raise UsageError(f"timm/{name} cannot be built at input_size={input_size}: {err}") from err
    if not isinstance(model, VisionTransformer):
        raise UsageError(f"timm/{name} is a {type(model).__name__}, not a VisionTransformer; atml's ViT experiments "
                         "read its patch tokens and attention the way timm's VisionTransformer lays them out")
    if model.cls_token is None:
        raise UsageError(f"timm/{name} has no class token (it pools its patches); the ViT experiments read the "
                         "CLS token's attention and features: pick a model with one")
    if state is not None:
        _load_timm_state(model, state, info.file or info.spec)
    block: Any = model.blocks[0]
    image, patch = model.patch_embed.img_size, model.patch_embed.patch_size
    if image[0] != image[1] or patch[0] != patch[1]:
        raise UsageError(f"timm/{name} has a non-square input or patch ({image}, {patch}); atml's maps need squares")
    arch = Arch(image[0], patch[0], model.embed_dim, len(model.blocks), block.attn.num_heads,
                block.mlp.fc1.out_features / model.embed_dim)
    pre = registry.lookup("vit", TIMM + name).preprocessing  # timm's pretrained_cfg, converted once
    if input_size:  # another input size: the image is resized to it whole (timm's crop is for its own size)
        pre = dataclasses.replace(pre, input_size=image[0], crop_pct=1.0)
    classes = (imagenet_classes() if model.num_classes == 1000 else [str(i) for i in range(model.num_classes)])
    return _built(TimmViT(model.eval(), arch, pre, classes, model.num_prefix_tokens), info)


def _timm_model(arch_name: str, arch: Arch, num_classes: int) -> nn.Module:
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if arch_name == DEIT_SMALL:
        return timm.create_model(DEIT_SMALL, pretrained=False, num_classes=num_classes)
    return VisionTransformer(img_size=arch.image_size, patch_size=arch.patch_size, embed_dim=arch.dim,
                             depth=arch.depth, num_heads=arch.heads, mlp_ratio=arch.mlp_ratio,
                             num_classes=num_classes)


def _load_timm_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a timm state dict strictly; one without the classifier (a backbone) keeps the model's fresh head, as a
    CNN's does (:func:`atml.models.weights.load_backbone`)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict().keys()
    if "head.weight" not in state and "head.weight" in own and state.keys() <= own:
        weights_lib.load_backbone(model, state, head_prefix="head.", source=source)
        return
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines()[1:3]]
        raise WeightsError(f"{source} does not fit this ViT: {' '.join(lines)[:300]}") from err


def imagenet_classes() -> list[str]:
    """ImageNet-1k class names in index order, from the list that ships inside timm."""
    from timm.data.imagenet_info import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


# --- transformers -------------------------------------------------------------------------


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise UsageError("backend=hf needs Hugging Face transformers: pip install 'atml[hf]'") from err
    return transformers


def hf_config(arch: Arch, classes: list[str]) -> Any:
    transformers = _require_transformers()
    return transformers.ViTConfig(
        image_size=arch.image_size, patch_size=arch.patch_size, hidden_size=arch.dim,
        num_hidden_layers=arch.depth, num_attention_heads=arch.heads,
        intermediate_size=int(arch.dim * arch.mlp_ratio), layer_norm_eps=1e-6, qkv_bias=True,
        id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)})


def hf_from_timm(timm_model: nn.Module, arch: Arch, classes: list[str]) -> nn.Module:
    """A transformers ``ViTForImageClassification`` holding the same weights as a timm ViT."""
    transformers = _require_transformers()
    model = transformers.ViTForImageClassification(hf_config(arch, classes))
    model.load_state_dict(timm_to_hf(timm_model.state_dict(), arch.depth), strict=True)
    out: nn.Module = model.eval()
    return out


def timm_to_hf(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Rename (and split the fused qkv of) a timm ViT state dict into transformers' layout."""
    out = {
        "vit.embeddings.cls_token": state["cls_token"],
        "vit.embeddings.position_embeddings": state["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "vit.layernorm.weight": state["norm.weight"], "vit.layernorm.bias": state["norm.bias"],
        "classifier.weight": state["head.weight"], "classifier.bias": state["head.bias"],
    }
    pairs = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"vit.layers.{i}."
        for a, b in pairs.items():
            for p in ("weight", "bias"):
                out[f"{dst}{b}.{p}"] = state[f"{src}{a}.{p}"]
        for p in ("weight", "bias"):
            q, k, v = state[f"{src}attn.qkv.{p}"].chunk(3)
            for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{dst}attention.{name}.{p}"] = part
    return out


def _from_folder(arch_name: str, weights: weights_lib.Resolved, folder: Path,
                 classes: list[str] | None) -> Built[ViT]:
    """A transformers ViT from its folder: the user's folder with its own shape and image processor, a registry
    tag's snapshot (DeiT-Small's) with the entry's."""
    model, names = _hf_from_folder(folder, arch_name)
    if registry.is_path(weights.info.spec):
        arch, pre = hf_arch(folder, model.config)
    else:
        arch, pre = ARCHS[arch_name], registry.MODELS[("vit", arch_name)].preprocessing
    return _built(HFViT(model, arch, pre, classes or names), weights.info)


def _hf_from_folder(folder: Path, arch_name: str) -> tuple[nn.Module, list[str]]:
    """The ViTForImageClassification a transformers folder holds (checked by :func:`weights.transformers_info`), and
    its class names."""
    transformers = _require_transformers()
    safetensors = bool(sorted(folder.glob("*.safetensors")))
    try:
        model = transformers.ViTForImageClassification.from_pretrained(str(folder), local_files_only=True,
                                                                       use_safetensors=safetensors)
    except Exception as err:  # transformers raises OSError, ValueError... for broken folders
        raise WeightsError(f"cannot load the transformers model in {folder}: {str(err).splitlines()[0]}") from err
    if getattr(model.config, "model_type", "vit") != "vit":
        raise WeightsError(f"{folder} holds a transformers {model.config.model_type} model; backend=hf reads ViT "
                           "(ViTForImageClassification) folders; use the model's timm/ name for others")
    if arch_name in ARCHS:
        _check_arch(model.config, ARCHS[arch_name], folder)
    config = json.loads((folder / "config.json").read_text())
    names = [config.get("id2label", {}).get(str(i), str(i)) for i in range(model.config.num_labels)]
    return model.eval(), names


def hf_arch(folder: Path, config: Any) -> tuple[Arch, Preprocessing]:
    """The shape a transformers ViT folder holds, and its image processor's mean and std when it has one."""
    processor = folder / "preprocessor_config.json"
    values = json.loads(processor.read_text()) if processor.is_file() else {}
    pre = registry.preprocessing_from({"image_mean": values.get("image_mean"), "image_std": values.get("image_std"),
                                       "image_size": config.image_size}, BICUBIC_HALF)
    return Arch(config.image_size, config.patch_size, config.hidden_size, config.num_hidden_layers,
                config.num_attention_heads, config.intermediate_size / config.hidden_size), pre


def _check_arch(config: Any, arch: Arch, source: Path) -> None:
    got = (config.image_size, config.patch_size, config.hidden_size, config.num_hidden_layers)
    want = (arch.image_size, arch.patch_size, arch.dim, arch.depth)
    if got != want:
        raise WeightsError(f"{source} holds a ViT with (image, patch, width, depth) = {got}, not {want}; "
                           "pick the matching arch")


# -- the family, as the factory and compare.* know it --------------------------------------
def _layers(model: ViT) -> dict[str, nn.Module]:
    """Every transformer block, in order."""
    blocks = model.model.blocks if isinstance(model, TimmViT) else model.model.vit.layers
    return {f"block{i}": block for i, block in enumerate(blocks)}


def _prefix_tokens(model: ViT) -> int:
    return model.num_prefix_tokens


def _features(model: ViT, x: torch.Tensor) -> torch.Tensor:
    """The pre-logits: what timm's head pools (its class token, or the average it takes), else the class token."""
    if isinstance(model, TimmViT):
        out: torch.Tensor = model.model.forward_head(model.tokens(x), pre_logits=True)
        return out
    return model.tokens(x)[:, 0]


def _build_entry(entry: registry.Model, weights: weights_lib.Resolved, *, num_classes: int, offline: bool,
                 keep_head: bool, **options: Any) -> Built[ViT]:
    return build(entry.name, weights, num_classes=num_classes, **options)


SPEC = FamilySpec("vit", ViT, TokenModel, check_arch, _build_entry, _layers, _prefix_tokens, _features,
                  options=("backend", "classes", "input_size"))
"""ViTs: DeiT-S, the demo's digits ViT and any timm VisionTransformer; transformers folders (``vit.*``)."""

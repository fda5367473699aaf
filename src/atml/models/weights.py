"""Where weights come from, and the offline rules: never random weights in disguise.

A weights spec is one of:

* a name the model family knows (``imagenet``, ``imagenet-v1`` for torchvision ResNets),
  taken from the torch hub cache or downloaded there when online, and checked against the
  SHA-256 prefix torchvision publishes in the file name;
* ``random``: freshly initialised, said so everywhere;
* a path to a state dict (``.pth``/``.pt`` read with ``weights_only=True``, or
  ``.safetensors``); a torchvision-style name (``resnet152-f82ba261.pth``) is hash-checked;
* the weights atml trains itself (the demo's stand-ins, tag ``digits``): a file in atml's cache,
  ``$ATML_CACHE/pretrained/<model>-<recipe key>.pt``, read here like a hub file; making it is
  :mod:`atml.pretrained`'s work, never the reader's.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from atml import storage
from atml.errors import Option, Placeholder, UsageError, WeightsError
from atml.models.registry import DEIT_SMALL, HF_DEIT, Model, Weights, canonical_weights, is_path
from atml.provenance import WeightsInfo
from atml.storage import sha256sum

HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""The names open_clip's weights have on the Hugging Face hub (and in a snapshot folder)."""


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """Read a local state dict safely, checking the hash in its name when it has one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass an existing .pth/.pt/.safetensors file")
    digest = sha256sum(path)
    _check_name_hash(path, digest)
    state = _read(path)
    if isinstance(state, dict):
        for key in ("state_dict", "model"):  # atml checkpoints and common wrappers
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return state, WeightsInfo(str(path), f"local file {path}", str(path), digest)


def _read(path: Path) -> Any:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols: not the user's concern
            return storage.torch_load(path)
    except Exception as err:  # torch and safetensors raise many types for bad files; none reaches the user
        raise WeightsError(f"{path} is not a weights file atml can read: {storage.why_unreadable(path)}. atml reads "
                           "state dicts saved with torch.save(model.state_dict()) (.pth/.pt) and .safetensors "
                           "files") from err


def _check_name_hash(path: Path, digest: str) -> None:
    match = HASH_IN_NAME.search(path.name)
    if match and not digest.startswith(match.group(1)):
        raise WeightsError(f"{path} fails its hash check: the name promises SHA-256 {match.group(1)}..., "
                           f"the file has {digest[:16]}...; the download is corrupt, delete it and fetch it again")


def check_hub_blob(path: Path) -> None:
    """A file from the Hugging Face cache is stored under its SHA-256 (large files): compare the bytes with it."""
    blob = path.resolve()
    if blob.parent.name == "blobs" and len(blob.name) == 64 and all(c in "0123456789abcdef" for c in blob.name):
        digest = sha256sum(blob)
        if digest != blob.name:
            raise WeightsError(f"{path} fails its hash check: the Hugging Face cache stores it as SHA-256 "
                               f"{blob.name[:16]}..., "
                               f"the bytes hash to {digest[:16]}...; delete {blob} and download it again")


def timm_pretrained_file(name: str, *, offline: bool) -> tuple[str, WeightsInfo]:
    """The default pretrained weights of timm model ``name``: ``model.safetensors`` of its Hugging Face repo.

    From the local Hugging Face cache, or downloaded there when online; the cache stores the
    file under its SHA-256, which is checked against the bytes.
    """
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise WeightsError(f"timm/{name} has no weights on the Hugging Face hub; pass ",
                           Option("weights", Placeholder("PATH")), " to a state dict")
    path = hf_file(repo, ("model.safetensors",), f"timm/{name} pretrained weights", offline=offline)
    return str(path), WeightsInfo("imagenet", f"timm {repo} (Hugging Face hub, model.safetensors, SHA-256 verified)",
                                  str(path), sha256sum(path))


def hf_file(repo: str, names: tuple[str, ...], label: str, *, offline: bool) -> Path:
    """The one way atml fetches a file from the Hugging Face hub: the first of ``names`` that ``repo`` has, from the
    local cache, else downloaded there when the run may use the network (after a quick check that the hub answers:
    one line, not huggingface_hub's retries), refused in one line when offline; checked against the SHA-256 the cache
    stores it under."""
    from huggingface_hub import hf_hub_download

    def first(local: bool) -> tuple[Path | None, list[str]]:
        errors: list[str] = []
        for name in names:
            try:
                return Path(hf_hub_download(repo, name, local_files_only=local)), errors
            except OSError as err:  # huggingface_hub: not cached, HTTP and connection errors
                errors.append(type(err).__name__)
        return None, errors

    path, errors = first(local=True)
    if path is None and not offline:
        hub_reachable(label)
        path, errors = first(local=False)
    if path is None:
        how = "offline mode forbids downloading" if offline else f"the download failed ({', '.join(errors)})"
        raise WeightsError(f"{label} ({repo}, {' or '.join(names)}) are not in the Hugging Face cache and {how}; run "
                           "once online, or pass ", Option("weights", Placeholder(f"/path/to/{names[0]}")))
    check_hub_blob(path)
    return path


HUB_TIMEOUT_S = 3.0


def hub_reachable(label: str) -> None:
    """Raise WeightsError in one line when the Hugging Face hub (``HF_ENDPOINT``) cannot be reached quickly."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_TIMEOUT_S).close()
    except OSError as err:
        raise WeightsError(f"{label} are not in the Hugging Face cache and {host} cannot be reached "
                           f"({err.strerror or type(err).__name__}); connect, or pass ",
                           Option("weights", Placeholder("PATH")), " to a local copy, or ", Option("offline", True)) \
            from None


def hub_file(url: str, label: str, *, offline: bool) -> Path:
    """The one way atml fetches a published file: ``url``'s file in the torch hub cache (``checkpoints/``), downloaded
    there when it is missing and the run may use the network (temp file + rename, the SHA-256 prefix in its name
    checked), refused in one line when offline. Its bytes are checked again when read (:func:`read_state_dict`)."""
    filename = url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        if offline:
            raise WeightsError(f"{label} weights are not in the torch hub cache ({path}) and offline mode forbids "
                               f"downloading. Fetch {url} on a machine with internet and put it at {path}, or pass ",
                               Option("weights", Placeholder(f"/path/to/{filename}")), ".")
        _download(url, path, label)
    return path


def _download(url: str, path: Path, label: str) -> None:
    """Fetch ``url`` to ``path`` (temp file + rename, by torch.hub), checking the hash in its name."""
    match = HASH_IN_NAME.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None)
    except Exception as err:  # URLError, HTTPError, hash mismatch...
        raise WeightsError(f"downloading {label} from {url} failed ({err}); pass ",
                           Option("weights", Placeholder("PATH")), " to a local copy, or ", Option("offline", True),
                           " with the file already in the torch hub cache") from err


def load_backbone(module: torch.nn.Module, state: dict[str, torch.Tensor], *, head_prefix: str,
                  source: str) -> None:
    """Load every backbone tensor strictly; the head is skipped (it is replaced for the new task)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    body = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    own = {k for k in module.state_dict() if not k.startswith(head_prefix)}
    missing, unexpected = sorted(own - body.keys()), sorted(body.keys() - own)
    if missing or unexpected:
        raise WeightsError(f"{source} does not fit this architecture: {len(missing)} missing keys "
                           f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}")
    try:
        module.load_state_dict(body, strict=False)
    except RuntimeError as err:
        raise WeightsError(f"{source} does not fit this architecture: {str(err).splitlines()[1:3]}") from err


def atml_file(name: str, recipe: str) -> Path:
    """Where the weights atml trains itself for model ``name`` by the recipe whose key is ``recipe`` lie."""
    from atml import runtime

    return runtime.cache_dir() / "pretrained" / f"{name}-{recipe}.pt"


@dataclasses.dataclass(frozen=True)
class AtmlWeights:
    """A file of weights atml trained itself: the state dict, what to record, and the classes it was trained on."""

    state: dict[str, torch.Tensor]
    info: WeightsInfo
    classes: list[str] | None


def read_atml_file(name: str, tag: str, recipe: str) -> AtmlWeights:
    """The weights atml trained for ``name`` by ``recipe`` (their file holds ``state_dict`` and a ``meta`` with the
    description, the held-out accuracy and the classes). Raises WeightsError when they have not been made yet."""
    path = atml_file(name, recipe)
    if not path.is_file():
        raise WeightsError(f"{name} weights={tag} are trained by atml and are not in its cache yet ({path}); "
                           f"atml.pretrained.ensure('{name}', '{tag}') trains them once (any experiment run with "
                           f"weights={tag} does it for you)")
    saved = storage.torch_load(path)
    meta = saved["meta"]
    info = WeightsInfo(tag, meta["description"], str(path), sha256sum(path), source_val_acc=float(meta["val_acc"]),
                       demo=True)
    return AtmlWeights(saved["state_dict"], info, meta.get("classes"))


@dataclasses.dataclass
class Resolved:
    """What a weights spec names, found and checked but loaded into no architecture yet (timm's
    ``_resolve_pretrained_source``): a state dict in hand, or a file its library loads itself, or neither
    (random); what to record about them; what their library says of them (open_clip's pretrained config); the
    classes of their head when atml trained it."""

    info: WeightsInfo
    state: dict[str, torch.Tensor] | None = None
    file: str | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    classes: list[str] | None = None
    folder: Path | None = None
    """A transformers model folder: architecture and weights in one, which transformers loads itself."""


def resolve(entry: Model, weights: str, *, offline: bool, recipe: str | None = None,
            transformers: bool = False) -> Resolved:
    """The one weights resolver every family's builder takes its weights from.

    ``weights``: ``random``, a file (or a folder holding one), or one of ``entry``'s tags, found by the tag's
    ``source``: torchvision's hub cache, a URL into that cache, timm's or open_clip's files on the Hugging Face
    hub (cache first; downloaded only when online), or the weights atml trained itself (by ``recipe``, the key
    :func:`atml.pretrained.ensure` gives). ``transformers`` (a ViT's ``backend=hf``): a folder is a transformers
    model folder, and DeiT-Small's ImageNet weights come as the Hugging Face hub's transformers snapshot when it is
    at hand. Raises UsageError for weights ``entry`` does not have, WeightsError for weights that cannot be had or
    read.
    """
    tag = canonical_weights(weights)
    if transformers and (bundle := _transformers(entry, tag, offline)) is not None:
        return bundle
    if entry.builder == "transformers":
        raise UsageError(f"arch={entry.name} takes its shape from a transformers folder: pass backend=hf and ",
                         Option("weights", Placeholder("FOLDER")))
    if tag == "random":
        return Resolved(WeightsInfo("random", f"random initialisation ({entry.name}; no pretrained weights)",
                                    pretrained=False))
    if is_path(tag):
        state, info = read_state_dict(_weights_file(Path(tag).expanduser()))
        return Resolved(info, state)
    chosen = entry.weights.get(tag)
    if chosen is None:
        valid = ", ".join([*entry.weights, "random"])
        raise UsageError(f"weights={weights!r} is not valid for {entry.name}; valid: {valid}, or a path to a weights "
                         "file (.pth/.pt/.safetensors, or a folder holding one)")
    resolved = _SOURCES[chosen.source](entry, chosen, offline, recipe)
    resolved.info.spec = tag
    if entry.builder == "open_clip":
        import open_clip

        resolved.config = dict(open_clip.get_pretrained_cfg(entry.name, tag) or {})
    return resolved


def _transformers(entry: Model, tag: str, offline: bool) -> Resolved | None:
    """A transformers model folder that ``tag`` names, or DeiT-Small's snapshot for ``imagenet``; None for others."""
    if is_path(tag) and Path(tag).expanduser().is_dir():
        folder = Path(tag).expanduser()
        return Resolved(transformers_info(folder), folder=folder)
    if tag == "imagenet" and entry.name == DEIT_SMALL:
        snapshot = deit_snapshot(offline)
        if snapshot is not None:
            info = transformers_info(snapshot)
            info.spec, info.description = tag, f"{HF_DEIT} from the Hugging Face hub ({info.description})"
            return Resolved(info, folder=snapshot)
    return None


def transformers_info(folder: Path) -> WeightsInfo:
    """What a run records of a transformers model folder, its weights file checked (a hub snapshot's bytes against
    the blob's SHA-256)."""
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder} is not a transformers model folder (no config.json); save one with "
                           "model.save_pretrained(FOLDER) or pass a timm state dict file")
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise WeightsError(f"{folder} has a config.json but no model.safetensors or pytorch_model.bin")
    check_hub_blob(files[0])
    return WeightsInfo(str(folder), f"transformers folder {folder} ({files[0].name})", str(files[0]),
                       sha256sum(files[0]))


def deit_snapshot(offline: bool) -> Path | None:
    """``facebook/deit-small-patch16-224`` from the Hugging Face cache (or hub, when online); None when it cannot be
    had, so DeiT-Small's release file is used instead."""
    return hf_snapshot(HF_DEIT, ["config.json", "*.safetensors", "preprocessor_config.json"], offline=offline)


def hf_snapshot(repo: str, patterns: list[str], *, offline: bool) -> Path | None:
    """The one way atml fetches a folder of a Hugging Face repo (a transformers model, a tokenizer): the files
    matching ``patterns``, from the cache, else downloaded there when the run may use the network; None when they
    cannot be had (the caller says what that means)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=offline, allow_patterns=patterns))
    except OSError:  # huggingface_hub's "not cached", offline-mode, HTTP and connection errors are all OSErrors;
        return None  # anything else is a bug and surfaces


def _from_torchvision(entry: Model, chosen: Weights, offline: bool, recipe: str | None) -> Resolved:
    import torchvision.models as tvm

    weights = tvm.get_weight(chosen.location)  # a torchvision Weights enum member: its published file's URL
    label = f"torchvision {type(weights).__name__}.{weights.name}"
    return Resolved(*_as_pair(url_state_dict(weights.url, label, offline=offline)))


def _from_url(entry: Model, chosen: Weights, offline: bool, recipe: str | None) -> Resolved:
    return Resolved(*_as_pair(url_state_dict(chosen.location, chosen.description, offline=offline)))


def _from_timm_hub(entry: Model, chosen: Weights, offline: bool, recipe: str | None) -> Resolved:
    file, info = timm_pretrained_file(entry.name.removeprefix("timm/"), offline=offline)
    return Resolved(info, file=file)


def _from_open_clip_hub(entry: Model, chosen: Weights, offline: bool, recipe: str | None) -> Resolved:
    return Resolved(*_as_pair(hub_state_dict(chosen.location, OPEN_CLIP_FILES, chosen.description,
                                             offline=offline)))


def _from_atml(entry: Model, chosen: Weights, offline: bool, recipe: str | None) -> Resolved:
    if recipe is None:
        raise UsageError(f"{entry.name} weights={chosen.tag} are trained by atml: pass recipe=atml.pretrained.ensure("
                         f"'{entry.name}', '{chosen.tag}'), which trains them once and names the cached file")
    made = read_atml_file(entry.name, chosen.tag, recipe)
    return Resolved(made.info, made.state, classes=made.classes)


def _none(entry: Model, chosen: Weights, offline: bool, recipe: str | None) -> Resolved:
    return resolve(entry, "random", offline=offline)


_SOURCES = {"torchvision": _from_torchvision, "url": _from_url, "timm-hub": _from_timm_hub,
            "open_clip-hub": _from_open_clip_hub, "atml": _from_atml, "none": _none}
"""How each kind of registry source is had (:data:`atml.models.registry.Source`)."""


def _as_pair(found: tuple[dict[str, torch.Tensor], WeightsInfo]) -> tuple[WeightsInfo, dict[str, torch.Tensor]]:
    state, info = found
    return info, state


def _weights_file(path: Path) -> Path:
    """A state dict file, or the weights file inside a folder (a Hugging Face snapshot of open_clip or timm)."""
    if not path.is_dir():
        return path
    for name in (*OPEN_CLIP_FILES, "model.safetensors"):
        if (path / name).is_file():
            return path / name
    raise WeightsError(f"{path} is a folder without {', '.join(OPEN_CLIP_FILES)} or model.safetensors; pass the "
                       "weights file itself or a folder holding one")


def url_state_dict(url: str, label: str, *, offline: bool) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """A published file from the torch hub cache (downloaded there when allowed: :func:`hub_file`), checked by the
    SHA-256 prefix in its name."""
    path = hub_file(url, label, offline=offline)
    state, info = read_state_dict(path)
    info.description = f"{label} ({path.name}, SHA-256 prefix verified)"
    return state, info


def hub_state_dict(repo: str, names: tuple[str, ...], label: str, *,
                   offline: bool) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """The first of ``names`` that Hugging Face repo ``repo`` has, from the local cache (downloaded there when
    online), checked against the SHA-256 the cache stores it under."""
    path = hf_file(repo, names, label, offline=offline)
    state, info = read_state_dict(path)
    info.description = (f"{label} ({repo}, {path.name}; SHA-256 checked against the name the Hugging Face cache "
                        "stores it under)")
    return state, info

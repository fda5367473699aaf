"""Where a run's inputs came from, as typed records: its data, its weights, the cached files it read.

A run records each with :meth:`atml.context.RunContext.record_source` under a kind (``data``,
``weights``, ``weights_0``, ``inception_weights`` ...); ``env.json`` and ``results.json`` hold them
as JSON (:meth:`to_json`), and :meth:`from_json` reads them back (older runs included).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

RANDOM_WEIGHTS_NOTE = "Random weights: the numbers test the code path only."
"""The note of every run on random weights, in every family."""


def random_weights(sources: Mapping[str, Any], key: str = "weights") -> bool:
    """Whether a run (its results' ``sources``) used random weights: its sentences then draw no conclusion."""
    found = sources.get(key)
    spec = found.spec if isinstance(found, WeightsInfo) else (found or {}).get("spec")
    return spec == "random"


@dataclasses.dataclass
class WeightsInfo:
    """What a run records about the weights it used."""

    spec: str
    description: str
    file: str | None = None
    sha256: str | None = None
    pretrained: bool = True
    source_val_acc: float | None = None
    """Held-out accuracy on the source task, when atml pretrained the weights itself."""
    model: str | None = None
    """The model they were loaded into, where a run uses several (``compare.*``)."""
    demo: bool = False
    """atml's own stand-in weights, trained on scikit-learn's digits (the demo preset's ``digits``)."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k == "model" and v is None or k == "demo" and not v)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WeightsInfo:
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


@dataclasses.dataclass
class DataSource:
    """What a run read as its data: the dataset, the sentence that says what it is, the split sizes and classes,
    the files left out, and how the split was had (decoded now or read from the dataset cache, how image files were
    decoded)."""

    name: str
    source: str
    train: int = 0
    val: int = 0
    classes: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    """Files that could not be read and were left out (``skip_bad_images``), each ``"path (why)"``."""
    images: int = 0
    seconds: float = 0.0
    from_cache: bool = False
    cache: list[str] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    decode: dict[str, Any] | None = None
    """How image files were decoded (:class:`atml.suite.datasets.Decode`), None for fixed-size datasets."""
    files: list[str] = dataclasses.field(default_factory=list)
    """The user's own image files, when the run read a list of them."""
    held_out: str = "val"
    """What the held-out split is called here (``test`` for the CLIP experiments)."""
    subset: str | None = None
    """How the data is only a part of the named dataset (:attr:`atml.data.ImageDataset.subset`)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DataSource:
        """Read back; a run written before ``held_out`` named its CLIP test split ``test``."""
        values = dict(raw)
        if "test" in values and "val" not in values:
            values["val"], values["held_out"] = values.pop("test"), "test"
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


@dataclasses.dataclass
class CachedFile:
    """A file a run read from a cache or made there (Inception weights, cached CLIP embeddings)."""

    file: str
    sha256: str | None = None
    cache_hit: bool | None = None
    images: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


Source = WeightsInfo | DataSource | CachedFile
"""Any record a run keeps of where something came from."""

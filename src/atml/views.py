"""Interactive views as data: what a run stores so the report can let a reader explore a figure.

A view is one JSON file under the run's ``views/`` folder, listed in results.json beside the
figures: a :class:`Scatter` (an embedding; hovering a point shows its image), an
:class:`Attention` (a ViT's attention; clicking a patch shows what it attends to), a
:class:`Heatmap` (CKA; hovering a cell names both layers) or a :class:`Saliency` (maps over
images, with their deletion/insertion AUC). Arrays are stored little-endian and base64-encoded
(``{"dtype", "shape", "b64"}``), attention quantised to uint8 per row. The thumbnails a
scatter shows are one WebP sheet per run (``views/thumbs.webp``), written once however many
views point into it. The report (``atml.reporting.interactive``) draws them; the experiments
only say what to store. Like :mod:`atml.figures`, this module sits below the experiments.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NotRequired

import numpy as np
import torch
from PIL import Image
from typing_extensions import TypedDict

from atml import storage, timemap

THUMB_PX = 48
"""Thumbnails are at most this many pixels on their longer side (WebP, quality 80)."""
IMAGE_PX = 224
"""Images under an attention or saliency view are at most this many pixels on their longer side."""
ATTENTION_BUDGET = 1 << 21
"""Attention values stored per image (uint8, so bytes): per head while layers x heads x tokens x patches fits, else
the mean of the heads, in as many layers as fit (the last always)."""
MAX_POINTS = 5000
"""An interactive scatter shows at most this many points (evenly spaced through the sample; the static figure shows
them all): hover and redraw stay immediate, and the page small."""
SCHEMA = 1
"""The version of the view files' format; their shape is written once, as the ``*JSON`` types below (a JSON Schema
per kind is generated from them: :func:`json_schemas`, ``reporting/assets/view-schemas.json``)."""


class ArrayJSON(TypedDict):
    """An array as :func:`array` stores it: little-endian bytes of ``dtype``, base64."""

    dtype: str
    shape: list[int]
    b64: str


class SheetJSON(TypedDict):
    """:class:`Sheet` in a view file (``src``: the report inlines the sheet as a data URI)."""

    file: str
    tile: int
    cols: int
    count: int
    src: NotRequired[str]


class PanelJSON(TypedDict):
    name: str
    xy: ArrayJSON


class ScatterJSON(TypedDict):
    """A :class:`Scatter` view file."""

    schema: NotRequired[int]
    kind: Literal["scatter"]
    title: str
    classes: list[str]
    panels: list[PanelJSON]
    labels: ArrayJSON
    thumbs: ArrayJSON | None
    sheet: SheetJSON | None
    predicted: ArrayJSON | None
    predicted_by: str
    captions: list[str] | None
    kinds: ArrayJSON | None
    kind_names: list[str]
    names: list[str] | None


class AttentionImageJSON(TypedDict):
    name: str
    caption: str
    src: str
    maps: ArrayJSON
    scale: ArrayJSON
    rollout: ArrayJSON
    rollout_scale: ArrayJSON


class AttentionJSON(TypedDict):
    """An :class:`Attention` view file."""

    schema: NotRequired[int]
    kind: Literal["attention"]
    title: str
    grid: int
    prefix: int
    layers: list[int]
    heads: int
    per_head: bool
    full: float
    images: list[AttentionImageJSON]


class HeatmapPanelJSON(TypedDict):
    name: str
    rows: list[str]
    cols: list[str]
    row_label: str
    col_label: str
    values: ArrayJSON


class HeatmapJSON(TypedDict):
    """A :class:`Heatmap` view file."""

    schema: NotRequired[int]
    kind: Literal["heatmap"]
    title: str
    value_name: str
    vmin: float
    vmax: float
    cmap: str
    origin: str
    panels: list[HeatmapPanelJSON]


class SaliencyEntryJSON(TypedDict):
    model: str
    method: str
    maps: ArrayJSON
    deletion: list[float]
    insertion: list[float]
    deletion_mean: float
    insertion_mean: float


class SaliencyJSON(TypedDict):
    """A :class:`Saliency` view file."""

    schema: NotRequired[int]
    kind: Literal["saliency"]
    title: str
    images: list[str]
    entries: list[SaliencyEntryJSON]


VIEW_FILES: dict[str, type] = {"scatter": ScatterJSON, "attention": AttentionJSON, "heatmap": HeatmapJSON,
                               "saliency": SaliencyJSON}
"""Each view kind's file format."""


def json_schemas() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) per view kind, from :data:`VIEW_FILES` (pydantic writes them; no extra keys are
    allowed anywhere). ``scripts/update_readme.py`` keeps ``reporting/assets/view-schemas.json`` equal to this; the
    tests check every view a run writes against it, in Python and in the browser before the page draws it."""
    from pydantic import TypeAdapter

    def closed(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: closed(v) for k, v in node.items()}
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
        elif isinstance(node, list):
            node = [closed(v) for v in node]
        return node

    draft = "https://json-schema.org/draft/2020-12/schema"
    return {kind: {"$schema": draft, **closed(TypeAdapter(shape).json_schema())} for kind, shape in VIEW_FILES.items()}


def spread_indices(n: int, cap: int = MAX_POINTS) -> np.ndarray:
    """All of ``range(n)``, or ``cap`` of them evenly spaced (a class-sorted sample keeps every class)."""
    return np.arange(n) if n <= cap else np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def array(values: Any, dtype: str) -> ArrayJSON:
    """``values`` as ``{"dtype", "shape", "b64"}``: little-endian bytes, base64 (what the page's ``decode`` reads)."""
    arr = np.ascontiguousarray(np.asarray(values).astype(np.dtype(dtype).newbyteorder("<")))
    return {"dtype": dtype, "shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode()}


def read_array(data: Mapping[str, Any]) -> np.ndarray:
    """An array stored by :func:`array`, back as numpy (tests and notebooks check the stored values with it)."""
    raw = base64.b64decode(data["b64"])
    return np.frombuffer(raw, dtype=np.dtype(data["dtype"]).newbyteorder("<")).reshape(data["shape"])


def _pil(image: torch.Tensor | np.ndarray, longest: int) -> Image.Image:
    """A ``(C, H, W)`` uint8 (or [0, 1] float) image as RGB, shrunk (never enlarged) to ``longest`` px."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    arr = arr[:3] if arr.shape[0] >= 3 else np.repeat(arr[:1], 3, 0)
    pic = Image.fromarray(np.moveaxis(arr, 0, -1), "RGB")
    scale = longest / max(pic.size)
    if scale < 1:
        size = (max(1, round(pic.width * scale)), max(1, round(pic.height * scale)))
        pic = pic.resize(size, Image.Resampling.LANCZOS)
    return pic


def _fill(pic: Image.Image, tile: int) -> Image.Image:
    """A small image (digits are 8 px) enlarged by a whole factor to fill most of its tile, its pixels kept sharp."""
    factor = tile // max(pic.size)
    return pic.resize((pic.width * factor, pic.height * factor), Image.Resampling.NEAREST) if factor >= 2 else pic


def webp(image: torch.Tensor | np.ndarray, longest: int = IMAGE_PX, quality: int = 85) -> str:
    """An image as a WebP data URI (the image under an attention or saliency view)."""
    buffer = io.BytesIO()
    _pil(image, longest).save(buffer, "WEBP", quality=quality, method=4)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclasses.dataclass
class Sheet:
    """The run's thumbnails: one WebP image of ``count`` tiles, ``cols`` to a row, each ``tile`` px square (an image
    is centred in its tile; one under half the tile is enlarged by a whole factor)."""

    file: str
    tile: int
    cols: int
    count: int

    def to_json(self) -> SheetJSON:
        return {"file": self.file, "tile": self.tile, "cols": self.cols, "count": self.count}


def thumbnail_sheet(images: torch.Tensor | Sequence[torch.Tensor], folder: Path, *, relative_to: Path,
                    tile: int = THUMB_PX) -> Sheet:
    """Write ``folder/thumbs.webp`` (every image once, in order) and say where each tile is."""
    pics = [_fill(_pil(img, tile), tile) for img in images]
    cols = max(1, math.ceil(math.sqrt(len(pics))))
    rows = max(1, math.ceil(len(pics) / cols))
    sheet = Image.new("RGB", (cols * tile, rows * tile), (255, 255, 255))
    for i, pic in enumerate(pics):
        x, y = (i % cols) * tile, (i // cols) * tile
        sheet.paste(pic, (x + (tile - pic.width) // 2, y + (tile - pic.height) // 2))
    path = folder / "thumbs.webp"
    storage.write_with(path, lambda p: sheet.save(p, "WEBP", quality=80, method=4), suffix=".webp")
    return Sheet(str(path.relative_to(relative_to)), tile, cols, len(pics))


@dataclasses.dataclass
class Scatter:
    """2-D embeddings of the same points in one or more panels (t-SNE/UMAP, depths). Per point: its class (the
    colour, as in the static figure), optionally what was predicted, a caption, a marker kind (CLIP: image or
    text) and a tile of the run's thumbnail sheet (-1: none)."""

    title: str
    panels: dict[str, np.ndarray]
    labels: np.ndarray
    classes: list[str]
    thumbs: np.ndarray | None = None
    sheet: Sheet | None = None
    predicted: np.ndarray | None = None
    predicted_by: str = ""
    captions: list[str] | None = None
    kinds: np.ndarray | None = None
    kind_names: tuple[str, ...] = ("image",)
    names: list[str] | None = None
    """Each point's file (a user's folder): what the tooltip names it by, instead of its number."""

    def to_json(self) -> ScatterJSON:
        n = len(self.labels)
        for name, xy in self.panels.items():
            if np.shape(xy) != (n, 2):
                raise ValueError(f"panel {name}: {np.shape(xy)} points for {n} labels")
        return {"kind": "scatter", "title": self.title, "classes": list(self.classes),
                "panels": [{"name": name, "xy": array(xy, "float32")} for name, xy in self.panels.items()],
                "labels": array(self.labels, "int16"),
                "thumbs": None if self.thumbs is None else array(self.thumbs, "int32"),
                "sheet": None if self.sheet is None else self.sheet.to_json(),
                "predicted": None if self.predicted is None else array(self.predicted, "int16"),
                "predicted_by": self.predicted_by, "captions": self.captions,
                "kinds": None if self.kinds is None else array(self.kinds, "uint8"),
                "kind_names": list(self.kind_names), "names": self.names}


def quantise_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative rows (last axis) as uint8 of each row's maximum, and the maxima (float32)."""
    top = values.max(-1, keepdims=True).astype(np.float32)
    q = np.rint(values / np.where(top > 0, top, 1) * 255).clip(0, 255).astype(np.uint8)
    return q, top[..., 0]


def dequantise_rows(q: np.ndarray, top: np.ndarray) -> np.ndarray:
    result: np.ndarray = q.astype(np.float32) / 255 * top[..., None]
    return result


def attention_plan(layers: int, heads: int, tokens: int, patches: int,
                   budget: int = ATTENTION_BUDGET) -> tuple[list[int], bool]:
    """Which layers (0-based) to store, and whether per head, so one image's attention fits ``budget`` bytes."""
    if layers * heads * tokens * patches <= budget:
        return list(range(layers)), True
    keep = max(1, min(layers, budget // max(1, tokens * patches)))
    chosen = sorted({round(i * (layers - 1) / max(1, keep - 1)) for i in range(keep)} if keep > 1 else {layers - 1})
    return chosen, False


@dataclasses.dataclass
class AttentionImage:
    """One image's attention: ``maps`` ``(stored layers, heads or 1, tokens, patches)`` over the patch keys (each
    row as the model computed it, prefix keys dropped), and the rollout ``(tokens, patches)``."""

    name: str
    image: torch.Tensor
    maps: np.ndarray
    rollout: np.ndarray
    caption: str = ""

    def to_json(self) -> AttentionImageJSON:
        q, top = quantise_rows(self.maps)
        rq, rtop = quantise_rows(self.rollout)
        return {"name": self.name, "caption": self.caption, "src": webp(self.image),
                "maps": array(q, "uint8"), "scale": array(top, "float32"),
                "rollout": array(rq, "uint8"), "rollout_scale": array(rtop, "float32")}


@dataclasses.dataclass
class Attention:
    """A ViT's attention over the shown images: click a patch to see its row; layers numbered from 1."""

    title: str
    grid: int
    prefix: int
    layers: list[int]
    heads: int
    per_head: bool
    images: list[AttentionImage]
    full: float = 16.0
    """The overlay is opaque at this many times the uniform share (as the static figure)."""

    def to_json(self) -> AttentionJSON:
        return {"kind": "attention", "title": self.title, "grid": self.grid, "prefix": self.prefix,
                "layers": [layer + 1 for layer in self.layers], "heads": self.heads, "per_head": self.per_head,
                "full": self.full, "images": [image.to_json() for image in self.images]}


@dataclasses.dataclass
class HeatmapPanel:
    """One matrix of a :class:`Heatmap`: ``values`` ``(len(rows), len(cols))``."""

    name: str
    rows: list[str]
    cols: list[str]
    row_label: str
    col_label: str
    values: np.ndarray

    def to_json(self) -> HeatmapPanelJSON:
        values = np.asarray(self.values, dtype=np.float32)
        if values.shape != (len(self.rows), len(self.cols)):
            raise ValueError(f"heatmap {self.name}: values {values.shape} for {len(self.rows)} rows x "
                             f"{len(self.cols)} columns")
        return {"name": self.name, "rows": list(self.rows), "cols": list(self.cols), "row_label": self.row_label,
                "col_label": self.col_label, "values": array(values, "float32")}


@dataclasses.dataclass
class Heatmap:
    """Matrices of values between named rows and columns (CKA between layers); hover a cell to read both names."""

    title: str
    panels: list[HeatmapPanel]
    value_name: str = "value"
    vmin: float = 0.0
    vmax: float = 1.0
    cmap: str = "viridis"
    """``viridis`` or ``magma``, as the static figure."""
    origin: str = "upper"
    """``lower``: the first row at the bottom (as matplotlib's ``origin="lower"``)."""

    def to_json(self) -> HeatmapJSON:
        return {"kind": "heatmap", "title": self.title, "value_name": self.value_name, "vmin": self.vmin,
                "vmax": self.vmax, "cmap": self.cmap, "origin": self.origin,
                "panels": [panel.to_json() for panel in self.panels]}


@dataclasses.dataclass
class SaliencyEntry:
    """One method's maps of one model over the shown images, with each image's deletion and insertion AUC and the
    means over every image scored (not only the shown)."""

    model: str
    method: str
    maps: np.ndarray
    """``(images, h, w)`` in [0, 1]."""
    deletion: Sequence[float]
    insertion: Sequence[float]
    deletion_mean: float
    insertion_mean: float

    def to_json(self) -> SaliencyEntryJSON:
        maps = np.asarray(self.maps, dtype=np.float32)
        scaled, _ = quantise_rows(maps.reshape(len(maps), -1))  # each map to its own maximum, as the page shows
        return {"model": self.model, "method": self.method, "maps": array(scaled.reshape(maps.shape), "uint8"),
                "deletion": [float(v) for v in self.deletion], "insertion": [float(v) for v in self.insertion],
                "deletion_mean": float(self.deletion_mean), "insertion_mean": float(self.insertion_mean)}


@dataclasses.dataclass
class Saliency:
    """Saliency maps of several methods (and models) over the same images, each with its deletion/insertion AUC."""

    title: str
    images: list[torch.Tensor]
    entries: list[SaliencyEntry]

    def to_json(self) -> SaliencyJSON:
        return {"kind": "saliency", "title": self.title, "images": [webp(img) for img in self.images],
                "entries": [entry.to_json() for entry in self.entries]}


View = Scatter | Attention | Heatmap | Saliency


@timemap.counted("writing")
def save(view: View, path: Path, *, relative_to: Path) -> str:
    """Write ``view`` as JSON at ``path``; returns its path relative to the run."""
    data = view.to_json()
    data["schema"] = SCHEMA
    storage.write_json(path, data)
    return str(path.relative_to(relative_to))

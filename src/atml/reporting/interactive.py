"""The report's interactive views: a run's ``views/*.json`` made into page fragments, and the script that draws them.

The script (``assets/explore.js``) and its style sheet are atml's own, plain JavaScript with no
library: a page holds them once, inline, so it opens from disk with no network. Each view is
a ``<div class="atml-view">`` holding its data as ``<script type="application/json">``; the
run's thumbnail sheet goes in as a data URI. The same fragments make the report's views and
``Run.explore()`` in Jupyter.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from atml.errors import Option, RunDirError
from atml.run_dir import read_json


@dataclasses.dataclass
class ViewBlock:
    """One view as the page holds it."""

    id: str
    kind: str
    title: str
    file: str
    data: str
    """The view's JSON, safe inside ``<script>`` (every ``<`` escaped)."""
    view: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    """The view as read (thumbnails inlined): what :func:`fit` thins."""

    @property
    def html(self) -> str:
        return (f'<div class="atml-view" id="{html.escape(self.id)}" data-kind="{html.escape(self.kind)}">'
                f'<h4>{html.escape(self.title)}</h4>'
                f'<script type="application/json">{self.data}</script></div>')


SCHEMAS = Path(__file__).with_name("assets") / "view-schemas.json"
"""A JSON Schema per view kind (:func:`atml.views.json_schemas`, rewritten by ``scripts/update_readme.py``): what
explore.js may rely on in a view's data."""


def asset(name: str) -> str:
    """``explore.js`` or ``explore.css``, as shipped in the package."""
    return resources.files("atml.reporting").joinpath("assets", name).read_text(encoding="utf-8")


def head() -> str:
    """What a page with views needs once: the style sheet and the script."""
    return f"<style>\n{asset('explore.css')}</style>\n<script>\n{asset('explore.js')}</script>\n"


def script_json(data: Any) -> str:
    """JSON that cannot end its ``<script>`` element (``</script>`` in a caption stays text)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def load(run: Path, files: list[str], prefix: str) -> list[ViewBlock]:
    """A run's views, listed in results.json, ready for a page (ids ``PREFIX-NAME``); their thumbnails inlined."""
    blocks, sheets = [], dict[str, str]()
    for rel in files:
        path = run / rel
        if not path.is_file():
            raise RunDirError(f"interactive view {path} listed in results.json is missing; rerun the experiment, or "
                              "pass ", Option("static", True), " to report it without its views")
        data = read_json(path)
        sheet = data.get("sheet")
        if sheet:
            if sheet["file"] not in sheets:
                sheets[sheet["file"]] = _webp_uri(run / sheet["file"])
            data["sheet"] = {**sheet, "src": sheets[sheet["file"]]}
        name = Path(rel).stem
        blocks.append(ViewBlock(f"{prefix}-{name}", str(data.get("kind")), str(data.get("title", name)), rel,
                                script_json(data), data))
    return blocks


REPORT_BUDGET = 2_000_000
"""Bytes of view data (thumbnails included) one report's page holds. Past it, :func:`fit` thins the heaviest views
one step at a time (attention: the mean of the heads, then half the layers, the last kept; scatter: half the points,
evenly spaced; saliency: half the images) until the views fit, and the page says what each lost. Measured on real
models by ``scripts/view_bytes.py`` (docs/report.md, "Exploring a run")."""


def fit(blocks: list[ViewBlock], budget: int = REPORT_BUDGET) -> list[str]:
    """Thin the heaviest views until all of ``blocks`` fit ``budget`` bytes; one sentence per view thinned."""
    before = {b.id: _extent(b.view) for b in blocks}
    total = sum(len(b.data) for b in blocks)
    while total > budget:
        for block in sorted(blocks, key=lambda b: len(b.data), reverse=True):
            if _thin(block.view):
                size = len(block.data)
                block.data = script_json(block.view)
                total += len(block.data) - size
                break
        else:  # nothing left to thin
            break
    said = [f"{b.title}: {before[b.id]} -> {_extent(b.view)}" for b in blocks if _extent(b.view) != before[b.id]]
    if said:
        said.insert(0, f"The interactive views were thinned to fit the report's {budget / 1e6:.1f} MB budget "
                       f"({total / 1e6:.2f} MB now; the figures show everything):")
    return said


def _extent(view: dict[str, Any]) -> str:
    """What a view holds, in words (the note compares it before and after :func:`fit`)."""
    kind = view.get("kind")
    if kind == "attention":
        heads = f"{view['heads']} heads each" if view["per_head"] else "the mean of the heads"
        return f"{len(view['layers'])} layer(s) ({', '.join(map(str, view['layers']))}), {heads}"
    if kind == "scatter":
        return f"{view['labels']['shape'][0]:,} points"
    if kind == "saliency":
        return f"{len(view['images'])} image(s)"
    return "as stored"


def _thin(view: dict[str, Any]) -> bool:
    """One step less of ``view`` (in place); False when it cannot lose more."""
    from atml import views

    kind = view.get("kind")
    if kind == "attention":
        count = len(view["layers"])
        if not view["per_head"] and count == 1:
            return False
        half = count // 2
        keep = [count - 1] if half <= 1 else sorted({round(i * (count - 1) / (half - 1)) for i in range(half)})
        for image in view["images"]:
            maps, scale = views.read_array(image["maps"]), views.read_array(image["scale"])
            values = (views.dequantise_rows(maps, scale).mean(1, keepdims=True) if view["per_head"]
                      else views.dequantise_rows(maps[keep], scale[keep]))
            q, top = views.quantise_rows(values)
            image["maps"], image["scale"] = views.array(q, "uint8"), views.array(top, "float32")
        if view["per_head"]:
            view["per_head"] = False
        else:
            view["layers"] = [view["layers"][i] for i in keep]
        return True
    if kind == "scatter":
        n = view["labels"]["shape"][0]
        if n <= 250:
            return False
        points = views.spread_indices(n, n // 2)
        for panel in view["panels"]:
            panel["xy"] = views.array(views.read_array(panel["xy"])[points], "float32")
        for key, dtype in (("labels", "int16"), ("thumbs", "int32"), ("predicted", "int16"), ("kinds", "uint8")):
            if view.get(key) is not None:
                view[key] = views.array(views.read_array(view[key])[points], dtype)
        for key in ("captions", "names"):
            if view.get(key) is not None:
                view[key] = [view[key][i] for i in points.tolist()]
        return True
    if kind == "saliency" and len(view["images"]) > 1:
        shown = len(view["images"]) // 2
        view["images"] = view["images"][:shown]
        for entry in view["entries"]:
            entry["maps"] = views.array(views.read_array(entry["maps"])[:shown], "uint8")
            entry["deletion"], entry["insertion"] = entry["deletion"][:shown], entry["insertion"][:shown]
        return True
    return False


def _webp_uri(path: Path) -> str:
    if not path.is_file():
        raise RunDirError(f"thumbnail sheet {path} is missing; rerun the experiment, or pass ", Option("static", True),
                          " to report it without its views")
    return "data:image/webp;base64," + base64.b64encode(path.read_bytes()).decode()


def page(blocks: list[ViewBlock], title: str) -> str:
    """A whole page of views (``Run.explore()`` shows it in a notebook; ``save`` writes it)."""
    body = "\n".join(block.html for block in blocks) or "<p>This run stored no interactive views.</p>"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            '<style>body { font: 14px/1.5 system-ui, sans-serif; color: #1d2330; margin: 12px; }</style>\n'
            f"{head()}</head><body>\n<h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n")

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

from atml.errors import RunDirError
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

    @property
    def html(self) -> str:
        return (f'<div class="atml-view" id="{html.escape(self.id)}" data-kind="{html.escape(self.kind)}">'
                f'<h4>{html.escape(self.title)}</h4>'
                f'<script type="application/json">{self.data}</script></div>')


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
                              "pass --static to report it without its views")
        data = read_json(path)
        sheet = data.get("sheet")
        if sheet:
            if sheet["file"] not in sheets:
                sheets[sheet["file"]] = _webp_uri(run / sheet["file"])
            data["sheet"] = {**sheet, "src": sheets[sheet["file"]]}
        name = Path(rel).stem
        blocks.append(ViewBlock(f"{prefix}-{name}", str(data.get("kind")), str(data.get("title", name)), rel,
                                script_json(data)))
    return blocks


def _webp_uri(path: Path) -> str:
    if not path.is_file():
        raise RunDirError(f"thumbnail sheet {path} is missing; rerun the experiment, or pass --static to report it "
                          "without its views")
    return "data:image/webp;base64," + base64.b64encode(path.read_bytes()).decode()


def page(blocks: list[ViewBlock], title: str) -> str:
    """A whole page of views (``Run.explore()`` shows it in a notebook; ``save`` writes it)."""
    body = "\n".join(block.html for block in blocks) or "<p>This run stored no interactive views.</p>"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            '<style>body { font: 14px/1.5 system-ui, sans-serif; color: #1d2330; margin: 12px; }</style>\n'
            f"{head()}</head><body>\n<h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n")

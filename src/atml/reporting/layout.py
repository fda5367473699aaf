"""The package's layers, bottom to top, as data: the layout map (docs/layout.md) is drawn from them, and a test
checks that every import points down them (``tests/test_structure.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "errors"),
    ("console", "runtime", "storage", "distributed", "provenance", "timemap"),
    ("data",),
    ("models",),
    ("config", "results"),
    ("train", "analysis", "figures", "views"),
    ("references", "run_dir", "pretrained"),
    ("context",),
    ("registry", "tracking"),
    ("runner",),
    ("benchmark",),
    ("suite",),
    ("sweeps",),
    ("speedtest", "reporting"),
    ("api", "cli"),
    ("__init__", "__main__"),
)
"""Bottom to top: a module may import its own unit and the layers below it. ``pretrained`` (atml's own weights,
made by the recipes in ``train``) sits above ``models`` and ``train``, and ``context`` (what an experiment's run
receives) above it and below the registry that names its type; ``figures`` below the experiments that draw
them; ``reporting`` above the suite and the sweeps it reads."""

LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def summary(path: Path) -> str:
    """The first sentence of a module's (or package's ``__init__``) docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    return text.split(". ")[0].rstrip(".")


def section(src: Path) -> str:
    """The layout map (docs/layout.md): every layer, top first, each unit with its first sentence (a package with its
    modules)."""
    lines = ["```", "src/atml/   (each layer imports only the layers below it; tests/test_structure.py checks)"]
    for level in reversed(range(len(LAYERS))):
        for unit in LAYERS[level]:
            package = src / unit
            path = package / "__init__.py" if package.is_dir() else src / f"{unit}.py"
            name = f"{unit}/" if package.is_dir() else f"{unit}.py"
            lines.append(f"  {name:<16}{summary(path)}")
            if package.is_dir():
                modules = sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
                modules += sorted(f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file())
                lines += [f"  {'':<16}  {chunk}" for chunk in _wrapped(", ".join(modules), 96)]
    lines.append("```")
    return "\n".join(lines)


def _wrapped(text: str, width: int) -> list[str]:
    out, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*out, line] if line else out

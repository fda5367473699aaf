"""The documentation site: built with ``mkdocs --strict`` (a broken link fails it), every object of its API reference
documented, and the wheel carrying ``py.typed`` so users' type checkers read atml's types."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=root,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.mark.slow
def test_the_site_builds_strictly_and_a_broken_link_fails_it(tmp_path):
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "into a new run folder" in api  # atml.run's docstring, rendered by mkdocstrings
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "docs" / "usage.md").open("a") as page:
        page.write("\nSee [the old page](nowhere.md).\n")
    broken = _build(copy, tmp_path / "broken")
    assert broken.returncode != 0 and "nowhere.md" in broken.stderr


def _documented(where: str) -> list[str]:
    """``where`` and its public members, each with no docstring of its own."""
    module, _, name = where.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, ValueError):
        obj = importlib.import_module(where)
    missing = [] if inspect.getdoc(obj) else [where]
    members: list[tuple[str, object]]
    if inspect.ismodule(obj):
        members = [(n, m) for n, m in vars(obj).items() if not n.startswith("_") and inspect.isclass(m)
                   and m.__module__ == obj.__name__]
    elif inspect.isclass(obj):
        members = [(n, m) for n, m in vars(obj).items() if not n.startswith("_") and inspect.isfunction(m)]
    else:
        members = []
    return missing + [f"{where}.{n}" for n, m in members if not (m.__doc__ or "").strip()]


def test_every_object_of_the_api_reference_has_a_docstring():
    listed = [line.removeprefix(":::").strip() for line in (ROOT / "docs" / "api.md").read_text().splitlines()
              if line.startswith(":::")]
    assert len(listed) >= 15
    missing = [name for where in listed for name in _documented(where)]
    assert not missing, missing


@pytest.mark.slow
def test_the_wheel_carries_py_typed_and_the_catalog(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w",
                           str(tmp_path / "wheel")], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path / "wheel").glob("atml-*.whl"))).namelist()
    assert "atml/py.typed" in names and "atml/suite/catalog.json" in names

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


def _worked_example() -> list[str]:
    """The python code blocks of the contributing guide's worked example, in order."""
    import re

    text = (ROOT / "docs" / "contributing.md").read_text()
    section = text.split("## A worked example", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_the_contributing_guide_s_worked_example_runs_at_the_smoke_preset(tmp_path, monkeypatch):
    """The guide's config, experiment and test, taken from the page, added to the ResNet family and run."""
    import types

    import atml.suite.resnet
    from atml import config as config_lib
    from atml import runner
    from atml.console import QUIET
    from atml.registry import Registry
    from atml.suite.resnet import config as family_config

    config_code, experiment_code, test_code = _worked_example()
    before = set(vars(family_config))
    try:
        exec(compile(config_code, "docs/contributing.md (config)", "exec"), vars(family_config))
        module = types.ModuleType("atml.suite.resnet.silent")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setattr(atml.suite.resnet, "silent", module, raising=False)
        exec(compile(experiment_code, "docs/contributing.md (experiment)", "exec"), vars(module))
        exp = Registry().register(module.EXPERIMENT)
        assert set(exp.presets) == {"smoke", "demo", "full", "rehearsal"}
        for preset in exp.presets:
            config_lib.build(exp.config_cls, exp.presets, preset, name=exp.name)
        (run,) = runner.start(exp, "smoke", out=tmp_path / "runs", report=QUIET)
        assert (run.path / "results.json").is_file()
        from atml import api

        loaded = api.load(run.path)
        assert exp.discuss is not None and exp.readme_row is not None
        said = exp.discuss(loaded.results)[0]
        shares = [loaded.results.metrics.value("silent_share", depth=d) for d in ("early", "middle", "late")]
        assert ("No channel is silent" in said) == (max(shares) == 0), said
        assert "(early / middle / late)" in exp.readme_row(loaded.results.metrics, None)
        namespace: dict[str, object] = {}
        exec(compile(test_code, "docs/contributing.md (test)", "exec"), namespace)
        (test,) = [f for name, f in namespace.items() if name.startswith("test_")]
        test(tmp_path / "guide-test")  # type: ignore[operator]
    finally:
        for name in set(vars(family_config)) - before:
            delattr(family_config, name)

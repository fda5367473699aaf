"""The package's structure, drawn from its imports: every import points down the layers, none back up."""

from __future__ import annotations

import ast
from pathlib import Path

from atml.reporting import layout
from atml.reporting.layout import LEVEL

SRC = Path(__file__).resolve().parents[1] / "src" / "atml"

ROOT = SRC.parents[1]


def _unit(module: str) -> str:
    """``atml.models.vit`` -> ``models``; ``atml.runner`` -> ``runner``; ``atml`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges() -> set[tuple[str, str, str]]:
    """(importing file, its unit, imported unit) for every import of another atml unit, at any depth of the file."""
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        own = _unit(".".join(rel.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "atml":
                names = [f"atml.{a.name}" for a in node.names] if node.module == "atml" else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "atml"]
            found |= {(str(path.relative_to(SRC)), own, _unit(n)) for n in names if _unit(n) != own}
    return found


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__pycache__"}
    assert units == set(LEVEL), (sorted(units - set(LEVEL)), sorted(set(LEVEL) - units))


def test_no_import_points_up_the_layers():
    back = sorted(f"{file} ({unit}) imports {target}" for file, unit, target in _edges()
                  if LEVEL[target] > LEVEL[unit])
    assert not back, "\n".join(back)


def test_the_report_and_the_readme_tables_are_read_only_from_above():
    below = {file for file, unit, target in _edges() if target == "reporting" and unit not in ("api", "cli")}
    assert not below


def test_models_take_pixels_through_their_own_preprocessing_only():
    """uint8 -> model input happens in ``models/preprocess.py`` (``Built.preprocess``), for the VAE and the DCGAN
    too: no hand scaling by 255 or 127.5 in what trains or reads a model (drawing an image is another matter)."""
    import re

    scaling = re.compile(r"(/|div\()\s*(255|127\.5)")
    readers = [*SRC.joinpath("train").rglob("*.py"), *SRC.joinpath("analysis").rglob("*.py"),
               *SRC.joinpath("suite", "vae").rglob("*.py"), *SRC.joinpath("suite", "gan").rglob("*.py"),
               SRC / "models" / "classifier.py", SRC / "models" / "vae.py", SRC / "models" / "gan.py"]
    found = [f"{p.relative_to(SRC)}:{i}" for p in readers for i, line in enumerate(p.read_text().splitlines(), 1)
             if scaling.search(line)]
    assert not found, found


def test_the_layout_page_s_map_is_drawn_from_the_package():
    readme = (ROOT / "docs" / "layout.md").read_text()
    start, end = "<!-- generated: layout -->", "<!-- end generated: layout -->"
    assert readme.count(start) == 1, "docs/layout.md has no generated layout map"
    assert readme.split(start)[1].split(end)[0].strip() == layout.section(SRC).strip()


def test_the_tests_are_laid_out_as_the_layout_page_says():
    """One flat folder; each file named after the unit it tests (test_<unit>...), or one of the themes README
    lists (docs/layout.md)."""
    themes = ("experiment", "bench", "compare", "pixels", "pretrained", "reliability", "safe", "warnings", "readme",
              "report", "notebook", "device", "discussion", "gan", "factory", "feature", "preprocess", "structure",
              "rehearsal", "train", "model", "data", "config", "cli", "api", "analysis", "figures", "registry",
              "distributed", "models", "docs")
    files = sorted(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert all((ROOT / "tests" / f).is_file() for f in files)  # flat: no test in a subfolder
    odd = [f for f in files if f.removeprefix("test_").split("_")[0].removesuffix(".py") not in (*LEVEL, *themes)]
    assert not odd, odd


def test_experiments_build_models_with_their_weights_through_the_run_context():
    """``ctx.model`` makes atml's own weights, builds and records the source: no experiment repeats the sequence."""
    repeated = [f"{p.relative_to(SRC)}:{i}" for p in SRC.joinpath("suite").rglob("*.py")
                for i, line in enumerate(p.read_text().splitlines(), 1) if "ctx.pretrained(" in line]
    assert not repeated, repeated


def test_one_helper_downloads_each_kind_of_published_file():
    """torch hub's cache (torchvision, registry URLs, Inception) through ``weights.hub_file``, the Hugging Face hub
    (timm, open_clip) through ``weights.hf_file``, a repo's folder (a transformers model, SigLIP's tokenizer) through
    ``weights.hf_snapshot``: one call site each, in ``models/weights.py``."""
    calls: dict[str, list[str]] = {"download_url_to_file(": [], "hf_hub_download(": [], "hub.get_dir()": [],
                                   "snapshot_download(": []}
    for path in SRC.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            for call in calls:
                if call in line:
                    calls[call].append(f"{path.relative_to(SRC)}:{i}")
    assert {k: [w.split(":")[0] for w in v] for k, v in calls.items()} == {
        "download_url_to_file(": ["models/weights.py"], "hf_hub_download(": ["models/weights.py"],
        "hub.get_dir()": ["models/weights.py"], "snapshot_download(": ["models/weights.py"]}, calls


def test_each_library_s_preprocessing_is_converted_in_one_place():
    """``preprocessing_from`` turns a library's description of its weights' input into atml's ``Preprocessing``: in
    the registry (timm's pretrained_cfg, torchvision's transforms, open_clip's model and tag configs), once per entry
    (cached), and for a transformers folder's image processor in ``vit.hf_arch``; nowhere else."""
    sites = sorted(f"{p.relative_to(SRC).as_posix()}:{node.lineno}" for p in SRC.rglob("*.py")
                   for node in ast.walk(ast.parse(p.read_text()))
                   if isinstance(node, ast.Call) and (getattr(node.func, "id", None) == "preprocessing_from"
                                                      or getattr(node.func, "attr", None) == "preprocessing_from"))
    assert [s.split(":")[0] for s in sites] == ["models/registry.py"] * 4 + ["models/vit.py"], sites


def test_notes_and_choices_read_the_typed_sources_not_the_names():
    """Whether weights are random or the demo's, or data the demo's, is a flag on the recorded source
    (``WeightsInfo.pretrained``/``.demo``, the dataset factory's ``demo``/``generated``), never a comparison of the
    names a config holds. Left: the seed report's reference condition."""
    import re

    named = re.compile(r"""(weights|data) [!=]= ["']""")
    allowed = ('comparable = cfg.data == "cifar10"',)
    found = [f"{p.relative_to(SRC)}:{i}: {line.strip()}" for p in SRC.joinpath("suite").rglob("*.py")
             if p.name != "config.py" for i, line in enumerate(p.read_text().splitlines(), 1)
             if named.search(line) and not any(a in line for a in allowed)]
    assert not found, found


def test_the_runner_takes_one_reporter_not_console_flags():
    """Messages and progress reach a run and a sweep through one :class:`atml.console.Reporter` (the CLI's, the
    API's, a sweep cell's), not ``say``/``progress``/``python`` flags threaded through each call."""
    import inspect

    from atml import cli, runner
    from atml.console import QUIET, Reporter
    from atml.errors import Key
    from atml.sweeps import dispatch

    for fn in (runner.start, runner.resume, runner.execute, dispatch.run):
        params = inspect.signature(fn).parameters
        assert "report" in params and not {"say", "progress", "python"} & set(params), fn.__name__
    lines: list[str] = []
    ranked = Reporter(lines.append, progress=True, words=cli.TERMINAL)
    assert ranked.resolved(is_main=True).progress and ranked.resolved(is_main=True).words is cli.TERMINAL
    ranked.tell("pass ", Key("epochs", "N"))
    assert lines == ["pass --set epochs=N"]
    lines.clear()
    silent = ranked.resolved(is_main=False)  # a torchrun rank other than 0 prints nothing and shows no bars
    silent.say("x")
    assert lines == [] and not silent.progress and not QUIET.resolved(is_main=True).progress


def _messages(path: Path) -> list[tuple[int, str]]:
    """The string literals of a module that are not docstrings (messages, notes, formats), with their lines."""
    tree = ast.parse(path.read_text())
    docs = {id(body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            for body in [node.body] if body and isinstance(body[0], ast.Expr)}
    docs |= {id(node.value) for node in ast.walk(tree)  # attribute docstrings: a bare string after an assignment
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def test_only_the_command_line_words_its_flags():
    """Below ``cli.py`` a message names an option as a fact (``Option("data_dir", "DIR")``, ``Key("epochs", 3)``,
    ``Resume(...)``), which the command line writes as its flag and Python as a keyword: no library string spells a
    flag. ``reporting/readme.py`` writes the documentation of the command line and is left out."""
    import re

    from atml import cli

    flags = set(cli._flags().values()) - {"--help", "--version"}
    alternatives = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    spelled = re.compile(r"(?<![\w-])(" + alternatives + r")(?![\w-])")
    found = [f"{path.relative_to(SRC)}:{line}: {text[:80]!r}" for path in sorted(SRC.rglob("*.py"))
             if path.name != "cli.py" and path.relative_to(SRC).as_posix() != "reporting/readme.py"
             for line, text in _messages(path) if spelled.search(text)]
    assert not found, "\n".join(found)


def test_every_option_a_message_names_is_one_the_command_line_has():
    """``Option(NAME, ...)`` in the library names a flag of some command (``cli.TerminalWords`` writes it from the
    parsers), so no message points a user at an option that does not exist."""
    from atml import cli

    named = {(path.relative_to(SRC).as_posix(), node.lineno, node.args[0].value)
             for path in SRC.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Option"
             and node.args and isinstance(node.args[0], ast.Constant)}
    assert len(named) > 40
    unknown = sorted(f"{file}:{line}: {name}" for file, line, name in named if name not in cli._flags())
    assert not unknown, unknown


def test_no_function_is_longer_than_fifty_lines():
    """A function reads on one screen: none in the package over 50 lines (decorators and docstring included)."""
    long = sorted(f"{p.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                  for p in SRC.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and (node.end_lineno or node.lineno) - node.lineno + 1 > 50)
    assert not long, long

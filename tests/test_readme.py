"""README's numbers come from a run: the results table is the one the committed demo results render."""

import json
from pathlib import Path

from atml.reporting import readme
from atml.suite import registry

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_results_table_is_the_one_the_committed_demo_results_render():
    summary = json.loads((ROOT / "benchmarks" / "demo-results.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert readme.current(text) == readme.section(summary)
    assert readme.update(text, ROOT / "benchmarks") == text  # every generated section is up to date
    assert set(summary["experiments"]) == set(registry().names())  # every experiment has its row
    assert all(e["preset"] == "demo" for e in summary["experiments"].values())


def test_every_registered_experiment_writes_its_own_readme_row():
    assert all(exp.readme_row is not None for exp in registry())


def test_each_measured_file_has_its_section_in_the_readme():
    text = (ROOT / "README.md").read_text()
    for name, (file, _render) in readme.SECTIONS.items():
        if (ROOT / "benchmarks" / file).is_file():
            assert readme.current(text, name) == readme.render(name, ROOT / "benchmarks"), name


def test_the_exit_code_table_is_the_code_s_own():
    import re

    from atml import errors

    table = (ROOT / "README.md").read_text().split("### Exit codes")[1].split("\n\n")[1]
    listed: dict[int, set[str]] = {}
    for row in table.splitlines()[2:]:
        code, _when, names = [c.strip() for c in row.strip("|").split("|")]
        for number in code.split("/"):
            listed[int(number)] = set(re.findall(r"`(\w+)`", names)) or {"done"}
    assert listed == {code: set(names) for code, names in errors.exit_codes().items()}

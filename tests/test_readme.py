"""README's and the documentation site's numbers come from a run: every generated section is the one its committed
measurement renders, and README stays a front page (at most 15,000 characters) that links into the site."""

import json
from pathlib import Path

from atml.reporting import readme
from atml.suite import registry

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_results_table_is_the_one_the_committed_demo_results_render():
    summary = json.loads((ROOT / "benchmarks" / "demo-results.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert readme.current(text) == readme.section(summary)
    for page in readme.pages(ROOT):  # every generated section of every page is up to date
        assert readme.update(page.read_text(), ROOT / "benchmarks") == page.read_text(), page
    assert set(summary["experiments"]) == set(registry().names())  # every experiment has its row
    assert all(e["preset"] == "demo" for e in summary["experiments"].values())


def test_every_registered_experiment_writes_its_own_readme_row():
    assert all(exp.readme_row is not None for exp in registry())


def test_each_measured_file_has_its_section_on_one_docs_page():
    """The demo results are on README and the results page; every other measurement on exactly one page of the
    site, as its file renders it."""
    files = {"results": readme.RESULTS, **{name: s.file for name, s in readme.SECTIONS.items()}}
    for name, file in files.items():
        if (ROOT / "benchmarks" / file).is_file():
            pages = readme.holding(ROOT, name)
            where = [p.relative_to(ROOT).as_posix() for p in pages]
            if name == "results":
                assert where == ["README.md", "docs/results.md"]
            else:
                assert len(where) == 1 and where[0].startswith("docs/"), (name, where)
            for page in pages:
                assert readme.current(page.read_text(), name) == readme.render(name, ROOT / "benchmarks"), name


def test_the_readme_is_a_front_page_whose_links_into_the_site_resolve():
    import re

    text = (ROOT / "README.md").read_text()
    assert len(text) <= 15_000, len(text)
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert {"docs/index.md", "docs/usage.md", "docs/data.md", "docs/sweeps.md", "docs/report.md",
            "docs/api.md"} <= set(links)
    assert not [link for link in links if not (ROOT / link).is_file()]


def test_the_exit_code_table_is_the_code_s_own():
    import re

    from atml import errors

    table = (ROOT / "docs" / "usage.md").read_text().split("## Exit codes")[1].split("\n\n")[1]
    listed: dict[int, set[str]] = {}
    for row in table.splitlines()[2:]:
        code, _when, names = [c.strip() for c in row.strip("|").split("|")]
        for number in code.split("/"):
            listed[int(number)] = set(re.findall(r"`(\w+)`", names)) or {"done"}
    assert listed == {code: set(names) for code, names in errors.exit_codes().items()}


def test_the_demo_results_read_back_typed_as_written():
    """The README generator reads benchmarks/demo-results.json as typed records (DemoSummary/DemoEntry), and they
    write the file's own shape back."""
    raw = json.loads((ROOT / "benchmarks" / "demo-results.json").read_text())
    summary = readme.DemoSummary.from_json(raw)
    assert summary.to_json() == raw
    entry = summary.experiments["clip.gap"]
    assert entry.held_out_name == "test" and entry.metrics.get("centroid_distance") is not None
    assert entry.data_cell().startswith(f"{entry.data_name} ({entry.train:,} / {entry.held_out:,}); digits")


def test_every_measured_file_has_the_shape_its_section_reads(tmp_path):
    """Each file in benchmarks/ is checked against its TypedDict when read (pydantic); a file a script wrote without
    a key its section reads is one line naming the file and the key, not a KeyError deep in a renderer."""
    import json

    import pytest

    from atml.errors import UsageError
    from atml.reporting import bench_files

    for drawn in readme.SECTIONS.values():
        path = ROOT / "benchmarks" / drawn.file
        if path.is_file():
            bench_files.read(path, drawn.shape)
    broken = json.loads((ROOT / "benchmarks" / "cli-latency-cpu.json").read_text())
    del broken["rows"][0]["over_python"]
    (tmp_path / "cli-latency-cpu.json").write_text(json.dumps(broken))
    with pytest.raises(UsageError, match=r"cli-latency-cpu.json does not have the shape of CliLatencyFile: "
                                         r"rows.0.over_python: Field required"):
        readme.render("cli-latency-cpu", tmp_path)

"""The report as a user sees it: HTML opened in headless Chromium, Markdown and LaTeX beside it."""

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

import atml
from atml import cli


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["run", "resnet.head", "--preset", "smoke", "--out", str(out)]) == 0
    (run,) = list(out.iterdir())
    return run


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs the Debian package 'chromium'")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def _dump_dom(page):
    with tempfile.TemporaryDirectory() as profile:
        args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                "--dump-dom", page.as_uri()]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def _screenshot(page, target):
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--window-size=1200,2000", f"--screenshot={target}",
                        page.as_uri()], capture_output=True, timeout=120, check=True)


def test_report_opens_in_chromium_with_every_figure_loaded(smoke_run, tmp_path):
    assert cli.main(["report", str(smoke_run), "--out", str(tmp_path / "rep")]) == 0
    page = tmp_path / "rep" / "report.html"
    dom, log = _dump_dom(page)
    images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    broken = int(re.search(r'data-images-broken="(\d+)"', dom).group(1))
    assert images == 2 and broken == 0
    assert "CONSOLE" not in log and "Uncaught" not in log
    assert "resnet.head" in dom and "not comparable" in dom
    artifacts = os.environ.get("ATML_ARTIFACTS")
    if artifacts:  # CI keeps a screenshot of the page
        _screenshot(page, os.path.join(artifacts, "report.png"))


def test_report_exports_markdown_latex_and_figures(smoke_run, tmp_path):
    out = tmp_path / "rep"
    assert cli.main(["report", str(smoke_run), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## resnet.head (smoke preset)" in md and "| resolution | train acc |" in md
    tex = (out / "tables.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    figs = sorted(p.name for p in (out / "figures").rglob("*.*"))
    assert "curves.pdf" in figs and "curves.png" in figs
    assert cli.main(["report", str(smoke_run), "--out", str(out)]) == 2  # never overwrites a report


def test_html_escapes_what_a_run_contains(smoke_run, tmp_path):
    copy = tmp_path / "evil-run"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns(".lock"))
    results = json.loads((copy / "results.json").read_text())
    results["notes"].append("<script>document.title='pwned'</script>")
    (copy / "results.json").write_text(json.dumps(results))
    assert cli.main(["report", str(copy), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<script>document.title" not in html and "&lt;script&gt;document.title" in html


def test_report_of_a_missing_or_unfinished_run(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 3
    assert "nope" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("experiment: resnet.head\n")
    assert cli.main(["report", str(tmp_path / "half"), "--out", str(tmp_path / "r2")]) == 3
    assert "the run did not finish" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r3")]) == 3
    assert "is not an atml run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_failed_runs_are_reported_with_their_reason_and_bad_folders_are_listed(smoke_run, tmp_path, capsys):
    """A diverged run, a run that failed before training, an empty folder and an unfinished one, beside a good run."""
    runs = tmp_path / "runs"
    assert cli.main(["run", "gan.dcgan", "--preset", "smoke", "--set", "epochs=12", "--set", "g_lr_scale=0",
                     "--set", "d_win_threshold=0.1", "--out", str(runs / "gan")]) == 4
    assert cli.main(["run", "resnet.head", "--preset", "smoke", "--set", "data=cifar10", "--data-dir",
                     str(tmp_path / "nowhere"), "--offline", "--out", str(runs / "early")]) == 3
    (tmp_path / "empty").mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("experiment: vae.train\n")
    capsys.readouterr()
    folders = [smoke_run, *(runs / "gan").iterdir(), *(runs / "early").iterdir(), tmp_path / "empty", unfinished]
    assert cli.main(["report", *map(str, folders), "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert f"not included: {tmp_path / 'empty'} is not an atml run folder" in err
    assert f"atml run vae.train --resume {unfinished}" in err
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count('class="badge failed"') >= 2 and "won outright" in html and "is missing" in html
    assert "Not included" in html and "Not included" in (tmp_path / "rep" / "report.md").read_text()


def test_the_same_run_twice_is_one_run_and_a_repeated_seed_is_no_spread(smoke_run, tmp_path):
    assert cli.main(["report", str(smoke_run), str(smoke_run) + "/", "--out", str(tmp_path / "a")]) == 0
    md = (tmp_path / "a" / "report.md").read_text()
    assert "from 1 run(s)" in md and "(n = 2)" not in md
    twin = tmp_path / "twin"
    shutil.copytree(smoke_run, twin, ignore=shutil.ignore_patterns(".lock"))
    assert cli.main(["report", str(smoke_run), str(twin), "--out", str(tmp_path / "b")]) == 0
    md = (tmp_path / "b" / "report.md").read_text()
    assert md.count("## resnet.head (smoke preset)") == 2 and "seeds 0, 0" not in md


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_an_unusable_report_folder_is_one_clear_line(smoke_run, tmp_path, capsys, kind):
    target = tmp_path / "target"
    if kind == "file":
        target.write_text("x")
        out = target
    else:
        target.mkdir()
        target.chmod(0o500)
        out = target / "report"
    try:
        code = cli.main(["report", str(smoke_run), "--out", str(out)])
    finally:
        target.chmod(0o700)
    err = capsys.readouterr().err
    if kind == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    assert code == 2 and f"--out {out}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_latex_escape_replaces_every_special_character_once():
    from atml.reporting.build import latex_escape

    assert latex_escape("a\\b&c%d$e#f_g{h}i~j^k") == (
        r"a\textbackslash{}b\&c\%d\$e\#f\_g\{h\}i\textasciitilde{}j\textasciicircum{}k")


def test_seeds_are_grouped_with_mean_spread_and_n(tmp_path, capsys):
    out = tmp_path / "runs"
    assert cli.main(["run", "vae.train", "--preset", "smoke", "--seeds", "2", "--tensorboard", "--out", str(out)]) == 0
    runs = sorted(out.iterdir())
    assert capsys.readouterr().out.strip().splitlines()[-2:] == [str(r) for r in runs]
    assert [json.loads((r / "results.json").read_text())["seed"] for r in runs] == [0, 1]
    assert cli.main(["report", *map(str, runs), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.count("## vae.train (smoke preset)") == 1 and "seeds 0, 1 (n = 2)" in md
    row = next(line for line in md.splitlines() if line.startswith("| val_loss |"))
    mean, std, n = (cell.strip() for cell in row.split("|")[2:5])
    values = [json.loads((r / "results.json").read_text())["metrics"]["val_loss"] for r in runs]
    assert float(mean) == pytest.approx(sum(values) / 2, rel=1e-3) and n == "2" and float(std) > 0
    assert "mean of 2 seeds" in md
    # the sentences follow the numbers of the table: the mean over the seeds, and the page says so
    assert f"validation {sum(values) / 2:.2f}" in md and "discussion from the mean of 2 seeds" in md
    assert "mean and standard deviation over 2 seeds" in (tmp_path / "rep" / "tables.tex").read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Spread over 2 seeds" in html and "Variational autoencoder" in html


def test_tensorboard_event_files_hold_the_curves(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert cli.main(["run", "vae.train", "--preset", "smoke", "--tensorboard", "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert "baseline/val/loss" in events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("baseline/val/loss")] == [1, 2]


def test_bad_seed_count_is_refused(tmp_path, capsys):
    assert cli.main(["run", "vae.train", "--preset", "smoke", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds 0 is not valid" in capsys.readouterr().err


def test_every_reference_names_a_registered_experiment_and_a_valid_status():
    from atml import references
    from atml.suite import registry

    names = registry().names()
    for exp in registry():
        for ref in exp.references:
            assert ref.experiment == exp.name, ref  # listed beside the run it is compared with
    for ref in (r for exp in registry() for r in exp.references):
        assert isinstance(ref, references.Reference) and ref.experiment in names, ref
        assert ref.status in ("checked", "recalled"), ref
        assert ref.metric is not None or ref.tolerance is None, ref


def test_comparison_verdicts():
    import types

    from atml import references
    from atml.results import Metric, Metrics, RunResults

    ref = references.Reference("resnet.head", "x", 0.5, "src", "checked", "val_acc", 0.05,
                               {"preset": "full", "data": "cifar10"}, {"resolution": 32})
    cfg = types.SimpleNamespace(data="cifar10")

    def run(preset, value):  # the reference reads the record by name and condition, never by a parsed key
        return RunResults(metrics=Metrics([Metric("val_acc", value, condition={"resolution": 32}),
                                           Metric("val_acc", 0.0, condition={"resolution": 224})]), preset=preset)

    within = references.compare(ref, run("full", 0.53), cfg)
    outside = references.compare(ref, run("full", 0.7), cfg)
    other = references.compare(ref, run("demo", 0.5), cfg)
    assert (within["status"], outside["status"], other["status"]) == ("within", "outside", "not comparable")
    assert within["ours"] == 0.53 and within["metric"] == "val_acc_32"
    assert "preset is 'demo', the reference used 'full'" in other["reason"]


def test_an_older_run_folder_is_still_read_and_shown(smoke_run, tmp_path):
    """results.json before schema 2: flat metrics, experiment data at the top level."""
    from atml.results import RunResults

    old = tmp_path / "old-run"
    shutil.copytree(smoke_run, old, ignore=shutil.ignore_patterns(".lock"))
    raw = json.loads((old / "results.json").read_text())
    legacy = {k: v for k, v in raw.items() if k not in ("schema", "records", "data")}
    legacy["cells"] = [{"cell": "pretrained:head"}]  # an experiment-specific key where older files kept it
    (old / "results.json").write_text(json.dumps(legacy))
    results = RunResults.from_json(legacy)
    assert results.schema == 1 and results.data["cells"] == [{"cell": "pretrained:head"}]
    assert results.metrics.get("val_acc_32") == raw["metrics"]["val_acc_32"]  # records rebuilt from the flat view
    assert cli.main(["report", str(old), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "written by an older atml" in html and "val_acc_32" in html


@pytest.mark.parametrize("experiment, cfg, reason", [
    ("resnet.head", {"data": "cifar10", "arch": "timm/convnext_tiny", "weights": "imagenet", "epochs": 10},
     "arch is 'timm/convnext_tiny', the reference used 'resnet152'"),
    ("vit.pooling", {"data": "folder", "arch": "deit_small_patch16_224", "weights": "imagenet"},
     "data is 'folder', the reference used 'cifar10'"),
    ("clip.zeroshot", {"data": "stl10", "arch": "ViT-B-16-SigLIP", "weights": "webli"},
     "arch is 'ViT-B-16-SigLIP', the reference used 'ViT-B-32'"),
])
def test_a_full_run_on_another_model_or_folder_is_never_compared(experiment, cfg, reason):
    import types

    from atml import references
    from atml.results import Metric, Metrics, RunResults
    from atml.suite import registry

    refs = registry().get(experiment).references
    metrics = Metrics([Metric(r.metric, r.value, condition=dict(r.condition)) for r in refs if r.metric])
    rows = references.compare_all(refs, RunResults(metrics=metrics, preset="full"), types.SimpleNamespace(**cfg))
    compared = [r for r in rows if r["status"] != "context"]
    assert compared and all(r["status"] == "not comparable" and reason in r["reason"] for r in compared)


def test_a_parent_folder_stands_for_the_runs_inside_and_nothing_is_an_error(smoke_run, tmp_path, capsys):
    import atml
    from atml.errors import UsageError

    assert cli.main(["report", str(smoke_run.parent), "--out", str(tmp_path / "r")]) == 0
    assert "resnet.head" in (tmp_path / "r" / "report.md").read_text()
    with pytest.raises(UsageError, match="there was nothing to read"):
        atml.report([], tmp_path / "empty")


@pytest.mark.parametrize("results, config, why", [
    ({"accuracy": 0.93}, "experiment: resnet.head\n", "its results.json has no experiment"),
    ({"accuracy": 0.93}, "experiment: nosuch.exp\n", "its results.json has no experiment"),
    ({"experiment": "resnet.head", "status": "ok", "schema": 99}, "experiment: resnet.head\n", "written by a newer"),
    ({"experiment": "vae.train", "status": "ok", "schema": 2}, "experiment: resnet.head\n", "config.yaml says"),
    ([1, 2], "experiment: resnet.head\n", "holds a JSON list"),
])
def test_a_foreign_folder_is_not_an_atml_run_for_the_report_or_load(tmp_path, capsys, results, config, why):
    from atml.errors import RunDirError

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.yaml").write_text(config)
    (foreign / "results.json").write_text(json.dumps(results))
    assert cli.main(["report", str(foreign), "--out", str(tmp_path / "rep")]) == 3
    err = capsys.readouterr().err
    assert why in err and err.count(str(foreign)) == 1, err  # named once, not once per line and again in the error
    with pytest.raises(RunDirError, match=why):
        atml.load(foreign)


def test_report_md_keeps_one_bullet_per_line_and_counts_in_words(tmp_path):
    out = tmp_path / "runs"
    assert cli.main(["run", "vae.train", "--preset", "smoke", "--set", "epochs=1", "--out", str(out)]) == 0
    assert cli.main(["report", *map(str, out.iterdir()), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    for bullet in ("- data: ", "- data ready: ", "- weights: ", "- device: "):
        assert f"\n{bullet}" in md, bullet
    assert ")- " not in md and "1 epochs" not in md and "1 epoch." in md

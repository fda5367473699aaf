"""The Python API: atml.experiments(), atml.run(), atml.load(), atml.report() and the Run they return."""

from __future__ import annotations

import pytest

import atml
from atml.errors import UsageError


def test_experiments_describe_their_presets_and_config_fields():
    infos = {e.name: e for e in atml.experiments()}
    head = infos["resnet.head"]
    assert head.presets == ("smoke", "demo", "full", "rehearsal") and head.benchmark
    fields = {f.name: f for f in head.fields}
    assert fields["resolutions"].default == (32, 64, 128, 224) and "resized" in fields["resolutions"].doc
    assert fields["epochs"].type == "int" and fields["data"].doc.startswith("cifar10")
    assert head.preset("smoke")["arch"] == "resnet18"


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    return atml.run("vae.train", "smoke", out=tmp_path_factory.mktemp("api"), quiet=True, epochs=1, latent_dim=8)


def test_run_takes_typed_overrides_and_returns_typed_results(vae_run):
    assert vae_run.status == "ok" and vae_run.experiment == "vae.train" and vae_run.preset == "smoke"
    assert vae_run.config["epochs"] == 1 and vae_run.config["latent_dim"] == 8
    kl = vae_run.metrics.find("mutual_info")[0]
    assert kl.unit == "nats" and kl.condition == {}
    assert vae_run.metrics.value("val_loss") == pytest.approx(vae_run.metrics.value("val_recon")
                                                               + vae_run.metrics.value("val_kl"), rel=1e-6)
    assert {f.name for f in vae_run.figures} >= {"loss_curves", "reconstructions", "generations"}
    assert vae_run.figure_path("loss_curves").is_file() and vae_run.figure_path("loss_curves", "pdf").is_file()
    assert any(r["metric"] == "val_loss" for r in vae_run.references)
    assert atml.load(vae_run.path).metrics.flat() == vae_run.metrics.flat()


def test_records_and_metrics_compare_as_values(vae_run):
    from atml.results import Metric

    loaded = atml.load(vae_run.path).metrics
    assert loaded == vae_run.metrics and loaded is not vae_run.metrics
    assert Metric("val_acc", 0.5, condition={"top_k": 1}, flat_key="val_acc_1") == Metric("val_acc", 0.5,
                                                                                          condition={"top_k": 1})
    assert Metric("val_acc", 0.5) != Metric("val_acc", 0.6) and len({Metric("a", 1.0), Metric("a", 1.0)}) == 1
    assert "Final loss" in vae_run.discussion()[0]


def test_bad_overrides_are_refused_as_on_the_command_line(tmp_path):
    with pytest.raises(UsageError, match="unknown config key 'epoch'"):
        atml.run("vae.train", "smoke", out=tmp_path, epoch=2)
    with pytest.raises(UsageError, match="epochs=0 is not valid"):
        atml.run("vae.train", "smoke", out=tmp_path, epochs=0)
    with pytest.raises(UsageError, match="use a finite number"):
        atml.run("vae.train", "smoke", out=tmp_path, lr=float("inf"))
    assert not list(tmp_path.iterdir())  # refused before any run folder was made


def test_a_run_shows_itself_in_a_notebook_as_the_report_does(vae_run):
    html = vae_run._repr_html_()
    assert html.startswith("\n<div class=\"atml-run\">") or "<div class=\"atml-run\">" in html
    for part in ("vae.train", "smoke preset", "What the numbers show", "Against published figures", "<img",
                 "All metrics", "nats"):
        assert part in html, part
    assert "Run(vae.train, preset=smoke, status=ok" in repr(vae_run)


def test_report_from_runs_and_folders(vae_run, tmp_path):
    page = atml.report([vae_run, vae_run.path], tmp_path / "rep")
    assert page.name == "report.html" and (page.parent / "report.md").is_file()
    assert "from 1 run(s)" in (page.parent / "report.md").read_text()  # the same run twice counts once


def test_the_api_and_the_cli_share_the_default_preset_and_unknown_keys_suggest_the_right_one(capsys, monkeypatch):
    from atml import cli, runner
    from atml import config as config_lib

    asked = []
    monkeypatch.setattr(runner, "start", lambda exp, preset, **kw: asked.append(preset) or [])
    for call in (lambda: atml.run("vae.train", seeds=1), lambda: cli.main(["run", "vae.train"])):
        call()
    assert asked == [config_lib.DEFAULT_PRESET] * 2  # no preset: the same default from Python and the shell
    monkeypatch.undo()
    assert f"default: {config_lib.DEFAULT_PRESET}" in cli.build_parser()._subparsers._group_actions[0].choices[
        "run"].format_help()
    with pytest.raises(UsageError, match=r"unknown config key 'epoch' for vae.train \(did you mean 'epochs'\?\)"):
        atml.run("vae.train", "smoke", epoch=3)
    assert cli.main(["run", "resnet.head", "--preset", "smoke", "--set", "epoch=3"]) == 2
    assert "for resnet.head (did you mean 'epochs'?)" in capsys.readouterr().err


def test_api_errors_name_keyword_arguments_not_command_line_flags(tmp_path):
    from atml.errors import DataError, Key

    with pytest.raises(UsageError) as err:
        atml.run("resnet.features", "smoke", out=tmp_path, data="folder")
    assert "data_dir=" in str(err.value) and "--data-dir" not in str(err.value)
    photos = tmp_path / "photos"
    from atml.data import folder

    folder.write_folder(photos, per_class=3)
    (photos / "train" / "ants" / "bad.jpg").write_bytes(b"no")
    with pytest.raises(DataError) as err:
        atml.run("resnet.features", "smoke", out=tmp_path / "runs", quiet=True, data="folder", data_dir=photos)
    assert "skip_bad_images=True" in str(err.value) and "--set" not in str(err.value)
    assert err.value.options == [Key("skip_bad_images", True)]  # the fact itself, for code that acts on it


def _interrupt_at(monkeypatch, stage, epoch_no):
    from atml.train import loop

    real = loop._run_epoch

    def interrupt(job, epoch, *, train, **kwargs):
        if job.stage == stage and epoch == epoch_no and train:
            raise KeyboardInterrupt
        return real(job, epoch, train=train, **kwargs)

    monkeypatch.setattr(loop, "_run_epoch", interrupt)
    return lambda: monkeypatch.setattr(loop, "_run_epoch", real)


@pytest.mark.slow
def test_an_interrupted_run_is_named_by_load_and_resumed_from_python(tmp_path, capsys, monkeypatch):
    from atml.errors import RunDirError

    straight = atml.run("resnet.head", "smoke", out=tmp_path / "a", quiet=True)
    restore = _interrupt_at(monkeypatch, "r32", 2)
    with pytest.raises(KeyboardInterrupt):
        atml.run("resnet.head", "smoke", out=tmp_path / "b")
    broken = next((tmp_path / "b").iterdir())
    said = capsys.readouterr().out
    assert f"Resume with: atml.resume({str(broken)!r})" in said and "--resume" not in said
    restore()

    with pytest.raises(RunDirError) as err:
        atml.load(broken)
    message = str(err.value)
    assert str(broken) in message and "stopped after epoch 1 of stage r32 (checkpoints kept)" in message
    assert f"atml.resume({str(broken)!r})" in message

    resumed = atml.resume(broken, quiet=True)
    assert resumed.status == "ok" and resumed.path == broken
    assert resumed.metrics.value("val_acc", resolution=32) == straight.metrics.value("val_acc", resolution=32)
    capsys.readouterr()
    atml.resume(broken)
    said = capsys.readouterr().out
    assert "is already complete" in said and "Pass epochs=N with more epochs" in said and "--set" not in said
    with pytest.raises(UsageError) as err:
        atml.resume(broken, lr=0.5)
    assert "lr (saved 0.001, given 0.5)" in str(err.value) and "--" not in str(err.value)
    more = atml.run("resnet.head", resume=broken, epochs=3, quiet=True)  # the same rules through atml.run
    assert more.config["epochs"] == 3 and more.env["resumed_with"][-1]["changed"] == {"epochs": {"saved": 2, "now": 3}}
    with pytest.raises(UsageError, match="is a run of resnet.head, not vae.train"):
        atml.run("vae.train", resume=broken)


def test_load_names_the_file_and_what_is_wrong(vae_run, tmp_path):
    import shutil

    from atml.errors import RunDirError

    copy = shutil.copytree(vae_run.path, tmp_path / "copy")
    text = (copy / "results.json").read_text()
    (copy / "results.json").write_text(text[: len(text) // 2])
    with pytest.raises(RunDirError, match=r"results.json is not valid JSON \(line \d+, column \d+: ") as err:
        atml.load(copy)
    assert str(copy / "results.json") in str(err.value)
    (copy / "results.json").write_text(text)
    (copy / "config.yaml").write_text("epochs: [1\n")
    with pytest.raises(RunDirError, match=r"config.yaml is not valid YAML \(line \d+, column \d+\)"):
        atml.load(copy)
    with pytest.raises(RunDirError, match="is not an atml run folder"):
        atml.load(tmp_path)
    with pytest.raises(RunDirError, match="does not exist"):
        atml.load(tmp_path / "nowhere")


def test_seeds_give_runs_whose_summary_and_frame_agree_with_the_report(tmp_path):
    import statistics

    runs = atml.run("vae.train", "smoke", seeds=2, seed=5, out=tmp_path, quiet=True, epochs=1, latent_dim=8)
    assert isinstance(runs, atml.Runs) and len(runs) == 2 and [r.seed for r in runs] == [5, 6]
    losses = [r.metrics.value("val_loss") for r in runs]
    row = next(s for s in runs.summary() if s.metric == "val_loss")
    assert row.n == 2 and row.mean == pytest.approx(statistics.mean(losses))
    assert row.std == pytest.approx(statistics.stdev(losses)) and runs.mean("val_loss") == pytest.approx(row.mean)

    frame = runs.to_frame()
    assert list(frame.columns[:6]) == ["run", "seed", "name", "value", "unit", "key"]
    assert len(frame) == sum(len(r.metrics) for r in runs) and set(frame.seed) == {5, 6}
    by_name = frame.groupby("name").value.agg(["mean", "std"])
    assert by_name.loc["val_loss", "mean"] == pytest.approx(row.mean)
    assert by_name.loc["val_loss", "std"] == pytest.approx(row.std)

    page = atml.report(runs, tmp_path / "report")
    assert "mean of 2 seeds" in (page.parent / "report.md").read_text()


def test_metrics_frame_has_one_column_per_condition_and_says_how_to_get_pandas(monkeypatch):
    import sys

    from atml.results import Metric, Metrics

    metrics = Metrics([Metric("val_acc", 0.5, condition={"resolution": 32}), Metric("loss", 1.0, "nats")])
    frame = metrics.to_frame()
    assert list(frame.columns) == ["name", "value", "unit", "key", "resolution"]
    assert frame.pivot_table(index="name", values="value").loc["loss", "value"] == 1.0
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(UsageError, match=r"needs pandas, which is not installed: pip install pandas"):
        metrics.to_frame()


@pytest.mark.slow
def test_models_bench_and_speed_from_python(tmp_path):
    entries = atml.model_info()
    assert any(m.name == "resnet152" and "imagenet-v1" in m.weights for m in entries)
    assert all(m.family == "vit" for m in atml.model_info(family="vit"))
    entry = atml.model_info("resnet152")
    assert entry.weights["imagenet"].location == "ResNet152_Weights.IMAGENET1K_V2"
    assert [m.name for m in atml.model_info(family="gan")] == ["dcgan"]  # the VAE and DCGAN are entries too
    with pytest.raises(UsageError, match="family='rnn' is not valid"):
        atml.model_info(family="rnn")

    result = atml.bench("resnet.head", "smoke", epochs=1)
    assert isinstance(result, atml.Bench) and result.experiment == "resnet.head"
    assert result.speedup == pytest.approx(result.naive_s / result.atml_s) and result.throughput.flops_per_image > 0
    with pytest.raises(UsageError, match="vae.collapse has no benchmark; these have one: "):
        atml.bench("vae.collapse")

    fast = atml.speed("cpu", models=["resnet152"], quick=True)
    assert isinstance(fast, atml.Speed) and fast.device == "cpu" and fast.pairs
    assert all(p.atml > 0 and p.peer > 0 and p.ratio == pytest.approx(p.atml / p.peer) for p in fast.pairs)
    with pytest.raises(UsageError, match="models='vgg' is not valid"):
        atml.speed(models=["vgg"])


def test_the_cli_and_the_api_make_the_same_run(tmp_path):
    import json

    from atml import cli

    assert cli.main(["run", "vae.train", "--preset", "smoke", "--set", "epochs=1", "--set", "latent_dim=8",
                     "--seed", "3", "--out", str(tmp_path / "cli")]) == 0
    by_cli = atml.load(next((tmp_path / "cli").iterdir()))
    by_api = atml.run("vae.train", "smoke", epochs=1, latent_dim=8, seed=3, out=tmp_path / "api", quiet=True)
    assert by_cli.config == by_api.config
    timing = {"wall_time_s", "peak_memory_mb", "images_per_s"}
    a = [(r.name, dict(r.condition), r.value) for r in by_cli.metrics if r.name not in timing and "time" not in r.name]
    b = [(r.name, dict(r.condition), r.value) for r in by_api.metrics if r.name not in timing and "time" not in r.name]
    assert a == b
    assert json.loads((by_cli.path / "env.json").read_text())["seed"] == by_api.env["seed"] == 3

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


def test_the_api_and_the_cli_share_the_default_preset_and_unknown_keys_suggest_the_right_one(capsys):
    import inspect

    from atml import cli
    from atml import config as config_lib

    assert inspect.signature(atml.run).parameters["preset"].default == config_lib.DEFAULT_PRESET
    assert f"default: {config_lib.DEFAULT_PRESET}" in cli.build_parser()._subparsers._group_actions[0].choices[
        "run"].format_help()
    with pytest.raises(UsageError, match=r"unknown config key 'epoch' for vae.train \(did you mean 'epochs'\?\)"):
        atml.run("vae.train", "smoke", epoch=3)
    assert cli.main(["run", "resnet.head", "--preset", "smoke", "--set", "epoch=3"]) == 2
    assert "for resnet.head (did you mean 'epochs'?)" in capsys.readouterr().err


def test_api_errors_name_keyword_arguments_not_command_line_flags(tmp_path):
    from atml.errors import DataError

    with pytest.raises(UsageError) as err:
        atml.run("resnet.features", "smoke", out=tmp_path, data="folder")
    assert "data_dir=" in str(err.value) and "--data-dir" not in str(err.value)
    photos = tmp_path / "photos"
    from atml.data import folder

    folder.write_folder(photos, per_class=3)
    (photos / "train" / "ants" / "bad.jpg").write_bytes(b"no")
    with pytest.raises(DataError) as err:
        atml.run("resnet.features", "smoke", out=tmp_path / "runs", quiet=True, data="folder", data_dir=photos)
    assert "skip_bad_images=true" in str(err.value) and "--set" not in str(err.value)

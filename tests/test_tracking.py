"""``--track mlflow`` and ``--track wandb``: the records of a run read back from each real library's own store
equal the run's results.json."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

from atml import cli, tracking


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run logged to both sinks through ``atml run --track`` (MLflow's default ./mlflow.db here)."""
    import os

    root = tmp_path_factory.mktemp("tracked")
    old = Path.cwd()
    os.chdir(root)
    try:
        env = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_URI", "WANDB_MODE") if k in os.environ}
        assert cli.main(["run", "vae.train", "--preset", "smoke", "--out", "runs", "--track", "mlflow"]) == 0
        (run,) = (root / "runs").iterdir()
        said = io.StringIO()
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            tracking.open_sink("wandb").log_run(run)
        (root / "wandb-said.txt").write_text(said.getvalue())
        os.environ.update(env)
    finally:
        os.chdir(old)
    return run


def test_mlflow_s_default_sqlite_store_holds_the_run_s_records_params_and_artifacts(tracked: Path,
                                                                                   monkeypatch) -> None:
    """atml's default store is the SQLite database MLflow recommends: read back as a user would, without
    MLFLOW_ALLOW_FILE_STORE (which MLflow 3 demands of a file store)."""
    import mlflow

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    results = json.loads((tracked / "results.json").read_text())
    assert (tracked.parent.parent / "mlflow.db").is_file() and not (tracked.parent.parent / "mlruns" / "0").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tracked.parent.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vae.train")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics == tracking.metrics(tracking.read_run(tracked)[1])
    assert len(run.data.metrics) == sum(isinstance(r["value"], (int, float)) for r in results["records"])
    config = yaml.safe_load((tracked / "config.yaml").read_text())
    assert run.data.params["epochs"] == json.dumps(config["epochs"]) and run.data.params["experiment"] == "vae.train"
    assert run.data.tags["atml.run_folder"] == str(tracked.resolve())
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "config.yaml", "figures"} <= artifacts


def test_wandb_offline_run_holds_the_run_s_records(tracked: Path) -> None:
    results = json.loads((tracked / "results.json").read_text())
    (offline,) = (tracked / "wandb").glob("offline-run-*")
    assert tracking.wandb_offline_history(offline) == tracking.metrics(tracking.read_run(tracked)[1])
    # the artifacts are in the run's files (sent at sync), and logging them printed no warning per file
    files = offline / "files"
    assert (files / "results.json").read_bytes() == (tracked / "results.json").read_bytes()
    assert all((files / f).is_file() for f in results["figures"])
    assert "Symlinked" not in (tracked.parent.parent / "wandb-said.txt").read_text()
    assert (offline / "files" / "results.json").is_file()


def test_metric_keys_carry_the_condition() -> None:
    from atml.results import Metric

    assert tracking.metric_key(Metric("probe_acc", 0.5, condition={"model": "ViT-B-32@openai"})) == \
        "probe_acc/model:ViT-B-32-openai"
    assert tracking.metric_key(Metric("val_acc", 0.5, condition={"resolution": 32, "init": "random"})) == \
        "val_acc/resolution:32/init:random"


def test_an_unknown_sink_is_refused_before_the_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "vae.train", "--preset", "smoke", "--out", str(tmp_path), "--track", "neptune"])
    assert exit_info.value.code == 2
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("uri, said", [("file:///{tmp}/mlruns", "maintenance mode"),
                                       ("postgresql://nobody@127.0.0.1:1/db", "cannot open the tracking store")])
def test_a_tracking_store_mlflow_refuses_is_one_line_before_the_run(tmp_path, capsys, monkeypatch, uri, said):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(tmp=tmp_path))
    code = cli.main(["run", "vae.train", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--track", "mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and said in err and "MLFLOW_TRACKING_URI" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before the run, not after it

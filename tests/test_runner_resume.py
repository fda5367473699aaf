"""Resume at every stage boundary, for every experiment of the registry that trains (smoke preset).

Each experiment runs once straight through. Then the same run is stopped (KeyboardInterrupt, as Ctrl-C, SIGTERM and
a sweep cell's cancellation reach it) right after the first epoch of its first training stage, resumed, stopped
after the first epoch of the next stage, resumed, and so on until it completes: it has the straight run's records,
and every number but the clocks is equal. The experiments are those whose smoke preset sets ``epochs`` (the others
extract features or fit probes in one call: there is no epoch to stop after); each must train at least one stage.
resnet.head also runs without its feature cache (the head trained on its frozen backbone, a checkpoint of another
shape).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from atml import cli
from atml.suite import registry
from atml.train import loop

CLOCKS = ("time_s", "images_per_s", "per_s", "peak_memory_mb", "_mb", "seconds")
"""Record names that measure the machine, not the model: they differ between any two runs."""


def _numbers(run: Path) -> dict[str, Any]:
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok", results.get("error")
    out = {}
    for record in results["records"]:  # clocks by name only: a resumed run must still have every one
        key = json.dumps([record["name"], record.get("condition") or {}], sort_keys=True)
        out[key] = None if any(clock in record["name"] for clock in CLOCKS) else record["value"]
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


def _training() -> list[Any]:
    reg = registry()
    cases = [pytest.param(name, [], id=name) for name in reg.names() if "epochs" in reg.get(name).presets["smoke"]]
    return [*cases, pytest.param("resnet.head", ["--set", "feature_cache=false"], id="resnet.head-no-feature-cache")]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), _training())
def test_a_run_stopped_after_the_first_epoch_of_each_stage_resumes_to_the_straight_run_s_results(
        name: str, options: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop._run_epoch
    stages: list[str] = []

    def spy(job: Any, epoch: int, *, train: bool, **kwargs: Any) -> Any:
        if train and job.stage not in stages:
            stages.append(job.stage)
        return real(job, epoch, train=train, **kwargs)

    monkeypatch.setattr(loop, "_run_epoch", spy)
    assert cli.main(["run", name, "--preset", "smoke", *options, "--out", str(tmp_path / "straight")]) == 0
    (straight,) = (tmp_path / "straight").iterdir()
    trained = list(stages)
    assert trained, f"{name}'s smoke preset sets epochs, yet it trained no stage"

    stopped: list[str] = []

    def stop(job: Any, epoch: int, *, train: bool, **kwargs: Any) -> Any:
        if train and epoch == 2 and job.stage not in stopped:  # the first epoch's checkpoint is on disk
            stopped.append(job.stage)
            raise KeyboardInterrupt
        return real(job, epoch, train=train, **kwargs)

    monkeypatch.setattr(loop, "_run_epoch", stop)
    assert cli.main(["run", name, "--preset", "smoke", *options, "--out", str(tmp_path / "resumed")]) == 130
    (resumed,) = (tmp_path / "resumed").iterdir()
    for _ in trained:
        code = cli.main(["run", name, "--resume", str(resumed)])
        if code == 0:
            break
        assert code == 130
    assert stopped == trained, f"stopped in {stopped}, the straight run trained {trained}"
    a, b = _numbers(straight), _numbers(resumed)
    assert a.keys() == b.keys(), set(a) ^ set(b)
    differ = {k: (a[k], b[k]) for k in a if not _same(a[k], b[k])}
    assert not differ, differ

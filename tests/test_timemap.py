"""Where a run's time goes (atml.timemap): each second counted once, to the work that spent it."""

import json
import time

import pytest
import torch

from atml import api, timemap
from atml.train.loop import Batches, Fit, MemoryRecorder, StepOutput, fit


class _Slow(torch.nn.Module):
    """A module whose forward takes ``seconds`` and calls a child module (nested forwards count once)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.child = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.child(x)


def test_forwards_spans_and_the_rest_add_up_to_the_wall_time_each_second_once():
    model = _Slow(0.05)
    with timemap.recording() as time_map:
        with timemap.span("analysis"):
            time.sleep(0.05)
            model(torch.zeros(1))  # a forward inside an analysis pauses it: 0.05 s to model, not to both
            with timemap.span("figures"):
                time.sleep(0.03)
        time.sleep(0.02)  # outside every span: other
    out = time_map.to_json()
    assert out["model_s"] == pytest.approx(0.05, abs=0.02)
    assert out["analysis_s"] == pytest.approx(0.05, abs=0.02)
    assert out["figures_s"] == pytest.approx(0.03, abs=0.02)
    assert out["other_s"] == pytest.approx(0.02, abs=0.02)
    parts = sum(v for k, v in out.items() if k not in ("wall_s", "model_device_s"))
    assert parts == pytest.approx(out["wall_s"], abs=1e-3)
    assert out["model_device_s"] is None  # no CUDA work


def test_a_failing_forward_closes_its_span_and_nothing_is_timed_outside_a_recording():
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.02)
            raise ValueError("bad input")

    model = Broken()
    with timemap.recording() as time_map:
        with pytest.raises(ValueError):
            model(torch.zeros(1))
        with timemap.span("data"):
            time.sleep(0.03)
    out = time_map.to_json()
    assert out["model_s"] == pytest.approx(0.02, abs=0.015) and out["data_s"] == pytest.approx(0.03, abs=0.015)
    with timemap.span("data"):  # no recording: a no-op
        pass
    assert time_map.to_json()["data_s"] == out["data_s"]


def test_the_training_loop_counts_its_steps_to_model_and_its_batches_to_data():
    class SlowBatches(Batches):
        def __iter__(self):
            for batch in super().__iter__():
                time.sleep(0.01)
                yield batch

    def step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> StepOutput:
        time.sleep(0.01)  # inside the step, outside any forward: still the model's work
        loss = model(batch[0]).pow(2).mean()
        return StepOutput(loss, {})

    x = torch.randn(40, 3)
    model = torch.nn.Linear(3, 1)
    job = Fit(model, torch.optim.SGD(model.parameters(), lr=0.1), SlowBatches((x,), 10), None, 1, torch.device("cpu"),
              MemoryRecorder(), step=step, say=lambda _m: None)
    with timemap.recording() as time_map:
        fit(job)
    out = time_map.to_json()
    assert out["data_s"] == pytest.approx(0.04, abs=0.03)  # 4 batches of 10 ms
    assert out["model_s"] == pytest.approx(0.04, abs=0.03)


def test_a_run_writes_where_its_time_went_to_env_json(tmp_path):
    run = api.run("resnet.features", preset="smoke", out=tmp_path, progress=False)
    env = json.loads((run.path / "env.json").read_text())
    spent = env["time_by_work"]
    assert set(spent) == {f"{k}_s" for k in timemap.KINDS} | {"other_s", "wall_s", "model_device_s"}
    # resnet.features builds a model, reads data, runs forwards, analyses them and draws figures: each took time
    assert all(spent[f"{k}_s"] > 0 for k in ("build", "model", "data", "analysis", "figures", "writing")), spent
    parts = sum(spent[f"{k}_s"] for k in timemap.KINDS) + spent["other_s"]
    assert parts == pytest.approx(spent["wall_s"], rel=1e-3)

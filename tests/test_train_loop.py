
import os
from pathlib import Path

import pytest
import torch

from atml.errors import DivergedError, RunDirError
from atml.train import checkpoint
from atml.train.loop import Batches, EpochRecord, Fit, History, MemoryRecorder, StepOutput, fit


def _data(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return x, (x[:, 0] > 0).long()


def _job(tmp_path, epochs, recorder, seed=0, init_seed=None):
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.9)
    x, y = _data()
    return Fit(model, optimizer, Batches((x, y), 16, shuffle=True, seed=seed), Batches((x, y), 32), epochs,
               torch.device("cpu"), recorder, stage="s", scheduler=scheduler,
               checkpoint_path=tmp_path / "ck.pt", say=lambda _m: None)


def test_learns_and_logs_one_record_per_epoch_and_phase(tmp_path):
    recorder = MemoryRecorder()
    rows = fit(_job(tmp_path, 4, recorder))
    assert [(r.epoch, r.phase) for r in rows] == [(e, p) for e in range(1, 5) for p in ("train", "val")]
    assert rows[-1]["acc"] > 0.8 and rows[-1]["loss"] < rows[1]["loss"]


def test_fit_returns_a_history_asked_by_phase_not_by_string_filters(tmp_path):
    rows = fit(_job(tmp_path, 3, MemoryRecorder()))
    assert isinstance(rows, History) and len(rows.phase("train")) == len(rows.phase("val")) == 3
    assert rows.last("val", "acc") == [r for r in rows if r.phase == "val"][-1]["acc"]
    assert rows.values("train", "loss") == [r["loss"] for r in rows if r.phase == "train"]
    with pytest.raises(KeyError, match="no val record with 'kl'"):
        rows.last("val", "kl")
    with pytest.raises(ValueError, match="phase='test'"):
        rows.phase("test")  # type: ignore[arg-type]


def test_resume_gives_identical_weights_and_no_duplicate_records(tmp_path):
    straight = _job(tmp_path / "a", 5, MemoryRecorder())
    fit(straight)

    recorder = MemoryRecorder()
    fit(_job(tmp_path / "b", 2, recorder))  # "interrupted" after epoch 2
    recorder.log_metrics({"stage": "s", "epoch": 3, "phase": "train"})  # a record past the checkpoint
    resumed = _job(tmp_path / "b", 5, recorder, init_seed=99)  # fresh init; the checkpoint must win
    rows = fit(resumed)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [(r.epoch, r.phase) for r in rows] == [(e, p) for e in range(1, 6) for p in ("train", "val")]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path):
    job = _job(tmp_path, 3, MemoryRecorder())
    fit(job)
    saved = (tmp_path / "ck.pt").read_bytes()
    job.epochs = 5
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        loss = model(batch[0]).sum() * (float("nan") if calls["n"] == 3 else 1.0)
        return StepOutput(loss, {})

    job.step = poisoned
    with pytest.raises(DivergedError, match=r"loss became nan at epoch 4, step 2; last good checkpoint kept"):
        fit(job)
    assert (tmp_path / "ck.pt").read_bytes() == saved


def test_checkpoint_round_trip_and_damaged_file(tmp_path):
    job = _job(tmp_path, 1, MemoryRecorder())
    fit(job)
    state = checkpoint.load(tmp_path / "ck.pt")
    assert state["epoch"] == 1 and set(state) >= {"model", "optimizer", "scheduler", "torch_rng"}
    data = (tmp_path / "ck.pt").read_bytes()
    (tmp_path / "ck.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="damaged or not an atml checkpoint"):
        checkpoint.load(tmp_path / "ck.pt")


def test_failed_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    job = _job(tmp_path, 1, MemoryRecorder())
    fit(job)
    before = (tmp_path / "ck.pt").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    job.epochs = 2
    with pytest.raises(RunDirError, match="could not write checkpoint .*ck.pt: No space left"):
        fit(job)
    assert (tmp_path / "ck.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_batches_cover_every_sample_once_per_epoch():
    b = Batches((torch.arange(10),), 3, shuffle=True, seed=1)
    b.set_epoch(1)
    seen = torch.cat([batch[0] for batch in b])
    assert sorted(seen.tolist()) == list(range(10)) and len(b) == 4
    assert torch.equal(seen, torch.cat([batch[0] for batch in b]))  # the order is a function of the epoch
    b.set_epoch(2)
    assert not torch.equal(seen, torch.cat([batch[0] for batch in b]))  # reshuffled next epoch


def test_batches_in_stored_order_are_views_of_the_split_not_copies():
    images, labels = torch.arange(30).view(10, 3), torch.arange(10)
    batches = list(Batches((images, labels), 4))
    assert [len(b[0]) for b in batches] == [4, 4, 2] and len(Batches((images, labels), 4)) == 3
    assert torch.equal(torch.cat([b[0] for b in batches]), images)
    assert all(b[0].data_ptr() == images[4 * i].data_ptr() for i, b in enumerate(batches))  # no gather: a view
    shuffled = next(iter(Batches((images, labels), 4, shuffle=True)))
    assert shuffled[0].data_ptr() != images.data_ptr()  # shuffled: gathered as before


def test_ranks_together_see_exactly_the_single_process_batches():
    single = Batches((torch.arange(12),), 4, shuffle=True, seed=3)
    ranks = [Batches((torch.arange(12),), 4, shuffle=True, seed=3, rank=r, world=2) for r in (0, 1)]
    for b in (single, *ranks):
        b.set_epoch(5)
    for whole, *parts in zip(single, *ranks):
        assert sorted(whole[0].tolist()) == sorted(torch.cat([p[0] for p in parts]).tolist())


def test_deferred_finite_check_names_the_first_bad_step_without_reading_every_step():
    """The GPU path: the loss is read every few steps, yet the error names the first bad one."""
    from atml.train.loop import _FiniteWatch

    job = Fit(torch.nn.Linear(1, 1), None, None, None, 1, torch.device("cpu"), MemoryRecorder(), stage="s")
    watch = _FiniteWatch(job, epoch=2, every=25)
    losses = [1.0, 2.0, 0.5, float("inf"), float("nan"), 3.0]
    for step, value in enumerate(losses):
        watch.add(torch.tensor(value), step)  # fewer than 25 steps: nothing is read yet
    with pytest.raises(DivergedError, match=r"loss became inf at epoch 2, step 3"):
        watch.check()


def test_features_larger_than_the_limit_go_to_a_memory_mapped_file_with_the_same_values(monkeypatch, tmp_path):
    from atml.train import features as feats

    frozen = feats.FrozenFeatures(torch.nn.Identity(), torch.nn.Flatten(),
                                  features=lambda module, x: module(x.float()))
    images = torch.randint(0, 255, (50, 3, 4, 4), dtype=torch.uint8)
    in_memory, _ = feats.extract(frozen, images, batch_size=16, device=torch.device("cpu"))
    monkeypatch.setenv("ATML_FEATURES_IN_MEMORY_MB", "0")
    spilled, _ = feats.extract(frozen, images, batch_size=16, device=torch.device("cpu"))
    assert torch.equal(in_memory, spilled) and spilled.shape == (50, 48)
    maps = Path("/proc/self/maps").read_text()
    assert "/features/features-" in maps and "(deleted)" in maps  # file-backed, and removed from the folder
    assert not any((Path(os.environ["ATML_CACHE"]) / "features").iterdir())


def test_one_progress_bar_per_stage_not_per_epoch_and_phase(tmp_path, monkeypatch):
    """A notebook keeps every bar it was shown: 3 epochs x (train, val) drew six; a stage now draws one."""
    import dataclasses

    from atml.train import loop

    bars = []
    real = loop.tqdm

    def counted(*args, **kwargs):
        bars.append(kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "tqdm", counted)
    job = dataclasses.replace(_job(tmp_path, 3, MemoryRecorder()), progress=True)
    rows = fit(job)
    assert len(rows) == 6 and bars == ["s"]


def test_epoch_totals_are_the_per_metric_float64_sums_exactly():
    """The loop sums a step's scalar metrics as one stacked vector: each total is, bit for bit, the float64 sum of
    value x batch size that adding each metric alone gives (so the records stay the same), vectors (a KL per
    dimension) summed alone, the step's order kept; a step that changes its metrics is refused."""
    from atml.train.loop import _Totals

    generator = torch.Generator().manual_seed(0)
    steps = [{"loss": torch.rand((), generator=generator), "acc": torch.rand((), generator=generator).bfloat16(),
              "kl_per_dim": torch.rand(5, generator=generator), "weight": 0.5} for _ in range(37)]
    totals = _Totals(torch.float64)
    naive: dict[str, torch.Tensor] = {}
    for i, values in enumerate(steps):
        n = 64 if i < 36 else 29
        totals.add(values, n)
        for name, value in values.items():
            value = torch.as_tensor(value).detach().to(torch.float64) * n
            naive[name] = naive[name] + value if name in naive else value
    got = totals.by_name()
    assert list(got) == ["loss", "acc", "kl_per_dim", "weight"]
    assert all(torch.equal(got[name], naive[name]) for name in naive)
    with pytest.raises(ValueError, match="same metrics"):
        totals.add({"loss": torch.tensor(1.0)}, 1)


def test_a_stage_whose_data_fits_on_the_device_takes_its_batches_there_with_the_same_result(tmp_path, monkeypatch):
    """A split within RESIDENT_SHARE of the free device memory is copied once and batched there: same batches, same
    weights; a larger one stays on the host. (Here the 'device' is the CPU, its free memory given.)"""
    from atml.train import loop

    moved: list[int] = []
    to = Batches.to

    def spy(self, device):
        moved.append(self.nbytes)
        return to(self, device)

    monkeypatch.setattr(Batches, "to", spy)
    runs = {}
    for name, free in (("host", None), ("resident", 10**9), ("too large", 100)):
        monkeypatch.setattr(loop, "_free_memory", lambda _device, free=free: free)
        job = _job(tmp_path / name, 3, MemoryRecorder())
        fit(job)
        runs[name] = [p.detach().clone() for p in job.model.parameters()]
    x, y = _data()
    assert moved == [x.numel() * 4 + y.numel() * 8] * 2  # train and val, once, only when they fit
    for name in ("resident", "too large"):
        assert all(torch.equal(a, b) for a, b in zip(runs["host"], runs[name])), name


def test_the_deferred_finite_check_copies_nothing_from_the_host_per_step(monkeypatch):
    """On a GPU a tensor made from host data (torch.tensor) waits for the device: the watch builds its state there."""
    from atml.train.loop import _FiniteWatch

    job = Fit(torch.nn.Linear(1, 1), None, None, None, 1, torch.device("cpu"), MemoryRecorder(), stage="s")
    watch = _FiniteWatch(job, epoch=1, every=25)
    losses = [torch.tensor(v) for v in (1.0, 2.0, float("nan"))]

    def refused(*args, **kwargs):
        raise AssertionError("a tensor made from host data inside the watch")

    monkeypatch.setattr(torch, "tensor", refused)
    monkeypatch.setattr(torch, "as_tensor", refused)
    for step, loss in enumerate(losses):
        watch.add(loss, step)
    monkeypatch.undo()
    with pytest.raises(DivergedError, match=r"step 2"):
        watch.check()


def test_gradient_flow_reads_its_norms_once_per_epoch_with_the_same_means(monkeypatch):
    """Reading a norm per block and step made the host wait for the GPU each time; the sums stay on the device."""
    from atml.train.gradients import GradientFlow

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    flow = GradientFlow(model, {"first": model[0], "second": model[2]}, {"first": model[0], "second": model[2]})
    expected: dict[str, list[float]] = {"grad_in/second": [], "grad_param/first": []}
    with monkeypatch.context() as patched:
        patched.setattr(torch.Tensor, "__float__", lambda self: (_ for _ in ()).throw(AssertionError("read")))
        patched.setattr(torch.Tensor, "item", lambda self: (_ for _ in ()).throw(AssertionError("read")))
        for step in range(3):
            model.zero_grad()
            out = model(torch.randn(5, 4))
            out.register_hook(lambda g: expected["grad_in/second"].append(g.norm()))
            out.pow(2).sum().backward()
            flow.on_after_backward(model, 1, step)
            expected["grad_param/first"].append(torch.stack([p.grad.norm() for p in model[0].parameters()]).norm())
    records = {"train": EpochRecord("s", 1, "train", {"loss": 0.0})}
    flow.on_epoch_end(1, records)
    values = records["train"].values
    assert values["grad_in"]["second"] == sum(float(v) for v in expected["grad_in/second"]) / 3
    assert values["grad_param"]["first"] == sum(float(v) for v in expected["grad_param/first"]) / 3
    flow.close()


def test_a_checkpoint_written_in_the_background_holds_the_state_at_its_epoch_s_end(tmp_path, monkeypatch):
    """The writer copies the state when asked and writes it while training goes on: the file holds the epoch's
    weights, not the ones the next steps made, and a NaN found while the write is pending still finds it kept."""
    import threading
    import time

    from atml import storage

    slow = threading.Event()
    real = storage.torch_save

    def slow_save(state, path):
        slow.wait(5)  # the write waits until the next epoch has changed the weights
        real(state, path)

    monkeypatch.setattr(storage, "torch_save", slow_save)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    writer = checkpoint.Writer()
    at_save = {k: v.clone() for k, v in model.state_dict().items()}
    writer.save(tmp_path / "ck.pt", model=model, optimizer=optimizer, epoch=1)
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on
    slow.set()
    writer.wait()
    state = checkpoint.load(tmp_path / "ck.pt")
    assert all(torch.equal(state["model"][k], v) for k, v in at_save.items())

    slow.clear()
    threading.Timer(0.3, slow.set).start()  # the first epoch's write is still pending when epoch 2 diverges
    job = _job(tmp_path / "run", 3, MemoryRecorder())
    (tmp_path / "run").mkdir()
    calls = {"n": 0}
    first_epoch_steps = len(job.train) + len(job.val)  # the step runs for validation too

    def poisoned(model, batch):
        calls["n"] += 1
        bad = calls["n"] == first_epoch_steps + 2
        return StepOutput(model(batch[0]).sum() * (float("nan") if bad else 1.0), {})

    job.step = poisoned
    started = time.perf_counter()
    with pytest.raises(DivergedError, match=r"epoch 2, step 1; last good checkpoint kept"):
        fit(job)
    assert checkpoint.load(tmp_path / "run" / "ck.pt")["epoch"] == 1
    assert time.perf_counter() - started >= 0.25  # it waited for the pending write

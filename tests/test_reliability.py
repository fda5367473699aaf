"""Fault injection: what atml guarantees when runs are killed, disks fail, files are hostile or
the network is absent. The "Reliability" page (docs/reliability.md) names these tests."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atml import cli, storage
from atml.errors import RunDirError
from atml.run_dir import RunDir
from atml.train import checkpoint

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def _wait_for(pattern_root: Path, glob: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not list(pattern_root.glob(glob)):
        time.sleep(0.1)


@pytest.mark.slow
def test_sigkill_leaves_a_complete_checkpoint_and_the_run_resumes(tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "atml", "run", "vae.train", "--preset", "smoke", "--set", "epochs=300",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(out, "*/checkpoints/baseline.pt")
    time.sleep(1.3)  # kill somewhere inside later epochs, possibly mid-write
    proc.kill()
    proc.wait(timeout=30)
    (run,) = list(out.iterdir())
    state = checkpoint.load(run / "checkpoints" / "baseline.pt")  # complete, never partial
    done = state["epoch"]
    assert done >= 1
    # resume with a short remaining schedule: edit nothing, just let it finish from the checkpoint
    config = (run / "config.yaml").read_text().replace("epochs: 300", f"epochs: {done + 2}")
    (run / "config.yaml").write_text(config)
    assert cli.main(["run", "vae.train", "--resume", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["epoch"], r["phase"]) for r in records if r["stage"] == "baseline"]
    assert keys == [(e, p) for e in range(1, done + 3) for p in ("train", "val")]  # no gaps, no duplicates


def test_failing_results_write_keeps_the_previous_file_and_names_the_path(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path, "x", "smoke")
    run.write_results({"status": "ok", "metrics": {"a": 1}})
    real_replace = os.replace

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(RunDirError, match=r"could not write .*results.json: No space left on device"):
        run.write_results({"status": "ok", "metrics": {"a": 2}})
    monkeypatch.setattr(os, "replace", real_replace)
    assert run.read_results()["metrics"] == {"a": 1}
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "results.json"]  # no temp file left


def test_checkpoint_carrying_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format": checkpoint.FORMAT, "model": Exploit()}, handle)
    with pytest.raises(RunDirError, match="damaged or not an atml checkpoint"):
        checkpoint.load(path)
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ck.pt"
    storage.torch_save({"format": checkpoint.FORMAT, "epoch": 1}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(RunDirError, match="damaged or not an atml checkpoint.*delete it"):
        checkpoint.load(path)


@pytest.mark.slow
def test_a_run_folder_in_use_cannot_be_opened_by_a_second_process(tmp_path):
    run = RunDir.create(tmp_path, "x", "smoke")
    run.write_config({"experiment": "vae.train"})
    script = f"from atml.run_dir import RunDir\nRunDir.open({str(run.path)!r})\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode != 0 and "in use by another atml process" in done.stderr
    run.unlock()
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert again.returncode == 0


@pytest.mark.slow
def test_offline_run_never_touches_the_network(tmp_path):
    """Sockets are disabled in the child process: any attempt to connect fails the run."""
    guard = tmp_path / "sitecustomize.py"
    guard.write_text(textwrap.dedent("""
        import socket
        def _refuse(*args, **kwargs):
            raise RuntimeError("network access attempted")
        socket.socket.connect = _refuse
        socket.create_connection = _refuse
        socket.getaddrinfo = _refuse
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    ok = subprocess.run([sys.executable, "-m", "atml", "run", "gan.dcgan", "--preset", "smoke", "--set",
                         "inception=auto", "--offline", "--out", str(tmp_path / "a")], env=env, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    refused = subprocess.run([sys.executable, "-m", "atml", "run", "resnet.head", "--preset", "smoke", "--weights",
                              "imagenet", "--offline", "--out", str(tmp_path / "b")], env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 3 and "offline mode forbids downloading" in refused.stderr
    assert "network access attempted" not in refused.stderr


@pytest.mark.slow
def test_when_one_rank_fails_every_rank_exits_within_seconds(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import os, torch, torch.distributed as dist
        from atml.train.loop import Batches, Fit, MemoryRecorder, StepOutput, fit
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        model = torch.nn.Linear(4, 2)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        def step(m, batch):
            if rank == 1 and m.training:
                raise RuntimeError("injected failure on rank 1")
            return StepOutput(m(batch[0]).sum(), {})
        data = Batches((torch.randn(64, 4),), 8, rank=rank, world=2)
        fit(Fit(ddp, torch.optim.SGD(model.parameters(), lr=0.1), data, None, 1000, torch.device("cpu"),
                MemoryRecorder(), step=step, say=lambda m: None))
    """))
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(worker)], capture_output=True, text=True, timeout=120)
    elapsed = time.time() - started
    assert done.returncode != 0 and "injected failure on rank 1" in done.stderr
    assert elapsed < 60  # the collective timeout would be 30 minutes


def test_readme_reliability_table_names_only_tests_that_exist():
    text = PAGE.read_text()
    section = text
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`test_" in line]
    names = [row.rstrip(" |").split("`")[-2] for row in rows]  # the last column names the test
    assert len(names) >= 8
    here = Path(__file__).parent
    source = "\n".join(p.read_text() for p in here.glob("test_*.py"))
    missing = [n for n in names if f"def {n.split('::')[-1]}(" not in source]
    assert not missing, missing


def test_an_interruption_during_a_checkpoint_write_waits_for_the_complete_file(tmp_path, monkeypatch):
    """Ctrl-C mid-write used to surface as torch's RuntimeError ('enforce fail'), exit 1 and no file."""
    import signal

    import torch

    from atml import storage

    real_save = torch.save

    def save_interrupted(obj, handle):
        signal.raise_signal(signal.SIGINT)  # arrives while the checkpoint is being written
        real_save(obj, handle)

    monkeypatch.setattr(torch, "save", save_interrupted)
    # Python's own Ctrl-C handler, as in a terminal (a shell that starts the tests in the background ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            storage.torch_save({"x": torch.ones(3)}, tmp_path / "c.pt")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert torch.equal(storage.torch_load(tmp_path / "c.pt")["x"], torch.ones(3))

"""torchrun with 2 gloo processes on the CPU: sharded feature extraction, DDP training = one process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from atml import cli


def _torchrun(*args, timeout=300, **env_changes):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_changes}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_feature_extraction_is_sharded_across_ranks_and_gathered(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import json, torch, torch.distributed as dist
        from atml.distributed import sharded
        dist.init_process_group("gloo")
        seen = []
        def compute(part):
            seen.append(len(part))
            return part.float()[:, None] * 2
        out = sharded(compute, torch.arange(11), torch.device("cpu"))
        json.dump({{"out": out.flatten().tolist(), "seen": seen}},
                  open(r"{tmp_path}/rank%d.json" % dist.get_rank(), "w"))
        dist.destroy_process_group()
    """))
    _torchrun(str(worker), timeout=120)
    for rank, size in ((0, 6), (1, 5)):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["out"] == [2.0 * i for i in range(11)]  # every rank holds all rows, in order
        assert got["seen"] == [size]  # and computed only its own shard


@pytest.mark.parametrize("experiment, tolerance", [
    ("vit.pooling", 1e-4),  # linear probes on gathered features: the same global batches
    ("vae.train", 0.05),  # each rank draws its own reparameterisation noise: close, not equal
])
@pytest.mark.slow
def test_training_under_torchrun_matches_the_single_process_run(tmp_path, experiment, tolerance):
    args = ["run", experiment, "--preset", "smoke"]
    assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = _torchrun("-m", "atml", *args, "--out", str(tmp_path / "two"), TMPDIR=str(scratch))
    assert list(scratch.glob("atml-*")) == []  # rank 1's private scratch folders are removed when its run ends
    (one,), (two,) = list((tmp_path / "one").iterdir()), list((tmp_path / "two").iterdir())
    assert done.stdout.strip().splitlines()[-1] == str(two)  # printed once, by rank 0
    single, double = _rows(one), _rows(two)
    assert [(r["stage"], r["epoch"], r["phase"]) for r in single] == [(r["stage"], r["epoch"],
                                                                       r["phase"]) for r in double]
    for a, b in zip(single, double):
        assert abs(a["loss"] - b["loss"]) <= tolerance * max(1.0, abs(a["loss"])), (a, b)
    results = json.loads((two / "results.json").read_text())
    assert results["status"] == "ok"

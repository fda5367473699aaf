import json
import os
import subprocess
import sys

import pytest

from atml import cli

CELLS = "cells=[pretrained:head,random:full]"


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_transfer_grid_smoke(tmp_path):
    assert cli.main(["run", "resnet.transfer", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    cells = {c["cell"]: c for c in results["data"]["cells"]}
    assert set(cells) == {f"{i}:{r}" for i in ("pretrained", "random") for r in ("head", "last", "full")}
    assert cells["pretrained:head"]["trainable_params"] == 512 * 10 + 10
    assert cells["pretrained:head"]["trainable_params"] < cells["pretrained:last"]["trainable_params"] \
        < cells["pretrained:full"]["trainable_params"]
    for c in cells.values():
        assert c["time_s"] > 0 and c["images_per_s"] > 0 and c["peak_memory_mb"] > 0
    assert results["sources"]["weights"]["file"].endswith("resnet18-random-as-pretrained.pth")
    assert "random initialisation" in results["sources"]["random_weights"]["description"]
    assert "figures/accuracy_vs_compute.png" in results["figures"]


def test_transfer_refuses_random_as_the_pretrained_side(tmp_path, capsys):
    assert cli.main(["run", "resnet.transfer", "--preset", "smoke", "--weights", "random", "--out", str(tmp_path)]) == 2
    assert "compares pretrained with random" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_match_the_single_process_run(tmp_path):
    """DDP on CPU: the global batches are identical, so the head cell matches exactly and full
    fine-tuning within tolerance (BatchNorm statistics are per rank on gloo)."""
    assert cli.main(["run", "resnet.transfer", "--preset", "smoke", "--set", CELLS, "--out",
                     str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "atml", "run",
           "resnet.transfer", "--preset", "smoke", "--set", CELLS, "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (one,), (two,) = list((tmp_path / "one").iterdir()), list((tmp_path / "two").iterdir())
    assert done.stdout.strip().splitlines().count(str(two)) == 1  # the final line, printed by rank 0 alone
    single, double = _rows(one), _rows(two)
    assert [(r["stage"], r["epoch"], r["phase"]) for r in single] == [(r["stage"], r["epoch"],
                                                                       r["phase"]) for r in double]
    for a, b in zip(single, double):
        tolerance = 1e-4 if a["stage"] == "pretrained_head" else 0.1 * a["loss"]
        assert abs(a["loss"] - b["loss"]) <= tolerance, (a, b)
    results = json.loads((two / "results.json").read_text())
    assert results["status"] == "ok" and "2 process(es)" in results["notes"][0]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["head_pretrained_head.pt",
                                                                       "head_pretrained_head.timing.json",
                                                                       "random_full.pt"]


@pytest.mark.slow
def test_random_init_cells_train_at_the_demo_preset(tmp_path):
    """The demo's random cells stayed at chance (0.20): frozen BatchNorm with a random net's 0/1 statistics."""
    assert cli.main(["run", "resnet.transfer", "--preset", "demo", "--set", "cells=[random:head,random:last]",
                     "--set", "epochs=3", "--set", "pretrain_epochs=1", "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    for cell in results["data"]["cells"]:
        assert cell["problem"] is None, cell
        assert cell["best_val_acc"] > 0.35, cell  # chance is 0.2 (five classes)
    assert any("precise BN" in n for n in results["notes"])


def test_a_stage_at_chance_or_diverging_is_flagged_and_never_ranked():
    from atml.suite.resnet import transfer as resnet_transfer
    from atml.train.stages import training_problem

    def rows(accs, losses):
        return [{"phase": "val", "acc": a, "loss": loss} for a, loss in zip(accs, losses)]

    assert training_problem(rows([0.21, 0.20, 0.22], [1.6, 1.6, 1.6]), 5, 269).startswith(
        "never above chance")
    assert training_problem(rows([0.5, 0.6, 0.55], [1.2, 0.8, 5.0]), 5, 269).startswith(
        "validation loss diverged")
    assert training_problem(rows([0.5, 0.7, 0.8], [1.2, 0.8, 0.6]), 5, 269) is None
    cells = [{"cell": "pretrained:head", "init": "pretrained", "regime": "head", "best_val_acc": 0.8, "time_s": 1.0,
              "trainable_params": 10, "problem": None},
             {"cell": "random:head", "init": "random", "regime": "head", "best_val_acc": 0.99, "time_s": 0.1,
              "trainable_params": 10, "problem": "never above chance (...)"}]
    from atml.results import RunResults

    text = " ".join(resnet_transfer.discuss(RunResults(data={"cells": cells})))
    assert "Most accurate: pretrained:head" in text and "Not compared or ranked" in text
    assert "pretrained 0.800 vs random" not in text

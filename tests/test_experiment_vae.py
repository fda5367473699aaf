"""vae.train, vae.collapse and vae.mitigate end to end at the smoke preset."""

import json

import pytest

from atml import cli


def _run(name, tmp_path, *extra):
    assert cli.main(["run", name, "--preset", "smoke", "--out", str(tmp_path), *extra]) == 0
    (run,) = list(tmp_path.iterdir())
    return run, json.loads((run / "results.json").read_text())


def test_vae_train(tmp_path):
    run, results = _run("vae.train", tmp_path)
    m = results["metrics"]
    assert results["status"] == "ok" and results["preset"] == "smoke"
    assert m["val_loss"] == pytest.approx(m["val_recon"] + m["val_kl"], rel=1e-6)
    assert m["neg_elbo_gaussian_nats"] > m["val_loss"]  # the constant 392 log(pi) is positive
    # known values at seed 0 (2 epochs on generated data: no dimension active yet, little information)
    assert m["active_units"] == 0 and m["mutual_info"] == pytest.approx(0.14, abs=0.05)
    assert m["use_of_x"] < 0.1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len(rows[-1]["kl_per_dim"]) == 20
    assert sum(rows[-1]["kl_per_dim"]) == pytest.approx(rows[-1]["kl"], rel=1e-5)
    assert {"figures/reconstructions.png", "figures/generations.png",
            "figures/loss_curves.pdf"} <= set(results["figures"])
    refs = {r["metric"]: r["status"] for r in results["references"] if r["metric"]}
    assert refs["val_loss"] == "not comparable" and refs["train_loss"] == "not comparable"
    assert "generated" in results["sources"]["data"]["source"]


def test_vae_collapse(tmp_path):
    _, results = _run("vae.collapse", tmp_path)
    m = results["metrics"]
    for prefix in ("baseline_", "kl_heavy_"):
        assert {f"{prefix}active_units", f"{prefix}mutual_info", f"{prefix}use_of_x", f"{prefix}kl_epoch1"} <= m.keys()
    (table,) = results["tables"]
    assert [row[0] for row in table["rows"]] == ["baseline (beta=1)", "KL-heavy (beta=8)"]
    assert len(results["figures"]) == 8


def test_vae_mitigate_ranks_every_mitigation(tmp_path):
    _, results = _run("vae.mitigate", tmp_path, "--set", "epochs=2")
    assert sorted(results["data"]["ranking"]) == sorted(["KL-heavy (beta=8)", "linear warm-up", "cyclical",
                                                 "free bits (0.5 nats)", "aggressive encoder"])
    (table,) = results["tables"]
    assert [row[1] for row in table["rows"]] == ["reference", 1, 2, 3, 4, 5]


def test_vae_refuses_pretrained_weights(tmp_path, capsys):
    assert cli.main(["run", "vae.train", "--preset", "smoke", "--weights", "imagenet", "--out", str(tmp_path)]) == 2
    assert "train from scratch" in capsys.readouterr().err

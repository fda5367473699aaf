"""resnet.head end to end: the smoke preset, and the demo path with a short pretraining."""

import json

import pytest
import yaml

from atml import cli


def _only_run(folder):
    (run,) = list(folder.iterdir())
    return run


def test_smoke_run_folder_is_complete(tmp_path, capsys):
    assert cli.main(["run", "resnet.head", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    run = _only_run(tmp_path)
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run)  # last line: the run folder

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["experiment"] == "resnet.head" and config["preset"] == "smoke" and config["resolutions"] == [16, 32]

    env = json.loads((run / "env.json").read_text())
    assert {"torch", "torchvision", "device", "seed", "commit", "python"} <= env.keys()
    assert "generated" in env["sources"]["data"]["source"] and env["sources"]["weights"]["spec"] == "random"
    notes = json.loads((run / "results.json").read_text())["notes"]
    assert "Random weights: the numbers test the code path only." in notes

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"], r["phase"]) for r in rows] == [
        (s, e, p) for s in ("r16", "r32") for e in (1, 2) for p in ("train", "val")]

    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok" and results["experiment"] == "resnet.head" and results["preset"] == "smoke"
    m = results["metrics"]
    for r in (16, 32):
        train = [x for x in rows if x["stage"] == f"r{r}" and x["phase"] == "train"]
        val = [x for x in rows if x["stage"] == f"r{r}" and x["phase"] == "val"]
        assert m[f"val_acc_{r}"] == val[-1]["acc"] and m[f"best_val_acc_{r}"] == max(x["acc"] for x in val)
        assert train[-1]["loss"] < train[0]["loss"]  # the head learns on the frozen features
        assert m[f"backbone_images_per_s_{r}"] > 0
    assert m["time_s"] > 0 and m["peak_memory_mb"] > 0
    for rel in results["figures"]:
        assert (run / rel).stat().st_size > 1000
    assert {"figures/curves.png", "figures/accuracy_vs_resolution.pdf"} <= set(results["figures"])
    refs = {r["metric"]: r for r in results["references"] if r["metric"]}
    assert refs["val_acc_32"]["status"] == "not comparable" and "preset is 'smoke'" in refs["val_acc_32"]["reason"]
    # each stage's checkpoint, and its times for a resumed run that skips it
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["head_r16.pt", "head_r16.timing.json",
                                                                       "head_r32.pt", "head_r32.timing.json"]
    timing = json.loads((run / "checkpoints" / "head_r32.timing.json").read_text())["records"]
    assert [name for name, _, _ in timing] == ["feature_time_s", "backbone_images_per_s", "head_time_s"]
    assert timing[0][1] == m["feature_time_s_32"]


@pytest.mark.slow
def test_demo_path_pretrains_on_digits_0_4_and_transfers_to_5_9(tmp_path):
    argv = ["run", "resnet.head", "--preset", "demo", "--set", "pretrain_epochs=4", "--set", "epochs=3",
            "--set", "resolutions=[8, 16]", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    run = _only_run(tmp_path)
    results = json.loads((run / "results.json").read_text())
    weights = results["sources"]["weights"]
    assert weights["spec"] == "digits" and "digits 0-4" in weights["description"]
    assert len(weights["sha256"]) == 64
    assert results["sources"]["data"]["classes"] == ["5", "6", "7", "8", "9"]
    assert results["metrics"]["pretrain_val_acc"] > 0.5
    assert results["metrics"]["val_acc_16"] > 0.4  # well above chance (0.2) after 3 epochs
    assert any("digits 0-4" in n for n in results["notes"])

    # A second run reuses the cached backbone instead of pretraining again.
    assert cli.main(argv) == 0
    second = [p for p in tmp_path.iterdir() if p != run][0]
    again = json.loads((second / "results.json").read_text())["sources"]["weights"]
    assert again["sha256"] == weights["sha256"]

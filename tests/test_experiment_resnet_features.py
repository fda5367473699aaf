import json

import pytest

from atml import cli


@pytest.mark.slow
def test_features_smoke(tmp_path):
    assert cli.main(["run", "resnet.features", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    m = results["metrics"]
    for depth in ("early", "middle", "late"):
        for key in ("knn_acc", "probe_acc", "silhouette", "compare_knn_acc", "tsne_knn_acc", "umap_silhouette"):
            name = f"{key}_{depth}"
            assert name in m, name
    assert 0 <= m["cka_early_late"] <= 1
    # generated classes are colour templates: every depth separates them far above chance (0.1)
    assert min(m[f"probe_acc_{d}"] for d in ("early", "middle", "late")) > 0.8
    confusion = results["data"]["confusion"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == results["data"]["samples"]
    assert 30 <= results["data"]["samples"] <= 50  # at most 5 per class of the 60 generated validation images
    assert {"figures/embeddings.png", "figures/cka.png", "figures/confusion_late_probe.png"} <= set(results["figures"])
    env = json.loads((run / "env.json").read_text())
    assert "resnet18" in env["sources"]["compare_weights"]["description"]
    # random weights, as in every family: the caveat, and no conclusion about what layers learn
    assert "Random weights: the numbers test the code path only." in results["notes"]
    from atml.reporting.build import discuss
    from atml.results import RunResults
    from atml.suite import registry

    said = " ".join(discuss(registry().get("resnet.features"), RunResults.from_json(results)))
    assert "later layers separate the classes better" not in said and "random weights" in said, said


@pytest.mark.slow
def test_long_analysis_steps_say_what_they_are_doing(tmp_path, capsys):
    assert cli.main(["run", "resnet.features", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for step in ("resnet50: features of", "k-NN, linear probes and silhouette per depth", "t-SNE (",
                 "resnet18: k-NN"):
        assert "[resnet.features] " in out and step in out, step

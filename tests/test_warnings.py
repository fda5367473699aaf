"""Numbers from fewer samples than they need carry a visible warning; counts in notes are the counts used."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atml import cli
from atml.analysis import generative
from atml.suite.gan import dcgan


def _results(tmp_path, *argv):
    out = tmp_path / "runs"
    assert cli.main(["run", *argv, "--out", str(out)]) == 0
    (run,) = list(out.iterdir())
    return run, json.loads((run / "results.json").read_text())


def test_a_small_mutual_information_set_is_a_warning_shown_in_the_report(tmp_path):
    run, results = _results(tmp_path, "vae.train", "--preset", "smoke", "--set", "epochs=1", "--set",
                            "diag_samples=1000")
    n = min(1000, results["sources"]["data"]["val"])
    assert any(f"estimated on {n} validation images" in note for note in results["notes"])  # the count used
    assert any(f"cannot exceed log {n}" in w for w in results["warnings"])
    assert cli.main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert "**Read with care:** I(x; z) was estimated on" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.slow
def test_feature_counts_in_notes_are_the_counts_used(tmp_path):
    _, results = _results(tmp_path, "resnet.features", "--preset", "smoke", "--set", "per_class=100")
    note = next(n for n in results["notes"] if "validation images (" in n)
    assert "100 asked for, the split has no more" in note and "100 per class)" not in note
    assert any("k-NN (k=5)" in w for w in results["warnings"])


def test_frechet_distance_from_fewer_images_than_dimensions_is_a_warning():
    assert dcgan.sample_warnings(4, 128, {}) and "4 generated with 4 validation" in dcgan.sample_warnings(4, 128, {})[0]
    assert dcgan.sample_warnings(500, 128, {}) == []
    assert "biased upwards" in dcgan.sample_warnings(500, 128, {"inception_fid": 30.0})[0]


def test_class_entropy_of_one_class_prints_zero_not_minus_zero():
    _, entropy = generative.class_histogram(np.zeros(8, dtype=int), 10)
    assert f"{entropy:.2f}" == "0.00"

"""DCGAN: networks, one training step, metrics against closed forms, the experiment end to end."""

import json

import numpy as np
import pytest
import torch

from atml import cli
from atml.analysis import generative
from atml.errors import DivergedError
from atml.models import factory
from atml.models.gan import DCGAN
from atml.train import gan_recipe


def test_shapes_and_ranges():
    model = DCGAN(latent_dim=100, width=16)
    images = model.sample(5)
    assert images.shape == (5, 1, 28, 28) and images.min() >= -1 and images.max() <= 1
    assert model.discriminator(images).shape == (5,)


def test_one_training_step_changes_both_networks():
    torch.manual_seed(0)
    model = DCGAN(width=8).train()
    optim = gan_recipe.optimizer(model, 2e-4, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = gan_recipe.GANStep(optim, factory.create("dcgan", family="gan").preprocess)
    out = step(model, (torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8),))
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"generator", "discriminator"} and out.optimized
    assert {"loss_d", "d_real", "d_fake", "grad_norm_g", "grad_norm_d"} <= out.metrics.keys()


def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert generative.frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    d1, d2 = generative.frechet_distance(x, x + 1), generative.frechet_distance(x, x + 2)
    assert d1 == pytest.approx(8, rel=1e-6) and d2 == pytest.approx(32, rel=1e-6) and d2 > d1 > 0


def test_precision_recall_and_histogram_detect_mode_collapse():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 2))
    collapsed = rng.normal(scale=0.05, size=(400, 2))  # every sample near one mode
    precision, recall = generative.precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.3
    _, entropy = generative.class_histogram(np.zeros(100, dtype=int), 10)
    _, uniform = generative.class_histogram(np.arange(100) % 10, 10)
    assert entropy == 0 and uniform == pytest.approx(1)


def test_guard_stops_when_the_discriminator_wins_outright():
    guard = gan_recipe.DiscriminatorWinsGuard(threshold=0.02, patience=2)
    won = {"train": {"d_real": 0.995, "d_fake": 0.003}}
    guard.on_epoch_end(1, won)
    guard.on_epoch_end(2, {"train": {"d_real": 0.7, "d_fake": 0.3}})  # recovered: strikes reset
    guard.on_epoch_end(3, won)
    with pytest.raises(DivergedError, match="discriminator won outright at epoch 4"):
        guard.on_epoch_end(4, won)


def test_dcgan_smoke(tmp_path):
    assert cli.main(["run", "gan.dcgan", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    m = results["metrics"]
    # two smoke epochs: generated images are much farther from the real ones than two real halves are
    assert m["fd_cnn"] > 10 * m["fd_cnn_floor"] > 0
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and 0 <= m["class_entropy"] <= 1
    assert {"figures/samples_epoch_001.png", "figures/samples_epoch_002.png", "figures/gan_curves.png",
            "figures/class_histogram.png"} <= set(results["figures"])
    assert any("Not Inception FID" in n for n in results["notes"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} == {"fd_classifier", "gan"}


@pytest.mark.slow
def test_diverging_run_is_reported_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    # A frozen generator (learning rate 0) lets the discriminator win outright within a few epochs.
    code = cli.main(["run", "gan.dcgan", "--preset", "smoke", "--set", "epochs=12", "--set", "g_lr_scale=0",
                     "--set", "d_win_threshold=0.1", "--out", str(tmp_path)])
    (run,) = list(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    assert code == 4 and results["status"] == "failed" and "won outright" in results["error"]
    assert "won outright" in capsys.readouterr().err
    kept = torch.load(run / "checkpoints" / "gan.pt", weights_only=True)
    assert 1 <= kept["epoch"] < 12


def _random_inception_file(tmp_path):
    """torch-fidelity's Inception-v3 architecture with random weights, saved under the published naming
    scheme (name-<sha256 prefix>.pth) so the production path verifies and loads it."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as fe

    from atml.storage import sha256sum

    with mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None), \
            mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}):
        state = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    path = tmp_path / "inception.pth"
    torch.save(state, path)
    named = tmp_path / f"weights-inception-random-{sha256sum(path)[:8]}.pth"
    path.rename(named)
    return named


@pytest.mark.slow
def test_inception_fid_kid_through_verified_local_weights(tmp_path):
    weights = _random_inception_file(tmp_path)
    out = tmp_path / "runs"
    assert cli.main(["run", "gan.dcgan", "--preset", "smoke", "--set", "eval_samples=16", "--set",
                     f"inception={weights}", "--out", str(out)]) == 0
    (run,) = list(out.iterdir())
    results = json.loads((run / "results.json").read_text())
    m = results["metrics"]
    assert m["inception_fid"] >= 0 and "inception_kid" in m and "inception_kid_std" in m
    assert results["sources"]["inception_weights"]["file"] == str(weights)
    assert any("inception-v3-compat" in n and "16 generated" in n for n in results["notes"])


def test_inception_is_skipped_offline_without_weights(tmp_path):
    assert cli.main(["run", "gan.dcgan", "--preset", "smoke", "--set", "inception=auto", "--offline",
                     "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    assert "inception_fid" not in results["metrics"]
    assert any("Inception FID/KID: not computed" in n for n in results["notes"])


def test_frechet_distance_refuses_a_square_root_with_a_large_imaginary_part():
    """pytorch-fid's rule: a non-negligible imaginary part means no distance, not a silently dropped one."""
    import numpy as np

    from atml.analysis import generative

    mu = np.zeros(2)
    not_psd = np.array([[0.0, 1.0], [1.0, 0.0]])  # eigenvalues +1 and -1: its square root is complex
    with pytest.raises(generative.InvalidMetric, match="imaginary part"):
        generative.frechet_from_statistics(mu, not_psd, mu, np.eye(2))
    assert generative.frechet_from_statistics(mu, np.eye(2), mu + 1, np.eye(2)) == pytest.approx(2.0)


def test_the_frechet_floor_uses_two_held_out_halves(tmp_path):
    code = cli.main(["run", "gan.dcgan", "--preset", "smoke", "--set", "epochs=1", "--out", str(tmp_path)])
    (run,) = list(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    m = results["metrics"]
    assert code == 0 and "fd_cnn_floor" in m and "fd_cnn_real_train_vs_val" not in m
    assert m["eval_samples"] == 50  # the smoke split's 100 validation images, in two halves of 50
    assert any("half B" in n and "50 other validation images" in n for n in results["notes"])

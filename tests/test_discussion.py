"""Every sentence under "What the numbers show" follows from the numbers: contrary numbers, other sentences."""

from __future__ import annotations

import types

import matplotlib.colors
import pytest

from atml.models import factory
from atml.results import Metric, Metrics, Results, RunResults
from atml.suite.clip import align as clip_align
from atml.suite.clip import gap as clip_gap
from atml.suite.vae import collapse as vae_collapse
from atml.suite.vae import common as vae_exp
from atml.suite.vae import train as vae_train


def _records(values: dict[tuple[str, tuple], float]) -> Metrics:
    """``{(name, ((condition key, value), ...)): value}`` as records."""
    return Metrics(Metric(name, value, condition=dict(condition)) for (name, condition), value in values.items())


def _collapse_metrics(baseline_mi: float, heavy_mi: float, kl1: tuple[float, float] = (5.0, 1.0)) -> Metrics:
    values = {}
    for setting, mi, kl_first in (("baseline", baseline_mi, kl1[0]), ("kl_heavy", heavy_mi, kl1[1])):
        on = (("setting", setting),)
        values.update({("mutual_info", on): mi, ("kl", on): 10.0 if mi > 1 else 0.1,
                       ("active_units", on): 20 if mi > 1 else 0, ("use_of_x", on): 0.5 if mi > 1 else 0.0,
                       ("kl_epoch1", on): kl_first})
    return _records(values)


def _collapse_text(m: Metrics) -> str:
    return " ".join(vae_collapse.discuss(RunResults(metrics=m, data={"latent_dim": 20})))


def test_the_cause_of_collapse_is_claimed_only_when_the_numbers_isolate_it():
    only_heavy = _collapse_text(_collapse_metrics(4.0, 0.1))
    assert "collapse comes from the objective's weighting" in only_heavy
    both = _collapse_text(_collapse_metrics(0.1, 0.1))
    assert "collapse comes from the objective's weighting" not in both and "Both runs collapsed" in both
    neither = _collapse_text(_collapse_metrics(4.0, 3.0))
    assert "Neither run collapsed" in neither and "weighting" not in neither


def test_the_early_kl_sentence_follows_the_first_epoch():
    pushed = _collapse_text(_collapse_metrics(4.0, 0.1, kl1=(5.0, 1.0)))
    assert "lower from the start" in pushed
    not_pushed = _collapse_text(_collapse_metrics(4.0, 0.1, kl1=(1.0, 5.0)))
    assert "not lower" in not_pushed and "pushed towards q(z|x) = p(z)" not in not_pushed


def test_the_prior_sentence_explains_only_what_was_seen():
    assert "heavier tails" in vae_train._prior_sentence(0.3, 0.2)
    fewer = vae_train._prior_sentence(0.2, 0.3)
    assert "vary less" in fewer and "heavier tails reach" not in fewer


GAP_CONDITIONS = {"test_acc_photo": ("test_acc", (("prompt_set", "photo"),)),
                  "test_acc_photo_gap_closed": ("test_acc", (("prompt_set", "photo"), ("embeddings", "gap closed"))),
                  "random_init_centroid_distance": ("centroid_distance", (("model", "random init"),)),
                  "random_init_paired_cosine": ("paired_cosine", (("model", "random init"),))}


def _gap(**overrides: float) -> Metrics:
    m = {"centroid_distance": 0.8, "paired_cosine": 0.3, "image_image_cosine": 0.7, "text_text_cosine": 0.8,
         "gap_variance_share": 0.4, "image_norm": 10.0, "text_norm": 8.0, "test_acc_photo": 0.80,
         "test_acc_photo_gap_closed": 0.805, "random_init_centroid_distance": 1.2, "random_init_paired_cosine": 0.1}
    return _records({GAP_CONDITIONS.get(k, (k, ())): v for k, v in {**m, **overrides}.items()})


def _gap_text(**overrides: float) -> str:
    return " ".join(clip_gap.discuss(RunResults(metrics=_gap(**overrides))))


def test_gap_sentences_change_with_contrary_numbers():
    assert "two separate cones" in _gap_text()
    assert "no separate cones" in _gap_text(paired_cosine=0.9)
    assert "difference of directions" in _gap_text()
    assert "nearly coincide" in _gap_text(centroid_distance=0.02)
    assert "ranking zero-shot relies on survives" in _gap_text()
    moved = _gap_text(test_acc_photo_gap_closed=0.70)
    assert "survives" not in moved and "-10.0 points" in moved
    assert "exists before any training" in _gap_text()
    assert "appears with training" in _gap_text(random_init_centroid_distance=0.05)


def test_align_sentences_do_not_assume_an_improvement():
    def align(residual_after: float, centroid_after: float) -> str:
        before, after = (("when", "before"),), (("when", "after"),)
        m = _records({("orthogonality_error", ()): 1e-12,
                      ("residual", (("split", "test"), *before)): 0.9,
                      ("residual", (("split", "test"), *after)): residual_after,
                      ("centroid_distance", before): 0.5, ("centroid_distance", after): centroid_after,
                      ("acc", (("prompt_set", "photo"), *before)): 0.6,
                      ("acc", (("prompt_set", "photo"), *after)): 0.55,
                      ("acc", (("prompt_set", "cifar18"), *before)): 0.9,
                      ("acc", (("prompt_set", "cifar18"), *after)): 0.9})
        return " ".join(clip_align.discuss(RunResults(metrics=m)))

    better = align(0.7, 0.3)
    assert "and cuts the test residual" in better and "distance falls" in better
    worse = align(1.1, 0.6)
    assert "does not cut" in worse and "does not fall" in worse


def test_kl_bars_carry_their_own_dimensions_activity_colour():
    """Sorting KL and activity separately gave a bar another dimension's colour."""
    diag = {"kl_per_dim": [0.1, 3.0, 2.0, 0.01], "mu_variance_per_dim": [0.5, 0.001, 0.2, 0.0],
            "active_units": 2}
    run = types.SimpleNamespace(diag=diag, variant=types.SimpleNamespace(name="v"))
    fig = vae_exp.kl_per_dim_bars([run])
    bars = fig.axes[0].patches
    heights = [b.get_height() for b in bars]
    assert heights == [3.0, 2.0, 0.1, 0.01]  # dimensions 1, 2, 0, 3
    active = [matplotlib.colors.to_hex(b.get_facecolor()) == matplotlib.colors.to_hex(vae_exp.ACTIVE_COLOUR)
              for b in bars]
    assert active == [False, True, True, False]  # dimension 1 is inactive although its KL is the largest


@pytest.mark.parametrize("arch", ["digits-resnet-small"])
def test_an_arch_without_a_default_ablation_says_which_blocks_can_be(arch):
    from atml.errors import UsageError
    from atml.models import resnet

    model = factory.create(arch, "random", family="cnn", num_classes=5).model
    with pytest.raises(UsageError, match=r"no shape-preserving block in layer2, layer3, layer4.*with blocks=\[...\]"):
        resnet.default_ablation(model)


def test_each_experiment_reads_its_data_back_as_its_own_dataclass():
    from atml.suite.resnet import transfer
    from atml.suite.vae import mitigate

    out = Results()
    out.keep(mitigate.Data(ranking=["free bits (0.5 nats)", "cyclical"], untreated="KL weight 1"))
    back = RunResults.from_json({"schema": 2, "records": [], "data": out.data})
    assert back.read(mitigate.Data) == mitigate.Data(["free bits (0.5 nats)", "cyclical"], "KL weight 1")
    with pytest.raises(KeyError, match="no cells"):
        back.read(transfer.Data)  # a field without a default that the run does not hold is named
    with pytest.raises(TypeError, match="dataclass"):
        out.keep({"ranking": []})

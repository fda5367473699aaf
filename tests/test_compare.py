"""Models side by side: CKA checked against closed forms, the layers it reads, and both experiments end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import atml
from atml import cli
from atml import config as config_lib
from atml.analysis import cka
from atml.analysis.representation import linear_cka
from atml.errors import UsageError
from atml.models import factory
from atml.models import layers as layers_lib
from atml.suite import registry
from atml.suite.compare import probe


def _features(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 40, generator=g)
    y = torch.tanh(x @ torch.randn(40, 30, generator=g) + 0.5 * torch.randn(n, 30, generator=g))
    return x, y


def _hsic_by_definition(k: np.ndarray, m: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, written out with explicit ones vectors."""
    n = len(k)
    k, m = k - np.diag(np.diag(k)), m - np.diag(np.diag(m))
    one = np.ones(n)
    return float((np.trace(k @ m) + (one @ k @ one) * (one @ m @ one) / ((n - 1) * (n - 2))
                  - 2 / (n - 2) * (one @ k @ m @ one)) / (n * (n - 3)))


def test_unbiased_hsic_matches_its_definition():
    x, y = _features(40)
    k, m = cka.gram(x), cka.gram(y)
    assert float(cka.hsic_unbiased(k, m)) == pytest.approx(_hsic_by_definition(k.numpy(), m.numpy()), rel=1e-10)
    with pytest.raises(ValueError, match="at least 4"):
        cka.hsic_unbiased(k[:3, :3], m[:3, :3])


def test_a_representation_against_itself_has_cka_one_on_the_diagonal():
    x, y = _features(64)
    acc = cka.MinibatchCKA(2, 2)
    for batch in range(4):
        part = slice(batch * 16, (batch + 1) * 16)
        acc.update([x[part], y[part]], [x[part], y[part]])
    grid = acc.value()
    assert torch.allclose(torch.diagonal(grid), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(grid, grid.T, atol=1e-12) and 0 < grid[0, 1] < 1


def test_the_minibatch_estimate_matches_the_full_batch_cka_within_a_hundredth():
    x, y = _features(600)
    full = cka.cka(x, y)
    assert abs(cka.cka(x, y, batch_size=100) - full) < 0.01
    assert abs(cka.cka(x, y, batch_size=50) - full) < 0.01
    assert abs(full - linear_cka(x.numpy(), y.numpy())) < 0.05  # the biased estimator: close on 600 samples


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling_of_one_side():
    x, y = (f.double() for f in _features(400))  # float64: the rotation itself must not round (float32: ~1e-8)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    base = cka.cka(x, y, batch_size=100)
    assert cka.cka(x, y @ q, batch_size=100) == pytest.approx(base, abs=1e-9)
    assert cka.cka(x, 3.7 * y, batch_size=100) == pytest.approx(base, abs=1e-9)
    skew = torch.diag(torch.linspace(0.1, 5, 30, dtype=torch.float64))
    assert abs(cka.cka(x, y @ skew, batch_size=100) - base) > 1e-3  # not invariant to any invertible map


def test_the_layers_compared_are_every_residual_block_and_every_transformer_block_in_order():
    resnet = factory.create("digits-resnet", "random", num_classes=5).model
    names = list(layers_lib.comparable_layers(resnet))
    assert names == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    vit = factory.create("vit-digits", "random").model
    assert list(layers_lib.comparable_layers(vit)) == ["block0", "block1", "block2", "block3"]
    tiny_clip = factory.create("clip-digits", "random").model
    assert len(layers_lib.comparable_layers(tiny_clip)) == 3
    with torch.no_grad(), layers_lib.recorded(vit, layers_lib.comparable_layers(vit)) as out:
        layers_lib.features(vit, vit.preprocess(torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)))
    assert [tuple(v.shape) for v in out.values()] == [(5, 96)] * 4  # patch tokens averaged: one vector per image
    maps = torch.randn(2, 8, 4, 4)
    assert torch.allclose(layers_lib.pool(maps, 0), maps.mean(dim=(2, 3)))
    tokens = torch.randn(2, 5, 6)
    assert torch.allclose(layers_lib.pool(tokens, 1), tokens[:, 1:].mean(1))  # the class token left out


def test_probe_scores_separable_features_high_and_shuffled_labels_near_chance():
    g = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    feats = g.normal(size=(240, 16)) + 4 * np.eye(4, 16)[labels]
    train, val = np.arange(240) % 2 == 0, np.arange(240) % 2 == 1
    acc, knn = probe.scores(feats[train], labels[train], feats[val], labels[val], 1.0, 0)
    assert acc > 0.95 and knn > 0.95
    shuffled = g.permutation(labels)
    acc, knn = probe.scores(feats[train], shuffled[train], feats[val], shuffled[val], 1.0, 0)
    assert acc < 0.5 and knn < 0.5


@pytest.mark.parametrize(("experiment", "item", "match"), [
    ("compare.cka", "models=[vit-digits]", "compare.cka compares two models"),
    ("compare.cka", "batch_size=2", "at least 4 images per batch"),
    ("compare.probe", "models=[vit-digits,vit-digits]", "lists vit-digits more than once"),
    ("compare.probe", "models=[resnet152@digits]", "weights=digits needs arch=digits-resnet"),
    ("compare.probe", "models=[nosuchnet]", "'nosuchnet' is not a model atml knows"),
    ("compare.probe", "models=[vit-digits@]", "ends with @"),
])
def test_bad_model_lists_are_refused_in_one_line(experiment, item, match):
    exp = registry().get(experiment)
    with pytest.raises(UsageError, match=match):
        config_lib.build(exp.config_cls, exp.presets, "smoke", [item])


def test_cka_runs_end_to_end_and_draws_three_labelled_heatmaps(tmp_path, capsys):
    code = cli.main(["run", "compare.cka", "--preset", "smoke", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    folder = next(tmp_path.glob("compare.cka-smoke-*"))
    results = json.loads((folder / "results.json").read_text())
    data = results["data"]
    assert data["models"] == ["digits-resnet-small", "vit-digits"] and len(data["layers_b"]) == 4
    self_a = np.array(data["self_a"])
    assert np.allclose(np.diag(self_a), 1) and np.allclose(self_a, self_a.T)
    assert np.array(data["cross"]).shape == (len(data["layers_a"]), 4)
    assert data["images"] == 48 and any(f.endswith("cka_heatmaps.png") for f in results["figures"])
    from atml.suite.compare.cka import heatmaps

    fig = heatmaps("A", "B", data["layers_a"], data["layers_b"], np.array(data["cross"]), self_a,
                   np.array(data["self_b"]))
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3 and panels[1].get_xlabel() == "B layer" and panels[0].get_ylabel() == "A layer"
    assert panels[2].get_ylabel() == "B layer" and not panels[1].get_yticks().size  # rows shared with panel 1
    assert [t.get_text() for t in panels[2].get_xticklabels()][:1] == ["block0"]


def test_probe_runs_from_python_with_a_model_list_and_ranks_the_models():
    run = atml.run("compare.probe", "smoke", models=["vit-digits", "digits-resnet-small"])
    assert run.status == "ok"
    ranking = run.results.data["ranking"]
    assert sorted(ranking) == ["digits-resnet-small", "vit-digits"]
    accs = [run.metrics.value("probe_acc", model=m) for m in ranking]
    assert accs == sorted(accs, reverse=True)
    assert run.metrics.value("feature_dim", model="vit-digits") == 96
    assert run.tables[0].columns[:3] == ["model", "weights", "probe acc"]


class _PatchModel(torch.nn.Module):
    """Class 1's logit is the brightness of the top-left patch of a 2 x 2 grid: only that patch matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signal = x[:, :, :4, :4].mean((1, 2, 3)) * 10
        return torch.stack([-signal, signal], 1)


def test_deletion_and_insertion_reward_the_map_that_points_at_what_the_model_uses():
    from atml.analysis import saliency as sal

    model = _PatchModel()
    x = torch.ones(3, 3, 8, 8)
    fill = torch.zeros(1, 3, 1, 1)
    target = torch.ones(3, dtype=torch.long)
    right = torch.zeros(3, 8, 8)
    right[:, :4, :4] = 1  # the patch the model reads
    wrong = 1 - right

    def predict(batch: torch.Tensor) -> torch.Tensor:
        return model(batch).softmax(-1)

    good = [sal.auc(c).mean() for c in sal.curves(predict, x, sal.patch_scores(right, 2), target, 2, fill)]
    bad = [sal.auc(c).mean() for c in sal.curves(predict, x, sal.patch_scores(wrong, 2), target, 2, fill)]
    assert good[0] < bad[0] and good[1] > bad[1]  # deletion lower, insertion higher for the faithful map
    assert float(sal.auc(torch.tensor([[1.0, 0.5, 0.0]]))[0]) == pytest.approx(0.5)
    ramp = torch.arange(64.0).view(1, 8, 8).expand(3, -1, -1)
    assert np.allclose(sal.rank_correlation(ramp, 2 * ramp + 1), 1)
    assert np.allclose(sal.rank_correlation(ramp, -ramp), -1)


def test_the_sanity_check_re_initialises_only_the_top_layers():
    from atml.suite.compare.saliency import Explained, randomised

    built = factory.create("digits-resnet", "random", num_classes=5, keep_head=False)
    explained = Explained(built.model, torch.nn.Linear(built.model.num_features, 5))
    scrambled = randomised(explained, seed=1)
    before, after = dict(explained.named_parameters()), dict(scrambled.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith(("model.body.layer4", "head.")) for n in changed)
    assert any(n.startswith("head.") for n in changed) and any(n.startswith("model.body.layer4") for n in changed)


def test_score_cam_holds_one_image_of_masked_copies_at_a_time_and_gives_the_batched_maps(monkeypatch):
    """pytorch-grad-cam's Score-CAM multiplies the whole batch by every channel's mask at once (batch x channels x
    3 x H x W floats: 39 GB for 32 ImageNet images through ResNet-152, an OS kill on a 24 GB machine); atml hands
    it one image at a time, with the same maps."""
    from pytorch_grad_cam import ScoreCAM

    from atml.suite.compare.saliency import Explained, cam_maps, target_layer

    built = factory.create("digits-resnet-small", "random", num_classes=5, keep_head=False)
    explained = Explained(built.model, torch.nn.Linear(built.model.num_features, 5)).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 3, 1])
    seen: list[int] = []
    weights = ScoreCAM.get_cam_weights

    def spy(self, input_tensor, *args):
        seen.append(len(input_tensor))
        return weights(self, input_tensor, *args)
    monkeypatch.setattr(ScoreCAM, "get_cam_weights", spy)
    maps = cam_maps("scorecam", explained, target_layer(built.model), None, x, target, scorecam_batch=64)
    assert seen == [1, 1, 1]
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with ScoreCAM(model=explained, target_layers=[target_layer(built.model)]) as cam:  # the library on the batch
        batched = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    assert maps.shape == (3, 32, 32)
    assert torch.allclose(maps, torch.from_numpy(batched).float(), atol=1e-5)


@pytest.mark.slow
def test_saliency_runs_end_to_end_for_a_cnn_and_a_vit_and_scores_every_method(tmp_path, capsys):
    code = cli.main(["run", "compare.saliency", "--preset", "smoke", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((next(tmp_path.glob("compare.saliency-smoke-*")) / "results.json").read_text())
    methods = results["data"]["methods"]
    assert methods["digits-resnet-small"] == ["gradcam", "gradcam++", "scorecam", "random"]
    assert methods["vit-digits"] == ["gradcam", "gradcam++", "scorecam", "cls_attention", "rollout", "random"]
    records = {(r["name"], r["condition"]["model"], r["condition"]["method"]) for r in results["records"]
               if "method" in r.get("condition", {})}
    for model, names in methods.items():
        for method in names:
            assert ("deletion_auc", model, method) in records and ("insertion_auc", model, method) in records
            assert (("sanity_rank_corr", model, method) in records) == (method != "random")
    assert sum(f.endswith(".png") for f in results["figures"]) == 3  # two map grids and the curves


def test_saliency_refuses_a_model_that_is_not_a_classifier():
    exp = registry().get("compare.saliency")
    with pytest.raises(UsageError, match="clip-digits is not a CNN or a ViT"):
        config_lib.build(exp.config_cls, exp.presets, "smoke", ["models=[clip-digits]"])


def test_saliency_explains_your_own_images_of_any_size(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i, size in enumerate([(40, 30), (64, 64), (50, 80)]):
        Image.fromarray(g.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    argv = ["run", "compare.saliency", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--set",
            "models=[vit-digits]", "--set", f"images=[{folder}]"]
    assert cli.main(argv) == 3 and "broken.png" in capsys.readouterr().err  # a data error, named
    assert cli.main([*argv, "--set", "skip_bad_images=true"]) == 0, capsys.readouterr().err
    done = sorted((tmp_path / "runs").glob("compare.saliency-smoke-*"))[-1]  # the first, refused run is kept too
    results = json.loads((done / "results.json").read_text())
    assert results["status"] == "ok" and any("3 of your images" in n for n in results["notes"])
    assert any("broken.png" in n for n in results["notes"])
    assert results["sources"]["data"]["name"] == "your images"
    assert {r["condition"]["method"] for r in results["records"] if r["name"] == "deletion_auc"} == {
        "gradcam", "gradcam++", "scorecam", "cls_attention", "rollout", "random"}


@pytest.mark.parametrize("grid", [5, 7])
def test_a_patch_is_scored_over_exactly_the_pixels_it_removes_and_the_aucs_match_a_disjoint_block_loop(grid):
    """32 px does not divide into 5 or 7 patches: the score window of each patch must be the very pixels that
    deletion and insertion remove for it (adaptive pooling's overlapping windows ranked other pixels)."""
    from atml.analysis import saliency as sal

    g = torch.Generator().manual_seed(grid)
    maps = torch.rand(6, 32, 32, generator=g)
    x = torch.rand(6, 3, 32, 32, generator=g)
    sentinel = torch.full((1, 3, 1, 1), -7.0)
    everything = torch.arange(grid * grid).expand(1, -1)
    pixels = []  # the pixels fill_masked removes for each patch, found by removing it alone
    for p in range(grid * grid):
        keep = everything[everything != p].view(1, -1)
        pixels.append(sal.fill_masked(x[:1], keep, grid, sentinel)[0, 0] == -7.0)
    assert torch.stack(pixels).sum(0).eq(1).all()  # the patches tile the image
    reference = torch.stack([maps[:, mask].mean(1) for mask in pixels], 1)
    assert torch.allclose(sal.patch_scores(maps, grid), reference, atol=1e-6)

    weights = torch.randn(3 * 32 * 32, 4, generator=g)

    def predict(batch: torch.Tensor) -> torch.Tensor:
        return (batch.flatten(1) @ weights / 30).softmax(-1)

    target = torch.zeros(6, dtype=torch.long)
    fill = torch.zeros(1, 3, 1, 1)
    deletion, insertion = sal.curves(predict, x, sal.patch_scores(maps, grid), target, grid, fill)
    ref_d, ref_i = [], []
    for b in range(6):
        order = reference[b].argsort(descending=True)
        d_row, i_row = [], []
        for k in range(grid * grid + 1):
            removed = torch.zeros(32, 32, dtype=torch.bool)
            for p in order[:k]:
                removed |= pixels[int(p)]
            d_row.append(predict(torch.where(removed, 0.0, x[b])[None])[0, 0])
            i_row.append(predict(torch.where(removed, x[b], 0.0)[None])[0, 0])
        ref_d.append(torch.stack(d_row))
        ref_i.append(torch.stack(i_row))
    assert torch.allclose(sal.auc(deletion), sal.auc(torch.stack(ref_d)), atol=1e-6)
    assert torch.allclose(sal.auc(insertion), sal.auc(torch.stack(ref_i)), atol=1e-6)


def test_the_sanity_value_is_a_number_or_a_stated_reason_never_a_bare_nan(recwarn):
    from atml.analysis import saliency as sal

    value, note = sal.sanity_summary([np.array([np.nan, np.nan])], "gradcam", "m")
    assert value is None and "gradcam" in note and "constant" in note
    value, note = sal.sanity_summary([np.array([0.5, np.nan]), np.array([0.25])], "gradcam", "m")
    assert value == pytest.approx(0.375) and "2 of 3" in note
    value, note = sal.sanity_summary([np.array([0.5])], "gradcam", "m")
    assert value == 0.5 and note is None
    assert not [w for w in recwarn if "empty slice" in str(w.message)]


def test_saliency_runs_the_methods_chosen_with_a_bar_each_and_estimates_score_cam_up_front(tmp_path, capsys):
    run = atml.run("compare.saliency", "smoke", out=tmp_path, progress=True, limit=4, shown=0,
                   methods=["gradcam", "scorecam"])
    assert run.results.data["methods"] == {"digits-resnet-small": ["gradcam", "scorecam", "random"],
                                                  "vit-digits": ["gradcam", "scorecam", "random"]}
    said = capsys.readouterr()
    text = said.out + said.err
    assert "scorecam runs one forward per channel of its target layer (512) for each image" in text, text[-3000:]
    assert "4,096 image forwards" in text and "(96) for each image" in text and "on this device" in text
    for bar in ("digits-resnet-small gradcam", "digits-resnet-small scorecam", "vit-digits random"):
        assert bar in said.err, bar


@pytest.mark.parametrize("methods, message", [(["gradcam", "lime"], "methods: lime not known; valid: gradcam"),
                                              (["rollout"], "gives digits-resnet-small no method to score")])
def test_saliency_methods_are_checked_against_each_model(methods, message):
    exp = registry().get("compare.saliency")
    with pytest.raises(UsageError, match=message):
        config_lib.build(exp.config_cls, exp.presets, "smoke", [f"methods={methods}".replace("'", "")])


def test_scorecam_batches_fill_a_share_of_the_free_gpu_memory_and_keep_64_on_a_cpu():
    from atml.suite.compare.saliency import CPU_SCORECAM_BATCH, SCORECAM_SHARE, ScoreCamCost, scorecam_batch

    image = torch.zeros(3, 224, 224)
    cpu = ScoreCamCost(channels=2048, seconds=0.1, forward_bytes=None, free_bytes=None)
    assert scorecam_batch(0, cpu, image) == CPU_SCORECAM_BATCH == 64
    assert scorecam_batch(16, cpu, image) == 16  # a batch the user set is kept
    gpu = ScoreCamCost(channels=2048, seconds=0.01, forward_bytes=20 * 2**20, free_bytes=80 * 2**30)
    masks = 2048 * 4 * 224 * 224 * 4  # every channel's mask and masked copy, made before the forwards
    expected = int((SCORECAM_SHARE * 80 * 2**30 - masks) // (20 * 2**20 + 3 * 224 * 224 * 4))
    assert scorecam_batch(0, gpu, image) == expected and 500 < expected < 2048
    assert scorecam_batch(0, dataclasses.replace(gpu, channels=384), image) == 384  # never more than the channels
    assert scorecam_batch(0, dataclasses.replace(gpu, free_bytes=2**30), image) == 1  # a full card: one at a time

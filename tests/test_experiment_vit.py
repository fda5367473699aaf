"""The four ViT experiments end to end through the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from atml import cli


def _run(tmp_path, *argv):
    out = tmp_path / "runs"
    assert cli.main(["run", *argv, "--out", str(out)]) == 0
    (run,) = list(out.iterdir())
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok"
    for rel in results["figures"]:
        assert (run / rel).stat().st_size > 1000
    return run, results


def test_classify_smoke_uses_the_sample_photos_at_224(tmp_path):
    run, results = _run(tmp_path, "vit.classify", "--preset", "smoke")
    (table,) = results["tables"]
    assert [r[0] for r in table["rows"] if r[0]] == ["chelsea", "coffee", "astronaut", "rocket"]
    probs = [r[3] for r in table["rows"]]
    assert len(probs) == 4 * 5
    for image in range(4):  # top-5 per photo: ranked, and no more than all the probability there is
        top5 = probs[image * 5:(image + 1) * 5]
        assert top5 == sorted(top5, reverse=True) and sum(top5) <= 1 + 1e-6
    assert any("Random weights" in n for n in results["notes"])
    env = json.loads((run / "env.json").read_text())
    assert env["sources"]["weights"]["spec"] == "random"


def test_classify_user_images_and_a_missing_one(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((300, 200), dtype=np.uint8)).save(folder / "b.jpg")  # grey, portrait
    _, results = _run(tmp_path, "vit.classify", "--preset", "smoke", "--set", f"images=[{folder}]")
    assert [r[0] for r in results["tables"][0]["rows"] if r[0]] == [str(folder / "a.png"), str(folder / "b.jpg")]
    code = cli.main(["run", "vit.classify", "--preset", "smoke", "--set", f"images=[{folder / 'nope.png'}]",
                     "--out", str(tmp_path / "bad")])
    assert code == 3 and "nope.png does not exist" in capsys.readouterr().err
    failed = json.loads(list((tmp_path / "bad").iterdir())[0].joinpath("results.json").read_text())
    assert failed["status"] == "failed" and "nope.png does not exist" in failed["error"]


@pytest.mark.parametrize("experiment", ["vit.classify", "vit.attention"])
def test_a_corrupt_user_image_stops_the_run_or_is_skipped_and_listed(experiment, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    argv = ["run", experiment, "--preset", "smoke", "--set", f"images=[{folder}]", "--set", "count=1"]
    assert cli.main([*argv, "--out", str(tmp_path / "refused")]) == 3
    assert "broken.jpg" in capsys.readouterr().err
    _, results = _run(tmp_path, *argv[1:], "--set", "skip_bad_images=true")
    assert any("1 unreadable image(s) left out" in n and "broken.jpg" in n for n in results["notes"])


def test_attention_smoke_records_per_layer_and_head_numbers(tmp_path):
    _, results = _run(tmp_path, "vit.attention", "--preset", "smoke")
    m = results["metrics"]
    assert m["layers"] == 12 and m["heads"] == 6 and m["grid"] == 14
    assert 0 < m["last_layer_mean_entropy"] <= m["max_entropy_nats"] + 1e-6
    assert {"figures/attention_maps.png", "figures/attention_heads.png", "figures/head_statistics.png"} <= set(
        results["figures"])
    assert len(results["tables"][0]["rows"]) == 6


def test_masking_smoke_on_transformers_backend(tmp_path):
    _, results = _run(tmp_path, "vit.masking", "--preset", "smoke", "--set", "backend=hf")
    m = results["metrics"]
    for fill in ("mean", "zero", "drop"):
        assert m[f"flip_random_{fill}_0"] == 0.0  # nothing masked: nothing flips
        # random weights: the labels are the model's own unmasked top-1, so nothing masked is exactly right
        assert m[f"acc_random_{fill}_0"] == 1.0 and m[f"acc_center_{fill}_0"] == 1.0
        assert m[f"acc_random_{fill}_50"] < 1.0 and f"acc_std_random_{fill}_50" in m
    rows = results["tables"][0]["rows"]
    assert {r[0] for r in rows} == {"random", "center"} and len(rows) == 2 * 2 * 3


@pytest.mark.slow
def test_demo_vit_is_trained_once_then_masking_and_pooling_run_on_it(tmp_path):
    args = ["--preset", "demo", "--set", "train_epochs=2"]
    _, masked = _run(tmp_path / "m", "vit.masking", *args, "--set", "limit=60", "--set", "seeds=2",
                     "--set", "ratios=[0, 0.5]")
    assert any("trained this small ViT" in n for n in masked["notes"])
    assert any("the dataset's labels" in n for n in masked["notes"])
    run, pooled = _run(tmp_path / "p", "vit.pooling", *args, "--set", "epochs=2")
    m = pooled["metrics"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for name in ("cls", "mean"):
        val = [r for r in rows if r["stage"] == name and r["phase"] == "val"]
        assert m[f"val_acc_{name}"] == val[-1]["acc"]
    assert m["val_acc_cls"] != m["val_acc_mean"] or m["val_loss_cls"] != m["val_loss_mean"]  # two probes, two inputs
    assert m["cls_minus_mean_val_acc"] == pytest.approx(m["val_acc_cls"] - m["val_acc_mean"])
    env = json.loads((run / "env.json").read_text())
    assert env["sources"]["weights"]["spec"] == "digits"
    assert "digits5-9" in env["sources"]["data"]["name"]  # probes learn classes the ViT never saw
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["probe_cls.pt", "probe_mean.pt"]


def test_user_images_are_read_upright_at_their_true_grey_levels_and_keyed_by_path(tmp_path):
    """16-bit grey, EXIF orientation, the same name in two folders, subfolders, unreadable files."""
    from PIL import Image

    from atml.errors import DataError
    from atml.suite.vit import common as vit_common

    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "sub").mkdir(parents=True)
    Image.fromarray(np.full((10, 12), 30000, dtype=np.uint16)).save(tmp_path / "a" / "x.png")  # 16-bit, mid grey
    photo = Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8))  # landscape as stored
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees to display": a phone held upright
    photo.save(tmp_path / "b" / "x.jpg", exif=exif)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "b" / "sub" / "y.png")
    images = vit_common.read_images((str(tmp_path / "a"), str(tmp_path / "b")))
    assert sorted(images) == sorted(str(p) for p in (tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg",
                                                     tmp_path / "b" / "sub" / "y.png"))
    grey = images[str(tmp_path / "a" / "x.png")]
    assert grey.shape == (3, 10, 12) and int(grey.float().mean().round()) == round(30000 / 65535 * 255)  # not 255
    assert images[str(tmp_path / "b" / "x.jpg")].shape == (3, 40, 20)  # turned upright
    (tmp_path / "b" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "b" / "sub" / "cut.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(DataError, match=r"cannot read 2 image\(s\): .*broken\.png.*cut\.jpg"):
        vit_common.read_images((str(tmp_path / "b"),))


def test_demo_classifies_user_images_with_the_digits_vit_and_says_so(tmp_path):
    from PIL import Image

    img = tmp_path / "me.png"
    Image.fromarray(np.full((30, 30, 3), 200, dtype=np.uint8)).save(img)
    run, results = _run(tmp_path / "runs", "vit.classify", "--preset", "demo", "--set", "train_epochs=1",
                        "--set", f"images=[{img}]")
    titles = [t["title"] for t in results["tables"]]
    assert any("your images" in t for t in titles)
    rows = next(t for t in results["tables"] if "your images" in t["title"])["rows"]
    assert rows[0][0] == str(img) and rows[0][2] in {"0", "1", "2", "3", "4"}
    notes = " ".join(results["notes"])
    assert "only classes are 0, 1, 2, 3, 4" in notes and "photos were skipped" not in notes
    config = (run / "config.yaml").read_text()
    assert "offline: true" in config  # the demo never downloads


@pytest.mark.parametrize("grid", [8, 14])
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.75])
def test_the_centre_block_masks_the_same_share_as_random_masking(grid, ratio):
    """A square of side round(sqrt(r N)) masked 9 of 64 patches (14%) for a nominal 10%."""
    from atml.suite.vit import masking as vit_exp

    patches = grid * grid
    centre = vit_exp.center_keep(2, grid, ratio)
    random = vit_exp.random_keep(2, patches, ratio, torch.Generator().manual_seed(0))
    assert centre.shape == random.shape == (2, patches - round(ratio * patches))
    masked = sorted(set(range(patches)) - set(centre[0].tolist()))
    rows, cols = (torch.tensor(masked) // grid).float(), (torch.tensor(masked) % grid).float()
    assert abs(rows.mean() - (grid - 1) / 2) <= 0.5 and abs(cols.mean() - (grid - 1) / 2) <= 0.5  # centred


def test_masking_sentences_name_the_share_actually_masked():
    from atml.results import Results, RunResults
    from atml.suite.vit import masking as vit_exp

    r = Results()
    for fill, ratio, acc in (("mean", 0, 1.0), ("mean", 10, 0.9), ("drop", 10, 0.95), ("zero", 10, 0.8)):
        r.add("acc", acc, pattern="random", fill=fill, ratio=ratio)
    r.add("masked_share", 0.0, pattern="random", ratio=0)
    r.add("masked_share", 6 / 64, pattern="random", ratio=10)  # what an 8x8 grid really masks at a nominal 10%
    text = " ".join(vit_exp.discuss(RunResults(metrics=r.metrics)))
    assert "9.4% of the patches masked" in text and "10%" not in text


@pytest.mark.parametrize("experiment", ["vit.classify", "vit.attention"])
def test_an_imagenet_model_reads_the_folder_it_is_given(experiment, tmp_path):
    from atml.data import folder as folder_data

    photos = folder_data.write_folder(tmp_path / "photos", per_class=4)
    run, results = _run(tmp_path, experiment, "--preset", "smoke", "--set", "data=folder", "--data-dir", str(photos),
                        "--set", "arch=timm/vit_tiny_patch16_224", "--set", "input_size=32", "--set", "count=2")
    env = json.loads((run / "env.json").read_text())
    assert env["sources"]["data"]["name"] == "folder:photos" and env["data"]["images"] == 18
    if experiment == "vit.classify":
        assert any("folder:photos: 2 of its 6 validation images classified into ImageNet-1k" in n
                   for n in results["notes"])
        assert "folder" in results["tables"][0]["title"]
    else:
        assert results["metrics"]["stats_images"] == 6  # the folder's validation images, not the sample photos

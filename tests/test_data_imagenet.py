"""ImageNet-1k's validation layout: sorted WordNet IDs as class indices, timm's names, models scored on their own
classes."""

from __future__ import annotations

import json
import shutil

import pytest

from atml import cli
from atml.data import imagenet
from atml.errors import DataError


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory):
    return imagenet.write_val_folder(tmp_path_factory.mktemp("imagenet"), per_class=1)


def test_classes_follow_the_sorted_wordnet_ids_with_timms_names(val_folder):
    read = imagenet.load(val_folder, size=24, progress=False)
    val = read.data.val
    assert len(val) == 1000 and val.images.shape[1:] == (3, 24, 24)
    assert val.labels.tolist() == list(range(1000))  # one image per class, written in sorted-WNID order
    assert val.classes[0].startswith("tench") and val.classes[1].startswith("goldfish")
    assert len(read.data.train) == 0 and "no train/" in read.data.source
    # write_val_folder colours class i by (i, 7i, 13i) mod 256: the pixels match their labels
    assert abs(float(val.images[300, 0].float().mean()) - 300 % 256) < 12
    assert "bicubic" in read.data.source


def test_a_subset_of_wordnet_ids_keeps_their_imagenet_indices_and_says_it_is_a_subset(tmp_path):
    root = imagenet.write_val_folder(tmp_path / "all", per_class=1)
    wnids, _ = imagenet.wnids_and_names()
    keep = {wnids[3], wnids[281], wnids[999], wnids[500]}
    for folder in (root / "val").iterdir():
        if folder.name not in keep:
            shutil.rmtree(folder)
    read = imagenet.load(root, size=16, progress=False)
    assert sorted(read.data.val.labels.tolist()) == [3, 281, 500, 999] and len(read.data.val.classes) == 1000
    assert read.data.subset == "a subset of 4 of ImageNet-1k's 1,000 classes"
    assert any("subset of 4 of ImageNet-1k's 1,000 classes" in n and "not comparable" in n
               for n in read.readiness.notes)


def test_a_published_imagenet_figure_is_not_compared_with_a_run_on_a_subset():
    from atml import references
    from atml.results import Metric, Metrics, RunResults
    from atml.suite.vit import classify

    ref = classify.REFERENCES[0]
    cfg = classify.ClassifyConfig(data="imagenet", arch="deit_small_patch16_224", weights="imagenet")
    whole = RunResults(metrics=Metrics([Metric("val_acc", 0.799, condition={"top_k": 1})]), preset="full",
                       sources={"data": {"name": "imagenet"}})
    assert references.compare(ref, whole, cfg)["status"] == "within"
    part = RunResults(metrics=whole.metrics, preset="full",
                      sources={"data": {"name": "imagenet", "subset": "a subset of 4 of ImageNet-1k's 1,000 classes"}})
    row = references.compare(ref, part, cfg)
    assert row["status"] == "not comparable" and "subset of 4" in row["reason"]


def test_a_foreign_class_folder_is_named(val_folder, tmp_path):
    copy = shutil.copytree(val_folder, tmp_path / "copy")
    (copy / "val" / "cats").mkdir()
    with pytest.raises(DataError, match=r"1 folder\(s\) are not ImageNet-1k WordNet IDs \(cats\)"):
        imagenet.load(copy, size=16, progress=False)
    with pytest.raises(DataError, match=r"val does not exist"):
        imagenet.load(tmp_path, size=16, progress=False)


@pytest.mark.slow
def test_vit_classify_scores_an_imagenet_head_on_its_own_classes(val_folder, tmp_path):
    argv = ["run", "vit.classify", "--preset", "smoke", "--set", "data=imagenet", "--data-dir", str(val_folder),
            "--set", "arch=timm/vit_tiny_patch16_224", "--set", "input_size=32", "--set", "top_k=5",
            "--out", str(tmp_path / "runs")]
    assert cli.main(argv) == 0
    run = next((tmp_path / "runs").iterdir())
    results = json.loads((run / "results.json").read_text())
    records = {(r["name"], r["condition"].get("top_k")): r["value"] for r in results["records"]}
    assert ("val_acc", 1) in records and ("val_acc", 5) in records
    assert records[("val_acc", 1)] <= records[("val_acc", 5)]
    assert any("all 1,000 validation images of imagenet" in n for n in results["notes"])
    ref = next(r for r in results["references"] if "DeiT-Small/16 ImageNet-1k" in r["what"])
    assert ref["status"] == "not comparable"  # smoke preset, random weights: never compared with 79.86
    env = json.loads((run / "env.json").read_text())
    assert env["data"]["images"] == 1000 and env["data"]["cache"]
    assert env["sources"]["data"]["name"] == "imagenet"


def _reference_predictions(model, files, size, mean, std):
    """An independent pipeline: torchvision's transforms on each file, the model's argmax and top 5."""
    import torch
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])
    with torch.no_grad():
        batch = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
        return model(batch).topk(5, dim=1).indices


def test_resnet_head_scores_the_weights_own_imagenet_head_on_its_own_classes(tmp_path):
    """Each generated image is filed under the class an independent torchvision pipeline predicts for it, so a
    head scored on ImageNet's own class indices, with the weights' preprocessing, gets (nearly) all of them right;
    a new head, another class order or other pixels would score near 1/1000."""
    import numpy as np
    import torch
    from PIL import Image

    from atml.models.resnet import DIGITS_ARCHS, DigitsResNet

    torch.manual_seed(0)
    model = DigitsResNet(1000, blocks=DIGITS_ARCHS["digits-resnet"]).eval()
    with torch.no_grad():
        model.fc.weight.mul_(50)  # spread the random logits: fewer near-ties between classes
    torch.save(model.state_dict(), tmp_path / "digits-imagenet.pth")
    rng = np.random.default_rng(0)
    loose = tmp_path / "loose"
    loose.mkdir()
    files = []
    for i in range(48):
        base = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)  # coarse random blocks, smoothly enlarged
        pixels = np.asarray(Image.fromarray(base).resize((64, 48), Image.Resampling.BICUBIC))
        files.append(loose / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
        Image.fromarray(pixels).save(files[-1], quality=95)
    predicted = _reference_predictions(model, files, 32, (0.5,) * 3, (0.5,) * 3)
    wnids, _ = imagenet.wnids_and_names()
    root = tmp_path / "imagenet"
    for wnid in wnids:
        (root / "val" / wnid).mkdir(parents=True)
    for file, top in zip(files, predicted):
        shutil.copy(file, root / "val" / wnids[int(top[0])] / file.name)

    argv = ["run", "resnet.head", "--preset", "smoke", "--set", "data=imagenet", "--data-dir", str(root),
            "--set", "arch=digits-resnet", "--weights", str(tmp_path / "digits-imagenet.pth"),
            "--out", str(tmp_path / "runs")]
    assert cli.main(argv) == 0
    run = next((tmp_path / "runs").iterdir())
    results = json.loads((run / "results.json").read_text())
    records = {(r["name"], r["condition"].get("top_k")): r["value"] for r in results["records"]}
    assert records[("pretrained_val_acc", 1)] >= 0.9, records  # near-ties may flip on resampling's last bit
    assert records[("pretrained_val_acc", 5)] >= records[("pretrained_val_acc", 1)]
    assert not any(name == "val_acc" for name, _ in records)  # no train/ folder: no new head, and it says so
    assert any("no train/ folder: no new head was trained" in n for n in results["notes"])
    assert any("scored on 48 validation images before any training" in n and "centre crop 32" in n
               for n in results["notes"])
    refs = [r for r in results["references"] if "ResNet-152 torchvision" in r["what"]]
    assert len(refs) == 2 and all(r["status"] == "not comparable" for r in refs)  # another arch, smoke preset


def test_an_experiment_that_trains_refuses_imagenet_without_train_images(val_folder, tmp_path, capsys):
    argv = ["run", "resnet.features", "--preset", "smoke", "--set", "data=imagenet", "--data-dir", str(val_folder),
            "--out", str(tmp_path / "runs")]
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert "has no training images (no train/ folder)" in err and "Traceback" not in err


def test_torchvision_resnet_entries_record_the_resize_their_weights_were_evaluated_at():
    import torchvision.models as tvm

    from atml.models import registry

    for arch, enum in (("resnet152", tvm.ResNet152_Weights), ("resnet50", tvm.ResNet50_Weights)):
        for tag, member in (("imagenet", "IMAGENET1K_V2"), ("imagenet-v1", "IMAGENET1K_V1")):
            pre = registry.lookup("cnn", arch).weights[tag].preprocessing
            transform = enum[member].transforms()
            assert round(pre.input_size / pre.crop_pct) == transform.resize_size[0], (arch, tag)
            assert pre.interpolation == transform.interpolation.value

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


def test_a_missing_or_foreign_class_folder_is_named(val_folder, tmp_path):
    copy = shutil.copytree(val_folder, tmp_path / "copy")
    shutil.rmtree(copy / "val" / "n01443537")
    with pytest.raises(DataError, match=r"1 of ImageNet-1k's 1,000 class folders are missing \(n01443537\)"):
        imagenet.load(copy, size=16, progress=False)
    (copy / "val" / "n01443537").mkdir()
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

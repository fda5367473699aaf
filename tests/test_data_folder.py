"""Any labelled image folder (torchvision's ImageFolder layout) and CIFAR-100, through the dataset factory."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from atml import cli
from atml.data import cifar100, factory, folder, integrity
from atml.errors import DataError, UsageError


@pytest.fixture
def photos(tmp_path):
    return folder.write_folder(tmp_path / "photos", per_class=6)


def test_a_folder_with_train_and_val_is_read_as_given(photos):
    read = folder.load(photos, size=24)
    data = read.data
    assert data.train.classes == ["ants", "bees", "cats"] and data.val.classes == data.train.classes
    assert data.train.images.shape == (18, 3, 24, 24) and data.train.images.dtype == torch.uint8
    assert data.val.images.shape == (9, 3, 24, 24)
    assert data.train.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert "resized to 24 px" in data.source and "train/ and val/ as given" in data.source and read.skipped == []
    # every class has its own colour (write_folder): the decoded pixels keep it, so the labels match the images
    means = torch.stack([data.train.images[data.train.labels == c].float().mean((0, 2, 3)) for c in range(3)])
    assert means[0, 0] < means[1, 0] < means[2, 0]


def test_a_folder_without_val_is_split_the_same_way_every_time(tmp_path):
    root = folder.write_folder(tmp_path / "flat", per_class=10, with_val=False)
    first, again = folder.load(root, size=16, seed=3).data, folder.load(root, size=16, seed=3).data
    assert torch.equal(first.val.images, again.val.images)
    assert len(first.train) == 24 and len(first.val) == 6
    assert first.val.labels.bincount().tolist() == [2, 2, 2]  # stratified
    assert "stratified 80%/20% split, seed 3" in first.source
    other = folder.load(root, size=16, seed=4).data
    assert not torch.equal(first.val.images, other.val.images)


def test_every_unreadable_file_is_named_in_one_error_or_skipped_and_listed(photos):
    (photos / "train" / "bees" / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "val" / "cats" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError) as err:
        folder.load(photos, size=16)
    message = str(err.value)
    assert "cannot read 2 image(s)" in message and "broken.jpg" in message and "empty.png" in message
    assert "skip_bad_images=True" in message and "--set skip_bad_images=true" in err.value.words(cli.TERMINAL)
    read = folder.load(photos, size=16, skip_bad=True)
    assert len(read.data.train) == 18 and [s.split(" ")[0] for s in read.skipped] == [
        str(photos / "train" / "bees" / "broken.jpg"), str(photos / "val" / "cats" / "empty.png")]


def test_images_of_any_mode_and_shape_become_square_uint8(tmp_path):
    root = tmp_path / "modes"
    for name, image in {"grey": Image.fromarray(np.full((30, 50), 200, np.uint8)),
                        "rgba": Image.fromarray(np.full((60, 20, 4), 90, np.uint8)),
                        "deep": Image.fromarray(np.full((40, 40), 65535, np.uint16))}.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            image.save(root / name / f"{i}.png")
    data = folder.load(root, size=20).data
    images = torch.cat([data.train.images, data.val.images])
    labels = torch.cat([data.train.labels, data.val.labels])
    assert images.shape[1:] == (3, 20, 20)
    assert int(images[labels == 0].max()) == 255  # 16-bit white stays white ("deep" sorts first)
    grey = folder.load(root, size=20, grayscale=True).data
    assert grey.train.images.shape[1:] == (1, 20, 20) and "converted to grey" in grey.source


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "does not exist"),
    (lambda root: (root / "train" / "only").mkdir(parents=True), "holds 0 class folder(s) with images (empty: only)"),
])
def test_a_folder_that_is_not_a_dataset_says_what_the_layout_is(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=re.escape(message)):
        folder.load(root, size=16)


def test_the_factory_knows_every_dataset_and_needs_a_folder_for_folder():
    with pytest.raises(UsageError, match="data='imagenet-21k' is not a known dataset"):
        factory.create(factory.Spec("imagenet-21k"))
    with pytest.raises(UsageError, match="data=imagenet needs data_dir=DIR"):
        factory.create(factory.Spec("imagenet"))
    with pytest.raises(UsageError, match="needs data_dir=DIR") as caught:
        factory.create(factory.Spec("folder"))
    assert caught.value.words(cli.TERMINAL).startswith("data=folder needs --data-dir DIR (DIR/train/")
    from atml.suite import grayscale_config
    from atml.suite.clip import config as clip_config
    from atml.suite.compare import config as compare_config
    from atml.suite.resnet import config as resnet_config
    from atml.suite.vit import config as vit_config

    for family in (resnet_config, vit_config, clip_config, compare_config, grayscale_config):
        assert set(family.DATA) <= set(factory.DATASETS), family


def test_cifar100_reads_fine_labels_and_checks_the_official_md5(tmp_path, monkeypatch):
    written = cifar100.write_files(tmp_path / "c100", n_train=40, n_test=20)
    data = cifar100.load_generated(written)
    assert data.train.images.shape == (40, 3, 32, 32) and len(data.train.classes) == 100
    assert int(data.val.labels.max()) < 100 and "not real CIFAR-100" in data.source
    with pytest.raises(DataError, match="corrupt or truncated"):  # the generated bytes are not the official ones
        cifar100.load(tmp_path / "c100", offline=True)
    monkeypatch.setattr(cifar100, "MD5", integrity.read_manifest(written))
    assert "MD5 verified; fine labels" in cifar100.load(tmp_path / "c100", offline=True).source
    shutil.rmtree(written)
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        cifar100.load(tmp_path / "c100", offline=True)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["resnet.features", "vit.pooling", "vae.train", "clip.zeroshot", "gan.dcgan"])
def test_every_image_family_refuses_a_user_folder_with_an_unreadable_file(experiment, photos, tmp_path, capsys):
    """Without skip_bad_images, one line naming the file and the option; with it, every experiment runs (below)."""
    (photos / "train" / "bees" / "broken.jpg").write_bytes(b"not a jpeg")
    generative = experiment.split(".")[0] in ("vae", "gan")
    argv = ["run", experiment, "--preset", "smoke", "--set", "data=folder", "--data-dir", str(photos),
            *([] if generative else ["--set", "image_size=40"])]
    assert cli.main([*argv, "--out", str(tmp_path / "refused")]) == 3
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "skip_bad_images=true" in err and "Traceback" not in err


def test_the_generative_models_refuse_an_image_size_they_cannot_take(photos, tmp_path, capsys):
    for experiment in ("vae.train", "gan.dcgan"):
        assert cli.main(["run", experiment, "--preset", "smoke", "--set", "data=folder", "--data-dir", str(photos),
                         "--set", "image_size=40", "--out", str(tmp_path / "runs")]) == 2
        assert "image_size=40 is not valid here" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_image_size_on_a_dataset_of_fixed_size_is_refused_not_ignored(tmp_path, capsys):
    assert cli.main(["run", "resnet.head", "--preset", "smoke", "--set", "image_size=64",
                     "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "image_size=64 sets the size image files are decoded at" in err and "comes at its own size" in err


@pytest.mark.parametrize("experiment", ["resnet.features", "vit.pooling", "vae.train", "clip.zeroshot", "gan.dcgan"])
@pytest.mark.parametrize("data_dir, message", [(None, "no --data-dir was given"), ("missing", "is not a folder")])
def test_a_folder_run_without_a_folder_is_an_option_error_before_any_run_folder(experiment, data_dir, message,
                                                                                 tmp_path, capsys):
    argv = ["run", experiment, "--preset", "smoke", "--set", "data=folder", "--out", str(tmp_path / "runs")]
    if data_dir:
        argv += ["--data-dir", str(tmp_path / data_dir)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "data=folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing to clean up: refused before the run folder


def test_an_empty_class_folder_is_left_out_and_said_and_a_val_only_class_is_refused(photos):
    (photos / "train" / "dogs").mkdir()
    (photos / "train" / "dogs" / ".DS_Store").write_bytes(b"\0\0")
    (photos / "train" / "dogs" / "._x.png").write_bytes(b"\0\5\26\7")  # a macOS resource-fork stub
    read = folder.load(photos, size=16)
    assert read.data.train.classes == ["ants", "bees", "cats"] and len(read.data.train) == 18
    assert any("hold no images and were left out" in n and "dogs" in n for n in read.readiness.notes)
    (photos / "val" / "eels").mkdir()
    with pytest.raises(DataError, match=r"has class folder\(s\) that .*train has not: eels"):
        folder.load(photos, size=16)


def _experiments() -> list[str]:
    from atml.suite import registry

    return registry().names()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", _experiments())
def test_every_experiment_uses_the_folder_and_skip_bad_images_it_is_given(experiment, photos, tmp_path):
    """No option accepted and ignored: data, data_dir and skip_bad_images reach every experiment's run."""
    (photos / "train" / "bees" / "broken.jpg").write_bytes(b"not a jpeg")
    generative = experiment.split(".")[0] in ("vae", "gan")
    argv = ["run", experiment, "--preset", "smoke", "--set", "data=folder", "--data-dir", str(photos),
            *([] if generative else ["--set", "image_size=32"]), "--set", "skip_bad_images=true",
            "--out", str(tmp_path / "runs")]
    assert cli.main(argv) == 0
    run = next((tmp_path / "runs").iterdir())
    env = json.loads((run / "env.json").read_text())
    assert env["sources"]["data"]["name"] == "folder:photos" and env["data"]["cache"]
    assert env["sources"]["data"]["classes"][:2] == ["ants", "bees"]
    size = 28 if generative else 32
    assert env["data"]["decode"]["size"] == size and f"resized to {size} px" in env["sources"]["data"]["source"]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok"
    notes = results["notes"]
    assert any("broken.jpg" in n and "left out" in n for n in notes)
    assert any(n.startswith("folder:photos: decoded at") for n in notes)  # the notes say the decode size and why
    if experiment in ("resnet.features", "vit.attention"):  # the views name the user's files, not "point #3"
        from atml import views

        stored = json.loads(next((run / "views").glob("*.json")).read_text())
        named = stored["names"] if stored["kind"] == "scatter" else [i["name"] for i in stored["images"]]
        assert named and all(n.startswith("val/") and (".jpg" in n or ".png" in n) for n in named), named
        if stored["kind"] == "scatter":
            labels = views.read_array(stored["labels"])
            assert all(n.split("/")[1] == stored["classes"][c] for n, c in zip(named, labels))


def _split_layout(root, splits, classes=("cat", "coffee")):
    for split in splits:
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.fromarray(np.full((20, 20, 3), 60 * c + 20 * i, np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.mark.parametrize("splits, named", [(("val", "test"), "test/, val/"), (("val",), "val/"),
                                           (("validation",), "validation/")])
def test_split_folders_without_train_are_refused_not_read_as_classes(tmp_path, splits, named):
    root = _split_layout(tmp_path / "d", splits)
    with pytest.raises(DataError) as caught:
        folder.load(root, size=16)
    message = str(caught.value)
    assert f"split folder(s) {named}" in message and "no train/" in message and "data_dir=" in message
    assert f"pass --data-dir {root / sorted(splits)[0]} to use" in caught.value.words(cli.TERMINAL)
    assert "\n" not in message


def test_every_folder_left_out_of_a_split_layout_is_named_in_the_notes(tmp_path):
    root = _split_layout(tmp_path / "d", ("train", "val", "test"))
    (root / "__MACOSX" / "train").mkdir(parents=True)
    (root / "notes").mkdir()
    read = folder.load(root, size=16)
    assert read.data.train.classes == ["cat", "coffee"] and len(read.data.val) == 6
    left = [n for n in read.readiness.notes if "left out" in n]
    assert len(left) == 1 and "test/" in left[0] and "__MACOSX/" in left[0] and "notes/" in left[0], left


def test_a_macos_archive_folder_is_never_a_class(tmp_path):
    root = _split_layout(tmp_path / "flat", ("",), classes=("cat", "coffee", "rocket"))
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._0.png").write_bytes(b"\0\5\26\7")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "__MACOSX" / "cat" / "1.png")
    read = folder.load(root, size=16)
    assert read.data.train.classes == ["cat", "coffee", "rocket"]
    assert any("__MACOSX/" in n and "left out" in n for n in read.readiness.notes)


def test_the_empty_class_note_names_the_class_and_every_split_it_is_empty_in(photos):
    (photos / "train" / "dogs").mkdir()
    (photos / "val" / "dogs").mkdir()
    notes = folder.load(photos, size=16).readiness.notes
    note = next(n for n in notes if "dogs" in n)
    assert "the dataset has 3 classes (ants, bees, cats)" in note and "val/" in note and "train/" in note, note


def test_each_image_keeps_its_file_name_through_the_cache_subsets_and_skipped_files(photos):
    (photos / "train" / "bees" / "broken.jpg").write_bytes(b"not a jpeg")
    read = folder.load(photos, size=16, skip_bad=True)
    train = read.data.train
    assert train.names is not None and len(train.names) == len(train) == 18  # 6 per class; broken.jpg left out
    assert "train/bees/broken.jpg" not in train.names
    assert all(name.split("/")[1] == train.classes[int(c)] for name, c in zip(train.names, train.labels))
    part = train.subset(5, seed=1)
    assert part.names is not None and len(part.names) == 5
    assert all(name.split("/")[1] == part.classes[int(c)] for name, c in zip(part.names, part.labels))

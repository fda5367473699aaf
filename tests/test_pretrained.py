"""Building a model never trains one: atml's own weights are a cached file, made by atml.pretrained (issue 31)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import torch

from atml import pretrained
from atml.errors import UsageError, WeightsError
from atml.models import factory
from atml.models import weights as weights_lib
from atml.train import pretrain

SRC = Path(__file__).resolve().parents[1] / "src" / "atml"
ONE_EPOCH = pretrained.Training(epochs=1, say=lambda _m: None)


def test_the_factory_reads_atml_weights_and_never_trains_them(monkeypatch):
    monkeypatch.setattr(pretrain, "train", lambda *a, **k: pytest.fail("the factory trained a model"))
    key = pretrain.recipe("digits-resnet-small", seed=123, epochs=1).key()
    with pytest.raises(WeightsError, match=r"not in its cache yet .*digits-resnet-small-.*\.pt.*ensure"):
        factory.create("digits-resnet-small", "digits", family="cnn", num_classes=5, recipe=key)
    assert not weights_lib.atml_file("digits-resnet-small", key).exists()
    with pytest.raises(UsageError, match="pass recipe=atml.pretrained.ensure"):
        factory.create("digits-resnet-small", "digits", family="cnn", num_classes=5)


@pytest.mark.slow
def test_ensure_trains_once_for_two_callers_and_the_factory_reads_the_file(monkeypatch):
    calls = []
    real = pretrain.train

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "train", counted)
    training = pretrained.Training(epochs=1, seed=7, say=lambda _m: None)
    keys: list[str | None] = []
    threads = [threading.Thread(target=lambda: keys.append(pretrained.ensure("digits-resnet-small", "digits",
                                                                           family="cnn", training=training)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and keys[0] == keys[1] is not None  # the second caller waited on the lock, then read
    built = factory.create("digits-resnet-small", "digits", family="cnn", num_classes=5, recipe=keys[0])
    assert built.info.spec == "digits" and "seed 7" in built.info.description and built.info.sha256
    assert built.info.file == str(weights_lib.atml_file("digits-resnet-small", keys[0]))
    saved = torch.load(built.info.file, weights_only=True)
    body = built.model.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in saved["state_dict"].items()
               if not k.startswith("fc."))  # the source task's classifier: the new head replaces it
    assert pretrained.ensure("resnet152", "random", family="cnn") is None  # nothing atml makes: nothing to do


def test_the_recipes_build_their_models_through_the_factory():
    builders = {"build"}  # cnn.build, vit.build, clip.build
    for name in ("pretrain", "vit_recipe", "clip_recipe"):
        tree = ast.parse((SRC / "train" / f"{name}.py").read_text())
        called = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not called & builders, name
        assert "create" in called, name


def test_every_published_file_comes_through_one_hub_cache_helper(tmp_path, monkeypatch):
    """torchvision's weights, a URL in the registry and torch-fidelity's Inception all go through ``hub_file``: a
    cached file is used as it is, a missing one is refused offline in one line naming the URL and where to put it."""
    import torch

    from atml.analysis import inception
    from atml.errors import WeightsError
    from atml.models import weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    url = "https://example.org/files/tiny-0123abcd.pth"
    with pytest.raises(WeightsError, match=r"tiny weights are not in the torch hub cache .*offline mode forbids "
                                           r"downloading. Fetch https://example.org/files/tiny-0123abcd.pth"):
        weights.hub_file(url, "tiny", offline=True)
    assert inception.locate("auto", offline=True) is None  # not cached, offline: skipped, as before
    planted = tmp_path / "hub" / "checkpoints" / inception.FILENAME
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"")
    assert inception.locate("auto", offline=True) == planted
    assert weights.hub_file(f"https://example.org/{inception.FILENAME}", "x", offline=True) == planted

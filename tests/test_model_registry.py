"""The model registry: one table for where weights come from, how they are checked, what they expect."""

import pytest

from atml import cli, config
from atml.models import registry
from atml.suite.clip import config as clip_common
from atml.suite.resnet import config as resnet_common
from atml.suite.vit import config as vit_common


def test_atmls_entries_say_source_check_and_preprocessing():
    rows = {(r["model"], r["weights"]): r for r in registry.table()}
    resnet = rows[("resnet152", "imagenet")]
    assert resnet["source"] == "torchvision" and resnet["location"] == "ResNet152_Weights.IMAGENET1K_V2"
    assert "SHA-256" in resnet["check"] and resnet["mean"] == registry.IMAGENET_MEAN
    deit = rows[("deit_small_patch16_224", "imagenet")]
    assert deit["location"].endswith("deit_small_patch16_224-cd65a155.pth") and deit["input_size"] == 224
    assert rows[("ViT-B-32", "openai")]["source"] == "open_clip-hub"
    demo = {(r["model"], r["source"]) for r in registry.table() if r["weights"] == registry.DEMO_TAG}
    assert demo == {("digits-resnet", "atml"), ("digits-resnet-small", "atml"), ("vit-digits", "atml"),
                    ("clip-digits", "atml")}  # one spelling of the demo weights in every family


def test_other_models_get_their_entry_from_their_library():
    convnext = registry.lookup("cnn", "convnext_tiny")
    assert convnext.weights["imagenet"].location == "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"
    assert convnext.weights["imagenet"].preprocessing.crop_pct == pytest.approx(224 / 236)
    dinov2 = registry.lookup("vit", "timm/vit_small_patch14_dinov2")
    assert dinov2.weights["imagenet"].location == "timm/vit_small_patch14_dinov2.lvd142m"
    assert dinov2.preprocessing.input_size == 518
    siglip = registry.lookup("clip", "ViT-B-16-SigLIP")
    assert siglip.preprocessing.mean == (0.5, 0.5, 0.5) and "webli" in siglip.weights
    clip = registry.lookup("clip", "ViT-B-32")  # atml's entry, plus open_clip's other tags for the model
    assert clip.weights["openai"].location == "timm/vit_base_patch32_clip_224.openai"
    assert "laion2b_s34b_b79k" in clip.weights


@pytest.mark.parametrize("cls, arch", [(resnet_common.ResNetConfig, "digits-resnet"),
                                       (vit_common.ViTConfig, "vit-digits"), (clip_common.ClipConfig, "clip-digits")])
@pytest.mark.parametrize("old", registry.DEMO_ALIASES)
def test_the_demo_weights_have_one_name_and_old_configs_still_read(cls, arch, old):
    cfg = config.from_dict(cls, {"arch": arch, "weights": old, "data": "digits", "offline": True})
    assert cfg.weights == "digits"


@pytest.mark.parametrize("experiment, arch", [("resnet.head", "resnet18"), ("vit.pooling", "deit_small_patch16_224"),
                                              ("clip.gap", "ViT-B-32")])
def test_demo_weights_on_a_model_atml_did_not_train_are_refused(experiment, arch, tmp_path, capsys):
    code = cli.main(["run", experiment, "--preset", "smoke", "--set", f"arch={arch}", "--weights", "digits",
                     "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "weights=digits needs arch=" in err and len(err.strip().splitlines()) == 1


def test_models_command_lists_atmls_entries_and_any_library_models_tags(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ResNet152_Weights.IMAGENET1K_V2" in out and "deit_small_patch16_224-cd65a155.pth" in out
    assert cli.main(["models", "--family", "cnn"]) == 0
    assert "ViT-B-32" not in capsys.readouterr().out
    assert cli.main(["models", "timm/vit_small_patch14_reg4_dinov2"]) == 0
    out = capsys.readouterr().out
    assert "(vit, built by timm" in out and "timm/vit_small_patch14_reg4_dinov2.lvd142m" in out and "518 px" in out
    assert cli.main(["models", "ViT-B-16"]) == 0
    assert "laion2b_s34b_b88k: open_clip-hub" in capsys.readouterr().out
    assert cli.main(["models", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "'no_such_model' is not a model atml knows" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name, family, options", [("timm/resnet18", "cnn", {}),
                                                   ("timm/vit_tiny_patch16_224", "vit", {}),
                                                   ("timm/vit_tiny_patch16_224", "vit", {"input_size": 112})])
def test_a_timm_model_s_preprocessing_is_converted_from_its_config_once(name, family, options, monkeypatch):
    from atml.models import factory

    calls = []
    real = registry.preprocessing_from
    monkeypatch.setattr(registry, "preprocessing_from", lambda *a, **k: calls.append(a) or real(*a, **k))
    registry._from_library.cache_clear()
    built = factory.create(name, "random", family=family, num_classes=10, **options)
    assert len(calls) == 1, calls
    assert built.preprocessing.input_size == (options.get("input_size") or 224)
    registry._from_library.cache_clear()

"""Any timm or torchvision CNN behind the ResNet experiments: heads, stages, frozen norms, weights."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from atml import cli
from atml.distributed import sync_batchnorm
from atml.errors import UsageError, WeightsError
from atml.models import cnn, factory, freezing, resnet

# Different families: ConvNeXt (LayerNorm), EfficientNet (timm's BatchNormAct2d), RegNet, and torchvision's own.
CNNS = ["timm/convnext_atto", "timm/efficientnet_b0", "timm/regnety_002", "mobilenet_v3_small", "efficientnet_b0"]


@pytest.mark.parametrize("arch", CNNS)
def test_any_cnn_gets_a_new_head_and_its_own_stages(arch):
    model = factory.create(arch, "random", family="cnn", num_classes=7).model.eval()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features) and model(x).shape == (2, 7)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 7
    assert len(model.stage_paths) >= 3 and model.stage_paths[-1] in model.last_paths
    maps = {}
    hooks = [model.get_submodule(p).register_forward_hook(lambda _m, _i, out, p=p: maps.__setitem__(p, out.shape))
             for p in model.stage_paths]
    model(x)
    for hook in hooks:
        hook.remove()
    sizes = [maps[p][-1] for p in model.stage_paths]  # channel-first maps, each stage smaller than the one before
    assert all(len(maps[p]) == 4 for p in model.stage_paths) and sizes == sorted(sizes, reverse=True)
    assert 64 // sizes[0] >= cnn.MIN_STAGE_REDUCTION and len(set(sizes)) == len(sizes)


def test_depths_are_the_first_the_one_before_last_and_the_last_stage():
    assert cnn.depth_stages(resnet.ResNetClassifier.stage_paths) == {
        "early": "body.layer1", "middle": "body.layer3", "late": "body.layer4"}
    with pytest.raises(UsageError, match="need three"):
        cnn.depth_stages(("a", "b"))


@pytest.mark.parametrize("arch", ["timm/efficientnet_b0", "efficientnet_b0", "timm/convnext_atto"])
def test_frozen_norms_of_any_kind_stay_frozen_in_train_mode(arch):
    torch.manual_seed(0)
    model = factory.create(arch, "random", family="cnn", num_classes=5).model
    x = torch.randn(4, 3, 64, 64)
    for _ in range(2):  # non-trivial running statistics first
        model.train()(x * 3 + 1)
    reference = model.eval()(x)
    keys = set(model.state_dict())
    freezing.freeze(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(x * 5 + 2)  # a training-mode forward on other data must not move any statistic
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-4)
    assert out.requires_grad and [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    pinned = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in pinned)
    if arch == "timm/efficientnet_b0":  # BatchNormAct2d keeps its class, activation and keys
        from timm.layers import BatchNormAct2d

        assert pinned and all(isinstance(m, BatchNormAct2d) for m in pinned)
        assert keys == set(model.state_dict())
        assert all(sync_batchnorm(m) is m for m in pinned)  # not turned into SyncBatchNorm under torchrun


def test_the_last_stage_regime_trains_the_last_stage_and_what_follows_it():
    model = factory.create("timm/convnext_atto", "random", family="cnn", num_classes=5).model
    assert model.last_paths == ("body.stages.3", "body.head")  # ConvNeXt's head norm comes after its last stage
    freezing.freeze(model, trainable=(*model.last_paths, model.head_name))
    trained = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and n.startswith("body.")}
    assert trained == {"stages", "head"}
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("body.stages.2"))


@pytest.mark.parametrize("arch, last", [
    ("densenet121", ("features.transition3", "features.denseblock4", "features.norm5")),  # not norm5 alone
    ("vgg11", ("features.16", "features.17", "features.18", "features.19", "features.20", "classifier")),
    ("googlenet", ("inception5a", "inception5b", "avgpool")),  # the global pool ends the last stage
])
def test_the_last_stage_of_a_torchvision_cnn_is_every_module_at_its_last_resolution(arch, last):
    model = factory.create(arch, "random", family="cnn", num_classes=5).model
    assert model.last_paths == tuple(f"body.{p}" for p in last)
    assert model.stage_paths[-1] == f"body.{last[-2] if last[-1] == 'classifier' else last[-1]}"
    freezing.freeze(model, trainable=(*model.last_paths, model.head_name))
    assert any(p.requires_grad for n, p in model.named_parameters() if n.startswith(f"body.{last[0]}."))


def test_a_timm_state_dict_file_loads_into_the_body_and_skips_its_classifier(tmp_path):
    import timm

    source = timm.create_model("regnety_002", num_classes=1000)
    save_file(source.state_dict(), tmp_path / "regnety.safetensors")
    backbone = factory.create("timm/regnety_002", str(tmp_path / "regnety.safetensors"), family="cnn", num_classes=3)
    assert torch.equal(backbone.model.body.s4.b1.conv1.conv.weight, source.s4.b1.conv1.conv.weight)
    assert backbone.info.sha256 and backbone.model.head.out_features == 3
    other = timm.create_model("convnext_atto", num_classes=10)
    save_file(other.state_dict(), tmp_path / "convnext.safetensors")
    with pytest.raises(WeightsError, match="does not fit this architecture"):
        factory.create("timm/regnety_002", str(tmp_path / "convnext.safetensors"), family="cnn", num_classes=3)


def test_timm_imagenet_weights_come_from_the_hub_cache_hash_checked(tmp_path, plant_hub_file):
    import timm

    with pytest.raises(WeightsError, match="not in the Hugging Face cache and offline mode forbids downloading"):
        factory.create("timm/regnety_002", "imagenet", family="cnn", num_classes=3)
    source = timm.create_model("regnety_002", num_classes=1000)
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    repo = timm.models.get_pretrained_cfg("regnety_002").hf_hub_id
    blob = plant_hub_file(repo, "model.safetensors", tmp_path / "model.safetensors")
    backbone = factory.create("timm/regnety_002", "imagenet", family="cnn", num_classes=3)
    assert torch.equal(backbone.model.body.stem.conv.weight, source.stem.conv.weight)
    assert repo in backbone.info.description and backbone.info.sha256 == blob.name
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)  # corrupted in the cache
    with pytest.raises(WeightsError, match="fails its hash check"):
        factory.create("timm/regnety_002", "imagenet", family="cnn", num_classes=3)


@pytest.mark.parametrize("arch, message", [
    ("timm/convnext_nope", "timm has no model 'convnext_nope'; similar: timm/convnext"),
    ("alexnet2", "arch='alexnet2' is not valid"),
    ("squeezenet1_0", "no linear classifier to replace"),
])
def test_an_unknown_or_unusable_arch_is_one_line(arch, message, tmp_path, capsys):
    code = cli.main(["run", "resnet.features", "--preset", "smoke", "--set", f"arch={arch}", "--set", "compare_arch=",
                     "--out", str(tmp_path)])
    assert code == 2 and message in capsys.readouterr().err


def test_resnet_skip_takes_resnets_only_and_says_which(tmp_path, capsys):
    code = cli.main(["run", "resnet.skip", "--preset", "smoke", "--set", "arch=timm/convnext_atto",
                     "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "takes ResNets only" in err and "resnet152" in err and "digits-resnet" in err
    assert not list(tmp_path.iterdir())  # refused before any run folder


def test_a_resolution_too_small_for_the_network_is_refused_before_training(tmp_path, capsys):
    code = cli.main(["run", "resnet.head", "--preset", "smoke", "--set", "arch=timm/convnext_atto",
                     "--set", "resolutions=[32,16]", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot take 16 px inputs" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*/checkpoints/*"))  # 32 px was not trained first


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["timm/convnext_atto", "timm/efficientnet_b0", "timm/regnety_002"])
def test_resnet_features_runs_on_non_resnet_cnns(arch, tmp_path):
    assert cli.main(["run", "resnet.features", "--preset", "smoke", "--set", f"arch={arch}",
                     "--set", "compare_arch=mobilenet_v3_small", "--out", str(tmp_path)]) == 0
    run = next(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    stages = results["data"]["stages"]
    assert set(stages) == {arch, "mobilenet_v3_small"} and all(len(s) == 3 for s in stages.values())
    for depth in ("early", "middle", "late"):
        assert 0 <= results["metrics"][f"probe_acc_{depth}"] <= 1
        assert f"compare_probe_acc_{depth}" in results["metrics"]
    assert f"{arch}: early = output of" in results["notes"][0]

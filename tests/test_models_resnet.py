import pickle

import pytest
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

from atml.errors import UsageError, WeightsError
from atml.models import factory, freezing
from atml.models.preprocess import Preprocess
from atml.storage import sha256sum


def _saved_resnet18(tmp_path, name="resnet18-random.pth"):
    torch.manual_seed(3)
    reference = tvm.resnet18(weights=None).eval()
    path = tmp_path / name
    torch.save(reference.state_dict(), path)
    return reference, path


def test_local_state_dict_loads_through_production_path(tmp_path):
    reference, path = _saved_resnet18(tmp_path)
    built = factory.create("resnet18", str(path), family="cnn", num_classes=10)
    ours = built.model.body.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(ours[key], value), key
    assert built.info.sha256 == sha256sum(path) and built.info.pretrained


def test_features_and_head_agree_with_torchvision_forward(tmp_path):
    reference, path = _saved_resnet18(tmp_path)
    model = factory.create("resnet18", str(path), family="cnn", num_classes=1000).model.eval()
    model.body.fc.load_state_dict(reference.fc.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
        assert model.forward_features(x).shape == (2, 512)


def test_safetensors_file_loads(tmp_path):
    reference, _ = _saved_resnet18(tmp_path)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = factory.create("resnet18", str(path), family="cnn", num_classes=10).model
    assert torch.equal(model.body.conv1.weight, reference.conv1.weight)


def test_hash_in_file_name_is_checked(tmp_path):
    _, path = _saved_resnet18(tmp_path, "resnet18-deadbeef.pth")
    with pytest.raises(WeightsError, match="fails its hash check.*deadbeef"):
        factory.create("resnet18", str(path), family="cnn", num_classes=10)


def test_hash_in_file_name_passes_when_it_matches(tmp_path):
    _, path = _saved_resnet18(tmp_path)
    named = tmp_path / f"resnet18-{sha256sum(path)[:8]}.pth"
    path.rename(named)
    assert factory.create("resnet18", str(named), family="cnn", num_classes=10).info.file == str(named)


def test_wrong_architecture_is_refused(tmp_path):
    _, path = _saved_resnet18(tmp_path)
    with pytest.raises(WeightsError, match="does not fit this architecture"):
        factory.create("resnet50", str(path), family="cnn", num_classes=10)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        factory.create("resnet18", str(tmp_path / "none.pth"), family="cnn", num_classes=10)
    with pytest.raises(UsageError, match="valid: imagenet, imagenet-v1, random"):  # a usage error: exit 2
        factory.create("resnet18", "imagenet21k", family="cnn", num_classes=10)


def test_offline_imagenet_without_cache_is_an_error_not_random_weights():
    with pytest.raises(WeightsError) as err:
        factory.create("resnet152", "imagenet", family="cnn", num_classes=10)
    message = str(err.value)
    assert "resnet152-f82ba261.pth" in message and "offline" in message and "weights=/path/to/" in message
    from atml.cli import TERMINAL

    assert "--weights /path/to/resnet152-f82ba261.pth" in err.value.words(TERMINAL)


def test_imagenet_from_hub_cache_is_hash_checked(tmp_path):
    weights = tvm.ResNet18_Weights.IMAGENET1K_V1
    target = tmp_path / "torch-home" / "hub" / "checkpoints"
    torch.hub.set_dir(str(tmp_path / "torch-home" / "hub"))
    target.mkdir(parents=True)
    torch.save(tvm.resnet18().state_dict(), target / weights.url.rsplit("/", 1)[-1])
    with pytest.raises(WeightsError, match="fails its hash check"):  # random weights != published hash
        factory.create("resnet18", "imagenet", family="cnn", num_classes=10)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": Exploit()}, handle)
    with pytest.raises(WeightsError, match="is not a weights file atml can read: it holds pickled data"):
        factory.create("resnet18", str(path), family="cnn", num_classes=10)
    assert not marker.exists()


def _changed_by_two_training_steps(model):
    """Names of the state entries two SGD steps in train() mode change."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16) * 3 + 1), torch.arange(8) % 5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


def test_freeze_keeps_backbone_and_bn_statistics_fixed():
    model = factory.create("digits-resnet", "random", family="cnn", num_classes=5).model
    freezing.freeze(model)
    changed = _changed_by_two_training_steps(model)
    assert changed == {"body.fc.weight", "body.fc.bias"}
    assert freezing.trainable_parameters(model) == model.head.weight.numel() + model.head.bias.numel()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_freeze_can_leave_a_block_trainable():
    model = freezing.freeze(factory.create("digits-resnet", "random", family="cnn", num_classes=5).model,
                          trainable=("body.layer4", "body.fc"))
    bns = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert bns and all(n.startswith("body.layer4") for n in bns)


@pytest.mark.parametrize("res", [8, 16, 32])
def test_digits_resnet_and_preprocess_shapes(res):
    built = factory.create("digits-resnet", "random", family="cnn", num_classes=5)
    prep = Preprocess(built.preprocessing, res, channels_last=True)
    x = prep(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))
    assert x.shape == (4, 3, res, res) and x.is_contiguous(memory_format=torch.channels_last)
    out = built.model(x)
    assert out.shape == (4, 5) and torch.isfinite(out).all()


def _with_random_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BatchNorm statistics and affine terms away from their 0/1 initial values."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "digits-resnet"])
def test_folded_frozen_model_computes_what_the_eval_model_computes(arch):
    import copy

    model = _with_random_statistics(factory.create(arch, "random", family="cnn", num_classes=7).model).eval()
    frozen = freezing.freeze(copy.deepcopy(model))
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, freezing.FrozenBatchNorm2d)) for m in frozen.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        frozen.train()  # a frozen model computes the same in either mode
        assert torch.allclose(frozen(x), expected, atol=1e-4, rtol=1e-4)


def test_every_batchnorm_of_resnet152_is_folded():
    model = factory.create("resnet152", "random", family="cnn", num_classes=10).model
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    freezing.freeze(model, fold=False)
    assert freezing.fold_frozen_batchnorm(model) == bns == 155


def test_unfolded_frozen_batchnorm_matches_eval_batchnorm_and_ignores_train_mode():
    bn = _with_random_statistics(torch.nn.Sequential(torch.nn.BatchNorm2d(6)))[0].eval()
    frozen = freezing.FrozenBatchNorm2d(bn).train()
    x = torch.randn(4, 6, 5, 5)
    assert not frozen.training
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)
    assert list(frozen.parameters()) == []  # nothing an optimizer could update
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(frozen))
    assert isinstance(synced[0], freezing.FrozenBatchNorm2d), "SyncBatchNorm conversion must leave it frozen"


def test_training_the_last_block_leaves_every_frozen_tensor_unchanged():
    model = _with_random_statistics(factory.create("digits-resnet", "random", family="cnn", num_classes=5).model)
    freezing.freeze(model, trainable=("body.layer4", "body.fc"))
    changed = _changed_by_two_training_steps(model)
    assert changed and all(k.startswith(("body.layer4.", "body.fc.")) for k in changed)
    assert any("running_mean" in k for k in changed), "the trained block's BatchNorm still learns its statistics"

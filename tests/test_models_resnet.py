import pickle

import pytest
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

from atml.data.integrity import sha256sum
from atml.errors import WeightsError
from atml.models import resnet


def _saved_resnet18(tmp_path, name="resnet18-random.pth"):
    torch.manual_seed(3)
    reference = tvm.resnet18(weights=None).eval()
    path = tmp_path / name
    torch.save(reference.state_dict(), path)
    return reference, path


def test_local_state_dict_loads_through_production_path(tmp_path):
    reference, path = _saved_resnet18(tmp_path)
    built = resnet.build("resnet18", 10, str(path), offline=True)
    ours = built.model.body.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(ours[key], value), key
    assert built.weights.sha256 == sha256sum(path) and built.weights.pretrained


def test_features_and_head_agree_with_torchvision_forward(tmp_path):
    reference, path = _saved_resnet18(tmp_path)
    model = resnet.build("resnet18", 1000, str(path), offline=True).model.eval()
    model.body.fc.load_state_dict(reference.fc.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
        assert model.forward_features(x).shape == (2, 512)


def test_safetensors_file_loads(tmp_path):
    reference, _ = _saved_resnet18(tmp_path)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = resnet.build("resnet18", 10, str(path), offline=True).model
    assert torch.equal(model.body.conv1.weight, reference.conv1.weight)


def test_hash_in_file_name_is_checked(tmp_path):
    _, path = _saved_resnet18(tmp_path, "resnet18-deadbeef.pth")
    with pytest.raises(WeightsError, match="fails its hash check.*deadbeef"):
        resnet.build("resnet18", 10, str(path), offline=True)


def test_hash_in_file_name_passes_when_it_matches(tmp_path):
    _, path = _saved_resnet18(tmp_path)
    named = tmp_path / f"resnet18-{sha256sum(path)[:8]}.pth"
    path.rename(named)
    assert resnet.build("resnet18", 10, str(named), offline=True).weights.file == str(named)


def test_wrong_architecture_is_refused(tmp_path):
    _, path = _saved_resnet18(tmp_path)
    with pytest.raises(WeightsError, match="does not fit this architecture"):
        resnet.build("resnet50", 10, str(path), offline=True)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resnet.build("resnet18", 10, str(tmp_path / "none.pth"), offline=True)
    with pytest.raises(WeightsError, match="valid: imagenet, imagenet-v1, random"):
        resnet.build("resnet18", 10, "imagenet21k", offline=True)


def test_offline_imagenet_without_cache_is_an_error_not_random_weights():
    with pytest.raises(WeightsError) as err:
        resnet.build("resnet152", 10, "imagenet", offline=True)
    message = str(err.value)
    assert "resnet152-f82ba261.pth" in message and "offline" in message and "--weights" in message


def test_imagenet_from_hub_cache_is_hash_checked(tmp_path):
    weights = tvm.ResNet18_Weights.IMAGENET1K_V1
    target = tmp_path / "torch-home" / "hub" / "checkpoints"
    torch.hub.set_dir(str(tmp_path / "torch-home" / "hub"))
    target.mkdir(parents=True)
    torch.save(tvm.resnet18().state_dict(), target / weights.url.rsplit("/", 1)[-1])
    with pytest.raises(WeightsError, match="fails its hash check"):  # random weights != published hash
        resnet.build("resnet18", 10, "imagenet", offline=True)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": Exploit()}, handle)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        resnet.build("resnet18", 10, str(path), offline=True)
    assert not marker.exists()


def test_freeze_keeps_backbone_and_bn_statistics_fixed():
    model = resnet.build("digits-resnet", 5, "random", offline=True).model
    resnet.freeze(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16) * 3 + 1), torch.arange(8) % 5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"body.fc.weight", "body.fc.bias"}
    assert resnet.trainable_parameters(model) == model.head.weight.numel() + model.head.bias.numel()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_freeze_can_leave_a_block_trainable():
    model = resnet.freeze(resnet.build("digits-resnet", 5, "random", offline=True).model,
                          trainable=("body.layer4", "body.fc"))
    bns = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert bns and all(n.startswith("body.layer4") for n in bns)


@pytest.mark.parametrize("res", [8, 16, 32])
def test_digits_resnet_and_preprocess_shapes(res):
    built = resnet.build("digits-resnet", 5, "random", offline=True)
    prep = resnet.Preprocess(res, built.mean, built.std)
    x = prep(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))
    assert x.shape == (4, 3, res, res) and x.is_contiguous(memory_format=torch.channels_last)
    out = built.model(x)
    assert out.shape == (4, 5) and torch.isfinite(out).all()

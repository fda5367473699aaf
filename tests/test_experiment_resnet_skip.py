import copy
import json

import pytest
import torch
import torchvision.models as tvm

from atml import cli
from atml.errors import UsageError
from atml.models import factory, resnet


@pytest.mark.slow
def test_with_skips_on_outputs_equal_torchvision_resnet152(tmp_path):
    torch.manual_seed(0)
    reference = tvm.resnet152().eval()
    path = tmp_path / "r152.pth"
    torch.save(reference.state_dict(), path)
    model = factory.create("resnet152", str(path), family="cnn", num_classes=1000).model.eval()
    model.body.fc.load_state_dict(reference.fc.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-4)
        ablated = copy.deepcopy(model)
        resnet.remove_skips(ablated, resnet.default_ablation(ablated))
        assert not torch.allclose(ablated(x), reference(x), atol=1e-2)


def test_ablated_block_computes_relu_of_its_residual_branch():
    model = factory.create("resnet50", "random", family="cnn", num_classes=10).model.eval()
    assert resnet.default_ablation(model) == ["layer2.1", "layer3.1", "layer4.1"]
    resnet.remove_skips(model, ["layer3.1"])
    block = resnet.residual_blocks(model)["layer3.1"]
    x = torch.randn(2, 1024, 4, 4)
    with torch.no_grad():
        branch = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))))
        assert torch.allclose(block(x), torch.relu(branch), atol=1e-6)
        untouched = resnet.residual_blocks(model)["layer3.2"]
        assert not isinstance(untouched.downsample, resnet.NoSkip)


def test_projection_blocks_are_refused_with_the_valid_list():
    model = factory.create("resnet50", "random", family="cnn", num_classes=10).model
    with pytest.raises(UsageError, match=r"'layer2.0' is a projection .* ablated: layer1.1, layer1.2, layer2.1"):
        resnet.remove_skips(model, ["layer2.0"])
    with pytest.raises(UsageError, match="no residual block 'layer9.1'"):
        resnet.remove_skips(model, ["layer9.1"])


@pytest.mark.slow
def test_skip_experiment_smoke(tmp_path):
    assert cli.main(["run", "resnet.skip", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    results = json.loads((run / "results.json").read_text())
    m = results["metrics"]
    # removing the skips changes the network: the same head on its features lands elsewhere
    assert m["val_loss_ablated_head"] != pytest.approx(m["val_loss_intact_head"], rel=1e-3)
    assert m["val_loss_ablated_blocks"] != pytest.approx(m["val_loss_intact_blocks"], rel=1e-3)
    for name in ("layer2", "layer3", "layer4"):
        assert m[f"grad_in_{name}_intact_blocks"] > 0 and m[f"grad_in_{name}_ablated_blocks"] > 0
    assert results["data"]["blocks"] == ["layer2.1", "layer3.1", "layer4.1"]
    assert {"figures/curves.png", "figures/gradient_flow.png"} <= set(results["figures"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("grad_param" in r for r in rows if r["stage"].endswith("blocks") and r["phase"] == "train")


def test_skip_experiment_refuses_a_projection_block_before_training(tmp_path, capsys):
    code = cli.main(["run", "resnet.skip", "--preset", "smoke", "--set", "blocks=[layer3.0]", "--out", str(tmp_path)])
    assert code == 2 and "projection" in capsys.readouterr().err
    (run,) = list(tmp_path.iterdir())
    assert not (run / "checkpoints").exists()

"""Any timm ViT (register tokens, other patch sizes, headless backbones) or transformers ViT folder in vit.*."""

import json

import pytest
import torch
from safetensors.torch import save_file

from atml import cli
from atml.analysis import attention as att
from atml.errors import UsageError, WeightsError
from atml.models import factory, vit

REGISTERS = "timm/vit_small_patch14_reg4_dinov2"  # class token + 4 registers, patch 14, no classifier


@pytest.fixture(scope="module")
def dinov2():
    torch.manual_seed(0)
    return factory.create(REGISTERS, "random", input_size=56).model


def test_register_tokens_and_the_patch_size_come_from_the_model(dinov2):
    assert dinov2.num_prefix_tokens == 5 and dinov2.grid == 4 and dinov2.arch.patch_size == 14
    assert not dinov2.has_head and dinov2.arch.image_size == 56
    x = torch.randn(2, 3, 56, 56)
    tokens = dinov2.tokens(x)
    assert tokens.shape == (2, 5 + 16, 384)
    pooled = vit.pooled_features(dinov2, x)
    torch.testing.assert_close(pooled[:, :384], tokens[:, 0])
    torch.testing.assert_close(pooled[:, 384:], tokens[:, 5:].mean(1))  # registers are not patches
    with dinov2.attention() as maps:
        dinov2(x)
    assert len(maps) == 12 and maps[0].shape == (2, 6, 21, 21)
    cls = att.cls_to_patches(maps[-1], dinov2.num_prefix_tokens)
    assert cls.shape == (2, 6, 16)
    torch.testing.assert_close(cls.sum(-1), torch.ones(2, 6))
    assert att.rollout(maps, dinov2.num_prefix_tokens).shape == (2, 16)
    keep = torch.tensor([[0, 3, 7], [1, 2, 15]])
    dropped = vit.drop_tokens(dinov2.embed(x), keep, dinov2.num_prefix_tokens)
    assert dropped.shape == (2, 5 + 3, 384)
    torch.testing.assert_close(dropped[:, :5], dinov2.embed(x)[:, :5])


def test_a_headless_backbone_gets_a_fitted_linear_head(dinov2):
    weight, bias = torch.randn(3, 384), torch.zeros(3)
    model = factory.create(REGISTERS, "random", input_size=56).model
    model.set_head(weight, bias, ["a", "b", "c"])
    assert model.has_head and model.classes == ["a", "b", "c"]
    x = torch.randn(2, 3, 56, 56)
    torch.testing.assert_close(model(x), model.model.forward_head(model.tokens(x), pre_logits=True) @ weight.T)


@pytest.mark.parametrize("arch, message", [
    ("timm/convnext_atto", "is a ConvNeXt, not a VisionTransformer"),
    ("timm/vit_medium_patch16_reg4_gap_256", "has no class token"),
    ("timm/vit_nope", "timm has no model 'vit_nope'"),
])
def test_a_timm_model_the_vit_experiments_cannot_read_is_one_line(arch, message, tmp_path, capsys):
    code = cli.main(["run", "vit.attention", "--preset", "smoke", "--set", f"arch={arch}", "--set", "weights=random",
                     "--out", str(tmp_path)])
    assert code == 2 and message in capsys.readouterr().err


def test_timm_vit_weights_from_the_hub_cache_and_local_files(tmp_path, plant_hub_file):
    import timm

    source = timm.create_model("vit_tiny_patch16_224")
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match="offline mode forbids downloading"):
        factory.create("timm/vit_tiny_patch16_224", "imagenet", offline=True)
    plant_hub_file(timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id, "model.safetensors",
                   tmp_path / "model.safetensors")
    built = factory.create("timm/vit_tiny_patch16_224", "imagenet", offline=True)
    model, info = built.model, built.info
    assert torch.equal(model.model.pos_embed, source.pos_embed) and len(model.classes) == 1000
    assert "vit_tiny_patch16_224" in info.description and info.sha256
    built = factory.create("timm/vit_tiny_patch16_224", str(tmp_path / "model.safetensors"))
    local, info = built.model, built.info
    assert torch.equal(local.model.head.weight, source.head.weight) and info.file.endswith("model.safetensors")


def test_backend_hf_takes_the_shape_of_any_transformers_vit_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=48, patch_size=12, hidden_size=48, num_hidden_layers=2,
                                    num_attention_heads=3, intermediate_size=96,
                                    id2label={i: f"c{i}" for i in range(3)}, label2id={f"c{i}": i for i in range(3)})
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "folder")
    (tmp_path / "folder" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4] * 3,
                                                                               "image_std": [0.2] * 3}))
    model = factory.create(vit.AUTO, str(tmp_path / "folder"), backend="hf").model
    assert (model.grid, model.arch.patch_size, model.arch.dim, model.preprocessing.mean) == (4, 12, 48, (0.4, 0.4, 0.4))
    assert model.classes == ["c0", "c1", "c2"]
    assert cli.main(["run", "vit.attention", "--preset", "smoke", "--set", "backend=hf", "--set", "arch=auto",
                     "--weights", str(tmp_path / "folder"), "--out", str(tmp_path / "runs")]) == 0
    with pytest.raises(UsageError, match="takes its shape from a transformers folder"):
        factory.create(vit.AUTO, "random")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["timm/vit_tiny_patch16_224", REGISTERS])
@pytest.mark.parametrize("experiment", ["vit.attention", "vit.masking"])
def test_vit_experiments_run_on_non_deit_vits(experiment, arch, tmp_path):
    argv = ["run", experiment, "--preset", "smoke", "--set", f"arch={arch}", "--set", "weights=random",
            "--out", str(tmp_path)]
    if arch == REGISTERS:
        argv += ["--set", "input_size=56"]
    if experiment == "vit.masking":
        argv += ["--set", "limit=40", "--set", "seeds=1", "--set", "ratios=[0.0,0.5]"]
    assert cli.main(argv) == 0
    results = json.loads((next(tmp_path.iterdir()) / "results.json").read_text())
    assert results["status"] == "ok"
    if experiment == "vit.attention":
        grid = 4 if arch == REGISTERS else 14
        assert results["metrics"]["grid"] == grid
        assert results["metrics"]["max_entropy_nats"] == pytest.approx(2 * __import__("math").log(grid))
    else:
        assert results["metrics"]["acc_random_mean_0"] >= results["metrics"]["acc_random_mean_50"] - 0.5
        if arch == REGISTERS:
            assert any("logistic-regression probe" in n for n in results["notes"])


def test_without_a_network_a_hub_model_is_one_line_at_once_not_retries(monkeypatch):
    import socket

    import huggingface_hub

    from atml.models import weights as weights_lib

    calls = []
    real = huggingface_hub.hf_hub_download

    def counted(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        return real(*args, **kwargs)

    def unreachable(*_args, **_kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", counted)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(WeightsError) as err:
        weights_lib.timm_pretrained_file("vit_small_patch16_384", offline=False)  # a model no test puts in the cache
    assert calls == [True]  # only the cache was asked: no download tried against an unreachable hub
    assert "cannot be reached (Network is unreachable)" in str(err.value) and "\n" not in str(err.value)

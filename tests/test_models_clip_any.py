"""Any open_clip model in clip.* (--set model=... pretrained=...), SigLIP's sigmoid loss included."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from atml import cli
from atml.errors import WeightsError
from atml.models import factory
from atml.suite.clip import config as clip_config


def _run(tmp_path, *argv):
    out = tmp_path / "runs"
    code = cli.main(["run", *argv, "--out", str(out)])
    return code, (next(out.iterdir()) if out.exists() and any(out.iterdir()) else None)


def test_model_and_pretrained_are_open_clips_words_for_arch_and_weights():
    from atml import config

    cfg = config.build(clip_config.GapConfig, {"x": {}}, "x", ["model=RN50", "pretrained=random"])
    assert (cfg.arch, cfg.weights) == ("RN50", "random")


@pytest.mark.parametrize("argv, message", [
    (["--set", "model=ViT-Q-99"], "arch='ViT-Q-99' is not an open_clip model"),
    (["--set", "model=ViT-B-16", "--set", "pretrained=laion9"], "weights='laion9' is not known for ViT-B-16"),
    (["--set", "model=ViT-B-16", "--set", "pretrained=laion2b_s34b_b88k", "--offline"],
     "are not in the Hugging Face cache and offline mode forbids downloading"),
])
def test_unknown_models_tags_and_missing_weights_are_one_line(argv, message, tmp_path, capsys):
    code, _ = _run(tmp_path, "clip.gap", "--preset", "smoke", *argv)
    assert code in (2, 3) and message in capsys.readouterr().err  # usage (2) or weights (3)


@pytest.mark.slow
def test_a_pretrained_tag_comes_from_the_hub_cache_hash_checked(tmp_path, plant_hub_file):
    import open_clip

    source = open_clip.create_model("RN50", pretrained=None)
    save_file(source.state_dict(), tmp_path / "open_clip_model.safetensors")
    repo = open_clip.get_pretrained_cfg("RN50", "yfcc15m")["hf_hub"].strip("/")
    blob = plant_hub_file(repo, "open_clip_model.safetensors", tmp_path / "open_clip_model.safetensors")
    built = factory.create("RN50", "yfcc15m", offline=True)
    model, info = built.model, built.info
    assert torch.equal(model.model.visual.conv1.weight, source.visual.conv1.weight)
    assert info.spec == "yfcc15m" and repo in info.description and info.sha256 == blob.name
    assert model.preprocessing.input_size == 224 and model.arch.context_length == 77 and not model.sigmoid
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(WeightsError, match="fails its hash check"):
        factory.create("RN50", "yfcc15m", offline=True)


@pytest.mark.slow
def test_clip_gap_runs_on_a_non_default_open_clip_model(tmp_path):
    code, run = _run(tmp_path, "clip.gap", "--preset", "smoke", "--set", "model=RN50", "--set", "pretrained=random",
                     "--set", "per_class=3", "--set", "random_init=false")
    assert code == 0
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok" and results["notes"][0].startswith("Model: open_clip RN50")
    assert 0 <= results["metrics"]["centroid_distance"] <= 2
    assert json.loads((run / "env.json").read_text())["sources"]["weights"]["spec"] == "random"


@pytest.fixture
def siglip_tokenizer(tmp_path, plant_hub_file):
    """A small word-level tokenizer planted as SigLIP's (the real one needs the network), in the hub's layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<unk>", "</s>", "a", "photo", "of", "the", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "tok"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "</s>"}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        plant_hub_file("timm/ViT-B-16-SigLIP", name, folder / name)


@pytest.mark.slow
def test_siglip_is_read_as_a_sigmoid_model_and_says_what_its_numbers_mean(tmp_path, siglip_tokenizer):
    model = factory.create("ViT-B-16-SigLIP", "random", offline=True).model
    assert model.sigmoid and model.arch.context_length == 64 and model.preprocessing.mean == (0.5, 0.5, 0.5)
    assert model.tokenize(["a photo of the cat."]).shape == (1, 64)
    code, run = _run(tmp_path, "clip.zeroshot", "--preset", "smoke", "--set", "model=ViT-B-16-SigLIP",
                     "--set", "test_limit=12", "--offline")
    assert code == 0
    notes = json.loads((run / "results.json").read_text())["notes"]
    assert any("pairwise sigmoid loss" in n and "independent sigmoids" in n for n in notes)


def test_open_clip_preprocessing_is_converted_once_in_the_registry(monkeypatch):
    """The builder takes the tag's (or, for random weights, the model's) preprocessing from the registry entry, which
    converted open_clip's description once; building converts nothing again."""
    from atml.models import factory, registry

    entry = registry.lookup("clip", "RN50")  # the entry, converted (and cached) before the count starts
    calls: list[object] = []
    real = registry.preprocessing_from
    monkeypatch.setattr(registry, "preprocessing_from", lambda *a, **k: calls.append(a) or real(*a, **k))
    built = factory.create("RN50", "random", family="clip")
    assert calls == []
    assert built.model.preprocessing == dataclasses.replace(entry.preprocessing, input_size=224, crop_pct=1.0)

"""The ViT wrapper: one attention API for timm and transformers, token dropping, weights rules."""

import math

import pytest
import torch

from atml.analysis import attention as att
from atml.errors import UsageError, WeightsError
from atml.models import factory, vit
from atml.suite.vit import masking as vit_exp


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    timm_vit = factory.create("vit-digits", "random", num_classes=5).model
    hf_vit = vit.HFViT(vit.hf_from_timm(timm_vit.model, timm_vit.arch, timm_vit.classes), timm_vit.arch,
                       timm_vit.preprocessing, timm_vit.classes)
    x = torch.randn(3, 3, 32, 32)
    return timm_vit, hf_vit, x


def test_timm_and_transformers_give_the_same_logits_and_attention(pair):
    timm_vit, hf_vit, x = pair
    with torch.no_grad():
        assert torch.allclose(timm_vit(x), timm_vit.model(x), atol=1e-6)  # the split forward is the model's own
        assert torch.allclose(hf_vit(x), hf_vit.model(x).logits, atol=1e-6)
        assert torch.allclose(timm_vit(x), hf_vit(x), atol=1e-5)
        with timm_vit.attention() as a, hf_vit.attention() as b:
            timm_vit(x)
            hf_vit(x)
    assert len(a) == len(b) == 4
    for p, q in zip(a, b):
        assert p.shape == (3, 3, 65, 65)
        assert torch.allclose(p, q, atol=1e-5)
        assert torch.allclose(p.sum(-1), torch.ones(3, 3, 65), atol=1e-5)  # rows are probabilities


def test_attention_capture_leaves_the_model_as_it_was(pair):
    timm_vit, hf_vit, x = pair
    for model in (timm_vit, hf_vit):
        with torch.no_grad():
            before = model(x)
            with model.attention() as maps:
                during = model(x)
            after = model(x)
        assert maps and torch.allclose(before, during, atol=1e-5) and torch.equal(before, after)
        hooks = [m for m in model.modules() if m._forward_hooks]
        assert hooks == []  # every hook removed
    assert all(block.attn.fused_attn for block in timm_vit.model.blocks)  # back on the fused kernel
    assert hf_vit.model.config._attn_implementation == "sdpa"


def test_timm_fused_flag_is_restored(pair):
    timm_vit, _, _ = pair
    flags = [b.attn.fused_attn for b in timm_vit.model.blocks]
    with timm_vit.attention():
        assert not any(b.attn.fused_attn for b in timm_vit.model.blocks)
    assert [b.attn.fused_attn for b in timm_vit.model.blocks] == flags


def test_deit_small_attention_is_14x14_plus_cls():
    built = factory.create(vit.DEIT_SMALL, "random")
    model, info = built.model, built.info
    assert not info.pretrained and len(model.classes) == 1000 and model.classes[281].startswith("tabby")
    photo = torch.randint(0, 256, (1, 3, 300, 451), dtype=torch.uint8)  # any size: the model's preprocessing
    with torch.no_grad(), model.attention() as maps:
        model(model.preprocess(photo))
    assert len(maps) == 12 and maps[-1].shape == (1, 6, 197, 197) and model.grid == 14


def test_dropping_tokens(pair):
    timm_vit, hf_vit, x = pair
    everything = torch.arange(64).expand(3, -1)
    with torch.no_grad():
        assert torch.allclose(timm_vit(x, everything), timm_vit(x), atol=1e-5)
        kept = torch.tensor([[0, 5, 9]] * 3)
        assert torch.allclose(timm_vit(x, kept), hf_vit(x, kept), atol=1e-5)
        assert timm_vit.encode(vit.drop_tokens(timm_vit.embed(x), kept)).shape == (3, 4, 96)


def test_hf_folder_round_trip_and_bad_folder(pair, tmp_path):
    _, hf_vit, x = pair
    hf_vit.model.save_pretrained(tmp_path / "hf")
    built = factory.create("vit-digits", str(tmp_path / "hf"), backend="hf")
    loaded, info = built.model, built.info
    with torch.no_grad():
        assert torch.allclose(loaded(x), hf_vit(x), atol=1e-6)
    assert info.sha256 and info.file.endswith(".safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        factory.create("vit-digits", str(tmp_path / "empty") + "/", backend="hf")
    with pytest.raises(WeightsError, match="not \\(224, 16, 384, 12\\)"):
        factory.create(vit.DEIT_SMALL, str(tmp_path / "hf"), backend="hf")


def test_timm_state_dict_file_loads_into_both_backends(pair, tmp_path):
    timm_vit, _, x = pair
    path = tmp_path / "mine.pth"
    torch.save(timm_vit.model.state_dict(), path)
    for backend in ("timm", "hf"):
        built = factory.create("vit-digits", str(path), backend=backend)
        loaded, info = built.model, built.info
        with torch.no_grad():
            assert torch.allclose(loaded(x), timm_vit(x), atol=1e-5)
        assert info.sha256
    torch.save({"model": {"wrong": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="does not fit this ViT"):
        factory.create("vit-digits", str(tmp_path / "bad.pth"))


def test_imagenet_weights_offline_never_fall_back_to_random(tmp_path):
    with pytest.raises(WeightsError, match="deit_small_patch16_224-cd65a155.pth.*offline"):
        factory.create(vit.DEIT_SMALL, "imagenet", offline=True)
    # A file at the official name whose bytes are not the official ones fails the hash check.
    model = factory.create(vit.DEIT_SMALL, "random").model
    path = torch.hub.get_dir() + "/checkpoints/deit_small_patch16_224-cd65a155.pth"
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"model": model.model.state_dict()}, path)
    try:
        with pytest.raises(WeightsError, match="fails its hash check"):
            factory.create(vit.DEIT_SMALL, "imagenet", offline=True)
    finally:
        os.remove(path)


def test_rollout_entropy_and_similarity():
    n = 16
    uniform = torch.full((2, 3, n + 1, n + 1), 1 / (n + 1))
    flow = att.rollout([uniform, uniform])
    assert torch.allclose(flow, torch.full((2, n), 1 / n), atol=1e-6)
    cls = att.cls_to_patches(uniform)
    assert torch.allclose(att.entropy(cls), torch.full((2, 3), math.log(n)), atol=1e-5)
    assert torch.allclose(att.head_similarity(cls), torch.ones(2), atol=1e-5)
    one_hot = torch.zeros(1, 2, n)
    one_hot[0, 0, 0], one_hot[0, 1, 1] = 1, 1
    assert float(att.head_similarity(one_hot)) == 0.0 and torch.allclose(att.entropy(one_hot), torch.zeros(1, 2))
    # each patch attending only to itself: distance 0
    eye = torch.eye(n + 1).expand(1, 1, -1, -1)
    assert float(att.mean_distance(eye, grid=4, patch=8)) == 0.0


def test_masks():
    gen = torch.Generator().manual_seed(0)
    keep = vit_exp.random_keep(4, 64, 0.25, gen)
    assert keep.shape == (4, 48) and all(len(set(row.tolist())) == 48 for row in keep)
    centre = vit_exp.center_keep(2, 8, 0.25)  # a 4x4 block in the middle of 8x8
    assert centre.shape == (2, 48) and 27 not in centre[0].tolist() and 0 in centre[0].tolist()
    x = torch.ones(1, 3, 32, 32)
    filled = vit_exp.fill_masked(x, centre[:1], 8, torch.zeros(1, 3, 1, 1))
    assert float(filled.mean()) == pytest.approx(48 / 64) and float(filled[0, 0, 16, 16]) == 0.0


def test_rollout_of_non_uniform_maps_matches_the_product_from_the_last_layer_down():
    """Uniform maps hide the order of the product; random ones do not."""
    torch.manual_seed(0)
    tokens, heads = 5, 3
    maps = [torch.rand(2, heads, tokens, tokens) for _ in range(3)]
    maps = [m / m.sum(-1, keepdim=True) for m in maps]  # row-stochastic, far from uniform

    def residual(m):
        a = m.mean(1) + torch.eye(tokens)
        return a / a.sum(-1, keepdim=True)

    first, second, third = (residual(m) for m in maps)
    joint = third @ second @ first  # Abnar & Zuidema: A~(l) = A(l) A~(l-1)
    expected = joint[:, 0, 1:] / joint[:, 0, 1:].sum(-1, keepdim=True)
    assert torch.allclose(att.rollout(maps), expected, atol=1e-6)
    wrong_order = first @ second @ third
    assert not torch.allclose(expected, wrong_order[:, 0, 1:] / wrong_order[:, 0, 1:].sum(-1, keepdim=True), atol=1e-3)


def test_only_hub_errors_fall_back_to_the_release_file(monkeypatch):
    """'Not cached' falls back quietly; an unexpected error is not swallowed."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from atml.models import weights as weights_lib

    def not_cached(*_a, **_k):
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_cached)
    assert weights_lib.deit_snapshot(offline=True) is None

    def broken(*_a, **_k):
        raise TypeError("a bug")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    with pytest.raises(TypeError, match="a bug"):
        weights_lib.deit_snapshot(offline=True)


def test_attention_statistics_summed_layer_by_layer_match_the_whole_maps(pair):
    """vit.attention's pass keeps no layer's maps, one batch at a time; its numbers are those of all maps at once."""
    from atml.suite.vit import attention as exp

    model = pair[0]
    x = torch.randn(7, 3, 32, 32)
    with torch.no_grad(), model.attention() as maps:
        model(x)
    whole = [m.float() for m in maps]
    with torch.no_grad(), model.attention(lambda attn: None) as kept:
        model(x)
    assert kept == []  # with a consumer nothing is held
    one_pass = exp.attention_pass(model, iter(x.split(3)), keep_maps=True)
    stats = one_pass.stats()
    prefix = model.num_prefix_tokens
    for layer, attn in enumerate(whole):
        cls = att.cls_to_patches(attn, prefix)
        assert torch.allclose(stats["entropy"][layer], att.entropy(cls).mean(0), atol=1e-5)
        assert torch.allclose(stats["distance_px"][layer],
                              att.mean_distance(attn, model.grid, model.arch.patch_size, prefix), atol=1e-4)
        assert math.isclose(float(stats["similarity"][layer]), float(att.head_similarity(cls).mean()), abs_tol=1e-5)
    assert torch.allclose(one_pass.rollout, att.rollout(whole, prefix), atol=1e-6)
    assert torch.allclose(one_pass.last_cls, att.cls_to_patches(whole[-1], prefix), atol=1e-6)
    assert one_pass.images == 7 and one_pass.layers == len(whole)


def test_the_statistics_pass_computes_no_rollout(pair, monkeypatch):
    """The rollout (a T x T matmul per layer and image) is drawn for the shown images only."""
    from atml.suite.vit import attention as exp

    calls = []
    real = att.rollout_step
    monkeypatch.setattr(att, "rollout_step", lambda *a: calls.append(1) or real(*a))
    stats_pass = exp.attention_pass(pair[0], iter(torch.randn(4, 3, 32, 32).split(2)), keep_maps=False)
    assert calls == [] and stats_pass.images == 4 and stats_pass.stats()["entropy"].shape[0] == stats_pass.layers


def test_an_attention_that_cannot_fit_is_refused_in_one_line(pair, monkeypatch):
    from atml import runtime
    from atml.errors import UsageError
    from atml.suite.vit import attention as exp

    monkeypatch.setattr(runtime, "available_memory", lambda device: 1000)
    with pytest.raises(UsageError, match=r"needs about .* GB but 0\.0 GB is available on cpu; pass a smaller"):
        exp.attention_batch(pair[0], 64, torch.device("cpu"))
    monkeypatch.setattr(exp, "ATTENTION_BUDGET", 4 * 6 * 65 * 65 * 4 * 5)  # five images' worth
    monkeypatch.setattr(runtime, "available_memory", lambda device: 1 << 40)
    heads = exp._heads(pair[0])
    assert exp.attention_batch(pair[0], 64, torch.device("cpu")) == 5 * 6 // heads


@pytest.mark.slow
def test_deit_small_imagenet_on_backend_hf_is_the_hub_snapshot_through_the_one_resolver(tmp_path, plant_hub_file):
    """backend=hf reads DeiT-Small's ImageNet weights as facebook/deit-small-patch16-224's transformers snapshot in
    the Hugging Face cache, through weights.resolve like every other source (no side door before it)."""
    from atml.models import registry
    from atml.models import weights as weights_lib

    saved = factory.create(vit.DEIT_SMALL, "random", backend="hf").model
    saved.model.save_pretrained(tmp_path / "deit")
    for name in ("config.json", "model.safetensors"):
        plant_hub_file(registry.HF_DEIT, name, tmp_path / "deit" / name)
    entry = factory.find(vit.DEIT_SMALL, "vit")
    resolved = weights_lib.resolve(entry, "imagenet", offline=True, transformers=True)
    assert resolved.folder is not None and resolved.state is None and registry.HF_DEIT in resolved.info.description
    built = factory.create(vit.DEIT_SMALL, "imagenet", backend="hf", offline=True)
    assert isinstance(built.model, vit.HFViT) and built.info.spec == "imagenet" and built.info.sha256
    assert built.model.preprocessing == registry.MODELS[("vit", vit.DEIT_SMALL)].preprocessing
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(built.model(x), saved(x), atol=1e-5)
    with pytest.raises(UsageError, match="arch=auto takes its shape from a transformers folder"):
        factory.create("auto", "imagenet", family="vit")

"""The head trained on cached features sees the same inputs as the uncached path."""

import torch

from atml import config
from atml.models import factory, freezing, registry
from atml.models.preprocess import Preprocess
from atml.suite.resnet import common as resnet_common
from atml.suite.resnet import head as resnet_head
from atml.train.features import FrozenFeatures, HeadOnFrozen, extract
from atml.train.loop import Batches, Fit, MemoryRecorder, fit


def _frozen_model():
    torch.manual_seed(0)
    model = freezing.freeze(factory.create("digits-resnet", "random", family="cnn", num_classes=5).model)
    prep = Preprocess(registry.lookup("cnn", "digits-resnet").preprocessing, 16, channels_last=True)
    return model, FrozenFeatures(prep, model)


def test_cached_features_give_the_same_logits():
    model, frozen = _frozen_model()
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    head = resnet_common.new_head(model.num_features, 5, seed=3)
    cached, ips = extract(frozen, images, batch_size=16, device=torch.device("cpu"))
    uncached = HeadOnFrozen(frozen, head).train()  # train() must not wake the backbone's BN
    with torch.no_grad():
        assert torch.allclose(head(cached), uncached(images), atol=1e-5)
    assert ips > 0 and cached.shape == (40, model.num_features)


def test_training_on_cached_features_matches_the_uncached_path():
    model, frozen = _frozen_model()
    images = torch.randint(0, 256, (48, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(48) % 5
    features, _ = extract(frozen, images, batch_size=16, device=torch.device("cpu"))
    heads = []
    for inputs, wrap in ((features, lambda h: h), (images, lambda h: HeadOnFrozen(frozen, h))):
        head = resnet_common.new_head(model.num_features, 5, seed=7)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
        fit(Fit(wrap(head), optimizer, Batches((inputs, labels), 8, shuffle=True, seed=5), None, 3,
                torch.device("cpu"), MemoryRecorder(), say=lambda _m: None))
        heads.append(head)
    assert torch.allclose(heads[0].weight, heads[1].weight, atol=1e-4)
    assert not torch.allclose(heads[0].weight, resnet_common.new_head(model.num_features, 5, seed=7).weight)


def test_bench_runs_both_paths_and_reports_ratio(capsys):
    cfg = config.build(resnet_head.Config, resnet_head.PRESETS, "smoke", ["epochs=3"])
    figures = resnet_head.bench(cfg)
    out = capsys.readouterr().out
    assert "speed-up:" in out and "fp32 matrix-multiply rate measured in this run" in out and "channels_last" in out
    assert figures.naive_s > 0 and figures.atml_s > 0
    assert abs(figures.naive_result - figures.atml_result) < 1e-6
    assert 0 < figures.throughput.share_of_gemm < 1  # a ceiling the network exceeds is no ceiling

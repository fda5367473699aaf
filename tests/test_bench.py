"""`atml bench` for every family: both paths reach the same result, and the ratio is printed."""

import subprocess
import sys
from pathlib import Path

import pytest

from atml import config
from atml.suite import registry

ROOT = Path(__file__).resolve().parents[1]


def _bench(name, *overrides):
    exp = registry().get(name)
    cfg = config.build(exp.config_cls, exp.presets, "smoke", list(overrides))
    return exp.bench(cfg)


@pytest.mark.parametrize("name, overrides", [
    ("vae.train", ["epochs=2"]),
    ("gan.dcgan", ["epochs=1"]),
])
def test_data_path_benches_train_the_same_model_on_both_paths(capsys, name, overrides):
    figures = _bench(name, *overrides)
    out = capsys.readouterr().out
    assert "naive (per-sample PIL DataLoader)" in out and "atml (in-memory batches)" in out and "speed-up:" in out
    # same data order, initialisation and noise: the same final loss, so the timing compares like with like
    assert figures.naive_result == pytest.approx(figures.atml_result, rel=1e-5)
    assert figures.naive_s > 0 and figures.atml_s > 0 and 0 < figures.throughput.share_of_gemm < 2


def test_vit_pooling_bench_reuses_features(capsys):
    figures = _bench("vit.pooling", "epochs=2")
    out = capsys.readouterr().out
    assert "atml (feature cache)" in out and "fused_attention" in out and "unfused_attention" in out
    assert figures.naive_result == pytest.approx(figures.atml_result, abs=0.05)


def test_clip_bench_reuses_embeddings(capsys, monkeypatch):
    """The cached path embeds the images once for the three experiments, the naive one three times (counted, not
    timed: a timing on a shared machine can go either way)."""
    from atml.suite.clip import common

    computed: list[int] = []
    real = common.compute_embeddings
    monkeypatch.setattr(common, "compute_embeddings", lambda model, images, *a: computed.append(len(images))
                        or real(model, images, *a))
    figures = _bench("clip.zeroshot")
    out = capsys.readouterr().out
    assert "atml (embedding cache)" in out and "3 experiments" in out
    assert figures.naive_result == figures.atml_result  # the very same embeddings
    assert len(computed) == 3 + 1 and len(set(computed)) == 1  # naive: once per experiment; atml: once in all


def test_every_family_has_a_bench():
    families = {exp.name.split(".")[0] for exp in registry()}
    with_bench = {exp.name.split(".")[0] for exp in registry() if exp.bench is not None}
    assert families == with_bench == {"resnet", "vit", "vae", "clip", "gan", "compare"}


@pytest.mark.slow
def test_gpu_check_script_checks_atml_itself_on_the_cpu(tmp_path):
    """The GPU check runs atml's experiments, atml's paths beside timm's loops and torchrun; here on the CPU."""
    import json

    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu", "--quick", "--compile",
                           "off", "--experiments", "resnet.head,vit.pooling", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "all parts ran" in done.stdout
    report = json.loads(out.read_text())
    assert {"card", "date", "torch"} <= report.keys()
    assert [(r["experiment"], r["status"]) for r in report["experiments"]] == [("resnet.head", "ok"),
                                                                              ("vit.pooling", "ok")]
    pairs = {p["name"]: p for p in report["speed"]["pairs"]}
    assert set(pairs) == {"ResNet-152 frozen features", "DeiT-S frozen features", "ResNet-152 full fine-tuning"}
    assert all(p["atml"] > 0 and p["peer"] > 0 and p["ratio"] == p["atml"] / p["peer"] for p in pairs.values())
    assert report["torchrun"]["returncode"] == 0
    assert report["torchrun"]["distributed"] == {"backend": "gloo", "world": 1}  # a group of one, not skipped
    assert report["failed"] == []


def test_optional_torch_compile_of_the_frozen_feature_pass():
    import torch

    from atml import runtime
    from atml.errors import UsageError

    def fn(x):
        return torch.nn.functional.gelu(x @ x.T).sum(1)

    assert runtime.maybe_compile(fn, "off") is fn
    x = torch.randn(16, 8)
    assert torch.allclose(runtime.maybe_compile(fn, "default")(x), fn(x), atol=1e-5)
    exp = registry().get("vit.pooling")
    with pytest.raises(UsageError, match="compile='yes' is not valid"):
        config.build(exp.config_cls, exp.presets, "smoke", ["compile=yes"])
    assert config.build(exp.config_cls, exp.presets, "smoke", ["compile=off"]).compile == "off"  # not YAML's False


def test_a_rate_leaves_out_the_warm_up():
    """The first call (CUDA context, cuDNN autotuning, compilation) is not timed."""
    import time

    import torch

    from atml import benchmark as bench

    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.5 if len(calls) == 1 else 0.01)

    rate = bench.images_per_s(fn, 10, torch.device("cpu"), calls=5, warmup=1)
    assert len(calls) == 6 and rate > 10 * 5 / 0.2


@pytest.mark.parametrize("device, precision", [("cpu", "fp32"), ("cuda", "bf16")])
def test_a_rate_is_compared_with_the_gemm_ceiling_of_its_own_precision(monkeypatch, device, precision):
    import torch

    from atml import benchmark as bench
    from atml import runtime

    asked = []
    monkeypatch.setattr(runtime, "matmul_gflops", lambda *a, dtype=torch.float32, **k: asked.append(dtype) or 1000.0)
    out = bench.ceiling(100.0, 2e9, torch.device(device))
    assert asked == [{"fp32": torch.float32, "bf16": torch.bfloat16}[precision]]
    assert out["precision"] == precision and out["share_of_gemm"] == pytest.approx(0.2)


def test_a_bench_never_touches_the_users_cache(tmp_path, monkeypatch):
    """clip.zeroshot's bench clears embedding caches: only its own temporary one."""
    import os

    cache = tmp_path / "user-cache"
    monkeypatch.setenv("ATML_CACHE", str(cache))
    mine = cache / "clip-embeddings" / "clip-digits-0123456789ab.pt"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's embeddings")
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    _bench("clip.zeroshot")
    assert mine.read_bytes() == b"the user's embeddings"
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before
    assert os.environ["ATML_CACHE"] == str(cache)


@pytest.mark.slow
def test_speed_command_prints_ratios_against_timm(tmp_path):
    import json

    out = tmp_path / "speed.json"
    done = subprocess.run([sys.executable, "-m", "atml", "speed", "--device", "cpu", "--quick", "--models",
                           "resnet152", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ResNet-152 frozen features" in done.stdout and "timm loop" in done.stdout and "ratio" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["precision"] == "fp32" and {p["peer_name"] for p in figures["pairs"]} == {"timm loop", "plain step"}
    bad = subprocess.run([sys.executable, "-m", "atml", "speed", "--models", "vgg"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--models vgg is not valid" in bad.stderr


def test_a_bench_at_chance_never_reports_the_same_result(capsys):
    from atml import benchmark as bench
    from atml.reporting import readme

    throughput = {"flops_per_image": 1e9, "achieved_gflops": 10.0, "share_of_gemm": 0.5, "precision": "fp32",
                  "gemm_gflops": 20.0, "images_per_s": 10.0}
    figures = bench.summarise("resnet.head", {"naive": (4.0, 0.2007), "atml": (1.0, 0.2007)}, throughput, chance=0.2)
    assert figures.at_chance and "both at chance (0.20)" in capsys.readouterr().out
    row = readme.bench_section({"device_name": "cpu", "torch": "2", "date": "d", "benches": [
        {**figures.to_json(), "command": "atml bench resnet.head", "naive_label": "naive", "atml_label": "atml"}]},
        "bench.json")
    assert "no: both at chance (0.20)" in row and "0.2007 both" not in row
    learned = bench.summarise("resnet.head", {"naive": (4.0, 0.93), "atml": (1.0, 0.93)}, throughput, chance=0.2)
    assert not learned.at_chance


def test_a_bench_reads_back_as_written_and_the_committed_files_read_typed():
    import json
    from pathlib import Path

    from atml.results import Bench, Throughput

    rate = Throughput({"channels_last": 120.0, "contiguous": 100.0}, 2e9, "fp32", 500.0, 240.0, 0.48)
    bench = Bench("t", "naive", "atml", 2.0, 1.0, 2.0, "final val acc", 0.5, 0.5, 0.1, False, rate, "resnet.head",
                  "atml bench resnet.head --preset demo")
    assert Bench.from_json(json.loads(json.dumps(bench.to_json()))) == bench
    assert bench.to_json()["throughput"]["images_per_s_channels_last"] == 120.0  # the files' flat keys
    committed = json.loads((Path(__file__).parents[1] / "benchmarks" / "bench-cpu.json").read_text())
    read = [Bench.from_json(b) for b in committed["benches"]]
    assert all(b.command.startswith("atml bench ") and b.throughput.rates for b in read)

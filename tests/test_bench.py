"""`atml bench` for every family: both paths reach the same result, and the ratio is printed."""

import subprocess
import sys
from pathlib import Path

import pytest

from atml import config
from atml.experiments import registry

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
    assert figures["naive_val_acc"] == pytest.approx(figures["atml_val_acc"], rel=1e-5)
    assert figures["naive_s"] > 0 and figures["atml_s"] > 0 and 0 < figures["share_of_gemm"] < 2


def test_vit_pooling_bench_reuses_features(capsys):
    figures = _bench("vit.pooling", "epochs=2")
    out = capsys.readouterr().out
    assert "atml (feature cache)" in out and "fused_attention" in out and "unfused_attention" in out
    assert figures["naive_val_acc"] == pytest.approx(figures["atml_val_acc"], abs=0.05)


def test_clip_bench_reuses_embeddings(capsys):
    figures = _bench("clip.zeroshot")
    out = capsys.readouterr().out
    assert "atml (embedding cache)" in out and "3 experiments" in out
    assert figures["naive_val_acc"] == figures["atml_val_acc"]  # the very same embeddings
    assert figures["speedup"] > 1


def test_every_family_has_a_bench():
    families = {exp.name.split(".")[0] for exp in registry()}
    with_bench = {exp.name.split(".")[0] for exp in registry() if exp.bench is not None}
    assert families == with_bench == {"resnet", "vit", "vae", "clip", "gan"}


def test_gpu_check_script_runs_its_paths_on_the_cpu(tmp_path):
    """The GPU script's code paths (fp32/bf16, training steps, DDP with one process) on the CPU."""
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu", "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "all paths ran" in done.stdout and "DDP (gloo, 1 process)" in done.stdout
    import json

    report = json.loads(out.read_text())
    for model in ("resnet152", "deit_small", "clip_vit_b32"):
        assert {"infer_fp32", "train_fp32"} <= report[model].keys() and report[model]["train_fp32"] > 0
    assert report["ddp_resnet152"]["backend"] == "gloo"


def test_optional_torch_compile_of_the_frozen_feature_pass():
    import torch

    from atml import runtime
    from atml.errors import UsageError

    def fn(x):
        return torch.nn.functional.gelu(x @ x.T).sum(1)

    assert runtime.maybe_compile(fn, "off") is fn
    x = torch.randn(16, 8)
    assert torch.allclose(runtime.maybe_compile(fn, "default")(x), fn(x), atol=1e-5)
    with pytest.raises(UsageError, match="compile='fast' is not valid"):
        runtime.maybe_compile(fn, "fast")
    exp = registry().get("vit.pooling")
    with pytest.raises(UsageError, match="compile='yes' is not valid"):
        config.build(exp.config_cls, exp.presets, "smoke", ["compile=yes"])
    assert config.build(exp.config_cls, exp.presets, "smoke", ["compile=off"]).compile == "off"  # not YAML's False

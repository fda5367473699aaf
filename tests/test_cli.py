"""Every command of the CLI, and every error path, as a user types them."""

import json
import subprocess
import sys

import pytest
import torch

from atml import cli
from atml.train import loop

SMOKE = ["run", "resnet.head", "--preset", "smoke"]


def run_cli(*argv):
    return cli.main(list(argv))


def test_list_names_experiments_and_presets(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    assert "resnet.head" in out and "smoke, demo, full" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "resnet.nope"], "unknown experiment 'resnet.nope'; valid experiments: resnet.head"),
    (["run", "resnet.head", "--preset", "huge"], "unknown preset 'huge'; valid presets: smoke, demo, full"),
    (["run", "resnet.head", "--set", "epoch=3"], "unknown config key 'epoch'"),
    (["run", "resnet.head", "--set", "epochs=-1"], "epochs=-1 is not valid"),
    (["run", "resnet.head", "--set", "resolutions=[0]"], "resolutions=[0] is not valid"),
    (["run", "resnet.head", "--device", "tpu"], "device='tpu' is not valid"),
    (["bench", "resnet.nope"], "valid experiments: resnet.head"),
    (["run", "resnet.head", "--set", "lr=inf"], "config key 'lr' is 'inf'; use a finite number"),
    (["run", "resnet.head", "--set", "lr=nan"], "config key 'lr' is 'nan'; use a finite number"),
    (["run", "resnet.head", "--preset", "smoke", "--weights", "imagenet2"], "weights='imagenet2' is not known"),
])
def test_usage_errors_exit_2_with_valid_names(argv, message, capsys, tmp_path):
    assert run_cli(*argv, *(["--out", str(tmp_path)] if argv[0] == "run" else [])) == 2
    assert message in capsys.readouterr().err


def test_missing_data_exits_non_zero_before_training(tmp_path, capsys):
    code = run_cli(*SMOKE, "--set", "data=cifar10", "--data-dir", str(tmp_path / "nowhere"), "--offline",
                   "--out", str(tmp_path / "runs"))
    err = capsys.readouterr().err
    assert code == 3 and "CIFAR-10" in err and "is missing" in err and "--data-dir" in err
    run = next((tmp_path / "runs").iterdir())
    assert not (run / "checkpoints").exists()
    results = json.loads((run / "results.json").read_text())  # a failed run that says why, not a mystery folder
    assert results["status"] == "failed" and "is missing" in results["error"] and results["resumable"] is False


def test_an_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert run_cli(*SMOKE, "--out", str(blocker)) == 2
    err = capsys.readouterr().err
    assert f"--out {blocker} is a file, not a folder" in err and "Traceback" not in err


def test_resume_refuses_conflicting_options_and_applies_more_epochs(tmp_path, capsys):
    assert run_cli(*SMOKE, "--set", "epochs=1", "--set", "resolutions=[16]", "--out", str(tmp_path)) == 0
    run = next(tmp_path.iterdir())
    capsys.readouterr()
    assert run_cli("run", "resnet.head", "--resume", str(run), "--set", "lr=0.5") == 2
    assert "lr (saved 0.001, given 0.5)" in capsys.readouterr().err
    assert run_cli("run", "resnet.head", "--resume", str(run), "--preset", "demo") == 2
    assert "--preset demo conflicts" in capsys.readouterr().err
    assert run_cli("run", "resnet.head", "--resume", str(run), "--set", "epochs=2") == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 1, 2, 2]  # train and val of epoch 1, then the added epoch 2
    env = json.loads((run / "env.json").read_text())
    assert env["resumed_with"][-1]["changed"] == {"epochs": {"saved": 1, "now": 2}}
    assert "epochs: 2" in (run / "config.yaml").read_text()
    before = (run / "results.json").read_text()
    capsys.readouterr()
    assert run_cli("run", "resnet.head", "--resume", str(run)) == 0  # finished: says so, changes nothing
    assert "is already complete" in capsys.readouterr().out
    assert (run / "results.json").read_text() == before


def test_offline_imagenet_weights_are_an_error(tmp_path, capsys):
    code = run_cli(*SMOKE, "--weights", "imagenet", "--offline", "--out", str(tmp_path))
    assert code == 3 and "offline mode forbids downloading" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_and_console_script_entry(tmp_path):
    out = subprocess.run([sys.executable, "-m", "atml", "list"], capture_output=True, text=True, check=True)
    assert "resnet.head" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "atml", "run", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "valid experiments" in bad.stderr


def _records(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in rows]


def test_interrupted_run_resumes_to_the_same_weights_and_metrics(tmp_path, capsys, monkeypatch):
    assert run_cli(*SMOKE, "--out", str(tmp_path / "a")) == 0
    straight = next((tmp_path / "a").iterdir())

    real = loop._run_epoch

    def interrupt(job, epoch, *, train, **kwargs):
        if job.stage == "r32" and epoch == 2 and train:
            raise KeyboardInterrupt
        return real(job, epoch, train=train, **kwargs)

    monkeypatch.setattr(loop, "_run_epoch", interrupt)
    assert run_cli(*SMOKE, "--out", str(tmp_path / "b")) == 130
    broken = next((tmp_path / "b").iterdir())
    err = capsys.readouterr()
    assert f"--resume {broken}" in err.out and not (broken / "results.json").exists()
    monkeypatch.setattr(loop, "_run_epoch", real)

    assert run_cli("run", "resnet.head", "--resume", str(broken)) == 0
    for name in ("head_r16.pt", "head_r32.pt"):
        a = torch.load(straight / "checkpoints" / name, weights_only=True)["model"]
        b = torch.load(broken / "checkpoints" / name, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert _records(straight) == _records(broken)
    a, b = (json.loads((r / "results.json").read_text())["metrics"] for r in (straight, broken))
    assert a["val_acc_32"] == b["val_acc_32"] and a["best_val_acc_16"] == b["best_val_acc_16"]


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert run_cli("run", "resnet.head", "--resume", str(tmp_path)) == 3
    assert "not an atml run folder" in capsys.readouterr().err


def test_runs_never_share_a_folder(tmp_path):
    from atml.run_dir import RunDir

    a = RunDir.create(tmp_path, "x", "smoke")
    b = RunDir.create(tmp_path, "x", "smoke")
    assert a.path != b.path and a.path.exists() and b.path.exists()


def test_bench_command_prints_both_paths_and_the_ratio(capsys):
    assert run_cli("bench", "resnet.head", "--preset", "smoke") == 0
    out = capsys.readouterr().out
    assert "naive (backbone every epoch)" in out and "atml (feature cache)" in out and "speed-up:" in out


@pytest.mark.slow
def test_demo_runs_every_experiment_and_ends_with_the_report_path(tmp_path, capsys):
    """The whole suite through ``atml demo`` (at the smoke preset: the demo preset takes minutes)."""
    from atml.suite import registry

    assert run_cli("demo", "--preset", "smoke", "--out", str(tmp_path / "demo")) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == str(tmp_path / "demo" / "report" / "report.html")
    runs = sorted((tmp_path / "demo" / "runs").iterdir())
    ran = sorted(json.loads((r / "results.json").read_text())["experiment"] for r in runs)
    assert ran == sorted(registry().names())
    assert all(json.loads((r / "results.json").read_text())["preset"] == "smoke" for r in runs)
    assert run_cli("demo", "--out", str(tmp_path / "demo")) == 2  # never into a used folder


@pytest.mark.slow
def test_sigterm_keeps_checkpoints_prints_the_resume_command_and_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "atml", "run", "vae.train", "--preset", "smoke", "--set", "epochs=400",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*/checkpoints/baseline.pt")):
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    (run,) = list(out.iterdir())
    assert proc.returncode == 143 and "terminated" in stderr, stderr[-3000:]
    assert (stdout + stderr).count("terminated") + (stdout + stderr).count("interrupted") == 1  # said once
    assert f"atml run vae.train --resume {run}" in stdout
    done = torch.load(run / "checkpoints" / "baseline.pt", weights_only=True)["epoch"]
    assert 1 <= done < 400 and not (run / "results.json").exists()
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == sorted(epochs) and max(epochs) <= done + 1  # nothing past the epoch being interrupted


@pytest.mark.parametrize("experiment, extra", [("vit.attention", ["--set", "backend=hf", "--set", "arch=auto"]),
                                               ("resnet.head", []), ("clip.zeroshot", [])])
def test_a_weights_path_that_does_not_exist_is_named_before_any_run_folder(experiment, extra, tmp_path, capsys):
    missing = tmp_path / "path" / "that" / "does-not-exist"
    code = run_cli("run", experiment, "--preset", "smoke", *extra, "--weights", str(missing),
                   "--out", str(tmp_path / "runs"))
    err = capsys.readouterr().err
    assert code == 3 and f"{missing} does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, code", [(["--version"], 0), (["--help"], 0), (["list"], 0), (["models"], 0),
                                        (["run", "resnet.nope"], 2), (["run", "resnet.head", "--preset", "huge"], 2),
                                        (["sweep", "resnet.nope"], 2), (["run", "resnet.head", "--bogus"], 2),
                                        (["bench", "resnet.nope"], 2), (["run"], 2),
                                        (["run", "resnet.head", "--set", "epoch=3"], 2),
                                        (["sweep", "vae.train", "--set", "latent=3"], 2),
                                        (["run", "resnet.head", "--set", "epochs=-1"], 2),
                                        (["run", "compare.cka", "--preset", "demo", "--set", "models=[a]"], 2),
                                        (["run", "vae.train", "--preset", "smoke", "--set", "lr=abc"], 2),
                                        (["run", "clip.gap", "--set", "per_class=1"], 2),
                                        (["bench", "vit.pooling", "--preset", "smoke", "--set", "compile=yes"], 2),
                                        (["run", "gan.dcgan", "--set", "weights=imagenet"], 2)])
def test_the_prompt_answers_import_no_torch(argv, code):
    """--version, --help, list, models and these usage errors (bad --set values too: the families' ``config``
    modules import no torch) answer without torch, torchvision, scikit-learn or pandas (seconds on 2 cores):
    scripts/cli_latency.py times them."""
    probe = ("import sys\nfrom atml import cli\ntry:\n    code = cli.main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    code = e.code\nheavy = [m for m in ('torch', 'torchvision', 'sklearn', 'pandas', 'timm') "
             "if m in sys.modules]\nprint('HEAVY', heavy, 'CODE', code, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
    assert f"HEAVY [] CODE {code}" in done.stderr, done.stderr[-2000:]


def test_the_catalog_atml_list_reads_is_the_registry_s_own():
    from atml.suite import catalog

    assert catalog.FILE.read_text() == catalog.generate(), "run: python scripts/update_readme.py"


def test_the_catalog_builds_every_preset_as_the_registry_does():
    """The CLI's torch-free check builds each config from the same class and presets the run uses."""
    from atml import config as config_lib
    from atml.suite import catalog, registry

    reg = registry()
    for entry in catalog.entries():
        exp = reg.get(entry.name)
        for preset in entry.presets:
            assert entry.build(preset, []) == config_lib.build(exp.config_cls, exp.presets, preset), entry.name


def test_the_configs_default_epochs_of_the_demo_models_are_their_recipes():
    from atml.suite.clip import config as clip_config
    from atml.suite.vit import config as vit_config
    from atml.train import clip_recipe, vit_recipe

    assert vit_config.DEMO_VIT_EPOCHS == vit_recipe.Recipe.epochs
    assert clip_config.DEMO_CLIP_EPOCHS == clip_recipe.Recipe.epochs


def test_a_run_at_the_default_preset_without_its_data_names_the_demo_preset(tmp_path, capsys):
    """Without --preset, run and sweep both take full (one rule); its missing files say how to try it offline."""
    from atml import config as config_lib
    from atml.suite import registry
    from atml.sweeps import spec as spec_lib

    assert config_lib.DEFAULT_PRESET == "full"
    request = spec_lib.Request("vae.train")
    request.vary("latent_dim", [2, 3])
    assert spec_lib.expand(request, registry()).preset == "full"
    code = run_cli("run", "resnet.head", "--data-dir", str(tmp_path / "nowhere"), "--offline", "--out", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 3 and "atml run resnet.head --preset demo" in err and len(err.strip().splitlines()) == 1, err

"""Time the full preset's suite at its real sizes without the real files: the ``rehearsal`` preset.

Every experiment runs its ``rehearsal`` preset (the full preset on generated data of the
real shapes and counts, random weights of the real architectures) with at most
``--epochs`` epochs per training stage. Everything else (feature extraction, analyses,
figures) runs in full. The full-epoch time is then the measured wall time plus, for each
stage, its remaining epochs times its measured seconds per epoch; a row whose stages all
ran every epoch is "measured", the others "estimated".

    python scripts/suite_timing.py --device cuda --json benchmarks/suite-timing-H200.json
    python scripts/suite_timing.py --device cpu --train-limit 128 --eval-limit 32 --set batch_size=16  # reduced
    python scripts/suite_timing.py --device cuda --imagenet 50000 --experiments vit.classify,vit.masking

``--imagenet N`` adds an ImageNet-validation-format rehearsal: N generated JPEGs of 500x375
in ``val/<wnid>/`` (written once under ``$ATML_CACHE/rehearsal``), read with ``data=imagenet``
by the experiments that score a model on ImageNet's classes (vit.classify, vit.masking); the
first of them decodes it into the dataset cache, so its row includes the decoding.

On a GPU, utilisation is sampled with nvidia-smi while each experiment runs. Every row also
holds the run's map of where its time went (``env.json``'s ``time_by_work``, see
:mod:`atml.timemap`): building models, data, model compute (and its device time on CUDA),
host analyses, figures, writing and the rest, for the epochs that ran.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from atml import config as config_lib
from atml import runner, runtime
from atml.console import QUIET
from atml.data import rehearsal
from atml.suite import registry
from atml.train.loop import epoch_budget

TRAIN_LIMITS = ("train_limit",)
EVAL_LIMITS = ("val_limit", "test_limit", "limit", "eval_samples", "diag_samples", "stats_images")


@contextlib.contextmanager
def gpu_utilisation(device: torch.device) -> Iterator[list[int]]:
    """Samples of GPU utilisation (%) every 200 ms while the block runs (empty off CUDA or without nvidia-smi)."""
    samples: list[int] = []
    proc = None
    if device.type == "cuda":
        with contextlib.suppress(OSError):
            proc = subprocess.Popen(["nvidia-smi", f"--id={device.index or 0}", "--query-gpu=utilization.gpu",
                                     "--format=csv,noheader,nounits", "-lms", "200"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield samples
    finally:
        if proc is not None:
            proc.terminate()
            out, _ = proc.communicate(timeout=10)
            samples += [int(line) for line in out.split() if line.strip().isdigit()]


def limits(exp: Any, train: int, evaluation: int, extra: list[str]) -> list[str]:
    """``--set`` overrides for the fields this experiment's config has (size limits of 0: as the preset says)."""
    fields = set(config_lib.field_names(exp.config_cls))
    out = [f"{name}={train}" for name in TRAIN_LIMITS if train and name in fields]
    out += [f"{name}={evaluation}" for name in EVAL_LIMITS if evaluation and name in fields]
    return out + [item for item in extra if config_lib.parse_override(item)[0] in fields]


def time_experiment(name: str, device: torch.device, epochs: int, overrides: list[str], out: Path) -> dict[str, Any]:
    exp = registry().get(name)
    cfg = config_lib.build(exp.config_cls, exp.presets, "rehearsal", [f"device={device.type}", "offline=true",
                                                                      *overrides])
    with epoch_budget(epochs) as budget, gpu_utilisation(device) as util:
        started = time.perf_counter()
        run = runner.execute(exp, cfg, preset="rehearsal", out=out, report=QUIET)
        wall = time.perf_counter() - started
    results = json.loads((run.path / "results.json").read_text())
    spent = json.loads((run.path / "env.json").read_text()).get("time_by_work")
    remaining = sum((s["planned_epochs"] - s["run_epochs"]) * s["seconds"] / max(s["run_epochs"], 1)
                    for s in budget.stages)
    label = name + (" (data=imagenet)" if "data=imagenet" in overrides else "")
    return {"experiment": label, "status": results["status"], "wall_s": wall, "full_epochs_s": wall + remaining,
            "how": "measured" if remaining == 0 else "estimated", "overrides": overrides,
            "stages": [{**s, "s_per_epoch": s["seconds"] / max(s["run_epochs"], 1)} for s in budget.stages],
            "peak_memory_mb": results["metrics"].get("peak_memory_mb"),
            "gpu_utilisation_mean": sum(util) / len(util) if util else None, "time_by_work": spent,
            "data": results["sources"].get("data", {}).get("source")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--epochs", type=int, default=1, help="epochs run per training stage (the rest is estimated)")
    parser.add_argument("--train-limit", type=int, default=0, help="training images per experiment (0: all)")
    parser.add_argument("--eval-limit", type=int, default=0, help="evaluation images per experiment (0: as the preset)")
    parser.add_argument("--experiments", default="all", help="comma-separated names, all, or '' (none: with "
                        "--imagenet, only its rows)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config value for every experiment that has the key, e.g. batch_size=16 on a CPU")
    parser.add_argument("--imagenet", type=int, default=0, metavar="N",
                        help="also time vit.classify and vit.masking on N generated ImageNet-layout JPEGs (N: a "
                             "multiple of 1000; 50000 is ImageNet's validation set)")
    parser.add_argument("--not-timed-why", default="", metavar="TEXT",
                        help="why the experiments --experiments leaves out were not timed (written beside the table)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if args.imagenet % 1000:
        parser.error(f"--imagenet {args.imagenet}: use a multiple of 1000 (images per class x 1,000 classes)")
    device = runtime.select_device(args.device)
    names = registry().names() if args.experiments == "all" else [n for n in args.experiments.split(",") if n]
    if unknown := [n for n in names if n not in registry().names()]:
        parser.error(f"--experiments: unknown {', '.join(unknown)}; valid: {', '.join(registry().names())}")
    torch.backends.cudnn.benchmark = True
    card = runtime.environment(device, 0)["device_name"]
    print(f"suite timing: {card}, torch {torch.__version__}, rehearsal preset, at most {args.epochs} epoch(s) per "
          f"stage, train limit {args.train_limit or 'none'}, eval limit {args.eval_limit or 'as preset'}"
          + (f", {' '.join(args.overrides)}" if args.overrides else ""), flush=True)
    started = time.perf_counter()
    for name in rehearsal.NAMES:  # generated once, outside the timed runs
        rehearsal.load(name)
    jobs = [(name, limits(registry().get(name), args.train_limit, args.eval_limit, args.overrides)) for name in names]
    if args.imagenet:
        from atml.data import imagenet

        root = runtime.cache_dir() / "rehearsal" / f"imagenet-val-{args.imagenet}"
        if not (root / ".complete").is_file():
            imagenet.write_val_folder(root, per_class=args.imagenet // 1000, size=(375, 500),
                                      workers=len(os.sched_getaffinity(0)))
            (root / ".complete").write_text(str(args.imagenet))
        jobs += [(name, [*limits(registry().get(name), 0, args.eval_limit, args.overrides), "data=imagenet",
                         f"data_dir={root}", *(["limit=0"] if name == "vit.masking" and not args.eval_limit else [])])
                 for name in ("vit.classify", "vit.masking")]
    print(f"  rehearsal data ready in {time.perf_counter() - started:.0f} s", flush=True)
    rows: list[dict[str, Any]] = []
    header = {"card": card, "device": str(device), "torch": torch.__version__,
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "epochs_per_stage": args.epochs, "train_limit": args.train_limit, "eval_limit": args.eval_limit,
              "overrides": args.overrides}
    if left_out := [n for n in registry().names() if n not in names]:
        header |= {"not_timed": left_out, "not_timed_why": args.not_timed_why or "left out with --experiments"}
    with tempfile.TemporaryDirectory(prefix="atml-suite-timing-") as tmp:
        for name, overrides in jobs:
            row = guarded_time_experiment(name, device, args.epochs, overrides, Path(tmp))
            rows.append(row)
            if args.json:  # after every experiment: a run stopped part-way still leaves its rows
                write_report(args.json, header, rows, finished=False)
            if row["status"] == "crashed":
                print(f"  {name:<16} crashed: {row['error']}", flush=True)
                continue
            util = f"  GPU util {row['gpu_utilisation_mean']:.0f}%" if row["gpu_utilisation_mean"] is not None else ""
            main_stage = max(row["stages"], key=lambda s: s["planned_epochs"] * s["s_per_epoch"], default=None)
            per_epoch = (f"{main_stage['s_per_epoch']:.1f} s/epoch ({main_stage['stage']})" if main_stage
                         else "no training stage")
            print(f"  {name:<16} {row['status']:<6} ran {row['wall_s']:7.1f} s; full epochs "
                  f"{row['full_epochs_s']:8.1f} s "
                  f"({row['how']}); {per_epoch}; peak {row['peak_memory_mb'] or 0:,.0f} MB{util}", flush=True)
    report = write_report(args.json, header, rows, finished=True) if args.json else summarise(header, rows, True)
    print(f"whole suite at the full preset's epochs: {report['suite_s'] / 60:.1f} min ({report['suite_how']})",
          flush=True)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def guarded_time_experiment(name: str, device: torch.device, epochs: int, overrides: list[str],
                            out: Path) -> dict[str, Any]:
    """``time_experiment``, with a crash recorded as a row (the suite goes on to the next experiment)."""
    started = time.perf_counter()
    try:
        return time_experiment(name, device, epochs, overrides, out)
    except Exception as err:  # noqa: BLE001 - the timing reports every failure and goes on
        return {"experiment": name, "status": "crashed", "wall_s": time.perf_counter() - started,
                "error": f"{type(err).__name__}: {err}".splitlines()[0][:300],
                "traceback": traceback.format_exc()[-2000:], "overrides": overrides, "stages": []}


def summarise(header: dict[str, Any], rows: list[dict[str, Any]], finished: bool) -> dict[str, Any]:
    """The JSON report: the suite's total counts only the experiments that ran to the end."""
    done = [r for r in rows if r["status"] != "crashed"]
    total = sum(r["full_epochs_s"] for r in done)
    how = "measured" if all(r["how"] == "measured" for r in done) else "estimated from measured per-epoch times"
    return {**header, "experiments": rows, "suite_s": total, "suite_how": how, "finished": finished,
            "crashed": [r["experiment"] for r in rows if r["status"] == "crashed"]}


def write_report(path: Path, header: dict[str, Any], rows: list[dict[str, Any]], finished: bool) -> dict[str, Any]:
    report = summarise(header, rows, finished)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    sys.exit(main())

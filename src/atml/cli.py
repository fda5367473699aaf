"""The ``atml`` command line: parse arguments, build a config, call the library. Nothing else."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import signal
import sys
import time
from pathlib import Path
from typing import TypeAlias

from atml import config as config_lib
from atml.console import Reporter
from atml.errors import (
    EXIT_CELLS_NOT_DONE,
    EXIT_OK,
    EXIT_SIGNAL,
    AtmlError,
    DataError,
    Key,
    Option,
    Placeholder,
    Resume,
    UsageError,
    WeightsError,
)
from atml.models.registry import FAMILIES as MODEL_FAMILIES
from atml.suite import registry


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM stops like Ctrl-C: checkpoints kept
    try:
        result: int = args.func(args)
        return result
    except AtmlError as err:
        print(f"atml: error: {err.words(TERMINAL)}{_offline_hint(args, err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        signum = signal.SIGTERM if isinstance(err, Terminated) else getattr(err, "signum", signal.SIGINT)
        with contextlib.suppress(OSError):  # SIGHUP: the terminal may be gone
            words = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
            print(f"atml: {words.get(signum, 'stopped by ' + signal.Signals(signum).name)}", file=sys.stderr)
        return EXIT_SIGNAL + signum
    finally:
        signal.signal(signal.SIGTERM, previous)


def _offline_hint(args: argparse.Namespace, err: AtmlError) -> str:
    """A run at the default full preset that lacks its data or weights: how to try the experiment offline now."""
    if args.command != "run" or args.resume or (args.preset or config_lib.DEFAULT_PRESET) != "full" \
            or not isinstance(err, (DataError, WeightsError)):
        return ""
    return f". To try {args.experiment} offline now, without them: atml run {args.experiment} --preset demo"


class TerminalWords:
    """The command line's words for the facts a message names: an option as its flag (``--data-dir DIR``), a config
    key as ``--set KEY=VALUE``, a resume as the command that continues it."""

    def option(self, option: Option) -> str:
        flag = _flags()[option.name]
        return flag if option.value is None or option.value is True else f"{flag} {_typed(option.value)}"

    def key(self, key: Key) -> str:
        return f"--set {key.name}={_typed(key.value)}"

    def resume(self, resume: Resume) -> str:
        return f"atml run {resume.experiment} --resume {resume.path}"


def _typed(value: object) -> str:
    """A value as ``--set`` reads it (YAML): ``true``, ``[a,b]``, a placeholder as its text, ``...`` for a value left
    to the user."""
    if value is None:
        return "..."
    if isinstance(value, Placeholder):
        return value.text
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_typed(v) for v in value) + "]"
    return str(value)


@functools.cache
def _flags() -> dict[str, str]:
    """Each option's flag by its Python name (``data_dir`` -> ``--data-dir``), from every command's parser."""
    flags: dict[str, str] = {}
    pending = [build_parser()]
    while pending:
        parser = pending.pop()
        for action in parser._actions:
            longest = max(action.option_strings, key=len, default="")
            if longest.startswith("--"):
                flags.setdefault(action.dest, longest)
            if isinstance(action, argparse._SubParsersAction):
                pending += list(action.choices.values())
    return flags


TERMINAL = TerminalWords()
CONSOLE = Reporter(words=TERMINAL)
"""The command line's reporter: each message printed in its flags' words, bars when stderr is a terminal."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as an interruption (the runner prints the resume command)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


# argparse's type of add_subparsers()' result
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    from atml._version import __version__

    parser = argparse.ArgumentParser(prog="atml", description="A lab for looking inside modern vision models.")
    parser.add_argument("--version", action="version", version=f"atml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_browsing_commands, _running_commands, _measuring_commands, _cache_command):
        add(sub)
    return parser


def _browsing_commands(sub: Subparsers) -> None:
    """``list`` and ``models``: what there is to run and to run it on."""
    p = sub.add_parser("list", help="experiments and their presets")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("models", help="the model registry: atml's entries, or one model's weights tags")
    p.add_argument("name", nargs="?", help="a model name, e.g. resnet152, timm/convnext_tiny, ViT-B-16")
    p.add_argument("--family", choices=MODEL_FAMILIES,
                   help="cnn (resnet.*), vit (vit.*), clip (clip.*), vae (vae.*) or gan (gan.*); with NAME: where to "
                        "look it up (default: the first family that knows it)")
    p.set_defaults(func=cmd_models)


def _running_commands(sub: Subparsers) -> None:
    """``run``, ``report`` and ``demo``: runs and their reports."""
    p = sub.add_parser("run", help="run one experiment into a new run folder")
    p.add_argument("experiment", help="an experiment name from 'atml list'")
    _run_options(p, default_preset=None)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    _repeat_options(p)
    _track_option(p)
    p.set_defaults(func=cmd_run)

    _sweep_command(sub)

    p = sub.add_parser("report", help="one report from one or many run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for the report (default: reports/report-<time>)")
    p.add_argument("--static", action="store_true",
                   help="figures and tables only: no interactive views, no scripts in the page")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="every experiment at the demo preset, then one report")
    p.add_argument("--out", help="folder for the runs and the report (default: runs/demo-<time>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--preset", default="demo", help="run the whole suite at another preset (smoke: seconds)")
    _repeat_options(p)
    p.set_defaults(func=cmd_demo)


def _sweep_command(sub: Subparsers) -> None:
    p = sub.add_parser("sweep", help="a grid of runs (keys x values x seeds) through submitit: local or Slurm",
                       description="Run a grid of one experiment's configs, each cell an ordinary run folder under "
                       "OUT/sweep-NAME/, through submitit (local processes or one Slurm job array). Rerunning the "
                       "same command skips complete cells and resumes interrupted ones.")
    p.add_argument("spec", metavar="SPEC.yaml|EXPERIMENT",
                   help="a spec file (experiment:, preset:, grid:, cells:, seeds:, set:) or an experiment name")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a key and its values (repeatable); list values as KEY=[a,b]|[c,d]")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value for every cell (repeatable)")
    p.add_argument("--preset", help="smoke | demo | full | rehearsal (default: the spec's, else full, as for atml run)")
    p.add_argument("--seeds", type=int, metavar="N", help="each cell with N consecutive seeds")
    p.add_argument("--name", help="the sweep's name: its folder is OUT/sweep-NAME (default: EXPERIMENT-PRESET)")
    p.add_argument("--out", default="runs", help="parent folder of the sweep folder (default: runs)")
    p.add_argument("--executor", default="local", help="local (default: processes here) | slurm (one job array) | "
                   "debug (in this process)")
    p.add_argument("--parallel", type=int, metavar="N", help="local: cells at a time (default: from cores and "
                   "memory, one per GPU)")
    p.add_argument("--retry-failed", action="store_true", help="also rerun the cells that failed before")
    p.add_argument("--dry-run", action="store_true", help="check the spec, list the cells and the parameters "
                   "submitit's executor would get; submit nothing")
    slurm = p.add_argument_group("Slurm (--executor slurm)")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--gpus-per-node", type=int, help="GPUs per cell (also local: GPUs per cell)")
    slurm.add_argument("--tasks-per-node", type=int, default=1, help="processes per cell (torchrun-style DDP; "
                       "default 1)")
    slurm.add_argument("--cpus-per-task", type=int)
    slurm.add_argument("--mem-gb", type=float)
    slurm.add_argument("--timeout-min", type=int, default=24 * 60, help="per cell (default 1440)")
    slurm.add_argument("--array-parallelism", type=int, help="cells running at once on the cluster")
    slurm.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before each cell, e.g. 'module load cuda' (repeatable)")
    _track_option(p)
    p.set_defaults(func=cmd_sweep)


def _track_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", choices=("mlflow", "wandb"), help="also log each run to MLflow (MLFLOW_TRACKING_URI, "
                   "else ./mlflow.db) or Weights & Biases (offline without a network)")


def _measuring_commands(sub: Subparsers) -> None:
    """``bench`` and ``speed``: atml's paths timed beside the naive ones and the peers' loops."""
    p = sub.add_parser("bench", help="atml's path vs the naive path, in one process")
    p.add_argument("experiment")
    _run_options(p, default_preset="demo")
    p.add_argument("--json", help="also write the figures to this file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("speed", help="atml's frozen-feature and fine-tuning paths beside timm's plain loops")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--compile", default="off", help="also time the frozen features torch.compiled: "
                   "default | reduce-overhead | max-autotune")
    p.add_argument("--models", default="resnet152,deit_small_patch16_224",
                   help="comma-separated: resnet152, deit_small_patch16_224")
    p.add_argument("--quick", action="store_true", help="tiny batches: checks the paths, not the speed")
    p.add_argument("--json", help="also write the figures to this file")
    p.set_defaults(func=cmd_speed)


def _cache_command(sub: Subparsers) -> None:
    p = sub.add_parser("cache", help="what $ATML_CACHE holds (decoded datasets, models), with sizes; or clear it")
    p.add_argument("action", nargs="?", default="list", choices=("list", "clear"),
                   help="list (default) | clear: remove the decoded datasets (with --all: everything cached)")
    p.add_argument("--all", action="store_true", help="with clear: also the demo models, generated and "
                   "downloaded data")
    p.set_defaults(func=cmd_cache)


def _run_options(p: argparse.ArgumentParser, default_preset: str | None = "full") -> None:
    p.add_argument("--preset", default=default_preset,
                   help=f"smoke | demo | full | rehearsal (default: {default_preset or config_lib.DEFAULT_PRESET})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set epochs=3 (repeatable)")
    p.add_argument("--data-dir", help="folder with the dataset files")
    p.add_argument("--weights", help="imagenet | imagenet-v1 | random | a local .pth/.safetensors file")
    p.add_argument("--out", help="parent folder of the run folder (default: runs)")
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--offline", action="store_true", help="never use the network")


def _repeat_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="repeat with N consecutive seeds; the report shows mean, spread and n")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")


def _overrides(args: argparse.Namespace) -> list[str]:
    """The common flags as config overrides, after ``--set`` so that flags win."""
    flags = {"data_dir": args.data_dir, "weights": args.weights, "device": args.device, "seed": args.seed}
    extra = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.offline:
        extra.append("offline=true")
    return [*args.overrides, *extra]


def cmd_cache(args: argparse.Namespace) -> int:
    from atml import runtime
    from atml.data import cache

    if args.action == "clear":
        gone = cache.clear("all" if args.all else "datasets")
        print(f"removed {len(gone)} item(s) from {runtime.cache_dir()}" + "".join(f"\n  {p}" for p in gone))
        return 0
    if args.all:
        raise UsageError("--all goes with 'atml cache clear'")
    items = cache.entries()
    if not items:
        print(f"{runtime.cache_dir()} holds nothing cached")
        return 0
    print(f"{runtime.cache_dir()} ({_gb(sum(i.bytes for i in items))} in all):")
    for item in items:
        print(f"  {_gb(item.bytes):>9}  {item.kind:<20} {item.path.relative_to(runtime.cache_dir())}"
              + (f"  {item.detail}" if item.detail else ""))
    return 0


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def cmd_list(args: argparse.Namespace) -> int:
    from atml.suite import catalog

    found = catalog.entries()  # no experiment imported: an answer in a fraction of a second
    width = max(len(e.name) for e in found)
    for e in found:
        print(f"{e.name:<{width}}  {e.summary}  [presets: {', '.join(e.presets)}]")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from atml.models import registry as models

    if args.name is None:
        rows = models.table(args.family)
        print(f"{'family':<6}  {'model':<24}  {'weights':<11}  {'source':<13}  {'size':>4}  location")
        for r in rows:
            print(f"{r['family']:<6}  {r['model']:<24}  {r['weights']:<11}  {r['source']:<13}  "
                  f"{r['input_size']:>4}  {r['location']}")
        print("Any other torchvision or timm CNN (timm/NAME), timm ViT (timm/NAME) or open_clip model works too: "
              "'atml models NAME' shows its weights tags.")
        return 0
    from atml.models import factory

    entry = factory.find(args.name, args.family)
    pre = entry.preprocessing
    print(f"{entry.name} ({entry.family}, built by {entry.builder}; exposes {', '.join(entry.exposes)})")
    print(f"  random: {pre.input_size} px, mean {_floats(pre.mean)}, std {_floats(pre.std)}")
    for w in entry.weights.values():
        print(f"  {w.tag}: {w.source} {w.location}; check: {w.check}; {w.preprocessing.input_size} px, "
              f"{w.preprocessing.interpolation}, mean {_floats(w.preprocessing.mean)}")
    return 0


def _floats(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def cmd_run(args: argparse.Namespace) -> int:
    from atml.suite import catalog

    catalog.check(args.experiment, None if args.resume else args.preset or config_lib.DEFAULT_PRESET,
                  _overrides(args))
    from atml import runner
    from atml.distributed import rank_and_world

    reg = registry()
    if args.resume:
        if args.seeds != 1 or args.out:
            raise UsageError("--seeds and --out start new runs; they cannot be combined with --resume")
        runs = [runner.resume(reg.get, args.resume, name=args.experiment, texts=_overrides(args), preset=args.preset,
                              tensorboard=args.tensorboard, report=CONSOLE)]
    else:
        if args.track:
            from atml import tracking

            tracking.check(args.track)
        runs = runner.start(reg.get(args.experiment), args.preset or config_lib.DEFAULT_PRESET,
                            texts=_overrides(args), seeds=args.seeds, out=args.out, tensorboard=args.tensorboard,
                            report=CONSOLE)
    if rank_and_world()[0] == 0:
        if args.track:
            from atml import tracking

            sink = tracking.open_sink(args.track)
            for run in runs:
                print(f"atml: {args.track} run {sink.log_run(run.path)}", file=sys.stderr)
        print("\n".join(str(run.path) for run in runs))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import shlex

    path = Path(args.spec)
    named = not (path.suffix in (".yaml", ".yml") or path.is_file())
    if named:
        from atml.suite import catalog

        catalog.check(args.spec, args.preset, args.overrides, values=False)
    from atml.sweeps import dispatch
    from atml.sweeps import spec as spec_lib

    if not named:
        if not path.is_file():
            raise UsageError(f"the sweep spec {path} does not exist; pass a spec file or an experiment name")
        request = spec_lib.read_spec(path)
    else:
        request = spec_lib.Request(args.spec)
    for item in args.grid:
        key, values = spec_lib.parse_grid(item)
        request.vary(key, list(values))
    for item in args.overrides:
        key, raw = config_lib.parse_override(item)
        request.fixed.append((key, spec_lib.Text(raw)))
    request.given(args.preset, args.seeds, args.name)
    sweep = spec_lib.expand(request, registry())
    opts = dispatch.Options(out=Path(args.out), executor=args.executor, parallel=args.parallel,
                            retry_failed=args.retry_failed, track=args.track, dry_run=args.dry_run,
                            partition=args.partition, gpus_per_node=args.gpus_per_node,
                            cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, timeout_min=args.timeout_min,
                            array_parallelism=args.array_parallelism, tasks_per_node=args.tasks_per_node,
                            account=args.account, slurm_setup=args.slurm_setup,
                            command=shlex.join(["atml", "sweep", *_without(sys.argv[1:] if sys.argv else [])]))
    summary = dispatch.run(sweep, opts, report=dataclasses.replace(dispatch.SWEEP, words=TERMINAL))
    return EXIT_CELLS_NOT_DONE if summary.failed or summary.stopped else EXIT_OK


def _without(argv: list[str]) -> list[str]:
    """The command line as given, less --retry-failed and --dry-run (the summary adds what it needs)."""
    args = [a for a in argv if a not in ("--retry-failed", "--dry-run")]
    return args[1:] if args and args[0] == "sweep" else args


def cmd_report(args: argparse.Namespace) -> int:
    from atml.reporting import build

    out = Path(args.out) if args.out else Path("reports") / f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    page = build.write_report([Path(r) for r in args.runs], out, registry(), static=args.static,
                              warn=lambda err: print(f"atml: not included: {err.words(TERMINAL)}", file=sys.stderr))
    print(page)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from atml import runner
    from atml.reporting import build

    out = Path(args.out) if args.out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} already exists and is not empty; pass another --out")
    runs = []
    for exp in registry():
        cfg = config_lib.build(exp.config_cls, exp.presets, args.preset, [f"device={args.device}", "offline=true"])
        runs += [runner.execute(exp, c, preset=args.preset, out=out / "runs", tensorboard=args.tensorboard,
                                report=CONSOLE).path
                 for c in runner.seeded(cfg, args.seeds)]
    page = build.write_report(runs, out / "report", registry())
    print(page)
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    import json

    from atml import speedtest as speed

    models = tuple(m for m in args.models.split(",") if m)
    speed.check_options(args.device, args.compile, models)
    figures = speed.run(args.device, quick=args.quick, compile=args.compile, models=models)
    if args.json:
        from atml import storage

        storage.write_text(Path(args.json), json.dumps(figures.to_json(), indent=2))
        print(args.json)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from atml.suite import catalog

    catalog.check(args.experiment, args.preset, _overrides(args))
    exp = registry().get(args.experiment)
    if exp.bench is None:
        raise UsageError(f"{exp.name} has no benchmark")
    cfg = config_lib.build(exp.config_cls, exp.presets, args.preset, _overrides(args), name=exp.name)
    command = " ".join(["atml bench", args.experiment, "--preset", args.preset,
                        *(f"--set {o}" for o in args.overrides)])
    figures = dataclasses.replace(exp.bench(cfg), experiment=exp.name, command=command)
    if args.json:
        import json

        from atml import storage

        storage.write_text(Path(args.json), json.dumps(figures.to_json(), indent=2, default=str))
    return 0

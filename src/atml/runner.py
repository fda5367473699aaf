"""Runs one experiment into one run folder; the same path for fresh and resumed runs.

An experiment's ``run(cfg, ctx)`` returns :class:`atml.results.Results` (metric records,
tables, figures, notes, data). The runner adds what every run records: experiment,
preset, status, timing, peak memory, the data and weights it used, and the published
references it compares with, and writes results.json (schema in :mod:`atml.results`).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from atml import config as config_lib
from atml import distributed, references, runtime, timemap
from atml.console import PRINTED, Reporter
from atml.context import RunContext
from atml.data import rehearsal
from atml.errors import AtmlError, DivergedError, Key, Option, Placeholder, Resume, RunDirError, UsageError
from atml.provenance import DataSource
from atml.registry import Experiment
from atml.results import Results, RunResults, to_json
from atml.run_dir import FollowerRunDir, RunDir


def start(exp: Experiment[Any], preset: str, *, texts: Sequence[str] = (), values: Mapping[str, Any] | None = None,
          seeds: int = 1, out: str | Path | None = None, tensorboard: bool = False,
          report: Reporter = PRINTED) -> list[RunDir]:
    """New runs of ``exp`` at ``preset``: ``atml run`` and :func:`atml.run` both come here.

    ``texts`` are ``--set``-style ``key=value`` overrides, ``values`` Python values by key
    (applied after the texts); ``seeds`` runs with consecutive seeds from the config's own.
    ``report``: where messages and progress go, in the front end's words (:class:`Reporter`).
    """
    cfg = config_lib.build(exp.config_cls, exp.presets, preset, list(texts), name=exp.name)
    if values:
        cfg = config_lib.apply_values(cfg, values, name=exp.name)
    return [execute(exp, c, preset=preset, out=out, tensorboard=tensorboard, report=report)
            for c in seeded(cfg, seeds)]


def seeded(cfg: Any, seeds: int) -> list[Any]:
    """``seeds`` copies of ``cfg`` with consecutive seeds from its own."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UsageError(Option("seeds", seeds), " is not valid; use an integer >= 1")
    return [dataclasses.replace(cfg, seed=cfg.seed + i) for i in range(seeds)]


def resume(lookup: Callable[[str], Experiment[Any]], path: str | Path, *, name: str | None = None,
           texts: Sequence[str] = (), values: Mapping[str, Any] | None = None, preset: str | None = None,
           tensorboard: bool = False, report: Reporter = PRINTED) -> RunDir:
    """Continue the run in ``path`` from its checkpoints (``atml run --resume`` and :func:`atml.resume`).

    Options given (``texts``/``values``) are checked against the saved config by
    :func:`resume_config`: more epochs and another device are accepted and recorded, anything
    else is refused. ``name``/``preset``, when given, must be the saved run's.
    """
    exp, saved, saved_preset = load_for_resume(lookup, path)
    if name is not None and exp.name != name:
        raise UsageError(f"{path} is a run of {exp.name}, not {name}")
    given = config_lib.apply_overrides(saved, list(texts))
    if values:
        given = config_lib.apply_values(given, values, name=exp.name)
    cfg, changes = resume_config(saved, given, saved_preset, preset)
    return execute(exp, cfg, preset=saved_preset, resume=path, tensorboard=tensorboard, report=report,
                   resume_changes=changes)


def execute(exp: Experiment[Any], cfg: Any, *, preset: str, out: str | Path | None = None,
            resume: str | Path | None = None, report: Reporter = PRINTED, tensorboard: bool = False,
            resume_changes: dict[str, Any] | None = None, folder: Path | None = None) -> RunDir:
    """Create (or reopen with ``resume``) the run folder, run the experiment, write results.

    ``folder``: the exact new run folder (a sweep's cell) instead of a fresh name under ``out``.
    ``resume_changes``: options changed on resuming (see :func:`resume_config`), written to
    the saved config and recorded in ``env.json``. ``report``: where messages and progress go.
    """
    device = runtime.select_device(cfg.device)
    ranks = distributed.init_distributed()
    run = _open_run(exp, preset, folder or out, resume, ranks, exact=folder is not None)
    is_main = ranks is None or ranks.rank == 0
    report = report.resolved(is_main)
    say = report.say
    ctx: RunContext | None = None
    from atml import figures

    before = figures.opened()
    try:
        if resume and not resume_changes and _finished(run):
            report.tell(f"atml: {run.path} is already complete (its results.json says ok): nothing to resume. Pass ",
                        Key("epochs", Placeholder("N")), " with more epochs than it ran to train further, or start a "
                        "new run")
            return run
        if tensorboard and is_main:
            run.enable_tensorboard()
        _write_setup(run, exp, preset, cfg, device, ranks, (resume_changes or {}) if resume else None, is_main)
        ctx = RunContext(run, device, preset, runtime.is_offline(cfg.offline), report=report, is_main=is_main,
                         name=exp.name)
        runtime.seed_everything(cfg.seed)
        runtime.reset_peak_memory(device)  # so peak_memory_mb is this run's, not the process's
        say(f"atml: {exp.name} ({preset}) -> {run.path}")
        started = time.perf_counter()
        with timemap.recording() as time_map:
            results = _run(exp, cfg, ctx, preset)
            run.write_results(_complete(results, exp, preset, cfg, ctx, time.perf_counter() - started))
        if is_main:  # where the time went, by kind of work (atml.timemap)
            run.write_env({**run.read_env(), "time_by_work": time_map.to_json()})
        say(f"atml: results in {run.path / 'results.json'}")
        return run
    finally:
        figures.close_since(before)
        run.close_tensorboard()
        run.unlock()
        for folder in ctx.private if ctx else ():
            shutil.rmtree(folder, ignore_errors=True)


def _write_setup(run: RunDir, exp: Experiment[Any], preset: str, cfg: Any, device: torch.device,
                 ranks: distributed.Distributed | None, resumed: dict[str, Any] | None, is_main: bool) -> None:
    """config.yaml and env.json of a new run; on a resume with changed options (``resumed``), the saved config
    rewritten and the changes appended to env.json."""
    config = {"experiment": exp.name, "preset": preset, **config_lib.to_dict(cfg)}
    if resumed is not None:
        if resumed and is_main:
            run.write_config(config)
            env = run.read_env()
            env.setdefault("resumed_with", []).append({"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                       "changed": resumed})
            run.write_env(env)
        return
    run.write_config(config)
    env = runtime.environment(device, cfg.seed)
    if ranks is not None:
        env["distributed"] = {"backend": dist.get_backend(), "world": ranks.world}
    run.write_env(env)


def _run(exp: Experiment[Any], cfg: Any, ctx: RunContext, preset: str) -> Results:
    """The experiment's own run: a known error leaves a failed results.json saying why; Ctrl-C says how to resume."""
    try:
        return exp.run(cfg, ctx)
    except AtmlError as err:  # diverged, bad data or weights, a bad option found late: a failed run, saying why
        if ctx.is_main:
            _write_failed(ctx.run, exp, preset, cfg, ctx, err)
        raise
    except KeyboardInterrupt:
        ctx.report.tell("atml: checkpoints are kept. Resume with: ", Resume(exp.name, ctx.run.path))
        raise


def _finished(run: RunDir) -> bool:
    """A run whose results.json says it completed."""
    path = run.path / "results.json"
    try:
        return path.is_file() and RunResults.from_json(run.read_results()).status == "ok"
    except RunDirError:
        return False


def _open_run(exp: Experiment[Any], preset: str, out: str | Path | None, resume: str | Path | None,
              ranks: distributed.Distributed | None, *, exact: bool = False) -> RunDir:
    """Rank 0 creates (or reopens) the folder and tells the other ranks where it is; ``exact``: ``out`` is the
    run folder itself."""
    if ranks is None or ranks.rank == 0:
        if resume:
            run = RunDir.open(resume)
        elif exact and out is not None:
            run = RunDir.create_at(out)
        else:
            run = RunDir.create(out or "runs", exp.name, preset)
        path = [str(run.path)]
    else:
        run, path = None, [""]
    if ranks is not None:
        dist.broadcast_object_list(path, src=0)
    return run or FollowerRunDir(Path(path[0]))


def load_for_resume(exp_lookup: Callable[[str], Experiment[Any]], path: str | Path) -> tuple[Experiment[Any], Any, str]:
    """The experiment, config and preset saved in a run folder."""
    saved = RunDir(Path(path))
    if not (saved.path / "config.yaml").is_file():
        raise RunDirError(f"{saved.path} is not an atml run folder (no config.yaml)")
    data = saved.read_config()
    exp = exp_lookup(data.pop("experiment"))
    preset = data.pop("preset")
    try:
        cfg = config_lib.from_dict(exp.config_cls, data)
    except UsageError as err:
        raise RunDirError(f"{saved.path / 'config.yaml'} does not match this atml version: {err}") from err
    return exp, cfg, preset


RESUMABLE_CHANGES = {"epochs": "more epochs than before", "device": "any device"}
"""What ``--resume`` may change in a saved config: training further, or on another device."""


def resume_config(saved: Any, given: Any, preset: str, given_preset: str | None) -> tuple[Any, dict[str, Any]]:
    """The config to resume with, and what changed; options that conflict with the saved run are refused.

    ``given`` is the saved config with the command line's options applied. More epochs and
    another device are safe (the run continues from its checkpoints); anything else would
    mix two experiments in one run folder.
    """
    if given_preset is not None and given_preset != preset:
        raise UsageError(Option("preset", given_preset), f" conflicts with the resumed run's preset {preset}; drop ",
                         Option("preset"), " or start a new run")
    changed = {f: (getattr(saved, f), getattr(given, f)) for f in config_lib.field_names(type(saved))
               if getattr(saved, f) != getattr(given, f)}
    refused = {f: v for f, v in changed.items()
               if f not in RESUMABLE_CHANGES or (f == "epochs" and v[1] < v[0])}
    if refused:
        listed = ", ".join(f"{f} (saved {old!r}, given {new!r})" for f, (old, new) in refused.items())
        raise UsageError("resuming continues a run with its saved config; these options differ from it: "
                         f"{listed}. "
                         f"Only {', '.join(f'{k} ({v})' for k, v in RESUMABLE_CHANGES.items())} may change; "
                         "start a new run for the rest")
    return given, {f: {"saved": old, "now": new} for f, (old, new) in changed.items()}


def _complete(results: Results, exp: Experiment[Any], preset: str, cfg: Any, ctx: RunContext,
              elapsed: float) -> dict[str, Any]:
    """results.json: the experiment's records plus what every run records (timing, memory, sources, references)."""
    if not isinstance(results, Results):
        raise TypeError(f"{exp.name}.run returned {type(results).__name__}; it must return atml.results.Results")
    if results.metrics.get("time_s") is None:  # the whole run's (experiments may record per-stage ones)
        results.add("time_s", elapsed, "s")
    if results.metrics.get("peak_memory_mb") is None:
        results.add("peak_memory_mb", runtime.peak_memory_mb(ctx.device), "MB")
    data = ctx.sources.get("data")
    data = data if isinstance(data, DataSource) else None
    skipped = data.skipped if data else []
    if skipped:
        results.notes.append(f"{len(skipped)} unreadable image(s) left out (skip_bad_images=true): "
                             + "; ".join(skipped))
    results.notes += data.notes if data else []  # e.g. a dataset cache that was rebuilt
    is_rehearsal = rehearsal.is_rehearsal(preset, cfg)
    if is_rehearsal:
        results.notes.insert(0, rehearsal.NOTE)
    out = to_json(results, experiment=exp.name, preset=preset, status="ok", sources=ctx.sources_json(), seed=cfg.seed,
                  device=str(ctx.device), **({"rehearsal": True} if is_rehearsal else {}))
    out["references"] = references.compare_all(exp.references, RunResults.from_json(out), cfg)
    return out


def _write_failed(run: RunDir, exp: Experiment[Any], preset: str, cfg: Any, ctx: RunContext, err: AtmlError) -> None:
    """results.json of a run that stopped with a known error: the status, the reason, what it had read."""
    run.write_results(to_json(Results(notes=[f"The run stopped: {err}"]), experiment=exp.name, preset=preset,
                              status="failed", error=str(err), error_kind=type(err).__name__,
                              resumable=isinstance(err, DivergedError), traceback=traceback.format_exc(),
                              references=[], sources=ctx.sources_json(), seed=cfg.seed, device=str(ctx.device)))

"""The shapes of the measurement files in ``benchmarks/`` that the documentation's generated sections are drawn from:
one TypedDict per file kind, each with the keys its section reads (a file may hold more). :func:`read` checks a file
against its shape when it is loaded (pydantic), so a file a script wrote differently fails there, naming the file and
the key, and the renderers in :mod:`atml.reporting.readme` read typed values that mypy checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NotRequired, TypeVar

from typing_extensions import TypedDict

from atml.errors import UsageError


class Sizes(TypedDict):
    batch: int
    extract_images: int
    train_steps: int


class Pair(TypedDict):
    """atml's path beside its peer's loop."""

    name: str
    atml: float
    peer: float
    peer_name: str
    ratio: float


class SpeedFile(TypedDict):
    """``atml speed --json``."""

    device: str
    device_name: str
    torch: str
    precision: str
    date: NotRequired[str]
    sizes: Sizes
    pairs: list[Pair]


class Stage(TypedDict):
    stage: str
    s_per_epoch: float
    planned_epochs: int


class TimeByWork(TypedDict):
    """``env.json``'s ``time_by_work`` (:mod:`atml.timemap`)."""

    build_s: float
    model_s: float
    data_s: float
    analysis_s: float
    figures_s: float
    writing_s: float
    other_s: float
    wall_s: float
    model_device_s: float | None


class TimedExperiment(TypedDict):
    experiment: str
    wall_s: float
    full_epochs_s: float
    how: str
    stages: list[Stage]
    peak_memory_mb: float | None
    gpu_utilisation_mean: NotRequired[float | None]
    time_by_work: NotRequired[TimeByWork | None]


class TimingFile(TypedDict):
    """``scripts/suite_timing.py``."""

    card: str
    torch: str
    date: str
    epochs_per_stage: int
    train_limit: int | None
    eval_limit: int | None
    overrides: NotRequired[list[str]]
    experiments: list[TimedExperiment]
    suite_s: float
    suite_how: str
    not_timed: NotRequired[list[str]]
    not_timed_why: NotRequired[str]


class CheckedExperiment(TypedDict):
    experiment: str
    status: str
    seconds: float
    peak_gib: float


class CheckSpeed(TypedDict):
    sizes: Sizes
    pairs: list[Pair]
    gemm_gflops: dict[str, float]


class Distributed(TypedDict):
    backend: str


class Torchrun(TypedDict):
    experiment: str
    returncode: int
    seconds: float
    distributed: NotRequired[Distributed | None]


class GpuCheckFile(TypedDict):
    """``scripts/gpu_check.py``."""

    card: str
    driver: str
    torch: str
    cuda: str
    date: str
    seconds: float
    failed: list[str]
    experiments: list[CheckedExperiment]
    speed: CheckSpeed
    torchrun: Torchrun


class BenchFile(TypedDict):
    """``scripts/benches.py``: one ``atml bench --json`` per family (each read by
    :meth:`atml.results.Bench.from_json`)."""

    device_name: str
    torch: str
    date: str
    benches: list[dict[str, Any]]


class Pass(TypedDict):
    seconds: float
    images_per_s: float
    peak_anon_mb: float


class CachedPass(TypedDict):
    ready_s: float
    seconds: float
    peak_anon_mb: float


class DecodeLimit(TypedDict):
    images_per_s: float


class ScaleRow(TypedDict):
    images: int
    atml_first: Pass
    atml_cached: CachedPass
    torchvision: Pass
    decode_limit: DecodeLimit
    same_pixels_cached: bool
    cached_share_of_first: float
    first_vs_torchvision: float


class StorageRate(TypedDict):
    storage: str
    images_per_s: float


class DataScaleFile(TypedDict):
    """``scripts/data_scale.py``."""

    cpu: str
    cores: int
    torch: str
    torchvision: str
    pillow: str
    date: str
    image: str
    image_size: int
    repeats: NotRequired[int]
    rows: list[ScaleRow]
    pools: NotRequired[dict[str, int | float]]  # "images": the folder's size; the rest images/s per way
    storage: NotRequired[list[StorageRate]]


class RunMemoryFile(TypedDict):
    """``scripts/run_memory.py``: each row also holds the varied option's value under ``vary``'s name."""

    cpu: str
    cores: int
    torch: str
    date: str
    command: str
    vary: str
    rows: list[dict[str, Any]]


class SweepFile(TypedDict):
    """``scripts/sweep_bench.py``."""

    command: str
    cpu: str
    cores: int
    date: str
    cells: int
    loop_s: float
    sweep_parallel1_s: float
    sweep_parallel2_s: float
    speedup_parallel2: float
    dispatch_overhead_per_cell_s: float


class Spread(TypedDict):
    median: float
    max: float


class ExecutorRun(TypedDict):
    wall_s: float
    start_s: Spread
    seen_s: Spread


class SlurmBenchFile(TypedDict):
    """``scripts/slurm_bench.py``."""

    command: str
    cpu: str
    cores: int
    slurm: str
    accounting: str
    date: str
    executors: dict[str, ExecutorRun]


class Fault(TypedDict):
    fault: str
    injected: str
    saw: str
    lost: int
    twice: int
    mlflow_missing: int


class SlurmFaultsFile(TypedDict):
    """``scripts/slurm_faults.py``."""

    command: str
    slurm: str
    date: str
    cells_per_fault: int
    faults: list[Fault]


class LatencyRow(TypedDict):
    command: str
    seconds: float
    over_python: float
    exit: int


class CliLatencyFile(TypedDict):
    """``scripts/cli_latency.py``."""

    command: str
    commit: str
    date: str
    cores: int
    repeats: int
    python_pass_s: float
    import_torch_s: float
    rows: list[LatencyRow]


class StoredView(TypedDict):
    run: str
    view: str
    kind: str
    bytes: int


class ViewSet(TypedDict):
    set: str
    runs: int
    views: list[StoredView]
    views_bytes: int
    views_bytes_fitted: int
    report_bytes: int
    static_bytes: int
    thinned: list[str]


class ViewBytesFile(TypedDict):
    """``scripts/view_bytes.py``."""

    command: str
    commit: str
    date: str
    budget: int
    smoke_runs: list[str]
    sets: list[ViewSet]


class Build(TypedDict):
    report_kb: float
    build_s: float


class ViewShare(TypedDict):
    view: str
    kind: str
    kb: float


class ScatterTiming(TypedDict):
    points: int
    page_kb: float
    heap_mb: float
    redraw_ms: float
    hover_ms: float


class Budget(TypedDict):
    added_mb: float
    added_mb_max: float


class ExploreFile(TypedDict):
    """``scripts/explore_bench.py``."""

    command: str
    commit: str
    date: str
    cpu: str
    chromium: str
    runs: int
    presets: list[str]
    static: Build
    interactive: Build
    budget: Budget
    views: list[ViewShare]
    scatter: list[ScatterTiming]
    screenshots: list[str]


class StepRow(TypedDict):
    model: str
    what: str
    images: int
    batch: int
    epochs: int
    steps: int
    atml_steps_per_s: float
    plain_steps_per_s: float
    ratio: float
    paired_ratio: NotRequired[float]
    best_ratio: NotRequired[float]


class TrainStepFile(TypedDict):
    """``scripts/train_step_bench.py``."""

    command: str
    commit: str
    date: str
    cpu: str
    cores: int
    device: str
    torch: str
    threads: int
    repeats: int
    rows: list[StepRow]


Shape = TypeVar("Shape")


def read(path: Path, shape: type[Shape]) -> Shape:
    """``path`` checked against ``shape``; a file that does not fit is one line naming it and the first key that
    does not."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(shape).validate_python(json.loads(path.read_text()))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"{path} does not have the shape of {shape.__name__}: {where}: {first['msg']}; rerun the "
                         "script that writes it") from None

"""Results as data: what a run measured, as records with names, units and the conditions they hold under.

An experiment's ``run(cfg, ctx)`` returns :class:`Results`: metrics as :class:`Metric`
records (``Metric("val_acc", 0.87, condition={"resolution": 32})``), tables as
:class:`Table`, figures as :class:`Figure`, notes, and experiment-specific structured
``data``. Discussion sentences, references, the report and the Python API read these
fields; nothing parses a metric's name back.

``results.json`` (schema 2) stores the records under ``records`` and also a flat, stable
view under ``metrics``: one key per record (``val_acc_32``), the keys atml has always
written, for other tools. :meth:`RunResults.from_json` reads both schema 2 and the older
files, whose records it rebuilds from the flat view (each key a metric without conditions)
and whose experiment-specific top-level keys it gathers into ``data``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pandas

SCHEMA = 2
RUN_KEYS = ("experiment", "preset", "status", "error", "error_kind", "resumable", "traceback", "metrics", "records",
            "figures", "views", "tables", "notes", "warnings", "data", "sources", "seed", "device", "references",
            "rehearsal",
            "schema")
"""The top-level keys of results.json; in older files any other key is experiment-specific data."""


def counted(n: int, word: str) -> str:
    """``n`` and ``word``, plural unless ``n`` is 1: ``counted(1, "epoch")`` is "1 epoch"."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def fixed(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals: how README's table and the report's sentences write numbers."""
    return f"{value:.{digits}f}"


DataT = TypeVar("DataT")


@dataclasses.dataclass(frozen=True, eq=False)
class Metric:
    """One number a run measured.

    ``condition`` says what it was measured under (``{"resolution": 32}``,
    ``{"init": "random", "regime": "head"}``); the flat ``key`` joins the name and the
    condition's values (``val_acc_32``) unless a record names its key itself (older names
    that put a condition first, such as ``compare_knn_acc_early``).
    """

    name: str
    value: float
    unit: str = ""
    condition: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    flat_key: str | None = None

    @property
    def key(self) -> str:
        return self.flat_key or "_".join([self.name, *(str(v) for v in self.condition.values())])

    def _identity(self) -> tuple[Any, ...]:
        return self.name, self.value, self.unit, tuple(sorted(self.condition.items())), self.key

    def __eq__(self, other: object) -> bool:
        """Equal as values: a record read back from results.json equals the one written (however its key was
        given)."""
        return isinstance(other, Metric) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def holds(self, **condition: Any) -> bool:
        """True when every given condition matches this record's."""
        return all(self.condition.get(k) == v for k, v in condition.items())

    def to_json(self) -> dict[str, Any]:
        """The record as results.json holds it (name, value, unit, condition, key)."""
        return {"name": self.name, "value": self.value, "unit": self.unit, "condition": dict(self.condition),
                "key": self.key}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Metric:
        condition = dict(data.get("condition") or {})
        flat = data.get("key")
        default = "_".join([data["name"], *(str(v) for v in condition.values())])
        return cls(data["name"], data["value"], data.get("unit", ""), condition, flat if flat != default else None)


@dataclasses.dataclass
class Table:
    """A table with named columns; each row a list in column order."""

    title: str
    columns: list[str]
    rows: list[list[Any]]

    def column(self, name: str) -> list[Any]:
        """One column's values, by name."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def records(self) -> list[dict[str, Any]]:
        """Each row as ``{column: value}``."""
        return [dict(zip(self.columns, row)) for row in self.rows]

    def to_json(self) -> dict[str, Any]:
        """The table as results.json holds it (title, columns, rows)."""
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Table:
        return cls(data["title"], list(data["columns"]), [list(r) for r in data["rows"]])


@dataclasses.dataclass(frozen=True)
class Figure:
    """A saved figure: its name and files (PNG for pages, PDF for papers), relative to the run folder."""

    name: str
    files: tuple[str, ...]

    @property
    def png(self) -> str | None:
        return next((f for f in self.files if f.endswith(".png")), None)

    @property
    def pdf(self) -> str | None:
        return next((f for f in self.files if f.endswith(".pdf")), None)


def figures_from_paths(paths: Iterable[str]) -> list[Figure]:
    """Group ``figures/x.png`` and ``figures/x.pdf`` into one :class:`Figure` per name, in first-seen order."""
    grouped: dict[str, list[str]] = {}
    for path in paths:
        grouped.setdefault(path.rsplit("/", 1)[-1].rsplit(".", 1)[0], []).append(path)
    return [Figure(name, tuple(files)) for name, files in grouped.items()]


class Metrics:
    """The records of one run, looked up by name and condition."""

    def __init__(self, records: Iterable[Metric] = ()) -> None:
        self.records: list[Metric] = list(records)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, name: str) -> bool:
        return any(r.name == name for r in self.records)

    def __eq__(self, other: object) -> bool:
        """Equal when they hold equal records in the same order."""
        return isinstance(other, Metrics) and self.records == other.records

    __hash__ = None  # type: ignore[assignment]  # mutable: no hash

    def find(self, name: str, **condition: Any) -> list[Metric]:
        """Every record called ``name`` whose condition includes ``condition``."""
        return [r for r in self.records if r.name == name and r.holds(**condition)]

    def get(self, name: str, default: float | None = None, **condition: Any) -> float | None:
        """The value of the one record called ``name`` under exactly ``condition``, or ``default``."""
        found = [r for r in self.records if r.name == name and dict(r.condition) == condition]
        return found[0].value if found else default

    def value(self, name: str, **condition: Any) -> float:
        """Like :meth:`get`, but a missing record is an error that lists what there is."""
        found = self.get(name, **condition)
        if found is None:
            have = sorted({(r.name, tuple(r.condition.items())) for r in self.records if r.name == name})
            raise KeyError(f"no metric {name!r} under {condition}; recorded: {have or 'none by that name'}")
        return found

    def by(self, name: str, field: str, **condition: Any) -> dict[Any, float]:
        """``{condition[field]: value}`` for the records called ``name`` (e.g. accuracy by resolution)."""
        return {r.condition[field]: r.value for r in self.find(name, **condition) if field in r.condition}

    def flat(self) -> dict[str, float]:
        """The stable flat view written to results.json: ``{key: value}``."""
        return {r.key: r.value for r in self.records}

    def to_frame(self, **columns: Any) -> pandas.DataFrame:
        """A tidy pandas DataFrame: one row per record with ``name``, ``value``, ``unit``, ``key`` and one column
        per condition key (absent conditions are NaN/None), after any fixed ``columns`` (``run``, ``seed``)."""
        pd = pandas_or_error()
        rows = [{**columns, "name": r.name, "value": r.value, "unit": r.unit, "key": r.key, **r.condition}
                for r in self.records]
        return pd.DataFrame(rows, columns=_frame_columns(rows, list(columns)))


def _frame_columns(rows: list[dict[str, Any]], first: list[str]) -> list[str]:
    fixed = [*first, "name", "value", "unit", "key"]
    conditions = dict.fromkeys(k for row in rows for k in row if k not in fixed)
    return [*fixed, *conditions]


def pandas_or_error() -> Any:
    """pandas, or one line saying how to install it (it is an optional dependency: the notebook extra)."""
    try:
        import pandas
    except ImportError:
        from atml.errors import UsageError

        raise UsageError("to_frame() needs pandas, which is not installed: pip install pandas (or "
                         "pip install 'atml[notebook]')") from None
    return pandas


@dataclasses.dataclass(frozen=True)
class Spread:
    """One metric over runs that differ only in their seed: mean, sample standard deviation, n, range."""

    metric: str
    """The record's flat key (``val_acc_32``)."""
    name: str
    condition: Mapping[str, Any]
    mean: float
    std: float
    n: int
    min: float
    max: float


def spread(runs: Sequence[Metrics]) -> list[Spread]:
    """Every record the runs all have (in the first run's order), summarised over them; the report's seed table."""
    if not runs:
        return []
    flats = [m.flat() for m in runs]
    out = []
    for record in runs[0]:
        if not all(record.key in f for f in flats):
            continue
        values = [float(f[record.key]) for f in flats]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        out.append(Spread(record.key, record.name, dict(record.condition), mean, std, len(values), min(values),
                          max(values)))
    return out


@dataclasses.dataclass
class Results:
    """What an experiment's ``run`` returns."""

    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    tables: list[Table] = dataclasses.field(default_factory=list)
    figures: list[Figure] = dataclasses.field(default_factory=list)
    views: list[str] = dataclasses.field(default_factory=list)
    """Interactive views (``views/NAME.json``, relative to the run; :mod:`atml.views`) the report lets a reader
    explore; the static figures stay for papers."""
    notes: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Numbers to read with care (estimates from fewer samples than they need); the report shows them boxed."""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Experiment-specific structured data the discussion or the report needs (cells, prompts...)."""

    def add(self, name: str, value: float, unit: str = "", *, key: str | None = None, **condition: Any) -> None:
        """Record ``name = value`` measured under ``condition`` (``key`` only for an older flat name)."""
        self.metrics.records.append(Metric(name, float(value), unit, condition, key))

    def add_figures(self, paths: Iterable[str]) -> None:
        self.figures += figures_from_paths(paths)

    def keep(self, data: Any) -> None:
        """Store the experiment's own data (a dataclass it defines) in ``data``, as results.json writes it."""
        if not dataclasses.is_dataclass(data) or isinstance(data, type):
            raise TypeError(f"keep() takes an experiment's data dataclass, not {type(data).__name__}")
        self.data.update(dataclasses.asdict(data))

    def read(self, cls: type[DataT]) -> DataT:
        """``data`` as the experiment's own dataclass ``cls`` (read back from a run folder or just made).

        Fields a run does not hold (a run written before the field existed) take their defaults; a field
        without a default that is missing raises a KeyError naming it."""
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        missing = [n for n, f in names.items() if n not in self.data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise KeyError(f"this run's data has no {', '.join(missing)} (needed by {cls.__name__})")
        return cls(**{k: v for k, v in self.data.items() if k in names})


@dataclasses.dataclass
class RunResults(Results):
    """A run's results as read back from its folder: the records plus what the runner added."""

    experiment: str = ""
    preset: str = ""
    status: str = "unknown"
    error: str | None = None
    seed: int | None = None
    device: str | None = None
    sources: dict[str, Any] = dataclasses.field(default_factory=dict)
    references: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rehearsal: bool = False
    schema: int = SCHEMA

    @classmethod
    def from_folder(cls, raw: Any, config: Mapping[str, Any], path: Path) -> RunResults:
        """A run folder's results.json (``raw``, as read), checked to be atml's (:func:`check_written`) first."""
        check_written(raw, config, path)
        return cls.from_json(raw)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RunResults:
        """From a results.json of any schema (older ones: records rebuilt from the flat view)."""
        if raw.get("schema", 1) >= 2 and "records" in raw:
            metrics = Metrics(Metric.from_json(r) for r in raw["records"])
        else:
            metrics = Metrics(Metric(k, v) for k, v in (raw.get("metrics") or {}).items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool))
        data = dict(raw.get("data") or {})
        data.update({k: v for k, v in raw.items() if k not in RUN_KEYS})  # older files kept extras at the top
        return cls(metrics=metrics, tables=[Table.from_json(t) for t in raw.get("tables") or []],
                   figures=figures_from_paths(raw.get("figures") or []), views=list(raw.get("views") or []),
                   notes=list(raw.get("notes") or []),
                   warnings=list(raw.get("warnings") or []), data=data, experiment=raw.get("experiment", ""),
                   preset=raw.get("preset", "-"),
                   status=raw.get("status", "unknown"), error=raw.get("error"), seed=raw.get("seed"),
                   device=raw.get("device"), sources=dict(raw.get("sources") or {}),
                   references=list(raw.get("references") or []), rehearsal=bool(raw.get("rehearsal")),
                   schema=int(raw.get("schema", 1)))


def check_written(raw: Any, config: Mapping[str, Any], path: Path) -> None:
    """Refuse, with a :class:`~atml.errors.RunDirError` naming ``path``, a results.json atml did not write: every
    schema atml has written names the experiment and the run's status, the schema is one this atml reads, and the
    experiment is the one config.yaml names."""
    from atml.errors import RunDirError

    def refuse(why: str) -> None:
        raise RunDirError(f"{path} is not an atml run: {why}; pass a folder 'atml run' wrote (it prints the path)")

    if not isinstance(raw, Mapping):
        refuse("its results.json is not a JSON object")
    if not isinstance(raw.get("experiment"), str) or not raw["experiment"]:
        refuse("its results.json has no experiment")
    if not isinstance(raw.get("status"), str):
        refuse("its results.json has no status")
    schema = raw.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        refuse(f"its results.json has schema {schema!r}")
    if schema > SCHEMA:
        raise RunDirError(f"{path}/results.json has schema {schema}, written by a newer atml (this one reads up to "
                          f"{SCHEMA}); upgrade atml (pip install -U atml) to read it")
    if config.get("experiment") != raw["experiment"]:
        refuse(f"its results.json is of {raw['experiment']}, but config.yaml says {config.get('experiment')!r}")


def under(records: Iterable[Metric], **condition: Any) -> list[Metric]:
    """The records with ``condition`` added to theirs (a stage's numbers, placed in the experiment's grid)."""
    return [dataclasses.replace(r, condition={**r.condition, **condition}) for r in records]


def to_json(results: Results, **run: Any) -> dict[str, Any]:
    """results.json, schema 2: the runner's fields, the flat view, the records, tables, figures, notes, data."""
    return {"schema": SCHEMA, **run, "metrics": results.metrics.flat(),
            "records": [m.to_json() for m in results.metrics],
            "figures": [f for fig in results.figures for f in fig.files], "views": list(results.views),
            "tables": [t.to_json() for t in results.tables], "notes": list(results.notes),
            "warnings": list(results.warnings), "data": results.data}


@dataclasses.dataclass(frozen=True)
class Throughput:
    """A model's forward rate (images/s, per memory layout where several were measured) and its share of the
    machine's matrix-multiply rate at the same precision, measured in the same run (:mod:`atml.benchmark`)."""

    rates: dict[str, float]
    """Images/s by layout (``channels_last``, ``contiguous``), or ``{"": rate}`` for one."""
    flops_per_image: float
    precision: str
    gemm_gflops: float
    achieved_gflops: float
    share_of_gemm: float

    def to_json(self) -> dict[str, Any]:
        """Flat, as the bench files have always held it (``images_per_s_channels_last``, ..., ``share_of_gemm``)."""
        rates = {f"images_per_s_{k}" if k else "images_per_s": v for k, v in self.rates.items()}
        return {**rates, "flops_per_image": self.flops_per_image, "precision": self.precision,
                "gemm_gflops": self.gemm_gflops, "achieved_gflops": self.achieved_gflops,
                "share_of_gemm": self.share_of_gemm}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Throughput:
        """As :meth:`to_json` (or :func:`atml.benchmark.ceiling` and its callers) wrote it."""
        rates = {k.removeprefix("images_per_s").removeprefix("_"): float(v) for k, v in raw.items()
                 if k.startswith("images_per_s")}
        return cls(rates, float(raw["flops_per_image"]), str(raw["precision"]), float(raw["gemm_gflops"]),
                   float(raw["achieved_gflops"]), float(raw["share_of_gemm"]))


@dataclasses.dataclass(frozen=True)
class Bench:
    """``atml bench``: atml's path beside the naive one, same data, epochs and seed, in one process."""

    title: str
    naive_label: str
    atml_label: str
    naive_s: float
    atml_s: float
    speedup: float
    result_name: str
    """What both paths end on ("final val acc", "mean cross CKA", "final train loss")."""
    naive_result: float
    atml_result: float
    chance: float | None
    at_chance: bool
    """Both results within a few points of chance: their agreement says nothing."""
    throughput: Throughput
    """The model's forward rate and its share of the machine's matrix-multiply rate."""
    experiment: str = ""
    command: str = ""
    """The ``atml bench`` command that measured it (``--json`` files carry it)."""

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "throughput": self.throughput.to_json()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Bench:
        """As :meth:`to_json` wrote it (``atml bench --json``; older files without ``experiment`` too)."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"throughput"}
        return cls(**{k: raw[k] for k in fields if k in raw}, throughput=Throughput.from_json(raw["throughput"]))


@dataclasses.dataclass
class Pair:
    """atml's rate beside the peer's, for the same model, batch, precision and device."""

    name: str
    atml: float
    peer: float
    peer_name: str

    @property
    def ratio(self) -> float:
        return self.atml / self.peer


@dataclasses.dataclass(frozen=True)
class Speed:
    """``atml speed``: atml's frozen-feature and fine-tuning rates beside timm's plain loops, on one device."""

    device: str
    device_name: str
    torch: str
    precision: str
    date: str
    seconds: float
    pairs: list[Pair]
    """One per path and model: ``name``, ``atml`` and ``peer`` images/s, ``peer_name``, ``ratio``."""
    sizes: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """As ``benchmarks/speed-*.json`` holds it (each pair with its ratio)."""
        return {**dataclasses.asdict(self), "pairs": [{**dataclasses.asdict(p), "ratio": p.ratio} for p in self.pairs]}

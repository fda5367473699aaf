"""When a run may be compared with a published figure (``shared/REFERENCES.md``), and the comparison.

Each experiment lists its own references beside its ``run`` (``REFERENCES`` in its module,
``Experiment.references``); this module holds their type and decides when a comparison is fair.

Each reference names the metric it compares with and the conditions under which the
comparison is fair (preset, data, architecture, weights). A run that does not meet them
is marked "not comparable" with the reason, never silently compared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atml.results import RunResults


@dataclasses.dataclass(frozen=True)
class Reference:
    experiment: str
    what: str
    value: float | None
    """None for a qualitative finding."""
    source: str
    status: str
    """"checked" (seen in the source) or "recalled" (widely quoted; approximate)."""
    metric: str | None = None
    """The name of the run's metric this compares with; None for context shown beside the results."""
    tolerance: float | None = None
    """Absolute tolerance for "within"; None: compare only for context."""
    requires: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Config values (and the preset) a run must have for the comparison to be fair."""
    condition: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The condition of the metric compared with (e.g. ``{"resolution": 32}``)."""


def values(refs: Sequence[Reference], metric: str, field: str, *, source: str) -> dict[Any, float]:
    """``{condition[field]: value}`` of the references to ``metric`` from ``source`` (for figures: each published
    figure is written once, in its experiment's ``REFERENCES``)."""
    return {r.condition[field]: r.value for r in refs
            if r.metric == metric and field in r.condition and source in r.source and r.value is not None}


def compare(ref: Reference, results: RunResults, cfg: Any) -> dict[str, Any]:
    """One row of the comparison table: the reference, our number, and a verdict."""
    label = ref.metric and "_".join([ref.metric, *(str(v) for v in ref.condition.values())])  # the flat key
    row: dict[str, Any] = {"what": ref.what, "reference": ref.value, "source": ref.source, "source_status": ref.status,
           "metric": label, "condition": dict(ref.condition), "ours": None, "tolerance": ref.tolerance}
    if ref.metric is None:
        return {**row, "status": "context", "reason": "background figure, not a result of this run"}
    row["ours"] = results.metrics.get(ref.metric, **ref.condition)
    if results.rehearsal or results.preset == "rehearsal":
        return {**row, "status": "not comparable",
                "reason": "rehearsal run: generated data and random weights, a measure of time and memory only"}
    unmet = _unmet(ref, results, cfg)
    if unmet:
        return {**row, "status": "not comparable", "reason": "; ".join(unmet)}
    if row["ours"] is None:
        return {**row, "status": "not comparable", "reason": f"this run has no {label}"}
    if ref.tolerance is None or ref.value is None:
        return {**row, "status": "context", "reason": "different protocol; shown for scale"}
    within = abs(row["ours"] - ref.value) <= ref.tolerance
    return {**row, "status": "within" if within else "outside",
            "reason": f"|ours - reference| {'<=' if within else '>'} {ref.tolerance}"}


def compare_all(refs: Sequence[Reference], results: RunResults, cfg: Any) -> list[dict[str, Any]]:
    """Every reference of an experiment (its ``Experiment.references``) compared with one run."""
    return [compare(ref, results, cfg) for ref in refs]


def _unmet(ref: Reference, results: RunResults, cfg: Any) -> list[str]:
    unmet = []
    for key, wanted in ref.requires.items():
        have = results.preset if key == "preset" else getattr(cfg, key, None)
        if have != wanted:
            unmet.append(f"{key} is {have!r}, the reference used {wanted!r}")
    subset = (results.sources.get("data") or {}).get("subset") if "data" in ref.requires else None
    if subset:
        unmet.append(f"the data is {subset}, the reference used the whole dataset")
    return unmet

"""A sweep's cells in MLflow or W&B (``--track``): each finished cell logged exactly once, tracking never stopping
the sweep.

Each cell's entry in ``sweep.json`` keeps the tracked run's id and the digest of the ``results.json``
it logged. A cell is logged when its ``results.json`` exists and differs from what was logged:
cells that ended while no controller watched (a dropped session, a crash) are logged by the next
run of the sweep, and a cell retried with ``--retry-failed`` replaces its failed run. A tracker
that fails (a server down, a full disk) prints one line and the sweep goes on; the next run logs
what it missed. The sweep's parent run ends FINISHED (every cell done), FAILED (a cell failed or
stopped) or KILLED (the controller was interrupted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atml.console import Reporter
from atml.errors import Option
from atml.sweeps.spec import Cell, Sweep


class Tracker:
    def __init__(self, kind: str | None, sweep: Sweep, state: Any, folder: Path, report: Reporter) -> None:
        self.kind, self.sweep, self.state, self.folder, self.report = kind, sweep, state, folder, report
        self.sink: Any = None
        self.new_parent = False
        if kind is None:
            return
        from atml import tracking

        try:
            self.sink = tracking.open_sink(kind, sweep, state.data["tracking"])
        except Exception as err:  # noqa: BLE001 - the tracker's own failure, whatever its type, never stops a sweep
            self._failed("opening the sweep's run", err)
            return
        self.new_parent = not state.data["tracking"]
        state.data["tracking"] = self.sink.parent_ids()
        state.save()

    def _failed(self, what: str, err: BaseException) -> None:
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        self.report.tell("atml: ", Option("track", self.kind), f": {what} failed ({line}); the sweep goes on, and its "
                         "next run logs what was missed")

    def catch_up(self) -> None:
        """Log the cells that ended since the last controller logged them (or that it could not log)."""
        for cell in self.sweep.cells:
            self.log(cell)

    def log(self, cell: Cell) -> None:
        """Log ``cell`` if its results.json exists and is not the one logged before."""
        results = self.folder / cell.name / "results.json"
        if self.sink is None or not results.is_file():
            return
        digest = hashlib.sha256(results.read_bytes()).hexdigest()
        tracked = self.state.cell(cell.name).get("tracked") or {}
        if tracked.get("sha256") == digest:
            return
        try:
            run_id = self.sink.log_run(results.parent, cell, replaces=tracked.get("run"))
        except Exception as err:  # noqa: BLE001
            self._failed(f"logging cell {cell.name}", err)
            return
        self.state.set(cell.name, tracked={"run": run_id, "sha256": digest})

    def rejected(self) -> None:
        """The cluster refused the sweep's first submission: a parent run made for it goes again (its folder does
        too); a reopened one ends KILLED."""
        if self.sink is None:
            return
        try:
            if self.new_parent:
                self.sink.discard()
            else:
                self.sink.close("KILLED")
        except Exception as err:  # noqa: BLE001
            self._failed("ending the sweep's run", err)

    def close(self, outcomes: Sequence[Any], *, interrupted: bool) -> None:
        if self.sink is None:
            return
        bad = any(o.state in ("failed", "stopped", "skipped-failed") for o in outcomes)
        status = "KILLED" if interrupted else "FAILED" if bad else "FINISHED"
        try:
            self.sink.close(status)
        except Exception as err:  # noqa: BLE001
            self._failed("ending the sweep's run", err)

"""Compare two ``atml demo`` folders record by record: every non-timing record must be identical.

    python scripts/compare_demo.py runs/demo-BEFORE runs/demo-AFTER

A refactor that does not touch the arithmetic leaves every metric record (name, condition, value) of every
experiment as it was; only the records measured in seconds, images per second or megabytes (the run's timing and
memory, by their unit) may move. Prints the counts and each record that differs; exits 1 if any does.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

TIMING_UNITS = {"s", "ms", "img/s", "MB", "GB", "GiB", "MiB"}


def records(demo: Path) -> dict[str, dict[tuple[str, str], Any]]:
    """``{experiment: {(name, condition): value}}`` of a demo folder's runs, timing and memory left out."""
    out: dict[str, dict[tuple[str, str], Any]] = {}
    for results in sorted((demo / "runs").glob("*/results.json")):
        raw = json.loads(results.read_text())
        out[raw["experiment"]] = {(r["name"], json.dumps(r["condition"], sort_keys=True)): r["value"]
                                  for r in raw["records"] if r.get("unit") not in TIMING_UNITS}
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    before, after = records(Path(argv[0])), records(Path(argv[1]))
    same, differ = 0, []
    for exp in sorted(set(before) | set(after)):
        a, b = before.get(exp, {}), after.get(exp, {})
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key), b.get(key)
            equal = va == vb or (isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb))
            same += equal
            if not equal:
                differ.append(f"{exp} {key[0]} {key[1]}: {va} -> {vb}")
    print(f"{len(before)} / {len(after)} experiments; non-timing records identical: {same}, different: {len(differ)}")
    print("\n".join(differ))
    return 1 if differ or set(before) != set(after) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

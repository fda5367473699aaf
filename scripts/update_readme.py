"""Regenerate README's results table from one ``atml demo`` run (never retype a number).

    python scripts/update_readme.py runs/demo-YYYYmmdd-HHMMSS/runs

writes ``benchmarks/demo-results.json`` (the runs' headline numbers, commit and date) and
rewrites the section between the results markers in README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from atml.report import readme

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python scripts/update_readme.py RUNS_FOLDER (the runs/ of an atml demo)", file=sys.stderr)
        return 2
    folders = sorted(p for p in Path(argv[0]).iterdir() if (p / "results.json").is_file())
    summary = readme.collect(folders)
    (ROOT / "benchmarks").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "demo-results.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    path = ROOT / "README.md"
    path.write_text(readme.update(path.read_text(), summary))
    print(f"{len(summary['experiments'])} experiments -> benchmarks/demo-results.json and README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

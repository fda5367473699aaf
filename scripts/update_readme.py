"""Regenerate README's and the documentation site's tables from measurements (never retype a number).

    python scripts/update_readme.py runs/demo-YYYYmmdd-HHMMSS/runs   # a new demo run, then every table
    python scripts/update_readme.py                                 # every table from benchmarks/ as it is

The first form writes ``benchmarks/demo-results.json`` (the runs' headline numbers, commit
and device) from the run folders; both rewrite the generated sections of README.md and ``docs/*.md`` from the files
in ``benchmarks/`` (demo results, ``atml speed``, the rehearsal suite timing, ...) and the layout map from the
package.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from atml.reporting import readme

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and not Path(argv[0]).is_dir()):
        print("usage: python scripts/update_readme.py [RUNS_FOLDER (the runs/ of an atml demo)]", file=sys.stderr)
        return 2
    benchmarks = ROOT / "benchmarks"
    if argv:
        folders = sorted(p for p in Path(argv[0]).iterdir() if (p / "results.json").is_file())
        summary = readme.collect(folders)
        benchmarks.mkdir(exist_ok=True)
        (benchmarks / "demo-results.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        print(f"{len(summary['experiments'])} experiments -> benchmarks/demo-results.json")
    from atml.suite import catalog

    catalog.FILE.write_text(catalog.generate())
    print(f"{catalog.FILE.relative_to(ROOT)}: rewritten from the registry")
    from atml import views
    from atml.reporting import interactive

    interactive.SCHEMAS.write_text(json.dumps(views.json_schemas(), indent=1) + "\n")
    print(f"{interactive.SCHEMAS.relative_to(ROOT)}: rewritten from atml.views")
    for path in readme.pages(ROOT):
        text = path.read_text()
        new = readme.update(text, benchmarks)
        if new != text:
            path.write_text(new)
            print(f"{path.relative_to(ROOT)}: generated sections rewritten from benchmarks/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

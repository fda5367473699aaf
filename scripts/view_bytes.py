"""What the interactive views weigh in a report's page, per view and per report, before and after the report's budget.

    python scripts/view_bytes.py [--demo RUNS]      # writes benchmarks/view-bytes-cpu.json (README's table)

The smoke preset on real architectures (random weights): vit.attention on DeiT-Small at 224 px, resnet.features on
ResNet-50, compare.cka and compare.saliency on ResNet-50 + DeiT-Small (saliency without Score-CAM, whose maps weigh
what the others' do), clip.gap; then, with ``--demo``, every run of an ``atml demo`` (its ``runs/`` folder). Each
set is one report: every view's bytes as the page holds it, the views' total before and after
:func:`atml.reporting.interactive.fit`, and report.html's size.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from atml import cli
from atml.reporting import build, interactive
from atml.suite import registry

ROOT = Path(__file__).resolve().parents[1]
REAL = [["vit.attention"], ["resnet.features"],
        ["compare.cka", "--set", "models=[resnet50,deit_small_patch16_224]", "--set", "images=32"],
        ["compare.saliency", "--set", "models=[resnet50,deit_small_patch16_224]", "--set",
         "methods=[gradcam,gradcam++,cls_attention,rollout]", "--set", "limit=4"],
        ["clip.gap"]]
"""The smoke runs on real architectures (``--preset smoke`` added)."""


def measure(name: str, runs: list[Path], out: Path) -> dict[str, Any]:
    """One report of ``runs``: each view's bytes, the total before and after the budget, report.html's size."""
    blocks, rows = [], []
    for index, run in enumerate(runs):
        listed = json.loads((run / "results.json").read_text()).get("views") or []
        loaded = interactive.load(run, listed, f"run{index}")
        blocks += loaded
        rows += [{"run": run.name, "view": b.title, "kind": b.kind, "bytes": len(b.data)} for b in loaded]
    before = sum(len(b.data) for b in blocks)
    said = interactive.fit(blocks)
    page = build.write_report(runs, out / f"report-{name}", registry())
    static = build.write_report(runs, out / f"static-{name}", registry(), static=True)
    return {"set": name, "runs": len(runs), "views": rows, "views_bytes": before,
            "views_bytes_fitted": sum(len(b.data) for b in blocks), "thinned": said,
            "report_bytes": page.stat().st_size, "static_bytes": static.stat().st_size}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", help="the runs/ folder of an atml demo")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "view-bytes-cpu.json"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="atml-view-bytes-"))
    for argv_ in REAL:
        code = cli.main(["run", argv_[0], "--preset", "smoke", *argv_[1:], "--out", str(work / "smoke")])
        if code:
            raise SystemExit(f"{' '.join(argv_)}: exit {code}")
    sets = [measure("smoke-real", sorted((work / "smoke").iterdir()), work)]
    if args.demo:
        sets.append(measure("demo", sorted(p for p in Path(args.demo).iterdir() if (p / "results.json").is_file()),
                            work))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report = {"command": "python scripts/view_bytes.py " + " ".join(argv), "date": time.strftime("%Y-%m-%d"),
              "commit": commit.stdout.strip(), "cpu": platform.processor() or platform.machine(),
              "budget": interactive.REPORT_BUDGET, "smoke_runs": [" ".join(a) for a in REAL], "sets": sets}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    for s in sets:
        mb = {k: f"{s[k] / 1e6:.2f} MB" for k in ("views_bytes", "views_bytes_fitted", "report_bytes", "static_bytes")}
        print(f"{s['set']}: {s['runs']} runs, views {mb['views_bytes']} -> {mb['views_bytes_fitted']}; report.html "
              f"{mb['report_bytes']} (static {mb['static_bytes']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

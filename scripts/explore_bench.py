"""The interactive report measured: its size and build time beside the static one, and the scatter at 2,000 points.

    python scripts/explore_bench.py runs/demo-YYYYmmdd-HHMMSS/runs     # writes benchmarks/explore-cpu.json and
                                                                       # the screenshots docs/explore-*.png

- The demo's report built twice in this process, ``--static`` (what the report was before its views) and with
  the views: median build time of 3 each, report.html's size, and each view's share of the page.
- An embedding scatter of 2,000 and of 5,000 points (the cap, :data:`atml.views.MAX_POINTS`; 10 classes,
  thumbnails of 32 px images) opened in headless Chromium: time to ready, a full redraw and a hover (nearest point,
  tooltip, redraw) in ms (median of 50), and the JavaScript heap after opening.
- A screenshot of each view of the demo report after a reader's action (hover a point; click a patch, then the
  first layer and the last head; hover a CKA cell; pick a saliency map's second image), for README.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atml import views
from atml.reporting import build, interactive
from atml.results import RunResults
from atml.suite import registry

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MB = 1.0
"""README's budget: the interactive views may add at most this much to the demo report; the script fails above it."""


def _builds(runs: list[Path], work: Path, static: bool) -> tuple[float, int, Path]:
    times, page = [], work
    for i in range(3):
        out = work / f"{'static' if static else 'interactive'}-{i}"
        started = time.perf_counter()
        page = build.write_report(runs, out, registry(), static=static)
        times.append(time.perf_counter() - started)
    return statistics.median(times), page.stat().st_size, page


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                "--force-device-scale-factor=1", "--enable-precise-memory-info"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "chromium"
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def _scatter_page(n: int, work: Path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), n // 10)
    centres = rng.normal(0, 10, (10, 2))
    folder = work / f"scatter-{n}"
    sheet = views.thumbnail_sheet(torch.from_numpy(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)),
                                  folder / "views", relative_to=folder)
    view = views.Scatter(f"{n} points", {"a": centres[labels] + rng.normal(0, 2, (n, 2)),
                                         "b": rng.normal(0, 1, (n, 2))},
                         labels, [f"class {c}" for c in range(10)], thumbs=np.arange(n), sheet=sheet,
                         predicted=labels)
    path = views.save(view, folder / "views" / "scatter.json", relative_to=folder)
    page = folder / "page.html"
    page.write_text(interactive.page(interactive.load(folder, [path], "v"), f"{n} points"))
    return page


TIMING = """
var v = atmlViews['v-scatter'], c = v.canvas, r = c.getBoundingClientRect(), draws = [], hovers = [];
for (var i = 0; i < 50; i++) { var t = performance.now(); v.redraw(); draws.push(performance.now() - t); }
for (var j = 0; j < 50; j++) {
  var p = v.screen((j * 37) % arguments[0]), t2 = performance.now();
  c.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + c.clientLeft + p[0],
                                               clientY: r.top + c.clientTop + p[1]}));
  hovers.push(performance.now() - t2);
}
function median(a) { a.sort(function (x, y) { return x - y; }); return a[Math.floor(a.length / 2)]; }
return {redraw_ms: median(draws), hover_ms: median(hovers), heap_mb: performance.memory.usedJSHeapSize / 1048576,
        ready_ms: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd};
"""


def _scatter(driver: Any, n: int, work: Path) -> dict[str, Any]:
    page = _scatter_page(n, work)
    driver.get(page.as_uri())
    got = driver.execute_script(TIMING, n)
    return {"points": n, "page_kb": page.stat().st_size / 1024, **{k: round(v, 3) for k, v in got.items()}}


def _shoot(driver: Any, page: Path, docs: Path) -> list[str]:
    """Each view of the demo report after a reader's action; returns the files written."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.get(page.as_uri())
    written = []
    for vid in driver.execute_script("return Object.keys(atmlViews)"):
        root = driver.find_element("id", vid)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", root)
        canvas = driver.execute_script(f"return atmlViews['{vid}'].canvas")
        kind = root.get_attribute("data-kind")
        half = canvas.size["width"] / 2, canvas.size["height"] / 2
        if kind == "scatter":
            x, y = driver.execute_script(f"return atmlViews['{vid}'].screen(7)")
            ActionChains(driver).move_to_element_with_offset(canvas, round(x - half[0]), round(y - half[1])).perform()
        elif kind == "attention":
            grid = driver.execute_script(f"return JSON.parse(document.getElementById('{vid}')"
                                         ".querySelector('script').textContent).grid")
            x, y = driver.execute_script(f"return atmlViews['{vid}'].patchCentre({grid * (grid // 2) + grid // 3})")
            ActionChains(driver).move_to_element_with_offset(canvas, round(x - half[0]), round(y - half[1])).click()\
                .perform()
            root.find_element("css selector", "input[type=range]").send_keys(Keys.HOME)  # the first layer, last head
            root.find_elements("css selector", "[aria-label=head] button")[-1].click()
        elif kind == "heatmap":
            x, y = driver.execute_script(f"return atmlViews['{vid}'].cellCentre(2, 3)")
            ActionChains(driver).move_to_element_with_offset(canvas, round(x - half[0]), round(y - half[1])).perform()
        elif kind == "saliency":
            root.find_element("css selector", "[aria-label=image] button[data-choice='1']").click()
        name = docs / f"explore-{vid.split('-', 1)[1]}.png"
        root.screenshot(str(name))
        written.append(f"{docs.name}/{name.name}")
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="the runs/ folder of an atml demo")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "explore-cpu.json"))
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)
    runs = sorted(p for p in Path(args.runs).iterdir() if (p / "results.json").is_file())
    presets = sorted({json.loads((p / "results.json").read_text())["preset"] for p in runs})
    work = Path(tempfile.mkdtemp(prefix="atml-explore-bench-"))
    static_s, static_bytes, _ = _builds(runs, work, static=True)
    explore_s, explore_bytes, page = _builds(runs, work, static=False)
    per_view = []
    for index, run in enumerate(runs):
        results = RunResults.from_json(json.loads((run / "results.json").read_text()))
        for block in interactive.load(run, results.views, f"run{index}"):
            per_view.append({"view": block.id.split("-", 1)[1], "kind": block.kind, "kb": len(block.data) / 1024})
    driver = _browser()
    try:
        scatter = [_scatter(driver, n, work) for n in (2000, views.MAX_POINTS)]
        docs = Path(args.docs)
        docs.mkdir(exist_ok=True)
        shots = _shoot(driver, page, docs)
        browser = driver.capabilities.get("browserVersion", "")
    finally:
        driver.quit()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report = {"command": "python scripts/explore_bench.py " + " ".join(argv), "date": time.strftime("%Y-%m-%d"),
              "commit": commit.stdout.strip(), "cpu": platform.processor() or platform.machine(),
              "chromium": browser, "runs": len(runs), "presets": presets,
              "static": {"build_s": round(static_s, 3), "report_kb": static_bytes / 1024},
              "interactive": {"build_s": round(explore_s, 3), "report_kb": explore_bytes / 1024},
              "views": per_view, "scatter": scatter, "screenshots": shots}
    added = (explore_bytes - static_bytes) / 2 ** 20
    report["budget"] = {"added_mb_max": BUDGET_MB, "added_mb": round(added, 3)}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    if added > BUDGET_MB:
        print(f"the views add {added:.2f} MB to the demo report, over the {BUDGET_MB:g} MB budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

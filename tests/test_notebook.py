"""examples/tour.ipynb runs top to bottom in a real Jupyter kernel, and is committed without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "examples" / "tour.ipynb"


def test_the_tour_notebook_is_committed_without_outputs():
    nb = nbformat.read(TOUR, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_the_tour_notebook_runs_in_a_jupyter_kernel(tmp_path):
    nb = nbformat.read(TOUR, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    assert not [o for outs in outputs.values() for o in outs if o.output_type == "error"]
    html = [o["data"]["text/html"] for outs in outputs.values() for o in outs
            if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert any("vae.train" in h and "What the numbers show" in h and "<img" in h for h in html)  # a Run, displayed
    printed = "".join(o.get("text", "") for outs in outputs.values() for o in outs if o.output_type == "stream")
    assert "is an unfinished run of vae.train (smoke): it has no results.json. It stopped after epoch 1" in printed
    assert "Continue it with atml.resume(" in printed  # Python's words in a notebook
    plain = [o["data"]["text/plain"] for outs in outputs.values() for o in outs if o.output_type == "execute_result"]
    assert any(p.startswith("('ok', ") for p in plain)  # the resumed run finished
    assert any("dataframe" in h and "resolution" in h for h in html)  # seeds as a pandas DataFrame
    assert any("image/png" in o.get("data", {}) for outs in outputs.values() for o in outs)  # the seeds' plot
    last = outputs[max(outputs)][0]["data"]["text/plain"]
    assert "report.html" in last and "tables.tex" in last

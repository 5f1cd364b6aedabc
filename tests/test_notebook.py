"""The quick-start notebook runs headless (issue 14, item 10): progress, summary, a plot."""
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs_and_shows_progress_summary_and_a_plot(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<th>params</th>" in h for h in html)  # the model and its summary, as tables
    assert any("<th>epoch</th>" in h and "val_loss" in h for h in html)  # the history
    progress = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "epoch 5/5" in progress and "\r" in progress  # a bar redrawn in place, then the epoch lines
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot

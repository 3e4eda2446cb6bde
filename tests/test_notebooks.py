"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel started in
the notebook's own folder (as Jupyter starts it), raises nothing, and shows at
least one figure inline (outputs are not written back)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STUDIES = {"quickstart-analysis", "rotation-safety", "state-scaling-fan-out", "cpu-message-size", "table-overflow",
           "calibration"}


def test_one_notebook_per_study():
    assert STUDIES <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_shows_figures(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown"
    prose = notebook.cells[0].source
    assert "**Question.**" in prose and "**Answer.**" in prose
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no figure"

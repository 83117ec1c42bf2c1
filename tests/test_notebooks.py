"""Both notebooks run top to bottom in a real Jupyter kernel on the demo models; committed without outputs."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory, tiny_models):
    return tmp_path_factory.mktemp("notebooks") / "run"


@pytest.mark.parametrize("name", ["quickstart", "selectors"])  # quickstart builds the run selectors reads
def test_notebook_runs_in_a_kernel(name, notebook_run, monkeypatch):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count")
               for cell in notebook.cells if cell.cell_type == "code"), "strip outputs before committing"
    monkeypatch.setenv("PREFSYNTH_NOTEBOOK_RUN", str(notebook_run))
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs)  # the plot rendered
    if name == "quickstart":
        assert (notebook_run / "dataset" / "data" / "pairs").is_dir() and (notebook_run / "dpo" / "model").is_dir()
    else:
        table = next(out["data"]["text/plain"] for out in outputs if "ampo_optselect" in out.get("data", {}).get("text/plain", ""))
        assert "mpo" in table and "best_worst" in table

"""Tests that every notebook in notebooks/ runs top to bottom, in its small configuration.

Each notebook is executed with nbclient in a fresh python3 kernel (this interpreter's ipykernel)
with TINYGEN_NOTEBOOK_SMALL=1, which the first code cell of every notebook reads to shrink its
datasets, models and training runs. A cell that raises fails the test with the cell's source and
the traceback. The committed notebooks are not modified: the executed copy is thrown away.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the test extra")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the test extra")
pytest.importorskip("ipykernel", reason="ipykernel (the python3 kernel) is in the test extra")
pytest.importorskip("matplotlib", reason="the notebooks plot with matplotlib (test extra)")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # one cell of a small run takes seconds; this only stops a hang

# Notebooks that train a model take tens of seconds even when small.
SLOW = {"02_im2col_convolution.ipynb", "04_gan.ipynb", "05_vae.ipynb"}


@pytest.fixture(scope="module")
def kernel_name() -> str:
    """The python3 kernel, run by this interpreter (jupyter_client swaps 'python' in its argv
    for sys.executable). ipykernel provides it even where no kernelspec is installed."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(prefix=sys.prefix)
        spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    return "python3"


def test_the_five_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    for prefix in ("01_autograd", "02_im2col", "03_transposed", "04_gan", "05_vae"):
        assert any(n.startswith(prefix) for n in names), f"no notebook {prefix}*: {names}"


def _params():
    for path in NOTEBOOKS:
        marks = [pytest.mark.slow] if path.name in SLOW else []
        yield pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", list(_params()))
def test_notebook_runs_top_to_bottom_small(path: Path, kernel_name: str, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells, f"{path.name} is empty"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "TINYGEN_NOTEBOOK_SMALL" in first_code.source, (
        f"{path.name}: the first code cell must read TINYGEN_NOTEBOOK_SMALL"
    )

    monkeypatch.setenv("TINYGEN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # One thread per pool (OpenBLAS, Numba): on a 2-core machine that is running anything else,
    # two pools of two threads each fight over the cores and a small GAN step goes from 25 ms to
    # nearly a second. Notebook 02 sets its thread counts itself where it measures them.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    # make `import tinygen` find this checkout even without an editable install
    root = str(NOTEBOOK_DIR.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))

    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        # run in a scratch folder so that files the notebook writes do not land in the checkout
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)

    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors

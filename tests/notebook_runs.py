"""The notebooks under notebooks/ as the tests check them: how each is stored (with the outputs of
one clean run, or without outputs until its real run exists) and one execution of it."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


def path(name: str) -> str:
  return os.path.join(DIRECTORY, name)


def _code_cells(notebook: str) -> list:
  nb = nbformat.read(notebook, as_version=4)
  nbformat.validate(nb)
  return [c for c in nb.cells if c.cell_type == "code"]


def assert_stored_without_outputs(notebook: str) -> None:
  code = _code_cells(notebook)
  assert code and all(not c.outputs and c.execution_count is None for c in code)


def stored_outputs(notebook: str) -> list[dict]:
  """The outputs of a notebook stored after one clean run (cells numbered 1..n, no error)."""
  code = _code_cells(notebook)
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
  outputs = [o for c in code for o in c.outputs]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  return outputs


def execute(notebook: str, cwd: str, timeout: int = 300) -> list[dict]:
  """Runs the notebook top to bottom in `cwd` (the kernel inherits this process's environment:
  CPU, the forced device count, any variable a test set); returns its outputs. A failing cell
  raises CellExecutionError naming it; a hung kernel fails after `timeout` seconds a cell."""
  nb = nbformat.read(notebook, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=timeout, startup_timeout=120, kernel_name="python3",
                                   resources={"metadata": {"path": cwd}})
  client.execute()
  return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


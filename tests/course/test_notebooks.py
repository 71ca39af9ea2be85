"""Every solution notebook runs top to bottom on the bundled toy model, offline, with nbclient.

The kernel runs this interpreter (see `ioi.course.build.execute_notebook`), so it sees the
installed ``ioi``. ``IOI_MODEL=toy`` pins the model whatever the caller's environment says;
``OMP_NUM_THREADS=1`` keeps each kernel to one thread: the toy model's small matrix products
gain nothing from more, and on a shared CI machine extra threads only contend.
"""

from __future__ import annotations

import pytest

from ioi.course.build import execute_notebook, find_root, solution_notebooks

ROOT = find_root()
NOTEBOOKS = solution_notebooks(ROOT)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_solution_notebook_runs(path, record_property) -> None:
    seconds = execute_notebook(
        path, ROOT, timeout=300, env={"IOI_MODEL": "toy", "OMP_NUM_THREADS": "1"}
    )
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s")

"""Every solution notebook runs top to bottom with ``IOI_MODEL=gpt2-small``, offline.

No machine here has GPT-2 small's weights, so the test lays a model of GPT-2 small's layout
(12 layers of 12 heads, vocabulary 50257) out in a temporary Hugging Face cache as the hub
would lay out ``gpt2`` and points ``HF_HUB_CACHE`` at it. The notebooks load it through the
same `ioi.load_model("gpt2-small")` path a user's cached GPT-2 small takes, and take their
GPT-2 branches (the paper's circuit, the published figures beside the model's). No number is
checked: only that every cell runs.

The model is randomly initialised (``d_model`` 48), except for parts 5 and 6, which run
circuit discovery: on random weights the IOI and ABC logit differences are about equal, so
every normalised effect is large, nearly every head passes discovery's thresholds and
discovery path-patches the whole model (measured: 1656 s of part 5's 1730 s on a loaded
2-core machine; part 6, which discovers once per template group, ran over 13 min). They run on
`ioi.testing.toy_in_gpt2_layout_dir` instead, the bundled toy's circuit inside GPT-2 small's
layout, where discovery finds the toy's few heads.

Part 7 (feature circuits) is not run here: it reads the SAEs shipped for the bundled toy model,
so it loads the toy whatever ``IOI_MODEL`` says (GPT-2 small's published SAEs are not in any
offline cache, and SAEs for a random model would say nothing), and running it with
``IOI_MODEL=gpt2-small`` would repeat `tests/course/test_notebooks.py`'s run of it.

Two kernels run at a time (one thread each), longest notebook first.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ioi import testing
from ioi.course.build import execute_notebook, find_root, solution_notebooks

ROOT = find_root()
# longest first (measured), so the two workers finish together
ORDER = ("part3", "part4", "part2", "part6", "part5", "part1")
TOY_IN_LAYOUT = ("part5", "part6")  # see the module docstring
TOY_ONLY = ("part7",)  # pins the toy model: see the module docstring


def _rank(path: Path) -> int:
    return next((i for i, part in enumerate(ORDER) if path.stem.startswith(part)), len(ORDER))


def _env(cache: Path) -> dict[str, str]:
    return {
        "IOI_MODEL": "gpt2-small",
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_solution_notebooks_run_on_a_gpt2_small_layout(tmp_path, record_property) -> None:
    random_cache, toy_cache = tmp_path / "hub-random", tmp_path / "hub-toy"
    testing.hub_cache_with_gpt2(random_cache, testing.random_gpt2_dir(tmp_path / "random"))
    testing.hub_cache_with_gpt2(toy_cache, testing.toy_in_gpt2_layout_dir(tmp_path / "toy"))
    notebooks = sorted(
        (p for p in solution_notebooks(ROOT) if not p.stem.startswith(TOY_ONLY)), key=_rank
    )
    assert [p.stem.split("_")[0] for p in notebooks] == list(ORDER), "update ORDER"

    def run(path: Path) -> tuple[str, float | str]:
        toy = path.stem.startswith(TOY_IN_LAYOUT)
        env = _env(toy_cache if toy else random_cache)
        try:
            outcome: float | str = round(execute_notebook(path, ROOT, timeout=900, env=env), 1)
        except Exception as error:  # reported below, all notebooks together
            outcome = f"{type(error).__name__}: {str(error)[-1500:]}"
        print(f"{path.stem}: {outcome}", flush=True)
        return path.stem, outcome

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = dict(pool.map(run, notebooks))
    for stem, outcome in outcomes.items():
        record_property(stem, outcome)
    failed = {stem: o for stem, o in outcomes.items() if isinstance(o, str)}
    assert not failed, "\n\n".join(f"{stem}:\n{o}" for stem, o in failed.items())

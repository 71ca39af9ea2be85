"""Grade every exercise with its checker: against solutions/ (must pass) or exercises/ (yours).

See conftest.py for how the target is chosen. A failure's message is the checker's: the call,
what was expected, what came back, the likely mistake and a hint.
"""

from __future__ import annotations

import pytest

import ioi.checks as checks
from ioi.checks.targets import course_exercises, load_target
from ioi.course.build import find_root

EXERCISES = course_exercises(find_root())


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("stem", "name"), [(s.stem, n) for s, n in EXERCISES], ids=[n for _, n in EXERCISES]
)
def test_exercise(stem: str, name: str, target: str, course_root) -> None:
    module = load_target(course_root, target, stem)
    fn = getattr(module, name, None)
    if fn is None:
        pytest.fail(f"{target}/{stem}.py has no function {name}; regenerate it or restore it")
    checks.checker_for(name)(fn)

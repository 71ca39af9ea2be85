"""Meta-tests: every checker fails on its exercise's stub, saying it is not implemented.

The stubs are built from the course sources in memory, so this holds whatever a learner has
written into exercises/. Together with test_exercises.py on solutions/ it shows each checker
can both pass and fail.
"""

from __future__ import annotations

import pytest

import ioi.checks as checks
from ioi.checks.targets import course_exercises, stub_module
from ioi.course.build import find_root

EXERCISES = course_exercises(find_root())


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("section", "name"), EXERCISES, ids=[f"stub-{n}" for _, n in EXERCISES])
def test_checker_fails_on_stub(section, name: str) -> None:
    stub = getattr(stub_module(section), name)
    with pytest.raises(checks.CheckFailed) as failure:
        checks.checker_for(name)(stub)
    assert failure.value.diagnosis == "not_implemented"
    message = str(failure.value)
    assert "NotImplementedError" in message and "hint:" in message
    assert f"{name}(" in message, "the message must show the call"


def test_every_exercise_has_a_registered_checker() -> None:
    names = {name for _, name in EXERCISES}
    assert names <= set(checks.registry()), sorted(names - set(checks.registry()))
    assert len(names) == len(EXERCISES), "exercise names must be unique across sections"

"""Which code the graded checkers run against: ``--target=solutions`` or ``--target=exercises``.

- ``pytest tests/checks`` (only paths inside tests/checks): grades the learner's own
  ``exercises/`` (stubs fail until solved).
- ``pytest tests/checks --target=solutions``: the reference solutions, which must pass.
- plain ``pytest`` (the whole suite, as CI runs it): ``solutions``, so CI stays green while the
  meta-tests in ``test_stubs_fail.py`` prove every checker fails on the stubs.

The environment variable ``IOI_CHECK_TARGET`` sets the target too (the option wins). Pytest
only accepts options declared in the conftests it loads at start-up, which for ``pytest`` run
from the root is ``tests/conftest.py``; the same declaration there enables ``pytest
--target=...`` from the root (this file then skips its own).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ioi.checks.targets import TARGETS

CHECKS_DIR = Path(__file__).resolve().parent
ROOT = CHECKS_DIR.parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    try:
        parser.addoption(
            "--target",
            choices=TARGETS,
            default=None,
            help="code the exercise checkers grade: exercises (yours) or solutions; default: "
            "exercises when only tests/checks is run, else solutions",
        )
    except ValueError:  # already declared by tests/conftest.py
        pass


def resolve_target(config: pytest.Config) -> str:
    """The option, else ``IOI_CHECK_TARGET``, else by which paths pytest was asked to run."""
    chosen = config.getoption("--target", default=None) or os.environ.get("IOI_CHECK_TARGET")
    if chosen:
        if chosen not in TARGETS:
            raise pytest.UsageError(f"IOI_CHECK_TARGET={chosen!r}; choose one of {TARGETS}")
        return chosen
    base = Path(config.invocation_params.dir)
    paths = [(base / arg.split("::")[0]).resolve() for arg in config.args]
    inside = paths and all(p == CHECKS_DIR or CHECKS_DIR in p.parents for p in paths)
    return "exercises" if inside else "solutions"


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> str:
    """``"exercises"`` or ``"solutions"``: whose functions ``test_exercises.py`` grades."""
    return resolve_target(pytestconfig)


@pytest.fixture(scope="session")
def course_root() -> Path:
    """The repository root, holding course/, exercises/ and solutions/."""
    return ROOT


def pytest_report_header(config: pytest.Config) -> str:
    return f"exercise checkers grade: {resolve_target(config)}/"

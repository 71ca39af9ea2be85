"""No wrong answer passes, each is named, and no correct alternative is rejected.

The corpus (``planted_<section>.py``, see `tests.checks.corpus`) holds wrong answers a learner
would plausibly write, each tagged with the diagnosis that must name it, and correct
alternatives. Every wrong one must fail with its diagnosis and a full message; every correct
one must pass; every diagnosis a checker declares must be planted; and at most a quarter of
the wrong answers may be tagged with a diagnosis that names no mistake.
"""

from __future__ import annotations

import contextlib
import io

import pytest

import ioi.checks as checks
from ioi.checks.core import GENERIC_DIAGNOSES, LEAK_DIAGNOSES
from tests.checks.corpus import FALLTHROUGH, load_all

WRONG, CORRECT = load_all()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("answer", WRONG, ids=[f"{a.id}-{a.diagnosis}" for a in WRONG])
def test_wrong_answer_is_diagnosed(answer) -> None:
    with pytest.raises(checks.CheckFailed) as failure, contextlib.redirect_stdout(io.StringIO()):
        checks.checker_for(answer.exercise)(answer.fn)
    message = str(failure.value)
    assert failure.value.diagnosis == answer.diagnosis, message
    for part in ("call:", "expected:", "got:", f"diagnosis: {answer.diagnosis}:", "hint:"):
        assert part in message, f"{part!r} missing from:\n{message}"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("answer", CORRECT, ids=[a.id for a in CORRECT])
def test_correct_alternative_passes(answer) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        checks.checker_for(answer.exercise)(answer.fn)


def test_corpus_size() -> None:
    assert len(WRONG) >= 100 and len(CORRECT) >= 40, (len(WRONG), len(CORRECT))
    assert len({a.id for a in WRONG + CORRECT}) == len(WRONG + CORRECT), "ids must be unique"


def test_every_declared_diagnosis_is_planted() -> None:
    declared = {
        (name, key) for name, exercise in checks.registry().items() for key in exercise.diagnoses
    }
    planted = {(a.exercise, a.diagnosis) for a in WRONG}
    missing = sorted(declared - planted)
    assert not missing, f"diagnoses no planted mistake triggers: {missing}"
    unknown = sorted(k for k in planted - declared if k[1] not in GENERIC_DIAGNOSES)
    assert not unknown, f"planted diagnoses no checker declares: {unknown}"


def test_every_exercise_has_wrong_and_correct_answers() -> None:
    names = set(checks.registry())
    assert names <= {a.exercise for a in WRONG}, sorted(names - {a.exercise for a in WRONG})
    without_correct = sorted(names - {a.exercise for a in CORRECT})
    assert len(without_correct) <= len(names) // 4, without_correct


def test_at_most_a_quarter_fall_through_to_a_generic_diagnosis() -> None:
    generic = [a for a in WRONG if a.diagnosis in FALLTHROUGH]
    assert len(generic) <= len(WRONG) / 4, [a.id for a in generic]


def test_every_leak_is_planted() -> None:
    planted = {a.diagnosis for a in WRONG}
    missing = sorted(set(LEAK_DIAGNOSES) - planted)
    assert not missing, f"leaks no planted answer leaves: {missing}"

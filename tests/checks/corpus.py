"""The planted-mistake corpus: answers a learner would plausibly write, for every exercise.

Each ``planted_<section>.py`` records, with the `wrong` and `correct` decorators, wrong
implementations (each tagged with the diagnosis that must name its mistake) and correct
alternatives (different from the course's solution but valid, which must pass).
``test_planted_mistakes.py`` asserts both; ``python -m tests.checks.measure`` prints the table
and the fraction of wrong answers that fall through to a generic diagnosis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FALLTHROUGH = frozenset({"wrong_values", "wrong_shape", "wrong_type"})
"""Diagnoses that name no mistake: the checker only says the answer differs."""


@dataclass(frozen=True)
class Answer:
    """One learner answer: the exercise, the function, and (for wrong ones) its diagnosis."""

    exercise: str
    fn: Callable
    diagnosis: str | None  # None: a correct alternative
    note: str

    @property
    def id(self) -> str:
        return f"{self.exercise}-{self.fn.__name__}"


WRONG: list[Answer] = []
CORRECT: list[Answer] = []


def wrong(exercise: str, diagnosis: str, note: str = "") -> Callable[[Callable], Callable]:
    """Record ``fn`` as a wrong answer to ``exercise`` that the checker must call ``diagnosis``."""

    def record(fn: Callable) -> Callable:
        WRONG.append(Answer(exercise, fn, diagnosis, note or (fn.__doc__ or "").strip()))
        return fn

    return record


def correct(exercise: str, note: str = "") -> Callable[[Callable], Callable]:
    """Record ``fn`` as a correct alternative answer to ``exercise`` (the checker must pass it)."""

    def record(fn: Callable) -> Callable:
        CORRECT.append(Answer(exercise, fn, None, note or (fn.__doc__ or "").strip()))
        return fn

    return record


def variant(
    exercise: str, diagnosis: str, helper: Callable, doc: str, fn_name: str = "", **how
) -> Callable:
    """Record a wrong answer that is ``helper`` called with the learner's arguments and ``how``.

    Most wrong answers of an exercise are one implementation with one thing changed; this
    writes each as one line instead of a copied signature and call.
    """

    def fn(*args, **kwargs):
        return helper(*args, **kwargs, **how)

    fn.__name__ = fn_name or f"{helper.__name__.strip('_')}_{diagnosis}"
    fn.__doc__ = doc
    return wrong(exercise, diagnosis)(fn)


def load_all() -> tuple[list[Answer], list[Answer]]:
    """Import every corpus module (which fills the registry) and return (wrong, correct)."""
    from tests.checks import (  # noqa: F401
        planted_activation_patching,
        planted_edges,
        planted_features,
        planted_further,
        planted_intervals,
        planted_leaks,
        planted_logit_attribution,
        planted_model_and_task,
        planted_path_patching,
        planted_replication,
        planted_review,
        planted_review_1204,
    )

    return list(WRONG), list(CORRECT)

"""Run the planted-mistake corpus through the checkers and print what each answer got.

Usage::

    python -m tests.checks.measure            # table + summary
    python -m tests.checks.measure --quiet    # summary only

A wrong answer is *caught* when its checker fails it, *named* when the diagnosis is the one the
corpus expects, and *generic* when the checker only says the values, shape or type differ
(`FALLTHROUGH`). A correct alternative must pass.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections import Counter
from dataclasses import dataclass

import ioi.checks as checks
from tests.checks.corpus import FALLTHROUGH, Answer, load_all


@dataclass(frozen=True)
class Outcome:
    answer: Answer
    got: str  # "passed", a diagnosis key, or "no checker"

    @property
    def kind(self) -> str:
        wrong = self.answer.diagnosis is not None
        if self.got == "no checker":
            return "no checker"
        if not wrong:
            return "accepted" if self.got == "passed" else "rejected"
        if self.got == "passed":
            return "PASSED"
        if self.got == self.answer.diagnosis:
            return "named"
        return "generic" if self.got in FALLTHROUGH else "other diagnosis"


def grade(answer: Answer) -> Outcome:
    """Run the checker of ``answer.exercise`` on it (output swallowed)."""
    try:
        checker = checks.checker_for(answer.exercise)
    except ValueError:
        return Outcome(answer, "no checker")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            checker(answer.fn)
        except checks.CheckFailed as failure:
            return Outcome(answer, failure.diagnosis)
    return Outcome(answer, "passed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    parser.add_argument("--only", nargs="*", default=None, help="exercises to run (default all)")
    args = parser.parse_args(argv)
    wrong, right = load_all()
    if args.only:
        wrong = [a for a in wrong if a.exercise in args.only]
        right = [a for a in right if a.exercise in args.only]
    outcomes = [grade(a) for a in wrong + right]
    if not args.quiet:
        for o in outcomes:
            expect = o.answer.diagnosis or "pass"
            print(f"{o.kind:16} {o.answer.id:70} expected {expect:32} got {o.got}")
    counts = Counter(o.kind for o in outcomes)
    graded_wrong = [o for o in outcomes if o.answer.diagnosis and o.kind != "no checker"]
    generic = [o for o in graded_wrong if o.got in FALLTHROUGH or o.got == "passed"]
    print(
        f"\nwrong answers: {len(wrong)} ({len(graded_wrong)} with a checker); correct: {len(right)}"
    )
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if graded_wrong:
        print(
            f"fell to a generic diagnosis or passed: {len(generic)}/{len(graded_wrong)} = "
            f"{len(generic) / len(graded_wrong):.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The machinery every checker shares: run the learner's function safely, compare, diagnose, report.

A checker calls the learner's function on inputs built from the bundled toy model, compares the
answer with the library's, and on a mismatch first asks which *known mistake* the answer matches
(a wrong sign, the wrong position, no layer-norm scale, ...) before falling back to a plain
"values differ". Every failure is a `CheckFailed` whose message says the call, what was expected,
what came back, the diagnosis and a hint.

Generic diagnoses, which any checker can give:

- ``not_implemented``: the function still raises ``NotImplementedError`` (the stub).
- ``raised``: the function raised some other exception.
- ``timeout``: it did not return within the time limit (an endless loop?).
- ``wrong_type``: it returned something that is not the expected kind of value.
- ``wrong_shape``: a tensor of the wrong shape, matching no known mistake.
- ``wrong_values``: the right shape, wrong values, matching no known mistake.
- ``hooks_left``: hooks it added are still on the model after it returned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

DEFAULT_TIMEOUT_S = float(os.environ.get("IOI_CHECK_TIMEOUT", "120"))
"""Seconds a learner's function may run per call (set ``IOI_CHECK_TIMEOUT`` to change it)."""

GENERIC_DIAGNOSES: dict[str, str] = {
    "not_implemented": "the function still raises NotImplementedError: it is the unsolved stub",
    "raised": "the function raised an exception",
    "timeout": "the function did not return in time (an endless loop, or far too much work?)",
    "wrong_type": "the function returned the wrong kind of value",
    "wrong_shape": "the result has the wrong shape",
    "wrong_values": "the result has the right shape but wrong values",
    "hooks_left": "hooks added by the function are still attached to the model",
}


class CheckFailed(AssertionError):
    """A learner's function gave a wrong answer; the message explains what and why.

    Attributes:
        exercise: the exercise's function name.
        diagnosis: a short key (``"wrong_sign"``, ``"not_implemented"``, ...).
    """

    def __init__(
        self,
        exercise: str,
        diagnosis: str,
        *,
        call: str,
        expected: str,
        got: str,
        explanation: str,
        hint: str,
    ) -> None:
        self.exercise, self.diagnosis = exercise, diagnosis
        lines = [
            f"{exercise} is not right yet ({diagnosis}).",
            f"  call:      {call}",
            f"  expected:  {_indent(expected)}",
            f"  got:       {_indent(got)}",
            f"  diagnosis: {diagnosis}: {_indent(explanation)}",
            f"  hint:      {_indent(hint)}",
        ]
        super().__init__("\n".join(lines))


def _indent(text: str) -> str:
    return text.replace("\n", "\n             ")


class _LearnerTimeout(BaseException):
    """Raised inside the learner's code by the alarm; a BaseException so ``except Exception`` cannot swallow it."""


@dataclass
class Exercise:
    """One graded exercise: its name, the default hint and the mistakes its checker recognises."""

    name: str
    hint: str
    diagnoses: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S

    # ---- running the learner's code -----------------------------------------------------

    def call(self, fn: Callable, *args, call: str, model=None, **kwargs):
        """Run ``fn(*args, **kwargs)`` under the time limit; turn any failure into `CheckFailed`.

        If ``model`` is given, also fail (``hooks_left``) when the call leaves hooks on it, and
        remove them so the next check starts clean.
        """
        before = _hook_count(model) if model is not None else 0
        try:
            with one_thread():
                result = run_with_timeout(lambda: fn(*args, **kwargs), self.timeout_s)
        except _LearnerTimeout:
            self.fail(
                "timeout",
                call=call,
                expected=f"a result within {self.timeout_s:.0f} s",
                got="no result: the call was stopped",
                explanation=f"the call ran for more than {self.timeout_s:.0f} s",
                hint="look for a loop that never ends, or a loop over far more items than needed "
                "(the checker uses a tiny model and a handful of prompts).",
            )
        except NotImplementedError as err:
            self.fail(
                "not_implemented",
                call=call,
                expected="a result",
                got=f"NotImplementedError: {err}",
                explanation=GENERIC_DIAGNOSES["not_implemented"],
                hint=str(err).removeprefix("hint: ") or self.hint,
            )
        except CheckFailed:
            raise
        except Exception as err:  # the learner's bug: report it, do not crash the run
            self.fail(
                "raised",
                call=call,
                expected="a result",
                got=f"{type(err).__name__}: {err}",
                explanation="the function raised an exception:\n" + _learner_frames(err),
                hint=self.hint,
            )
        finally:
            if model is not None:
                left = _hook_count(model) - before
                if left > 0:
                    model.reset_hooks(including_permanent=False)
        if model is not None and left > 0:
            self.fail(
                "hooks_left",
                call=call,
                expected="the model without hooks after the call",
                got=f"{left} hook(s) still attached",
                explanation="a hook added during the call was never removed; later runs of the "
                "model would still be patched",
                hint="add hooks with `model.run_with_hooks(..., fwd_hooks=[...])` or the "
                "`with model.hooks(fwd_hooks=[...]):` context, both of which remove them.",
            )
        return result

    # ---- reporting ----------------------------------------------------------------------

    def fail(
        self, diagnosis: str, *, call: str, expected: str, got: str, explanation: str, hint: str
    ):
        """Raise `CheckFailed` for ``diagnosis`` (which must be generic or declared)."""
        if diagnosis not in GENERIC_DIAGNOSES and diagnosis not in self.diagnoses:
            raise AssertionError(f"checker bug: {self.name} gives undeclared diagnosis {diagnosis}")
        raise CheckFailed(
            self.name,
            diagnosis,
            call=call,
            expected=expected,
            got=got,
            explanation=explanation,
            hint=hint,
        )

    def expect_tensor(
        self,
        got: object,
        expected: Tensor,
        *,
        call: str,
        mistakes: Mapping[str, Callable[[], object]] | None = None,
        hint: str | None = None,
        atol: float = 1e-4,
        rtol: float = 1e-3,
    ) -> None:
        """Pass if ``got`` is close to ``expected``; else name the first mistake it matches.

        Args:
            got: what the learner returned.
            expected: the library's answer.
            call: how the learner's function was called, for the message.
            mistakes: diagnosis key -> function computing what that mistake would return.
            hint: the hint for a generic failure (default: the exercise's).
            atol, rtol: tolerance for "close", also used to match mistakes.
        """
        hint = hint or self.hint
        if not isinstance(got, Tensor):
            self.fail(
                "wrong_type",
                call=call,
                expected=describe(expected),
                got=describe(got),
                explanation="expected a torch.Tensor",
                hint=hint,
            )
        got = got.detach().float().cpu()
        expected = expected.detach().float().cpu()
        if got.shape == expected.shape and _close(got, expected, atol, rtol):
            return
        for key, compute in (mistakes or {}).items():
            if key not in self.diagnoses:
                raise AssertionError(f"checker bug: {self.name} has undeclared mistake {key}")
            candidate = compute()
            if isinstance(candidate, Tensor):
                candidate = candidate.detach().float().cpu()
                if candidate.shape == got.shape and _close(got, candidate, atol, rtol):
                    self.fail(
                        key,
                        call=call,
                        expected=describe(expected),
                        got=describe(got),
                        explanation=self.diagnoses[key],
                        hint=hint,
                    )
        if got.shape != expected.shape:
            self.fail(
                "wrong_shape",
                call=call,
                expected=describe(expected),
                got=describe(got),
                explanation=f"expected shape {list(expected.shape)}, got {list(got.shape)}",
                hint=hint,
            )
        error = (got - expected).abs()
        where = tuple(
            int(i)
            for i in torch.unravel_index(error.nan_to_num(float("inf")).argmax(), error.shape)
        )
        self.fail(
            "wrong_values",
            call=call,
            expected=describe(expected),
            got=describe(got),
            explanation=f"largest difference {error.nan_to_num(float('inf')).max().item():.4g} "
            f"at index {list(where)} (tolerance atol={atol:g}, rtol={rtol:g})",
            hint=hint,
        )

    def passed(self, detail: str = "") -> None:
        """Tell the learner the check passed (printed, so notebooks show it)."""
        print(f"\N{CHECK MARK} {self.name} passed{': ' + detail if detail else ''}")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block, then restore the thread count.

    The checkers' model is tiny, so a learner's loop of small forward passes spends its time
    synchronising threads; on a busy machine one thread is several times faster.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    return bool(torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=False))


def describe(value: object, max_items: int = 6) -> str:
    """A short, readable rendering of a value for failure messages."""
    if isinstance(value, Tensor):
        v = value.detach().float().cpu()
        if v.ndim == 0:
            return f"tensor({v.item():.4f})"
        flat = v.flatten()
        shown = ", ".join(f"{x:.4f}" for x in flat[:max_items].tolist())
        more = ", ..." if flat.numel() > max_items else ""
        return f"tensor of shape {list(v.shape)}: [{shown}{more}]"
    if isinstance(value, dict):
        return "dict with keys " + ", ".join(repr(k) for k in value)
    text = repr(value)
    return text if len(text) < 200 else text[:200] + " ..."


def _learner_frames(err: BaseException, keep: int = 4) -> str:
    """The last few traceback frames, outside this module, so the learner sees their own line."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename != __file__]
    lines = [f"{f.filename}:{f.lineno} in {f.name}: {f.line}" for f in frames[-keep:]]
    return "\n".join(lines) or "(no traceback)"


def _hook_count(model) -> int:
    """Forward and backward hooks attached anywhere in ``model``."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks)
    return total


def run_with_timeout(fn: Callable[[], object], seconds: float):
    """Call ``fn()``; raise `_LearnerTimeout` inside it if it runs longer than ``seconds``.

    In the main thread of a Unix process (pytest, a Jupyter kernel) an interval timer and
    ``SIGALRM`` interrupt the learner's code itself; an alarm set by someone else (pytest-timeout)
    is saved and re-armed afterwards. Elsewhere the call runs in a helper thread that is
    abandoned (not killed) when time runs out.
    """
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _run_with_alarm(fn, seconds)
    return _run_in_thread(fn, seconds)


def _run_with_alarm(fn: Callable[[], object], seconds: float):
    def on_alarm(signum, frame):
        raise _LearnerTimeout()

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:  # someone else's alarm: give it back what is left of its time
            left = max(old_delay - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


def _run_in_thread(fn: Callable[[], object], seconds: float):
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as err:  # handed to the caller's thread below
            box["error"] = err

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _LearnerTimeout()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result")


_REGISTRY: dict[str, Exercise] = {}


def exercise(name: str, hint: str, diagnoses: Mapping[str, str] | None = None, **options):
    """Declare an exercise: returns the `Exercise` its checker uses, and registers it.

    Every key of ``diagnoses`` must be given by the checker on some planted mistake; the
    course's tests read this registry to prove it.
    """
    if name in _REGISTRY:
        raise ValueError(f"exercise {name!r} declared twice")
    clash = set(diagnoses or {}) & set(GENERIC_DIAGNOSES)
    if clash:
        raise ValueError(f"diagnoses {sorted(clash)} are generic; pick other names")
    ex = Exercise(name, hint, dict(diagnoses or {}), **options)
    _REGISTRY[name] = ex
    return ex


def registry() -> dict[str, Exercise]:
    """Every declared exercise, by function name."""
    return dict(_REGISTRY)

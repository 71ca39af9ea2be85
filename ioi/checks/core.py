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
- ``flag_left_on``, ``moved_or_cast``, ``grads_left``, ``requires_grad_changed``,
  ``train_mode_left`` (`LEAK_DIAGNOSES`): it left a model or SAE it was handed changed (a cfg
  flag, its device or dtype, ``.grad``, ``requires_grad``, training mode); weights edited in
  place are ``mutated_input``. `Exercise.call` checks every module it hands over (`ModuleLeaks`).
- ``mutated_input``: it wrote into an input it should only read (a cache, a given tensor).
- ``no_effect``: a patching result equal to the unpatched run everywhere (the hook never
  changed anything: a name that never fires, a patched copy never returned, ...).
- ``needs_use_attn_result``: it read ``hook_result``, which is only computed with
  ``use_attn_result``.

Shared diagnoses, which an exercise opts into with ``exercise(..., shared=(...))`` because
they name mistakes many exercises invite (`SHARED_DIAGNOSES`): ``swapped_fields``,
``sum_not_mean``, ``batch_by_batch_indexing``,
``missed_last_layer``, ``missed_last_position``, ``missed_last_head``,
``same_position_for_all_prompts``, ``first_position_for_none``,
``none_branch_raised``, ``assignment_shapes_differ``, ``wrong_heads_recorded``,
``hard_coded_size``, ``zero_ablation``, ``global_mean_ablation`` and ``gradients_off``.

The checkers of exercises that take a gradient call the learner's function with gradients
off (`torch.no_grad`), as the notebooks run (``torch.set_grad_enabled(False)``), so an answer
that forgets ``torch.enable_grad()`` fails here as it would there (`gradients_off_error`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import math
import os
import signal
import threading
import time
import traceback
import weakref
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
    "hooks_left": "hooks added by the function are still attached to the model (or a hook "
    "context it opened was never closed); every later run of the model is still patched",
    "no_effect": "every value equals the run without any patch: the patch never changed the "
    "run. A hook on a name that never fires (hook_result only runs after "
    "model.set_use_attn_result(True)), a hook that patches a copy and returns the original, "
    "values patched in from the very run being patched, a patch placed only after every "
    "prompt's `end` (the last column holds an answer or padding, which no prediction reads), "
    "or positions read one off (word_idx[key] + 1 is already past the word) all look like this",
    "mutated_input": "the function wrote into an input it should only read (a cache, or a "
    "tensor it was given). Indexing a cache gives its own tensor, not a copy: "
    "`x = cache[name]; x[...] = ...` changes the cache, and every later run that reads it",
    "needs_use_attn_result": "the code reads the heads' `result` (hook_result), which "
    "TransformerLens only computes and caches after model.set_use_attn_result(True); compute "
    "a head's output from z instead: z[:, :, head] @ W_O[layer, head]",
}

SHARED_DIAGNOSES: dict[str, str] = {
    "ignored_given_cache": "these are the values of a plain run of the prompts, but the cache "
    "you were given came from a patched run: when a cache is given, read from it (it may come "
    "from a hooked or patched run); run the model only for a cache that is None",
    "swapped_fields": "two fields of the result hold each other's values",
    "sum_not_mean": "the result is the expected one times the number of prompts: you summed "
    "over the batch where the mean is asked",
    "batch_by_batch_indexing": "`logits[:, answer_ids]` picks *every* prompt's answer id for "
    "*every* prompt (a [batch, batch] grid); to pick prompt i's own answer, index rows and "
    "columns together: logits[torch.arange(batch), answer_ids], or .gather(1, answer_tokens)",
    "missed_last_layer": "the last layer is missing (or left at 0): a loop over "
    "range(n_layers - 1) stops one layer early; range(model.cfg.n_layers) covers them all",
    "same_position_for_all_prompts": "you used the first prompt's position for every prompt; "
    "prompts of different templates put their words at different positions, so read "
    "word_idx[key][i] for prompt i",
    "missed_last_position": "the last position is missing (or left at 0): a loop over "
    "range(n_pos - 1) stops one position early; loop over range(corrupted_tokens.shape[1])",
    "missed_last_head": "the last head is missing (or left at 0): a loop over "
    "range(n_heads - 1) stops one head early; range(model.cfg.n_heads) covers them all",
    "first_position_for_none": "with positions=None the predicting position is the *last* "
    "column ([:, -1]); you read the first one ([:, 0])",
    "assignment_shapes_differ": "an assignment `a[...] = b[...]` failed because the two sides "
    "have different shapes: the two sides were indexed differently (say [:, head] on the left "
    "and [head] on the right, which picks a prompt, not a head); index both the same way",
    "wrong_heads_recorded": "the result's `{field}` does not list the heads that were knocked "
    "out, each once (a head named twice is still one head); the record says which heads it is about, so that its numbers can be read later",
    "none_branch_raised": "the call with positions=end worked, but positions=None raised: "
    "with None, still pick one position per prompt (the last column, [..., -1, :]) before "
    "going on",
    "hard_coded_size": "the result has the toy model's size, not this model's: read the sizes "
    "from the inputs (model.cfg.n_layers, model.cfg.n_heads, tokens.shape[1]) instead of "
    "writing the toy's 3 layers, 4 heads or 18 positions",
    "zero_ablation": "you replaced the outputs by zeros; the paper replaces them by their mean "
    "over the ABC prompts of the same template",
    "global_mean_ablation": "you replaced the outputs by one mean over all prompts; the paper "
    "replaces each prompt's output by the mean over the ABC prompts of *its own template*, so "
    "positions line up",
    "gradients_off": "the backward pass found no graph: the notebook turns gradients off "
    "(torch.set_grad_enabled(False)) and the checker calls your function the same way, so a "
    "forward pass records nothing to differentiate. Run the forward pass whose gradient you "
    "need, and the backward pass, inside `with torch.enable_grad():`",
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
    no_effect_text: str | None = None
    """What ``no_effect`` says for this exercise, where the checker knows more than the
    generic text (default: ``GENERIC_DIAGNOSES["no_effect"]``)."""
    pending_leak: tuple[Leak, str] | None = field(default=None, repr=False)
    """A leak a call left (other than hooks), with that call: given by `passed` unless a
    failure came first, so that an answer that is also wrong is told its mistake first."""

    # ---- running the learner's code -----------------------------------------------------

    def call(
        self,
        fn: Callable,
        *args,
        call: str,
        model=None,
        read_only: Mapping[str, object] | None = None,
        writable: tuple[int, ...] = (),
        raised_as: str | Callable[[Exception], str | None] | None = None,
        **kwargs,
    ):
        """Run ``fn(*args, **kwargs)`` under the time limit; turn any failure into `CheckFailed`.

        The call must leave every module it is handed (``model``, each module argument, an
        argument's ``.model``) as it found it: hooks (``hooks_left``), cfg flags
        (``flag_left_on``), device and dtype (``moved_or_cast``), weights (``mutated_input``),
        ``.grad`` (``grads_left``), ``requires_grad`` (``requires_grad_changed``) and training
        mode (``train_mode_left``), see `ModuleLeaks`. Whatever it changed is put back at
        once, also when it raised, so the next check starts clean; hooks fail at once, the
        other leaks at `passed`, so that an answer that is also wrong hears of its mistake
        first. Every tensor, cache, dataset or mapping of
        tensors passed as an argument is read only, and so is whatever ``read_only`` maps a
        name to: if any of it changed, fail with ``mutated_input``. ``writable`` lists the
        positional arguments the function may change (a hook's activation). ``raised_as``
        names the diagnosis an exception gets instead of ``raised``, where the checker knows
        what this call alone varies (positions=None after positions=end passed, say); a
        function of the exception may name it, or return None for ``raised``.
        """
        named = dict(read_only or {})
        given = {id(v) for v in named.values()}
        watched = {
            k: v for k, v in _arguments(fn, args, kwargs, writable).items() if id(v) not in given
        }
        read_only = {**watched, **named}
        snapshots = {label: _snapshot(value) for label, value in read_only.items()}
        leaks = [ModuleLeaks(m, label) for label, m in handed_modules(args, kwargs, model).values()]
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
            if _reads_attn_result(err):
                self.fail(
                    "needs_use_attn_result",
                    call=call,
                    expected="a result",
                    got=f"{type(err).__name__}: {err}",
                    explanation=GENERIC_DIAGNOSES["needs_use_attn_result"]
                    + ":\n"
                    + _learner_frames(err),
                    hint=self.hint,
                )
            key = (raised_as(err) if callable(raised_as) else raised_as) or "raised"
            if (
                key == "raised"
                and _assignment_mismatch(err)
                and "assignment_shapes_differ" in (self.diagnoses)
            ):
                key = "assignment_shapes_differ"
            self.fail(
                key,
                call=call,
                expected="a result",
                got=f"{type(err).__name__}: {err}",
                explanation=(self.diagnoses.get(key) or "the function raised an exception")
                + ":\n"
                + _learner_frames(err),
                hint=self.hint,
            )
        finally:  # undo what the call left, also when it raised, so the next check starts clean
            left = sorted(
                (leak for state in leaks for leak in state.restore()),
                key=lambda leak: _LEAK_ORDER.index(leak.diagnosis),
            )
        for leak in left:
            if leak.diagnosis == "hooks_left":
                self._fail_leak(leak, call)
            if self.pending_leak is None or _LEAK_ORDER.index(leak.diagnosis) < _LEAK_ORDER.index(
                self.pending_leak[0].diagnosis
            ):
                self.pending_leak = (leak, call)
        for label, snapshot in snapshots.items():
            where = _changed(snapshot, read_only[label])
            if where is not None:
                self.fail(
                    "mutated_input",
                    call=call,
                    expected=f"{label} unchanged by the call",
                    got=f"{label} changed: {where}",
                    explanation=GENERIC_DIAGNOSES["mutated_input"],
                    hint="clone before you write (`cache[name].clone()`), or write into the "
                    "activation the hook was given, never into the cache you read from.",
                )
        return result

    # ---- reporting ----------------------------------------------------------------------

    def fail(
        self, diagnosis: str, *, call: str, expected: str, got: str, explanation: str, hint: str
    ):
        """Raise `CheckFailed` for ``diagnosis`` (which must be generic or declared)."""
        if diagnosis not in GENERIC_DIAGNOSES and diagnosis not in self.diagnoses:
            raise AssertionError(f"checker bug: {self.name} gives undeclared diagnosis {diagnosis}")
        self.pending_leak = None  # this run ends here; the next one starts clean
        raise CheckFailed(
            self.name,
            diagnosis,
            call=call,
            expected=expected,
            got=got,
            explanation=explanation,
            hint=hint,
        )

    def _fail_leak(self, leak: Leak, call: str):
        explanation = GENERIC_DIAGNOSES[leak.diagnosis]
        if leak.diagnosis == "mutated_input":
            explanation = (
                "the function wrote into the weights of a module it was handed; every later "
                "run of it (every later cell of the notebook) uses the changed weights"
            )
        self.fail(
            leak.diagnosis,
            call=call,
            expected=f"{leak.module} as it was before the call",
            got=leak.got,
            explanation=explanation,
            hint=leak.hint,
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
        unchanged: Tensor | float | None = None,
    ) -> None:
        """Pass if ``got`` is close to ``expected``; else name the first mistake it matches.

        NaN in ``expected`` (rows a sweep cannot reach) must be NaN in ``got`` too.

        Args:
            got: what the learner returned.
            expected: the library's answer.
            call: how the learner's function was called, for the message.
            mistakes: diagnosis key -> function computing what that mistake would return: a
                tensor, a list of tensors (any may match), or None (not applicable).
            hint: the hint for a generic failure (default: the exercise's).
            atol, rtol: tolerance for "close", also used to match mistakes.
            unchanged: the value of the unpatched run (a tensor, or a number every entry
                would equal): a result equal to it everywhere is diagnosed ``no_effect``.
        """
        hint = hint or self.hint
        if isinstance(got, float | int) and not isinstance(got, bool) and expected.ndim == 0:
            got = torch.tensor(float(got))
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
        if matches(got, expected, atol, rtol):
            return

        def diagnose(key: str, explanation: str) -> None:
            self.fail(
                key,
                call=call,
                expected=describe(expected),
                got=describe(got),
                explanation=explanation,
                hint=hint,
            )

        if unchanged is not None:
            baseline = torch.as_tensor(unchanged).detach().float().cpu()
            if baseline.numel() == 1 or baseline.shape == got.shape:
                baseline = baseline.expand_as(got)
                known = ~torch.isnan(got)  # unreachable (NaN) entries say nothing either way
                # A hook that never fires gives the baseline to rounding, not to tolerance:
                # a real but tiny effect (a query that hardly matters) is not "no effect".
                if known.any() and matches(got[known], baseline[known], 1e-5, 0.0):
                    diagnose("no_effect", self.no_effect_text or GENERIC_DIAGNOSES["no_effect"])
        for key, compute in (mistakes or {}).items():
            if key not in self.diagnoses:
                raise AssertionError(f"checker bug: {self.name} has undeclared mistake {key}")
            candidates = compute()
            if not isinstance(candidates, list | tuple):
                candidates = [candidates]
            for candidate in candidates:
                if isinstance(candidate, Tensor) and matches(
                    got, candidate.detach().float().cpu(), atol, rtol
                ):
                    diagnose(key, self.diagnoses[key])
        if got.shape != expected.shape:
            diagnose("wrong_shape", f"expected shape {list(expected.shape)}, got {list(got.shape)}")
        nan_where = torch.isnan(expected) != torch.isnan(got)
        if nan_where.any():
            first = [int(i) for i in nan_where.nonzero()[0]]
            want = "NaN" if torch.isnan(expected[tuple(first)]) else "a number"
            diagnose("wrong_values", f"at index {first} the expected value is {want}")
        error = (got - expected).abs().nan_to_num(0.0)
        where = [int(i) for i in torch.unravel_index(error.argmax(), error.shape)]
        diagnose(
            "wrong_values",
            f"largest difference {error.max().item():.4g} at index {where} "
            f"(tolerance atol={atol:g}, rtol={rtol:g})",
        )

    def expect_hook(
        self,
        fn: Callable,
        activation: Tensor,
        *args,
        call: str,
        expected: Tensor,
        mistakes: Mapping[str, Callable[[], object]] | None = None,
        read_only: Mapping[str, object] | None = None,
        unchanged: bool = True,
        **kwargs,
    ) -> None:
        """Call a hook function the way TransformerLens does, and check what it leaves.

        The hook gets a copy of ``activation`` (which it may change in place) and ``args``;
        TransformerLens uses its return value, or the changed copy when it returns None. A
        result equal to ``activation`` is ``no_effect`` (unless ``unchanged=False``); a change
        to anything in ``read_only`` (the caches it reads from) is ``mutated_input``.
        """
        given = activation.clone()
        returned = self.call(
            fn, given, *args, call=call, read_only=read_only, writable=(0,), **kwargs
        )
        got = given if returned is None else returned
        baseline = activation if unchanged else None
        self.expect_tensor(got, expected, call=call, mistakes=mistakes, unchanged=baseline)

    def expect_record(
        self,
        got: object,
        expected: object,
        fields: tuple[str, ...],
        *,
        call: str,
        mistakes: Mapping[str, Callable[[], object]] | None = None,
        hint: str | None = None,
        atol: float = 1e-4,
        rtol: float = 1e-3,
        fields_atol: Mapping[str, float] | None = None,
    ) -> None:
        """Check a result with named fields (a dataclass, or a list of them), field by field.

        Mistakes are matched on all the fields at once (each mistake computes a whole record);
        then two fields holding each other's values are ``swapped_fields``; otherwise the
        first differing field is reported.

        Args:
            got, expected: objects with the attributes ``fields`` (or lists of such objects,
                compared item by item).
            fields: the attributes to compare.
            mistakes: diagnosis key -> function returning the record that mistake gives (or
                an `AnyOf` of records, any of which may match).
            fields_atol: a tolerance per field where it differs from ``atol``.
        """
        hint = hint or self.hint
        want = record_tensors(expected, fields)
        if want is None:
            raise AssertionError(f"checker bug: {self.name}'s expected value lacks {fields}")
        have = record_tensors(got, fields)
        if have is None:
            missing = (
                [f for f in fields if not hasattr(got, f)]
                if not isinstance(got, list | tuple)
                else list(fields)
            )
            self.fail(
                "wrong_type",
                call=call,
                expected=f"{_kind(expected)} with fields {', '.join(fields)}",
                got=describe(got),
                explanation=f"the result lacks {', '.join(missing) or 'some fields'}",
                hint=hint,
            )
        tol = {f: (fields_atol or {}).get(f, atol) for f in fields}

        def same(a: dict, b: dict) -> bool:
            return all(matches(a[f], b[f], tol[f], rtol) for f in fields)

        if same(have, want):
            return
        shown = ", ".join(f"{f}={describe(want[f])}" for f in fields)
        shown_got = ", ".join(f"{f}={describe(have[f])}" for f in fields)

        def diagnose(key: str, explanation: str) -> None:
            self.fail(
                key, call=call, expected=shown, got=shown_got, explanation=explanation, hint=hint
            )

        for key, compute in (mistakes or {}).items():
            if key not in self.diagnoses:
                raise AssertionError(f"checker bug: {self.name} has undeclared mistake {key}")
            result = compute()
            for candidate in result if isinstance(result, AnyOf) else (result,):
                packed = None if candidate is None else record_tensors(candidate, fields)
                if packed is not None and same(have, packed):
                    diagnose(key, self.diagnoses[key])
        if "swapped_fields" in self.diagnoses:
            for i, f in enumerate(fields):
                for g in fields[i + 1 :]:
                    if (
                        matches(have[f], want[g], tol[g], rtol)
                        and matches(have[g], want[f], tol[f], rtol)
                        and not matches(want[f], want[g], tol[f], rtol)
                    ):
                        diagnose(
                            "swapped_fields",
                            f"{self.diagnoses['swapped_fields']}: your {f} is the expected {g} "
                            f"and your {g} the expected {f}",
                        )
        for f in fields:
            if not matches(have[f], want[f], tol[f], rtol):
                diagnose(
                    "wrong_values",
                    f"field {f} differs: expected {describe(want[f])}, got {describe(have[f])}",
                )

    def expect_heads(
        self, got: object, expected: object, field: str, *, call: str, hint: str | None = None
    ) -> None:
        """Check a field that lists heads (``removed``, ``ablated``) on a record or a list of them.

        The heads are compared as sets of (layer, head), so order and the tuple type do not
        matter; a wrong set is ``wrong_heads_recorded`` (which the exercise must declare).
        """
        items = list(got) if isinstance(got, list | tuple) else [got]
        wanted = list(expected) if isinstance(expected, list | tuple) else [expected]
        for item, want in zip(items, wanted, strict=True):
            value = getattr(item, field, None)
            have, need = _head_set(value), _head_set(getattr(want, field))
            repeated = have is not None and have == need and len(list(value)) != len(have)
            if have != need or repeated:
                label = getattr(want, "label", None)
                self.fail(
                    "wrong_heads_recorded",
                    call=call,
                    expected=f"{field} = {sorted(need)}"
                    + (f" for {label!r}" if label else "")
                    + (", each head once" if repeated else ""),
                    got=f"{field} = {getattr(item, field, None)!r}",
                    explanation=self.diagnoses["wrong_heads_recorded"].format(field=field),
                    hint=hint or self.hint,
                )

    def passed(self, detail: str = "") -> None:
        """Tell the learner the check passed (printed, so notebooks show it), unless a call
        left a model or SAE changed (`pending_leak`): then fail with that leak."""
        if self.pending_leak is not None:
            self._fail_leak(*self.pending_leak)
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


def without_last_layer(expected: Tensor) -> list[Tensor]:
    """What a loop over range(n_layers - 1) gives: the last row cut, or left at 0 or NaN."""
    return without_last(expected, 0)


def without_last(expected: Tensor, axis: int) -> list[Tensor]:
    """What a loop that stops one short on ``axis`` gives: the last entry cut, or left at 0 or
    NaN."""
    zero, nan = expected.clone(), expected.clone()
    zero.select(axis, -1).fill_(0.0)
    nan.select(axis, -1).fill_(float("nan"))
    return [expected.narrow(axis, 0, expected.shape[axis] - 1), zero, nan]


def reorderings(expected: Tensor) -> list[Tensor]:
    """Every other order of ``expected``'s rows (its first axis)."""
    n = expected.shape[0]
    return [
        expected[list(order)]
        for order in itertools.permutations(range(n))
        if list(order) != list(range(n))
    ]


def missing_rows(expected: Tensor) -> list[Tensor]:
    """``expected`` with one row (first axis) left out, for each row."""
    return [torch.cat([expected[:i], expected[i + 1 :]]) for i in range(expected.shape[0])]


def toy_sized(expected: Tensor, axes: Mapping[int, int]) -> list[Tensor]:
    """What sizes hard-coded to the toy's give: ``expected`` cut to ``axes`` (axis -> the toy's
    size there), on every non-empty subset of those axes, or with the entries past it left 0."""
    out = []
    for n in range(1, len(axes) + 1):
        for chosen in itertools.combinations(sorted(axes.items()), n):
            cut, zeroed = expected, expected.clone()
            for axis, size in chosen:
                cut = cut.narrow(axis, 0, min(size, cut.shape[axis]))
                zeroed.narrow(axis, size, max(zeroed.shape[axis] - size, 0)).zero_()
            out += [cut, zeroed]
    return out


class AnyOf(tuple):
    """Several records a mistake may give (for `Exercise.expect_record`'s mistakes)."""


# float16 arithmetic, or a LayerNorm scale recomputed with another eps, moves a value by up to
# about 1.6e-3 of the magnitudes it is computed from: far more than ``rtol`` of an entry near 0.
SCALE_RTOL = 2e-3


def rounding_atol(expected: Tensor, floor: float = 1e-4) -> float:
    """An ``atol`` that accepts rounding-level differences: `SCALE_RTOL` of the largest finite
    magnitude in ``expected``, at least ``floor``.

    Only for results computed from numbers as large as themselves (logits, probabilities,
    residual vectors); not for a patched metric near its baseline, whose meaningful part is a
    small deviation from that baseline.
    """
    finite = expected.detach().float()
    finite = finite[finite.isfinite()]
    return max(floor, SCALE_RTOL * float(finite.abs().max())) if finite.numel() else floor


def matches(got: Tensor, expected: Tensor, atol: float, rtol: float) -> bool:
    """Same shape and close; NaN counts as equal only to NaN (unreachable entries)."""
    if got.shape != expected.shape:
        return False
    return bool(torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True))


def as_tensor(value: object) -> Tensor | None:
    """A float CPU tensor of ``value`` (a tensor, a number, a list of numbers), else None."""
    if isinstance(value, Tensor):
        return value.detach().float().cpu()
    if isinstance(value, bool):
        return torch.tensor(float(value))
    try:
        return torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        return None


def record_tensors(value: object, fields: tuple[str, ...]) -> dict[str, Tensor] | None:
    """``{field: tensor}`` of a record (or a list of records, stacked), or None if not one."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items or not all(all(hasattr(item, f) for f in fields) for item in items):
        return None
    out = {}
    for f in fields:
        parts = [as_tensor(getattr(item, f)) for item in items]
        if any(p is None for p in parts) or len({p.shape for p in parts}) != 1:
            return None
        out[f] = parts[0] if not isinstance(value, list | tuple) else torch.stack(parts)
    return out


def _kind(value: object) -> str:
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} {type(value[0]).__name__}" if value else "a list"
    return f"a {type(value).__name__}"


def _head_set(value: object) -> set[tuple[int, int]] | None:
    """``value`` (heads as pairs or `Head` values) as a set of (layer, head), or None."""
    try:
        return {(int(h[0]), int(h[1])) for h in value}
    except (TypeError, ValueError, IndexError):
        return None


class ModuleState(Mapping):
    """A module's parameters and buffers, read afresh at every access (``state_dict()``).

    Given to `Exercise.call` as ``read_only``, it shows a call that changed a module it was
    handed (an SAE folded in place, a weight reassigned) as ``mutated_input``: the snapshot is
    taken before the call, the comparison reads what the module holds after it.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __getitem__(self, key: str) -> Tensor:
        return self.module.state_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.module.state_dict())

    def __len__(self) -> int:
        return len(self.module.state_dict())


def gradients_off_error(err: Exception) -> str | None:
    """``"gradients_off"`` if ``err`` is autograd finding no graph (for `Exercise.call`'s
    ``raised_as``), else None."""
    text = str(err)
    no_graph = "does not require grad" in text or "does not have a grad_fn" in text
    return "gradients_off" if isinstance(err, RuntimeError) and no_graph else None


def _assignment_mismatch(err: Exception) -> bool:
    """Whether ``err`` is torch refusing an assignment between tensors of different shapes."""
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "must match the existing size" in text or "shape mismatch" in text
    )


def _arguments(fn: Callable, args: tuple, kwargs: dict, writable: tuple[int, ...]) -> dict:
    """``{label: argument}`` for every argument holding tensors, labelled by parameter name."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    out: dict[str, object] = {}
    seen: set[int] = set()
    items = [
        (i, names[i] if i < len(names) else f"argument {i + 1}", v) for i, v in enumerate(args)
    ]
    items += [(None, k, v) for k, v in kwargs.items()]
    for index, label, value in items:
        if index in writable or id(value) in seen or not _holds_tensors(value):
            continue
        seen.add(id(value))
        out[f"the argument {label!r}"] = value
    return out


def _holds_tensors(value: object) -> bool:
    if isinstance(value, Tensor) or hasattr(value, "cache_dict"):
        return True
    if hasattr(value, "toks") and hasattr(value, "word_idx"):
        return True
    if isinstance(value, Mapping):
        return any(isinstance(v, Tensor) for v in value.values())
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _snapshot(value: object) -> object:
    """A deep copy of the tensors in ``value`` (a cache, a tensor, a mapping, a dataset)."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if hasattr(value, "cache_dict"):  # an ActivationCache
        return {k: v.detach().clone() for k, v in value.cache_dict.items()}
    if isinstance(value, Mapping):
        return {k: _snapshot(v) for k, v in value.items()}
    if hasattr(value, "toks") and hasattr(value, "word_idx"):  # an IOIDataset
        return {"toks": value.toks.clone(), "word_idx": _snapshot(value.word_idx)}
    if isinstance(value, list | tuple):
        return {i: _snapshot(v) for i, v in enumerate(value)}
    if dataclasses.is_dataclass(value):  # e.g. TemplateMeans: its tensors, field by field
        return {f.name: _snapshot(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return None


def _changed(snapshot: object, value: object) -> str | None:
    """Where ``value`` no longer equals its ``snapshot`` (None if it does)."""
    if snapshot is None:
        return None
    if isinstance(snapshot, Tensor):
        if not isinstance(value, Tensor) or value.shape != snapshot.shape:
            return "replaced by a different tensor"
        return None if torch.equal(value.detach(), snapshot) else "its values were overwritten"
    if hasattr(value, "cache_dict"):
        value = value.cache_dict
    elif hasattr(value, "toks") and hasattr(value, "word_idx"):
        value = {"toks": value.toks, "word_idx": value.word_idx}
    elif isinstance(value, list | tuple):
        value = dict(enumerate(value))
    elif dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    for key, part in snapshot.items():
        if key not in value:
            return f"entry {key!r} was removed"
        inner = _changed(part, value[key])
        if inner is not None:
            return f"entry {key!r}: {inner}"
    return None


# ---- leaks: what a call leaves on the modules it was handed ----------------------------------

LEAK_DIAGNOSES: dict[str, str] = {
    "flag_left_on": "a setting of the model's config (model.cfg) was left changed after the "
    "call: model.set_use_attn_result(True), set_use_split_qkv_input(True), "
    "set_use_hook_mlp_in(True) and set_use_attn_in(True) change every later run of the model, "
    "and what it caches",
    "grads_left": "the call left gradients (.grad) on the parameters: `.backward()` stores "
    "them there, and the next `.backward()` adds to them instead of starting from zero",
    "requires_grad_changed": "the call changed which parameters require gradients "
    "(requires_grad_), so later runs record a graph they should not (or none they should)",
    "train_mode_left": "the call left the model (or some of its modules) in training mode; "
    "the notebook's model is in eval mode, and dropout or other training-only behaviour would "
    "change every later run",
    "moved_or_cast": "the call moved the model to another device or cast it to another dtype "
    "(model.to(...), .half(), .double()); every later run computes on that device, in that "
    "precision",
}
"""The ways a call can leave a module it was handed changed, besides ``hooks_left`` and an
in-place edit of its weights (``mutated_input``); any checker can give them, and each is
planted at least once."""

GENERIC_DIAGNOSES.update(LEAK_DIAGNOSES)

_LEAK_ORDER = (
    "hooks_left",
    "moved_or_cast",
    "mutated_input",
    "flag_left_on",
    "grads_left",
    "requires_grad_changed",
    "train_mode_left",
)
"""Which leak a call that left several is failed with: the first here, over every module
(a fold changes an SAE's weights and cfg; the backward pass after it leaves .grad too)."""

PRISTINE_LIMIT = 50_000_000
"""Modules of at most this many parameter and buffer entries get a copy of their weights,
once, so that a call that edits or casts them can be undone (the checkers' models and SAEs
are far smaller); larger ones are only fingerprinted."""

_PRISTINE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""module -> (fingerprints, copies) of its tensors, taken when it was last seen unchanged."""

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_BOOKKEEPING = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called")
_HOOK_BOOKKEEPING += ("_forward_pre_hooks_with_kwargs",)


@dataclass(frozen=True)
class _TensorPrint:
    """What a parameter or buffer looks like, cheaply: no copy of its values."""

    dtype: torch.dtype
    device: torch.device
    shape: tuple[int, ...]
    data_ptr: int
    version: int | None  # None for an inference tensor, which keeps no version counter
    checksum: float  # the sum: catches an edit through `.data`, which bumps no version
    requires_grad: bool
    has_grad: bool

    @classmethod
    def of(cls, t: Tensor) -> _TensorPrint:
        try:
            version = t._version
        except RuntimeError:
            version = None
        return cls(
            t.dtype,
            t.device,
            tuple(t.shape),
            t.data_ptr(),
            version,
            float(t.detach().sum()) if t.numel() and not t.is_complex() else 0.0,
            t.requires_grad,
            t.grad is not None,
        )

    def same_values(self, other: _TensorPrint) -> bool:
        """Whether the values look untouched (same storage, version and sum)."""
        if (self.data_ptr, self.version, self.shape) != (
            other.data_ptr,
            other.version,
            other.shape,
        ):
            return False
        # the same sum twice is exact on one thread count; the tolerance is for another count
        return math.isclose(self.checksum, other.checksum, rel_tol=1e-6, abs_tol=1e-6)


@dataclass(frozen=True)
class Leak:
    """One kind of change a call left on a module: its diagnosis and what it says."""

    diagnosis: str
    module: str  # "the model", "the TopKSAE", ...
    got: str
    hint: str


class ModuleLeaks:
    """A module's state before a call (hooks, cfg settings, training mode, and a fingerprint of
    every parameter and buffer: dtype, device, storage, version, sum, requires_grad, .grad),
    to compare with after it and restore.

    ``ModuleLeaks(module)`` takes the snapshot; `restore` puts back whatever changed and
    returns the `Leak` of each kind, so the next check starts clean. Costs one float64 sum
    per tensor, plus one copy of the weights the first time a small module is seen.
    """

    def __init__(self, module: torch.nn.Module, label: str = "the model") -> None:
        self.module, self.label = module, label
        self.hook_ids = _hook_ids(module)
        self.context_level = getattr(module, "context_level", None)
        self.cfg = _cfg_settings(module)
        self.training = {name: m.training for name, m in module.named_modules()}
        self.tensors = {name: _TensorPrint.of(t) for name, t in _named_tensors(module)}
        self.pristine = _pristine(module, self.tensors)

    def restore(self) -> list[Leak]:
        """Undo what the call changed; return what it was, one `Leak` per kind."""
        now = self._now()
        moved = self._dtype_or_device(now)  # which puts the weights back too
        leaks = [
            self._hooks(),
            moved,
            None if moved else self._weights(now),  # before cfg: folding changes both
            self._cfg(),
            self._grads(),
            self._requires_grad(),
            self._training(),
        ]
        return [leak for leak in leaks if leak is not None]

    def _now(self) -> dict[str, tuple[Tensor, _TensorPrint]]:
        return {name: (t, _TensorPrint.of(t)) for name, t in _named_tensors(self.module)}

    def _hooks(self) -> Leak | None:
        new = _hook_ids(self.module) - self.hook_ids
        level, was = getattr(self.module, "context_level", 0), self.context_level or 0
        if not new and level <= was:
            return None
        _remove_hooks(self.module, new)
        # context_level is left as it is: the open context (a suspended generator) lowers it
        # again when it is closed or collected, and a level set back here would then go below 0
        opened = (
            f"; a `with model.hooks(...)` context was entered and never exited (context level "
            f"{level}, was {was}): a generator suspended inside it was never run to its end"
            if level > was
            else ""
        )
        return Leak(
            "hooks_left",
            self.label,
            f"{len(new)} hook(s) still attached to {self.label}{opened}",
            "add hooks with `model.run_with_hooks(..., fwd_hooks=[...])` or the "
            "`with model.hooks(fwd_hooks=[...]):` context, both of which remove them (never "
            "add_perma_hook in an exercise; model.reset_hooks(including_permanent=True) "
            "removes every hook).",
        )

    def _cfg(self) -> Leak | None:
        now = _cfg_settings(self.module)
        changed = {k: (v, now.get(k)) for k, v in self.cfg.items() if now.get(k) != v}
        for key, (was, _) in changed.items():
            object.__setattr__(self.module.cfg, key, was)
        for moved in ("device", "dtype"):  # moving or casting the model is moved_or_cast's
            changed.pop(moved, None)
        if not changed:
            return None
        shown = ", ".join(f"cfg.{k} = {new!r} (was {was!r})" for k, (was, new) in changed.items())
        return Leak(
            "flag_left_on",
            self.label,
            f"{self.label}'s {shown}",
            "set the flag back before returning, also on errors: `try: "
            "model.set_use_attn_result(True); ... finally: model.set_use_attn_result(False)` "
            "(or use a context manager that restores it, such as `split_inputs(model)`); "
            "better, compute what you need from z without the flag.",
        )

    def _dtype_or_device(self, now: Mapping[str, tuple[Tensor, _TensorPrint]]) -> Leak | None:
        moved = [
            f"{name}: {was.dtype} on {was.device} -> {p.dtype} on {p.device}"
            for name, was in self.tensors.items()
            if name in now
            for p in [now[name][1]]
            if (p.dtype, p.device) != (was.dtype, was.device)
        ]
        if not moved:
            return None
        restored = self._put_back(now)
        return Leak(
            "moved_or_cast",
            self.label,
            f"{self.label}'s tensors moved or cast: {_first(moved)}" + restored,
            "work on a copy, or cast a tensor you made (x.double()), not the model; to undo "
            "model.to(torch.float64) call model.to(torch.float32) (the values may be rounded).",
        )

    def _weights(self, now: Mapping[str, tuple[Tensor, _TensorPrint]]) -> Leak | None:
        edited = [
            name
            for name, was in self.tensors.items()
            if name not in now or not was.same_values(now[name][1])
        ]
        if not edited:
            return None
        restored = self._put_back(now)
        return Leak(
            "mutated_input",
            self.label,
            f"{self.label}'s weights were changed in place: {_first(edited)}" + restored,
            "never write into the model's weights: patch an activation with a hook instead "
            "(zero a head's output at hook_z), or edit a copy (copy.deepcopy(model)); "
            "fold_layer_norm, process_weights_ and `W.data[...] = ...` all change the model "
            "every later cell uses.",
        )

    def _grads(self) -> Leak | None:
        left = [
            (name, t)
            for name, t in _named_tensors(self.module)
            if t.grad is not None and name in self.tensors and not self.tensors[name].has_grad
        ]
        if not left:
            return None
        for _, t in left:
            t.grad = None
        return Leak(
            "grads_left",
            self.label,
            f"{len(left)} parameter(s) of {self.label} hold a .grad: {_first([n for n, _ in left])}",
            "take the gradient of the activations you need with torch.autograd.grad(metric, "
            "[activation]), which stores nothing on the parameters; after a `.backward()`, "
            "call model.zero_grad(set_to_none=True).",
        )

    def _requires_grad(self) -> Leak | None:
        flipped = [
            (name, t, was.requires_grad)
            for name, t in _named_tensors(self.module)
            if name in self.tensors
            for was in [self.tensors[name]]
            if t.requires_grad != was.requires_grad and t.is_leaf
        ]
        if not flipped:
            return None
        for _, t, was in flipped:
            t.requires_grad_(was)
        shown = [f"{n} ({was} -> {not was})" for n, _, was in flipped]
        return Leak(
            "requires_grad_changed",
            self.label,
            f"requires_grad changed on {len(flipped)} tensor(s) of {self.label}: {_first(shown)}",
            "leave requires_grad of the model's parameters alone; to differentiate with "
            "respect to an activation, call .requires_grad_() on the activation (inside a "
            "hook), or use torch.autograd.grad.",
        )

    def _training(self) -> Leak | None:
        now = dict(self.module.named_modules())
        changed = [
            name or "(the whole module)"
            for name, was in self.training.items()
            if name in now and now[name].training != was
        ]
        if not changed:
            return None
        for name, was in self.training.items():
            if name in now:
                now[name].training = was
        return Leak(
            "train_mode_left",
            self.label,
            f"{self.label}'s training mode changed on {_first(changed)}",
            "do not call model.train() in an exercise; if you must, call model.eval() "
            "before returning (in a `finally:`).",
        )

    def _put_back(self, now: Mapping[str, tuple[Tensor, _TensorPrint]]) -> str:
        """Copy the weights kept in `_PRISTINE` back; say whether that was possible."""
        if self.pristine is None:
            return f" (too large to keep a copy of: {self.label} was not restored)"
        for name, (t, _) in now.items():
            if name in self.pristine:
                t.data = self.pristine[name].clone()
        self.tensors = {**self.tensors, **{n: _TensorPrint.of(t) for n, (t, _) in now.items()}}
        return ""


def _first(items: list[str], shown: int = 3) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _named_tensors(module: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    yield from module.named_parameters(remove_duplicate=False)
    yield from module.named_buffers(remove_duplicate=False)


def _cfg_settings(module: torch.nn.Module) -> dict[str, object]:
    """The plain settings (bool, number, string, None) of ``module.cfg``, if it has one."""
    cfg = getattr(module, "cfg", None)
    fields = vars(cfg) if cfg is not None and hasattr(cfg, "__dict__") else {}
    return {
        k: v
        for k, v in fields.items()
        if v is None or isinstance(v, bool | int | float | str | torch.dtype)
    }


def _pristine(module: torch.nn.Module, prints: dict[str, _TensorPrint]) -> dict | None:
    """Copies of ``module``'s tensors as ``prints`` describe them, kept once per module (and
    taken again if the module changed since); None for a module over `PRISTINE_LIMIT`."""
    kept = _PRISTINE.get(module)
    if kept is not None and kept[0].keys() == prints.keys():
        if all(
            kept[0][n].same_values(p) and kept[0][n].dtype == p.dtype for n, p in prints.items()
        ):
            return kept[1]
    if sum(math.prod(p.shape) for p in prints.values()) > PRISTINE_LIMIT:
        return None
    copies = {name: t.detach().clone() for name, t in _named_tensors(module)}
    _PRISTINE[module] = (dict(prints), copies)
    return copies


def _hook_ids(module: torch.nn.Module) -> set[int]:
    """The ids of every forward and backward hook attached anywhere in ``module``."""
    return {key for m in module.modules() for name in _HOOK_DICTS for key in getattr(m, name, {})}


def _remove_hooks(module: torch.nn.Module, ids: set[int]) -> None:
    """Detach the hooks of ``ids`` from ``module`` and forget TransformerLens's handles to them."""
    for m in module.modules():
        for name in _HOOK_DICTS + _HOOK_BOOKKEEPING:
            store = getattr(m, name, None)
            for key in ids & set(store or ()):
                del store[key]
        for name in ("fwd_hooks", "bwd_hooks"):  # a HookPoint's LensHandles
            handles = getattr(m, name, None)
            if isinstance(handles, list):
                handles[:] = [h for h in handles if getattr(h.hook, "id", None) not in ids]


def handed_modules(
    args: tuple, kwargs: Mapping[str, object], model: torch.nn.Module | None
) -> dict[int, tuple[str, torch.nn.Module]]:
    """Every module a call hands over: ``model``, each module argument, and an argument's
    ``.model`` (a `MeanAblation` carries one); by id, with a label for messages."""
    found: dict[int, tuple[str, torch.nn.Module]] = {}
    if model is not None:
        found[id(model)] = ("the model", model)
    for value in (*args, *kwargs.values()):
        for candidate in (value, getattr(value, "model", None)):
            if isinstance(candidate, torch.nn.Module) and id(candidate) not in found:
                label = (
                    "the model" if hasattr(candidate, "W_E") else f"the {type(candidate).__name__}"
                )
                found[id(candidate)] = (label, candidate)
    return found


def _reads_attn_result(err: BaseException) -> bool:
    """Did ``err`` come from reading ``hook_result``, which needs use_attn_result?"""
    return isinstance(err, KeyError) and "result" in str(err)


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


def exercise(
    name: str,
    hint: str,
    diagnoses: Mapping[str, str] | None = None,
    shared: tuple[str, ...] = (),
    **options,
):
    """Declare an exercise: returns the `Exercise` its checker uses, and registers it.

    ``shared`` names diagnoses of `SHARED_DIAGNOSES` the checker gives too (their text is
    shared). Every declared diagnosis must be given by the checker on some planted mistake; the
    course's tests read this registry to prove it.
    """
    if name in _REGISTRY:
        raise ValueError(f"exercise {name!r} declared twice")
    clash = set(diagnoses or {}) & set(GENERIC_DIAGNOSES)
    if clash:
        raise ValueError(f"diagnoses {sorted(clash)} are generic; pick other names")
    unknown = sorted(set(shared) - set(SHARED_DIAGNOSES))
    if unknown:
        raise ValueError(f"unknown shared diagnoses {unknown}; known: {sorted(SHARED_DIAGNOSES)}")
    merged = {key: SHARED_DIAGNOSES[key] for key in shared}
    merged.update(diagnoses or {})
    ex = Exercise(name, hint, merged, **options)
    _REGISTRY[name] = ex
    return ex


def registry() -> dict[str, Exercise]:
    """Every declared exercise, by function name."""
    return dict(_REGISTRY)

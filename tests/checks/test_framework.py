"""The checker machinery: generic diagnoses, the time limit, hook clean-up, message layout."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import torch

from ioi.checks.core import (
    GENERIC_DIAGNOSES,
    CheckFailed,
    Exercise,
    _LearnerTimeout,
    exercise,
    run_with_timeout,
)
from ioi.checks.fixtures import toy_model


def make_exercise(**options) -> Exercise:
    return Exercise("demo", "the default hint", {"doubled": "you doubled it"}, **options)


def diagnosis_of(fn, *, model=None, **options) -> CheckFailed:
    ex, expected = make_exercise(**options), torch.ones(3)
    with pytest.raises(CheckFailed) as failure:
        got = ex.call(fn, call="demo()", model=model)
        ex.expect_tensor(got, expected, call="demo()", mistakes={"doubled": lambda: 2 * expected})
    return failure.value


def test_passes_when_close() -> None:
    ex = make_exercise()
    ex.expect_tensor(torch.ones(3) + 1e-6, torch.ones(3), call="demo()")


def test_not_implemented_carries_the_stub_hint() -> None:
    def stub():
        raise NotImplementedError("hint: use the force")

    failure = diagnosis_of(stub)
    assert failure.diagnosis == "not_implemented"
    assert "NotImplementedError: hint: use the force" in str(failure)
    assert "hint:      use the force" in str(failure)


def test_other_exceptions_are_reported_with_the_learners_line() -> None:
    def broken():
        return torch.ones(2) @ torch.ones(3)  # shape error

    failure = diagnosis_of(broken)
    assert failure.diagnosis == "raised"
    assert "RuntimeError" in str(failure) and "in broken" in str(failure)


def test_endless_loop_is_stopped() -> None:
    def forever():
        while True:
            pass

    start = time.monotonic()
    failure = diagnosis_of(forever, timeout_s=0.5)
    assert failure.diagnosis == "timeout"
    assert time.monotonic() - start < 5


def test_loop_that_catches_exception_is_still_stopped() -> None:
    def stubborn():
        while True:
            try:
                time.sleep(0.01)
            except Exception:  # a learner's broad except must not swallow the time limit
                pass

    assert diagnosis_of(stubborn, timeout_s=0.3).diagnosis == "timeout"


@pytest.mark.parametrize(
    ("returned", "diagnosis"),
    [
        ([1.0, 1.0, 1.0], "wrong_type"),
        (torch.ones(4), "wrong_shape"),
        (torch.zeros(3), "wrong_values"),
        (2 * torch.ones(3), "doubled"),
    ],
)
def test_result_diagnoses(returned, diagnosis: str) -> None:
    failure = diagnosis_of(lambda: returned)
    assert failure.diagnosis == diagnosis
    for part in ("call:      demo()", "expected:", "got:", f"diagnosis: {diagnosis}", "hint:"):
        assert part in str(failure)


def test_hooks_left_on_the_model_are_reported_and_removed() -> None:
    model = toy_model()

    def leaky():
        model.blocks[0].attn.hook_z.add_hook(lambda act, hook: act)
        return torch.ones(3)

    failure = diagnosis_of(leaky, model=model)
    assert failure.diagnosis == "hooks_left"
    assert all(not m._forward_hooks for m in model.modules())


def test_undeclared_diagnosis_is_a_checker_bug() -> None:
    ex = make_exercise()
    with pytest.raises(AssertionError, match="undeclared"):
        ex.expect_tensor(torch.zeros(3), torch.ones(3), call="x", mistakes={"nope": torch.zeros})


def test_declaring_a_generic_diagnosis_is_refused() -> None:
    with pytest.raises(ValueError, match="generic"):
        exercise("demo_generic", "hint", {"timeout": "clash"})
    assert "timeout" in GENERIC_DIAGNOSES


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
def test_an_outer_alarm_survives_a_checked_call() -> None:
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert run_with_timeout(lambda: 42, 5.0) == 42
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < left <= 30.0, "the outer alarm (pytest-timeout's) must be re-armed"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not fired


def test_time_limit_outside_the_main_thread() -> None:
    outcome = {}

    def worker():
        try:
            run_with_timeout(lambda: time.sleep(5), 0.2)
        except _LearnerTimeout:
            outcome["stopped"] = True

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(3)
    assert outcome.get("stopped")


def test_read_only_inputs_that_change_are_reported() -> None:
    ex, cache = make_exercise(), {"x": torch.ones(3)}

    def writes(c):
        c["x"][0] = 5.0
        return torch.ones(3)

    with pytest.raises(CheckFailed) as failure:
        ex.call(writes, cache, call="demo(cache)", read_only={"cache": cache})
    assert failure.value.diagnosis == "mutated_input"
    assert "entry 'x'" in str(failure.value)


def test_a_result_equal_to_the_unpatched_run_is_no_effect() -> None:
    ex = make_exercise()
    with pytest.raises(CheckFailed) as failure:
        ex.expect_tensor(torch.zeros(2, 3), torch.ones(2, 3), call="demo()", unchanged=0.0)
    assert failure.value.diagnosis == "no_effect"
    # a real but tiny effect is not "no effect"
    with pytest.raises(CheckFailed) as failure:
        ex.expect_tensor(torch.full((2, 3), 1e-3), torch.ones(2, 3), call="demo()", unchanged=0.0)
    assert failure.value.diagnosis == "wrong_values"


def test_nan_must_match_nan() -> None:
    ex, expected = make_exercise(), torch.tensor([1.0, float("nan")])
    ex.expect_tensor(torch.tensor([1.0, float("nan")]), expected, call="demo()")
    with pytest.raises(CheckFailed, match="expected value is NaN"):
        ex.expect_tensor(torch.tensor([1.0, 0.0]), expected, call="demo()")


def test_reading_hook_result_is_named() -> None:
    def reads_result():
        raise KeyError("blocks.0.attn.hook_result")

    assert diagnosis_of(reads_result).diagnosis == "needs_use_attn_result"


def test_records_are_checked_field_by_field() -> None:
    from types import SimpleNamespace

    ex = Exercise("demo", "hint", {"swapped_fields": "swapped"})
    want = SimpleNamespace(a=torch.tensor(1.0), b=torch.tensor(2.0))
    ex.expect_record(SimpleNamespace(a=1.0, b=2.0), want, ("a", "b"), call="demo()")
    with pytest.raises(CheckFailed) as failure:
        ex.expect_record(SimpleNamespace(a=2.0, b=1.0), want, ("a", "b"), call="demo()")
    assert failure.value.diagnosis == "swapped_fields"
    with pytest.raises(CheckFailed) as failure:
        ex.expect_record(SimpleNamespace(a=1.0), want, ("a", "b"), call="demo()")
    assert failure.value.diagnosis == "wrong_type"
    with pytest.raises(CheckFailed, match="field b differs"):
        ex.expect_record(SimpleNamespace(a=1.0, b=3.0), want, ("a", "b"), call="demo()")


def test_shared_diagnoses_must_exist() -> None:
    with pytest.raises(ValueError, match="unknown shared"):
        exercise("demo_shared", "hint", shared=("no_such_thing",))


# ---- leaks: what a call leaves on the model or SAE it was handed -------------------------------


def _leaks_seen(model) -> dict:
    """What a leak could change on ``model``: compared before and after each leaky call."""
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "dtypes": {p.dtype for p in model.parameters()},
        "cfg": (model.cfg.use_attn_result, model.cfg.use_split_qkv_input, model.cfg.dtype),
        "grads": [p.grad for p in model.parameters() if p.grad is not None],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()),
    }


def _same(a: dict, b: dict) -> bool:
    weights = a["weights"].keys() == b["weights"].keys() and all(
        torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"]
    )
    rest = [k for k in a if k != "weights"]
    return weights and all(a[k] == b[k] for k in rest)


def _backward(model):
    with torch.enable_grad():
        model(torch.tensor([[1, 2, 3]])).sum().backward()


LEAKY = {
    "hooks_left": lambda m: m.add_perma_hook("blocks.0.hook_resid_pre", lambda x, hook: x),
    "flag_left_on": lambda m: m.set_use_attn_result(True),
    "moved_or_cast": lambda m: m.to(torch.float64),
    "grads_left": _backward,
    "requires_grad_changed": lambda m: m.W_E.requires_grad_(False),
    "train_mode_left": lambda m: m.train(),
    "mutated_input": lambda m: m.blocks[0].attn.W_O.data[0].zero_(),  # .data: no version bump
}


def leak_of(fn, *args, model=None) -> CheckFailed:
    """The failure a right answer that leaves something behind gets, by the end of its check."""
    ex = make_exercise()
    with pytest.raises(CheckFailed) as failure:
        got = ex.call(fn, *args, call="demo(model)", model=model)
        ex.expect_tensor(got, torch.ones(3), call="demo(model)")
        ex.passed()
    return failure.value


@pytest.mark.parametrize("diagnosis", sorted(LEAKY))
def test_each_leak_is_named_and_undone(diagnosis: str) -> None:
    model = toy_model()
    before = _leaks_seen(model)

    def leaky(m):
        LEAKY[diagnosis](m)
        return torch.ones(3)

    failure = leak_of(leaky, model)  # found as an argument: no model= needed
    assert failure.diagnosis == diagnosis, str(failure)
    assert "expected:  the model as it was before the call" in str(failure)
    assert _same(before, _leaks_seen(model)), "the leak must be undone for the next check"


def test_leaks_on_every_module_argument_are_found() -> None:
    layer = torch.nn.Linear(3, 3)

    def backward_on_layer(lin):
        with torch.enable_grad():
            lin(torch.ones(3)).sum().backward()
        return torch.ones(3)

    failure = leak_of(backward_on_layer, layer)
    assert failure.diagnosis == "grads_left" and "the Linear" in str(failure)
    assert layer.weight.grad is None


def test_a_wrong_answer_that_also_leaks_is_told_its_mistake_first() -> None:
    ex, model = make_exercise(), toy_model()

    def doubled_and_train_mode(m):
        m.train()
        return 2 * torch.ones(3)

    with pytest.raises(CheckFailed) as failure:
        got = ex.call(doubled_and_train_mode, model, call="demo(model)")
        ex.expect_tensor(
            got, torch.ones(3), call="demo()", mistakes={"doubled": lambda: 2 * torch.ones(3)}
        )
    assert failure.value.diagnosis == "doubled"
    assert not model.training
    ex.call(lambda m: torch.ones(3), model, call="demo(model)")
    ex.passed()  # the failed run's leak is forgotten: this run left nothing


def test_a_hook_context_held_open_by_a_generator_is_hooks_left() -> None:
    model, held = toy_model(), []

    def half_open(m):
        def steps():
            with m.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x)]):
                yield

        held.append(steps())
        next(held[-1])  # suspended inside the context: its hooks stay on
        return torch.ones(3)

    failure = leak_of(half_open, model)
    assert failure.diagnosis == "hooks_left" and "never exited" in str(failure)
    held[-1].close()  # the context exits now, its level back to where it was
    assert model.context_level == 0 and not any(m._forward_hooks for m in model.modules())


def test_a_module_too_large_to_copy_is_still_checked(monkeypatch) -> None:
    import ioi.checks.core as core

    layer = torch.nn.Linear(3, 3)
    monkeypatch.setattr(core, "PRISTINE_LIMIT", 0)

    def zero(lin):
        lin.weight.data.zero_()
        return torch.ones(3)

    failure = leak_of(zero, layer)
    assert failure.diagnosis == "mutated_input" and "not restored" in str(failure)

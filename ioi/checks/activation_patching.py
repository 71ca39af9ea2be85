"""Checkers for section 3, activation patching: the metric, hook functions, sweeps, attribution.

Expected values come from `ioi.metrics.make_ioi_metric` and `ioi.patching` (whose drop-in
``get_act_patch_*`` functions match TransformerLens's). Hook functions are checked by calling
them directly on a tensor, the way TransformerLens would.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from ioi import patching
from ioi.checks.core import (
    Exercise,
    describe,
    exercise,
    gradients_off_error,
    missing_rows,
    one_thread,
    reorderings,
    toy_sized,
    without_last,
    without_last_layer,
)
from ioi.checks.fixtures import IOIBatch, fresh_cache, ioi_batch, other_model_batch
from ioi.checks.other_sizes import describe_sizes, expect_on_other_sizes, toy_grid_axes
from ioi.metrics import (
    final_logits,
    logits_to_ave_logit_diff,
    make_ioi_metric,
    make_logit_diff_metric,
)
from ioi.patching import Together
from ioi.patching.attribution import receiver_gradients

# ---- shared inputs ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _patching_batch() -> IOIBatch:
    """A smaller batch than the other sections use: a naive sweep runs one pass per site."""
    return ioi_batch(n=4)


def _metric(b: IOIBatch):
    return make_ioi_metric(b.clean_logit_diff, b.corrupted_logit_diff, b.answer_tokens, b.end)


def _sweep_effect(b: IOIBatch, component: str, **spec) -> Float[Tensor, "..."]:
    """Denoising effect of a library sweep (clean into corrupted), as a tensor."""
    grid = patching.sweep(b.model, component, b.ds.toks.shape[1], **spec)
    return patching.activation_patching(
        b.model, b.ds.toks, b.abc.toks, _metric(b), grid, mode="denoise"
    ).effect.cpu()


def _patch_call(name: str, b: IOIBatch) -> str:
    return (
        f"{name}(model, corrupted_tokens, clean_cache, patching_metric)  where the metric is "
        f"make_ioi_metric(...) at end  [{b.describe()}]"
    )


def _copy_clean(act: Tensor, hook, where: tuple, cache) -> Tensor:
    act[where] = cache[hook.name][where]
    return act


def _patch_runs(b: IOIBatch, runs: list[list[tuple[str, tuple]]]) -> Tensor:
    """The metric of the corrupted run once per entry of ``runs``, each run patching its list
    of (hook name, index) sites with the clean values (an empty list: no patch)."""
    metric, out = _metric(b), []
    with torch.inference_mode():
        for sites in runs:
            hooks = [
                (n, functools.partial(_copy_clean, where=w, cache=b.clean_cache)) for n, w in sites
            ]
            out.append(float(metric(b.model.run_with_hooks(b.abc.toks, fwd_hooks=hooks))))
    return torch.tensor(out)


def _hooks_kept(b: IOIBatch, sites: list[tuple[str, tuple]], shape: tuple[int, ...]) -> Tensor:
    """What a sweep gives whose hooks stay on the model from one run to the next (added with
    model.add_hook, never reset): entry k patches sites 0..k, in the loop's order."""
    return _patch_runs(b, [sites[: k + 1] for k in range(len(sites))]).reshape(shape)


SWEEP_DIAGNOSES = {
    "subtracted_baseline": "you subtracted the corrupted run's metric from every entry; store "
    "patching_metric(patched logits) itself (with the normalised IOI metric the corrupted run "
    "already gives 0, so the two agree only there)",
}

HOOKS_KEPT = {
    "hooks_not_removed": "each run still had the hooks of the runs before it: entry k patches "
    "every site up to k (hooks added with model.add_hook stay until model.reset_hooks()); run "
    "model.run_with_hooks(tokens, fwd_hooks=[...]), which removes them after each run",
}


# ---- ioi_metric -------------------------------------------------------------------------------

METRIC = exercise(
    "ioi_metric",
    hint="(logit_diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff), with "
    "logit_diff the batch-mean logit difference at `positions`.",
    diagnoses={
        "not_normalised": "you returned the raw logit difference; normalise it so the corrupted "
        "baseline gives 0 and the clean one gives 1",
        "baselines_swapped": "clean logits give 0 and corrupted ones 1: the two baselines are "
        "swapped",
        "forgot_corrupted_baseline": "you divided by the clean logit difference without "
        "subtracting the corrupted baseline first",
        "wrong_denominator": "you subtracted the corrupted baseline but divided by the clean "
        "logit difference alone; divide by the gap, clean - corrupted",
        "ignored_positions": "you read the logit difference at the last position, not `positions`",
        "returned_per_prompt": "you returned one value per prompt; the metric must be one number "
        "(patching functions compare scalars)",
        "clamped": "you clamped the metric to [0, 1]; a patch can overshoot the clean run or "
        "undershoot the corrupted one, and the metric must show it",
        "absolute_value": "you took the absolute value of the logit difference: a patch that "
        "makes the model prefer the S must score below the corrupted baseline, so the metric "
        "keeps the sign (IO - S)",
        "one_baseline_swapped": "one of the two baselines is in the wrong place: "
        "(logit_diff - clean) / (clean - corrupted) or (logit_diff - corrupted) / (corrupted - "
        "clean). Subtract the corrupted baseline and divide by clean - corrupted (mind the "
        "argument order: corrupted_logit_diff comes before clean_logit_diff)",
        "wrong_sign": "you measured S minus IO (the columns of answer_tokens exchanged): "
        "answer_tokens[:, 0] is the IO, [:, 1] the S, and the logit difference is IO - S",
        "probabilities_not_logits": "you took the difference of probabilities (after a "
        "softmax); the metric is built on the logit difference: use the logits as given "
        "(log_softmax would do too: it shifts both logits of a prompt by the same amount)",
        "not_divided": "you subtracted the corrupted baseline but did not divide by the gap "
        "clean_logit_diff - corrupted_logit_diff, so the clean run does not give 1",
        "first_prompt_answers": "you used the first prompt's answers for every prompt: "
        "answer_tokens[0] is prompt 0's (IO, S) pair; every prompt's IO is answer_tokens[:, 0] "
        "and its S answer_tokens[:, 1]",
        "position_off_by_one": "you read the logits one position away from `positions`: the "
        "answer is predicted *at* `positions` (the END token), so read logits[rows, positions]",
        "abs_denominator": "you divided by the size of the gap, |clean - corrupted|: with a "
        "clean logit difference below the corrupted one the sign flips, and the clean run no "
        "longer gives 1. Divide by clean_logit_diff - corrupted_logit_diff itself",
        "not_differentiable": "the value is right, but it carries no gradient back to the "
        "logits (a Python float, .item(), .detach(), torch.tensor(...) of a number, or a "
        "computation under torch.no_grad()): attribution patching takes the metric's gradient. "
        "Return the 0-d tensor that torch operations on `logits` give",
    },
    shared=("batch_by_batch_indexing", "sum_not_mean", "first_position_for_none"),
)


def _flipped(logits: Tensor, answers: Tensor) -> Tensor:
    """``logits`` with each prompt's IO and S columns exchanged: every logit difference negated."""
    out, rows = logits.clone(), torch.arange(logits.shape[0])
    out[rows, :, answers[:, 0]] = logits[rows, :, answers[:, 1]]
    out[rows, :, answers[:, 1]] = logits[rows, :, answers[:, 0]]
    return out


@one_thread()
def test_ioi_metric(ioi_metric_fn: Callable) -> None:
    """Check ``ioi_metric(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None)``."""
    ex, b = METRIC, ioi_batch()
    answers, end = b.answer_tokens, b.end
    clean, corrupted = b.clean_logit_diff, b.corrupted_logit_diff
    halfway = (b.clean_logits + b.corrupted_logits) / 2
    # The last column of the checker's batch is each prompt's own `end` in the "short" case,
    # so positions=None is right there; the flipped logits give a negative logit difference.
    short = b.clean_logits[:, : int(end.min()) + 1]
    cases = (
        ("halfway_logits", halfway, end),
        ("clean_logits", b.clean_logits, end),
        ("corrupted_logits", b.corrupted_logits, end),
        ("flipped_logits (IO and S columns exchanged)", _flipped(b.clean_logits, answers), end),
        (f"clean_logits[:, :{short.shape[1]}]", short, None),
        # The two baselines exchanged: a clean logit difference below the corrupted one.
        ("halfway_logits, baselines exchanged", halfway, end, clean, corrupted),
    )
    for label, logits, positions, *baselines in cases:
        corrupted, clean = baselines or (b.corrupted_logit_diff, b.clean_logit_diff)
        _check_metric_case(ex, ioi_metric_fn, b, label, logits, positions, corrupted, clean)
    _check_metric_gradient(ex, ioi_metric_fn, b, halfway)
    ex.passed("clean -> 1, corrupted -> 0, flipped below 0, positions=end and None")


def _check_metric_case(
    ex: Exercise,
    ioi_metric_fn: Callable,
    b,
    label: str,
    logits: Tensor,
    positions: Tensor | None,
    corrupted: float,
    clean: float,
) -> None:
    """One ioi_metric call: its value against the library's, and the mistakes it may match."""
    answers, end = b.answer_tokens, b.end
    where = "positions=end" if positions is not None else "positions=None"
    call = (
        f"ioi_metric({label}, answer_tokens, corrupted_logit_diff={corrupted:.3f}, "
        f"clean_logit_diff={clean:.3f}, {where})  [{b.describe()}]"
    )
    got = ex.call(
        ioi_metric_fn,
        logits.clone(),
        answers.clone(),
        corrupted,
        clean,
        positions=None if positions is None else positions.clone(),
        call=call,
    )
    per_prompt = logits_to_ave_logit_diff(logits, answers, per_prompt=True, positions=positions)
    diff = per_prompt.mean()
    final = final_logits(logits, positions)
    grid = (final[:, answers[:, 0]] - final[:, answers[:, 1]]).mean()

    def normalise(d):
        return (d - corrupted) / (clean - corrupted)

    mistakes = {
        "abs_denominator": lambda d=diff, c=corrupted, g=clean - corrupted: (d - c) / abs(g),
        "not_normalised": lambda d=diff: d,
        "baselines_swapped": lambda d=diff: (d - clean) / (corrupted - clean),
        "forgot_corrupted_baseline": lambda d=diff: d / clean,
        "wrong_denominator": lambda d=diff: (d - corrupted) / clean,
        "absolute_value": lambda d=diff, p=per_prompt: [
            normalise(d.abs()),
            normalise(p.abs().mean()),
        ],
        "clamped": lambda d=diff, p=per_prompt: [
            normalise(d).clamp(0, 1),
            normalise(p).clamp(0, 1).mean(),
        ],
        "returned_per_prompt": lambda d=per_prompt: normalise(d),
        "sum_not_mean": lambda d=per_prompt: normalise(d.sum()),
        "batch_by_batch_indexing": lambda g=grid: normalise(g),
        "one_baseline_swapped": lambda d=diff: [
            (d - clean) / (clean - corrupted),
            (d - corrupted) / (corrupted - clean),
        ],
        "wrong_sign": lambda d=diff: normalise(-d),
        "probabilities_not_logits": lambda lg=logits, p=positions: normalise(
            logits_to_ave_logit_diff(lg.softmax(-1), answers, positions=p)
        ),
        "not_divided": lambda d=diff: d - corrupted,
        "first_prompt_answers": lambda f=final: normalise(
            (f[:, answers[0, 0]] - f[:, answers[0, 1]]).mean()
        ),
    }
    if positions is None:
        mistakes["first_position_for_none"] = lambda lg=logits: normalise(
            logits_to_ave_logit_diff(lg, answers, positions=torch.zeros_like(end))
        )
    else:
        mistakes["ignored_positions"] = lambda lg=logits: normalise(
            logits_to_ave_logit_diff(lg, answers)
        )
        last = logits.shape[1] - 1
        mistakes["position_off_by_one"] = lambda lg=logits, p=positions, last=last: [
            normalise(logits_to_ave_logit_diff(lg, answers, positions=q))
            for q in ((p - 1).clamp(0, last), (p + 1).clamp(0, last))
        ]
    expected = make_ioi_metric(clean, corrupted, answers, positions)(logits)
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes)


def _check_metric_gradient(ex: Exercise, fn: Callable, b, logits: Tensor) -> None:
    """Fail ``not_differentiable`` unless the metric is a tensor with a gradient to ``logits``."""
    clean, corrupted = b.clean_logit_diff, b.corrupted_logit_diff
    given = logits.clone().requires_grad_(True)
    call = (
        f"ioi_metric(halfway_logits.requires_grad_(), answer_tokens, corrupted_logit_diff="
        f"{corrupted:.3f}, clean_logit_diff={clean:.3f}, positions=end)  then "
        f"torch.autograd.grad(result, halfway_logits)  [{b.describe()}]"
    )
    with torch.enable_grad():
        got = ex.call(
            fn, given, b.answer_tokens.clone(), corrupted, clean, b.end.clone(), call=call
        )
        grad = None
        if isinstance(got, Tensor) and got.requires_grad:
            (grad,) = torch.autograd.grad(got.sum(), given, allow_unused=True)
    if grad is None or not bool(grad.abs().sum() > 0):
        ex.fail(
            "not_differentiable",
            call=call,
            expected="a 0-d tensor with a gradient with respect to the logits",
            got=describe(got) + (", requires_grad=False" if isinstance(got, Tensor) else ""),
            explanation=ex.diagnoses["not_differentiable"],
            hint=ex.hint,
        )


# ---- hook functions ---------------------------------------------------------------------------

HOOK_DIAGNOSES = {
    "ignored_hook_name": "you read the clean values of a fixed hook point; read "
    "clean_cache[hook.name], the hook point this hook is attached to (it is called for "
    "every layer)",
    "inverted_patch": "everything except the slice you were asked to patch was patched: you "
    "copied the corrupted slice into the clean activation and returned that. Start from the "
    "corrupted activation the hook was given and copy the clean slice into it",
    "added_not_replaced": "you added the clean values to the corrupted ones (+=); patching "
    "replaces the slice's values by the clean ones (=)",
    "mean_over_prompts": "you wrote the clean slice's mean over prompts into every prompt; "
    "patching copies each prompt's own clean values (no .mean(0))",
}


def _check_patch_hook(
    ex: Exercise,
    fn: Callable,
    name: str,
    cases: list[tuple[str, int]],
    patch: Callable[[Tensor, Tensor, int], Tensor],
    index_name: str,
    index_key: str,
    mistakes_of: Callable[[Tensor, Tensor, int], dict],
) -> None:
    """The body every patching hook's checker shares.

    For each (hook name, index): call the hook on the corrupted activation with the clean
    cache (read only), expect ``patch(corrupted, clean, index)``, and name the mistakes of
    ``mistakes_of`` plus the shared ones: the index ignored (the right patch at another
    index), the hook name ignored (the right patch from another hook point's clean values),
    the patch inverted, added instead of copied, or of the mean over prompts.
    """
    b = ioi_batch()
    for hook_name, index in cases:
        hook = b.model.hook_dict[hook_name]
        clean, corrupted = b.clean_cache[hook_name], b.corrupted_cache[hook_name]
        call = (
            f"{name}(corrupted [{', '.join(map(str, corrupted.shape))}], hook (name "
            f"{hook_name!r}), {index_name}={index}, clean_cache)  [{b.describe()}]"
        )
        n_index = corrupted.shape[2 if index_key == "head_z" else 1]
        # A fixed hook point: another case's, or another kind at this layer (a hook that
        # always reads resid_pre passes every resid_pre case).
        layer_points = [
            f"blocks.{hook.layer()}.{point}"
            for point in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
            + ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z")
            + ("attn.hook_pattern", "hook_attn_out", "hook_mlp_out")
        ]
        others = [
            name_
            for name_ in dict.fromkeys([n for n, _ in cases] + layer_points)
            if name_ != hook_name
            and name_ in b.clean_cache.cache_dict
            and b.clean_cache[name_].shape == clean.shape
        ]
        mistakes = {
            **mistakes_of(corrupted, clean, index),
            "inverted_patch": lambda c=corrupted, k=clean, i=index: patch(k, c, i),
            "added_not_replaced": lambda c=corrupted, k=clean, i=index: patch(c, c + k, i),
            "mean_over_prompts": lambda c=corrupted, k=clean, i=index: patch(
                c, k.mean(0, keepdim=True).expand_as(k), i
            ),
            f"ignored_{index_name}": lambda c=corrupted, k=clean, i=index, n=n_index: [
                patch(c, k, j) for j in range(n) if j != i
            ],
            "ignored_hook_name": lambda c=corrupted, i=index, o=others: [
                patch(c, b.clean_cache[other], i) for other in o
            ],
        }
        given_cache = fresh_cache(b.clean_cache)
        ex.expect_hook(
            fn,
            corrupted,
            hook,
            index,
            given_cache,
            call=call,
            expected=patch(corrupted, clean, index),
            mistakes=mistakes,
            read_only={"clean_cache": given_cache},
        )
    ex.passed(f"{len(cases)} hook points")


def _patched(activation: Tensor, clean: Tensor, where: tuple) -> Tensor:
    out = activation.clone()
    out[where] = clean[where]
    return out


RESID_HOOK = exercise(
    "patch_residual_component",
    hint="copy clean_cache[hook.name][:, pos, :] into corrupted_residual_component[:, pos, :] "
    "and return it.",
    diagnoses={
        **HOOK_DIAGNOSES,
        "patched_all_positions": "every position was replaced; patch only position `pos`",
        "indexed_batch_axis": "you replaced prompt number `pos` ([pos]) instead of position `pos` "
        "of every prompt ([:, pos])",
        "returned_clean_slice": "you returned only the clean slice [batch, d_model]; return the "
        "whole (patched) activation, [batch, pos, d_model]",
        "ignored_pos": "you patched a fixed position, not the `pos` you were given",
        "position_off_by_one": "you patched the position next to `pos`",
        "patched_a_range": "you patched a range of positions ([:, pos:] or [:, :pos + 1]); a "
        "slice keeps going to the end or from the start, while [:, pos] is the one position",
    },
    shared=("assignment_shapes_differ",),
)


@one_thread()
def test_patch_residual_component(patch_residual_component_fn: Callable) -> None:
    """Check the hook ``patch_residual_component(corrupted_residual_component, hook, pos, clean_cache)``."""

    def patch(act, clean, pos):
        return _patched(act, clean, (slice(None), pos))

    def mistakes(act, clean, pos):
        return {
            "patched_all_positions": lambda: clean,
            "indexed_batch_axis": lambda: _patched(act, clean, (pos,)),
            "returned_clean_slice": lambda: clean[:, pos],
            "position_off_by_one": lambda: [patch(act, clean, pos + 1), patch(act, clean, pos - 1)],
            "patched_a_range": lambda: [
                _patched(act, clean, (slice(None), where))
                for where in (slice(pos, None), slice(None, pos + 1), slice(None, pos))
            ],
        }

    cases = [
        ("blocks.1.hook_resid_pre", 5),
        ("blocks.2.hook_resid_pre", 2),
        ("blocks.1.hook_attn_out", 3),
        ("blocks.0.hook_mlp_out", 4),
    ]
    _check_patch_hook(
        RESID_HOOK,
        patch_residual_component_fn,
        "patch_residual_component",
        cases,
        patch,
        "pos",
        "pos",
        mistakes,
    )


HEAD_HOOK = exercise(
    "patch_head_vector",
    hint="the activation is [batch, pos, head, d_head]: copy clean_cache[hook.name][:, :, "
    "head_index] into it and return it.",
    diagnoses={
        **HOOK_DIAGNOSES,
        "indexed_position_axis": "you replaced position `head_index` ([:, head_index]); heads are "
        "the third axis of z/q/k/v: [:, :, head_index]",
        "patched_all_heads": "every head was replaced; patch only head `head_index`",
        "ignored_head_index": "you patched a fixed head, not the `head_index` you were given",
        "indexed_d_head_axis": "you indexed the last axis ([..., head_index]), which is d_head; "
        "heads are the third axis of z/q/k/v: [:, :, head_index]",
        "indexed_batch_axis": "you replaced prompt number `head_index` ([head_index]) instead "
        "of head `head_index` of every prompt ([:, :, head_index])",
        "returned_clean_slice": "you returned only the clean head's slice [batch, pos, d_head]; "
        "write it into the activation and return the whole activation, [batch, pos, head, "
        "d_head] (TransformerLens replaces the activation by what the hook returns)",
        "patched_one_position": "you patched the head at one position only (the last, say); "
        "this hook patches head `head_index` at *every* position: [:, :, head_index]",
        "inverted_patch": "everything except head `head_index` was patched: you copied the "
        "corrupted head into the clean activation and returned that. Start from the corrupted "
        "activation the hook was given and copy the clean head into it",
        "added_not_replaced": "you added the clean values to the corrupted ones (+=); patching "
        "replaces the head's values by the clean ones (=)",
        "mean_over_prompts": "you wrote the clean head's mean over prompts into every prompt; "
        "patching copies each prompt's own clean values: clean[:, :, head_index]",
        "zeroed_head": "you set the head to zero (zero ablation); patching copies in the clean "
        "run's values, clean_cache[hook.name][:, :, head_index]",
    },
    shared=("assignment_shapes_differ",),
)


@one_thread()
def test_patch_head_vector(patch_head_vector_fn: Callable) -> None:
    """Check the hook ``patch_head_vector(corrupted_head_vector, hook, head_index, clean_cache)``."""

    def patch(act, clean, head):
        return _patched(act, clean, (slice(None), slice(None), head))

    def mistakes(act, clean, head):
        return {
            "indexed_position_axis": lambda: _patched(act, clean, (slice(None), head)),
            "indexed_d_head_axis": lambda: _patched(act, clean, (..., head)),
            "patched_all_heads": lambda: clean,
            "indexed_batch_axis": lambda: _patched(act, clean, (head,)),
            "returned_clean_slice": lambda: clean[:, :, head],
            "patched_one_position": lambda: [
                _patched(act, clean, (slice(None), pos, head)) for pos in range(act.shape[1])
            ],
            "zeroed_head": lambda: _patched(
                act, torch.zeros_like(clean), (slice(None), slice(None), head)
            ),
        }

    cases = [("blocks.1.attn.hook_z", 3), ("blocks.2.attn.hook_z", 1), ("blocks.0.attn.hook_v", 2)]
    _check_patch_hook(
        HEAD_HOOK,
        patch_head_vector_fn,
        "patch_head_vector",
        cases,
        patch,
        "head_index",
        "head_z",
        mistakes,
    )


PATTERN_HOOK = exercise(
    "patch_attn_patterns",
    hint="a pattern is [batch, head, query_pos, key_pos]: copy clean_cache[hook.name][:, "
    "head_index] into it and return it.",
    diagnoses={
        **HOOK_DIAGNOSES,
        "indexed_wrong_axis": "you indexed the pattern like z ([:, :, head_index]); in a "
        "pattern the head is the second axis: [:, head_index]",
        "patched_all_heads": "every head's pattern was replaced; patch only head `head_index`",
        "ignored_head_index": "you patched a fixed head, not the `head_index` you were given",
        "transposed_pattern": "you copied the clean pattern transposed (.T or .transpose(-1, "
        "-2)): a pattern is [batch, head, query_pos, key_pos] in both the cache and the hook, "
        "so copy clean_cache[hook.name][:, head_index] as it is",
        "indexed_batch_axis": "you replaced prompt number `head_index` ([head_index]) instead "
        "of head `head_index` of every prompt ([:, head_index])",
        "returned_clean_slice": "you returned only the clean head's pattern [batch, query_pos, "
        "key_pos]; return the whole (patched) pattern, [batch, head, query_pos, key_pos]",
    },
    shared=("assignment_shapes_differ",),
)


@one_thread()
def test_patch_attn_patterns(patch_attn_patterns_fn: Callable) -> None:
    """Check the hook ``patch_attn_patterns(corrupted_head_vector, hook, head_index, clean_cache)``."""

    def patch(act, clean, head):
        return _patched(act, clean, (slice(None), head))

    def mistakes(act, clean, head):
        return {
            "indexed_wrong_axis": lambda: _patched(act, clean, (slice(None), slice(None), head)),
            "patched_all_heads": lambda: clean,
            "transposed_pattern": lambda: patch(act, clean.transpose(-1, -2), head),
            "indexed_batch_axis": lambda: _patched(act, clean, (head,)),
            "returned_clean_slice": lambda: clean[:, head],
        }

    cases = [("blocks.2.attn.hook_pattern", 3), ("blocks.1.attn.hook_pattern", 0)]
    _check_patch_hook(
        PATTERN_HOOK,
        patch_attn_patterns_fn,
        "patch_attn_patterns",
        cases,
        patch,
        "head_index",
        "head_pattern",
        mistakes,
    )


# ---- sweeps -----------------------------------------------------------------------------------


def _check_sweep(
    ex: Exercise,
    fn: Callable,
    name: str,
    expected: Tensor,
    mistakes: dict,
    atol: float = 1e-3,
    holder: dict | None = None,
    library: Callable | None = None,
    toy_axes: dict[int, str] | None = None,
    other_mistakes: Callable[[Tensor], dict] | None = None,
    raised_as: Callable[[Exception], str | None] | None = None,
) -> None:
    """The body every sweep's checker shares: run it on the patching batch and compare.

    The clean cache is read only; a grid equal to the corrupted run's metric (0) everywhere
    is ``no_effect``. ``holder``, if given, receives the learner's result under ``"got"``
    before the comparison (for mistakes that look at it). With ``library`` (the library's
    function of the same signature), the sweep runs again on a random model of other sizes
    (`other_model_batch`): ``toy_axes`` maps an axis of the result to the size it counts
    (``"layers"``, ``"heads"`` or ``"pos"``), so that sizes written as the toy's are named;
    ``other_mistakes`` maps that run's expected result to more mistakes to name there; an
    exercise that declares ``subtracted_baseline`` gets it named there (where the corrupted
    run's metric is not 0). ``raised_as`` names an exception's diagnosis (`Exercise.call`).
    """
    b = _patching_batch()
    call = _patch_call(name, b)
    given = fresh_cache(b.clean_cache)
    got = ex.call(
        fn,
        b.model,
        b.abc.toks.clone(),
        given,
        _metric(b),
        call=call,
        model=b.model,
        read_only={"clean_cache": given},
        raised_as=raised_as,
    )
    if holder is not None:
        holder["got"] = got
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=atol, unchanged=0.0)
    if library is None:
        ex.passed()
        return
    other = other_model_batch()
    metric = make_logit_diff_metric(other.answer_tokens, other.end)
    call = (
        f"{name}(model, corrupted_tokens, clean_cache, patching_metric)  where the metric is "
        f"the mean logit difference at end  [{other.describe()}]"
    )
    given = fresh_cache(other.clean_cache)
    got = ex.call(
        fn,
        other.model,
        other.corrupted_tokens.clone(),
        given,
        metric,
        call=call,
        model=other.model,
        read_only={"clean_cache": given},
        raised_as=raised_as,
    )
    with torch.inference_mode():
        want = library(other.model, other.corrupted_tokens, other.clean_cache, metric).cpu()
        baseline = float(metric(other.model(other.corrupted_tokens)))
    toy = {"layers": b.model.cfg.n_layers, "heads": b.model.cfg.n_heads, "pos": b.abc.toks.shape[1]}
    sizes = {axis: toy[what] for axis, what in (toy_axes or {}).items()}
    more = other_mistakes(want) if other_mistakes else {}
    if "subtracted_baseline" in ex.diagnoses:
        more["subtracted_baseline"] = lambda: want - baseline
    ex.expect_tensor(
        got,
        want,
        call=call,
        mistakes={"hard_coded_size": lambda: toy_sized(want, sizes), **more},
        atol=atol,
        unchanged=baseline,
    )
    ex.passed("the toy, and a random model of other sizes")


RESID_PRE = exercise(
    "get_act_patch_resid_pre",
    hint="for every layer and position: run the corrupted tokens with "
    "fwd_hooks=[(utils.get_act_name('resid_pre', layer), partial(patch_residual_component, "
    "pos=pos, clean_cache=clean_cache))] and store patching_metric(logits) in a [layer, pos] tensor.",
    diagnoses={
        "transposed": "the result is [pos, layer]; return [layer, pos]",
        "off_by_one_layer": "your row `layer` is the patch of resid_post (the stream *leaving* "
        "the block, which is resid_pre of layer + 1) or of resid_mid (between attention and "
        "MLP: patched at one position it gives the same, as the MLP works per position); "
        "patch 'resid_pre' of `layer`, the stream entering the block",
        "patched_all_positions": "every row is constant along pos: you patched all positions "
        "at once instead of one position per column",
        **SWEEP_DIAGNOSES,
        **HOOKS_KEPT,
    },
    shared=("missed_last_layer", "missed_last_position", "hard_coded_size"),
)


def _resid_sites(b: IOIBatch, point: str = "hook_resid_pre") -> list[tuple[str, tuple]]:
    """Every (layer, pos) site of a residual sweep, in loop order (layer, then position)."""
    n_pos = b.abc.toks.shape[1]
    return [
        (f"blocks.{layer}.{point}", (slice(None), pos))
        for layer in range(b.model.cfg.n_layers)
        for pos in range(n_pos)
    ]


@one_thread()
def test_get_act_patch_resid_pre(get_act_patch_resid_pre_fn: Callable) -> None:
    """Check ``get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, patching_metric) -> [layer, pos]``."""
    b = _patching_batch()
    expected = patching.get_act_patch_resid_pre(
        b.model, b.abc.toks, b.clean_cache, _metric(b)
    ).cpu()
    n_pos = expected.shape[1]
    mistakes = {
        "transposed": lambda: expected.T,
        "missed_last_layer": lambda: without_last_layer(expected),
        "off_by_one_layer": lambda: _sweep_effect(b, "resid_post", positions="each"),
        "patched_all_positions": lambda: _sweep_effect(b, "resid_pre")[:, None].expand(-1, n_pos),
        "hooks_not_removed": lambda: _hooks_kept(b, _resid_sites(b), tuple(expected.shape)),
    }
    _check_sweep(
        RESID_PRE,
        get_act_patch_resid_pre_fn,
        "get_act_patch_resid_pre",
        expected,
        mistakes,
        library=patching.get_act_patch_resid_pre,
        toy_axes={0: "layers", 1: "pos"},
        # The toy batch's last column is padding: only the other model shows it missing.
        other_mistakes=lambda want: {"missed_last_position": lambda: without_last(want, 1)},
    )


HEAD_OUT = exercise(
    "get_act_patch_attn_head_out_all_pos",
    hint="for every layer and head: run the corrupted tokens with fwd_hooks=[(utils.get_act_name"
    "('z', layer), partial(patch_head_vector, head_index=head, clean_cache=clean_cache))] and "
    "store patching_metric(logits) in a [layer, head] tensor.",
    diagnoses={
        "transposed": "the result is [head, layer]; return [layer, head]",
        "patched_all_heads": "every row is constant along head: you patched the whole layer's z "
        "for each head",
        "patched_other_component": "these are the effects of patching another input of the "
        "heads (q, k or v); a head's output is its z (hook_z)",
        **SWEEP_DIAGNOSES,
        **HOOKS_KEPT,
    },
    shared=("missed_last_layer", "missed_last_head", "hard_coded_size"),
)


@one_thread()
def test_get_act_patch_attn_head_out_all_pos(
    get_act_patch_attn_head_out_all_pos_fn: Callable,
) -> None:
    """Check ``get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, clean_cache, patching_metric) -> [layer, head]``."""
    b = _patching_batch()
    expected = patching.get_act_patch_attn_head_out_all_pos(
        b.model, b.abc.toks, b.clean_cache, _metric(b)
    ).cpu()
    n_heads = expected.shape[1]
    mistakes = {
        "transposed": lambda: expected.T,
        "missed_last_layer": lambda: without_last_layer(expected),
        "patched_all_heads": lambda: _sweep_effect(b, "z", heads="all")[:, None].expand(
            -1, n_heads
        ),
        "patched_other_component": lambda: [_sweep_effect(b, c) for c in ("q", "k", "v")],
        "missed_last_head": lambda: without_last(expected, 1),
        "hooks_not_removed": lambda: _hooks_kept(
            b,
            [
                (f"blocks.{layer}.attn.hook_z", (slice(None), slice(None), head))
                for layer in range(b.model.cfg.n_layers)
                for head in range(n_heads)
            ],
            tuple(expected.shape),
        ),
    }
    _check_sweep(
        HEAD_OUT,
        get_act_patch_attn_head_out_all_pos_fn,
        "get_act_patch_attn_head_out_all_pos",
        expected,
        mistakes,
        library=patching.get_act_patch_attn_head_out_all_pos,
        toy_axes={0: "layers", 1: "heads"},
    )


BY_POS = exercise(
    "get_act_patch_attn_head_out_by_pos",
    hint="three loops (layer, position, head); the hook replaces z[:, pos, head] only; store "
    "patching_metric(logits) in a [layer, pos, head] tensor.",
    diagnoses={
        "wrong_layout": "the right numbers in the wrong axis order; return [layer, pos, head], "
        "the layout of TransformerLens's get_act_patch_attn_head_out_by_pos",
        "patched_all_positions": "every position gives the same value: you patched the head at "
        "every position for each column, not at that position only",
        "patched_all_heads": "every head gives the same value: you patched the whole layer's z "
        "at that position",
        "patched_a_range": "column `pos` patches a range of positions (z[:, :pos + 1] or "
        "z[:, pos:]); a slice runs to the start or the end, while z[:, pos, head] is the one "
        "position",
        "indexed_batch_axis": "column `pos` patches prompt number `pos` (z[pos, :, head]) "
        "instead of position `pos` of every prompt; z is [batch, pos, head, d_head], so "
        "index z[:, pos, head]",
        "head_and_pos_swapped": "the hook indexes z[:, head, pos]: the position and head "
        "indices are exchanged. z is [batch, pos, head, d_head]: z[:, pos, head]",
        "patched_other_component": "these are the effects of patching another input of the "
        "heads (q, k or v) at each position; a head's output is its z (hook_z)",
        **SWEEP_DIAGNOSES,
    },
    shared=("missed_last_layer", "missed_last_position", "hard_coded_size"),
)


@one_thread()
def test_get_act_patch_attn_head_out_by_pos(
    get_act_patch_attn_head_out_by_pos_fn: Callable,
) -> None:
    """Check ``get_act_patch_attn_head_out_by_pos(model, corrupted_tokens, clean_cache, patching_metric) -> [layer, pos, head]``."""
    b = _patching_batch()
    expected = patching.get_act_patch_attn_head_out_by_pos(
        b.model, b.abc.toks, b.clean_cache, _metric(b)
    ).cpu()
    n_layers, n_pos, n_heads = expected.shape

    def other_layouts():
        return [expected.permute(*o) for o in ((0, 2, 1), (1, 0, 2), (2, 0, 1), (1, 2, 0))]

    mistakes = {
        "wrong_layout": other_layouts,
        "missed_last_layer": lambda: without_last_layer(expected),
        "patched_all_positions": lambda: _sweep_effect(b, "z")[:, None, :].expand(-1, n_pos, -1),
        "patched_all_heads": lambda: _sweep_effect(b, "z", positions="each", heads="all")[
            :, :, None
        ].expand(-1, -1, n_heads),
        "patched_a_range": lambda: [
            torch.stack(
                [_sweep_effect(b, "z", positions=Together(span(p))) for p in range(n_pos)], 1
            )
            for span in (lambda p: range(p + 1), lambda p: range(p, n_pos))
        ],
        "indexed_batch_axis": lambda: _patch_runs(
            b,
            [
                [(f"blocks.{layer}.attn.hook_z", (pos, slice(None), head))] if pos < b.ds.N else []
                for layer in range(n_layers)
                for pos in range(n_pos)
                for head in range(n_heads)
            ],
        ).reshape(expected.shape),
        "head_and_pos_swapped": lambda: torch.cat(
            [
                expected[:, :n_heads].transpose(1, 2),
                torch.zeros(n_layers, n_pos - n_heads, n_heads),
            ],
            1,
        ),
        "patched_other_component": lambda: [
            _sweep_effect(b, c, positions="each") for c in ("q", "k", "v")
        ],
    }
    _check_sweep(
        BY_POS,
        get_act_patch_attn_head_out_by_pos_fn,
        "get_act_patch_attn_head_out_by_pos",
        expected,
        mistakes,
        library=patching.get_act_patch_attn_head_out_by_pos,
        toy_axes={0: "layers", 1: "pos", 2: "heads"},
        other_mistakes=lambda want: {"missed_last_position": lambda: without_last(want, 1)},
    )


BLOCK_EVERY = exercise(
    "get_act_patch_block_every",
    hint="three [layer, pos] sweeps, one per hook point: resid_pre, attn_out, mlp_out; stack "
    "them in that order.",
    diagnoses={
        "wrong_component_order": "the rows are right but in the wrong order; stack resid_pre, "
        "attn_out, mlp_out",
        "missing_component": "one of the three components is missing",
        "resid_post_not_pre": "your first row patches resid_post (the stream leaving each "
        "block) or resid_mid (between attention and MLP: patched at one position it gives the "
        "same, as the MLP works per position); the first row is resid_pre, the stream "
        "entering the block",
        "same_component_every_row": "two or more rows are the same sweep: the hook name does "
        "not change with the component (say get_act_name('resid_pre', layer) written inside "
        "the loop over components); build it from the loop's component: "
        "get_act_name(component, layer)",
        "wrong_layout": "the right numbers in the wrong axis order; return [component, layer, "
        "pos] (stack the three [layer, pos] grids on a new first axis: torch.stack(rows))",
        "patched_all_positions": "every row is constant along pos: you patched all positions "
        "at once instead of one position per column",
        "wrong_hook_point": "a row patches another hook point than its component's: the "
        "attn_out row is get_act_name('attn_out', layer) (get_act_name('attn', layer) is the "
        "attention *pattern*, [batch, head, query, key]) and the mlp_out row "
        "get_act_name('mlp_out', layer), not resid_mid or resid_post",
        "skipped_first_position": "position 0 is left at 0: every position is patched, the "
        "first (BOS) one too; its clean and corrupted values differ wherever the two runs' "
        "first tokens do",
        **SWEEP_DIAGNOSES,
    },
    shared=("missed_last_layer", "missed_last_position", "hard_coded_size"),
)

BLOCK_ORDER = ("resid_pre", "attn_out", "mlp_out")


def _first_zeroed(grid: Tensor) -> Tensor:
    """``grid`` with its first position (last axis) left at 0."""
    out = grid.clone()
    out[..., 0] = 0.0
    return out


@one_thread()
def test_get_act_patch_block_every(get_act_patch_block_every_fn: Callable) -> None:
    """Check ``get_act_patch_block_every(model, corrupted_tokens, clean_cache, patching_metric) -> [3, layer, pos]``."""
    b = _patching_batch()
    expected = patching.get_act_patch_block_every(
        b.model, b.abc.toks, b.clean_cache, _metric(b)
    ).cpu()
    mistakes = {
        "wrong_component_order": lambda: reorderings(expected),
        "missing_component": lambda: missing_rows(expected),
        "resid_post_not_pre": lambda: [
            torch.cat([_sweep_effect(b, c, positions="each")[None], expected[1:]])
            for c in ("resid_post", "resid_mid")
        ],
        "same_component_every_row": lambda: [
            expected[list(rows)]
            for rows in itertools.product(range(3), repeat=3)
            if len(set(rows)) < 3
        ],
        "wrong_layout": lambda: [expected.permute(*o) for o in ((1, 0, 2), (1, 2, 0))],
        "patched_all_positions": lambda: torch.stack([_sweep_effect(b, c) for c in BLOCK_ORDER])[
            ..., None
        ].expand_as(expected),
        "missed_last_layer": lambda: [
            torch.stack(rows)
            for rows in zip(*(without_last_layer(e) for e in expected), strict=True)
        ],
        "wrong_hook_point": lambda: [
            torch.cat(
                [expected[:i], _sweep_effect(b, c, positions="each")[None], expected[i + 1 :]]
            )
            for i in (1, 2)
            for c in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
            if c != BLOCK_ORDER[i]
        ],
    }
    _check_sweep(
        BLOCK_EVERY,
        get_act_patch_block_every_fn,
        "get_act_patch_block_every",
        expected,
        mistakes,
        library=patching.get_act_patch_block_every,
        toy_axes={1: "layers", 2: "pos"},
        # The toy batch's last column is padding (no prediction reads it): only the other
        # model, whose first prompt ends there, shows a loop that stops one position early.
        other_mistakes=lambda want: {
            "missed_last_position": lambda: without_last(want, 2),
            "skipped_first_position": lambda: _first_zeroed(want),
        },
        # get_act_name("attn", layer) is the pattern: [:, pos] runs past its head axis.
        raised_as=lambda err: "wrong_hook_point" if isinstance(err, IndexError) else None,
    )


EVERY = exercise(
    "get_act_patch_attn_head_all_pos_every",
    hint="stack five [layer, head] sweeps, in this order: output (z), query (q), key (k), "
    "value (v), pattern (use patch_attn_patterns for the last).",
    diagnoses={
        "wrong_component_order": "the rows are right but in the wrong order; stack output (z), "
        "q, k, v, pattern",
        "missing_component": "one of the five components is missing",
        "component_row_wrong": "four of the five rows are right and one is not: check the hook "
        "function and the hook name of that component (a pattern's head is its second axis)",
        "stacked_wrong_axis": "the five rows are stacked on the last axis ([layer, head, 5]); "
        "stack them on the first: torch.stack(rows) is [5, layer, head]",
        **SWEEP_DIAGNOSES,
    },
    shared=("missed_last_layer", "missed_last_head", "hard_coded_size"),
)

EVERY_ORDER = ("z", "q", "k", "v", "pattern")


@one_thread()
def test_get_act_patch_attn_head_all_pos_every(
    get_act_patch_attn_head_all_pos_every_fn: Callable,
) -> None:
    """Check ``get_act_patch_attn_head_all_pos_every(...) -> [5, layer, head]`` (z, q, k, v, pattern)."""
    b = _patching_batch()
    expected = patching.get_act_patch_attn_head_all_pos_every(
        b.model, b.abc.toks, b.clean_cache, _metric(b)
    ).cpu()
    holder: dict = {}

    def one_row_wrong():
        got = holder.get("got")
        if not isinstance(got, Tensor) or got.shape != expected.shape:
            return None
        right = [
            torch.allclose(g.float(), e, atol=1e-3)
            for g, e in zip(got.cpu(), expected, strict=True)
        ]
        return got if sum(right) == len(right) - 1 else None

    mistakes = {
        "wrong_component_order": lambda: reorderings(expected),
        "missing_component": lambda: missing_rows(expected),
        "component_row_wrong": one_row_wrong,
        "stacked_wrong_axis": lambda: expected.permute(1, 2, 0),
        "missed_last_layer": lambda: without_last(expected, 1),
        "missed_last_head": lambda: without_last(expected, 2),
    }
    # The random model of other sizes names sizes written as the toy's (3 layers, 4 heads)
    # and a subtracted baseline (the toy's normalised metric gives 0 on the corrupted run).
    _check_sweep(
        EVERY,
        get_act_patch_attn_head_all_pos_every_fn,
        "get_act_patch_attn_head_all_pos_every",
        expected,
        mistakes,
        holder=holder,
        library=patching.get_act_patch_attn_head_all_pos_every,
        toy_axes={1: "layers", 2: "heads"},
    )


# ---- attribution patching ---------------------------------------------------------------------

ATTRIBUTION = exercise(
    "attribution_patch_attn_head_out_all_pos",
    hint="one forward and backward pass of the corrupted tokens gives z and d metric / d z at "
    "every layer; one forward pass of the clean tokens gives clean z. For each head, sum "
    "(clean_z - corrupted_z) * grad over batch, pos and d_head, and add the corrupted run's metric.",
    diagnoses={
        "change_not_value": "you returned the estimated change only; add the corrupted run's "
        "metric so the result reads like get_act_patch_attn_head_out_all_pos",
        "wrong_delta_sign": "you used corrupted - clean; denoising moves the activation from its "
        "corrupted value to its clean value, so the step is clean - corrupted",
        "gradient_in_clean_run": "you took the gradient in the clean run; when denoising, the "
        "linear approximation is around the run being patched, the corrupted one",
        "mean_not_sum": "the estimated change is the expected one divided by the number of "
        "prompts: the metric already averages over prompts, so its gradient does too; sum "
        "(clean - corrupted) * grad over the batch",
        "clean_baseline": "you added the clean run's metric; the estimate is a step away from "
        "the corrupted run, so add the corrupted run's metric",
        "absolute_change": "you took the absolute value of each head's estimated change: a "
        "head whose patch would lower the metric must show a value below the corrupted run's. "
        "Keep the sign of (clean - corrupted) * grad",
        "noising_estimate": "you estimated noising (the clean run's metric plus (corrupted - "
        "clean) * the clean run's gradient); this estimates denoising: the corrupted run's "
        "metric plus (clean - corrupted) * the corrupted run's gradient",
        "detached_leaves": "the earlier layers' values are off and the last layer's right: "
        "each layer's z was replaced by a detached leaf, so a later layer's leaf cuts every "
        "path from the earlier heads through it, and their gradients count only the direct "
        "paths. Save the activations in the hooks without detaching them (or add a zero "
        "tensor that requires grad) and differentiate with respect to those",
    },
    shared=("missed_last_layer", "gradients_off", "hard_coded_size"),
)


def _raw_metric(b: IOIBatch):
    # The raw logit difference, not the normalised metric: the normalised one is 0 on the
    # corrupted run, which would hide a forgotten baseline.
    return make_logit_diff_metric(b.answer_tokens, b.end)


def _leaf_change(b: IOIBatch, receiver: Tensor, donor_cache) -> Float[Tensor, "layer head"]:
    """`_attribution_change` with every layer's z replaced by a detached leaf in the receiver
    run (the mistake ``detached_leaves``): each gradient counts only the paths that avoid
    the later layers' z."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(b.model.cfg.n_layers)]
    leaves: dict[str, Tensor] = {}

    def leaf(act: Tensor, hook) -> Tensor:
        leaves[hook.name] = act.detach().requires_grad_(True)
        return leaves[hook.name]

    with torch.enable_grad(), b.model.hooks(fwd_hooks=[(n, leaf) for n in names]):
        value = _raw_metric(b)(b.model(receiver))
        grads = torch.autograd.grad(value, [leaves[n] for n in names])
    return torch.stack(
        [
            ((donor_cache[n] - leaves[n].detach()) * g).sum((0, 1, 3))
            for n, g in zip(names, grads, strict=True)
        ]
    ).cpu()


def _attribution_change(b: IOIBatch, receiver: Tensor, donor_cache) -> Float[Tensor, "layer head"]:
    """Sum over batch, pos and d_head of (donor - receiver) * d metric / d z, per head."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(b.model.cfg.n_layers)]
    _, acts, grads = receiver_gradients(b.model, receiver, _raw_metric(b), names)
    return torch.stack(
        [((donor_cache[n] - acts[n]) * grads[n]).sum((0, 1, 3)) for n in names]
    ).cpu()


@one_thread()
def test_attribution_patch_attn_head_out_all_pos(
    attribution_patch_attn_head_out_all_pos_fn: Callable,
) -> None:
    """Check ``attribution_patch_attn_head_out_all_pos(model, clean_tokens, corrupted_tokens, patching_metric)``."""
    ex, b = ATTRIBUTION, _patching_batch()
    # Also the other way round (the ABC prompts patched into the IOI run), where some heads'
    # estimated changes are negative.
    directions = (
        ("clean_tokens, corrupted_tokens", b.ds.toks, b.abc.toks, b.corrupted_logit_diff),
        ("corrupted_tokens, clean_tokens", b.abc.toks, b.ds.toks, b.clean_logit_diff),
    )
    for i, (shown, clean_toks, corrupted_toks, corrupted_value) in enumerate(directions):
        call = (
            f"attribution_patch_attn_head_out_all_pos(model, {shown}, patching_metric)  where "
            f"the metric is the mean logit difference at end  [{b.describe()}; gradients off, "
            "as in the notebook]"
        )
        with torch.no_grad():  # as the notebook runs: the function turns gradients on itself
            got = ex.call(
                attribution_patch_attn_head_out_all_pos_fn,
                b.model,
                clean_toks.clone(),
                corrupted_toks.clone(),
                _raw_metric(b),
                call=call,
                model=b.model,
                raised_as=gradients_off_error,
            )
        grid = patching.sweep(b.model, "z", b.ds.toks.shape[1])
        expected = patching.attribution_patching(
            b.model, clean_toks, corrupted_toks, _raw_metric(b), grid, mode="denoise"
        ).effect.cpu()
        other_value = b.clean_logit_diff if i == 0 else b.corrupted_logit_diff
        receiver, donor = (b.ds.toks, b.corrupted_cache) if i == 0 else (b.abc.toks, b.clean_cache)
        mistakes = {
            "change_not_value": lambda e=expected, c=corrupted_value: e - c,
            "wrong_delta_sign": lambda e=expected, c=corrupted_value: 2 * c - e,
            # gradient of the clean run, stepping from corrupted to clean values
            "gradient_in_clean_run": lambda c=corrupted_value, r=receiver, d=donor: (
                c - _attribution_change(b, r, d)
            ),
            "mean_not_sum": lambda e=expected, c=corrupted_value: c + (e - c) / b.ds.N,
            "clean_baseline": lambda e=expected, c=corrupted_value, o=other_value: e - c + o,
            "absolute_change": lambda e=expected, c=corrupted_value: c + (e - c).abs(),
            # the clean run's metric plus (corrupted - clean) * the clean run's gradient
            "noising_estimate": lambda o=other_value, r=receiver, d=donor: (
                o + _attribution_change(b, r, d)
            ),
            # the donor's z is the clean one; the receiver run is the corrupted one
            "detached_leaves": lambda c=corrupted_value, t=corrupted_toks, i=i: (
                c + _leaf_change(b, t, b.clean_cache if i == 0 else b.corrupted_cache)
            ),
            "missed_last_layer": lambda e=expected: without_last_layer(e),
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-3)
    other = other_model_batch()
    model, clean, corrupted = other.model, other.clean_tokens, other.corrupted_tokens
    metric = make_logit_diff_metric(other.answer_tokens, other.end)
    grid = patching.sweep(model, "z", clean.shape[1])
    expected = patching.attribution_patching(
        model, clean, corrupted, metric, grid, mode="denoise"
    ).effect.cpu()
    call = (
        "attribution_patch_attn_head_out_all_pos(model, clean_tokens, corrupted_tokens, "
        "patching_metric)  where the metric is the mean logit difference at end  "
        f"[{describe_sizes(model)}, random tokens {list(clean.shape)}; gradients off]"
    )
    with torch.no_grad():
        expect_on_other_sizes(
            ex,
            attribution_patch_attn_head_out_all_pos_fn,
            model,
            clean.clone(),
            corrupted.clone(),
            metric,
            call=call,
            model=model,
            expected=expected,
            axes=toy_grid_axes(),
            raised_as=gradients_off_error,
            atol=1e-3,
        )
    ex.passed("both directions on the toy, and a random model of other sizes")

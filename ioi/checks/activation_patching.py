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
from ioi.checks.core import Exercise, exercise, one_thread
from ioi.checks.fixtures import IOIBatch, fresh_cache, ioi_batch
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric, make_logit_diff_metric
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


def _run_sweep(ex: Exercise, fn: Callable, b: IOIBatch, call: str):
    return ex.call(
        fn,
        b.model,
        b.abc.toks.clone(),
        fresh_cache(b.clean_cache),
        _metric(b),
        call=call,
        model=b.model,
    )


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
        "ignored_positions": "you read the logit difference at the last position, not `positions`",
        "returned_per_prompt": "you returned one value per prompt; the metric must be one number "
        "(patching functions compare scalars)",
    },
)


@one_thread()
def test_ioi_metric(ioi_metric_fn: Callable) -> None:
    """Check ``ioi_metric(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None)``."""
    ex, b = METRIC, ioi_batch()
    answers, end = b.answer_tokens, b.end
    clean, corrupted = b.clean_logit_diff, b.corrupted_logit_diff
    halfway = (b.clean_logits + b.corrupted_logits) / 2
    for label, logits in (
        ("clean", b.clean_logits),
        ("corrupted", b.corrupted_logits),
        ("halfway", halfway),
    ):
        call = (
            f"ioi_metric({label}_logits, answer_tokens, corrupted_logit_diff={corrupted:.3f}, "
            f"clean_logit_diff={clean:.3f}, positions=end)  [{b.describe()}]"
        )
        got = ex.call(
            ioi_metric_fn,
            logits.clone(),
            answers.clone(),
            corrupted,
            clean,
            positions=end.clone(),
            call=call,
        )
        diff = logits_to_ave_logit_diff(logits, answers, positions=end)
        per_prompt = logits_to_ave_logit_diff(logits, answers, per_prompt=True, positions=end)
        last = logits_to_ave_logit_diff(logits, answers)
        mistakes = {
            "not_normalised": lambda d=diff: d,
            "baselines_swapped": lambda d=diff: (d - clean) / (corrupted - clean),
            "forgot_corrupted_baseline": lambda d=diff: d / clean,
            "ignored_positions": lambda d=last: (d - corrupted) / (clean - corrupted),
            "returned_per_prompt": lambda d=per_prompt: (d - corrupted) / (clean - corrupted),
        }
        expected = make_ioi_metric(clean, corrupted, answers, end)(logits)
        ex.expect_tensor(
            torch.as_tensor(got) if isinstance(got, float) else got,
            expected,
            call=call,
            mistakes=mistakes,
        )
    ex.passed("clean -> 1, corrupted -> 0")


# ---- hook functions ---------------------------------------------------------------------------


def _hook_result(returned: object, mutated: Tensor) -> object:
    """What TransformerLens would use: the returned tensor, or the input if the hook returned None."""
    return mutated if returned is None else returned


RESID_HOOK = exercise(
    "patch_residual_component",
    hint="copy clean_cache[hook.name][:, pos, :] into corrupted_residual_component[:, pos, :] "
    "and return it.",
    diagnoses={
        "patched_all_positions": "every position was replaced; patch only position `pos`",
        "indexed_batch_axis": "you replaced prompt number `pos` ([pos]) instead of position `pos` "
        "of every prompt ([:, pos])",
        "returned_clean_slice": "you returned only the clean slice [batch, d_model]; return the "
        "whole (patched) activation, [batch, pos, d_model]",
    },
)


@one_thread()
def test_patch_residual_component(patch_residual_component_fn: Callable) -> None:
    """Check the hook ``patch_residual_component(corrupted_residual_component, hook, pos, clean_cache)``."""
    ex, b = RESID_HOOK, ioi_batch()
    hook = b.model.blocks[1].hook_resid_pre
    clean = b.clean_cache[hook.name]
    corrupted = b.corrupted_cache[hook.name]
    pos = 3
    call = (
        f"patch_residual_component(corrupted_resid [{', '.join(map(str, corrupted.shape))}], hook "
        f"(name {hook.name!r}), pos={pos}, clean_cache)  [{b.describe()}]"
    )
    given = corrupted.clone()
    got = _hook_result(
        ex.call(
            patch_residual_component_fn, given, hook, pos, fresh_cache(b.clean_cache), call=call
        ),
        given,
    )
    expected = corrupted.clone()
    expected[:, pos] = clean[:, pos]
    batch_axis = corrupted.clone()
    batch_axis[pos] = clean[pos]
    mistakes = {
        "patched_all_positions": lambda: clean,
        "indexed_batch_axis": lambda: batch_axis,
        "returned_clean_slice": lambda: clean[:, pos],
    }
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes)
    ex.passed()


HEAD_HOOK = exercise(
    "patch_head_vector",
    hint="the activation is [batch, pos, head, d_head]: copy clean_cache[hook.name][:, :, "
    "head_index] into it and return it.",
    diagnoses={
        "indexed_position_axis": "you replaced position `head_index` ([:, head_index]); heads are "
        "the third axis of z/q/k/v: [:, :, head_index]",
        "patched_all_heads": "every head was replaced; patch only head `head_index`",
    },
)


@one_thread()
def test_patch_head_vector(patch_head_vector_fn: Callable) -> None:
    """Check the hook ``patch_head_vector(corrupted_head_vector, hook, head_index, clean_cache)``."""
    ex, b = HEAD_HOOK, ioi_batch()
    hook = b.model.blocks[1].attn.hook_z
    clean, corrupted = b.clean_cache[hook.name], b.corrupted_cache[hook.name]
    head = 2
    call = (
        f"patch_head_vector(corrupted_z [{', '.join(map(str, corrupted.shape))}], hook (name "
        f"{hook.name!r}), head_index={head}, clean_cache)  [{b.describe()}]"
    )
    given = corrupted.clone()
    got = _hook_result(
        ex.call(patch_head_vector_fn, given, hook, head, fresh_cache(b.clean_cache), call=call),
        given,
    )
    expected = corrupted.clone()
    expected[:, :, head] = clean[:, :, head]
    wrong_axis = corrupted.clone()
    wrong_axis[:, head] = clean[:, head]
    mistakes = {"indexed_position_axis": lambda: wrong_axis, "patched_all_heads": lambda: clean}
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes)
    ex.passed()


PATTERN_HOOK = exercise(
    "patch_attn_patterns",
    hint="a pattern is [batch, head, query_pos, key_pos]: copy clean_cache[hook.name][:, "
    "head_index] into it and return it.",
    diagnoses={
        "indexed_wrong_axis": "you indexed the pattern like z ([:, :, head_index]); in a "
        "pattern the head is the second axis: [:, head_index]",
        "patched_all_heads": "every head's pattern was replaced; patch only head `head_index`",
    },
)


@one_thread()
def test_patch_attn_patterns(patch_attn_patterns_fn: Callable) -> None:
    """Check the hook ``patch_attn_patterns(corrupted_head_vector, hook, head_index, clean_cache)``."""
    ex, b = PATTERN_HOOK, ioi_batch()
    hook = b.model.blocks[2].attn.hook_pattern
    clean, corrupted = b.clean_cache[hook.name], b.corrupted_cache[hook.name]
    head = 1
    call = (
        f"patch_attn_patterns(corrupted_pattern [{', '.join(map(str, corrupted.shape))}], hook "
        f"(name {hook.name!r}), head_index={head}, clean_cache)  [{b.describe()}]"
    )
    given = corrupted.clone()
    got = _hook_result(
        ex.call(patch_attn_patterns_fn, given, hook, head, fresh_cache(b.clean_cache), call=call),
        given,
    )
    expected = corrupted.clone()
    expected[:, head] = clean[:, head]
    wrong_axis = corrupted.clone()
    wrong_axis[:, :, head] = clean[:, :, head]
    mistakes = {"indexed_wrong_axis": lambda: wrong_axis, "patched_all_heads": lambda: clean}
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes)
    ex.passed()


# ---- sweeps -----------------------------------------------------------------------------------

RESID_PRE = exercise(
    "get_act_patch_resid_pre",
    hint="for every layer and position: run the corrupted tokens with "
    "fwd_hooks=[(utils.get_act_name('resid_pre', layer), partial(patch_residual_component, "
    "pos=pos, clean_cache=clean_cache))] and store patching_metric(logits) in a [layer, pos] tensor.",
    diagnoses={
        "transposed": "the result is [pos, layer]; return [layer, pos]",
        "off_by_one_layer": "your row `layer` is the patch of resid_post (the stream *leaving* "
        "the block), which is resid_pre of layer + 1; patch 'resid_pre' of `layer`",
        "patched_all_positions": "every row is constant along pos: you patched all positions "
        "at once instead of one position per column",
    },
)


@one_thread()
def test_get_act_patch_resid_pre(get_act_patch_resid_pre_fn: Callable) -> None:
    """Check ``get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, patching_metric) -> [layer, pos]``."""
    ex, b = RESID_PRE, _patching_batch()
    call = _patch_call("get_act_patch_resid_pre", b)
    got = _run_sweep(ex, get_act_patch_resid_pre_fn, b, call)
    expected = patching.get_act_patch_resid_pre(
        b.model, b.abc.toks, b.clean_cache, _metric(b)
    ).cpu()
    n_pos = expected.shape[1]
    mistakes = {
        "transposed": lambda: expected.T,
        "off_by_one_layer": lambda: _sweep_effect(b, "resid_post", positions="each"),
        "patched_all_positions": lambda: _sweep_effect(b, "resid_pre")[:, None].expand(-1, n_pos),
    }
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-3)
    ex.passed()


HEAD_OUT = exercise(
    "get_act_patch_attn_head_out_all_pos",
    hint="for every layer and head: run the corrupted tokens with fwd_hooks=[(utils.get_act_name"
    "('z', layer), partial(patch_head_vector, head_index=head, clean_cache=clean_cache))] and "
    "store patching_metric(logits) in a [layer, head] tensor.",
    diagnoses={
        "transposed": "the result is [head, layer]; return [layer, head]",
        "patched_all_heads": "every row is constant along head: you patched the whole layer's z "
        "for each head",
        "patched_last_position_only": "you patched each head at the last position only; patch "
        "it at every position",
    },
)


@one_thread()
def test_get_act_patch_attn_head_out_all_pos(
    get_act_patch_attn_head_out_all_pos_fn: Callable,
) -> None:
    """Check ``get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, clean_cache, patching_metric) -> [layer, head]``."""
    ex, b = HEAD_OUT, _patching_batch()
    call = _patch_call("get_act_patch_attn_head_out_all_pos", b)
    got = _run_sweep(ex, get_act_patch_attn_head_out_all_pos_fn, b, call)
    expected = patching.get_act_patch_attn_head_out_all_pos(
        b.model, b.abc.toks, b.clean_cache, _metric(b)
    ).cpu()
    n_heads = expected.shape[1]
    mistakes = {
        "transposed": lambda: expected.T,
        "patched_all_heads": lambda: _sweep_effect(b, "z", heads="all")[:, None].expand(
            -1, n_heads
        ),
        "patched_last_position_only": lambda: _sweep_effect(b, "z", positions="last"),
    }
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-3)
    ex.passed()


EVERY = exercise(
    "get_act_patch_attn_head_all_pos_every",
    hint="stack five [layer, head] sweeps, in this order: output (z), query (q), key (k), "
    "value (v), pattern (use patch_attn_patterns for the last).",
    diagnoses={
        "wrong_component_order": "the rows are right but in the wrong order; stack output (z), "
        "q, k, v, pattern",
        "missing_component": "one of the five components is missing",
    },
)

EVERY_ORDER = ("z", "q", "k", "v", "pattern")


@one_thread()
def test_get_act_patch_attn_head_all_pos_every(
    get_act_patch_attn_head_all_pos_every_fn: Callable,
) -> None:
    """Check ``get_act_patch_attn_head_all_pos_every(...) -> [5, layer, head]`` (z, q, k, v, pattern)."""
    ex, b = EVERY, _patching_batch()
    call = _patch_call("get_act_patch_attn_head_all_pos_every", b)
    got = _run_sweep(ex, get_act_patch_attn_head_all_pos_every_fn, b, call)
    expected = patching.get_act_patch_attn_head_all_pos_every(
        b.model, b.abc.toks, b.clean_cache, _metric(b)
    ).cpu()

    def reordered():
        if not isinstance(got, Tensor) or got.shape != expected.shape:
            return None
        for order in itertools.permutations(range(len(EVERY_ORDER))):
            if torch.allclose(got.detach().float().cpu(), expected[list(order)], atol=1e-3):
                return expected[list(order)]
        return None

    def missing_one():
        if not isinstance(got, Tensor) or got.shape[0] != expected.shape[0] - 1:
            return None
        for drop in range(len(EVERY_ORDER)):
            kept = torch.cat([expected[:drop], expected[drop + 1 :]])
            if kept.shape == got.shape and torch.allclose(
                got.detach().float().cpu(), kept, atol=1e-3
            ):
                return kept
        return None

    mistakes = {"wrong_component_order": reordered, "missing_component": missing_one}
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-3)
    ex.passed()


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
    },
)


def _raw_metric(b: IOIBatch):
    # The raw logit difference, not the normalised metric: the normalised one is 0 on the
    # corrupted run, which would hide a forgotten baseline.
    return make_logit_diff_metric(b.answer_tokens, b.end)


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
    call = (
        "attribution_patch_attn_head_out_all_pos(model, clean_tokens, corrupted_tokens, "
        f"patching_metric)  where the metric is the mean logit difference at end  [{b.describe()}]"
    )
    got = ex.call(
        attribution_patch_attn_head_out_all_pos_fn,
        b.model,
        b.ds.toks.clone(),
        b.abc.toks.clone(),
        _raw_metric(b),
        call=call,
        model=b.model,
    )
    grid = patching.sweep(b.model, "z", b.ds.toks.shape[1])
    expected = patching.attribution_patching(
        b.model, b.ds.toks, b.abc.toks, _raw_metric(b), grid, mode="denoise"
    ).effect.cpu()
    corrupted_value = b.corrupted_logit_diff
    mistakes = {
        "change_not_value": lambda: expected - corrupted_value,
        "wrong_delta_sign": lambda: 2 * corrupted_value - expected,
        # gradient of the clean run, stepping from corrupted to clean values
        "gradient_in_clean_run": lambda: (
            corrupted_value - _attribution_change(b, b.ds.toks, b.corrupted_cache)
        ),
    }
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-3)
    ex.passed()

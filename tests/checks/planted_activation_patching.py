"""Section 3 answers: the metric, hook functions, sweeps and attribution patching."""

from __future__ import annotations

import contextlib
from functools import partial

import torch
import transformer_lens.patching as tl_patching
from transformer_lens.utilities import get_act_name

from tests.checks.corpus import correct, variant, wrong


def _final(logits, positions):
    if positions is None:
        return logits[:, -1]
    return logits[torch.arange(logits.shape[0]), positions]


def _diff(logits, answer_tokens, positions, reduce="mean"):
    picked = _final(logits, positions).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return {"mean": diff.mean(), "sum": diff.sum(), "none": diff}[reduce]


# ---- ioi_metric --------------------------------------------------------------------------------


@wrong("ioi_metric", "not_normalised")
def metric_raw(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    """The raw logit difference."""
    return _diff(logits, answer_tokens, positions)


@wrong("ioi_metric", "baselines_swapped")
def metric_swapped(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    """The two baselines exchanged."""
    d = _diff(logits, answer_tokens, positions)
    return (d - clean_logit_diff) / (corrupted_logit_diff - clean_logit_diff)


@wrong("ioi_metric", "forgot_corrupted_baseline")
def metric_over_clean(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """d / clean."""
    return _diff(logits, answer_tokens, positions) / clean_logit_diff


@wrong("ioi_metric", "wrong_denominator")
def metric_bad_denominator(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """(d - corrupted) / clean."""
    d = _diff(logits, answer_tokens, positions)
    return (d - corrupted_logit_diff) / clean_logit_diff


@wrong("ioi_metric", "ignored_positions")
def metric_last(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    """Last column."""
    d = _diff(logits, answer_tokens, None)
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "returned_per_prompt")
def metric_per_prompt(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """No mean."""
    d = _diff(logits, answer_tokens, positions, "none")
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "sum_not_mean")
def metric_sum(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    """Sum of the differences, then normalised."""
    d = _diff(logits, answer_tokens, positions, "sum")
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "batch_by_batch_indexing")
def metric_batch_by_batch(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """final[:, answer_tokens[:, 0]]: every prompt's answers for every prompt."""
    final = _final(logits, positions)
    d = (final[:, answer_tokens[:, 0]] - final[:, answer_tokens[:, 1]]).mean()
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "one_baseline_swapped")
def metric_minus_clean(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """(d - clean) / (clean - corrupted): the numerator's baseline mixed up."""
    d = _diff(logits, answer_tokens, positions)
    return (d - clean_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "wrong_sign")
def metric_s_minus_io(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """The answer columns read as (S, IO)."""
    s_tok, io_tok = answer_tokens[:, 0], answer_tokens[:, 1]
    final = _final(logits, positions)
    rows = torch.arange(final.shape[0])
    d = (final[rows, io_tok] - final[rows, s_tok]).mean()
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "probabilities_not_logits")
def metric_probs(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    """Softmax first: a difference of probabilities."""
    d = _diff(logits.softmax(dim=-1), answer_tokens, positions)
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "not_divided")
def metric_not_divided(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """Only the corrupted baseline subtracted."""
    return _diff(logits, answer_tokens, positions) - corrupted_logit_diff


@wrong("ioi_metric", "first_prompt_answers")
def metric_first_answers(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """answer_tokens[0] where answer_tokens[:, 0] was meant."""
    io_tok, s_tok = answer_tokens[0]
    final = _final(logits, positions)
    d = (final[:, io_tok] - final[:, s_tok]).mean()
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "position_off_by_one")
def metric_before_end(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    """positions - 1: 'the token before the answer'."""
    d = _diff(logits, answer_tokens, None if positions is None else positions - 1)
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@correct("ioi_metric", "log-probabilities: log_softmax shifts both logits of a prompt alike")
def metric_log_probs(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    d = _diff(logits.log_softmax(dim=-1), answer_tokens, positions)
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong(
    "ioi_metric",
    "not_differentiable",
    "returns a python float: right value, but attribution patching cannot take its gradient",
)
def metric_float(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    d = float(_diff(logits, answer_tokens, positions))
    return (d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "abs_denominator", "divides by abs(clean - corrupted), to be safe")
def metric_abs_gap(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    d = _diff(logits, answer_tokens, positions)
    return (d - corrupted_logit_diff) / abs(clean_logit_diff - corrupted_logit_diff)


@correct("ioi_metric", "one value per prompt rescaled, then averaged (the same, as it is linear)")
def metric_rescale_each(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    rows = torch.arange(logits.shape[0])
    final = logits[:, -1] if positions is None else logits[rows, positions]
    per = final[rows, answer_tokens[:, 0]] - final[rows, answer_tokens[:, 1]]
    return ((per - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)).mean()


@correct("ioi_metric", "the library's logit difference, in float64")
def metric_library(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    from ioi.metrics import logits_to_ave_logit_diff

    d = logits_to_ave_logit_diff(logits.double(), answer_tokens, positions=positions)
    return ((d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)).float()


# ---- hook functions ----------------------------------------------------------------------------


@wrong("patch_residual_component", "mutated_input")
def resid_writes_into_cache(corrupted_residual_component, hook, pos, clean_cache):
    """Builds the answer inside the clean cache's own tensor."""
    clean = clean_cache[hook.name]
    keep = torch.ones(clean.shape[1], dtype=torch.bool)
    keep[pos] = False
    clean[:, keep] = corrupted_residual_component[:, keep]
    return clean


@wrong("patch_residual_component", "ignored_pos")
def resid_pos_three(corrupted_residual_component, hook, pos, clean_cache):
    """Position 3 hard-coded."""
    corrupted_residual_component[:, 3] = clean_cache[hook.name][:, 3]
    return corrupted_residual_component


@wrong("patch_residual_component", "ignored_hook_name")
def resid_layer_one(corrupted_residual_component, hook, pos, clean_cache):
    """Reads blocks.1.hook_resid_pre whatever the hook."""
    corrupted_residual_component[:, pos] = clean_cache["blocks.1.hook_resid_pre"][:, pos]
    return corrupted_residual_component


@wrong("patch_residual_component", "no_effect")
def resid_clone_not_returned(corrupted_residual_component, hook, pos, clean_cache):
    """Patches a clone and forgets to return it."""
    patched = corrupted_residual_component.clone()
    patched[:, pos] = clean_cache[hook.name][:, pos]


@wrong("patch_residual_component", "position_off_by_one")
def resid_pos_plus_one(corrupted_residual_component, hook, pos, clean_cache):
    """pos + 1."""
    corrupted_residual_component[:, pos + 1] = clean_cache[hook.name][:, pos + 1]
    return corrupted_residual_component


@wrong("patch_residual_component", "indexed_batch_axis")
def resid_batch_axis(corrupted_residual_component, hook, pos, clean_cache):
    """[pos] instead of [:, pos]."""
    corrupted_residual_component[pos] = clean_cache[hook.name][pos]
    return corrupted_residual_component


@wrong("patch_residual_component", "returned_clean_slice")
def resid_clean_slice(corrupted_residual_component, hook, pos, clean_cache):
    """Returns only the clean slice."""
    return clean_cache[hook.name][:, pos].clone()


@wrong("patch_residual_component", "patched_all_positions")
def resid_all(corrupted_residual_component, hook, pos, clean_cache):
    """Every position."""
    return clean_cache[hook.name].clone()


@correct("patch_residual_component", "in place, returning None")
def resid_in_place(corrupted_residual_component, hook, pos, clean_cache):
    corrupted_residual_component[:, pos, :] = clean_cache[hook.name][:, pos, :]


@correct("patch_residual_component", "torch.where with a position mask, new tensor")
def resid_where(corrupted_residual_component, hook, pos, clean_cache):
    mask = torch.zeros(corrupted_residual_component.shape[1], dtype=torch.bool)
    mask[pos] = True
    return torch.where(mask[None, :, None], clean_cache[hook.name], corrupted_residual_component)


@wrong("patch_head_vector", "mutated_input")
def head_writes_into_cache(corrupted_head_vector, hook, head_index, clean_cache):
    """Copies the other heads into the clean cache's tensor and returns it."""
    clean = clean_cache[hook.name]
    others = [h for h in range(clean.shape[2]) if h != head_index]
    clean[:, :, others] = corrupted_head_vector[:, :, others]
    return clean


@wrong("patch_head_vector", "ignored_head_index")
def head_two(corrupted_head_vector, hook, head_index, clean_cache):
    """Head 2 hard-coded."""
    corrupted_head_vector[:, :, 2] = clean_cache[hook.name][:, :, 2]
    return corrupted_head_vector


@wrong("patch_head_vector", "indexed_position_axis")
def head_position_axis(corrupted_head_vector, hook, head_index, clean_cache):
    """[:, head_index]."""
    corrupted_head_vector[:, head_index] = clean_cache[hook.name][:, head_index]
    return corrupted_head_vector


@wrong("patch_head_vector", "patched_all_heads")
def head_all(corrupted_head_vector, hook, head_index, clean_cache):
    """Every head, in place."""
    corrupted_head_vector[:] = clean_cache[hook.name]


@wrong("patch_head_vector", "no_effect")
def head_reads_own_input(corrupted_head_vector, hook, head_index, clean_cache):
    """Copies the activation onto itself (the corrupted value)."""
    corrupted_head_vector[:, :, head_index] = corrupted_head_vector[:, :, head_index].clone()
    return corrupted_head_vector


@wrong("patch_head_vector", "indexed_batch_axis")
def head_batch_axis(corrupted_head_vector, hook, head_index, clean_cache):
    """[head_index]: prompt number head_index."""
    corrupted_head_vector[head_index] = clean_cache[hook.name][head_index]
    return corrupted_head_vector


@wrong("patch_head_vector", "returned_clean_slice")
def head_returns_slice(corrupted_head_vector, hook, head_index, clean_cache):
    """Returns the clean head alone."""
    return clean_cache[hook.name][:, :, head_index]


@wrong("patch_head_vector", "patched_one_position")
def head_last_position(corrupted_head_vector, hook, head_index, clean_cache):
    """Only the last position, as if it were the by-position exercise."""
    corrupted_head_vector[:, -1, head_index] = clean_cache[hook.name][:, -1, head_index]
    return corrupted_head_vector


@wrong("patch_head_vector", "inverted_patch")
def head_into_clean(corrupted_head_vector, hook, head_index, clean_cache):
    """Starts from the clean activation and copies the corrupted head into it."""
    patched = clean_cache[hook.name].clone()
    patched[:, :, head_index] = corrupted_head_vector[:, :, head_index]
    return patched


@wrong("patch_head_vector", "added_not_replaced")
def head_plus_equals(corrupted_head_vector, hook, head_index, clean_cache):
    """+= where = was meant."""
    corrupted_head_vector[:, :, head_index] += clean_cache[hook.name][:, :, head_index]
    return corrupted_head_vector


@wrong("patch_head_vector", "mean_over_prompts")
def head_mean_clean(corrupted_head_vector, hook, head_index, clean_cache):
    """The clean head averaged over prompts, as in mean ablation."""
    corrupted_head_vector[:, :, head_index] = clean_cache[hook.name][:, :, head_index].mean(0)
    return corrupted_head_vector


@wrong("patch_head_vector", "zeroed_head")
def head_zeroed(corrupted_head_vector, hook, head_index, clean_cache):
    """Zero ablation instead of patching."""
    corrupted_head_vector[:, :, head_index] = 0.0
    return corrupted_head_vector


@wrong("patch_head_vector", "ignored_hook_name")
def head_layer_one(corrupted_head_vector, hook, head_index, clean_cache):
    """Reads blocks.1.attn.hook_z whatever the hook."""
    corrupted_head_vector[:, :, head_index] = clean_cache["blocks.1.attn.hook_z"][:, :, head_index]
    return corrupted_head_vector


@correct("patch_head_vector", "index_copy into a clone")
def head_index_copy(corrupted_head_vector, hook, head_index, clean_cache):
    index = torch.tensor([head_index])
    return corrupted_head_vector.index_copy(2, index, clean_cache[hook.name][:, :, index])


@wrong("patch_attn_patterns", "indexed_wrong_axis")
def pattern_z_axis(corrupted_head_vector, hook, head_index, clean_cache):
    """[:, :, head_index] like z."""
    corrupted_head_vector[:, :, head_index] = clean_cache[hook.name][:, :, head_index]
    return corrupted_head_vector


@wrong("patch_attn_patterns", "patched_all_heads")
def pattern_all(corrupted_head_vector, hook, head_index, clean_cache):
    """Every head."""
    return clean_cache[hook.name].clone()


@wrong("patch_attn_patterns", "ignored_head_index")
def pattern_head_one(corrupted_head_vector, hook, head_index, clean_cache):
    """Head 1 hard-coded."""
    corrupted_head_vector[:, 1] = clean_cache[hook.name][:, 1]
    return corrupted_head_vector


@wrong("patch_attn_patterns", "mutated_input")
def pattern_into_cache(corrupted_head_vector, hook, head_index, clean_cache):
    """Writes the other heads into the clean cache's pattern."""
    clean = clean_cache[hook.name]
    others = [h for h in range(clean.shape[1]) if h != head_index]
    clean[:, others] = corrupted_head_vector[:, others]
    return clean


@wrong("patch_attn_patterns", "ignored_hook_name")
def pattern_layer_two(corrupted_head_vector, hook, head_index, clean_cache):
    """Reads blocks.2.attn.hook_pattern whatever the hook."""
    name = "blocks.2.attn.hook_pattern"
    corrupted_head_vector[:, head_index] = clean_cache[name][:, head_index]
    return corrupted_head_vector


@correct("patch_attn_patterns", "a clone patched and returned")
def pattern_clone(corrupted_head_vector, hook, head_index, clean_cache):
    out = corrupted_head_vector.clone()
    out[:, head_index] = clean_cache[hook.name][:, head_index]
    return out


# ---- sweeps ------------------------------------------------------------------------------------


def _resid_hook(act, hook, pos, cache):
    act[:, pos] = cache[hook.name][:, pos]
    return act


def _head_hook(act, hook, head, cache, last_only=False):
    if last_only:
        act[:, -1, head] = cache[hook.name][:, -1, head]
    else:
        act[:, :, head] = cache[hook.name][:, :, head]
    return act


def _pattern_hook(act, hook, head, cache):
    act[:, head] = cache[hook.name][:, head]
    return act


def _resid_sweep(model, tokens, cache, metric, *, name="resid_pre", layers=None, all_pos=False):
    n_layers = model.cfg.n_layers
    out = torch.zeros(n_layers, tokens.shape[1])
    with torch.inference_mode():
        for layer in range(n_layers)[:layers]:
            for pos in range(tokens.shape[1]):
                where = slice(None) if all_pos else pos
                hook = partial(_resid_hook, pos=where, cache=cache)
                logits = model.run_with_hooks(tokens, fwd_hooks=[(get_act_name(name, layer), hook)])
                out[layer, pos] = metric(logits)
    return out


variant(
    "get_act_patch_resid_pre",
    "missed_last_layer",
    _resid_sweep,
    "range(n_layers - 1).",
    fn_name="resid_pre_range_minus_one",
    layers=-1,
)


variant(
    "get_act_patch_resid_pre",
    "off_by_one_layer",
    _resid_sweep,
    "resid_post.",
    fn_name="resid_pre_patches_post",
    name="resid_post",
)


@wrong("get_act_patch_resid_pre", "no_effect")
def resid_pre_from_corrupted(model, corrupted_tokens, clean_cache, patching_metric):
    """Patches from a cache of the corrupted run itself."""
    _, own = model.run_with_cache(corrupted_tokens)
    return _resid_sweep(model, corrupted_tokens, own, patching_metric)


@wrong("get_act_patch_resid_pre", "transposed")
def resid_pre_transposed(model, corrupted_tokens, clean_cache, patching_metric):
    """[pos, layer]."""
    return _resid_sweep(model, corrupted_tokens, clean_cache, patching_metric).T


variant(
    "get_act_patch_resid_pre",
    "patched_all_positions",
    _resid_sweep,
    "Every position at once.",
    fn_name="resid_pre_all_positions",
    all_pos=True,
)


@wrong("get_act_patch_resid_pre", "mutated_input")
def resid_pre_patches_cache(model, corrupted_tokens, clean_cache, patching_metric):
    """The hook writes the corrupted run into the clean cache and returns that tensor."""

    def hook(act, hook, pos):
        clean = clean_cache[hook.name]
        others = [p for p in range(act.shape[1]) if p != pos]
        clean[:, others] = act[:, others]
        return clean

    out = torch.zeros(model.cfg.n_layers, corrupted_tokens.shape[1])
    for layer in range(model.cfg.n_layers):
        for pos in range(corrupted_tokens.shape[1]):
            logits = model.run_with_hooks(
                corrupted_tokens,
                fwd_hooks=[(get_act_name("resid_pre", layer), partial(hook, pos=pos))],
            )
            out[layer, pos] = patching_metric(logits)
    return out


@wrong("get_act_patch_resid_pre", "hooks_left")
def resid_pre_permanent_hooks(model, corrupted_tokens, clean_cache, patching_metric):
    """add_hook without removing the hook."""
    out = torch.zeros(model.cfg.n_layers, corrupted_tokens.shape[1])
    for layer in range(model.cfg.n_layers):
        for pos in range(corrupted_tokens.shape[1]):
            model.add_hook(
                get_act_name("resid_pre", layer), partial(_resid_hook, pos=pos, cache=clean_cache)
            )
            out[layer, pos] = patching_metric(model(corrupted_tokens))
    return out


@correct("get_act_patch_resid_pre", "TransformerLens's own function")
def resid_pre_tl(model, corrupted_tokens, clean_cache, patching_metric):
    return tl_patching.get_act_patch_resid_pre(
        model, corrupted_tokens, clean_cache, patching_metric
    )


@correct("get_act_patch_resid_pre", "hooks attached with the model.hooks context")
def resid_pre_context(model, corrupted_tokens, clean_cache, patching_metric):
    out = torch.empty(model.cfg.n_layers, corrupted_tokens.shape[1])
    for layer in range(model.cfg.n_layers):
        for pos in range(corrupted_tokens.shape[1]):
            hook = partial(_resid_hook, pos=pos, cache=clean_cache)
            with torch.no_grad(), model.hooks(fwd_hooks=[(get_act_name("resid_pre", layer), hook)]):
                out[layer, pos] = patching_metric(model(corrupted_tokens))
    return out


def _head_sweep(
    model, tokens, cache, metric, *, name="z", layers=None, all_heads=False, last_only=False
):
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers)[:layers]:
            for head in range(model.cfg.n_heads):
                where = slice(None) if all_heads else head
                hook = partial(_head_hook, head=where, cache=cache, last_only=last_only)
                if name == "result":
                    hook_name = f"blocks.{layer}.attn.hook_result"
                else:
                    hook_name = get_act_name(name, layer)
                out[layer, head] = metric(
                    model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])
                )
    return out


variant(
    "get_act_patch_attn_head_out_all_pos",
    "no_effect",
    _head_sweep,
    "Hooks hook_result, which never fires without use_attn_result (and is not in the cache).",
    fn_name="head_out_hook_result",
    name="result",
)


variant(
    "get_act_patch_attn_head_out_all_pos",
    "missed_last_layer",
    _head_sweep,
    "range(n_layers - 1).",
    fn_name="head_out_range_minus_one",
    layers=-1,
)


variant(
    "get_act_patch_attn_head_out_all_pos",
    "patched_other_component",
    _head_sweep,
    "Patches q instead of z.",
    fn_name="head_out_patches_q",
    name="q",
)


variant(
    "get_act_patch_attn_head_out_all_pos",
    "patched_all_heads",
    _head_sweep,
    "The whole layer for each head.",
    fn_name="head_out_whole_layer",
    all_heads=True,
)


variant(
    "get_act_patch_attn_head_out_all_pos",
    "no_effect",
    _head_sweep,
    "Last position only: the last column is after every prompt's end, so nothing changes.",
    fn_name="head_out_last",
    last_only=True,
)


@wrong("get_act_patch_attn_head_out_all_pos", "transposed")
def head_out_transposed(model, corrupted_tokens, clean_cache, patching_metric):
    """[head, layer]."""
    return _head_sweep(model, corrupted_tokens, clean_cache, patching_metric).T


@correct("get_act_patch_attn_head_out_all_pos", "TransformerLens's own function")
def head_out_tl(model, corrupted_tokens, clean_cache, patching_metric):
    return tl_patching.get_act_patch_attn_head_out_all_pos(
        model, corrupted_tokens, clean_cache, patching_metric
    )


@correct("get_act_patch_attn_head_out_all_pos", "patches the heads' result with use_attn_result on")
def head_out_result_switched_on(model, corrupted_tokens, clean_cache, patching_metric):
    model.set_use_attn_result(True)
    try:
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        # clean results from the clean z: z @ W_O, computed once per layer
        for layer in range(model.cfg.n_layers):
            result = torch.einsum("bphd,hdm->bphm", clean_cache["z", layer], model.W_O[layer])
            for head in range(model.cfg.n_heads):

                def hook(act, hook, head=head, result=result):
                    act[:, :, head] = result[:, :, head]
                    return act

                with torch.no_grad():
                    logits = model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_result", hook)]
                    )
                out[layer, head] = patching_metric(logits)
        return out
    finally:
        model.set_use_attn_result(False)


def _every(
    model,
    tokens,
    cache,
    metric,
    *,
    order=("z", "q", "k", "v", "pattern"),
    pattern_hook=None,
    sizes=None,
    short_layers=False,
    short_heads=False,
    minus_baseline=False,
    stack_dim=0,
):
    n_layers, n_heads = sizes or (model.cfg.n_layers, model.cfg.n_heads)
    with torch.no_grad():
        baseline = float(metric(model(tokens))) if minus_baseline else 0.0
    rows = []
    for component in order:
        grid = torch.zeros(n_layers, n_heads)
        for layer in range(n_layers - short_layers):
            for head in range(n_heads - short_heads):
                if component in ("pattern", "attn_scores"):
                    fn = pattern_hook or _pattern_hook
                    hook = partial(fn, head=head, cache=cache)
                else:
                    hook = partial(_head_hook, head=head, cache=cache)
                with torch.no_grad():
                    logits = model.run_with_hooks(
                        tokens, fwd_hooks=[(get_act_name(component, layer), hook)]
                    )
                grid[layer, head] = metric(logits) - baseline
        rows.append(grid)
    return torch.stack(rows, dim=stack_dim)


variant(
    "get_act_patch_attn_head_all_pos_every",
    "wrong_component_order",
    _every,
    "q, k, v, z, pattern.",
    fn_name="every_qkv_first",
    order=("q", "k", "v", "z", "pattern"),
)


variant(
    "get_act_patch_attn_head_all_pos_every",
    "missing_component",
    _every,
    "Forgets the pattern.",
    fn_name="every_no_pattern",
    order=("z", "q", "k", "v"),
)


@wrong("get_act_patch_attn_head_all_pos_every", "component_row_wrong")
def every_pattern_like_z(model, corrupted_tokens, clean_cache, patching_metric):
    """Patches the pattern with the z hook (head on the third axis)."""
    return _every(
        model, corrupted_tokens, clean_cache, patching_metric, pattern_hook=_head_hook_for_pattern
    )


def _head_hook_for_pattern(act, hook, head, cache):
    act[:, :, head] = cache[hook.name][:, :, head]
    return act


@correct("get_act_patch_attn_head_all_pos_every", "TransformerLens's own function")
def every_tl(model, corrupted_tokens, clean_cache, patching_metric):
    return tl_patching.get_act_patch_attn_head_all_pos_every(
        model, corrupted_tokens, clean_cache, patching_metric
    )


# ---- attribution patching ----------------------------------------------------------------------


def _attribution(
    model,
    clean_tokens,
    corrupted_tokens,
    metric,
    *,
    base="corrupted",
    sign=1.0,
    add_value=True,
    reduce=(0, 1, 3),
    grads_enabled=True,
    layers=None,
    leaves=False,
):
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)[:layers]]
    run, other = (
        (corrupted_tokens, clean_tokens)
        if base == "corrupted"
        else (clean_tokens, corrupted_tokens)
    )
    with torch.no_grad():
        _, other_cache = model.run_with_cache(
            clean_tokens if base == "corrupted" else corrupted_tokens
        )
    saved = {}

    def save(act, hook):
        saved[hook.name] = act.detach().requires_grad_(True) if leaves else act
        return saved[hook.name]

    with torch.enable_grad() if grads_enabled else contextlib.nullcontext():
        with model.hooks(fwd_hooks=[(n, save) for n in names]):
            value = metric(model(run))
        grads = torch.autograd.grad(value, [saved[n] for n in names])
    if base == "corrupted":
        deltas = [other_cache[n] - saved[n].detach() for n in names]
    else:  # gradient in the clean run, step from corrupted to clean
        deltas = [saved[n].detach() - other_cache[n] for n in names]
    est = torch.stack(
        [
            (sign * d * g).sum(reduce) if reduce else (sign * d * g)
            for d, g in zip(deltas, grads, strict=True)
        ]
    )
    if base == "noise":  # the clean run's value, a step towards the corrupted z
        return value.detach() - est
    if base != "corrupted":
        with torch.no_grad():
            corrupted_value = metric(model(corrupted_tokens))
        return corrupted_value + est
    if layers is not None:  # a loop over range(n_layers)[:layers] into a zero grid
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        out[:layers] = value.detach() + est
        return out
    return value.detach() + est if add_value else est


variant(
    "attribution_patch_attn_head_out_all_pos",
    "hard_coded_size",
    _attribution,
    "The toy's layers written in: range(3), into a grid of the model's size.",
    fn_name="attribution_toy_layers",
    layers=3,
)
variant(
    "attribution_patch_attn_head_out_all_pos",
    "change_not_value",
    _attribution,
    "Only the change.",
    fn_name="attribution_change",
    add_value=False,
)


variant(
    "attribution_patch_attn_head_out_all_pos",
    "wrong_delta_sign",
    _attribution,
    "corrupted - clean.",
    fn_name="attribution_sign",
    sign=-1.0,
)


variant(
    "attribution_patch_attn_head_out_all_pos",
    "gradient_in_clean_run",
    _attribution,
    "Gradient of the clean run.",
    fn_name="attribution_clean_gradient",
    base="clean",
)


@wrong(
    "attribution_patch_attn_head_out_all_pos",
    "absolute_change",
    "each head's estimated change made positive before the corrupted metric is added",
)
def attribution_abs_change(model, clean_tokens, corrupted_tokens, patching_metric):
    with torch.no_grad():
        base = patching_metric(model(corrupted_tokens))
    change = _attribution(model, clean_tokens, corrupted_tokens, patching_metric, add_value=False)
    return base + torch.abs(change)


variant(
    "attribution_patch_attn_head_out_all_pos",
    "gradients_off",
    _attribution,
    "No torch.enable_grad(): in the notebook the backward pass finds no graph.",
    fn_name="attribution_no_enable_grad",
    grads_enabled=False,
)
variant(
    "attribution_patch_attn_head_out_all_pos",
    "noising_estimate",
    _attribution,
    "The clean run's metric plus (corrupted - clean) * the clean run's gradient.",
    fn_name="attribution_noising",
    base="noise",
)
variant(
    "attribution_patch_attn_head_out_all_pos",
    "detached_leaves",
    _attribution,
    "Every layer's z replaced by a detached leaf: later leaves cut the earlier heads' paths.",
    fn_name="attribution_detached_leaves",
    leaves=True,
)
variant(
    "attribution_patch_attn_head_out_all_pos",
    "missed_last_layer",
    _attribution,
    "range(n_layers - 1) into a grid of zeros.",
    fn_name="attribution_missed_last_layer",
    layers=-1,
)


@correct(
    "attribution_patch_attn_head_out_all_pos",
    "zero probes added at every hook_z, as the library does; both caches by names_filter",
)
def attribution_zero_probes(model, clean_tokens, corrupted_tokens, patching_metric):
    def is_z(name):
        return name.endswith("attn.hook_z")

    with torch.no_grad():
        _, clean = model.run_with_cache(clean_tokens, names_filter=is_z)
        _, corrupted = model.run_with_cache(corrupted_tokens, names_filter=is_z)
    probes = {}

    def probe(act, hook):
        probes[hook.layer()] = torch.zeros_like(act, requires_grad=True)
        return act + probes[hook.layer()]

    with torch.enable_grad(), model.hooks(fwd_hooks=[(is_z, probe)]):
        value = patching_metric(model(corrupted_tokens))
        grads = torch.autograd.grad(value, [probes[i] for i in range(model.cfg.n_layers)])
    rows = [
        torch.einsum("bphd,bphd->h", clean["z", i] - corrupted["z", i], g)
        for i, g in enumerate(grads)
    ]
    return torch.stack(rows) + value.item()


@correct(
    "attribution_patch_attn_head_out_all_pos", "gradients read from tensor hooks (.register_hook)"
)
def attribution_tensor_hooks(model, clean_tokens, corrupted_tokens, patching_metric):
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, clean = model.run_with_cache(clean_tokens)
    acts, grads = {}, {}

    def save(act, hook):
        acts[hook.name] = act.detach()
        act.register_hook(lambda g, name=hook.name: grads.__setitem__(name, g))

    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, save) for n in names]):
        value = patching_metric(model(corrupted_tokens))
        value.backward()
    model.zero_grad(set_to_none=True)
    return value.detach() + torch.stack(
        [((clean[n] - acts[n]) * grads[n]).sum((0, 1, 3)) for n in names]
    )


# ---- by position and block_every ---------------------------------------------------------------


def _by_pos(
    model,
    tokens,
    cache,
    metric,
    *,
    layers=None,
    all_pos=False,
    all_heads=False,
    layout="lph",
    name="z",
):
    n_layers, n_pos, n_heads = model.cfg.n_layers, tokens.shape[1], model.cfg.n_heads
    out = torch.zeros(n_layers, n_pos, n_heads)
    for layer in range(n_layers)[:layers]:
        for pos in range(n_pos):
            for head in range(n_heads):

                def hook(act, hook, pos=pos, head=head):
                    p = slice(None) if all_pos else pos
                    h = slice(None) if all_heads else head
                    act[:, p, h] = cache[hook.name][:, p, h]
                    return act

                with torch.no_grad():
                    hook_name = (
                        f"blocks.{layer}.attn.hook_result"
                        if name == "result"
                        else get_act_name(name, layer)
                    )
                    logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])
                out[layer, pos, head] = metric(logits)
    return out.permute(0, 2, 1) if layout == "lhp" else out


variant(
    "get_act_patch_attn_head_out_by_pos",
    "wrong_layout",
    _by_pos,
    "[layer, head, pos].",
    fn_name="by_pos_layer_head_pos",
    layout="lhp",
)


variant(
    "get_act_patch_attn_head_out_by_pos",
    "patched_all_positions",
    _by_pos,
    "The head at every position, for each column.",
    fn_name="by_pos_every_position",
    all_pos=True,
)


variant(
    "get_act_patch_attn_head_out_by_pos",
    "patched_all_heads",
    _by_pos,
    "The whole layer at the position.",
    fn_name="by_pos_whole_layer",
    all_heads=True,
)


variant(
    "get_act_patch_attn_head_out_by_pos",
    "missed_last_layer",
    _by_pos,
    "range(n_layers - 1).",
    fn_name="by_pos_range_minus_one",
    layers=-1,
)


variant(
    "get_act_patch_attn_head_out_by_pos",
    "no_effect",
    _by_pos,
    "Hooks hook_result (never fires).",
    fn_name="by_pos_hook_result",
    name="result",
)


@correct("get_act_patch_attn_head_out_by_pos", "TransformerLens's own function")
def by_pos_tl(model, corrupted_tokens, clean_cache, patching_metric):
    return tl_patching.get_act_patch_attn_head_out_by_pos(
        model, corrupted_tokens, clean_cache, patching_metric
    )


def _block(model, tokens, cache, metric, order=("resid_pre", "attn_out", "mlp_out"), layers=None):
    rows = []
    for name in order:
        grid = torch.zeros(model.cfg.n_layers, tokens.shape[1])
        for layer in range(model.cfg.n_layers)[:layers]:
            for pos in range(tokens.shape[1]):
                hook = partial(_resid_hook, pos=pos, cache=cache)
                with torch.no_grad():
                    logits = model.run_with_hooks(
                        tokens, fwd_hooks=[(get_act_name(name, layer), hook)]
                    )
                grid[layer, pos] = metric(logits)
        rows.append(grid)
    return torch.stack(rows)


@wrong("get_act_patch_block_every", "wrong_component_order")
def block_attn_first(model, corrupted_tokens, clean_cache, patching_metric):
    """attn_out, mlp_out, resid_pre."""
    return _block(
        model, corrupted_tokens, clean_cache, patching_metric, ("attn_out", "mlp_out", "resid_pre")
    )


@wrong("get_act_patch_block_every", "missing_component")
def block_no_mlp(model, corrupted_tokens, clean_cache, patching_metric):
    """No mlp_out row."""
    return _block(model, corrupted_tokens, clean_cache, patching_metric, ("resid_pre", "attn_out"))


@wrong("get_act_patch_block_every", "resid_post_not_pre")
def block_resid_post(model, corrupted_tokens, clean_cache, patching_metric):
    """resid_post as the first row."""
    return _block(
        model, corrupted_tokens, clean_cache, patching_metric, ("resid_post", "attn_out", "mlp_out")
    )


variant(
    "get_act_patch_block_every",
    "missed_last_layer",
    _block,
    "range(n_layers - 1).",
    fn_name="block_range_minus_one",
    layers=-1,
)


@wrong("get_act_patch_block_every", "resid_post_not_pre")
def block_resid_mid(model, corrupted_tokens, clean_cache, patching_metric):
    """resid_mid as the first row."""
    return _block(
        model, corrupted_tokens, clean_cache, patching_metric, ("resid_mid", "attn_out", "mlp_out")
    )


@wrong("get_act_patch_block_every", "same_component_every_row")
def block_hook_name_fixed(model, corrupted_tokens, clean_cache, patching_metric):
    """The hook name written as resid_pre inside the loop over components."""
    rows = []
    for _component in ("resid_pre", "attn_out", "mlp_out"):
        grid = torch.zeros(model.cfg.n_layers, corrupted_tokens.shape[1])
        for layer in range(model.cfg.n_layers):
            for pos in range(corrupted_tokens.shape[1]):
                hook = partial(_resid_hook, pos=pos, cache=clean_cache)
                with torch.no_grad():
                    logits = model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name("resid_pre", layer), hook)]
                    )
                grid[layer, pos] = patching_metric(logits)
        rows.append(grid)
    return torch.stack(rows)


@wrong("get_act_patch_block_every", "wrong_layout")
def block_stacked_on_dim1(model, corrupted_tokens, clean_cache, patching_metric):
    """torch.stack(rows, dim=1): [layer, component, pos]."""
    return _block(model, corrupted_tokens, clean_cache, patching_metric).transpose(0, 1)


@wrong("get_act_patch_block_every", "patched_all_positions")
def block_all_positions(model, corrupted_tokens, clean_cache, patching_metric):
    """The hook copies the whole clean activation, whatever pos is."""
    n_pos = corrupted_tokens.shape[1]
    out = torch.zeros(3, model.cfg.n_layers, n_pos)
    for i, name in enumerate(("resid_pre", "attn_out", "mlp_out")):
        for layer in range(model.cfg.n_layers):
            for pos in range(n_pos):
                hook_name = get_act_name(name, layer)
                with torch.no_grad():
                    logits = model.run_with_hooks(
                        corrupted_tokens,
                        fwd_hooks=[(hook_name, lambda act, hook: clean_cache[hook.name])],
                    )
                out[i, layer, pos] = patching_metric(logits)
    return out


@wrong("get_act_patch_block_every", "missed_last_position")
def block_positions_minus_one(model, corrupted_tokens, clean_cache, patching_metric):
    """range(n_pos - 1): the last column stays 0."""
    n_pos = corrupted_tokens.shape[1]
    out = torch.zeros(3, model.cfg.n_layers, n_pos)
    for i, name in enumerate(("resid_pre", "attn_out", "mlp_out")):
        for layer in range(model.cfg.n_layers):
            for pos in range(n_pos - 1):
                hook = partial(_resid_hook, pos=pos, cache=clean_cache)
                with torch.no_grad():
                    logits = model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name(name, layer), hook)]
                    )
                out[i, layer, pos] = patching_metric(logits)
    return out


@wrong("get_act_patch_block_every", "hard_coded_size")
def block_toy_sizes(model, corrupted_tokens, clean_cache, patching_metric):
    """The toy's 3 layers written in."""
    rows = []
    for name in ("resid_pre", "attn_out", "mlp_out"):
        grid = torch.zeros(3, corrupted_tokens.shape[1])
        for layer in range(3):
            for pos in range(corrupted_tokens.shape[1]):
                hook = partial(_resid_hook, pos=pos, cache=clean_cache)
                with torch.no_grad():
                    logits = model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name(name, layer), hook)]
                    )
                grid[layer, pos] = patching_metric(logits)
        rows.append(grid)
    return torch.stack(rows)


@wrong("patch_residual_component", "assignment_shapes_differ")
def resid_clean_batch_index(corrupted_residual_component, hook, pos, clean_cache):
    """clean_cache[hook.name][pos] picks prompt `pos`, a [pos, d_model] slab."""
    corrupted_residual_component[:, pos] = clean_cache[hook.name][pos]
    return corrupted_residual_component


@wrong("patch_head_vector", "assignment_shapes_differ")
def head_clean_batch_index(corrupted_head_vector, hook, head_index, clean_cache):
    """clean_cache[hook.name][head_index] picks a prompt, not a head."""
    corrupted_head_vector[:, :, head_index] = clean_cache[hook.name][head_index]
    return corrupted_head_vector


@wrong("get_act_patch_block_every", "mutated_input")
def block_writes_cache(model, corrupted_tokens, clean_cache, patching_metric):
    """The hook returns the clean cache's tensor after writing the corrupted run into it."""

    def hook(act, hook, pos):
        clean = clean_cache[hook.name]
        others = [p for p in range(act.shape[1]) if p != pos]
        clean[:, others] = act[:, others]
        return clean

    rows = []
    for name in ("resid_pre", "attn_out", "mlp_out"):
        grid = torch.zeros(model.cfg.n_layers, corrupted_tokens.shape[1])
        for layer in range(model.cfg.n_layers):
            for pos in range(corrupted_tokens.shape[1]):
                with torch.no_grad():
                    logits = model.run_with_hooks(
                        corrupted_tokens,
                        fwd_hooks=[(get_act_name(name, layer), partial(hook, pos=pos))],
                    )
                grid[layer, pos] = patching_metric(logits)
        rows.append(grid)
    return torch.stack(rows)


@correct("get_act_patch_block_every", "TransformerLens's own function")
def block_tl(model, corrupted_tokens, clean_cache, patching_metric):
    return tl_patching.get_act_patch_block_every(
        model, corrupted_tokens, clean_cache, patching_metric
    )


@correct("get_act_patch_block_every", "one resid_pre-style sweep per hook point, stacked")
def block_stacked(model, corrupted_tokens, clean_cache, patching_metric):
    return _block(model, corrupted_tokens, clean_cache, patching_metric)


# ---- more hook and sweep mistakes ------------------------------------------------------------


@wrong("patch_residual_component", "inverted_patch")
def resid_corrupted_into_clean(corrupted_residual_component, hook, pos, clean_cache):
    """Starts from the clean activation and puts the corrupted position back."""
    out = clean_cache[hook.name].clone()
    out[:, pos] = corrupted_residual_component[:, pos]
    return out


@wrong("patch_residual_component", "added_not_replaced")
def resid_plus_equals(corrupted_residual_component, hook, pos, clean_cache):
    """+= instead of =."""
    corrupted_residual_component[:, pos] += clean_cache[hook.name][:, pos]
    return corrupted_residual_component


@wrong("patch_residual_component", "mean_over_prompts")
def resid_prompt_mean(corrupted_residual_component, hook, pos, clean_cache):
    """The clean position averaged over the batch."""
    corrupted_residual_component[:, pos] = clean_cache[hook.name][:, pos].mean(0, keepdim=True)
    return corrupted_residual_component


@wrong("patch_attn_patterns", "inverted_patch")
def pattern_corrupted_into_clean(corrupted_head_vector, hook, head_index, clean_cache):
    """Every other head's pattern comes from the clean run."""
    out = clean_cache[hook.name].clone()
    out[:, head_index] = corrupted_head_vector[:, head_index]
    return out


@wrong("patch_attn_patterns", "added_not_replaced")
def pattern_summed(corrupted_head_vector, hook, head_index, clean_cache):
    """Adds the clean pattern on top."""
    corrupted_head_vector[:, head_index] = (
        corrupted_head_vector[:, head_index] + clean_cache[hook.name][:, head_index]
    )
    return corrupted_head_vector


@wrong("patch_attn_patterns", "mean_over_prompts")
def pattern_batch_mean(corrupted_head_vector, hook, head_index, clean_cache):
    """One mean pattern for every prompt."""
    mean = clean_cache[hook.name][:, head_index].mean(dim=0)
    corrupted_head_vector[:, head_index] = mean
    return corrupted_head_vector


@wrong("patch_attn_patterns", "transposed_pattern")
def pattern_key_query(corrupted_head_vector, hook, head_index, clean_cache):
    """Reads the clean pattern as [key, query]."""
    corrupted_head_vector[:, head_index] = clean_cache[hook.name][:, head_index].mT
    return corrupted_head_vector


def _resid_sweep_short(model, corrupted_tokens, clean_cache, patching_metric):
    """Positions up to the one before last."""
    n_pos = corrupted_tokens.shape[1]
    out = torch.zeros(model.cfg.n_layers, n_pos)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for pos in range(n_pos - 1):
                hook = partial(_resid_hook, pos=pos, cache=clean_cache)
                name = f"blocks.{layer}.hook_resid_pre"
                out[layer, pos] = patching_metric(
                    model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
                )
    return out


wrong("get_act_patch_resid_pre", "missed_last_position")(_resid_sweep_short)


@wrong("get_act_patch_resid_pre", "subtracted_baseline")
def resid_pre_relative(model, corrupted_tokens, clean_cache, patching_metric):
    """Each entry minus the unpatched corrupted run's metric."""
    grid = _resid_sweep(model, corrupted_tokens, clean_cache, patching_metric)
    with torch.inference_mode():
        return grid - patching_metric(model(corrupted_tokens))


@wrong("get_act_patch_resid_pre", "hooks_not_removed")
def resid_pre_add_hook(model, corrupted_tokens, clean_cache, patching_metric):
    """model.add_hook in the loop, reset only at the end."""
    out = torch.zeros(model.cfg.n_layers, corrupted_tokens.shape[1])
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for pos in range(corrupted_tokens.shape[1]):
                model.add_hook(
                    get_act_name("resid_pre", layer),
                    partial(_resid_hook, pos=pos, cache=clean_cache),
                )
                out[layer, pos] = patching_metric(model(corrupted_tokens))
    model.reset_hooks()
    return out


@wrong("get_act_patch_attn_head_out_all_pos", "missed_last_head")
def head_out_heads_minus_one(model, corrupted_tokens, clean_cache, patching_metric):
    """range(n_heads - 1)."""
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads - 1):
                hook = partial(_head_hook, head=head, cache=clean_cache)
                logits = model.run_with_hooks(
                    corrupted_tokens, fwd_hooks=[(get_act_name("z", layer), hook)]
                )
                out[layer, head] = patching_metric(logits)
    return out


@wrong("get_act_patch_attn_head_out_all_pos", "subtracted_baseline")
def head_out_relative(model, corrupted_tokens, clean_cache, patching_metric):
    """The TransformerLens grid minus the corrupted run's metric."""
    grid = tl_patching.get_act_patch_attn_head_out_all_pos(
        model, corrupted_tokens, clean_cache, patching_metric
    )
    with torch.inference_mode():
        return grid - patching_metric(model(corrupted_tokens))


@wrong("get_act_patch_attn_head_out_all_pos", "hooks_not_removed")
def head_out_add_hook(model, corrupted_tokens, clean_cache, patching_metric):
    """Hooks added with model.add_hook pile up."""
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                hook = partial(_head_hook, head=head, cache=clean_cache)
                model.add_hook(f"blocks.{layer}.attn.hook_z", hook)
                out[layer, head] = patching_metric(model(corrupted_tokens))
    model.reset_hooks()
    return out


def _by_pos_indexed(model, tokens, cache, metric, *, index):
    """A [layer, pos, head] sweep whose hook patches z[index(pos, head)] where it exists."""
    n_layers, n_pos, n_heads = model.cfg.n_layers, tokens.shape[1], model.cfg.n_heads
    out = torch.zeros(n_layers, n_pos, n_heads)
    for layer in range(n_layers):
        for pos in range(n_pos):
            for head in range(n_heads):
                site = index(pos, head)

                def hook(act, hook, where=site):
                    try:
                        act[where] = cache[hook.name][where]
                    except IndexError:
                        pass
                    return act

                with torch.no_grad():
                    logits = model.run_with_hooks(
                        tokens, fwd_hooks=[(get_act_name("z", layer), hook)]
                    )
                out[layer, pos, head] = metric(logits)
    return out


variant(
    "get_act_patch_attn_head_out_by_pos",
    "indexed_batch_axis",
    _by_pos_indexed,
    "z[pos, :, head], skipping positions past the batch.",
    index=lambda pos, head: (pos, slice(None), head),
)


variant(
    "get_act_patch_attn_head_out_by_pos",
    "head_and_pos_swapped",
    _by_pos_indexed,
    "z[:, head, pos], skipping what does not exist.",
    index=lambda pos, head: (slice(None), head, pos),
)


variant(
    "get_act_patch_attn_head_out_by_pos",
    "patched_other_component",
    _by_pos,
    "Patches the queries at each position.",
    fn_name="by_pos_queries",
    name="q",
)


@wrong("get_act_patch_attn_head_out_by_pos", "missed_last_position")
def by_pos_positions_minus_one(model, corrupted_tokens, clean_cache, patching_metric):
    """The TransformerLens grid with the last position never filled in."""
    grid = tl_patching.get_act_patch_attn_head_out_by_pos(
        model, corrupted_tokens[:, :], clean_cache, patching_metric
    ).clone()
    grid[:, -1] = 0.0
    return grid


@wrong("get_act_patch_attn_head_out_by_pos", "subtracted_baseline")
def by_pos_relative(model, corrupted_tokens, clean_cache, patching_metric):
    """Each entry relative to the corrupted run."""
    grid = _by_pos(model, corrupted_tokens, clean_cache, patching_metric)
    with torch.no_grad():
        return grid - patching_metric(model(corrupted_tokens))


variant(
    "get_act_patch_block_every",
    "wrong_hook_point",
    _block,
    "resid_mid for the attention row.",
    fn_name="block_resid_mid_for_attention",
    order=("resid_pre", "resid_mid", "mlp_out"),
)


variant(
    "get_act_patch_block_every",
    "wrong_hook_point",
    _block,
    "get_act_name('attn', layer) (the pattern) for the attention row.",
    fn_name="block_attn_is_pattern",
    order=("resid_pre", "attn", "mlp_out"),
)


@wrong("get_act_patch_block_every", "skipped_first_position")
def block_without_bos(model, corrupted_tokens, clean_cache, patching_metric):
    """Position 0 is never patched."""
    grid = _block(model, corrupted_tokens, clean_cache, patching_metric)
    grid[..., 0] = 0.0
    return grid


@wrong("get_act_patch_block_every", "subtracted_baseline")
def block_relative(model, corrupted_tokens, clean_cache, patching_metric):
    """The TransformerLens grid minus the corrupted run's metric."""
    grid = tl_patching.get_act_patch_block_every(
        model, corrupted_tokens, clean_cache, patching_metric
    )
    with torch.no_grad():
        return grid - patching_metric(model(corrupted_tokens))


# ---- adversarial review (chk36): the pattern hook and the five-component sweep -----------------


@wrong("patch_attn_patterns", "indexed_batch_axis")
def pattern_prompt_index(corrupted_head_vector, hook, head_index, clean_cache):
    """[head_index] on both sides: a prompt, not a head."""
    corrupted_head_vector[head_index] = clean_cache[hook.name][head_index]
    return corrupted_head_vector


@wrong("patch_attn_patterns", "returned_clean_slice")
def pattern_slice_returned(corrupted_head_vector, hook, head_index, clean_cache):
    """Returns the clean head's [batch, query, key] pattern only."""
    return clean_cache[hook.name][:, head_index]


@correct("patch_attn_patterns", "copy_ in place by (name, layer), returning None")
def pattern_copy_in_place(corrupted_head_vector, hook, head_index, clean_cache):
    corrupted_head_vector[:, head_index].copy_(clean_cache["pattern", hook.layer()][:, head_index])


variant(
    "get_act_patch_attn_head_all_pos_every",
    "hard_coded_size",
    _every,
    "torch.zeros(3, 4) and range(3), range(4): the toy's sizes.",
    fn_name="every_toy_sizes",
    sizes=(3, 4),
)
variant(
    "get_act_patch_attn_head_all_pos_every",
    "subtracted_baseline",
    _every,
    "Every entry minus the corrupted run's metric.",
    fn_name="every_minus_baseline",
    minus_baseline=True,
)
variant(
    "get_act_patch_attn_head_all_pos_every",
    "missed_last_layer",
    _every,
    "range(n_layers - 1).",
    fn_name="every_short_layers",
    short_layers=True,
)
variant(
    "get_act_patch_attn_head_all_pos_every",
    "missed_last_head",
    _every,
    "range(n_heads - 1).",
    fn_name="every_short_heads",
    short_heads=True,
)
variant(
    "get_act_patch_attn_head_all_pos_every",
    "stacked_wrong_axis",
    _every,
    "torch.stack(rows, dim=-1).",
    fn_name="every_stacked_last",
    stack_dim=-1,
)


@correct(
    "get_act_patch_attn_head_all_pos_every",
    "the attention scores patched: softmax gives the clean pattern",
)
def every_scores(model, corrupted_tokens, clean_cache, patching_metric):
    order = ("z", "q", "k", "v", "attn_scores")
    return _every(model, corrupted_tokens, clean_cache, patching_metric, order=order)

"""Section 2 answers: directions, the final layer norm, per-layer and per-head attribution, attention."""

from __future__ import annotations

import einops
import torch

from tests.checks.corpus import correct, variant, wrong


def _rows(n):
    return torch.arange(n)


def _scale(cache, positions, hook="ln_final.hook_scale"):
    scale = cache[hook]
    if positions is None:
        return scale[:, -1]
    return scale[_rows(scale.shape[0]), positions]


def _at(stack, positions):
    if positions is None:
        return stack[:, :, -1]
    return stack[:, _rows(stack.shape[1]), positions]


def _dirs(model, answer_tokens):
    return model.W_U[:, answer_tokens[:, 0]].T - model.W_U[:, answer_tokens[:, 1]].T


def _attribute(stack, cache, directions, positions, *, how="cached", reduce="mean"):
    """The attribution, with the final layer norm applied in one of several (mostly wrong) ways."""
    if how == "cached":
        normed = (stack - stack.mean(-1, keepdim=True)) / _scale(cache, positions)
    elif how == "ln_final":  # each component normalised by its own norm
        normed = cache.model.ln_final(stack)
    elif how == "none":
        normed = stack
    elif how == "times_scale":
        normed = (stack - stack.mean(-1, keepdim=True)) * _scale(cache, positions)
    per = einops.einsum(normed, directions, "... batch d, batch d -> ... batch")
    return {"mean": per.mean(-1), "sum": per.sum(-1), "none": per}[reduce]


# ---- logit_diff_directions ---------------------------------------------------------------------


@wrong("logit_diff_directions", "wrong_sign")
def dirs_s_minus_io(model, answer_tokens):
    """S - IO."""
    return -_dirs(model, answer_tokens)


@wrong("logit_diff_directions", "embedding_not_unembedding")
def dirs_embedding(model, answer_tokens):
    """W_E rows."""
    return model.W_E[answer_tokens[:, 0]] - model.W_E[answer_tokens[:, 1]]


@wrong("logit_diff_directions", "not_subtracted")
def dirs_both(model, answer_tokens):
    """Both directions, stacked."""
    return model.tokens_to_residual_directions(answer_tokens)


@wrong("logit_diff_directions", "normalised_directions")
def dirs_unit(model, answer_tokens):
    """Unit vectors: the length of the direction is part of the logit difference."""
    d = _dirs(model, answer_tokens)
    return d / d.norm(dim=-1, keepdim=True)


@wrong("logit_diff_directions", "io_direction_only")
def dirs_io_only(model, answer_tokens):
    """Only the IO's unembedding column."""
    return model.W_U[:, answer_tokens[:, 0]].T


@correct("logit_diff_directions", "index W_U's columns and transpose")
def dirs_columns(model, answer_tokens):
    return (model.W_U[:, answer_tokens[:, 0]] - model.W_U[:, answer_tokens[:, 1]]).T


@correct("logit_diff_directions", "einsum with a +1/-1 matrix")
def dirs_signed(model, answer_tokens):
    both = model.tokens_to_residual_directions(answer_tokens)  # [batch, 2, d_model]
    return einops.einsum(both, torch.tensor([1.0, -1.0]), "b two d, two -> b d")


# ---- apply_final_ln ----------------------------------------------------------------------------


@wrong("apply_final_ln", "ln_per_component")
def ln_module_per_component(residual_stack, cache, positions=None):
    """model.ln_final applied to each component: each gets its own norm, not the stream's."""
    return cache.model.ln_final(residual_stack)


@wrong("apply_final_ln", "no_ln_scale")
def ln_centre_only(residual_stack, cache, positions=None):
    """Centres but never divides."""
    return residual_stack - residual_stack.mean(-1, keepdim=True)


@wrong("apply_final_ln", "not_centred")
def ln_scale_only(residual_stack, cache, positions=None):
    """Divides but never centres."""
    return residual_stack / _scale(cache, positions)


@wrong("apply_final_ln", "scale_at_last_position")
def ln_last_scale(residual_stack, cache, positions=None):
    """Scale of the last column for every prompt."""
    centred = residual_stack - residual_stack.mean(-1, keepdim=True)
    return centred / cache["ln_final.hook_scale"][:, -1]


@wrong("apply_final_ln", "scale_at_last_position")
def ln_apply_ln_to_stack(residual_stack, cache, positions=None):
    """TransformerLens's apply_ln_to_stack with pos_slice=-1, ignoring the padding."""
    return cache.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=-1)


@wrong("apply_final_ln", "multiplied_by_scale")
def ln_times_scale(residual_stack, cache, positions=None):
    """Multiplies by the scale."""
    centred = residual_stack - residual_stack.mean(-1, keepdim=True)
    return centred * _scale(cache, positions)


@wrong("apply_final_ln", "wrong_layer_norm_scale")
def ln_block_scale(residual_stack, cache, positions=None):
    """The scale of the last block's ln2, not ln_final."""
    n = cache.model.cfg.n_layers - 1
    centred = residual_stack - residual_stack.mean(-1, keepdim=True)
    return centred / _scale(cache, positions, f"blocks.{n}.ln2.hook_scale")


@correct("apply_final_ln", "torch.gather for the scale")
def ln_gather(residual_stack, cache, positions=None):
    scale = cache["ln_final.hook_scale"][..., 0]  # [batch, pos]
    if positions is None:
        positions = torch.full((scale.shape[0],), scale.shape[1] - 1)
    picked = scale.gather(1, positions[:, None])  # [batch, 1]
    return (residual_stack - residual_stack.mean(-1, keepdim=True)) / picked


@correct("apply_final_ln", "TransformerLens's apply_ln_to_stack when positions is None")
def ln_tl_when_possible(residual_stack, cache, positions=None):
    if positions is None:
        return cache.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=-1)
    centred = residual_stack - residual_stack.mean(-1, keepdim=True)
    return centred / _scale(cache, positions)


# ---- residual_stack_to_logit_diff --------------------------------------------------------------


variant(
    "residual_stack_to_logit_diff",
    "ln_per_component",
    _attribute,
    "ln_final per component.",
    fn_name="stack_ln_module",
    how="ln_final",
)


variant(
    "residual_stack_to_logit_diff",
    "no_ln_scale",
    _attribute,
    "No layer norm at all.",
    fn_name="stack_no_ln",
    how="none",
)


variant(
    "residual_stack_to_logit_diff",
    "sum_not_mean",
    _attribute,
    "Sums over the batch.",
    fn_name="stack_sum",
    reduce="sum",
)


variant(
    "residual_stack_to_logit_diff",
    "returned_per_prompt",
    _attribute,
    "No reduction.",
    fn_name="stack_per_prompt",
    reduce="none",
)


@wrong("residual_stack_to_logit_diff", "scale_at_last_position")
def stack_last_scale(residual_stack, cache, logit_diff_directions, positions=None):
    """Scale of the last column."""
    return _attribute(residual_stack, cache, logit_diff_directions, None)


variant(
    "residual_stack_to_logit_diff",
    "multiplied_by_scale",
    _attribute,
    "Multiplies by the scale.",
    fn_name="stack_times_scale",
    how="times_scale",
)


@correct("residual_stack_to_logit_diff", "elementwise product and sum instead of einsum")
def stack_product(residual_stack, cache, logit_diff_directions, positions=None):
    centred = residual_stack - residual_stack.mean(-1, keepdim=True)
    return ((centred / _scale(cache, positions)) * logit_diff_directions).sum(-1).mean(-1)


@correct("residual_stack_to_logit_diff", "the library's apply_final_ln, then a matmul")
def stack_library_ln(residual_stack, cache, logit_diff_directions, positions=None):
    from ioi.heads import apply_final_ln

    scaled = apply_final_ln(residual_stack, cache, positions)
    per = (scaled * logit_diff_directions).sum(-1)
    return per.mean(-1)


# ---- accumulated_resid_logit_diffs and per_layer_logit_diffs -----------------------------------


def _resid(model, cache, answer_tokens, positions, kind, *, how="cached", **kwargs):
    method = cache.accumulated_resid if kind == "accumulated" else cache.decompose_resid
    stack, labels = method(layer=-1, return_labels=True, **kwargs)
    values = _attribute(
        _at(stack, positions), cache, _dirs(model, answer_tokens), positions, how=how
    )
    return values, labels


@wrong("accumulated_resid_logit_diffs", "missing_mid")
def acc_no_mid(model, cache, answer_tokens, positions=None):
    """incl_mid=False."""
    return _resid(model, cache, answer_tokens, positions, "accumulated", incl_mid=False)


@wrong("accumulated_resid_logit_diffs", "decomposed_not_accumulated")
def acc_decomposed(model, cache, answer_tokens, positions=None):
    """decompose_resid instead of accumulated_resid."""
    return _resid(model, cache, answer_tokens, positions, "decomposed")


@wrong("accumulated_resid_logit_diffs", "ln_per_component")
def acc_ln_module(model, cache, answer_tokens, positions=None):
    """ln_final per component."""
    return _resid(
        model, cache, answer_tokens, positions, "accumulated", how="ln_final", incl_mid=True
    )


@wrong("accumulated_resid_logit_diffs", "no_ln_scale")
def acc_no_ln(model, cache, answer_tokens, positions=None):
    """No layer norm."""
    return _resid(model, cache, answer_tokens, positions, "accumulated", how="none", incl_mid=True)


@wrong("accumulated_resid_logit_diffs", "multiplied_by_scale")
def acc_times_scale(model, cache, answer_tokens, positions=None):
    """Multiplies by the scale."""
    return _resid(
        model, cache, answer_tokens, positions, "accumulated", how="times_scale", incl_mid=True
    )


@wrong("accumulated_resid_logit_diffs", "ignored_positions")
def acc_last(model, cache, answer_tokens, positions=None):
    """Last column."""
    return _resid(model, cache, answer_tokens, None, "accumulated", incl_mid=True)


@wrong("accumulated_resid_logit_diffs", "wrong_type")
def acc_values_only(model, cache, answer_tokens, positions=None):
    """Forgets the labels."""
    return _resid(model, cache, answer_tokens, positions, "accumulated", incl_mid=True)[0]


def _resid_by_hand(model, cache, answer_tokens, positions, kind):
    """The stack built hook by hook over the toy's 3 layers written in (range(3))."""
    if kind == "accumulated":
        parts, labels = [cache["resid_pre", 0]], ["0_pre"]
        for layer in range(3):
            after = f"{layer + 1}_pre" if layer < 2 else "final_post"
            parts += [cache["resid_mid", layer], cache["resid_post", layer]]
            labels += [f"{layer}_mid", after]
    else:
        parts, labels = [cache["hook_embed"], cache["hook_pos_embed"]], ["embed", "pos_embed"]
        for layer in range(3):
            parts += [cache["attn_out", layer], cache["mlp_out", layer]]
            labels += [f"{layer}_attn_out", f"{layer}_mlp_out"]
    stack = _at(torch.stack(parts), positions)
    return _attribute(stack, cache, _dirs(model, answer_tokens), positions), labels


variant(
    "accumulated_resid_logit_diffs",
    "hard_coded_size",
    _resid_by_hand,
    "resid_pre 0, then resid_mid and resid_post of each of range(3): the toy's layers.",
    fn_name="acc_toy_layers",
    kind="accumulated",
)
variant(
    "per_layer_logit_diffs",
    "hard_coded_size",
    _resid_by_hand,
    "The embeddings, then attn_out and mlp_out of each of range(3): the toy's layers.",
    fn_name="layer_toy_layers",
    kind="decomposed",
)


@correct(
    "accumulated_resid_logit_diffs", "TransformerLens's logit_attrs with the layer norm's own scale"
)
def acc_logit_attrs(model, cache, answer_tokens, positions=None):
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=True, return_labels=True)
    stack = _at(stack, positions)
    values = _attribute(stack, cache, _dirs(model, answer_tokens), positions)
    return values, list(labels)


@wrong("per_layer_logit_diffs", "accumulated_not_decomposed")
def layer_accumulated(model, cache, answer_tokens, positions=None):
    """accumulated_resid instead of decompose_resid."""
    return _resid(model, cache, answer_tokens, positions, "accumulated", incl_mid=True)


@wrong("per_layer_logit_diffs", "missing_embeds")
def layer_no_embeds(model, cache, answer_tokens, positions=None):
    """incl_embeds=False."""
    return _resid(model, cache, answer_tokens, positions, "decomposed", incl_embeds=False)


@wrong("per_layer_logit_diffs", "missing_mlps")
def layer_attn_only(model, cache, answer_tokens, positions=None):
    """mode='attn': the MLPs are gone."""
    return _resid(model, cache, answer_tokens, positions, "decomposed", mode="attn")


@wrong("per_layer_logit_diffs", "multiplied_by_scale")
def layer_times_scale(model, cache, answer_tokens, positions=None):
    """Multiplies by the scale."""
    return _resid(model, cache, answer_tokens, positions, "decomposed", how="times_scale")


@wrong("per_layer_logit_diffs", "ignored_positions")
def layer_last(model, cache, answer_tokens, positions=None):
    """Last column."""
    return _resid(model, cache, answer_tokens, None, "decomposed")


@wrong("per_layer_logit_diffs", "no_ln_scale")
def layer_no_ln(model, cache, answer_tokens, positions=None):
    """No layer norm."""
    return _resid(model, cache, answer_tokens, positions, "decomposed", how="none")


@wrong("per_layer_logit_diffs", "ln_per_component")
def layer_ln_module(model, cache, answer_tokens, positions=None):
    """ln_final per component."""
    return _resid(model, cache, answer_tokens, positions, "decomposed", how="ln_final")


@correct("per_layer_logit_diffs", "a loop over the components")
def layer_loop(model, cache, answer_tokens, positions=None):
    stack, labels = cache.decompose_resid(layer=-1, return_labels=True)
    dirs = _dirs(model, answer_tokens)
    values = torch.stack(
        [_attribute(_at(c[None], positions), cache, dirs, positions)[0] for c in stack]
    )
    return values, labels


# ---- head_results_at and per_head_logit_diffs --------------------------------------------------


def _results(model, cache, positions, *, bias=False, layers=None, last=False):
    out = []
    for layer in range(model.cfg.n_layers)[:layers]:
        z = cache["z", layer]
        at = z[:, -1] if positions is None or last else z[_rows(z.shape[0]), positions]
        res = einops.einsum(at, model.W_O[layer], "b h d, h d m -> h b m")
        out.append(res + model.b_O[layer] if bias else res)
    return torch.stack(out)


variant(
    "head_results_at",
    "added_b_O",
    _results,
    "Adds b_O to every head (it is the layer's, shared once, not per head).",
    fn_name="results_with_bias",
    bias=True,
)


variant(
    "head_results_at",
    "missed_last_layer",
    _results,
    "range(n_layers - 1).",
    fn_name="results_range_minus_one",
    layers=-1,
)


@wrong("head_results_at", "needs_use_attn_result")
def results_from_hook_result(model, cache, positions):
    """cache['result', layer]: only cached with use_attn_result."""
    return torch.stack(
        [cache["result", layer][_rows(len(positions)), positions] for layer in range(3)]
    ).permute(0, 2, 1, 3)


@wrong("head_results_at", "z_not_output")
def results_z(model, cache, positions):
    """z itself."""
    return torch.stack(
        [cache["z", layer][_rows(len(positions)), positions].transpose(0, 1) for layer in range(3)]
    )


@wrong("head_results_at", "wrong_layout")
def results_batch_first(model, cache, positions):
    """[layer, batch, head, d_model]."""
    return _results(model, cache, positions).transpose(1, 2)


@wrong("head_results_at", "summed_heads")
def results_attn_out(model, cache, positions):
    """The layer's output (summed heads)."""
    return _results(model, cache, positions).sum(1)


variant(
    "head_results_at",
    "ignored_positions",
    _results,
    "Last column.",
    fn_name="results_last",
    last=True,
)


@correct("head_results_at", "a per-head matmul loop")
def results_loop(model, cache, positions):
    batch, n_pos = cache["z", 0].shape[:2]
    rows = _rows(batch)
    positions = torch.full((batch,), n_pos - 1) if positions is None else positions
    return torch.stack(
        [
            torch.stack(
                [
                    cache["z", layer][rows, positions, head] @ model.W_O[layer, head]
                    for head in range(model.cfg.n_heads)
                ]
            )
            for layer in range(model.cfg.n_layers)
        ]
    )


@correct("head_results_at", "the whole-sequence results, then indexed")
def results_full_then_index(model, cache, positions):
    full = torch.stack(
        [
            einops.einsum(cache["z", layer], model.W_O[layer], "b p h d, h d m -> h b p m")
            for layer in range(model.cfg.n_layers)
        ]
    )
    if positions is None:
        return full[:, :, :, -1]
    return full[:, :, _rows(len(positions)), positions]


def _per_head(model, cache, answer_tokens, positions, **kwargs):
    how = kwargs.pop("how", "cached")
    reduce = kwargs.pop("reduce", "mean")
    res = _results(model, cache, positions, **kwargs)
    return _attribute(res, cache, _dirs(model, answer_tokens), positions, how=how, reduce=reduce)


variant(
    "per_head_logit_diffs",
    "added_b_O",
    _per_head,
    "b_O added per head.",
    fn_name="head_dla_with_bias",
    bias=True,
)


variant(
    "per_head_logit_diffs",
    "ln_per_component",
    _per_head,
    "ln_final per head.",
    fn_name="head_dla_ln_module",
    how="ln_final",
)


@wrong("per_head_logit_diffs", "hard_coded_size")
def head_dla_toy_grid(model, cache, answer_tokens, positions=None):
    """The toy's 3 x 4 grid written in: layers range(3), heads [:4]."""
    res = _results(model, cache, positions, layers=3)[:, :4]
    return _attribute(res, cache, _dirs(model, answer_tokens), positions)


@wrong("per_head_logit_diffs", "transposed")
def head_dla_transposed(model, cache, answer_tokens, positions=None):
    """[head, layer]."""
    return _per_head(model, cache, answer_tokens, positions).T


variant(
    "per_head_logit_diffs",
    "sum_not_mean",
    _per_head,
    "Sum over prompts.",
    fn_name="head_dla_sum",
    reduce="sum",
)


@wrong("per_head_logit_diffs", "missed_last_layer")
def head_dla_missing_last(model, cache, answer_tokens, positions=None):
    """range(n_layers - 1) into a zero grid."""
    grid = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    part = _per_head(model, cache, answer_tokens, positions, layers=-1)
    grid[:-1] = part
    return grid


variant(
    "per_head_logit_diffs",
    "no_ln_scale",
    _per_head,
    "No layer norm.",
    fn_name="head_dla_no_ln",
    how="none",
)


variant(
    "per_head_logit_diffs",
    "multiplied_by_scale",
    _per_head,
    "Multiplies by the scale.",
    fn_name="head_dla_times_scale",
    how="times_scale",
)


@wrong("per_head_logit_diffs", "ignored_positions")
def head_dla_last(model, cache, answer_tokens, positions=None):
    """Last column."""
    return _per_head(model, cache, answer_tokens, None)


@correct("per_head_logit_diffs", "a double loop over heads")
def head_dla_loop(model, cache, answer_tokens, positions=None):
    dirs = _dirs(model, answer_tokens)
    res = _results(model, cache, positions)
    grid = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            grid[layer, head] = _attribute(res[layer, head][None], cache, dirs, positions)[0]
    return grid


# ---- ioi_attention -----------------------------------------------------------------------------


def _attention(
    model,
    ds,
    dest,
    src,
    cache,
    *,
    swap=False,
    scores=False,
    reduce="mean",
    first=False,
    layers=None,
):
    if cache is None:
        _, cache = model.run_with_cache(ds.toks)
    d, s = ds.word_idx[dest], ds.word_idx[src]
    if swap:
        d, s = s, d
    if first:
        d, s = d[:1].expand_as(d), s[:1].expand_as(s)
    name = "attn_scores" if scores else "pattern"
    out = []
    for layer in range(model.cfg.n_layers)[:layers]:
        values = cache[name, layer][_rows(ds.N), :, d, s]
        out.append(values.mean(0) if reduce == "mean" else values.sum(0))
    return torch.stack(out)


variant(
    "ioi_attention",
    "hard_coded_size",
    _attention,
    "The toy's layers written in: range(3).",
    fn_name="attention_toy_layers",
    layers=3,
)
variant(
    "ioi_attention",
    "swapped_dest_src",
    _attention,
    "[..., src, dest].",
    fn_name="attn_swapped",
    swap=True,
)


variant(
    "ioi_attention",
    "scores_not_pattern",
    _attention,
    "Pre-softmax scores.",
    fn_name="attn_scores",
    scores=True,
)


variant(
    "ioi_attention",
    "sum_not_mean",
    _attention,
    "Sum over prompts.",
    fn_name="attn_sum",
    reduce="sum",
)


variant(
    "ioi_attention",
    "same_position_for_all_prompts",
    _attention,
    "Prompt 0's positions for all.",
    fn_name="attn_first_prompt",
    first=True,
)


@wrong("ioi_attention", "wrong_word")
def attn_hard_coded_io(model, ds, dest, src, cache=None):
    """src hard-coded to 'IO'."""
    return _attention(model, ds, dest, "IO", cache)


@wrong("ioi_attention", "ignored_positions")
def attn_last_query(model, ds, dest, src, cache=None):
    """The last column as the query."""
    if cache is None:
        _, cache = model.run_with_cache(ds.toks)
    s = ds.word_idx[src]
    return torch.stack(
        [
            cache["pattern", layer][_rows(ds.N), :, -1, s].mean(0)
            for layer in range(model.cfg.n_layers)
        ]
    )


variant(
    "ioi_attention",
    "missed_last_layer",
    _attention,
    "range(n_layers - 1).",
    fn_name="attn_missing_layer",
    layers=-1,
)


@wrong("ioi_attention", "ignored_given_cache")
def attn_recompute(model, ds, dest, src, cache=None):
    return _attention(model, ds, dest, src, None)


@correct("ioi_attention", "a loop over prompts with stacked patterns")
def attn_loop(model, ds, dest, src, cache=None):
    if cache is None:
        _, cache = model.run_with_cache(ds.toks)
    patterns = torch.stack([cache["pattern", layer] for layer in range(model.cfg.n_layers)])
    values = [
        patterns[:, i, :, int(ds.word_idx[dest][i]), int(ds.word_idx[src][i])] for i in range(ds.N)
    ]
    return torch.stack(values).mean(0)


# ---- positions=None, and the stream read at one place but scaled at another --------------------


def _resid_at(model, cache, answer_tokens, positions, kind, *, none_at=-1, stack_last=False):
    """The residual attribution with ``positions=None`` read at column ``none_at``, or (with
    ``stack_last``) the stream read at the last column but the scale at ``positions``."""
    method = cache.accumulated_resid if kind == "accumulated" else cache.decompose_resid
    extra = {"incl_mid": True} if kind == "accumulated" else {}
    stack, labels = method(layer=-1, return_labels=True, **extra)
    if positions is None:
        positions = torch.full((stack.shape[1],), none_at % stack.shape[2])
    read = stack[:, :, -1] if stack_last else _at(stack, positions)
    return _attribute(read, cache, _dirs(model, answer_tokens), positions), labels


def _resid_twice(model, cache, answer_tokens, positions, kind):
    """The final layer norm applied by the cache's apply_ln=True and again by hand."""
    method = cache.accumulated_resid if kind == "accumulated" else cache.decompose_resid
    extra = {"incl_mid": True} if kind == "accumulated" else {}
    stack, labels = method(layer=-1, return_labels=True, apply_ln=True, **extra)
    return _attribute(_at(stack, positions), cache, _dirs(model, answer_tokens), positions), labels


def _resid_no_none(model, cache, answer_tokens, positions, kind):
    """No branch for positions=None: the whole [component, batch, pos, d] stack goes on."""
    method = cache.accumulated_resid if kind == "accumulated" else cache.decompose_resid
    extra = {"incl_mid": True} if kind == "accumulated" else {}
    stack, labels = method(layer=-1, return_labels=True, **extra)
    if positions is not None:
        stack = _at(stack, positions)
    return _attribute(stack, cache, _dirs(model, answer_tokens), positions), labels


for _exercise, _kind in (
    ("accumulated_resid_logit_diffs", "accumulated"),
    ("per_layer_logit_diffs", "decomposed"),
):
    variant(
        _exercise,
        "first_position_for_none",
        _resid_at,
        "positions=None read at column 0.",
        fn_name=f"{_kind}_none_first",
        kind=_kind,
        none_at=0,
    )
    variant(
        _exercise,
        "stack_at_last_position",
        _resid_at,
        "The stream at the last column, the scale at positions.",
        fn_name=f"{_kind}_stack_last",
        kind=_kind,
        stack_last=True,
    )
    variant(
        _exercise,
        "layer_norm_twice",
        _resid_twice,
        "apply_ln=True, then the layer norm again.",
        fn_name=f"{_kind}_ln_twice",
        kind=_kind,
    )
    variant(
        _exercise,
        "none_branch_raised",
        _resid_no_none,
        "No branch for positions=None.",
        fn_name=f"{_kind}_no_none_branch",
        kind=_kind,
    )


def _resid_slip(model, cache, answer_tokens, positions, kind, *, slip):
    """The residual attribution written by hand, with one slip (``slip``) a tired learner makes."""
    method = cache.accumulated_resid if kind == "accumulated" else cache.decompose_resid
    extra = {"incl_mid": True} if kind == "accumulated" else {}
    stack, labels = method(layer=-1, return_labels=True, **extra)
    read_at, scale_at = positions, positions
    if positions is not None and slip == "shift":  # "the token after END"
        read_at = scale_at = positions + 1
    if positions is not None and slip == "grid":
        x = stack[:, :, positions]  # [comp, batch, batch, d]: every prompt at every position
    else:
        x = _at(stack, read_at)
    if slip == "no_positions":  # forgot to hand positions on: the scale of the last column
        scale_at = None
    x = (x - x.mean(-1, keepdim=True)) / _scale(cache, scale_at)
    directions = _dirs(model, answer_tokens)
    if slip == "s_minus_io":
        directions = -directions
    per = einops.einsum(x, directions, "... b d, b d -> ... b")
    values = {
        "per_prompt": per,
        "summed": per.sum(-1),
        "mean_dim0": per.mean(0),
    }.get(slip, per.mean(-1))
    return values, labels


for _exercise, _kind in (
    ("accumulated_resid_logit_diffs", "accumulated"),
    ("per_layer_logit_diffs", "decomposed"),
):
    for _diagnosis, _slip, _doc in (
        ("wrong_sign", "s_minus_io", "S - IO directions: every value flipped."),
        ("returned_per_prompt", "per_prompt", "Forgot the mean over prompts."),
        ("sum_not_mean", "summed", ".sum(-1) over the prompts."),
        ("averaged_components", "mean_dim0", ".mean(0): averaged over the components."),
        ("positions_not_passed_on", "no_positions", "positions not passed to the scale."),
        ("position_off_by_one", "shift", "positions + 1, the token after END."),
        ("position_grid", "grid", "stack[:, :, positions]: a [batch, batch] grid."),
    ):
        variant(
            _exercise,
            _diagnosis,
            _resid_slip,
            _doc,
            fn_name=f"{_kind}_{_slip}",
            kind=_kind,
            slip=_slip,
        )


@wrong("accumulated_resid_logit_diffs", "missing_first_entry")
def acc_by_hand_from_mid_and_post(model, cache, answer_tokens, positions=None):
    """Built by hand from each layer's resid_mid and resid_post: the embeddings entry is lost."""
    parts, labels = [], []
    for layer in range(model.cfg.n_layers):
        parts += [cache["resid_mid", layer], cache["resid_post", layer]]
        labels += [f"{layer}_mid", f"{layer}_post"]
    stack = _at(torch.stack(parts), positions)
    return _attribute(stack, cache, _dirs(model, answer_tokens), positions), labels


@correct("accumulated_resid_logit_diffs", "built by hand from resid_pre, resid_mid, resid_post")
def acc_by_hand(model, cache, answer_tokens, positions=None):
    parts, labels = [], []
    for layer in range(model.cfg.n_layers):
        parts += [cache["resid_pre", layer], cache["resid_mid", layer]]
        labels += [f"{layer}_pre", f"{layer}_mid"]
    parts.append(cache["resid_post", model.cfg.n_layers - 1])
    labels.append("final_post")
    stack = _at(torch.stack(parts), positions)
    return _attribute(stack, cache, _dirs(model, answer_tokens), positions), labels


@wrong("per_layer_logit_diffs", "missed_last_layer")
def layer_stops_early(model, cache, answer_tokens, positions=None):
    """decompose_resid(layer=n_layers - 1): the last layer's attention and MLP are missing."""
    stack, labels = cache.decompose_resid(layer=model.cfg.n_layers - 1, return_labels=True)
    values = _attribute(_at(stack, positions), cache, _dirs(model, answer_tokens), positions)
    return values, labels


@wrong("head_results_at", "none_branch_raised")
def results_no_none_branch(model, cache, positions):
    """Indexes with positions even when it is None."""
    rows = _rows(cache["z", 0].shape[0])
    return torch.stack(
        [
            einops.einsum(
                cache["z", layer][rows, positions], model.W_O[layer], "b h d, h d m -> h b m"
            )
            for layer in range(model.cfg.n_layers)
        ]
    )


@wrong("per_head_logit_diffs", "none_branch_raised")
def head_dla_no_none_branch(model, cache, answer_tokens, positions=None):
    """Builds its own rows from positions, which fails for None."""
    rows = _rows(len(positions))
    res = torch.stack(
        [
            einops.einsum(
                cache["z", layer][rows, positions], model.W_O[layer], "b h d, h d m -> h b m"
            )
            for layer in range(model.cfg.n_layers)
        ]
    )
    return _attribute(res, cache, _dirs(model, answer_tokens), positions)


@wrong("apply_final_ln", "batch_by_batch_indexing")
def ln_scale_grid_mean(residual_stack, cache, positions=None):
    """scale[:, positions] is a [batch, batch, 1] grid; averaged over its second axis."""
    scale = cache["ln_final.hook_scale"]
    scale = scale[:, -1] if positions is None else scale[:, positions].mean(1)
    return (residual_stack - residual_stack.mean(-1, keepdim=True)) / scale


# ---- more directions, layer-norm and attribution mistakes --------------------------------------


@wrong("logit_diff_directions", "halved")
def dirs_minus_answer_mean(model, answer_tokens):
    """IO minus the mean of the two answers' directions."""
    both = model.W_U[:, answer_tokens].permute(1, 2, 0)  # [batch, 2, d_model]
    return both[:, 0] - both.mean(1)


@wrong("logit_diff_directions", "indexed_batch_axis")
def dirs_first_two_prompts(model, answer_tokens):
    """[0] - [1] on the [batch, 2, d_model] directions: prompts, not answers."""
    both = model.tokens_to_residual_directions(answer_tokens)
    return both[0] - both[1]


def _final_ln_with(residual_stack, cache, positions=None, *, scale_of=None, none_at=-1):
    scale = cache["ln_final.hook_scale"]
    rows = torch.arange(scale.shape[0])
    scale = scale[:, none_at] if positions is None else scale[rows, positions]
    if scale_of is not None:
        scale = scale_of(scale, cache, positions)
    return (residual_stack - residual_stack.mean(-1, keepdim=True)) / scale


variant(
    "apply_final_ln",
    "first_position_for_none",
    _final_ln_with,
    "positions=None reads the scale at column 0.",
    fn_name="final_ln_none_first",
    none_at=0,
)


variant(
    "apply_final_ln",
    "sqrt_of_scale",
    _final_ln_with,
    "Divides by sqrt(scale), as if the cache held the variance.",
    fn_name="final_ln_sqrt_scale",
    scale_of=lambda scale, cache, positions: scale**0.5,
)


def _std_of_final_stream(scale, cache, positions):
    resid = cache[f"blocks.{cache.model.cfg.n_layers - 1}.hook_resid_post"]
    at = resid[:, -1] if positions is None else resid[torch.arange(resid.shape[0]), positions]
    return at.std(dim=-1, keepdim=True)


variant(
    "apply_final_ln",
    "recomputed_scale",
    _final_ln_with,
    "Recomputes the scale with torch.std of the final residual stream.",
    fn_name="final_ln_torch_std",
    scale_of=_std_of_final_stream,
)


@wrong("residual_stack_to_logit_diff", "all_pairs_of_prompts")
def stack_dla_outer(residual_stack, cache, logit_diff_directions, positions=None):
    """A matrix product with the directions: every prompt against every direction."""
    normed = _final_ln_with(residual_stack, cache, positions)
    return torch.matmul(normed, logit_diff_directions.T).mean(dim=(-2, -1))


@wrong("residual_stack_to_logit_diff", "mean_over_wrong_axis")
def stack_dla_mean_first(residual_stack, cache, logit_diff_directions, positions=None):
    """Averages the per-prompt values over axis 0."""
    per = _attribute(residual_stack, cache, logit_diff_directions, positions, reduce="none")
    return per.mean(0)


@wrong("residual_stack_to_logit_diff", "normalised_directions")
def stack_dla_over_mean_norm(residual_stack, cache, logit_diff_directions, positions=None):
    """Divides by the directions' mean norm afterwards."""
    value = _attribute(residual_stack, cache, logit_diff_directions, positions)
    return value / logit_diff_directions.norm(dim=-1).mean()


def _results_through(model, cache, positions, *, weights_of=lambda layer: layer, name="z", shift=0):
    out = []
    for layer in range(model.cfg.n_layers):
        act = cache[name, layer]
        at = act[:, -1] if positions is None else act[_rows(act.shape[0]), positions + shift]
        out.append(einops.einsum(at, model.W_O[weights_of(layer)], "b h d, h d m -> h b m"))
    return torch.stack(out)


variant(
    "head_results_at",
    "wrong_layer_weights",
    _results_through,
    "The last layer's W_O for every layer.",
    fn_name="results_last_w_o",
    weights_of=lambda layer: -1,
)


variant(
    "head_results_at",
    "position_off_by_one",
    _results_through,
    "z read at positions - 1.",
    fn_name="results_position_before",
    shift=-1,
)


variant(
    "head_results_at",
    "v_not_z",
    _results_through,
    "The values v, not z, through W_O.",
    fn_name="results_of_values",
    name="v",
)


@wrong("head_results_at", "added_b_O")
def results_bias_shared(model, cache, positions):
    """b_O split between the heads so that they sum to attn_out."""
    return _results(model, cache, positions) + model.b_O[:, None, None] / model.cfg.n_heads


@wrong("per_head_logit_diffs", "scale_at_last_position")
def head_dla_scale_last(model, cache, answer_tokens, positions=None):
    """Head outputs at positions, layer-norm scale at the last column."""
    res = _results(model, cache, positions)
    return _attribute(res, cache, _dirs(model, answer_tokens), None)


@wrong("per_head_logit_diffs", "normalised_directions")
def head_dla_unit_dirs(model, cache, answer_tokens, positions=None):
    """Unit-length directions."""
    d = _dirs(model, answer_tokens)
    d = d / d.norm(dim=1, keepdim=True)
    return _attribute(_results(model, cache, positions), cache, d, positions)


@wrong("per_head_logit_diffs", "wrong_sign")
def head_dla_s_minus_io(model, cache, answer_tokens, positions=None):
    """S - IO directions."""
    return _attribute(
        _results(model, cache, positions), cache, -_dirs(model, answer_tokens), positions
    )


@wrong("per_head_logit_diffs", "layer_split_evenly")
def head_dla_layer_share(model, cache, answer_tokens, positions=None):
    """Each layer's attn_out attributed, then shared equally by its heads."""
    attn = torch.stack([cache["attn_out", layer] for layer in range(model.cfg.n_layers)])
    per_layer = _attribute(_at(attn, positions), cache, _dirs(model, answer_tokens), positions)
    return per_layer[:, None].repeat(1, model.cfg.n_heads) / model.cfg.n_heads


# ---- right up to rounding or LayerNorm eps -------------------------------------------------------


@correct("apply_final_ln", "scale recomputed from the last resid_post with eps 1e-2")
def ln_scale_recomputed(residual_stack, cache, positions=None):
    resid = cache["resid_post", -1]  # [batch, pos, d_model]
    rows = torch.arange(resid.shape[0])
    at = resid[:, -1] if positions is None else resid[rows, positions]
    at = at - at.mean(-1, keepdim=True)
    scale = (at.pow(2).mean(-1, keepdim=True) + 1e-2).sqrt()
    return (residual_stack - residual_stack.mean(-1, keepdim=True)) / scale


@correct("head_results_at", "z @ W_O in float16 (rounding only)")
def results_half(model, cache, positions):
    out = []
    for layer in range(model.cfg.n_layers):
        z = cache["z", layer]
        at = z[:, -1] if positions is None else z[torch.arange(z.shape[0]), positions]
        out.append(einops.einsum(at.half(), model.W_O[layer].half(), "b h e, h e d -> h b d"))
    return torch.stack(out).float()


# ---- adversarial review (chk36): logit_diff_directions ------------------------------------------


@wrong("logit_diff_directions", "indexed_unembedding_rows")
def dirs_unembed_rows(model, answer_tokens):
    """W_U[ids]: rows of W_U ([d_model, d_vocab]) indexed by token ids."""
    return model.W_U[answer_tokens[:, 0]] - model.W_U[answer_tokens[:, 1]]


@wrong("logit_diff_directions", "averaged_over_prompts")
def dirs_batch_mean(model, answer_tokens):
    """One mean direction over the batch."""
    both = model.tokens_to_residual_directions(answer_tokens)
    return (both[:, 0] - both[:, 1]).mean(0)


@wrong("logit_diff_directions", "first_prompt_for_all")
def dirs_first_prompt(model, answer_tokens):
    """The first prompt's direction, expanded to the batch."""
    io, s = answer_tokens[0]
    return (model.W_U[:, io] - model.W_U[:, s]).expand(answer_tokens.shape[0], -1)


@wrong("logit_diff_directions", "added_not_subtracted")
def dirs_sum(model, answer_tokens):
    """IO + S."""
    return model.tokens_to_residual_directions(answer_tokens).sum(1)


@correct("logit_diff_directions", "a W_U centred over the vocabulary (differences unchanged)")
def dirs_centred(model, answer_tokens):
    centred = model.W_U - model.W_U.mean(1, keepdim=True)
    return centred.T[answer_tokens[:, 0]] - centred.T[answer_tokens[:, 1]]


@correct("logit_diff_directions", "one prompt at a time")
def dirs_loop(model, answer_tokens):
    return torch.stack([model.W_U[:, io] - model.W_U[:, s] for io, s in answer_tokens.tolist()])

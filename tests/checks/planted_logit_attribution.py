"""Planted mistakes for section 2: one wrong implementation per diagnosis its checkers make."""

from __future__ import annotations

import einops
import torch


def _at(stack, positions):
    """[*comp, batch, pos, d] -> [*comp, batch, d] at each prompt's position."""
    if positions is None:
        return stack[..., -1, :]
    return stack[..., torch.arange(stack.shape[-3]), positions, :]


def _scale(cache, positions):
    return _at(cache["ln_final.hook_scale"], positions)  # [batch, 1]


def _dirs(model, answer_tokens):
    return (model.W_U[:, answer_tokens[:, 0]] - model.W_U[:, answer_tokens[:, 1]]).T


def _to_logit_diff(stack, cache, dirs, positions, scale=True, reduce="mean"):
    """A correct residual_stack_to_logit_diff, with switches that plant mistakes."""
    centred = stack - stack.mean(-1, keepdim=True)
    scaled = centred / _scale(cache, positions) if scale else centred
    per = einops.einsum(scaled, dirs, "... b d, b d -> ... b")
    return {"mean": per.mean(-1), "sum": per.sum(-1), "none": per}[reduce]


# ---- logit_diff_directions ------------------------------------------------------------------


def directions_s_minus_io(model, answer_tokens):
    return -_dirs(model, answer_tokens)


def directions_from_embedding(model, answer_tokens):
    return model.W_E[answer_tokens[:, 0]] - model.W_E[answer_tokens[:, 1]]


def directions_not_subtracted(model, answer_tokens):
    return model.tokens_to_residual_directions(answer_tokens)


# ---- apply_final_ln -------------------------------------------------------------------------


def ln_without_scale(residual_stack, cache, positions=None):
    return residual_stack - residual_stack.mean(-1, keepdim=True)


def ln_without_centring(residual_stack, cache, positions=None):
    return residual_stack / _scale(cache, positions)


def ln_scale_from_last(residual_stack, cache, positions=None):
    return (residual_stack - residual_stack.mean(-1, keepdim=True)) / _scale(cache, None)


# ---- residual_stack_to_logit_diff -----------------------------------------------------------


def stack_no_scale(residual_stack, cache, logit_diff_directions, positions=None):
    return _to_logit_diff(residual_stack, cache, logit_diff_directions, positions, scale=False)


def stack_scale_at_last(residual_stack, cache, logit_diff_directions, positions=None):
    return _to_logit_diff(residual_stack, cache, logit_diff_directions, None)


def stack_per_prompt(residual_stack, cache, logit_diff_directions, positions=None):
    return _to_logit_diff(residual_stack, cache, logit_diff_directions, positions, reduce="none")


def stack_sum(residual_stack, cache, logit_diff_directions, positions=None):
    return _to_logit_diff(residual_stack, cache, logit_diff_directions, positions, reduce="sum")


# ---- accumulated_resid_logit_diffs ----------------------------------------------------------


def _accumulated(model, cache, answer_tokens, positions, incl_mid=True, scale=True, read_at="same"):
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=incl_mid, return_labels=True)
    where = positions if read_at == "same" else None
    values = _to_logit_diff(_at(stack, where), cache, _dirs(model, answer_tokens), where, scale)
    return values, labels


def accumulated_without_mid(model, cache, answer_tokens, positions=None):
    return _accumulated(model, cache, answer_tokens, positions, incl_mid=False)


def accumulated_no_scale(model, cache, answer_tokens, positions=None):
    return _accumulated(model, cache, answer_tokens, positions, scale=False)


def accumulated_at_last(model, cache, answer_tokens, positions=None):
    return _accumulated(model, cache, answer_tokens, positions, read_at="last")


# ---- per_layer_logit_diffs ------------------------------------------------------------------


def _layers(model, cache, answer_tokens, positions, incl_embeds=True, scale=True, read_at="same"):
    stack, labels = cache.decompose_resid(layer=-1, incl_embeds=incl_embeds, return_labels=True)
    where = positions if read_at == "same" else None
    values = _to_logit_diff(_at(stack, where), cache, _dirs(model, answer_tokens), where, scale)
    return values, labels


def layers_accumulated(model, cache, answer_tokens, positions=None):
    stack, labels = cache.decompose_resid(layer=-1, return_labels=True)
    values, _ = _accumulated(model, cache, answer_tokens, positions)
    return values, labels


def layers_without_embeds(model, cache, answer_tokens, positions=None):
    return _layers(model, cache, answer_tokens, positions, incl_embeds=False)


def layers_no_scale(model, cache, answer_tokens, positions=None):
    return _layers(model, cache, answer_tokens, positions, scale=False)


def layers_at_last(model, cache, answer_tokens, positions=None):
    return _layers(model, cache, answer_tokens, positions, read_at="last")


# ---- head_results_at ------------------------------------------------------------------------


def _results(model, cache, positions, layout="layer head batch d_model", sum_heads=False):
    out = []
    for layer in range(model.cfg.n_layers):
        z = cache["z", layer]  # [batch, pos, head, d_head]
        at = z[:, -1] if positions is None else z[torch.arange(z.shape[0]), positions]
        out.append(einops.einsum(at, model.W_O[layer], "b h e, h e d -> b h d"))
    stacked = torch.stack(out)  # [layer, batch, head, d_model]
    if sum_heads:
        return stacked.sum(2)  # [layer, batch, d_model]
    return einops.rearrange(stacked, f"layer batch head d_model -> {layout}")


def results_are_z(model, cache, positions):
    rows = torch.arange(len(positions))
    z = torch.stack([cache["z", layer][rows, positions] for layer in range(model.cfg.n_layers)])
    return z.permute(0, 2, 1, 3)  # [layer, head, batch, d_head]


def results_batch_first(model, cache, positions):
    return _results(model, cache, positions, layout="batch layer head d_model")


def results_at_last(model, cache, positions):
    return _results(model, cache, None)


def results_summed_over_heads(model, cache, positions):
    return _results(model, cache, positions, sum_heads=True)


# ---- per_head_logit_diffs -------------------------------------------------------------------


def heads_transposed(model, cache, answer_tokens, positions=None):
    results = _results(model, cache, positions, layout="head layer batch d_model")
    return _to_logit_diff(results, cache, _dirs(model, answer_tokens), positions)


def heads_no_scale(model, cache, answer_tokens, positions=None):
    results = _results(model, cache, positions)
    return _to_logit_diff(results, cache, _dirs(model, answer_tokens), positions, scale=False)


def heads_at_last(model, cache, answer_tokens, positions=None):
    results = _results(model, cache, None)
    return _to_logit_diff(results, cache, _dirs(model, answer_tokens), None)


# ---- ioi_attention --------------------------------------------------------------------------


def _attention(model, ds, cache, dest_pos, src_pos, name="pattern"):
    if cache is None:
        _, cache = model.run_with_cache(ds.toks)
    rows = torch.arange(ds.N)
    layers = range(model.cfg.n_layers)
    return torch.stack([cache[name, layer][rows, :, dest_pos, src_pos].mean(0) for layer in layers])


def attention_swapped(model, ds, dest, src, cache=None):
    return _attention(model, ds, cache, ds.word_idx[src], ds.word_idx[dest])


def attention_scores(model, ds, dest, src, cache=None):
    return _attention(model, ds, cache, ds.word_idx[dest], ds.word_idx[src], "attn_scores")


def attention_from_last(model, ds, dest, src, cache=None):
    last = torch.full_like(ds.word_idx[dest], ds.toks.shape[1] - 1)
    return _attention(model, ds, cache, last, ds.word_idx[src])


PLANTED = {
    ("logit_diff_directions", "wrong_sign"): directions_s_minus_io,
    ("logit_diff_directions", "embedding_not_unembedding"): directions_from_embedding,
    ("logit_diff_directions", "not_subtracted"): directions_not_subtracted,
    ("apply_final_ln", "no_ln_scale"): ln_without_scale,
    ("apply_final_ln", "not_centred"): ln_without_centring,
    ("apply_final_ln", "scale_at_last_position"): ln_scale_from_last,
    ("residual_stack_to_logit_diff", "no_ln_scale"): stack_no_scale,
    ("residual_stack_to_logit_diff", "scale_at_last_position"): stack_scale_at_last,
    ("residual_stack_to_logit_diff", "returned_per_prompt"): stack_per_prompt,
    ("residual_stack_to_logit_diff", "sum_not_mean"): stack_sum,
    ("accumulated_resid_logit_diffs", "missing_mid"): accumulated_without_mid,
    ("accumulated_resid_logit_diffs", "no_ln_scale"): accumulated_no_scale,
    ("accumulated_resid_logit_diffs", "ignored_positions"): accumulated_at_last,
    ("per_layer_logit_diffs", "accumulated_not_decomposed"): layers_accumulated,
    ("per_layer_logit_diffs", "missing_embeds"): layers_without_embeds,
    ("per_layer_logit_diffs", "no_ln_scale"): layers_no_scale,
    ("per_layer_logit_diffs", "ignored_positions"): layers_at_last,
    ("head_results_at", "z_not_output"): results_are_z,
    ("head_results_at", "wrong_layout"): results_batch_first,
    ("head_results_at", "ignored_positions"): results_at_last,
    ("head_results_at", "summed_heads"): results_summed_over_heads,
    ("per_head_logit_diffs", "transposed"): heads_transposed,
    ("per_head_logit_diffs", "no_ln_scale"): heads_no_scale,
    ("per_head_logit_diffs", "ignored_positions"): heads_at_last,
    ("ioi_attention", "swapped_dest_src"): attention_swapped,
    ("ioi_attention", "scores_not_pattern"): attention_scores,
    ("ioi_attention", "ignored_positions"): attention_from_last,
}

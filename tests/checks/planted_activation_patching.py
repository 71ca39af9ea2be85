"""Planted mistakes for section 3: one wrong implementation per diagnosis its checkers make."""

from __future__ import annotations

from functools import partial

import torch
from transformer_lens.utilities import get_act_name


def _final(logits, positions):
    if positions is None:
        return logits[:, -1]
    return logits[torch.arange(logits.shape[0]), positions]


def _diff(logits, answer_tokens, positions, mean=True):
    picked = _final(logits, positions).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff.mean() if mean else diff


# ---- ioi_metric -------------------------------------------------------------------------------


def metric_raw(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    return _diff(logits, answer_tokens, positions)


def metric_swapped(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    diff = _diff(logits, answer_tokens, positions)
    return (diff - clean_logit_diff) / (corrupted_logit_diff - clean_logit_diff)


def metric_over_clean(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    return _diff(logits, answer_tokens, positions) / clean_logit_diff


def metric_last(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    diff = _diff(logits, answer_tokens, None)
    return (diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


def metric_per_prompt(
    logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None
):
    diff = _diff(logits, answer_tokens, positions, mean=False)
    return (diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


# ---- hook functions ---------------------------------------------------------------------------


def resid_all_positions(corrupted_residual_component, hook, pos, clean_cache):
    return clean_cache[hook.name].clone()


def resid_batch_axis(corrupted_residual_component, hook, pos, clean_cache):
    corrupted_residual_component[pos] = clean_cache[hook.name][pos]
    return corrupted_residual_component


def resid_clean_slice(corrupted_residual_component, hook, pos, clean_cache):
    return clean_cache[hook.name][:, pos]


def head_position_axis(corrupted_head_vector, hook, head_index, clean_cache):
    corrupted_head_vector[:, head_index] = clean_cache[hook.name][:, head_index]
    return corrupted_head_vector


def head_all_heads(corrupted_head_vector, hook, head_index, clean_cache):
    corrupted_head_vector[:] = clean_cache[hook.name]  # in place, returns None


def pattern_z_axis(corrupted_head_vector, hook, head_index, clean_cache):
    corrupted_head_vector[:, :, head_index] = clean_cache[hook.name][:, :, head_index]
    return corrupted_head_vector


def pattern_all_heads(corrupted_head_vector, hook, head_index, clean_cache):
    return clean_cache[hook.name]


# ---- sweeps -----------------------------------------------------------------------------------


def _patch_pos(act, hook, pos, clean_cache):
    act[:, pos] = clean_cache[hook.name][:, pos]
    return act


def _patch_head(act, hook, head, clean_cache, axis=2, pos=None):
    index = [slice(None)] * act.ndim
    index[axis] = head
    if pos is not None:
        index[1] = pos
    act[tuple(index)] = clean_cache[hook.name][tuple(index)]
    return act


@torch.inference_mode()
def _grid(model, tokens, metric, rows, cols, make_hook):
    """[rows, cols] metric values; make_hook(row, col) -> (hook name, hook fn)."""
    out = torch.zeros(rows, cols)
    for r in range(rows):
        for c in range(cols):
            out[r, c] = metric(model.run_with_hooks(tokens, fwd_hooks=[make_hook(r, c)]))
    return out


def resid_pre_transposed(model, corrupted_tokens, clean_cache, patching_metric):
    n_pos = corrupted_tokens.shape[1]
    return _grid(
        model,
        corrupted_tokens,
        patching_metric,
        n_pos,
        model.cfg.n_layers,
        lambda p, layer: (
            get_act_name("resid_pre", layer),
            partial(_patch_pos, pos=p, clean_cache=clean_cache),
        ),
    )


def resid_pre_uses_resid_post(model, corrupted_tokens, clean_cache, patching_metric):
    return _grid(
        model,
        corrupted_tokens,
        patching_metric,
        model.cfg.n_layers,
        corrupted_tokens.shape[1],
        lambda layer, p: (
            get_act_name("resid_post", layer),
            partial(_patch_pos, pos=p, clean_cache=clean_cache),
        ),
    )


def resid_pre_every_position(model, corrupted_tokens, clean_cache, patching_metric):
    def patch_all(act, hook):
        return clean_cache[hook.name].clone()

    return _grid(
        model,
        corrupted_tokens,
        patching_metric,
        model.cfg.n_layers,
        corrupted_tokens.shape[1],
        lambda layer, p: (get_act_name("resid_pre", layer), patch_all),
    )


def head_out_transposed(model, corrupted_tokens, clean_cache, patching_metric):
    return _grid(
        model,
        corrupted_tokens,
        patching_metric,
        model.cfg.n_heads,
        model.cfg.n_layers,
        lambda h, layer: (
            get_act_name("z", layer),
            partial(_patch_head, head=h, clean_cache=clean_cache),
        ),
    )


def head_out_whole_layer(model, corrupted_tokens, clean_cache, patching_metric):
    def patch_all(act, hook):
        return clean_cache[hook.name].clone()

    return _grid(
        model,
        corrupted_tokens,
        patching_metric,
        model.cfg.n_layers,
        model.cfg.n_heads,
        lambda layer, h: (get_act_name("z", layer), patch_all),
    )


def head_out_last_position(model, corrupted_tokens, clean_cache, patching_metric):
    last = corrupted_tokens.shape[1] - 1
    return _grid(
        model,
        corrupted_tokens,
        patching_metric,
        model.cfg.n_layers,
        model.cfg.n_heads,
        lambda layer, h: (
            get_act_name("z", layer),
            partial(_patch_head, head=h, clean_cache=clean_cache, pos=last),
        ),
    )


def _every(model, corrupted_tokens, clean_cache, patching_metric, components):
    grids = []
    for component in components:
        axis = 1 if component == "pattern" else 2
        grids.append(
            _grid(
                model,
                corrupted_tokens,
                patching_metric,
                model.cfg.n_layers,
                model.cfg.n_heads,
                lambda layer, h, c=component, a=axis: (
                    get_act_name(c, layer),
                    partial(_patch_head, head=h, clean_cache=clean_cache, axis=a),
                ),
            )
        )
    return torch.stack(grids)


def every_qkv_order(model, corrupted_tokens, clean_cache, patching_metric):
    return _every(
        model, corrupted_tokens, clean_cache, patching_metric, ("q", "k", "v", "z", "pattern")
    )


def every_without_pattern(model, corrupted_tokens, clean_cache, patching_metric):
    return _every(model, corrupted_tokens, clean_cache, patching_metric, ("z", "q", "k", "v"))


# ---- attribution patching ---------------------------------------------------------------------


def _attribution(
    model, receiver_tokens, donor_tokens, metric, flip=False, add_value=True, value_from=None
):
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    with torch.inference_mode():
        _, donor = model.run_with_cache(donor_tokens, names_filter=lambda n: n in names)
    saved = {}

    def save(act, hook):
        saved[hook.name] = act

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[(n, save) for n in names]):
            value = metric(model(receiver_tokens))
        grads = torch.autograd.grad(value, [saved[n] for n in names])
    steps = [donor[n] - saved[n].detach() for n in names]
    if flip:
        steps = [-s for s in steps]
    change = torch.stack([(s * g).sum((0, 1, 3)) for s, g in zip(steps, grads, strict=True)])
    base = value.detach() if value_from is None else value_from
    return base + change if add_value else change


def attribution_change_only(model, clean_tokens, corrupted_tokens, patching_metric):
    return _attribution(model, corrupted_tokens, clean_tokens, patching_metric, add_value=False)


def attribution_corrupted_minus_clean(model, clean_tokens, corrupted_tokens, patching_metric):
    return _attribution(model, corrupted_tokens, clean_tokens, patching_metric, flip=True)


def attribution_grad_in_clean_run(model, clean_tokens, corrupted_tokens, patching_metric):
    with torch.inference_mode():
        corrupted_value = patching_metric(model(corrupted_tokens))
    # Gradient and activations of the clean run, stepping by clean - corrupted.
    return _attribution(
        model,
        clean_tokens,
        corrupted_tokens,
        patching_metric,
        flip=True,
        value_from=corrupted_value,
    )


PLANTED = {
    ("ioi_metric", "not_normalised"): metric_raw,
    ("ioi_metric", "baselines_swapped"): metric_swapped,
    ("ioi_metric", "forgot_corrupted_baseline"): metric_over_clean,
    ("ioi_metric", "ignored_positions"): metric_last,
    ("ioi_metric", "returned_per_prompt"): metric_per_prompt,
    ("patch_residual_component", "patched_all_positions"): resid_all_positions,
    ("patch_residual_component", "indexed_batch_axis"): resid_batch_axis,
    ("patch_residual_component", "returned_clean_slice"): resid_clean_slice,
    ("patch_head_vector", "indexed_position_axis"): head_position_axis,
    ("patch_head_vector", "patched_all_heads"): head_all_heads,
    ("patch_attn_patterns", "indexed_wrong_axis"): pattern_z_axis,
    ("patch_attn_patterns", "patched_all_heads"): pattern_all_heads,
    ("get_act_patch_resid_pre", "transposed"): resid_pre_transposed,
    ("get_act_patch_resid_pre", "off_by_one_layer"): resid_pre_uses_resid_post,
    ("get_act_patch_resid_pre", "patched_all_positions"): resid_pre_every_position,
    ("get_act_patch_attn_head_out_all_pos", "transposed"): head_out_transposed,
    ("get_act_patch_attn_head_out_all_pos", "patched_all_heads"): head_out_whole_layer,
    ("get_act_patch_attn_head_out_all_pos", "patched_last_position_only"): head_out_last_position,
    ("get_act_patch_attn_head_all_pos_every", "wrong_component_order"): every_qkv_order,
    ("get_act_patch_attn_head_all_pos_every", "missing_component"): every_without_pattern,
    ("attribution_patch_attn_head_out_all_pos", "change_not_value"): attribution_change_only,
    (
        "attribution_patch_attn_head_out_all_pos",
        "wrong_delta_sign",
    ): attribution_corrupted_minus_clean,
    (
        "attribution_patch_attn_head_out_all_pos",
        "gradient_in_clean_run",
    ): attribution_grad_in_clean_run,
}

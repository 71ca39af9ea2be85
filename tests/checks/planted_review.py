"""Answers from an independent adversarial review of the checkers (2026-12-03).

A reviewer who had not seen this corpus wrote these as a learner would: mostly the course's
solution with one thing changed, in a learner's style (short names, lambdas). Against the
checkers of that day 20 of the wrong ones passed and 49 got only a generic diagnosis; each is
now tagged with the diagnosis that names its mistake.
"""

# ruff: noqa: E731, E741, B905

from __future__ import annotations

from functools import partial

import einops
import torch
from transformer_lens.utilities import get_act_name

import solutions.part1_model_and_task as s1
import solutions.part2_logit_attribution as s2
import solutions.part3_activation_patching as s3
import solutions.part4_path_patching as s4
import solutions.part5_paper_replication as s5
import solutions.part6_further as s6
from ioi.circuit import BackupResult, Faithfulness, KnockoutScore, PermutationTest
from ioi.circuit.ablation import logit_diff_with_hooks
from ioi.heads import NameMoverScatter, name_tokens, repeated_tokens
from tests.checks.corpus import correct, wrong


def _final(logits, positions):
    if positions is None:
        return logits[:, -1]
    return logits[torch.arange(logits.shape[0]), positions]


# ============================ part 1 ============================


@wrong("logits_to_ave_logit_diff", "absolute_value", "abs() of each prompt's difference (|IO - S|)")
def w_ld_abs(logits, answer_tokens, per_prompt=False, positions=None):
    f = _final(logits, positions)
    d = (f.gather(1, answer_tokens)[:, 0] - f.gather(1, answer_tokens)[:, 1]).abs()
    return d if per_prompt else d.mean()


@wrong(
    "logits_to_ave_logit_diff",
    "position_off_by_one",
    "treats positions as the answer's position, reads positions-1",
)
def w_ld_pm1(logits, answer_tokens, per_prompt=False, positions=None):
    f = logits[:, -1] if positions is None else logits[torch.arange(len(positions)), positions - 1]
    p = f.gather(1, answer_tokens)
    d = p[:, 0] - p[:, 1]
    return d if per_prompt else d.mean()


@wrong("logits_to_ave_logit_diff", "median_not_mean", "median over prompts instead of mean")
def w_ld_median(logits, answer_tokens, per_prompt=False, positions=None):
    f = _final(logits, positions)
    p = f.gather(1, answer_tokens)
    d = p[:, 0] - p[:, 1]
    return d if per_prompt else d.median()


@correct("logits_to_ave_logit_diff", "difference of log-softmax (= logit difference)")
def c_ld_logsoftmax(logits, answer_tokens, per_prompt=False, positions=None):
    lp = _final(logits, positions).log_softmax(-1)
    d = (
        lp[torch.arange(lp.shape[0]), answer_tokens[:, 0]]
        - lp[torch.arange(lp.shape[0]), answer_tokens[:, 1]]
    )
    return d if per_prompt else d.mean()


@wrong(
    "io_probability",
    "mutated_input",
    "in-place max-subtraction for stability on a view of logits (mutates input)",
)
def w_iop_inplace(logits, answer_tokens, positions=None):
    f = logits[:, -1] if positions is None else logits[torch.arange(logits.shape[0]), positions]
    f -= f.max(-1, keepdim=True).values  # view when positions is None: writes into logits
    p = f.exp() / f.exp().sum(-1, keepdim=True)
    return p.gather(1, answer_tokens[:, :1]).squeeze(1)


@wrong("io_probability", "softmax_wrong_dim", "exp / exp.sum() over the whole batch (no dim)")
def w_iop_sumall(logits, answer_tokens, positions=None):
    f = _final(logits, positions)
    p = f.exp() / f.exp().sum()
    return p.gather(1, answer_tokens[:, :1]).squeeze(1)


@wrong("io_probability", "kept_column_dim", "forgot squeeze: returns [batch, 1]")
def w_iop_nosqueeze(logits, answer_tokens, positions=None):
    return _final(logits, positions).softmax(-1).gather(1, answer_tokens[:, :1])


@wrong(
    "io_probability",
    "max_probability",
    "probability of the argmax token (max prob) instead of the IO's",
)
def w_iop_maxprob(logits, answer_tokens, positions=None):
    return _final(logits, positions).softmax(-1).max(-1).values


@wrong("prompt_scores", "log_probability", "io_prob is the log-probability (log_softmax)")
def w_ps_logprob(model, ds):
    out = s1.prompt_scores(model, ds)
    logits = model(ds.toks)
    f = _final(logits, ds.word_idx["end"]).log_softmax(-1)
    out["io_prob"] = f.gather(1, ds.answer_tokens[:, :1]).squeeze(1).detach().cpu()
    return out


@wrong("prompt_scores", "wrong_sign", "logit_diff computed S - IO (and io_over_s from it)")
def w_ps_sign(model, ds):
    out = s1.prompt_scores(model, ds)
    out["logit_diff"] = -out["logit_diff"]
    out["io_over_s"] = (out["logit_diff"] > 0).float()
    return out


@wrong("prompt_scores", "top_k_not_top1", "io_top1 = IO among top-2 tokens (topk(2))")
def w_ps_top2(model, ds):
    out = s1.prompt_scores(model, ds)
    logits = model(ds.toks)
    top = _final(logits, ds.word_idx["end"]).topk(2, -1).indices
    out["io_top1"] = (top.cpu() == ds.io_tokenIDs[:, None]).any(-1).float()
    return out


# ============================ part 2 ============================


@wrong(
    "logit_diff_directions",
    "transposed",
    "W_U[:, io] - W_U[:, s] without transposing -> [d_model, batch]",
)
def w_dir_notT(model, answer_tokens):
    return model.W_U[:, answer_tokens[:, 0]] - model.W_U[:, answer_tokens[:, 1]]


@wrong(
    "logit_diff_directions",
    "added_unembed_bias",
    "adds the unembedding bias difference to every coordinate",
)
def w_dir_bias(model, answer_tokens):
    d = model.W_U[:, answer_tokens[:, 0]].T - model.W_U[:, answer_tokens[:, 1]].T
    return d + (model.b_U[answer_tokens[:, 0]] - model.b_U[answer_tokens[:, 1]])[:, None]


@correct("logit_diff_directions", "W_U.T[io] - W_U.T[s]")
def c_dir_T(model, answer_tokens):
    WT = model.W_U.T
    return WT[answer_tokens[:, 0]] - WT[answer_tokens[:, 1]]


@wrong(
    "apply_final_ln",
    "mutated_input",
    "centres and divides residual_stack IN PLACE (mutates the caller's stack)",
)
def w_ln_inplace(residual_stack, cache, positions=None):
    scale = cache["ln_final.hook_scale"]
    scale = scale[:, -1] if positions is None else scale[torch.arange(scale.shape[0]), positions]
    residual_stack -= residual_stack.mean(-1, keepdim=True)
    residual_stack /= scale
    return residual_stack


@wrong(
    "apply_final_ln",
    "centred_wrong_axis",
    "centres over the batch dim (mean(-2)) instead of d_model",
)
def w_ln_batchmean(residual_stack, cache, positions=None):
    scale = cache["ln_final.hook_scale"]
    scale = scale[:, -1] if positions is None else scale[torch.arange(scale.shape[0]), positions]
    return (residual_stack - residual_stack.mean(-2, keepdim=True)) / scale


@wrong(
    "apply_final_ln",
    "same_position_for_all_prompts",
    "scale[:, positions] (batch x batch grid) instead of scale[rows, positions]",
)
def w_ln_grid(residual_stack, cache, positions=None):
    scale = cache["ln_final.hook_scale"]
    scale = scale[:, -1] if positions is None else scale[:, positions][:, 0]
    return (residual_stack - residual_stack.mean(-1, keepdim=True)) / scale


@wrong(
    "apply_final_ln",
    "position_off_by_one",
    "divides by the scale at S2-like fixed offset: positions-1",
)
def w_ln_pm1(residual_stack, cache, positions=None):
    scale = cache["ln_final.hook_scale"]
    scale = (
        scale[:, -1] if positions is None else scale[torch.arange(scale.shape[0]), positions - 1]
    )
    return (residual_stack - residual_stack.mean(-1, keepdim=True)) / scale


@correct("apply_final_ln", "divide first, centre after (scale is constant per vector)")
def c_ln_order(residual_stack, cache, positions=None):
    scale = cache["ln_final.hook_scale"]
    scale = scale[:, -1] if positions is None else scale[torch.arange(scale.shape[0]), positions]
    x = residual_stack / scale
    return x - x.mean(-1, keepdim=True)


@wrong(
    "residual_stack_to_logit_diff",
    "normalised_directions",
    "unit-normalises the logit-diff directions first",
)
def w_rs_normdir(residual_stack, cache, logit_diff_directions, positions=None):
    d = logit_diff_directions / logit_diff_directions.norm(dim=-1, keepdim=True)
    return s2.residual_stack_to_logit_diff(residual_stack, cache, d, positions)


@wrong(
    "residual_stack_to_logit_diff",
    "mutated_input",
    "centres residual_stack in place before the dot (mutates input)",
)
def w_rs_inplace(residual_stack, cache, logit_diff_directions, positions=None):
    scale = cache["ln_final.hook_scale"]
    scale = scale[:, -1] if positions is None else scale[torch.arange(scale.shape[0]), positions]
    residual_stack -= residual_stack.mean(-1, keepdim=True)
    residual_stack /= scale
    return einops.einsum(residual_stack, logit_diff_directions, "... b d, b d -> ... b").mean(-1)


@wrong(
    "residual_stack_to_logit_diff",
    "averaged_components",
    "averages over components as well as prompts (scalar)",
)
def w_rs_meanall(residual_stack, cache, logit_diff_directions, positions=None):
    scaled = s2.apply_final_ln(residual_stack, cache, positions)
    return einops.einsum(scaled, logit_diff_directions, "... b d, b d -> ... b").mean()


@wrong(
    "accumulated_resid_logit_diffs",
    "none_branch_raised",
    "positions=None branch forgets to select a position (passes [comp,batch,pos,d])",
)
def w_acc_none(model, cache, answer_tokens, positions=None):
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=True, return_labels=True)
    if positions is not None:
        stack = stack[:, torch.arange(stack.shape[1]), positions]
    d = s2.logit_diff_directions(model, answer_tokens)
    return s2.residual_stack_to_logit_diff(stack, cache, d, positions), labels


@wrong(
    "accumulated_resid_logit_diffs",
    "layer_norm_twice",
    "apply_ln=True in accumulated_resid AND residual_stack_to_logit_diff (LN twice)",
)
def w_acc_double_ln(model, cache, answer_tokens, positions=None):
    stack, labels = cache.accumulated_resid(
        layer=-1, incl_mid=True, apply_ln=True, return_labels=True
    )
    stack = stack[:, torch.arange(stack.shape[1]), positions]
    d = s2.logit_diff_directions(model, answer_tokens)
    return s2.residual_stack_to_logit_diff(stack, cache, d, positions), labels


@wrong(
    "accumulated_resid_logit_diffs",
    "missed_last_layer",
    "accumulated_resid(layer=n_layers-1): stops before the last layer",
)
def w_acc_lastlayer(model, cache, answer_tokens, positions=None):
    stack, labels = cache.accumulated_resid(
        layer=model.cfg.n_layers - 1, incl_mid=True, return_labels=True
    )
    stack = stack[:, torch.arange(stack.shape[1]), positions]
    d = s2.logit_diff_directions(model, answer_tokens)
    return s2.residual_stack_to_logit_diff(stack, cache, d, positions), labels


@wrong(
    "accumulated_resid_logit_diffs",
    "ln_per_component",
    "apply_ln=True then plain dot product (TL 3.9 recomputes ln_final per component at the final layer: logit lens)",
)
def w_acc_applyln_recomputes(model, cache, answer_tokens, positions=None):
    stack, labels = cache.accumulated_resid(
        layer=-1, incl_mid=True, apply_ln=True, return_labels=True
    )
    rows = torch.arange(stack.shape[1])
    stack = stack[:, :, -1] if positions is None else stack[:, rows, positions]
    d = s2.logit_diff_directions(model, answer_tokens)
    return einops.einsum(stack, d, "c b d, b d -> c b").mean(-1), labels


@wrong(
    "per_layer_logit_diffs",
    "missed_last_layer",
    "decompose_resid(layer=n_layers-1): last layer's attn/MLP missing",
)
def w_pl_lastlayer(model, cache, answer_tokens, positions=None):
    stack, labels = cache.decompose_resid(layer=model.cfg.n_layers - 1, return_labels=True)
    stack = stack[:, torch.arange(stack.shape[1]), positions]
    d = s2.logit_diff_directions(model, answer_tokens)
    return s2.residual_stack_to_logit_diff(stack, cache, d, positions), labels


@wrong(
    "per_layer_logit_diffs",
    "stack_at_last_position",
    "stack read at last column but positions passed to LN scale",
)
def w_pl_mixed(model, cache, answer_tokens, positions=None):
    stack, labels = cache.decompose_resid(layer=-1, return_labels=True)
    stack = stack[:, :, -1]
    d = s2.logit_diff_directions(model, answer_tokens)
    return s2.residual_stack_to_logit_diff(stack, cache, d, positions), labels


@wrong("head_results_at", "hard_coded_size", "hard-coded range(3) layers (toy size)")
def w_hr_hard(model, cache, positions):
    out = []
    for layer in range(3):
        z = cache["z", layer]
        at = z[:, -1] if positions is None else z[torch.arange(z.shape[0]), positions]
        out.append(einops.einsum(at, model.W_O[layer], "b h e, h e d -> h b d"))
    return torch.stack(out)


@wrong(
    "head_results_at",
    "first_position_for_none",
    "positions=None branch reads the FIRST position z[:, 0]",
)
def w_hr_none(model, cache, positions):
    out = []
    for layer in range(model.cfg.n_layers):
        z = cache["z", layer]
        at = z[:, 0] if positions is None else z[torch.arange(z.shape[0]), positions]
        out.append(einops.einsum(at, model.W_O[layer], "b h e, h e d -> h b d"))
    return torch.stack(out)


@wrong("head_results_at", "wrong_layout", "einsum output 'batch head d_model' (not permuted)")
def w_hr_layout(model, cache, positions):
    out = []
    for layer in range(model.cfg.n_layers):
        z = cache["z", layer]
        at = z[torch.arange(z.shape[0]), positions]
        out.append(einops.einsum(at, model.W_O[layer], "b h e, h e d -> b h d"))
    return torch.stack(out)


@wrong("per_head_logit_diffs", "stack_at_last_position", "stack_head_results (needs hook_result)")
def w_ph_result(model, cache, answer_tokens, positions=None):
    res = cache.stack_head_results(layer=-1, pos_slice=-1)
    d = s2.logit_diff_directions(model, answer_tokens)
    return s2.residual_stack_to_logit_diff(res, cache, d, positions).reshape(
        model.cfg.n_layers, model.cfg.n_heads
    )


@wrong(
    "per_head_logit_diffs",
    "scrambled_layout",
    "flattened head-major then .view(n_layers, n_heads) (scrambled)",
)
def w_ph_view(model, cache, answer_tokens, positions=None):
    r = s2.head_results_at(model, cache, positions)  # [layer, head, batch, d]
    d = s2.logit_diff_directions(model, answer_tokens)
    v = s2.residual_stack_to_logit_diff(r, cache, d, positions)  # [layer, head]
    return v.T.reshape(-1).view(model.cfg.n_layers, model.cfg.n_heads)


@wrong(
    "per_head_logit_diffs", "added_b_O", "adds b_O/n_heads to every head's output (shares the bias)"
)
def w_ph_bias_share(model, cache, answer_tokens, positions=None):
    r = (
        s2.head_results_at(model, cache, positions)
        + model.b_O[:, None, None, :] / model.cfg.n_heads
    )
    d = s2.logit_diff_directions(model, answer_tokens)
    return s2.residual_stack_to_logit_diff(r, cache, d, positions)


@wrong("ioi_attention", "max_not_mean", "max over prompts instead of mean")
def w_att_max(model, ds, dest, src, cache=None):
    if cache is None:
        _, cache = model.run_with_cache(ds.toks)
    rows = torch.arange(ds.N)
    return torch.stack(
        [
            cache["pattern", l][rows, :, ds.word_idx[dest], ds.word_idx[src]].max(0).values
            for l in range(model.cfg.n_layers)
        ]
    )


@wrong("ioi_attention", "position_off_by_one", "uses word_idx[end]-1 as the query when dest == end")
def w_att_endm1(model, ds, dest, src, cache=None):
    if cache is None:
        _, cache = model.run_with_cache(ds.toks)
    rows = torch.arange(ds.N)
    dp = ds.word_idx[dest] - (1 if dest == "end" else 0)
    return torch.stack(
        [
            cache["pattern", l][rows, :, dp, ds.word_idx[src]].mean(0)
            for l in range(model.cfg.n_layers)
        ]
    )


@wrong("ioi_attention", "ignored_given_cache")
def c_att_rerun(model, ds, dest, src, cache=None):
    _, cache = model.run_with_cache(ds.toks)
    rows = torch.arange(ds.N)
    return torch.stack(
        [
            cache["pattern", l][rows, :, ds.word_idx[dest], ds.word_idx[src]].mean(0)
            for l in range(model.cfg.n_layers)
        ]
    )


@correct("ioi_attention", "softmax of the (already masked) attn_scores")
def c_att_scores(model, ds, dest, src, cache=None):
    if cache is None:
        _, cache = model.run_with_cache(ds.toks)
    rows = torch.arange(ds.N)
    return torch.stack(
        [
            cache["attn_scores", l]
            .softmax(-1)[rows, :, ds.word_idx[dest], ds.word_idx[src]]
            .mean(0)
            for l in range(model.cfg.n_layers)
        ]
    )


# ============================ part 3 ============================


@wrong("ioi_metric", "absolute_value", "abs() of the batch-mean logit diff before normalising")
def w_met_abs(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    f = _final(logits, positions)
    p = f.gather(1, answer_tokens)
    ld = (p[:, 0] - p[:, 1]).mean().abs()
    return (ld - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "first_position_for_none", "positions=None branch reads logits[:, 0]")
def w_met_none(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    f = logits[:, 0] if positions is None else logits[torch.arange(logits.shape[0]), positions]
    p = f.gather(1, answer_tokens)
    ld = (p[:, 0] - p[:, 1]).mean()
    return (ld - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong("ioi_metric", "clamped", "normalises each prompt then clamps to [0, 1] before averaging")
def w_met_clamp(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    f = _final(logits, positions)
    p = f.gather(1, answer_tokens)
    m = ((p[:, 0] - p[:, 1]) - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
    return m.clamp(0, 1).mean()


@wrong(
    "patch_residual_component",
    "patched_a_range",
    "slice [:, pos:] patches pos and every later position",
)
def w_prc_slice(corrupted_residual_component, hook, pos, clean_cache):
    corrupted_residual_component[:, pos:] = clean_cache[hook.name][:, pos:]
    return corrupted_residual_component


@wrong(
    "patch_residual_component",
    "mutated_input",
    "writes the corrupted value into the clean cache (direction reversed)",
)
def w_prc_reverse(corrupted_residual_component, hook, pos, clean_cache):
    clean_cache[hook.name][:, pos] = corrupted_residual_component[:, pos]
    return corrupted_residual_component


@correct("patch_residual_component", "in-place write, returns None")
def c_prc_none(corrupted_residual_component, hook, pos, clean_cache):
    corrupted_residual_component[:, pos, :] = clean_cache[hook.name][:, pos, :]


@wrong(
    "patch_head_vector",
    "indexed_d_head_axis",
    "[..., head_index] indexes d_head, not the head axis",
)
def w_phv_ellipsis(corrupted_head_vector, hook, head_index, clean_cache):
    corrupted_head_vector[..., head_index] = clean_cache[hook.name][..., head_index]
    return corrupted_head_vector


@correct("patch_head_vector", "torch.where with a head mask")
def c_phv_where(corrupted_head_vector, hook, head_index, clean_cache):
    mask = torch.zeros(corrupted_head_vector.shape[2], dtype=torch.bool)
    mask[head_index] = True
    return torch.where(mask[None, None, :, None], clean_cache[hook.name], corrupted_head_vector)


@wrong(
    "patch_attn_patterns",
    "assignment_shapes_differ",
    "clean_cache[hook.name][head_index] (indexes the batch of the clean pattern)",
)
def w_pap_batch(corrupted_head_vector, hook, head_index, clean_cache):
    corrupted_head_vector[:, head_index] = clean_cache[hook.name][head_index]
    return corrupted_head_vector


@wrong(
    "get_act_patch_resid_pre",
    "hard_coded_size",
    "hard-coded 3 layers (toy size) in torch.zeros and range",
)
def w_rp_hard(model, corrupted_tokens, clean_cache, patching_metric):
    n_pos = corrupted_tokens.shape[1]
    res = torch.zeros(3, n_pos)
    with torch.inference_mode():
        for layer in range(3):
            for pos in range(n_pos):
                h = partial(s3.patch_residual_component, pos=pos, clean_cache=clean_cache)
                res[layer, pos] = patching_metric(
                    model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name("resid_pre", layer), h)]
                    )
                )
    return res


@wrong("get_act_patch_resid_pre", "off_by_one_layer", "hooks resid_mid instead of resid_pre")
def w_rp_mid(model, corrupted_tokens, clean_cache, patching_metric):
    n_pos = corrupted_tokens.shape[1]
    res = torch.zeros(model.cfg.n_layers, n_pos)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for pos in range(n_pos):
                h = partial(s3.patch_residual_component, pos=pos, clean_cache=clean_cache)
                res[layer, pos] = patching_metric(
                    model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name("resid_mid", layer), h)]
                    )
                )
    return res


@correct(
    "get_act_patch_block_every",
    "mlp_post (hidden activations) instead of mlp_out: position-wise, so equivalent",
)
def c_be_mlppost(model, corrupted_tokens, clean_cache, patching_metric):
    n_pos = corrupted_tokens.shape[1]
    comps = ("resid_pre", "attn_out", "mlp_post")
    res = torch.zeros(3, model.cfg.n_layers, n_pos)
    with torch.inference_mode():
        for i, c in enumerate(comps):
            for layer in range(model.cfg.n_layers):
                for pos in range(n_pos):
                    h = partial(s3.patch_residual_component, pos=pos, clean_cache=clean_cache)
                    res[i, layer, pos] = patching_metric(
                        model.run_with_hooks(
                            corrupted_tokens, fwd_hooks=[(get_act_name(c, layer), h)]
                        )
                    )
    return res


@wrong(
    "get_act_patch_attn_head_out_all_pos",
    "hard_coded_size",
    "hard-coded torch.zeros(3, 4) and ranges (toy size)",
)
def w_ho_hard(model, corrupted_tokens, clean_cache, patching_metric):
    res = torch.zeros(3, 4)
    with torch.inference_mode():
        for layer in range(3):
            for head in range(4):
                h = partial(s3.patch_head_vector, head_index=head, clean_cache=clean_cache)
                res[layer, head] = patching_metric(
                    model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name("z", layer), h)]
                    )
                )
    return res


@wrong(
    "get_act_patch_attn_head_out_all_pos",
    "patched_other_component",
    "patches the head's value v instead of z",
)
def w_ho_v(model, corrupted_tokens, clean_cache, patching_metric):
    res = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                h = partial(s3.patch_head_vector, head_index=head, clean_cache=clean_cache)
                res[layer, head] = patching_metric(
                    model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name("v", layer), h)]
                    )
                )
    return res


@wrong(
    "get_act_patch_attn_head_out_by_pos",
    "patched_a_range",
    "patches z[:, :pos+1, head] (prefix up to pos) instead of z[:, pos, head]",
)
def w_bp_prefix(model, corrupted_tokens, clean_cache, patching_metric):
    n_pos = corrupted_tokens.shape[1]
    res = torch.zeros(model.cfg.n_layers, n_pos, model.cfg.n_heads)

    def hook(z, hook, pos, head):
        z[:, : pos + 1, head] = clean_cache[hook.name][:, : pos + 1, head]
        return z

    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for pos in range(n_pos):
                for head in range(model.cfg.n_heads):
                    res[layer, pos, head] = patching_metric(
                        model.run_with_hooks(
                            corrupted_tokens,
                            fwd_hooks=[
                                (get_act_name("z", layer), partial(hook, pos=pos, head=head))
                            ],
                        )
                    )
    return res


@wrong(
    "get_act_patch_attn_head_all_pos_every",
    "component_row_wrong",
    "pattern row patched with patch_head_vector ([:, :, head])",
)
def w_ev_pattern(model, corrupted_tokens, clean_cache, patching_metric):
    comps = ("z", "q", "k", "v", "pattern")
    res = torch.zeros(5, model.cfg.n_layers, model.cfg.n_heads)
    with torch.inference_mode():
        for i, c in enumerate(comps):
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):
                    h = partial(s3.patch_head_vector, head_index=head, clean_cache=clean_cache)
                    res[i, layer, head] = patching_metric(
                        model.run_with_hooks(
                            corrupted_tokens, fwd_hooks=[(get_act_name(c, layer), h)]
                        )
                    )
    return res


@wrong(
    "get_act_patch_attn_head_all_pos_every",
    "wrong_component_order",
    "order z, k, q, v, pattern (q and k swapped)",
)
def w_ev_qk(model, corrupted_tokens, clean_cache, patching_metric):
    r = s3.get_act_patch_attn_head_all_pos_every(
        model, corrupted_tokens, clean_cache, patching_metric
    )
    return r[[0, 2, 1, 3, 4]]


def _attr(
    model, clean_tokens, corrupted_tokens, patching_metric, reduce="sum", value_from="corrupted"
):
    names = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    with torch.inference_mode():
        _, clean_z = model.run_with_cache(clean_tokens, names_filter=lambda n: n in names)
    saved = {}

    def save(a, hook):
        saved[hook.name] = a

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[(n, save) for n in names]):
            value = patching_metric(model(corrupted_tokens))
        grads = torch.autograd.grad(value, [saved[n] for n in names])
    parts = []
    for n, g in zip(names, grads):
        prod = (clean_z[n] - saved[n].detach()) * g
        parts.append(prod.sum((0, 1, 3)) if reduce == "sum" else prod.sum((1, 3)).mean(0))
    est = torch.stack(parts)
    if value_from == "clean":
        with torch.inference_mode():
            value = patching_metric(model(clean_tokens))
    return value.detach() + est


@wrong(
    "attribution_patch_attn_head_out_all_pos", "mean_not_sum", "mean over the batch instead of sum"
)
def w_ap_mean(model, clean_tokens, corrupted_tokens, patching_metric):
    return _attr(model, clean_tokens, corrupted_tokens, patching_metric, reduce="mean")


@wrong(
    "attribution_patch_attn_head_out_all_pos",
    "clean_baseline",
    "adds the CLEAN run's metric as the baseline",
)
def w_ap_cleanbase(model, clean_tokens, corrupted_tokens, patching_metric):
    return _attr(model, clean_tokens, corrupted_tokens, patching_metric, value_from="clean")


# ============================ part 4 ============================


@wrong(
    "patch_or_freeze_head_vectors",
    "mutated_input",
    "aliases orig_cache tensor and patches into it (mutates cache)",
)
def w_pf_alias(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    out = orig_cache[hook.name]
    layer, head = head_to_patch
    if hook.layer() == layer:
        out[:, :, head] = new_cache[hook.name][:, :, head]
    return out


@wrong(
    "patch_or_freeze_head_vectors",
    "did_not_patch",
    "compares hook.layer (the method, not called) to the layer",
)
def w_pf_method(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    orig_head_vector[...] = orig_cache[hook.name]
    layer, head = head_to_patch
    if hook.layer == layer:
        orig_head_vector[:, :, head] = new_cache[hook.name][:, :, head]
    return orig_head_vector


@wrong(
    "patch_or_freeze_head_vectors",
    "ignored_layer",
    "hook.layer() >= layer (patches the head in later layers too)",
)
def w_pf_ge(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    orig_head_vector[...] = orig_cache[hook.name]
    layer, head = head_to_patch
    if hook.layer() >= layer:
        orig_head_vector[:, :, head] = new_cache[hook.name][:, :, head]
    return orig_head_vector


@wrong(
    "patch_head_input",
    "no_effect",
    "filters head_list with hook.layer (uncalled method) -> patches nothing",
)
def w_phi_method(orig_activation, hook, patched_cache, head_list):
    heads = [h for l, h in head_list if l == hook.layer]
    orig_activation[:, :, heads] = patched_cache[hook.name][:, :, heads]
    return orig_activation


@correct("patch_head_input", "loop over heads, one at a time")
def c_phi_loop(orig_activation, hook, patched_cache, head_list):
    for l, h in head_list:
        if l == hook.layer():
            orig_activation[:, :, h] = patched_cache[hook.name][:, :, h]
    return orig_activation


@wrong(
    "get_path_patch_head_to_final_resid_post",
    "caches_from_one_run",
    "typo: orig_cache built from new_dataset.toks when not given",
)
def w_pp_typo(model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None):
    f = lambda n: n.endswith("z")
    if new_cache is None:
        _, new_cache = model.run_with_cache(new_dataset.toks, names_filter=f)
    if orig_cache is None:
        _, orig_cache = model.run_with_cache(new_dataset.toks, names_filter=f)
    return s4.get_path_patch_head_to_final_resid_post(
        model, patching_metric, new_dataset, orig_dataset, new_cache, orig_cache
    )


@correct(
    "get_path_patch_head_to_final_resid_post",
    "freezes only layers ABOVE the sender (lower layers and the sender's own layer are orig anyway)",
)
def c_pp_notsamelayer(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    # NB: heads in the sender's own layer read the same resid_pre -> this equals the right answer
    f = lambda n: n.endswith("z")
    if new_cache is None:
        _, new_cache = model.run_with_cache(new_dataset.toks, names_filter=f)
    if orig_cache is None:
        _, orig_cache = model.run_with_cache(orig_dataset.toks, names_filter=f)
    res = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)

    def hook(z, hook, sender):
        if hook.layer() > sender[0]:
            z[...] = orig_cache[hook.name]
        elif hook.layer() == sender[0]:
            z[:, :, sender[1]] = new_cache[hook.name][:, :, sender[1]]
        return z

    with torch.inference_mode():
        for l in range(model.cfg.n_layers):
            for h in range(model.cfg.n_heads):
                res[l, h] = patching_metric(
                    model.run_with_hooks(
                        orig_dataset.toks, fwd_hooks=[(f, partial(hook, sender=(l, h)))]
                    )
                )
    return res


@wrong(
    "get_path_patch_head_to_final_resid_post",
    "patched_whole_sender_layer",
    "patches the sender's whole layer (all heads) from new",
)
def w_pp_wholelayer(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    f = lambda n: n.endswith("z")
    if new_cache is None:
        _, new_cache = model.run_with_cache(new_dataset.toks, names_filter=f)
    if orig_cache is None:
        _, orig_cache = model.run_with_cache(orig_dataset.toks, names_filter=f)
    res = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)

    def hook(z, hook, sender):
        z[...] = orig_cache[hook.name]
        if hook.layer() == sender[0]:
            z[...] = new_cache[hook.name]
        return z

    with torch.inference_mode():
        for l in range(model.cfg.n_layers):
            for h in range(model.cfg.n_heads):
                res[l, h] = patching_metric(
                    model.run_with_hooks(
                        orig_dataset.toks, fwd_hooks=[(f, partial(hook, sender=(l, h)))]
                    )
                )
    return res


def _to_heads(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
    *,
    extra_layer=0,
    all_layers_filter=False,
):
    input_names = {get_act_name(receiver_input, l) for l, _ in receiver_heads}
    if all_layers_filter:
        input_names = {get_act_name(receiver_input, l) for l in range(model.cfg.n_layers)}
    zf = lambda n: n.endswith("z")
    inf = lambda n: n in input_names
    if new_cache is None:
        _, new_cache = model.run_with_cache(new_dataset.toks, names_filter=zf)
    if orig_cache is None:
        _, orig_cache = model.run_with_cache(orig_dataset.toks, names_filter=zf)
    top = max(l for l, _ in receiver_heads)
    res = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
    with torch.inference_mode():
        for l in range(min(top + extra_layer, model.cfg.n_layers)):
            for h in range(model.cfg.n_heads):
                fr = partial(
                    s4.patch_or_freeze_head_vectors,
                    new_cache=new_cache,
                    orig_cache=orig_cache,
                    head_to_patch=(l, h),
                )
                with model.hooks(fwd_hooks=[(zf, fr)]):
                    _, pc = model.run_with_cache(orig_dataset.toks, names_filter=inf)
                p = partial(s4.patch_head_input, patched_cache=pc, head_list=receiver_heads)
                res[l, h] = patching_metric(
                    model.run_with_hooks(orig_dataset.toks, fwd_hooks=[(inf, p)])
                )
    return res


@wrong(
    "get_path_patch_head_to_heads",
    "measured_unreachable_rows",
    "senders range(top + 1): the top layer's row is measured (1.0), not NaN",
)
def w_th_top1(*a, **k):
    return _to_heads(*a, **k, extra_layer=1)


@correct(
    "get_path_patch_head_to_heads",
    "receiver-input hooks on every layer (patch_head_input filters by layer)",
)
def c_th_all(*a, **k):
    return _to_heads(*a, **k, all_layers_filter=True)


@correct(
    "path_patch_head_to_heads_at",
    "sender_position and receiver_position swapped (equivalent: with every head frozen the path is position-local, only the intersection matters)",
)
def c_at_swap(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    return s4.path_patch_head_to_heads_at(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        receiver_position,
        sender_position,
    )


@wrong(
    "path_patch_head_to_heads_at",
    "receiver_positions_ignored",
    "receiver_position ignored (receivers patched everywhere) when sender_position is None",
)
def w_at_recv_when_none(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    rp = receiver_position if sender_position is not None else None
    return s4.path_patch_head_to_heads_at(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        sender_position,
        rp,
    )


# ============================ part 5 ============================


def _copy(model, names=None, k=5, negative=False, *, ln1=True, pos=False, ln2=True):
    tokens = names if isinstance(names, torch.Tensor) else name_tokens(model, names)
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.inference_mode():
        e = model.embed(tokens[:, None])
        if pos:
            e = e + model.W_pos[0]
        resid = e + model.blocks[0].apply_mlp(model.blocks[0].ln2(e) if ln2 else e)
        for layer in range(model.cfg.n_layers):
            normed = model.blocks[layer].ln1(resid) if ln1 else resid
            for head in range(model.cfg.n_heads):
                out = normed @ model.W_V[layer, head] @ model.W_O[layer, head]
                lg = model.unembed(model.ln_final(-out if negative else out))[:, 0]
                scores[layer, head] = (
                    (lg.topk(k, -1).indices == tokens[:, None]).any(-1).float().mean()
                )
    return scores


@correct(
    "get_copying_scores",
    "skips the head ln1 before W_V (equal to the library on the toy: W_V centred by weight processing, scale cancelled by ln_final)",
)
def c_cp_noln1(model, names=None, k=5, negative=False):
    return _copy(model, names, k, negative, ln1=False)


@wrong(
    "get_copying_scores",
    "added_position_embedding",
    "adds the position-0 embedding W_pos[0] to the name embedding",
)
def w_cp_pos(model, names=None, k=5, negative=False):
    return _copy(model, names, k, negative, pos=True)


@wrong("get_copying_scores", "mlp0_without_ln2", "MLP0 applied to the raw embedding (no ln2)")
def w_cp_noln2(model, names=None, k=5, negative=False):
    return _copy(model, names, k, negative, ln2=False)


@correct("get_copying_scores", "W_E[tokens] and explicit softmax before topk")
def c_cp_WE(model, names=None, k=5, negative=False):
    tokens = names if isinstance(names, torch.Tensor) else name_tokens(model, names)
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.inference_mode():
        e = model.W_E[tokens][:, None]
        resid = e + model.blocks[0].apply_mlp(model.blocks[0].ln2(e))
        for layer in range(model.cfg.n_layers):
            normed = model.blocks[layer].ln1(resid)
            for head in range(model.cfg.n_heads):
                ov = model.W_V[layer, head] @ model.W_O[layer, head]
                out = normed @ ov * (-1 if negative else 1)
                p = (model.ln_final(out) @ model.W_U + model.b_U)[:, 0].softmax(-1)
                scores[layer, head] = (
                    (p.topk(k, -1).indices == tokens[:, None]).any(-1).float().mean()
                )
    return scores


def _attn(model, seq_len, batch, seed, kind, *, dest_shift=0, prev_offset=-1):
    toks = repeated_tokens(model, seq_len, batch, seed)
    _, cache = model.run_with_cache(toks)
    dest = torch.arange(seq_len + 1, 2 * seq_len + 1) + dest_shift
    src = dest - seq_len + (1 if kind == "induction" else 0)
    out = []
    for l in range(model.cfg.n_layers):
        p = cache["pattern", l]
        if kind == "previous_token":
            out.append(p.diagonal(offset=prev_offset, dim1=-2, dim2=-1).mean((0, -1)))
        else:
            out.append(p[:, :, dest, src].mean((0, -1)))
    return torch.stack(out)


@wrong(
    "get_attn_scores",
    "second_copy_off_by_one",
    "second copy taken as arange(seq_len, 2*seq_len) (one too early)",
)
def w_as_shift(model, seq_len, batch, seed, kind):
    return _attn(model, seq_len, batch, seed, kind, dest_shift=-1)


@wrong(
    "get_attn_scores",
    "above_the_diagonal",
    "previous-token diagonal offset=+1 (above the diagonal)",
)
def w_as_upper(model, seq_len, batch, seed, kind):
    return _attn(model, seq_len, batch, seed, kind, prev_offset=1)


def _scatter(model, ds, layer, head, *, ln=False, s1_only=False, swap_lh=False):
    r = s5.name_mover_scatter(model, ds, layer, head)
    f = dict(attn_to_io=r.attn_to_io, attn_to_s=r.attn_to_s, proj_io=r.proj_io, proj_s=r.proj_s)
    if ln or s1_only:
        _, cache = model.run_with_cache(ds.toks)
        rows, end, idx = torch.arange(ds.N), ds.word_idx["end"], ds.word_idx
        if s1_only:
            f["attn_to_s"] = cache["pattern", layer][:, head][rows, end, idx["S1"]].cpu()
        if ln:
            out = cache["z", layer][rows, end, head] @ model.W_O[layer, head]
            out = model.ln_final(out[:, None])[:, 0]
            f["proj_io"] = (out * model.W_U[:, ds.io_tokenIDs].T).sum(-1).detach()
            f["proj_s"] = (out * model.W_U[:, ds.s_tokenIDs].T).sum(-1).detach()
    if swap_lh:
        return NameMoverScatter(head, layer, **f)
    return NameMoverScatter(layer, head, **f)


@wrong(
    "name_mover_scatter",
    "scaled_by_final_ln",
    "applies model.ln_final (centre + its own norm) to the head output",
)
def w_nm_ln(model, ds, layer, head):
    return _scatter(model, ds, layer, head, ln=True)


@wrong("name_mover_scatter", "s1_only", "attn_to_s = attention to S1 only")
def w_nm_s1(model, ds, layer, head):
    return _scatter(model, ds, layer, head, s1_only=True)


@wrong(
    "name_mover_scatter",
    "swapped_fields",
    "NameMoverScatter(head, layer, ...) positional: layer/head fields swapped",
)
def w_nm_lh(model, ds, layer, head):
    return _scatter(model, ds, layer, head, swap_lh=True)


@wrong(
    "mean_ablation_hooks",
    "template_not_row",
    "uses ds.template_idx directly as the row of means.z (skips row_of)",
)
def w_ma_rows(model, ds, means, keep):
    import types

    fake = types.SimpleNamespace(z=means.z, row_of={int(t): int(t) for t in ds.template_idx})
    return s5.mean_ablation_hooks(model, ds, fake, keep)


@wrong(
    "mean_ablation_hooks",
    "none_kept_nowhere",
    "keep value None treated as 'no positions' (head ablated everywhere)",
)
def w_ma_none(model, ds, means, keep):
    return s5.mean_ablation_hooks(
        model, ds, means, {h: (k if k is not None else ()) for h, k in keep.items()}
    )


@wrong(
    # On the toy the +1 position carries nothing, so this equals ignoring keep; the
    # ignored_keep diagnosis names both causes.
    "mean_ablation_hooks",
    "ignored_keep",
    "keeps the head at word_idx[key] + 1 (off by one)",
)
def w_ma_pm1(model, ds, means, keep):
    import copy

    d2 = copy.copy(ds)
    d2.word_idx = {k: v + 1 for k, v in ds.word_idx.items()}
    return s5.mean_ablation_hooks(model, d2, means, keep)


@wrong("faithfulness", "swapped_fields", "Faithfulness(f_c, f_m): fields swapped positionally")
def w_fa_swap(ablation, circuit):
    return Faithfulness(
        float(ablation.logit_diff(circuit.kept_positions())), float(ablation.logit_diff(None))
    )


@correct("faithfulness", "F(M) from logit_diff_with_hooks with no hooks")
def c_fa_hooks(ablation, circuit):
    return Faithfulness(
        float(logit_diff_with_hooks(ablation.model, ablation.ds).mean()),
        float(ablation.logit_diff(circuit.without([]))),
    )


@wrong("keep_head_at", "position_not_tuple", "keep[head] = position (a str, not a 1-tuple)")
def w_kh_str(ablation, circuit, head, positions):
    out = {}
    for p in positions:
        keep = circuit.kept_positions()
        keep[head] = p
        out[p] = float(ablation.logit_diff(keep))
    return out


@correct("keep_head_at", "circuit.without([head]) then add head at (p,)")
def c_kh_without(ablation, circuit, head, positions):
    out = {}
    for p in positions:
        keep = circuit.without([head])
        keep[tuple(head)] = (p,)
        out[p] = float(ablation.logit_diff(keep))
    return out


@wrong(
    "completeness",
    "wrong_heads_recorded",
    "KnockoutScore.removed left as () (the heads knocked out not recorded)",
)
def w_co_removed(ablation, circuit, modes=("class",)):
    return [
        KnockoutScore(s.label, (), s.f_with, s.f_without, s.score, s.relative)
        for s in s5.completeness(ablation, circuit, modes)
    ]


@wrong(
    "completeness",
    "relative_to_circuit",
    "relative = score / F(C \\ K) (the circuit-minus-K value)",
)
def w_co_rel(ablation, circuit, modes=("class",)):
    return [
        KnockoutScore(s.label, s.removed, s.f_with, s.f_without, s.score, s.score / abs(s.f_with))
        for s in s5.completeness(ablation, circuit, modes)
    ]


@wrong("minimality", "relative_to_reduced_circuit", "relative = score / F(C \\ K) instead of F(C)")
def w_mi_rel(ablation, circuit, mode="class"):
    return [
        KnockoutScore(
            s.label, s.removed, s.f_with, s.f_without, s.score, s.score / abs(s.f_without)
        )
        for s in s5.minimality(ablation, circuit, mode)
    ]


@wrong(
    "minimality",
    "k_from_whole_circuit",
    "K = the other heads of the WHOLE circuit (not of v's class)",
)
def w_mi_wholeK(ablation, circuit, mode="class"):
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    out = []
    for v in circuit.all_heads():
        k = [h for h in circuit.all_heads() if h != v]
        a = float(ablation.logit_diff(circuit.without([*k, v])))
        c = float(ablation.logit_diff(circuit.without(k)))
        out.append(KnockoutScore(str(v), tuple(sorted(k)), a, c, abs(a - c), abs(a - c) / abs(f_c)))
    return out


# ============================ part 6 ============================


@wrong(
    "backup_name_mover_experiment",
    "wrong_heads_recorded",
    "BackupResult.ablated=() (naive_prediction then wrong)",
)
def w_bk_ablated(ablation, name_movers, at="end"):
    r = s6.backup_name_mover_experiment(ablation, name_movers, at)
    return BackupResult((), r.dla_before, r.dla_after, r.logit_diff_before, r.logit_diff_after)


@wrong("backup_name_mover_experiment", "ignored_at", "ignores `at`: always knocks out at 'end'")
def w_bk_at(ablation, name_movers, at="end"):
    return s6.backup_name_mover_experiment(ablation, name_movers, "end")


@wrong(
    "backup_name_mover_experiment",
    "direct_effects_summed",
    "logit_diff_after = sum of dla_after (direct effects only)",
)
def w_bk_sumdla(ablation, name_movers, at="end"):
    r = s6.backup_name_mover_experiment(ablation, name_movers, at)
    return BackupResult(
        r.ablated, r.dla_before, r.dla_after, r.logit_diff_before, float(r.dla_after.sum())
    )


def _perm(
    importance,
    labels,
    n_permutations=1000,
    seed=0,
    *,
    strict=False,
    grand="weighted",
    nperm_field=None,
    shuffle=True,
    tail="ge",
):
    labels = labels.cpu().long()
    _, labels = labels.unique(return_inverse=True)
    G = int(labels.max()) + 1
    flat = importance.reshape(importance.shape[0], -1)

    def stat(g):
        oh = torch.nn.functional.one_hot(g, G).float()
        n = oh.sum(0)
        m = (oh.T @ flat) / n[:, None]
        gm = flat.mean(0) if grand == "weighted" else m.mean(0)
        return (n[:, None] * (m - gm) ** 2).sum()

    obs = stat(labels)
    gen = torch.Generator().manual_seed(seed)
    null = torch.stack(
        [
            stat(labels[perm] if shuffle else labels)
            for perm in (torch.randperm(len(labels), generator=gen) for _ in range(n_permutations))
        ]
    )
    oh = torch.nn.functional.one_hot(labels, G).float()
    gmeans = torch.einsum("bg,blh->glh", oh, importance) / oh.sum(0)[:, None, None]
    hits = int((null > obs).sum()) if strict else int((null >= obs).sum())
    if tail == "le":
        hits = int((null <= obs).sum())
    return PermutationTest(
        float(obs),
        (1 + hits) / (1 + n_permutations),
        nperm_field if nperm_field is not None else n_permutations,
        gmeans,
        null,
    )


@wrong(
    "permutation_test", "strict_inequality", "p-value counts null > observed (strict) instead of >="
)
def w_pt_strict(importance, labels, n_permutations=1000, seed=0):
    return _perm(importance, labels, n_permutations, seed, strict=True)


@wrong(
    "permutation_test", "unweighted_grand_mean", "grand mean = unweighted mean of the group means"
)
def w_pt_grand(importance, labels, n_permutations=1000, seed=0):
    return _perm(importance, labels, n_permutations, seed, grand="unweighted")


@wrong(
    "permutation_test",
    "n_permutations_not_recorded",
    "n_permutations field hard-coded to 1000 (the default) whatever was asked",
)
def w_pt_nfield(importance, labels, n_permutations=1000, seed=0):
    return _perm(importance, labels, n_permutations, seed, nperm_field=1000)


@correct("permutation_test", "group means by explicit loop over groups; statistic by loop")
def c_pt_loop(importance, labels, n_permutations=1000, seed=0):
    _, lab = labels.cpu().long().unique(return_inverse=True)
    G = int(lab.max()) + 1
    flat = importance.reshape(len(lab), -1)
    overall = flat.mean(0)

    def stat(g):
        s = torch.zeros(())
        for i in range(G):
            sel = flat[g == i]
            s = s + len(sel) * ((sel.mean(0) - overall) ** 2).sum()
        return s

    obs = stat(lab)
    gen = torch.Generator().manual_seed(seed)
    null = torch.stack(
        [stat(lab[torch.randperm(len(lab), generator=gen)]) for _ in range(n_permutations)]
    )
    gm = torch.stack([importance[lab == i].mean(0) for i in range(G)])
    return PermutationTest(
        float(obs), (1 + int((null >= obs).sum())) / (1 + n_permutations), n_permutations, gm, null
    )


@wrong(
    "ioi_metric",
    "mutated_input",
    "centres the logits IN PLACE (logits -= mean) before reading them (mutates input)",
)
def w_met_inplace(logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, positions=None):
    logits -= logits.mean(-1, keepdim=True)
    f = _final(logits, positions)
    p = f.gather(1, answer_tokens)
    ld = (p[:, 0] - p[:, 1]).mean()
    return (ld - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


@wrong(
    "per_head_logit_diffs",
    "first_position_for_none",
    "positions=None: LN scale read at position 0 (scale[:, 0])",
)
def w_ph_none(model, cache, answer_tokens, positions=None):
    r = s2.head_results_at(model, cache, positions)
    d = s2.logit_diff_directions(model, answer_tokens)
    scale = cache["ln_final.hook_scale"]
    scale = scale[:, 0] if positions is None else scale[torch.arange(scale.shape[0]), positions]
    r = (r - r.mean(-1, keepdim=True)) / scale
    return einops.einsum(r, d, "l h b d, b d -> l h b").mean(-1)


@wrong(
    "get_act_patch_attn_head_out_by_pos",
    "hard_coded_size",
    "hard-coded n_pos = 18 (the checker batch's width)",
)
def w_bp_hard(model, corrupted_tokens, clean_cache, patching_metric):
    res = torch.zeros(model.cfg.n_layers, 18, model.cfg.n_heads)

    def hook(z, hook, pos, head):
        z[:, pos, head] = clean_cache[hook.name][:, pos, head]
        return z

    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for pos in range(18):
                for head in range(model.cfg.n_heads):
                    res[layer, pos, head] = patching_metric(
                        model.run_with_hooks(
                            corrupted_tokens,
                            fwd_hooks=[
                                (get_act_name("z", layer), partial(hook, pos=pos, head=head))
                            ],
                        )
                    )
    return res


@wrong(
    "minimality",
    "wrong_heads_recorded",
    "KnockoutScore.removed = (v,) instead of K (the rest of v's class)",
)
def w_mi_removed(ablation, circuit, mode="class"):
    return [
        KnockoutScore(
            s.label,
            (tuple(map(int, s.label.split("."))),),
            s.f_with,
            s.f_without,
            s.score,
            s.relative,
        )
        for s in s5.minimality(ablation, circuit, mode)
    ]


@wrong(
    "get_attn_scores",
    "ignored_batch",
    "hard-coded batch: repeated_tokens(model, seq_len, 4, seed) ignores `batch`",
)
def w_as_batch(model, seq_len, batch, seed, kind):
    return _attn(model, seq_len, 4, seed, kind)

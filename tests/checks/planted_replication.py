"""Planted mistakes for section 5: one wrong implementation per diagnosis its checkers make."""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from ioi.circuit import Faithfulness, KnockoutScore
from ioi.heads import name_tokens, repeated_tokens

# ---- get_copying_scores -----------------------------------------------------------------------


@torch.no_grad()
def _copying(model, names, k, negative, mlp0=True, final_ln=True, honour_negative=True):
    tokens = name_tokens(model, names)
    embed = model.embed(tokens[:, None])
    resid = embed + model.blocks[0].apply_mlp(model.blocks[0].ln2(embed)) if mlp0 else embed
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        normed = model.blocks[layer].ln1(resid)
        for head in range(model.cfg.n_heads):
            out = normed @ model.W_V[layer, head] @ model.W_O[layer, head]
            if negative and honour_negative:
                out = -out
            logits = model.unembed(model.ln_final(out) if final_ln else out)[:, 0]
            scores[layer, head] = (
                (logits.topk(k, -1).indices == tokens[:, None]).any(-1).float().mean()
            )
    return scores


def copying_without_mlp0(model, names=None, k=5, negative=False):
    return _copying(model, names, k, negative, mlp0=False)


def copying_without_final_ln(model, names=None, k=5, negative=False):
    return _copying(model, names, k, negative, final_ln=False)


def copying_ignores_negative(model, names=None, k=5, negative=False):
    return _copying(model, names, k, negative, honour_negative=False)


# ---- get_attn_scores --------------------------------------------------------------------------


@torch.no_grad()
def _patterns(model, seq_len, batch, seed):
    _, cache = model.run_with_cache(repeated_tokens(model, seq_len, batch, seed))
    return [cache["pattern", layer] for layer in range(model.cfg.n_layers)]


def attn_scores_induction_offset_for_duplicates(model, seq_len, batch, seed, kind):
    """Swaps the duplicate and induction offsets."""
    dest = torch.arange(seq_len + 1, 2 * seq_len + 1)
    offset = {"duplicate_token": 1, "induction": 0, "previous_token": None}[kind]
    out = []
    for pattern in _patterns(model, seq_len, batch, seed):
        if offset is None:
            out.append(pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, -1)))
        else:
            out.append(pattern[:, :, dest, dest - seq_len + offset].mean((0, -1)))
    return torch.stack(out)


def attn_scores_whole_diagonal(model, seq_len, batch, seed, kind):
    offset = {"previous_token": 1, "duplicate_token": seq_len, "induction": seq_len - 1}[kind]
    return torch.stack(
        [
            p.diagonal(offset=-offset, dim1=-2, dim2=-1).mean((0, -1))
            for p in _patterns(model, seq_len, batch, seed)
        ]
    )


# ---- mean_ablation_hooks ----------------------------------------------------------------------


def _hooks(model, ds, means, keep, *, mode="right"):
    batch, n_pos = ds.toks.shape
    rows = torch.arange(batch)
    template_rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx])
    hooks = []
    for layer in range(model.cfg.n_layers):
        mask = torch.zeros(batch, n_pos, model.cfg.n_heads, dtype=torch.bool)
        for (head_layer, head), keys in keep.items():
            if head_layer != layer or mode == "ignore_keep":
                continue
            if keys is None or mode == "every_position":
                mask[:, :, head] = True
                continue
            for key in keys:
                positions = ds.word_idx[key]
                if mode == "first_prompt":
                    positions = positions[:1].expand_as(positions)
                mask[rows, positions, head] = True
        if mode == "nothing":
            mask[:] = True
        mean = means.z[layer][template_rows][:, :n_pos]

        def hook_fn(z, hook, mask=mask, mean=mean):
            return torch.where(mask[..., None], z, mean)

        hooks.append((get_act_name("z", layer), hook_fn))
    return hooks


def ablation_ignores_keep(model, ds, means, keep):
    return _hooks(model, ds, means, keep, mode="ignore_keep")


def ablation_keeps_everywhere(model, ds, means, keep):
    return _hooks(model, ds, means, keep, mode="every_position")


def ablation_first_prompt_positions(model, ds, means, keep):
    return _hooks(model, ds, means, keep, mode="first_prompt")


def ablation_does_nothing(model, ds, means, keep):
    return _hooks(model, ds, means, keep, mode="nothing")


# ---- faithfulness -----------------------------------------------------------------------------


def faithfulness_model_ablated(ablation, circuit):
    return Faithfulness(
        float(ablation.logit_diff({})), float(ablation.logit_diff(circuit.kept_positions()))
    )


def faithfulness_circuit_everywhere(ablation, circuit):
    everywhere = {head: None for head in circuit.all_heads()}
    return Faithfulness(float(ablation.logit_diff(None)), float(ablation.logit_diff(everywhere)))


def faithfulness_swapped(ablation, circuit):
    return Faithfulness(
        float(ablation.logit_diff(circuit.kept_positions())), float(ablation.logit_diff(None))
    )


# ---- completeness -----------------------------------------------------------------------------


def _completeness(ablation, circuit, *, knock_model=True, knock_circuit=True):
    f_m = float(ablation.logit_diff(None))
    out = []
    for name, members in circuit.heads.items():
        k = list(members)
        f_c_k = float(
            ablation.logit_diff(circuit.without(k) if knock_circuit else circuit.kept_positions())
        )
        f_m_k = float(ablation.logit_diff(ablation.all_heads_except(k))) if knock_model else f_m
        gap = abs(f_c_k - f_m_k)
        out.append(
            KnockoutScore(f"class {name}", tuple(sorted(k)), f_c_k, f_m_k, gap, gap / abs(f_m))
        )
    return out


def completeness_model_intact(ablation, circuit, modes=("class",)):
    return _completeness(ablation, circuit, knock_model=False)


def completeness_circuit_intact(ablation, circuit, modes=("class",)):
    return _completeness(ablation, circuit, knock_circuit=False)


# ---- minimality -------------------------------------------------------------------------------


def _minimality(ablation, circuit, *, k_rule="rest", relative_to="circuit"):
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    f_m = float(ablation.logit_diff(None))
    out = []
    for v in circuit.all_heads():
        members = list(circuit.heads[circuit.classes_of(v)[0]])
        k = {"rest": [h for h in members if h != v], "class": members, "empty": []}[k_rule]
        f_with = float(ablation.logit_diff(circuit.without([*k, v])))
        f_without = float(ablation.logit_diff(circuit.without(k)))
        gap = abs(f_with - f_without)
        base = f_c if relative_to == "circuit" else f_m
        out.append(KnockoutScore(str(v), tuple(sorted(k)), f_with, f_without, gap, gap / abs(base)))
    return out


def minimality_k_with_v(ablation, circuit, mode="class"):
    return _minimality(ablation, circuit, k_rule="class")


def minimality_empty_k(ablation, circuit, mode="class"):
    return _minimality(ablation, circuit, k_rule="empty")


def minimality_relative_to_model(ablation, circuit, mode="class"):
    return _minimality(ablation, circuit, relative_to="model")


PLANTED = {
    ("get_copying_scores", "skipped_mlp0"): copying_without_mlp0,
    ("get_copying_scores", "skipped_final_ln"): copying_without_final_ln,
    ("get_copying_scores", "ignored_negative"): copying_ignores_negative,
    ("get_attn_scores", "wrong_kind"): attn_scores_induction_offset_for_duplicates,
    ("get_attn_scores", "diagonal_includes_first_copy"): attn_scores_whole_diagonal,
    ("mean_ablation_hooks", "ignored_keep"): ablation_ignores_keep,
    ("mean_ablation_hooks", "kept_every_position"): ablation_keeps_everywhere,
    ("mean_ablation_hooks", "same_position_for_all_prompts"): ablation_first_prompt_positions,
    ("mean_ablation_hooks", "nothing_ablated"): ablation_does_nothing,
    ("faithfulness", "model_fully_ablated"): faithfulness_model_ablated,
    ("faithfulness", "circuit_kept_everywhere"): faithfulness_circuit_everywhere,
    ("faithfulness", "swapped"): faithfulness_swapped,
    ("completeness", "model_not_knocked_out"): completeness_model_intact,
    ("completeness", "circuit_not_knocked_out"): completeness_circuit_intact,
    ("minimality", "k_includes_v"): minimality_k_with_v,
    ("minimality", "empty_k"): minimality_empty_k,
    ("minimality", "relative_to_model"): minimality_relative_to_model,
}

"""Section 5 answers: copying scores, attention detectors, mean ablation, the three criteria."""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from ioi.circuit import Faithfulness, KnockoutScore
from ioi.head import Head
from ioi.heads import name_tokens, repeated_tokens
from tests.checks.corpus import correct, variant, wrong

# ---- get_copying_scores ------------------------------------------------------------------------


def _copying(
    model,
    names=None,
    k=5,
    negative=False,
    *,
    mlp0=True,
    ln1=True,
    lnf=True,
    layers=None,
    bottom=False,
    own_names=False,
    toy_sizes=False,
):
    tokens = (
        name_tokens(model)
        if own_names or names is None
        else (names if isinstance(names, torch.Tensor) else name_tokens(model, names))
    )
    with torch.no_grad():
        embed = model.embed(tokens[:, None])
        resid = embed + model.blocks[0].apply_mlp(model.blocks[0].ln2(embed)) if mlp0 else embed
        n_layers, n_heads = (3, 4) if toy_sizes else (model.cfg.n_layers, model.cfg.n_heads)
        scores = torch.zeros(n_layers, n_heads)
        for layer in range(n_layers)[:layers]:
            x = model.blocks[layer].ln1(resid) if ln1 else resid
            for head in range(n_heads):
                out = x @ model.W_V[layer, head] @ model.W_O[layer, head]
                if negative and not bottom:
                    out = -out
                logits = model.unembed(model.ln_final(out) if lnf else out)[:, 0]
                top = (-logits if (negative and bottom) else logits).topk(k, dim=-1).indices
                scores[layer, head] = (top == tokens[:, None]).any(-1).float().mean()
    return scores


variant(
    "get_copying_scores",
    "hard_coded_size",
    _copying,
    "The toy's 3 x 4 grid written in: torch.zeros(3, 4), range(3), range(4).",
    fn_name="copy_toy_sizes",
    toy_sizes=True,
)
variant(
    "get_copying_scores",
    "skipped_mlp0",
    _copying,
    "The bare embedding.",
    fn_name="copy_no_mlp0",
    mlp0=False,
)


@wrong("get_copying_scores", "ignored_k")
def copy_k_five(model, names=None, k=5, negative=False):
    """k hard-coded to 5."""
    return _copying(model, names, 5, negative)


variant(
    "get_copying_scores",
    "ignored_names",
    _copying,
    "Always every known name.",
    fn_name="copy_all_names",
    own_names=True,
)


@wrong("get_copying_scores", "ignored_negative")
def copy_never_negative(model, names=None, k=5, negative=False):
    """negative ignored."""
    return _copying(model, names, k, False)


variant(
    "get_copying_scores",
    "bottom_k_not_negated",
    _copying,
    "negative=True takes the bottom k logits instead of negating the head's output.",
    fn_name="copy_bottom_k",
    bottom=True,
)


variant(
    "get_copying_scores",
    "skipped_layer_norms",
    _copying,
    "Neither ln1 nor ln_final.",
    fn_name="copy_no_layer_norms",
    ln1=False,
    lnf=False,
)


variant(
    "get_copying_scores",
    "missed_last_layer",
    _copying,
    "range(n_layers - 1).",
    fn_name="copy_range_minus_one",
    layers=-1,
)


@correct("get_copying_scores", "without the head's LayerNormPre (differs by LayerNorm-eps effects)")
def copy_without_ln1(model, names=None, k=5, negative=False):
    return _copying(model, names, k, negative, ln1=False)


variant(
    "get_copying_scores",
    "skipped_final_ln",
    _copying,
    "No ln_final before the unembedding (close on most calls: only the toy's b_U tells).",
    fn_name="copy_without_ln_final",
    lnf=False,
)


def _copy_slip(model, names=None, k=5, negative=False, *, slip):
    """A learner's copying score written out, with one slip (``slip``)."""
    tokens = names if isinstance(names, torch.Tensor) else name_tokens(model, names)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    scores = torch.zeros((n_heads, n_layers) if slip == "head_layer" else (n_layers, n_heads))
    with torch.no_grad():
        e = model.embed(tokens[:, None])
        e = e + model.blocks[0].apply_mlp(model.blocks[0].ln2(e))
        for layer in range(n_layers):
            x = model.blocks[layer].ln1(e)
            for head in range(n_heads):
                out = x @ model.W_V[layer, head] @ model.W_O[layer, head]
                if slip == "b_O":
                    out = out + model.b_O[layer]
                if negative:
                    out = -out
                logits = model.unembed(model.ln_final(out))
                if slip != "no_squeeze":
                    logits = logits[:, 0]
                top = logits.topk(k, dim=-1).indices
                if slip == "isin":
                    hit = torch.isin(top, tokens).any(-1)
                else:
                    hit = (top == tokens[:, None]).any(-1)
                score = hit.float().sum() if slip == "sum" else hit.float().mean()
                if slip == "head_layer":
                    scores[head, layer] = score
                else:
                    scores[layer, head] = score
    return scores


for _diagnosis, _slip, _doc in (
    ("added_b_O", "b_O", "Adds b_O[layer] to the head's OV output."),
    ("kept_position_axis", "no_squeeze", "Forgot [:, 0]: top-k of [name, 1, d_vocab]."),
    ("any_name_not_own", "isin", "torch.isin(top, tokens): any name in the top k."),
    ("count_not_fraction", "sum", ".sum() of the hits, not .mean()."),
    ("transposed", "head_layer", "scores[head, layer] in a [head, layer] tensor."),
):
    variant("get_copying_scores", _diagnosis, _copy_slip, _doc, fn_name=f"copy_{_slip}", slip=_slip)


@correct("get_copying_scores", "the library's MLP0 embedding, in float64")
def copy_float64(model, names=None, k=5, negative=False):
    from ioi.heads import name_embeddings_after_mlp0

    tokens = names if isinstance(names, torch.Tensor) else name_tokens(model, names)
    with torch.no_grad():
        resid = name_embeddings_after_mlp0(model, tokens)
        scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            x = model.blocks[layer].ln1(resid).double()
            for head in range(model.cfg.n_heads):
                out = x @ model.W_V[layer, head].double() @ model.W_O[layer, head].double()
                out = -out if negative else out
                normed = (out - out.mean(-1, keepdim=True)) / (
                    (out - out.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + 1e-5
                ).sqrt()
                logits = normed @ model.W_U.double() + model.b_U.double()
                top = logits[:, 0].topk(k, dim=-1).indices
                scores[layer, head] = (top == tokens[:, None]).any(-1).float().mean()
    return scores


@correct("get_copying_scores", "all heads of a layer at once with einsum")
def copy_einsum(model, names=None, k=5, negative=False):
    tokens = names if isinstance(names, torch.Tensor) else name_tokens(model, names)
    with torch.no_grad():
        embed = model.embed(tokens[:, None])[:, 0]
        resid = embed + model.blocks[0].apply_mlp(model.blocks[0].ln2(embed[:, None]))[:, 0]
        scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            x = model.blocks[layer].ln1(resid[:, None])[:, 0]
            out = torch.einsum("nd,hde,hem->hnm", x, model.W_V[layer], model.W_O[layer])
            out = -out if negative else out
            logits = model.unembed(model.ln_final(out))  # [head, name, vocab]
            top = logits.topk(k, dim=-1).indices
            scores[layer] = (top == tokens[None, :, None]).any(-1).float().mean(-1)
    return scores


# ---- get_attn_scores ---------------------------------------------------------------------------


def _detector(
    model,
    seq_len,
    batch,
    seed,
    kind,
    *,
    induction_offset=1,
    whole_diagonal=False,
    prev_second_only=False,
    layers=None,
):
    toks = repeated_tokens(model, seq_len, batch, seed)
    with torch.no_grad():
        _, cache = model.run_with_cache(toks)
    out = []
    for layer in range(model.cfg.n_layers)[:layers]:
        pattern = cache["pattern", layer]
        if kind == "previous_token":
            diag = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)
            out.append((diag[..., seq_len:] if prev_second_only else diag).mean((0, -1)))
            continue
        offset = seq_len - (induction_offset if kind == "induction" else 0)
        if whole_diagonal:
            out.append(pattern.diagonal(offset=-offset, dim1=-2, dim2=-1).mean((0, -1)))
            continue
        dest = torch.arange(seq_len + 1, 2 * seq_len + 1)
        out.append(pattern[:, :, dest, dest - offset].mean((0, -1)))
    return torch.stack(out)


variant(
    "get_attn_scores",
    "hard_coded_size",
    _detector,
    "The toy's layers written in: range(3).",
    fn_name="detect_toy_layers",
    layers=3,
)
variant(
    "get_attn_scores",
    "wrong_kind",
    _detector,
    "Induction at offset L (the duplicate's).",
    fn_name="detect_induction_as_duplicate",
    induction_offset=0,
)


@wrong("get_attn_scores", "unknown_kind_accepted")
def detect_else_induction(model, seq_len, batch, seed, kind):
    """An if/elif chain whose final else treats any other kind as induction."""
    known = ("previous_token", "duplicate_token")
    return _detector(model, seq_len, batch, seed, kind if kind in known else "induction")


variant(
    "get_attn_scores",
    "diagonal_includes_first_copy",
    _detector,
    "Averages the whole diagonal.",
    fn_name="detect_whole_diagonal",
    whole_diagonal=True,
)


@wrong("get_attn_scores", "ignored_seed")
def detect_seed_zero(model, seq_len, batch, seed, kind):
    """seed hard-coded to 0."""
    return _detector(model, seq_len, batch, 0, kind)


@wrong("get_attn_scores", "ignored_seq_len")
def detect_seq_len_ten(model, seq_len, batch, seed, kind):
    """seq_len hard-coded to 10."""
    return _detector(model, 10, batch, seed, kind)


variant(
    "get_attn_scores",
    "previous_token_second_copy_only",
    _detector,
    "Previous-token score over the second copy only.",
    fn_name="detect_prev_second_copy",
    prev_second_only=True,
)


variant(
    "get_attn_scores",
    "missed_last_layer",
    _detector,
    "range(n_layers - 1).",
    fn_name="detect_range_minus_one",
    layers=-1,
)


def _detector_slip(model, seq_len, batch, seed, kind, *, slip):
    """A learner's detector with one slip (``slip``), indexing dest and src by hand."""
    toks = repeated_tokens(model, seq_len, batch, seed)
    with torch.no_grad():
        _, cache = model.run_with_cache(toks)
    L = seq_len
    if kind == "previous_token":
        dest = torch.arange(1, 2 * L + 1)
        src = dest - 1
    else:
        dest = torch.arange(L + 1, 2 * L + (0 if slip == "short_range" else 1))
        step = {"induction": -1 if slip == "induction_minus" else 1}.get(kind, 0)
        src = dest - L + step
    hook = "attn_scores" if slip == "pre_softmax" else "pattern"
    rows = []
    for layer in range(model.cfg.n_layers):
        p = cache[hook, layer]
        picked = p[:, :, src, dest] if slip == "key_first" else p[:, :, dest, src]
        if slip == "summed":
            rows.append(picked.sum((0, -1)))
        elif slip == "batch_mean_only":
            rows.append(picked.mean(0))
        else:
            rows.append(picked.mean((0, -1)))
    return torch.stack(rows, dim=1 if slip == "stacked_dim1" else 0)


for _diagnosis, _slip, _doc in (
    ("scores_not_pattern", "pre_softmax", "hook_attn_scores (pre-softmax) instead of the pattern."),
    ("induction_wrong_direction", "induction_minus", "Induction source d - L - 1."),
    ("above_the_diagonal", "key_first", "pattern[:, :, src, dest]: query and key exchanged."),
    ("summed_not_averaged", "summed", ".sum((0, -1)) instead of .mean."),
    ("not_averaged", "batch_mean_only", ".mean(0): averaged over prompts only."),
    ("transposed", "stacked_dim1", "torch.stack(rows, dim=1): [head, layer]."),
    ("second_copy_off_by_one", "short_range", "torch.arange(L + 1, 2 * L): one short."),
):
    variant(
        "get_attn_scores", _diagnosis, _detector_slip, _doc, fn_name=f"detect_{_slip}", slip=_slip
    )


@correct("get_attn_scores", "the pattern recomputed as the softmax of hook_attn_scores")
def detect_softmax_of_scores(model, seq_len, batch, seed, kind):
    toks = repeated_tokens(model, seq_len, batch, seed)
    with torch.no_grad():
        _, cache = model.run_with_cache(toks)
    first = 1 if kind == "previous_token" else seq_len + 1
    dest = torch.arange(first, 2 * seq_len + 1)
    src = dest - {"previous_token": 1, "duplicate_token": seq_len, "induction": seq_len - 1}[kind]
    rows = []
    for layer in range(model.cfg.n_layers):
        pattern = cache["attn_scores", layer].softmax(dim=-1)
        rows.append(pattern[:, :, dest, src].mean((0, -1)))
    return torch.stack(rows)


@correct("get_attn_scores", "diagonals sliced to the second copy")
def detect_diagonal_slices(model, seq_len, batch, seed, kind):
    toks = repeated_tokens(model, seq_len, batch, seed)
    with torch.no_grad():
        _, cache = model.run_with_cache(toks)
    offset = {"previous_token": 1, "duplicate_token": seq_len, "induction": seq_len - 1}[kind]
    out = []
    for layer in range(model.cfg.n_layers):
        diag = cache["pattern", layer].diagonal(offset=-offset, dim1=-2, dim2=-1)
        if kind != "previous_token":
            diag = diag[..., -seq_len:]  # destinations L+1 .. 2L
        out.append(diag.mean((0, -1)))
    return torch.stack(out)


# ---- mean_ablation_hooks -----------------------------------------------------------------------


def _ablation_hooks(
    model,
    ds,
    means,
    keep,
    *,
    values="template",
    ignore_keep=False,
    everywhere=False,
    first=False,
    nothing=False,
    toy_layers=False,
):
    batch, n_pos = ds.toks.shape
    rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx])
    hooks = []
    for layer in range(3) if toy_layers else range(model.cfg.n_layers):
        mask = torch.zeros(batch, n_pos, model.cfg.n_heads, dtype=torch.bool)
        for (lay, head), keys in ({} if ignore_keep else keep).items():
            if lay != layer:
                continue
            if keys is None or everywhere:
                mask[:, :, head] = True
                continue
            for key in keys:
                pos = ds.word_idx[key]
                if first:
                    pos = pos[:1].expand_as(pos)
                mask[torch.arange(batch), pos, head] = True
        z = means.z[layer]
        if values == "template":
            mean = z[rows]
        elif values == "global":
            mean = z.mean(0, keepdim=True).expand(batch, *z.shape[1:])
        else:
            mean = torch.zeros(batch, *z.shape[1:])
        if mean.shape[1] < n_pos:
            mean = torch.cat(
                [mean, mean.new_zeros(batch, n_pos - mean.shape[1], *mean.shape[2:])], 1
            )
        mean = mean[:, :n_pos]

        def hook(act, hook, mask=mask, mean=mean):
            return act if nothing else torch.where(mask[..., None], act, mean)

        hooks.append((get_act_name("z", layer), hook))
    return hooks


variant(
    "mean_ablation_hooks",
    "hard_coded_size",
    _ablation_hooks,
    "Hooks for the toy's layers written in: range(3).",
    fn_name="ablation_toy_layers",
    toy_layers=True,
)
variant(
    "mean_ablation_hooks",
    "zero_ablation",
    _ablation_hooks,
    "Zeros instead of means.",
    fn_name="ablate_zero",
    values="zero",
)


variant(
    "mean_ablation_hooks",
    "global_mean_ablation",
    _ablation_hooks,
    "One mean over every template.",
    fn_name="ablate_global_mean",
    values="global",
)


@wrong("mean_ablation_hooks", "global_mean_ablation")
def ablate_batch_mean(model, ds, means, keep):
    """The hook averages the current batch (the clean prompts) over prompts."""
    masks = _ablation_hooks(model, ds, means, keep)

    def wrap(fn):
        def hook(act, hook):
            mean = act.mean(0, keepdim=True).expand_as(act)
            mask = fn(torch.zeros_like(act), hook) == 0  # kept where the original hook kept
            return torch.where(mask, act, mean)

        return hook

    return [(name, wrap(fn)) for name, fn in masks]


@wrong("mean_ablation_hooks", "kept_layers_only")
def ablate_only_layers_in_keep(model, ds, means, keep):
    """Loops over the layers that appear in keep, so a layer with no kept head gets no hook."""
    hooks = dict(_ablation_hooks(model, ds, means, keep))
    layers = sorted({layer for layer, _ in keep})
    return [(get_act_name("z", layer), hooks[get_act_name("z", layer)]) for layer in layers]


@wrong("mean_ablation_hooks", "empty_kept_everywhere")
def ablate_empty_means_all(model, ds, means, keep):
    """`if not keys:` keeps the head everywhere, which catches () as well as None."""
    return _ablation_hooks(model, ds, means, {h: (p or None) for h, p in keep.items()})


variant(
    "mean_ablation_hooks",
    "ignored_keep",
    _ablation_hooks,
    "keep ignored.",
    fn_name="ablate_everything",
    ignore_keep=True,
)


variant(
    "mean_ablation_hooks",
    "kept_every_position",
    _ablation_hooks,
    "Kept heads kept at every position.",
    fn_name="ablate_keep_everywhere",
    everywhere=True,
)


variant(
    "mean_ablation_hooks",
    "same_position_for_all_prompts",
    _ablation_hooks,
    "Prompt 0's positions.",
    fn_name="ablate_first_prompt_positions",
    first=True,
)


variant(
    "mean_ablation_hooks",
    "nothing_ablated",
    _ablation_hooks,
    "Hooks that return z unchanged.",
    fn_name="ablate_nothing",
    nothing=True,
)


@correct("mean_ablation_hooks", "the library's keep_masks and replace_where")
def ablate_library_pieces(model, ds, means, keep):
    from ioi.circuit.ablation import keep_masks, replace_where

    rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx])
    n_pos = ds.toks.shape[1]
    out = []
    for layer, mask in enumerate(keep_masks(model, ds, keep)):
        mean = means.z[layer][rows][:, :n_pos]
        out.append((get_act_name("z", layer), replace_where(~mask, mean)))
    return out


@correct("mean_ablation_hooks", "a per-prompt loop inside the hook")
def ablate_loop(model, ds, means, keep):
    hooks = []
    for layer in range(model.cfg.n_layers):

        def hook(z, hook, layer=layer):
            out = z.clone()
            for i in range(z.shape[0]):
                mean = means.z[layer][means.row_of[int(ds.template_idx[i])]]
                for head in range(z.shape[2]):
                    keys = keep.get((layer, head), ())
                    kept = (
                        set(range(z.shape[1]))
                        if keys is None
                        else {int(ds.word_idx[k][i]) for k in keys}
                    )
                    for pos in range(z.shape[1]):
                        if pos not in kept:
                            out[i, pos, head] = mean[pos, head] if pos < mean.shape[0] else 0.0
            return out

        hooks.append((get_act_name("z", layer), hook))
    return hooks


# ---- faithfulness ------------------------------------------------------------------------------


@wrong("faithfulness", "model_fully_ablated")
def faith_all_ablated(ablation, circuit):
    """F(M) with keep={}."""
    return Faithfulness(
        float(ablation.logit_diff({})), float(ablation.logit_diff(circuit.kept_positions()))
    )


@wrong("faithfulness", "circuit_kept_everywhere")
def faith_everywhere(ablation, circuit):
    """Circuit heads kept at every position."""
    keep = {h: None for h in circuit.all_heads()}
    return Faithfulness(float(ablation.logit_diff(None)), float(ablation.logit_diff(keep)))


@wrong("faithfulness", "swapped_fields")
def faith_swapped(ablation, circuit):
    """Fields exchanged."""
    return Faithfulness(
        float(ablation.logit_diff(circuit.kept_positions())), float(ablation.logit_diff(None))
    )


@wrong("faithfulness", "circuit_fully_ablated")
def faith_circuit_ablated(ablation, circuit):
    """F(C) with keep={}: the circuit ablated too."""
    return Faithfulness(float(ablation.logit_diff(None)), float(ablation.logit_diff({})))


@wrong("faithfulness", "complement_kept")
def faith_complement(ablation, circuit):
    """Keeps every head except the circuit's."""
    return Faithfulness(
        float(ablation.logit_diff(None)),
        float(ablation.logit_diff(ablation.all_heads_except(circuit.all_heads()))),
    )


@wrong("faithfulness", "wrong_type")
def faith_ratio(ablation, circuit):
    """Returns the ratio."""
    return float(ablation.logit_diff(circuit.kept_positions())) / float(ablation.logit_diff(None))


@wrong("faithfulness", "one_position_per_head")
def faith_first_class_position(ablation, circuit):
    """Keep map built class by class; a head already in it keeps its first class's position only."""
    keep = {}
    for cls, heads in circuit.heads.items():
        for head in heads:
            if head not in keep:
                keep[head] = (circuit.positions[cls],)
    return Faithfulness(float(ablation.logit_diff(None)), float(ablation.logit_diff(keep)))


@correct("faithfulness", "keep map built by hand from heads and positions")
def faith_by_hand(ablation, circuit):
    keep = {}
    for cls, heads in circuit.heads.items():
        for head in heads:
            keep[head] = tuple(dict.fromkeys(keep.get(head, ()) + (circuit.positions[cls],)))
    return Faithfulness(float(ablation.logit_diff(None)), float(ablation.logit_diff(keep)))


# ---- completeness and minimality ---------------------------------------------------------------


def _complete(ablation, circuit, modes=("class",), *, how="right", label="class {}"):
    f_m = float(ablation.logit_diff(None))
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    out = []
    for name, members in circuit.heads.items():
        k = list(members)
        f_ck = f_c if how == "circuit_intact" else float(ablation.logit_diff(circuit.without(k)))
        m_k = {
            "model_intact": None,
            "only_k": {h: None for h in k},
            "whole_circuit": ablation.all_heads_except(circuit.all_heads()),
        }.get(how, ablation.all_heads_except(k))
        f_mk = float(ablation.logit_diff(m_k))
        gap = f_ck - f_mk if how == "signed" else abs(f_ck - f_mk)
        rel = gap / abs({"relative_c": f_c, "relative_mk": f_mk}.get(how, f_m))
        gap = rel if how == "score_relative" else gap
        a, b = (f_mk, f_ck) if how == "swap" else (f_ck, f_mk)
        out.append(KnockoutScore(label.format(name), tuple(sorted(k)), a, b, gap, rel))
    return out


@wrong("completeness", "model_not_knocked_out")
def complete_model_intact(ablation, circuit, modes=("class",)):
    """F(M \\ K) = F(M)."""
    return _complete(ablation, circuit, how="model_intact")


@wrong("completeness", "circuit_not_knocked_out")
def complete_circuit_intact(ablation, circuit, modes=("class",)):
    """F(C \\ K) = F(C)."""
    return _complete(ablation, circuit, how="circuit_intact")


@wrong("completeness", "swapped_fields")
def complete_swapped(ablation, circuit, modes=("class",)):
    """f_with and f_without exchanged."""
    return _complete(ablation, circuit, how="swap")


@wrong("completeness", "not_absolute")
def complete_signed(ablation, circuit, modes=("class",)):
    """No abs()."""
    return _complete(ablation, circuit, how="signed")


@wrong("completeness", "relative_to_circuit")
def complete_over_fc(ablation, circuit, modes=("class",)):
    """relative = score / F(C)."""
    return _complete(ablation, circuit, how="relative_c")


@wrong("completeness", "wrong_labels")
def complete_bare_labels(ablation, circuit, modes=("class",)):
    """Labels without 'class '."""
    return _complete(ablation, circuit, label="{}")


@correct("completeness", "ablation keep maps built by hand")
def complete_by_hand(ablation, circuit, modes=("class",)):
    cfg = ablation.model.cfg
    f_m = float(ablation.logit_diff(None))
    kept = circuit.kept_positions()
    out = []
    for name, members in circuit.heads.items():
        c_k = {h: p for h, p in kept.items() if h not in members}
        m_k = {
            (lay, h): None
            for lay in range(cfg.n_layers)
            for h in range(cfg.n_heads)
            if (lay, h) not in members
        }
        a, b = float(ablation.logit_diff(c_k)), float(ablation.logit_diff(m_k))
        out.append(
            KnockoutScore(
                f"class {name}", tuple(sorted(members)), a, b, abs(a - b), abs(a - b) / abs(f_m)
            )
        )
    return out


@wrong("completeness", "k_kept_in_other_classes")
def complete_other_classes_circuit(ablation, circuit, modes=("class",)):
    """C \\ K as the circuit of the other classes: K's heads stay where another class keeps them."""
    from ioi.circuit import Circuit

    f_m = float(ablation.logit_diff(None))
    out = []
    for name, members in circuit.heads.items():
        rest = Circuit(
            {c: hs for c, hs in circuit.heads.items() if c != name},
            {c: p for c, p in circuit.positions.items() if c != name},
        )
        a = float(ablation.logit_diff(rest.kept_positions()))
        b = float(ablation.logit_diff(ablation.all_heads_except(members)))
        out.append(
            KnockoutScore(
                f"class {name}", tuple(sorted(members)), a, b, abs(a - b), abs(a - b) / abs(f_m)
            )
        )
    return out


def _minimal(ablation, circuit, *, how="right"):
    f_m = float(ablation.logit_diff(None))
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    out = []
    for v in circuit.all_heads():
        cls = circuit.classes_of(v)[0]
        k = [] if how == "empty" else [h for h in circuit.heads[cls] if h != v or how == "with_v"]
        f_with = float(ablation.logit_diff(circuit.without([*k, v])))
        f_without = float(ablation.logit_diff(circuit.without(k)))
        gap = f_with - f_without if how == "signed" else abs(f_with - f_without)
        rel = gap / abs(f_m if how == "relative_m" else f_c)
        a, b = (f_without, f_with) if how == "swap" else (f_with, f_without)
        out.append(KnockoutScore(str(v), tuple(sorted(k)), a, b, gap, rel))
    return out


@wrong("minimality", "k_includes_v")
def minimal_k_with_v(ablation, circuit, mode="class"):
    """K contains v."""
    return _minimal(ablation, circuit, how="with_v")


@wrong("minimality", "empty_k")
def minimal_empty(ablation, circuit, mode="class"):
    """K empty."""
    return _minimal(ablation, circuit, how="empty")


@wrong("minimality", "relative_to_model")
def minimal_over_fm(ablation, circuit, mode="class"):
    """relative over F(M)."""
    return _minimal(ablation, circuit, how="relative_m")


@wrong("minimality", "swapped_fields")
def minimal_swapped(ablation, circuit, mode="class"):
    """f_with and f_without exchanged."""
    return _minimal(ablation, circuit, how="swap")


@wrong("minimality", "not_absolute")
def minimal_signed(ablation, circuit, mode="class"):
    """No abs()."""
    return _minimal(ablation, circuit, how="signed")


@wrong("minimality", "wrong_labels")
def minimal_tuple_labels(ablation, circuit, mode="class"):
    """Labels like '(1, 0)' instead of '1.0'."""
    return [
        KnockoutScore(
            str(tuple(s.label.split("."))), s.removed, s.f_with, s.f_without, s.score, s.relative
        )
        for s in _minimal(ablation, circuit)
    ]


@wrong("minimality", "circuit_kept_everywhere")
def minimal_fc_everywhere(ablation, circuit, mode="class"):
    """F(C) with the circuit's heads kept at every position (keep None)."""
    f_c = float(ablation.logit_diff({h: None for h in circuit.all_heads()}))
    out = []
    for v in circuit.all_heads():
        k = [h for h in circuit.heads[circuit.classes_of(v)[0]] if h != v]
        f_with = float(ablation.logit_diff(circuit.without([*k, v])))
        f_without = float(ablation.logit_diff(circuit.without(k)))
        gap = abs(f_with - f_without)
        out.append(KnockoutScore(str(v), tuple(sorted(k)), f_with, f_without, gap, gap / f_c))
    return out


@wrong("minimality", "knocked_out_of_model")
def minimal_from_model(ablation, circuit, mode="class"):
    """The knockouts of completeness's F(M \\ K): all_heads_except."""
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    out = []
    for v in circuit.all_heads():
        k = [h for h in circuit.heads[circuit.classes_of(v)[0]] if h != v]
        f_with = float(ablation.logit_diff(ablation.all_heads_except([*k, v])))
        f_without = float(ablation.logit_diff(ablation.all_heads_except(k)))
        gap = abs(f_with - f_without)
        out.append(KnockoutScore(str(v), tuple(sorted(k)), f_with, f_without, gap, gap / f_c))
    return out


@wrong("minimality", "k_not_first_class")
def minimal_k_of_each_class(ablation, circuit, mode="class"):
    """Loops over v's classes to build K, so the last class's K is the one used."""
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    out = []
    for v in circuit.all_heads():
        for cls in circuit.classes_of(v):
            k = [h for h in circuit.heads[cls] if h != v]
        f_with = float(ablation.logit_diff(circuit.without([*k, v])))
        f_without = float(ablation.logit_diff(circuit.without(k)))
        gap = abs(f_with - f_without)
        out.append(KnockoutScore(str(v), tuple(sorted(k)), f_with, f_without, gap, gap / f_c))
    return out


@wrong("minimality", "v_kept_at_other_positions")
def minimal_v_out_at_own_position(ablation, circuit, mode="class"):
    """Knocks v out at its class's position only; its other classes still keep it."""
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    out = []
    for v in circuit.all_heads():
        cls = circuit.classes_of(v)[0]
        k = [h for h in circuit.heads[cls] if h != v]
        without_k = circuit.without(k)
        positions = list(without_k[v])
        positions.remove(circuit.positions[cls])
        with_v_out = {h: p for h, p in without_k.items() if h != v}
        if positions:
            with_v_out[v] = tuple(positions)
        f_with = float(ablation.logit_diff(with_v_out))
        f_without = float(ablation.logit_diff(without_k))
        gap = abs(f_with - f_without)
        out.append(KnockoutScore(str(v), tuple(sorted(k)), f_with, f_without, gap, gap / f_c))
    return out


@correct("minimality", "the library's criterion")
def minimal_library(ablation, circuit, mode="class"):
    from ioi.circuit import minimality

    return minimality(ablation, circuit, mode="class")


# ---- name_mover_scatter ------------------------------------------------------------------------


def _scatter(
    model, ds, layer, head, *, s2_only=False, bias=False, ld=False, ln=False, end=None, swap=False
):
    from ioi.heads import NameMoverScatter

    _, cache = model.run_with_cache(ds.toks)
    rows = torch.arange(ds.N)
    end = ds.word_idx["end"] if end is None else end
    pattern = cache["pattern", layer][:, head]
    out = cache["z", layer][rows, end, head] @ model.W_O[layer, head]
    if bias:
        out = out + model.b_O[layer]
    if ln:
        out = out / cache["ln_final.hook_scale"][rows, end]
    io_u, s_u = model.W_U[:, ds.io_tokenIDs].T, model.W_U[:, ds.s_tokenIDs].T
    to_io = pattern[rows, end, ds.word_idx["IO"]]
    to_s = pattern[rows, end, ds.word_idx["S2"]]
    if not s2_only:
        to_s = to_s + pattern[rows, end, ds.word_idx["S1"]]
    proj_io = (out * (io_u - s_u if ld else io_u)).sum(-1)
    proj_s = (out * (s_u - io_u if ld else s_u)).sum(-1)
    if swap:
        to_io, to_s = to_s, to_io
    return NameMoverScatter(layer, head, to_io, to_s, proj_io, proj_s)


variant(
    "name_mover_scatter",
    "s2_only",
    _scatter,
    "Attention to S2 only.",
    fn_name="scatter_s2_only",
    s2_only=True,
)


variant(
    "name_mover_scatter", "added_b_O", _scatter, "b_O added.", fn_name="scatter_bias", bias=True
)


variant(
    "name_mover_scatter",
    "projected_on_logit_diff",
    _scatter,
    "Projection on IO - S.",
    fn_name="scatter_logit_diff",
    ld=True,
)


variant(
    "name_mover_scatter",
    "scaled_by_final_ln",
    _scatter,
    "Divided by the final layer norm's scale.",
    fn_name="scatter_ln",
    ln=True,
)


@wrong("name_mover_scatter", "ignored_positions")
def scatter_last_column(model, ds, layer, head):
    """The last column."""
    return _scatter(model, ds, layer, head, end=torch.full((ds.N,), ds.toks.shape[1] - 1))


@wrong("name_mover_scatter", "same_position_for_all_prompts")
def scatter_first_end(model, ds, layer, head):
    """Prompt 0's end."""
    end = ds.word_idx["end"]
    return _scatter(model, ds, layer, head, end=end[:1].expand_as(end))


def _scatter_by_hooks(model, ds, layer, head, *, out_word="end", unembed_bias=False):
    """A learner's scatter from hooks, cast to CPU; the output read at ``out_word``."""
    from ioi.heads import NameMoverScatter

    _, cache = model.run_with_cache(ds.toks)
    i, idx = torch.arange(ds.N), ds.word_idx
    pattern = cache["pattern", layer][:, head].cpu()
    out = cache["z", layer][i, idx[out_word], head].cpu() @ model.W_O[layer, head].cpu()
    W_U = model.W_U.cpu()
    proj_io = torch.einsum("bd,db->b", out, W_U[:, ds.io_tokenIDs])
    proj_s = torch.einsum("bd,db->b", out, W_U[:, ds.s_tokenIDs])
    if unembed_bias:
        proj_io = proj_io + model.b_U.cpu()[ds.io_tokenIDs]
        proj_s = proj_s + model.b_U.cpu()[ds.s_tokenIDs]
    end = idx["end"]
    to_s = pattern[i, end, idx["S1"]] + pattern[i, end, idx["S2"]]
    return NameMoverScatter(layer, head, pattern[i, end, idx["IO"]], to_s, proj_io, proj_s)


@wrong("name_mover_scatter", "added_unembed_bias")
def scatter_with_b_U(model, ds, layer, head):
    """The projections read like logits, b_U included."""
    return _scatter_by_hooks(model, ds, layer, head, unembed_bias=True)


@wrong("name_mover_scatter", "output_not_at_end")
def scatter_output_at_s2(model, ds, layer, head):
    """Attention from end, but the head's output taken at S2."""
    return _scatter_by_hooks(model, ds, layer, head, out_word="S2")


@wrong("name_mover_scatter", "output_not_at_end")
def scatter_output_at_io(model, ds, layer, head):
    """Attention from end, but the head's output taken at the IO."""
    return _scatter_by_hooks(model, ds, layer, head, out_word="IO")


@correct("name_mover_scatter", "einsum projections on the CPU, output read at end")
def scatter_einsum(model, ds, layer, head):
    return _scatter_by_hooks(model, ds, layer, head)


variant(
    "name_mover_scatter",
    "swapped_fields",
    _scatter,
    "attn_to_io and attn_to_s exchanged.",
    fn_name="scatter_swapped",
    swap=True,
)


@correct("name_mover_scatter", "a loop over prompts, from the pattern and z hooks only")
def scatter_loop(model, ds, layer, head):
    from ioi.heads import NameMoverScatter

    names = [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_z"]
    _, cache = model.run_with_cache(ds.toks, names_filter=names)
    values = {k: [] for k in ("io", "s", "pio", "ps")}
    for i in range(ds.N):
        e = int(ds.word_idx["end"][i])
        row = cache[names[0]][i, head, e]
        values["io"].append(row[int(ds.word_idx["IO"][i])])
        values["s"].append(row[int(ds.word_idx["S1"][i])] + row[int(ds.word_idx["S2"][i])])
        out = cache[names[1]][i, e, head] @ model.W_O[layer, head]
        values["pio"].append(out @ model.W_U[:, int(ds.io_tokenIDs[i])])
        values["ps"].append(out @ model.W_U[:, int(ds.s_tokenIDs[i])])
    return NameMoverScatter(
        layer, head, *(torch.stack(values[k]) for k in ("io", "s", "pio", "ps"))
    )


# ---- keep_head_at ------------------------------------------------------------------------------


def _keep_at(ablation, circuit, head, positions, how="right"):
    kept = circuit.kept_positions()
    head = tuple(head)
    out = {}
    for p in positions:
        keep = {h: v for h, v in kept.items() if tuple(h) != head}
        if how == "right":
            keep[head] = (p,)
        elif how == "added":
            keep[head] = tuple(dict.fromkeys(kept.get(head, ()) + (p,)))
        elif how == "everywhere":
            keep[head] = None
        elif how == "own":
            keep[head] = kept.get(head, ())
        out[p] = float(ablation.logit_diff(keep))
    return out


@wrong("keep_head_at", "added_not_moved")
def keep_added(ablation, circuit, head, positions):
    """Kept at p and at its class's position."""
    return _keep_at(ablation, circuit, head, positions, "added")


@wrong("keep_head_at", "kept_everywhere")
def keep_everywhere(ablation, circuit, head, positions):
    """keep[head] = None."""
    return _keep_at(ablation, circuit, head, positions, "everywhere")


@wrong("keep_head_at", "head_removed")
def keep_removed(ablation, circuit, head, positions):
    """The head dropped."""
    return _keep_at(ablation, circuit, head, positions, "removed")


@wrong("keep_head_at", "ignored_position_keys")
def keep_own(ablation, circuit, head, positions):
    """Never moved."""
    return _keep_at(ablation, circuit, head, positions, "own")


@wrong("keep_head_at", "wrong_type")
def keep_list(ablation, circuit, head, positions):
    """A list, not a dict."""
    return list(_keep_at(ablation, circuit, head, positions).values())


@wrong("keep_head_at", "ratio_not_value")
def keep_over_model(ablation, circuit, head, positions):
    """F divided by F(M), as faithfulness reports it."""
    f_model = float(ablation.logit_diff(None))
    return {p: f / f_model for p, f in _keep_at(ablation, circuit, head, positions).items()}


@wrong("keep_head_at", "change_not_value")
def keep_change(ablation, circuit, head, positions):
    """F(C) with the head moved minus F(C) with the head at home."""
    home = float(ablation.logit_diff(circuit.kept_positions()))
    return {p: f - home for p, f in _keep_at(ablation, circuit, head, positions).items()}


@wrong("keep_head_at", "started_from_model")
def keep_in_model(ablation, circuit, head, positions):
    """Starts from every head kept everywhere."""
    out = {}
    for p in positions:
        keep = ablation.all_heads_except([])
        keep[Head(*head)] = (p,)
        out[p] = float(ablation.logit_diff(keep))
    return out


@wrong("keep_head_at", "moved_every_head")
def keep_all_at_p(ablation, circuit, head, positions):
    """A comprehension that moves every head of the circuit."""
    return {
        p: float(ablation.logit_diff({h: (p,) for h in circuit.kept_positions()}))
        for p in positions
    }


@wrong("keep_head_at", "accumulated_positions")
def keep_map_outside_loop(ablation, circuit, head, positions):
    """One keep map for all positions; each p appended to the head's entry."""
    keep = circuit.kept_positions()
    out = {}
    for p in positions:
        keep[Head(*head)] = keep[Head(*head)] + (p,)
        out[p] = float(ablation.logit_diff(keep))
    return out


@correct("keep_head_at", "the head given as a plain tuple key (Head is a tuple)")
def keep_tuple_key(ablation, circuit, head, positions):
    out = {}
    for p in positions:
        keep = circuit.kept_positions()
        keep[tuple(head)] = (p,)
        out[p] = float(ablation.logit_diff(keep))
    return out


@correct("keep_head_at", "a Circuit rebuilt with the head in a class of its own")
def keep_rebuilt(ablation, circuit, head, positions):
    from ioi.circuit import Circuit
    from ioi.head import Head

    head = Head(*head)
    out = {}
    for p in positions:
        classes = {c: [h for h in hs if h != head] for c, hs in circuit.heads.items()}
        classes["moved"] = [head]
        where = {**dict(circuit.positions), "moved": p}
        moved = Circuit(
            {c: hs for c, hs in classes.items() if hs}, {c: where[c] for c in classes if classes[c]}
        )
        out[p] = float(ablation.logit_diff(moved.kept_positions()))
    return out


# ---- more name_mover_scatter mistakes ----------------------------------------------------------


def _scatter_read(
    model, ds, layer, head, *, key_query=False, s_mean=False, unit=False, layer_out=False
):
    """A scatter whose reads can each go wrong."""
    from ioi.heads import NameMoverScatter

    with torch.no_grad():
        _, cache = model.run_with_cache(ds.toks)
    i, end, idx = torch.arange(ds.N), ds.word_idx["end"], ds.word_idx
    pattern = cache["pattern", layer][:, head]

    def attn(word):
        return pattern[i, idx[word], end] if key_query else pattern[i, end, idx[word]]

    to_s = attn("S1") + attn("S2")
    if s_mean:
        to_s = to_s / 2
    if layer_out:
        out = cache["attn_out", layer][i, end]
    else:
        out = torch.einsum("bd,dm->bm", cache["z", layer][i, end, head], model.W_O[layer, head])
    io_u, s_u = model.W_U[:, ds.io_tokenIDs], model.W_U[:, ds.s_tokenIDs]
    if unit:
        io_u, s_u = io_u / io_u.norm(dim=0), s_u / s_u.norm(dim=0)
    return NameMoverScatter(
        layer, head, attn("IO"), to_s, (out * io_u.T).sum(-1), (out * s_u.T).sum(-1)
    )


variant(
    "name_mover_scatter",
    "swapped_dest_src",
    _scatter_read,
    "pattern[i, name, end]: from the names to end.",
    fn_name="scatter_key_query",
    key_query=True,
)


variant(
    "name_mover_scatter",
    "s_attention_averaged",
    _scatter_read,
    "Mean of the two S mentions.",
    fn_name="scatter_s_mean",
    s_mean=True,
)


variant(
    "name_mover_scatter",
    "normalised_unembed",
    _scatter_read,
    "Unit-length unembedding columns.",
    fn_name="scatter_unit_unembed",
    unit=True,
)


variant(
    "name_mover_scatter",
    "whole_layer_output",
    _scatter_read,
    "The layer's attn_out at end instead of the head's output.",
    fn_name="scatter_attn_out",
    layer_out=True,
)


# ---- more get_copying_scores mistakes ----------------------------------------------------------


def _copying_logits(model, names=None, k=5, negative=False, *, bias=True, names_only=False):
    """Copying scores from logits built by hand, the top k taken over a chosen set of columns."""
    tokens = name_tokens(model, names) if isinstance(names, list) else names
    tokens = name_tokens(model) if tokens is None else tokens
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.no_grad():
        embed = model.embed(tokens[:, None])
        resid = embed + model.blocks[0].apply_mlp(model.blocks[0].ln2(embed))
        for layer in range(model.cfg.n_layers):
            x = model.blocks[layer].ln1(resid)
            for head in range(model.cfg.n_heads):
                out = x @ model.W_V[layer, head] @ model.W_O[layer, head]
                y = model.ln_final(-out if negative else out)[:, 0]
                logits = y @ model.W_U + (model.b_U if bias else 0.0)
                if names_only:
                    top = tokens[logits[:, tokens].topk(min(k, len(tokens)), dim=-1).indices]
                else:
                    top = logits.topk(k, dim=-1).indices
                scores[layer, head] = (top == tokens[:, None]).any(-1).float().mean()
    return scores


variant(
    "get_copying_scores",
    "skipped_unembed_bias",
    _copying_logits,
    "Unembeds with y @ W_U, no b_U.",
    fn_name="copying_no_b_U",
    bias=False,
)


variant(
    "get_copying_scores",
    "topk_among_names",
    _copying_logits,
    "Ranks each name among the name tokens only.",
    fn_name="copying_rank_among_names",
    names_only=True,
)


# ---- adversarial review (chk36): faithfulness and completeness ----------------------------------


@wrong("faithfulness", "ratio_not_value")
def faith_ratio_in_field(ablation, circuit):
    """f_circuit = F(C) / F(M)."""
    f_m = float(ablation.logit_diff(None))
    return Faithfulness(f_m, float(ablation.logit_diff(circuit.kept_positions())) / f_m)


@wrong("faithfulness", "model_is_circuit")
def faith_circuit_twice(ablation, circuit):
    """F(C) copied into both fields."""
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    return Faithfulness(f_c, f_c)


@wrong("faithfulness", "kept_at_end_only")
def faith_end_only(ablation, circuit):
    """Every circuit head kept at end only."""
    keep = {head: ("end",) for head in circuit.all_heads()}
    return Faithfulness(float(ablation.logit_diff(None)), float(ablation.logit_diff(keep)))


@wrong("faithfulness", "raised")
def faith_string_position(ablation, circuit):
    """keep[head] = circuit.positions[cls], a string (the library raises a TypeError)."""
    keep = {head: circuit.positions[cls] for cls, heads in circuit.heads.items() for head in heads}
    return Faithfulness(float(ablation.logit_diff(None)), float(ablation.logit_diff(keep)))


@correct("faithfulness", "circuit.without([]) and .item()")
def faith_without_nothing(ablation, circuit):
    return Faithfulness(
        f_model=ablation.logit_diff(None).item(),
        f_circuit=ablation.logit_diff(circuit.without([])).item(),
    )


variant("completeness", "kept_only_k", _complete, "F(M \\ K) keeps K alone.", how="only_k")
variant(
    "completeness",
    "removed_whole_circuit",
    _complete,
    "F(M \\ K) with the whole circuit removed.",
    how="whole_circuit",
)
variant(
    "completeness",
    "relative_to_knocked_out",
    _complete,
    "relative = score / F(M \\ K).",
    how="relative_mk",
)
variant("completeness", "score_is_relative", _complete, "score = gap / F(M).", how="score_relative")

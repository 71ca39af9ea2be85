"""Checkers for section 5, the paper's replication: head scores, mean ablation, the criteria.

Expected values come from `ioi.heads` and `ioi.circuit`. The circuits the checkers score are
fixed toy-model circuits (movers at ``end``, S2 writers at ``S2``, previous-token heads at
``S1+1``, and a second split into other classes), so the checks do not depend on a
discovery run, and an answer that hard-codes one circuit fails on the other.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from types import SimpleNamespace

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from ioi import heads
from ioi.checks.core import AnyOf, describe, exercise, matches, one_thread, without_last_layer
from ioi.checks.fixtures import (
    IOIBatch,
    ioi_batch,
    other_ioi_model,
    other_model_batch,
    other_processed_model,
)
from ioi.checks.other_sizes import (
    describe_other_ioi_model,
    describe_sizes,
    expect_on_other_sizes,
    hard_coded_size_error,
    toy_grid_axes,
)
from ioi.circuit import (
    Circuit,
    Faithfulness,
    KnockoutScore,
    MeanAblation,
    completeness,
    faithfulness,
    minimality,
)
from ioi.circuit.ablation import (
    keep_masks,
    logit_diff_with_hooks,
    mean_ablation_hooks,
    replace_where,
)
from ioi.head import Head

CHECK_CIRCUIT = Circuit(
    heads={
        "mover": ("1.0", "1.1", "1.2", "1.3", "2.0", "2.1", "2.2", "2.3"),
        "s2_writer": ("0.1", "0.3"),
        "previous_token": ("0.0", "0.2"),
    },
    positions={"mover": "end", "s2_writer": "S2", "previous_token": "S1+1"},
    name="toy circuit used by the checkers",
)

OTHER_CIRCUIT = Circuit(
    heads={
        "late_mover": ("2.1", "2.2"),
        "early_mover": ("1.0", "1.1", "1.3"),
        "s2_writer": ("0.1", "0.3", "0.2"),
    },
    positions={"late_mover": "end", "early_mover": "end", "s2_writer": "S2"},
    name="a second toy circuit used by the checkers",
)

OVERLAP_CIRCUIT = Circuit(
    heads={
        "s2_writer": ("0.3", "1.2", "0.1"),
        "mover": ("2.2", "1.2", "2.1", "0.3"),
        "previous_token": ("0.2", "0.0", "0.3"),
    },
    positions={"s2_writer": "S2", "mover": "end", "previous_token": "S1+1"},
    name="a toy circuit whose heads 0.3 and 1.2 sit in several classes, listed unsorted",
)
"""A head may sit in several classes (kept at each of their positions); here two do, at
different positions, and no class lists its heads in order, so an answer that keeps a head
at one position only, or reads its class from the wrong end, differs."""


def _one_position_per_head(circuit: Circuit) -> AnyOf:
    """Keep maps that keep each head at one of its classes' positions only (first, or last)."""
    first: dict = {}
    last: dict = {}
    for cls, members in circuit.heads.items():
        for h in members:
            first.setdefault(h, (circuit.positions[cls],))
            last[h] = (circuit.positions[cls],)
    return AnyOf([first, last])


def _without_class(circuit: Circuit, name: str) -> dict:
    """The keep map of the circuit's *other* classes: K's heads stay where another class keeps them."""
    out: dict = {}
    for cls, members in circuit.heads.items():
        if cls != name:
            for h in members:
                if circuit.positions[cls] not in out.get(h, ()):
                    out[h] = out.get(h, ()) + (circuit.positions[cls],)
    return out


@functools.lru_cache(maxsize=1)
def _ablation() -> tuple[IOIBatch, MeanAblation]:
    b = ioi_batch(n=8)
    return b, MeanAblation.build(b.model, b.ds, b.abc)


# ---- get_copying_scores -----------------------------------------------------------------------

COPYING = exercise(
    "get_copying_scores",
    hint="for each name token: embed it, add block 0's MLP output on it (MLP0 as an extended "
    "embedding), apply the head's layer's ln1, multiply by W_V[layer, head] @ W_O[layer, head] "
    "(negated if negative), apply ln_final and unembed; score = fraction of names whose own "
    "token is among the top-k logits.",
    diagnoses={
        "skipped_mlp0": "you used the bare token embedding; the paper (and the library) add "
        "block 0's MLP output first, as GPT-2 uses MLP0 as part of its embedding",
        "skipped_final_ln": "you unembedded the head's output without the final layer norm. "
        "The toy's unembedding has a bias, so the scale ln_final divides out decides how much "
        "the bias weighs against the head's output: apply ln_final before W_U",
        "skipped_layer_norms": "you applied neither the head's layer norm nor the final one: "
        "the unembedding bias then weighs differently against the head's output, and the "
        "top-k changes. Apply ln1 of the head's layer before W_V and ln_final before W_U",
        "ignored_negative": "negative=True must score the negated OV output (a head that "
        "*suppresses* the name it attends to)",
        "bottom_k_not_negated": "for negative=True you took the k *lowest* logits; negate the "
        "head's output instead, then take the top k (the two differ by the unembedding bias)",
        "ignored_k": "your scores are those of another k: use the k you were given",
        "ignored_names": "your scores are those of every known name, not of the `names` given",
        "added_position_embedding": "you added a position embedding (W_pos) to the name's "
        "embedding; the copying score asks what a head does with the *token*, wherever it "
        "stands, so use the token embedding alone",
        "mlp0_without_ln2": "you applied block 0's MLP to the raw embedding; the MLP reads its "
        "input through ln2 (blocks[0].ln2), as in the model's forward pass",
        "added_b_O": "you added the attention layer's output bias b_O to the head's output: "
        "b_O belongs to the layer, not to one head, and the copying score asks what the "
        "head's OV circuit alone writes (normed @ W_V @ W_O)",
        "kept_position_axis": "you took the top k of [name, 1, d_vocab] logits without "
        "dropping the one-token position axis ([:, 0]): `top == tokens[:, None]` then "
        "compares each name's top k with *every* name. Index [:, 0] first, so each name's "
        "top k is compared with its own token",
        "any_name_not_own": "you counted a name as copied when *any* name is in its top k "
        "(torch.isin); the score asks whether the name's *own* token is: "
        "(top == tokens[:, None]).any(-1)",
        "count_not_fraction": "you returned how many names are copied; the score is the "
        "fraction of names (.float().mean(), not .sum())",
        "transposed": "the result is [head, layer]; return [layer, head]",
        "skipped_unembed_bias": "you unembedded with W_U alone, leaving out the unembedding "
        "bias b_U: the toy's b_U favours some tokens, and the top k of the logits must see "
        "it. Use model.unembed (x @ W_U + b_U)",
        "topk_among_names": "you took the top k among the name tokens only (the logits' "
        "columns cut to the names); the question is whether the name is among the top k of "
        "the whole vocabulary: topk over d_vocab",
    },
    shared=("missed_last_layer", "hard_coded_size"),
)


@torch.no_grad()
def copying_variant(
    model,
    tokens: Tensor,
    *,
    k: int = 5,
    negative: bool = False,
    mlp0: bool = True,
    layer_norms: bool = True,
    final_ln: bool = True,
    bottom: bool = False,
    position: bool = False,
    ln2: bool = True,
    b_O: bool = False,
    keep_pos_axis: bool = False,
    any_name: bool = False,
    count: bool = False,
    ln1: bool = True,
    b_U: bool = True,
    among_names: bool = False,
) -> Float[Tensor, "layer head"]:
    """The copying score of ``tokens`` with switches that reproduce common mistakes.

    ``b_O`` adds the layer's output bias to the head's output; ``keep_pos_axis`` leaves the
    logits [name, 1, d_vocab] (the top-k indices then compare with every name);
    ``any_name`` counts a name whose top k holds *any* name; ``count`` sums instead of
    averaging over names; ``ln1=False`` skips the head's layer norm only; ``b_U=False``
    unembeds without the bias; ``among_names`` takes the top k among the name tokens only.
    """
    embed = model.embed(tokens[:, None])  # [name, 1, d_model]
    if position:
        embed = embed + model.W_pos[0]
    mlp_in = model.blocks[0].ln2(embed) if ln2 else embed
    resid = embed + model.blocks[0].apply_mlp(mlp_in) if mlp0 else embed
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        normed = model.blocks[layer].ln1(resid) if layer_norms and ln1 else resid
        for head in range(model.cfg.n_heads):
            out = normed @ model.W_V[layer, head] @ model.W_O[layer, head]
            if b_O:
                out = out + model.b_O[layer]
            out = -out if negative and not bottom else out
            x = model.ln_final(out) if layer_norms and final_ln else out
            logits = model.unembed(x) if b_U else x @ model.W_U
            logits = logits if keep_pos_axis else logits[:, 0]  # [name, d_vocab]
            if among_names:  # top k of the names' columns, as token ids
                logits = torch.full_like(logits, -torch.inf).index_copy(
                    -1, tokens, logits[..., tokens]
                )
            top = (-logits if bottom else logits).topk(k, dim=-1).indices
            hit = torch.isin(top, tokens) if any_name else top == tokens[:, None]
            hit = hit.any(-1).float()
            scores[layer, head] = hit.sum() if count else hit.mean()
    return scores


@one_thread()
def test_get_copying_scores(get_copying_scores_fn: Callable) -> None:
    """Check ``get_copying_scores(model, names=None, k=5, negative=False) -> [layer, head]``."""
    ex, b = COPYING, ioi_batch()
    model = b.model
    every = heads.name_tokens(model)
    some = b.ds.names[::3]  # a third of the names, as strings
    cases = (
        (None, "names=None", 5, False),
        (some, f"names=<{len(some)} names>", 3, True),
        (every[: len(every) // 2], "names=<tensor of half the name ids>", 7, False),
    )
    for names, shown, k, negative in cases:
        if names is None or isinstance(names, Tensor):
            tokens = every if names is None else names
        else:
            tokens = heads.name_tokens(model, names)
        call = f"get_copying_scores(model, {shown}, k={k}, negative={negative})  [toy model]"
        got = ex.call(
            get_copying_scores_fn,
            model,
            names.clone() if isinstance(names, Tensor) else names,
            k,
            negative,
            call=call,
            model=model,
        )
        expected = heads.get_copying_scores(model, tokens, k, negative)

        def variant(t=tokens, kk=k, neg=negative, **how):
            return copying_variant(model, t, k=kk, negative=neg, **how)

        # Within the tolerance below, but a score computed without b_U exactly is that mistake.
        no_bias = variant(b_U=False)
        tight = {"atol": 1e-6, "rtol": 0.0}
        if (
            isinstance(got, Tensor)
            and matches(got.detach().float().cpu(), no_bias, **tight)
            and not any(
                matches(no_bias, right, **tight) for right in (expected, variant(ln1=False))
            )
        ):
            ex.fail(
                "skipped_unembed_bias",
                call=call,
                expected=describe(expected),
                got=describe(got),
                explanation=ex.diagnoses["skipped_unembed_bias"],
                hint=ex.hint,
            )
        mistakes = {
            "bottom_k_not_negated": lambda v=variant, neg=negative: v(bottom=True) if neg else None,
            "topk_among_names": lambda v=variant: v(among_names=True),
            "skipped_mlp0": lambda v=variant: v(mlp0=False),
            "skipped_final_ln": lambda v=variant: v(final_ln=False),
            "skipped_layer_norms": lambda v=variant: v(layer_norms=False),
            "ignored_negative": lambda v=variant, neg=negative: v(neg=False) if neg else None,
            "ignored_k": lambda v=variant, kk=k: [
                v(kk=other) for other in (5, 3, 10) if other != kk
            ],
            "ignored_names": lambda v=variant, n=names: None if n is None else v(t=every),
            "added_position_embedding": lambda v=variant: v(position=True),
            "mlp0_without_ln2": lambda v=variant: v(ln2=False),
            "missed_last_layer": lambda e=expected: without_last_layer(e),
            "added_b_O": lambda v=variant: v(b_O=True),
            "kept_position_axis": lambda v=variant: v(keep_pos_axis=True),
            "any_name_not_own": lambda v=variant: v(any_name=True),
            "count_not_fraction": lambda v=variant: v(count=True),
            "transposed": lambda e=expected: e.T,
        }
        # Scores count names: with or without the head's LayerNormPre before W_V a name or two
        # near the top-k edge can flip (LayerNorm-eps and centring effects); accept that.
        tolerance = 2.5 / len(tokens)
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=tolerance, rtol=0.0)
    # Every token of the small random model's vocabulary is a "name": its heads copy a few.
    other = other_processed_model()
    tokens = torch.arange(other.cfg.d_vocab)
    expect_on_other_sizes(
        ex,
        get_copying_scores_fn,
        other,
        tokens.clone(),
        5,
        False,
        call="get_copying_scores(model, names=<tensor of every token id>, k=5, negative=False)  "
        f"[{describe_sizes(other)}]",
        model=other,
        expected=heads.get_copying_scores(other, tokens, 5, False),
        axes=toy_grid_axes(),
        atol=2.5 / len(tokens),
        rtol=0.0,
    )
    ex.passed(f"{len(cases)} calls (names, k and negative varied), and a model of other sizes")


# ---- get_attn_scores --------------------------------------------------------------------------

DETECTORS = exercise(
    "get_attn_scores",
    hint="tokens = ioi.heads.repeated_tokens(model, seq_len, batch, seed) ([BOS, t_1..t_L, "
    "t_1..t_L]); for each layer's pattern average the right diagonal: previous token "
    "(dest, dest-1) everywhere; duplicate (d, d-L) and induction (d, d-L+1) for d in the "
    "second copy only, d = L+1 .. 2L.",
    diagnoses={
        "wrong_kind": "the scores are another detector's: check the offset between the "
        "destination and the source for this `kind`",
        "diagonal_includes_first_copy": "your diagonal also averages positions of the first "
        "copy (a diagonal of the pattern starts at the top): start at the second copy, "
        "d = L+1 .. 2L",
        "previous_token_second_copy_only": "the previous-token score averages every position "
        "(d, d - 1), not the second copy only",
        "ignored_seed": "your scores are those of another seed's tokens: pass `seed` on",
        "ignored_seq_len": "your scores are those of another sequence length: pass `seq_len` on",
        "ignored_batch": "your scores are those of another batch size: pass `batch` on",
        "second_copy_off_by_one": "your destinations are one position away from the second "
        "copy (shifted, or one short at an end): with the BOS first, the second copy is "
        "positions L+1 .. 2L (torch.arange(L + 1, 2 * L + 1))",
        "above_the_diagonal": "the scores are all 0: you read above the main diagonal, where "
        "a causal pattern is 0: a diagonal with offset=+1, or the pattern indexed [..., src, "
        "dest]. The pattern is [batch, head, dest (query), src (key)] and the source comes "
        "*before* the destination (offset=-1 for the previous token)",
        "scores_not_pattern": "you read the attention scores before the softmax "
        "(hook_attn_scores); the detectors average attention *probabilities*, "
        "cache['pattern', layer]",
        "induction_wrong_direction": "your induction source is d - L - 1, the token *before* "
        "the first occurrence; an induction head attends to the token *after* it, d - L + 1",
        "transposed": "the result is [head, layer]; stack the layers on the first axis: "
        "[layer, head]",
        "summed_not_averaged": "you summed over the prompts or over the destinations where "
        "the score is their mean: .mean((0, -1)) of [batch, head, dest]",
        "not_averaged": "you averaged over only one of the two axes (the prompts, or the "
        "destinations); a head's score is the mean over both: .mean((0, -1)) of [batch, head, "
        "dest], giving [layer, head]",
        "unknown_kind_accepted": "an unknown kind returned scores instead of raising "
        "ValueError: a typo in `kind` must not silently give another detector's scores; check "
        "kind against the three valid ones first and raise ValueError listing them",
    },
    shared=("missed_last_layer", "hard_coded_size"),
)


@torch.no_grad()
def _shifted_detector(
    model, seq_len: int, batch: int, seed: int, kind: str, shift: int
) -> Tensor | None:
    """A duplicate or induction score read at destinations ``shift`` away from the second copy."""
    if kind == "previous_token":
        return None
    toks = heads.repeated_tokens(model, seq_len, batch, seed)
    _, cache = model.run_with_cache(toks)
    dest = (torch.arange(seq_len + 1, 2 * seq_len + 1) + shift).clamp(max=2 * seq_len)
    src = dest - (seq_len if kind == "duplicate_token" else seq_len - 1)
    return torch.stack(
        [
            cache["pattern", layer][:, :, dest, src].mean((0, -1))
            for layer in range(model.cfg.n_layers)
        ]
    )


@torch.no_grad()
def _detector_variant(
    model, seq_len: int, batch: int, seed: int, kind: str, *, whole: bool = False
) -> Tensor:
    """A detector score averaged over a whole diagonal (the first copy included, or, for the
    previous-token kind, the second copy only when ``whole`` is False)."""
    toks = heads.repeated_tokens(model, seq_len, batch, seed)
    _, cache = model.run_with_cache(toks)
    offset = {"previous_token": 1, "duplicate_token": seq_len, "induction": seq_len - 1}[kind]
    out = []
    for layer in range(model.cfg.n_layers):
        diag = cache["pattern", layer].diagonal(offset=-offset, dim1=-2, dim2=-1)
        out.append((diag if whole else diag[..., -seq_len:]).mean((0, -1)))
    return torch.stack(out)


@torch.no_grad()
def _diagonal_values(
    model,
    seq_len: int,
    batch: int,
    seed: int,
    kind: str,
    *,
    hook: str = "pattern",
    src_offset: int | None = None,
    dests: Tensor | None = None,
) -> Float[Tensor, "layer batch head dest"]:
    """The values a detector averages, before the mean: from ``hook`` (the pattern, or the
    scores before the softmax), at ``dests`` (default: the detector's own) and sources
    ``src_offset`` before them (default: the detector's own)."""
    toks = heads.repeated_tokens(model, seq_len, batch, seed)
    _, cache = model.run_with_cache(toks)
    offset = {"previous_token": 1, "duplicate_token": seq_len, "induction": seq_len - 1}[kind]
    offset = offset if src_offset is None else src_offset
    if dests is None:
        first = 1 if kind == "previous_token" else seq_len + 1
        dests = torch.arange(first, 2 * seq_len + 1)
    return torch.stack(
        [cache[hook, layer][:, :, dests, dests - offset] for layer in range(model.cfg.n_layers)]
    )


@one_thread()
def test_get_attn_scores(get_attn_scores_fn: Callable) -> None:
    """Check ``get_attn_scores(model, seq_len, batch, seed, kind) -> [layer, head]``."""
    ex, b = DETECTORS, ioi_batch()
    model = b.model
    for seq_len, batch, seed in ((8, 4, 3), (12, 3, 5)):
        every = heads.attention_detector_scores(model, seq_len, batch, seed)
        for kind in heads.DETECTOR_KINDS:
            call = (
                f"get_attn_scores(model, seq_len={seq_len}, batch={batch}, seed={seed}, "
                f"kind={kind!r})  [toy model]"
            )
            got = ex.call(
                get_attn_scores_fn, model, seq_len, batch, seed, kind, call=call, model=model
            )

            def scores(L=seq_len, n=batch, s=seed, k=kind):
                return heads.attention_detector_scores(model, L, n, s)[k]

            mistakes = {
                "wrong_kind": lambda e=every, k=kind: [v for o, v in e.items() if o != k],
                "ignored_seed": lambda f=scores, s=seed: [f(s=o) for o in (0, 1, 42) if o != s],
                "ignored_seq_len": lambda f=scores, L=seq_len: [
                    f(L=o) for o in (10, 20, 5) if o != L
                ],
                "missed_last_layer": lambda e=every, k=kind: without_last_layer(e[k]),
                "ignored_batch": lambda f=scores, n=batch: [
                    f(n=o) for o in (1, 2, 4, 8, 10) if o != n
                ],
                "second_copy_off_by_one": lambda L=seq_len, n=batch, s=seed, k=kind: [
                    _shifted_detector(model, L, n, s, k, shift) for shift in (-1, 1)
                ],
                "above_the_diagonal": lambda e=every, k=kind: torch.zeros_like(e[k]),
                "scores_not_pattern": lambda L=seq_len, n=batch, s=seed, k=kind: _diagonal_values(
                    model, L, n, s, k, hook="attn_scores"
                ).mean((1, -1)),
                "induction_wrong_direction": lambda L=seq_len, n=batch, s=seed, k=kind: (
                    _diagonal_values(model, L, n, s, k, src_offset=L + 1).mean((1, -1))
                    if k == "induction"
                    else None
                ),
                "transposed": lambda e=every, k=kind: e[k].T,
                "summed_not_averaged": lambda L=seq_len, n=batch, s=seed, k=kind: [
                    (v := _diagonal_values(model, L, n, s, k)).sum((1, -1)),
                    v.sum(1).mean(-1),
                    v.mean(1).sum(-1),
                ],
                "not_averaged": lambda L=seq_len, n=batch, s=seed, k=kind: [
                    (v := _diagonal_values(model, L, n, s, k)).mean(1),
                    v.mean(-1),
                ],
            }
            if kind != "previous_token":
                mistakes["second_copy_off_by_one"] = lambda L=seq_len, n=batch, s=seed, k=kind: (
                    [_shifted_detector(model, L, n, s, k, shift) for shift in (-1, 1)]
                    + [
                        _diagonal_values(model, L, n, s, k, dests=torch.arange(a, b)).mean((1, -1))
                        for a, b in ((L + 1, 2 * L), (L + 2, 2 * L + 1))
                    ]
                )
            if kind == "previous_token":
                mistakes["previous_token_second_copy_only"] = lambda L=seq_len, n=batch, s=seed: (
                    _detector_variant(model, L, n, s, "previous_token")
                )
            else:
                mistakes["diagonal_includes_first_copy"] = (
                    lambda L=seq_len, n=batch, s=seed, k=kind: _detector_variant(
                        model, L, n, s, k, whole=True
                    )
                )
            ex.expect_tensor(got, every[kind], call=call, mistakes=mistakes, atol=1e-5)
    other = other_model_batch().model
    expect_on_other_sizes(
        ex,
        get_attn_scores_fn,
        other,
        10,
        3,
        3,
        "induction",
        call="get_attn_scores(model, seq_len=10, batch=3, seed=3, kind='induction')  "
        f"[{describe_sizes(other)}]",
        model=other,
        expected=heads.get_attn_scores(other, 10, 3, 3, "induction"),
        axes=toy_grid_axes(),
        atol=1e-5,
    )
    call = "get_attn_scores(model, seq_len=8, batch=4, seed=3, kind='induction_head')  [toy model]"
    # Any exception will do (a KeyError from a lookup table also stops the typo); the mistake
    # is returning scores.
    try:
        got = get_attn_scores_fn(model, 8, 4, 3, "induction_head")
    except Exception:  # noqa: BLE001
        got = None
    if got is not None:
        ex.fail(
            "unknown_kind_accepted",
            call=call,
            expected="ValueError (unknown kind)",
            got=describe(got),
            explanation=ex.diagnoses["unknown_kind_accepted"],
            hint=ex.hint,
        )
    model.reset_hooks(including_permanent=False)
    ex.passed("two (seq_len, batch, seed) settings, three kinds; and a model of other sizes")


# ---- mean_ablation_hooks ----------------------------------------------------------------------

ABLATION_HOOKS = exercise(
    "mean_ablation_hooks",
    hint="per layer build a [batch, pos, head] mask of where each head keeps its output "
    "(keep[(layer, head)] lists word_idx keys, read per prompt; None = everywhere); the hook "
    "replaces z by the prompt's template mean (means.z[layer][means.row_of[template]]) where "
    "the mask is False.",
    diagnoses={
        "ignored_keep": "the kept heads were ablated where they should be kept: the result is "
        "the one you get with every head ablated. Either keep was ignored, or the positions "
        "were read one off (word_idx[key] is already the position to keep, no + 1 or - 1)",
        "kept_every_position": "kept heads kept their output at every position; keep them only "
        "at their class's positions (e.g. only at 'end'), and ablate them elsewhere",
        "nothing_ablated": "the hooks changed nothing: no head was mean-ablated",
        "none_kept_nowhere": "a head whose keep entry is None was ablated everywhere; None "
        "means the opposite: keep the head's output at every position",
        "template_not_row": "you indexed means.z by the template number itself; means.z has one "
        "row per template that occurs, so read its row as means.row_of[template]",
        "kept_layers_only": "a layer where no head is kept got no hook, so its heads were "
        "never ablated: every layer needs its hook (keep={} ablates every head of the model)",
        "empty_kept_everywhere": "a head whose keep entry is () (no positions) kept its output "
        "everywhere, as if it were None; () keeps it nowhere: only None means every position",
    },
    shared=(
        "same_position_for_all_prompts",
        "zero_ablation",
        "global_mean_ablation",
        "hard_coded_size",
    ),
)


def _ablated_with(model, ds, keep, values: Callable[[int], Tensor]) -> list:
    """``hook_z`` hooks writing ``values(layer)`` wherever ``keep`` does not keep a head."""
    return [
        (get_act_name("z", layer), replace_where(~mask, values(layer)))
        for layer, mask in enumerate(keep_masks(model, ds, keep))
    ]


def _batch_mean_hooks(model, ds, keep) -> list:
    """Hooks replacing z by its mean over the batch being run (the clean prompts)."""

    def hook(z, hook, mask):
        return torch.where(mask[..., None], z, z.mean(0, keepdim=True).expand_as(z))

    return [
        (get_act_name("z", layer), functools.partial(hook, mask=mask))
        for layer, mask in enumerate(keep_masks(model, ds, keep))
    ]


def _template_index_error(err: Exception) -> str | None:
    """``template_not_row`` for an index past means.z's rows (a template number used as a row)."""
    return "template_not_row" if isinstance(err, IndexError) and "dimension 0" in str(err) else None


@one_thread()
def test_mean_ablation_hooks(mean_ablation_hooks_fn: Callable) -> None:
    """Check ``mean_ablation_hooks(model, ds, means, keep) -> list of (hook name, hook fn)``."""
    ex, (b, ablation) = ABLATION_HOOKS, _ablation()
    model, ds, means = b.model, b.ds, ablation.means
    n_pos = ds.toks.shape[1]
    # Leave some heads out of the keep map, so that "keep everywhere" still ablates something.
    keeps = (
        CHECK_CIRCUIT.without([(2, 0), (2, 3), (0, 2)]),
        {**OTHER_CIRCUIT.kept_positions(), (0, 0): None},
        # Layers 0 and 1 keep no head (0.0's entry keeps it nowhere), and nothing at all.
        {(0, 0): (), (2, 1): ("end",)},
        {},
    )
    for keep in keeps:
        call = (
            "mean_ablation_hooks(model, ds, means, keep)  where means = template_means(model, "
            f"abc) and keep = {dict(keep)}  [{b.describe()}]"
        )
        given_means = copy.deepcopy(means)
        got_hooks = ex.call(
            mean_ablation_hooks_fn,
            model,
            ds,
            given_means,
            keep,
            call=call,
            model=model,
            read_only={"means": given_means, "ds": ds},
            raised_as=_template_index_error,
        )
        if not isinstance(got_hooks, list | tuple) or not all(
            isinstance(h, tuple) and len(h) == 2 for h in got_hooks
        ):
            ex.fail(
                "wrong_type",
                call=call,
                expected="a list of (hook name, hook function) pairs",
                got=repr(got_hooks)[:200],
                explanation="return the hooks; the caller runs them with model.hooks(fwd_hooks=...)",
                hint=ex.hint,
            )
        run_call = "logit difference per prompt with your hooks"
        got = ex.call(
            logit_diff_with_hooks,
            model,
            ds,
            list(got_hooks),
            call=run_call,
            model=model,
            raised_as=_template_index_error,
        )

        def run(hooks):
            return logit_diff_with_hooks(model, ds, hooks)

        def with_keep(k):
            return run(mean_ablation_hooks(model, ds, means, k))

        def same_positions(keep=keep):
            first = copy.copy(ds)  # prompt 0's positions for every prompt
            first.word_idx = {key: value[:1].expand_as(value) for key, value in ds.word_idx.items()}
            return run(mean_ablation_hooks(model, first, means, keep))

        def kept_layers_only(keep=keep):
            layers = {get_act_name("z", h[0]) for h in keep}
            return run([h for h in mean_ablation_hooks(model, ds, means, keep) if h[0] in layers])

        mistakes = {
            "kept_layers_only": kept_layers_only,
            "empty_kept_everywhere": lambda keep=keep: (
                with_keep({h: None if p == () else p for h, p in keep.items()})
                if () in keep.values()
                else None
            ),
            "ignored_keep": lambda: with_keep({}),
            "kept_every_position": lambda keep=keep: with_keep({h: None for h in keep}),
            "same_position_for_all_prompts": same_positions,
            "nothing_ablated": lambda: run([]),
            "none_kept_nowhere": lambda keep=keep: (
                with_keep({h: () if p is None else p for h, p in keep.items()})
                if any(p is None for p in keep.values())
                else None
            ),
            "zero_ablation": lambda keep=keep: run(
                _ablated_with(model, ds, keep, lambda _: torch.zeros(1))
            ),
            "global_mean_ablation": lambda keep=keep: [
                run(
                    _ablated_with(
                        model, ds, keep, lambda lay: means.z[lay].mean(0, keepdim=True)[:, :n_pos]
                    )
                ),
                run(_batch_mean_hooks(model, ds, keep)),
            ],
        }
        expected = with_keep(keep)
        ex.expect_tensor(
            got, expected, call=call + "  ->  " + run_call, mistakes=mistakes, atol=1e-3
        )
    _ablation_hooks_on_other_sizes(ex, mean_ablation_hooks_fn, b)
    ex.passed(f"{len(keeps)} keep maps, and a model of other sizes")


def _ablation_hooks_on_other_sizes(ex, fn: Callable, b: IOIBatch) -> None:
    """The hooks on `other_ioi_model` (more layers and heads; the same prompts), keeping a head
    of its last layer and its last head: hooks for the toy's layers only leave the last layer
    unablated, a mask the toy's heads wide raises. Both are ``hard_coded_size``."""
    model = other_ioi_model()
    means = MeanAblation.build(model, b.ds, b.abc).means
    keep = {(3, 4): ("end",), (1, 0): None, (2, 2): ("S2",)}
    call = (
        f"mean_ablation_hooks(model, ds, means, keep)  where means = template_means(model, abc) "
        f"and keep = {keep}  [{describe_other_ioi_model()}]"
    )
    got_hooks = ex.call(
        fn,
        model,
        b.ds,
        copy.deepcopy(means),
        keep,
        call=call,
        model=model,
        raised_as=hard_coded_size_error(_template_index_error),
    )
    run_call = call + "  ->  logit difference per prompt with your hooks"
    got = ex.call(
        logit_diff_with_hooks,
        model,
        b.ds,
        list(got_hooks),
        call=run_call,
        model=model,
        raised_as=hard_coded_size_error(),
    )
    hooks = mean_ablation_hooks(model, b.ds, means, keep)
    toy_layers = {get_act_name("z", layer) for layer in range(b.model.cfg.n_layers)}
    ex.expect_tensor(
        got,
        logit_diff_with_hooks(model, b.ds, hooks),
        call=run_call,
        mistakes={
            "hard_coded_size": lambda: logit_diff_with_hooks(
                model, b.ds, [h for h in hooks if h[0] in toy_layers]
            )
        },
        atol=1e-3,
    )


# ---- faithfulness, completeness, minimality ---------------------------------------------------

FAITHFULNESS = exercise(
    "faithfulness",
    hint="F(M) = ablation.logit_diff(None) (nothing ablated); F(C) = "
    "ablation.logit_diff(circuit.kept_positions()) (every head outside the circuit ablated, "
    "circuit heads kept at their class positions); return Faithfulness(F(M), F(C)).",
    diagnoses={
        "model_fully_ablated": "your F(M) ablates every head (keep={}); F(M) is the intact "
        "model: keep=None",
        "circuit_kept_everywhere": "your F(C) keeps circuit heads at every position; keep each "
        "only at its class's position (circuit.kept_positions())",
        "circuit_fully_ablated": "your F(C) ablates every head, the circuit's too (an empty "
        "keep map); F(C) keeps the circuit's heads at their classes' positions "
        "(circuit.kept_positions())",
        "complement_kept": "your F(C) keeps every head *except* the circuit's "
        "(ablation.all_heads_except is the keep map of M \\ K); F(C) keeps the circuit only",
        "one_position_per_head": "a head that sits in several classes was kept at one of "
        "their positions only (a keep map built class by class, each class overwriting the "
        "entry): it is kept at *each* of its classes' positions, as circuit.kept_positions() "
        "gives",
        "ratio_not_value": "your f_circuit is the ratio F(C) / F(M); the record holds the two "
        "logit differences themselves (its .ratio divides them)",
        "model_is_circuit": "your f_model is F(C), the circuit's value: F(M) is the intact "
        "model, ablation.logit_diff(None)",
        "kept_at_end_only": "your F(C) keeps every circuit head at `end` only; each head is "
        "kept at its own class's position (circuit.kept_positions())",
    },
    shared=("swapped_fields",),
)

FAITH_FIELDS = ("f_model", "f_circuit")


@one_thread()
def test_faithfulness(faithfulness_fn: Callable) -> None:
    """Check ``faithfulness(ablation, circuit) -> Faithfulness(f_model, f_circuit)``."""
    ex, (b, ablation) = FAITHFULNESS, _ablation()
    f_m = float(ablation.logit_diff(None))
    # OTHER_CIRCUIT first: CHECK_CIRCUIT holds every head, so keeping its complement is the
    # empty keep map there, and those two mistakes could not be told apart.
    for circuit in (OTHER_CIRCUIT, CHECK_CIRCUIT, OVERLAP_CIRCUIT):
        call = f"faithfulness(ablation, circuit)  [{circuit.name}; {b.describe()}]"
        got = ex.call(faithfulness_fn, ablation, circuit, call=call, model=b.model)
        ref = faithfulness(ablation, circuit)

        def with_circuit(keep, f=f_m):
            return Faithfulness(f, float(ablation.logit_diff(keep)))

        mistakes = {
            "model_fully_ablated": lambda r=ref: Faithfulness(
                float(ablation.logit_diff({})), r.f_circuit
            ),
            "circuit_kept_everywhere": lambda c=circuit: with_circuit(
                {h: None for h in c.all_heads()}
            ),
            "circuit_fully_ablated": lambda: with_circuit({}),
            "complement_kept": lambda c=circuit: with_circuit(
                ablation.all_heads_except(c.all_heads())
            ),
            "one_position_per_head": lambda c=circuit: AnyOf(
                with_circuit(keep) for keep in _one_position_per_head(c)
            ),
            "ratio_not_value": lambda r=ref: Faithfulness(r.f_model, r.f_circuit / r.f_model),
            "model_is_circuit": lambda r=ref: Faithfulness(r.f_circuit, r.f_circuit),
            "kept_at_end_only": lambda c=circuit: with_circuit(
                {h: ("end",) for h in c.all_heads()}
            ),
        }
        ex.expect_record(got, ref, FAITH_FIELDS, call=call, mistakes=mistakes, atol=1e-3)
    ex.passed(f"F(C)/F(M) = {faithfulness(ablation, CHECK_CIRCUIT).ratio:.3f}")


SCORE_FIELDS = ("f_with", "f_without", "score", "relative")


def _check_knockouts(ex, fn, call, expected: list, mistakes: dict, label_hint: str, **kwargs):
    """The body completeness and minimality share: call, check labels, check every field."""
    b, ablation = _ablation()
    got = ex.call(fn, ablation, kwargs.pop("circuit"), call=call, model=b.model, **kwargs)
    labels = [getattr(s, "label", None) for s in got] if isinstance(got, list | tuple) else None
    want = [s.label for s in expected]
    if labels is not None and len(labels) == len(want) and labels != want:
        ex.fail(
            "wrong_labels",
            call=call,
            expected=f"labels {want}",
            got=f"labels {labels}",
            explanation=ex.diagnoses["wrong_labels"],
            hint=label_hint,
        )
    ex.expect_record(got, expected, SCORE_FIELDS, call=call, mistakes=mistakes, atol=1e-3)
    ex.expect_heads(got, expected, "removed", call=call)


def _scores(rows: list[tuple[str, float, float, float, float]]) -> list[KnockoutScore]:
    return [KnockoutScore(label, (), a, c, s, r) for label, a, c, s, r in rows]


KNOCKOUT_DIAGNOSES = {
    "not_absolute": "some scores are negative: the score is the absolute difference |F(...) - "
    "F(...)|",
    "wrong_labels": "the scores are labelled (or ordered) differently from the exercise's "
    "convention",
}

COMPLETENESS = exercise(
    "completeness",
    hint="for each class K (mode 'class'): F(C \\ K) = ablation.logit_diff(circuit.without(K)), "
    "F(M \\ K) = ablation.logit_diff(ablation.all_heads_except(K)); score = |F(C \\ K) - "
    "F(M \\ K)|, relative = score / F(M).",
    diagnoses={
        **KNOCKOUT_DIAGNOSES,
        "model_not_knocked_out": "your F(M \\ K) is the intact model: remove K from M too "
        "(ablation.all_heads_except(K))",
        "circuit_not_knocked_out": "your F(C \\ K) is the whole circuit: remove K from C "
        "(circuit.without(K))",
        "relative_to_circuit": "your relative score divides by F(C) or F(C \\ K); "
        "incompleteness is relative to the model, F(M)",
        "kept_only_k": "your F(M \\ K) keeps *only* K's heads and ablates the rest; M \\ K is "
        "the model with K removed: ablation.all_heads_except(K)",
        "removed_whole_circuit": "your F(M \\ K) removes the whole circuit, the same for every "
        "class; K is the one class: ablation.all_heads_except(K)",
        "relative_to_knocked_out": "your relative score divides by F(M \\ K); incompleteness is "
        "relative to the intact model, F(M) = ablation.logit_diff(None)",
        "score_is_relative": "your score is already divided by F(M); score is the absolute gap "
        "|F(C \\ K) - F(M \\ K)| and relative is score / F(M)",
        "k_kept_in_other_classes": "your F(C \\ K) keeps a head of K that also sits in "
        "another class at that class's position (a keep map built from the other classes): "
        "C \\ K removes K's heads from the circuit altogether, circuit.without(K)",
    },
    shared=("swapped_fields", "wrong_heads_recorded"),
)


@one_thread()
def test_completeness(completeness_fn: Callable) -> None:
    """Check ``completeness(ablation, circuit, modes=("class",))`` (the 'class' mode)."""
    ex, (b, ablation) = COMPLETENESS, _ablation()
    f_m = float(ablation.logit_diff(None))
    for circuit in (CHECK_CIRCUIT, OTHER_CIRCUIT, OVERLAP_CIRCUIT):
        call = (
            f"completeness(ablation, circuit, modes=('class',))  [{circuit.name}; {b.describe()}]"
        )
        ref = completeness(ablation, circuit, modes=("class",))
        f_c = float(ablation.logit_diff(circuit.kept_positions()))
        classes = [list(members) for members in circuit.heads.values()]
        labels = [s.label for s in ref]
        f_c_k = [float(ablation.logit_diff(circuit.without(k))) for k in classes]
        f_m_k = [float(ablation.logit_diff(ablation.all_heads_except(k))) for k in classes]

        def rows(f_with, f_without, over=f_m, signed=False, labels=labels):
            return _scores(
                [
                    (lab, a, c, (a - c) if signed else abs(a - c), abs(a - c) / abs(over))
                    for lab, a, c in zip(labels, f_with, f_without, strict=True)
                ]
            )

        mistakes = {
            "k_kept_in_other_classes": lambda c=f_m_k, circuit=circuit: rows(
                [float(ablation.logit_diff(_without_class(circuit, n))) for n in circuit.heads], c
            ),
            "model_not_knocked_out": lambda a=f_c_k: rows(a, [f_m] * len(a)),
            "kept_only_k": lambda a=f_c_k, classes=classes: rows(
                a, [float(ablation.logit_diff({h: None for h in k})) for k in classes]
            ),
            "removed_whole_circuit": lambda a=f_c_k, circuit=circuit: rows(
                a,
                [float(ablation.logit_diff(ablation.all_heads_except(circuit.all_heads())))]
                * len(a),
            ),
            "relative_to_knocked_out": lambda a=f_c_k, c=f_m_k: _scores(
                [
                    (s.label, s.f_with, s.f_without, s.score, s.score / abs(s.f_without))
                    for s in rows(a, c)
                ]
            ),
            "score_is_relative": lambda a=f_c_k, c=f_m_k: _scores(
                [(s.label, s.f_with, s.f_without, s.relative, s.relative) for s in rows(a, c)]
            ),
            "circuit_not_knocked_out": lambda c=f_m_k, fc=f_c: rows([fc] * len(c), c),
            "relative_to_circuit": lambda a=f_c_k, c=f_m_k, fc=f_c: AnyOf(
                [
                    rows(a, c, over=fc),
                    _scores(
                        [
                            (s.label, s.f_with, s.f_without, s.score, s.score / abs(s.f_with))
                            for s in rows(a, c)
                        ]
                    ),
                ]
            ),
            "not_absolute": lambda a=f_c_k, c=f_m_k: AnyOf(
                [
                    _scores(
                        [
                            (s.label, s.f_with, s.f_without, x - y, abs(x - y) / abs(f_m))
                            for s, x, y in zip(rows(a, c), a, c, strict=True)
                        ]
                    ),
                    _scores(
                        [
                            (s.label, s.f_with, s.f_without, x - y, (x - y) / abs(f_m))
                            for s, x, y in zip(rows(a, c), a, c, strict=True)
                        ]
                    ),
                ]
            ),
        }
        _check_knockouts(
            ex,
            completeness_fn,
            call,
            ref,
            mistakes,
            "one KnockoutScore per class, in circuit order, labelled 'class NAME'",
            circuit=circuit,
            modes=("class",),
        )
    ex.passed()


MINIMALITY = exercise(
    "minimality",
    hint="for each head v (mode 'class'): K = the other heads of v's class; score = "
    "|F(C \\ (K + [v])) - F(C \\ K)| with F(X) = ablation.logit_diff(circuit.without(X)); "
    "relative = score / F(C).",
    diagnoses={
        **KNOCKOUT_DIAGNOSES,
        "k_includes_v": "every score is 0: your K already contains v, so removing v changes "
        "nothing; K is the rest of v's class, without v",
        "empty_k": "you removed v alone (K empty); the 'class' mode first removes the rest of "
        "v's class",
        "relative_to_model": "your relative score divides by F(M); minimality is relative to "
        "the circuit, F(C)",
        "relative_to_reduced_circuit": "your relative score divides by F(C \\ K) (or F(C \\ "
        "(K + [v]))); minimality is relative to the whole circuit, F(C)",
        "k_from_whole_circuit": "your K is every other head of the circuit; in the 'class' mode "
        "K is the rest of v's own class",
        "circuit_kept_everywhere": "you kept the circuit's heads at every position (keep None "
        "for each) for F(C), or for every F; a circuit keeps each class only at its own "
        "positions: F(C) = ablation.logit_diff(circuit.kept_positions()) and F(C \\ X) = "
        "ablation.logit_diff(circuit.without(X))",
        "knocked_out_of_model": "you knocked the heads out of the whole model "
        "(ablation.all_heads_except, as completeness does for F(M \\ K)); minimality knocks "
        "them out of the circuit: circuit.without([*K, v]) and circuit.without(K)",
        "k_not_first_class": "for a head in several classes your K is not the rest of its "
        "*first* class (you took the last class, or every class it sits in): K = [h for h in "
        "circuit.heads[circuit.classes_of(v)[0]] if h != v]",
        "v_kept_at_other_positions": "you knocked v out only at its class's position and kept "
        "it where its other classes keep it: C \\ (K + v) removes v from the circuit "
        "altogether, circuit.without([*K, v])",
    },
    shared=("swapped_fields", "wrong_heads_recorded"),
)


@one_thread()
def test_minimality(minimality_fn: Callable) -> None:
    """Check ``minimality(ablation, circuit, mode="class")``."""
    ex, (b, ablation) = MINIMALITY, _ablation()
    f_m = float(ablation.logit_diff(None))
    # The smaller circuit comes first: CHECK_CIRCUIT holds every head of the toy, so there
    # its heads kept everywhere are the model, and F(C) taken that way is F(M).
    for circuit in (OTHER_CIRCUIT, CHECK_CIRCUIT, OVERLAP_CIRCUIT):
        call = f"minimality(ablation, circuit, mode='class')  [{circuit.name}; {b.describe()}]"
        ref = minimality(ablation, circuit, mode="class")
        f_c = float(ablation.logit_diff(circuit.kept_positions()))
        everywhere = {h: None for h in circuit.all_heads()}  # the circuit's heads, unrestricted

        def fx(removed, circuit=circuit):
            return float(ablation.logit_diff(circuit.without(removed)))

        def f_everywhere(removed, everywhere=everywhere):
            return float(
                ablation.logit_diff({h: p for h, p in everywhere.items() if h not in removed})
            )

        def f_model(removed):
            return float(ablation.logit_diff(ablation.all_heads_except(removed)))

        def rows(k_of, over=f_c, signed=False, signed_relative=False, circuit=circuit, f=fx):
            out = []
            for v in circuit.all_heads():
                k = k_of(v)
                a, c = f([*k, v]), f(k)
                gap = a - c if signed else abs(a - c)
                rel = (gap if signed_relative else abs(a - c)) / abs(over)
                out.append((str(v), a, c, gap, rel))
            return _scores(out)

        def rest_of_class(v, circuit=circuit):
            return [h for h in circuit.heads[circuit.classes_of(v)[0]] if h != v]

        def v_only_at_its_class(circuit=circuit, f_c=f_c):
            """Minimality's rows with v dropped at its first class's position only."""
            out = []
            for v in circuit.all_heads():
                k = rest_of_class(v)
                keep = circuit.without(k)
                own = circuit.positions[circuit.classes_of(v)[0]]
                rest = tuple(p for p in keep[v] if p != own)
                keep = {h: p for h, p in keep.items() if h != v} | ({v: rest} if rest else {})
                a, c = float(ablation.logit_diff(keep)), fx(k)
                out.append((str(v), a, c, abs(a - c), abs(a - c) / abs(f_c)))
            return _scores(out)

        mistakes = {
            "k_not_first_class": lambda c=circuit: AnyOf(
                [
                    rows(lambda v: [h for h in c.heads[c.classes_of(v)[-1]] if h != v]),
                    rows(
                        lambda v: sorted(
                            {h for cls in c.classes_of(v) for h in c.heads[cls] if h != v}
                        )
                    ),
                ]
            ),
            "v_kept_at_other_positions": v_only_at_its_class,
            "k_includes_v": lambda r=ref: _scores(
                [(s.label, s.f_with, s.f_with, 0.0, 0.0) for s in r]
            ),
            "empty_k": lambda: rows(lambda v: []),
            "relative_to_model": lambda k=rest_of_class: rows(k, over=f_m),
            "relative_to_reduced_circuit": lambda r=ref: AnyOf(
                [
                    _scores(
                        [
                            (s.label, s.f_with, s.f_without, s.score, s.score / abs(getattr(s, x)))
                            for s in r
                        ]
                    )
                    for x in ("f_without", "f_with")
                ]
            ),
            "k_from_whole_circuit": lambda c=circuit: rows(
                lambda v: [h for h in c.all_heads() if h != v]
            ),
            "not_absolute": lambda k=rest_of_class: AnyOf(
                [rows(k, signed=True), rows(k, signed=True, signed_relative=True)]
            ),
            "circuit_kept_everywhere": lambda k=rest_of_class, e=everywhere: AnyOf(
                [
                    rows(k, over=float(ablation.logit_diff(e))),
                    rows(k, over=float(ablation.logit_diff(e)), f=f_everywhere),
                    rows(k, f=f_everywhere),
                ]
            ),
            "knocked_out_of_model": lambda k=rest_of_class: AnyOf(
                [rows(k, f=f_model), rows(k, over=f_m, f=f_model)]
            ),
        }
        _check_knockouts(
            ex,
            minimality_fn,
            call,
            ref,
            mistakes,
            "one KnockoutScore per head, in circuit.all_heads() order, labelled 'layer.head'",
            circuit=circuit,
            mode="class",
        )
    ex.passed()


# ---- the name-mover scatter -------------------------------------------------------------------

SCATTER = exercise(
    "name_mover_scatter",
    hint="cache the run; for each prompt i read the head's pattern at query word_idx['end'][i] "
    "and keys IO, S1, S2; the head's output at end is z[i, end, head] @ W_O[layer, head]; "
    "project it on W_U[:, IO id] and W_U[:, S id].",
    diagnoses={
        "s2_only": "attn_to_s holds the attention to S2 only; the S is mentioned twice, so add "
        "the attention to S1 and S2",
        "s1_only": "attn_to_s holds the attention to S1 only; the S is mentioned twice, so add "
        "the attention to S1 and S2",
        "added_b_O": "you added b_O to the head's output; b_O belongs to the layer, not the head",
        "projected_on_logit_diff": "you projected on the logit-difference direction W_U[IO] - "
        "W_U[S]; the scatter projects on each name's own unembedding",
        "scaled_by_final_ln": "you passed the head's output through the final layer norm (its "
        "cached scale, or model.ln_final); the paper's scatter uses the raw dot product with "
        "the name's unembedding",
        "ignored_positions": "you read the head at the last column of the padded batch; read it "
        "at each prompt's word_idx['end']",
        "swapped_dest_src": "you read the pattern as [..., key, query]: the attention from "
        "the names to end, not from end to the names. A pattern is [batch, head, query "
        "(dest), key (src)]: pattern[i, head, end[i], IO[i]]",
        "s_attention_averaged": "attn_to_s is the mean of the attention to S1 and S2; the "
        "attention the head pays the S is their sum",
        "normalised_unembed": "you projected on unit-length unembeddings; the scatter uses the "
        "raw dot product with W_U[:, name id], as the logits do",
        "whole_layer_output": "you projected the whole attention layer's output (attn_out, "
        "every head plus b_O); the scatter is about one head: z[i, end, head] @ W_O[layer, "
        "head]",
        "added_unembed_bias": "you added b_U to the projections; the scatter asks what the "
        "head writes along each name's unembedding, (z @ W_O) . W_U[:, name id], and b_U is "
        "not part of any head's output",
        "output_not_at_end": "you read the head's output at another word (S2, IO or S1) "
        "while its attention is read from end; both come from the query position end: "
        "z[i, word_idx['end'][i], head]",
    },
    shared=("swapped_fields", "same_position_for_all_prompts"),
)

SCATTER_FIELDS = ("attn_to_io", "attn_to_s", "proj_io", "proj_s")


@torch.no_grad()
def scatter_variant(
    model,
    ds,
    layer: int,
    head: int,
    *,
    end=None,
    bias=False,
    ld=False,
    ln=False,
    swap=False,
    unit=False,
    layer_out=False,
    out_at=None,
    b_U=False,
) -> SimpleNamespace:
    """The scatter's four fields, with switches for the mistakes (``swap``: the pattern read
    [key, query]; ``unit``: unit-length unembeddings; ``layer_out``: attn_out, not the head;
    ``out_at``: the head's output read at these positions, not at end; ``b_U``: the
    unembedding bias added to the projections)."""
    _, cache = model.run_with_cache(ds.toks)
    rows = torch.arange(ds.N)
    end = ds.word_idx["end"] if end is None else end
    pattern = cache["pattern", layer][:, head]
    out_pos = end if out_at is None else out_at
    out = cache["z", layer][rows, out_pos, head] @ model.W_O[layer, head]
    if layer_out:
        out = cache["attn_out", layer][rows, end]
    if swap:
        pattern = pattern.transpose(-1, -2)
    if bias:
        out = out + model.b_O[layer]
    if ln == "module":
        out = model.ln_final(out[:, None])[:, 0]
    elif ln:
        out = out / cache["ln_final.hook_scale"][rows, end]
    io_dir, s_dir = model.W_U[:, ds.io_tokenIDs].T, model.W_U[:, ds.s_tokenIDs].T
    if unit:
        io_dir = io_dir / io_dir.norm(dim=-1, keepdim=True)
        s_dir = s_dir / s_dir.norm(dim=-1, keepdim=True)
    idx = ds.word_idx
    io_bias = model.b_U[ds.io_tokenIDs] if b_U else 0.0
    s_bias = model.b_U[ds.s_tokenIDs] if b_U else 0.0
    return SimpleNamespace(
        attn_to_io=pattern[rows, end, idx["IO"]],
        attn_to_s=pattern[rows, end, idx["S1"]] + pattern[rows, end, idx["S2"]],
        attn_to_s2=pattern[rows, end, idx["S2"]],
        attn_to_s1=pattern[rows, end, idx["S1"]],
        proj_io=(out * (io_dir - s_dir if ld else io_dir)).sum(-1) + io_bias,
        proj_s=(out * (s_dir - io_dir if ld else s_dir)).sum(-1) + s_bias,
    )


def _fields(record: SimpleNamespace, **changes) -> SimpleNamespace:
    return SimpleNamespace(**{**{f: getattr(record, f) for f in SCATTER_FIELDS}, **changes})


@one_thread()
def test_name_mover_scatter(name_mover_scatter_fn: Callable) -> None:
    """Check ``name_mover_scatter(model, ds, layer, head) -> NameMoverScatter``."""
    ex, b = SCATTER, ioi_batch(n=8)
    model, ds = b.model, b.ds
    end = ds.word_idx["end"]
    # 0.1 attends from end to S1 and IO as well as S2; 2.0 is one of the toy's movers.
    for layer, head in ((0, 1), (2, 0)):
        call = f"name_mover_scatter(model, ds, layer={layer}, head={head})  [{b.describe()}]"
        got = ex.call(
            name_mover_scatter_fn,
            model,
            ds,
            layer,
            head,
            call=call,
            model=model,
            read_only={"ds": ds},
        )
        expected = heads.name_mover_scatter(model, ds, layer, head)
        right = scatter_variant(model, ds, layer, head)

        def wrong(layer=layer, head=head, **how):
            return _fields(scatter_variant(model, ds, layer, head, **how))

        last = torch.full_like(end, ds.toks.shape[1] - 1)
        mistakes = {
            "s2_only": lambda r=right: _fields(r, attn_to_s=r.attn_to_s2),
            "s1_only": lambda r=right: _fields(r, attn_to_s=r.attn_to_s1),
            "added_b_O": lambda w=wrong: w(bias=True),
            "projected_on_logit_diff": lambda w=wrong: w(ld=True),
            "scaled_by_final_ln": lambda w=wrong: AnyOf([w(ln=True), w(ln="module")]),
            "same_position_for_all_prompts": lambda w=wrong: w(end=end[:1].expand_as(end)),
            "ignored_positions": lambda w=wrong, last=last: w(end=last),
            "swapped_dest_src": lambda w=wrong: w(swap=True),
            "s_attention_averaged": lambda r=right: _fields(r, attn_to_s=r.attn_to_s / 2),
            "normalised_unembed": lambda w=wrong: w(unit=True),
            "whole_layer_output": lambda w=wrong: w(layer_out=True),
            "added_unembed_bias": lambda w=wrong: w(b_U=True),
            "output_not_at_end": lambda w=wrong: AnyOf(
                [w(out_at=ds.word_idx[word]) for word in ("S2", "IO", "S1")]
            ),
        }
        ex.expect_record(got, expected, SCATTER_FIELDS, call=call, mistakes=mistakes, atol=1e-4)
        ex.expect_record(got, expected, ("layer", "head"), call=call)
    ex.passed()


# ---- where does this head act? ----------------------------------------------------------------

KEEP_AT = exercise(
    "keep_head_at",
    hint="for each position key p: take circuit.kept_positions(), replace the entry of `head` "
    "by (p,), and record ablation.logit_diff of that keep map; return {p: F}.",
    diagnoses={
        "added_not_moved": "you kept the head at p *in addition to* its class's position; the "
        "question is where it acts, so keep it at p only",
        "kept_everywhere": "every position gives the same F: the head was kept at every "
        "position (keep None), not at p",
        "head_removed": "every position gives F(C \\ {head}): the head was dropped from the "
        "circuit instead of being kept at p",
        "ignored_position_keys": "every position gives the same F as the class's own position: "
        "the head stayed where its class keeps it",
        "position_not_tuple": "you set the keep entry to a position key itself ('S2'); an entry "
        "is a tuple of keys, ('S2',)",
        "ratio_not_value": "you divided F by F(M) or by the circuit's own F(C); the exercise "
        "asks for F(C) itself, the logit difference ablation.logit_diff(keep) returns",
        "change_not_value": "you returned how much F(C) changed when the head moved (F minus "
        "the circuit's own F(C)); return F(C) with the head kept at p, as it is",
        "started_from_model": "you moved the head within the whole model (every other head "
        "kept everywhere, as in ablation.all_heads_except([])); start from the circuit's keep "
        "map, circuit.kept_positions(), so every other head is ablated outside its class",
        "moved_every_head": "you kept *every* circuit head at p; move only `head` and leave "
        "the other entries of circuit.kept_positions() as they are",
        "accumulated_positions": "each position's keep map still holds the positions of the "
        "ones before it: the keep map (or its entry) was built once, outside the loop, and "
        "positions were added to it. Build a fresh circuit.kept_positions() for each p and "
        "set the head's entry to (p,)",
    },
)


@one_thread()
def test_keep_head_at(keep_head_at_fn: Callable) -> None:
    """Check ``keep_head_at(ablation, circuit, head, positions) -> dict[str, float]``."""
    ex, (b, ablation) = KEEP_AT, _ablation()
    f_model = float(ablation.logit_diff(None))
    everything = ablation.all_heads_except([])
    cases = ((CHECK_CIRCUIT, (0, 0), ("S1+1", "S2", "end")), (OTHER_CIRCUIT, (0, 3), ("S2", "IO")))
    for circuit, head, positions in cases:
        call = (
            f"keep_head_at(ablation, circuit, head={head}, positions={positions})  "
            f"[{circuit.name}; {b.describe()}]"
        )
        got = ex.call(
            keep_head_at_fn,
            ablation,
            circuit,
            head,
            positions,
            call=call,
            model=b.model,
            raised_as=lambda err: "position_not_tuple" if "is the string" in str(err) else None,
        )
        if not isinstance(got, dict) or set(got) != set(positions):
            ex.fail(
                "wrong_type",
                call=call,
                expected=f"a dict with keys {positions}",
                got=describe_keys(got),
                explanation="return {position key: F(C) with the head kept there}",
                hint=ex.hint,
            )
        kept = circuit.kept_positions()

        def f_with(entry, kept=kept, head=head):
            keep = {h: p for h, p in kept.items() if h != head}
            if entry != "removed":
                keep[head] = entry
            return float(ablation.logit_diff(keep))

        def per_position(make, positions=positions):
            return SimpleNamespace(**{p: make(p) for p in positions})

        own = kept.get(head, ())
        expected = per_position(lambda p: f_with((p,)))
        mistakes = {
            "added_not_moved": lambda own=own: per_position(
                lambda p: f_with(tuple(dict.fromkeys(own + (p,))))
            ),
            "kept_everywhere": lambda: per_position(lambda p: f_with(None)),
            "head_removed": lambda: per_position(lambda p: f_with("removed")),
            "ignored_position_keys": lambda own=own: per_position(lambda p: f_with(own)),
            "ratio_not_value": lambda e=expected, kept=kept: AnyOf(
                SimpleNamespace(**{p: f / base for p, f in vars(e).items()})
                for base in (f_model, float(ablation.logit_diff(kept)))
            ),
            "change_not_value": lambda e=expected, kept=kept: SimpleNamespace(
                **{p: f - float(ablation.logit_diff(kept)) for p, f in vars(e).items()}
            ),
            "started_from_model": lambda head=head: per_position(
                lambda p: float(ablation.logit_diff({**everything, Head(*head): (p,)}))
            ),
            "moved_every_head": lambda kept=kept: per_position(
                lambda p: float(ablation.logit_diff({h: (p,) for h in kept}))
            ),
            "accumulated_positions": lambda own=own, positions=positions: AnyOf(
                per_position(
                    lambda p, start=start: f_with(
                        tuple(dict.fromkeys(start + positions[: positions.index(p) + 1]))
                    )
                )
                for start in (own, ())
            ),
        }
        ex.expect_record(
            SimpleNamespace(**{k: float(v) for k, v in got.items()}),
            expected,
            tuple(positions),
            call=call,
            mistakes=mistakes,
            atol=1e-3,
        )
    ex.passed()


def describe_keys(value: object) -> str:
    if isinstance(value, dict):
        return f"a dict with keys {tuple(value)}"
    return type(value).__name__

"""Checkers for section 5, the paper's replication: copying, attention detectors, mean ablation, criteria.

Expected values come from `ioi.heads` and `ioi.circuit`. The circuit the checkers score is a
fixed toy-model circuit (movers at ``end``, S2 writers at ``S2``, previous-token heads at
``S1+1``), so the checks do not depend on a discovery run.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from ioi import heads
from ioi.checks.core import Exercise, exercise, one_thread
from ioi.checks.fixtures import IOIBatch, ioi_batch
from ioi.circuit import Circuit, MeanAblation, completeness, faithfulness, minimality
from ioi.circuit.ablation import logit_diff_with_hooks, mean_ablation_hooks

CHECK_CIRCUIT = Circuit(
    heads={
        "mover": ("1.0", "1.1", "1.2", "1.3", "2.0", "2.1", "2.2", "2.3"),
        "s2_writer": ("0.1", "0.3"),
        "previous_token": ("0.0", "0.2"),
    },
    positions={"mover": "end", "s2_writer": "S2", "previous_token": "S1+1"},
    name="toy circuit used by the checkers",
)


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
        "skipped_final_ln": "you unembedded the head's output without the final layer norm",
        "ignored_negative": "negative=True must score the negated OV output (a head that "
        "*suppresses* the name it attends to)",
    },
)


@torch.no_grad()
def copying_variant(
    model, *, k: int = 5, negative: bool = False, mlp0: bool = True, final_ln: bool = True
) -> Float[Tensor, "layer head"]:
    """The copying score with switches that reproduce common mistakes."""
    tokens = heads.name_tokens(model)
    embed = model.embed(tokens[:, None])  # [name, 1, d_model]
    resid = embed + model.blocks[0].apply_mlp(model.blocks[0].ln2(embed)) if mlp0 else embed
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        normed = model.blocks[layer].ln1(resid)
        for head in range(model.cfg.n_heads):
            out = normed @ model.W_V[layer, head] @ model.W_O[layer, head]
            out = -out if negative else out
            logits = model.unembed(model.ln_final(out) if final_ln else out)[:, 0]
            top = logits.topk(k, dim=-1).indices
            scores[layer, head] = (top == tokens[:, None]).any(-1).float().mean()
    return scores


@one_thread()
def test_get_copying_scores(get_copying_scores_fn: Callable) -> None:
    """Check ``get_copying_scores(model, names=None, k=5, negative=False) -> [layer, head]``."""
    ex, b = COPYING, ioi_batch()
    for negative in (False, True):
        call = f"get_copying_scores(model, names=None, k=5, negative={negative})  [toy model]"
        got = ex.call(get_copying_scores_fn, b.model, None, 5, negative, call=call, model=b.model)
        expected = heads.get_copying_scores(b.model, None, 5, negative)
        mistakes = {
            "skipped_mlp0": lambda n=negative: copying_variant(b.model, negative=n, mlp0=False),
            "skipped_final_ln": lambda n=negative: copying_variant(
                b.model, negative=n, final_ln=False
            ),
        }
        if negative:
            mistakes["ignored_negative"] = lambda: heads.get_copying_scores(b.model, None, 5, False)
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-6)
    ex.passed()


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
    },
)


@torch.no_grad()
def _long_diagonal(model, seq_len: int, batch: int, seed: int, kind: str) -> Tensor:
    """The mistake of averaging a whole diagonal of the pattern for duplicate/induction scores."""
    toks = heads.repeated_tokens(model, seq_len, batch, seed)
    offset = seq_len if kind == "duplicate_token" else seq_len - 1
    _, cache = model.run_with_cache(toks)
    return torch.stack(
        [
            cache["pattern", layer].diagonal(offset=-offset, dim1=-2, dim2=-1).mean((0, -1))
            for layer in range(model.cfg.n_layers)
        ]
    )


@one_thread()
def test_get_attn_scores(get_attn_scores_fn: Callable) -> None:
    """Check ``get_attn_scores(model, seq_len, batch, seed, kind) -> [layer, head]``."""
    ex, b = DETECTORS, ioi_batch()
    seq_len, batch, seed = 10, 4, 0
    every = heads.attention_detector_scores(b.model, seq_len, batch, seed)
    for kind in heads.DETECTOR_KINDS:
        call = f"get_attn_scores(model, seq_len={seq_len}, batch={batch}, seed={seed}, kind={kind!r})  [toy model]"
        got = ex.call(
            get_attn_scores_fn, b.model, seq_len, batch, seed, kind, call=call, model=b.model
        )

        def other_kind(kind=kind, got=got):
            for other, value in every.items():
                if other != kind and isinstance(got, Tensor) and got.shape == value.shape:
                    if torch.allclose(got.detach().float().cpu(), value, atol=1e-5):
                        return value
            return None

        mistakes = {"wrong_kind": other_kind}
        if kind != "previous_token":
            mistakes["diagonal_includes_first_copy"] = lambda kind=kind: _long_diagonal(
                b.model, seq_len, batch, seed, kind
            )
        ex.expect_tensor(got, every[kind], call=call, mistakes=mistakes, atol=1e-5)
    ex.passed()


# ---- mean_ablation_hooks ----------------------------------------------------------------------

ABLATION_HOOKS = exercise(
    "mean_ablation_hooks",
    hint="per layer build a [batch, pos, head] mask of where each head keeps its output "
    "(keep[(layer, head)] lists word_idx keys, read per prompt; None = everywhere); the hook "
    "replaces z by the prompt's template mean (means.z[layer][means.row_of[template]]) where "
    "the mask is False.",
    diagnoses={
        "ignored_keep": "every head was ablated, including the kept ones",
        "kept_every_position": "kept heads kept their output at every position; keep them only "
        "at their class's positions (e.g. only at 'end'), and ablate them elsewhere",
        "same_position_for_all_prompts": "you used the first prompt's position for every "
        "prompt; templates differ, so read word_idx[key][i] for prompt i",
        "nothing_ablated": "the hooks changed nothing: no head was mean-ablated",
    },
)


@one_thread()
def test_mean_ablation_hooks(mean_ablation_hooks_fn: Callable) -> None:
    """Check ``mean_ablation_hooks(model, ds, means, keep) -> list of (hook name, hook fn)``."""
    ex, (b, ablation) = ABLATION_HOOKS, _ablation()
    model, ds, means = b.model, b.ds, ablation.means
    # Leave some heads out of the keep map, so that "keep everywhere" still ablates something.
    keep = CHECK_CIRCUIT.without([(2, 0), (2, 3), (0, 2)])
    call = (
        "mean_ablation_hooks(model, ds, means, keep)  where means = template_means(model, abc) "
        f"and keep = {dict(keep)}  [{b.describe()}]"
    )
    got_hooks = ex.call(mean_ablation_hooks_fn, model, ds, means, keep, call=call, model=model)
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
    got = ex.call(logit_diff_with_hooks, model, ds, list(got_hooks), call=run_call, model=model)

    def with_keep(k):
        return logit_diff_with_hooks(model, ds, mean_ablation_hooks(model, ds, means, k))

    def same_positions():
        first = copy.copy(ds)  # prompt 0's positions for every prompt
        first.word_idx = {key: value[:1].expand_as(value) for key, value in ds.word_idx.items()}
        return logit_diff_with_hooks(model, ds, mean_ablation_hooks(model, first, means, keep))

    mistakes = {
        "ignored_keep": lambda: with_keep({}),
        "kept_every_position": lambda: with_keep({h: None for h in keep}),
        "same_position_for_all_prompts": same_positions,
        "nothing_ablated": lambda: logit_diff_with_hooks(model, ds, []),
    }
    expected = with_keep(keep)
    ex.expect_tensor(got, expected, call=call + "  ->  " + run_call, mistakes=mistakes, atol=1e-3)
    ex.passed()


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
        "swapped": "f_model and f_circuit are swapped",
    },
)


def _pair(value: object) -> Tensor | object:
    if hasattr(value, "f_model") and hasattr(value, "f_circuit"):
        return torch.tensor([float(value.f_model), float(value.f_circuit)])
    return value


@one_thread()
def test_faithfulness(faithfulness_fn: Callable) -> None:
    """Check ``faithfulness(ablation, circuit) -> Faithfulness(f_model, f_circuit)``."""
    ex, (b, ablation) = FAITHFULNESS, _ablation()
    call = f"faithfulness(ablation, circuit)  [checkers' toy circuit; {b.describe()}]"
    got = _pair(ex.call(faithfulness_fn, ablation, CHECK_CIRCUIT, call=call, model=b.model))
    ref = faithfulness(ablation, CHECK_CIRCUIT)
    expected = torch.tensor([ref.f_model, ref.f_circuit])
    everywhere = {h: None for h in CHECK_CIRCUIT.all_heads()}
    mistakes = {
        "model_fully_ablated": lambda: torch.tensor(
            [float(ablation.logit_diff({})), ref.f_circuit]
        ),
        "circuit_kept_everywhere": lambda: torch.tensor(
            [ref.f_model, float(ablation.logit_diff(everywhere))]
        ),
        "swapped": lambda: expected.flip(0),
    }
    ex.expect_tensor(
        got, expected, call=call + "  as [f_model, f_circuit]", mistakes=mistakes, atol=1e-3
    )
    ex.passed(f"F(C)/F(M) = {ref.ratio:.3f}")


def _scores(value: object) -> Tensor | object:
    """[n, 2] of (score, relative) from a list of KnockoutScore-like objects."""
    if isinstance(value, list | tuple) and all(hasattr(s, "score") for s in value):
        return torch.tensor([[float(s.score), float(s.relative)] for s in value])
    return value


def _labels_match(ex: Exercise, got: object, expected: list, call: str) -> None:
    labels = [getattr(s, "label", None) for s in got] if isinstance(got, list | tuple) else None
    want = [s.label for s in expected]
    if labels is not None and len(labels) == len(want) and labels != want:
        ex.fail(
            "wrong_values",
            call=call,
            expected=f"labels {want}",
            got=f"labels {labels}",
            explanation="the scores are labelled (or ordered) differently",
            hint="one KnockoutScore per class, in circuit order, labelled 'class NAME'"
            if want and want[0].startswith("class")
            else "one KnockoutScore per head, in circuit.all_heads() order, labelled 'layer.head'",
        )


COMPLETENESS = exercise(
    "completeness",
    hint="for each class K (mode 'class'): F(C \\ K) = ablation.logit_diff(circuit.without(K)), "
    "F(M \\ K) = ablation.logit_diff(ablation.all_heads_except(K)); score = |F(C \\ K) - "
    "F(M \\ K)|, relative = score / F(M).",
    diagnoses={
        "model_not_knocked_out": "your F(M \\ K) is the intact model: remove K from M too "
        "(ablation.all_heads_except(K))",
        "circuit_not_knocked_out": "your F(C \\ K) is the whole circuit: remove K from C "
        "(circuit.without(K))",
    },
)


@one_thread()
def test_completeness(completeness_fn: Callable) -> None:
    """Check ``completeness(ablation, circuit, modes=("class",))`` (the 'class' mode)."""
    ex, (b, ablation) = COMPLETENESS, _ablation()
    call = f"completeness(ablation, circuit, modes=('class',))  [checkers' toy circuit; {b.describe()}]"
    raw = ex.call(
        completeness_fn, ablation, CHECK_CIRCUIT, modes=("class",), call=call, model=b.model
    )
    ref = completeness(ablation, CHECK_CIRCUIT, modes=("class",))
    _labels_match(ex, raw, ref, call)
    f_m = float(ablation.logit_diff(None))
    f_c = float(ablation.logit_diff(CHECK_CIRCUIT.kept_positions()))

    def rows(f_with, f_without):
        return torch.tensor(
            [[abs(a - c), abs(a - c) / abs(f_m)] for a, c in zip(f_with, f_without, strict=True)]
        )

    classes = [list(members) for members in CHECK_CIRCUIT.heads.values()]
    f_c_k = [float(ablation.logit_diff(CHECK_CIRCUIT.without(k))) for k in classes]
    f_m_k = [float(ablation.logit_diff(ablation.all_heads_except(k))) for k in classes]
    mistakes = {
        "model_not_knocked_out": lambda: rows(f_c_k, [f_m] * len(classes)),
        "circuit_not_knocked_out": lambda: rows([f_c] * len(classes), f_m_k),
    }
    ex.expect_tensor(
        _scores(raw),
        _scores(ref),
        call=call + "  as [score, relative] per K",
        mistakes=mistakes,
        atol=1e-3,
    )
    ex.passed()


MINIMALITY = exercise(
    "minimality",
    hint="for each head v (mode 'class'): K = the other heads of v's class; score = "
    "|F(C \\ (K + [v])) - F(C \\ K)| with F(X) = ablation.logit_diff(circuit.without(X)); "
    "relative = score / F(C).",
    diagnoses={
        "k_includes_v": "every score is 0: your K already contains v, so removing v changes "
        "nothing; K is the rest of v's class, without v",
        "empty_k": "you removed v alone (K empty); the 'class' mode first removes the rest of "
        "v's class",
        "relative_to_model": "your relative score divides by F(M); minimality is relative to "
        "the circuit, F(C)",
    },
)


@one_thread()
def test_minimality(minimality_fn: Callable) -> None:
    """Check ``minimality(ablation, circuit, mode="class")``."""
    ex, (b, ablation) = MINIMALITY, _ablation()
    call = f"minimality(ablation, circuit, mode='class')  [checkers' toy circuit; {b.describe()}]"
    raw = ex.call(minimality_fn, ablation, CHECK_CIRCUIT, mode="class", call=call, model=b.model)
    ref = minimality(ablation, CHECK_CIRCUIT, mode="class")
    _labels_match(ex, raw, ref, call)
    expected = _scores(ref)
    f_m = float(ablation.logit_diff(None))
    f_c = float(ablation.logit_diff(CHECK_CIRCUIT.kept_positions()))

    def empty_k():
        out = []
        for v in CHECK_CIRCUIT.all_heads():
            gap = abs(float(ablation.logit_diff(CHECK_CIRCUIT.without([v]))) - f_c)
            out.append([gap, gap / abs(f_c)])
        return torch.tensor(out)

    mistakes = {
        "k_includes_v": lambda: torch.zeros_like(expected),
        "empty_k": empty_k,
        "relative_to_model": lambda: torch.stack([expected[:, 0], expected[:, 0] / abs(f_m)], 1),
    }
    ex.expect_tensor(
        _scores(raw),
        expected,
        call=call + "  as [score, relative] per head",
        mistakes=mistakes,
        atol=1e-3,
    )
    ex.passed()

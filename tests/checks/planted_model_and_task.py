"""Section 1 answers: logit difference, IO probability, per-prompt scores."""

from __future__ import annotations

import torch

from tests.checks.corpus import correct, variant, wrong


def _final(logits, positions):
    if positions is None:
        return logits[:, -1]
    return logits[torch.arange(logits.shape[0]), positions]


# ---- logits_to_ave_logit_diff ------------------------------------------------------------------


@wrong("logits_to_ave_logit_diff", "batch_by_batch_indexing")
def ld_batch_by_batch(logits, answer_tokens, per_prompt=False, positions=None):
    """logits[:, answer_ids] picks every prompt's answer for every prompt: a [batch, batch] grid."""
    final = _final(logits, positions)
    diff = final[:, answer_tokens[:, 0]] - final[:, answer_tokens[:, 1]]
    return diff if per_prompt else diff.mean()


@wrong("logits_to_ave_logit_diff", "batch_by_batch_indexing")
def ld_batch_by_batch_diagonal_forgotten(logits, answer_tokens, per_prompt=False, positions=None):
    """The [batch, batch] grid, averaged over its second axis when per_prompt."""
    final = _final(logits, positions)
    diff = final[:, answer_tokens[:, 0]] - final[:, answer_tokens[:, 1]]
    return diff.mean(1) if per_prompt else diff.mean()


@wrong("logits_to_ave_logit_diff", "wrong_sign")
def ld_s_minus_io(logits, answer_tokens, per_prompt=False, positions=None):
    """S - IO."""
    picked = _final(logits, positions).gather(1, answer_tokens)
    diff = picked[:, 1] - picked[:, 0]
    return diff if per_prompt else diff.mean()


@wrong("logits_to_ave_logit_diff", "ignored_positions")
def ld_always_last(logits, answer_tokens, per_prompt=False, positions=None):
    """Always the last column."""
    picked = logits[:, -1].gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


@wrong("logits_to_ave_logit_diff", "ignored_positions")
def ld_second_to_last(logits, answer_tokens, per_prompt=False, positions=None):
    """Column -2, 'because the last token is the answer'."""
    picked = logits[:, -2].gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


@wrong("logits_to_ave_logit_diff", "position_off_by_one")
def ld_position_plus_one(logits, answer_tokens, per_prompt=False, positions=None):
    """positions + 1, thinking end is the answer's own position."""
    pos = None if positions is None else positions + 1
    picked = _final(logits, pos).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


@wrong("logits_to_ave_logit_diff", "position_off_by_one")
def ld_position_minus_one(logits, answer_tokens, per_prompt=False, positions=None):
    """positions - 1."""
    pos = None if positions is None else positions - 1
    picked = _final(logits, pos).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


@wrong("logits_to_ave_logit_diff", "returned_per_prompt")
def ld_always_per_prompt(logits, answer_tokens, per_prompt=False, positions=None):
    """Ignores per_prompt=False."""
    picked = _final(logits, positions).gather(1, answer_tokens)
    return picked[:, 0] - picked[:, 1]


@wrong("logits_to_ave_logit_diff", "ignored_per_prompt")
def ld_always_mean(logits, answer_tokens, per_prompt=False, positions=None):
    """Ignores per_prompt=True."""
    picked = _final(logits, positions).gather(1, answer_tokens)
    return (picked[:, 0] - picked[:, 1]).mean()


@wrong("logits_to_ave_logit_diff", "probabilities")
def ld_probabilities(logits, answer_tokens, per_prompt=False, positions=None):
    """A difference of probabilities."""
    picked = _final(logits, positions).softmax(-1).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


@wrong("logits_to_ave_logit_diff", "sum_not_mean")
def ld_sum(logits, answer_tokens, per_prompt=False, positions=None):
    """Sums over the batch."""
    picked = _final(logits, positions).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.sum()


@wrong("logits_to_ave_logit_diff", "same_position_for_all_prompts")
def ld_first_prompts_position(logits, answer_tokens, per_prompt=False, positions=None):
    """positions[0] for every prompt."""
    final = logits[:, -1] if positions is None else logits[:, int(positions[0])]
    picked = final.gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


@correct("logits_to_ave_logit_diff", "log-softmax differences equal logit differences")
def ld_log_softmax(logits, answer_tokens, per_prompt=False, positions=None):
    picked = _final(logits, positions).log_softmax(-1).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


@correct("logits_to_ave_logit_diff", "a loop over prompts, python indexing")
def ld_loop(logits, answer_tokens, per_prompt=False, positions=None):
    out = []
    for i in range(logits.shape[0]):
        pos = -1 if positions is None else int(positions[i])
        io, s = answer_tokens[i].tolist()
        out.append(logits[i, pos, io] - logits[i, pos, s])
    diff = torch.stack(out)
    return diff if per_prompt else diff.mean()


@correct("logits_to_ave_logit_diff", "torch.gather along the position axis")
def ld_gather_positions(logits, answer_tokens, per_prompt=False, positions=None):
    if positions is None:
        positions = torch.full((logits.shape[0],), logits.shape[1] - 1)
    index = positions[:, None, None].expand(-1, 1, logits.shape[-1])
    final = logits.gather(1, index).squeeze(1)
    rows = torch.arange(logits.shape[0])
    diff = final[rows, answer_tokens[:, 0]] - final[rows, answer_tokens[:, 1]]
    return diff if per_prompt else diff.mean()


# ---- io_probability ----------------------------------------------------------------------------


@wrong("io_probability", "batch_by_batch_indexing")
def prob_batch_by_batch(logits, answer_tokens, positions=None):
    """probs[:, answer_tokens[:, 0]]: [batch, batch]."""
    return _final(logits, positions).softmax(-1)[:, answer_tokens[:, 0]]


@wrong("io_probability", "batch_by_batch_indexing")
def prob_batch_by_batch_mean(logits, answer_tokens, positions=None):
    """The [batch, batch] grid averaged to [batch]."""
    return _final(logits, positions).softmax(-1)[:, answer_tokens[:, 0]].mean(0)


@wrong("io_probability", "s_probability")
def prob_of_s(logits, answer_tokens, positions=None):
    """Column 1."""
    return _final(logits, positions).softmax(-1).gather(1, answer_tokens[:, 1:]).squeeze(1)


@wrong("io_probability", "no_softmax")
def prob_raw_logit(logits, answer_tokens, positions=None):
    """The raw logit."""
    return _final(logits, positions).gather(1, answer_tokens[:, :1]).squeeze(1)


@wrong("io_probability", "log_probability")
def prob_log(logits, answer_tokens, positions=None):
    """log_softmax."""
    return _final(logits, positions).log_softmax(-1).gather(1, answer_tokens[:, :1]).squeeze(1)


@wrong("io_probability", "softmax_wrong_dim")
def prob_softmax_batch(logits, answer_tokens, positions=None):
    """softmax over dim 0."""
    return _final(logits, positions).softmax(0).gather(1, answer_tokens[:, :1]).squeeze(1)


@wrong("io_probability", "softmax_over_answers")
def prob_two_way(logits, answer_tokens, positions=None):
    """Softmax over the two answers only."""
    return _final(logits, positions).gather(1, answer_tokens).softmax(-1)[:, 0]


@wrong("io_probability", "ignored_positions")
def prob_last(logits, answer_tokens, positions=None):
    """Last column always."""
    return logits[:, -1].softmax(-1).gather(1, answer_tokens[:, :1]).squeeze(1)


@correct("io_probability", "log_softmax then exp, in float64")
def prob_exp_log_softmax(logits, answer_tokens, positions=None):
    final = _final(logits, positions).double()
    return final.log_softmax(-1).exp().gather(1, answer_tokens[:, :1]).squeeze(1).float()


@correct("io_probability", "a loop over prompts")
def prob_loop(logits, answer_tokens, positions=None):
    out = []
    for i in range(logits.shape[0]):
        pos = -1 if positions is None else int(positions[i])
        out.append(torch.softmax(logits[i, pos], dim=0)[answer_tokens[i, 0]])
    return torch.stack(out)


# ---- prompt_scores -----------------------------------------------------------------------------


def _scores(
    model, ds, *, pos=None, top_vs_s=False, swap=None, first_pos=False, prob_col=0, ties=False
):
    logits = model(ds.toks)
    end = ds.word_idx["end"] if pos is None else pos
    if first_pos:
        end = end[:1].expand_as(end)
    rows = torch.arange(len(end))
    final = logits[rows, end]
    picked = final.gather(1, ds.answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    top1 = (final.argmax(-1) == ds.answer_tokens[:, 0]).float()
    out = {
        "logit_diff": diff,
        "io_over_s": ((diff >= 0) if ties else (diff > 0)).float(),
        "io_top1": (diff > 0).float() if top_vs_s else top1,
        "io_prob": final.softmax(-1).gather(1, ds.answer_tokens[:, prob_col : prob_col + 1])[:, 0],
    }
    if swap:
        a, b = swap
        out[a], out[b] = out[b], out[a]
    return out


variant(
    "prompt_scores",
    "top1_over_answers",
    _scores,
    "io_top1 compares IO with S only.",
    fn_name="scores_top1_is_io_over_s",
    top_vs_s=True,
)


variant(
    "prompt_scores",
    "counted_ties",
    _scores,
    "io_over_s = logit_diff >= 0: a tie counts as the IO beating S.",
    fn_name="scores_ties_count",
    ties=True,
)


@wrong("prompt_scores", "ignored_positions")
def scores_last_column(model, ds):
    """Every score read at the last column."""
    return _scores(model, ds, pos=torch.full((ds.N,), ds.toks.shape[1] - 1))


variant(
    "prompt_scores",
    "swapped_fields",
    _scores,
    "io_top1 and io_over_s swapped.",
    fn_name="scores_swapped_keys",
    swap=("io_top1", "io_over_s"),
)


@wrong("prompt_scores", "missing_keys")
def scores_missing_prob(model, ds):
    """No io_prob."""
    out = _scores(model, ds)
    del out["io_prob"]
    return out


variant(
    "prompt_scores",
    "same_position_for_all_prompts",
    _scores,
    "word_idx['end'][0] for every prompt.",
    fn_name="scores_first_end",
    first_pos=True,
)


variant(
    "prompt_scores",
    "s_probability",
    _scores,
    "io_prob reads column 1 (the S).",
    fn_name="scores_prob_of_s",
    prob_col=1,
)


@correct("prompt_scores", "bool tensors, two forward passes")
def scores_bools(model, ds):
    end = ds.word_idx["end"]
    rows = torch.arange(ds.N)
    final = model(ds.toks)[rows, end]
    io, s = ds.answer_tokens[:, 0], ds.answer_tokens[:, 1]
    diff = final[rows, io] - final[rows, s]
    probs = model(ds.toks)[rows, end].softmax(-1)
    return {
        "logit_diff": diff,
        "io_over_s": diff > 0,
        "io_top1": final.argmax(-1) == io,
        "io_prob": probs[rows, io],
    }


# ---- more io_probability and prompt_scores mistakes --------------------------------------------


def _io_logit(logits, answer_tokens, positions):
    return _final(logits, positions)[torch.arange(logits.shape[0]), answer_tokens[:, 0]]


@wrong("io_probability", "not_normalised")
def io_prob_exp(logits, answer_tokens, positions=None):
    """exp of the IO logit, never divided by the sum."""
    return torch.exp(_io_logit(logits, answer_tokens, positions))


@wrong("io_probability", "not_normalised")
def io_prob_sigmoid(logits, answer_tokens, positions=None):
    """torch.sigmoid of the IO logit."""
    return torch.sigmoid(_io_logit(logits, answer_tokens, positions))


@wrong("io_probability", "softmax_wrong_dim")
def io_prob_over_positions(logits, answer_tokens, positions=None):
    """softmax(dim=1) of [batch, pos, d_vocab]: over positions."""
    probs = _final(torch.softmax(logits, dim=1), positions)
    return probs[torch.arange(probs.shape[0]), answer_tokens[:, 0]]


@wrong("io_probability", "both_answers")
def io_prob_both(logits, answer_tokens, positions=None):
    """The probabilities of the IO and of the S, side by side."""
    probs = _final(logits, positions).softmax(-1)
    return torch.stack([probs[torch.arange(len(probs)), answer_tokens[:, i]] for i in (0, 1)], 1)


def _scores_then(model, ds, change):
    with torch.inference_mode():
        final = _final(model(ds.toks), ds.word_idx["end"])
    picked = final.gather(1, ds.answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    scores = {
        "logit_diff": diff,
        "io_over_s": (diff > 0).float(),
        "io_top1": (final.argmax(-1) == ds.answer_tokens[:, 0]).float(),
        "io_prob": final.softmax(-1).gather(1, ds.answer_tokens[:, :1])[:, 0],
    }
    change(scores, final, ds)
    return scores


variant(
    "prompt_scores",
    "io_over_s_without_s",
    _scores_then,
    "io_over_s is IO logit > 0.",
    fn_name="scores_io_logit_positive",
    change=lambda s, final, ds: s.update(
        io_over_s=(final.gather(1, ds.answer_tokens[:, :1])[:, 0] > 0).float()
    ),
)


variant(
    "prompt_scores",
    "top1_of_s",
    _scores_then,
    "io_top1 compares the argmax with the S token.",
    fn_name="scores_top1_is_s",
    change=lambda s, final, ds: s.update(
        io_top1=(final.argmax(-1) == ds.answer_tokens[:, 1]).float()
    ),
)


variant(
    "prompt_scores",
    "softmax_wrong_dim",
    _scores_then,
    "io_prob from a softmax over the batch.",
    fn_name="scores_prob_over_batch",
    change=lambda s, final, ds: s.update(
        io_prob=final.softmax(0)[torch.arange(final.shape[0]), ds.answer_tokens[:, 0]]
    ),
)


variant(
    "prompt_scores",
    "reduced_to_mean",
    _scores_then,
    "logit_diff averaged over the prompts.",
    fn_name="scores_mean_logit_diff",
    change=lambda s, final, ds: s.update(logit_diff=s["logit_diff"].mean()),
)


# ---- right up to rounding (half precision) -----------------------------------------------------


@correct("logits_to_ave_logit_diff", "computed in float16 (rounding only)")
def diff_half(logits, answer_tokens, per_prompt=False, positions=None):
    half = _final(logits, positions).half().gather(1, answer_tokens)
    diff = (half[:, 0] - half[:, 1]).float()
    return diff if per_prompt else diff.mean()


@correct("io_probability", "softmax in float16 (rounding only)")
def prob_half(logits, answer_tokens, positions=None):
    probs = _final(logits, positions).half().softmax(-1).float()
    return probs[torch.arange(len(probs)), answer_tokens[:, 0]]

"""Planted mistakes for section 1: one wrong implementation per diagnosis its checkers make."""

from __future__ import annotations

import torch


def _final(logits, positions):
    if positions is None:
        return logits[:, -1]
    return logits[torch.arange(logits.shape[0]), positions]


# ---- logits_to_ave_logit_diff ---------------------------------------------------------------


def diff_s_minus_io(logits, answer_tokens, per_prompt=False, positions=None):
    picked = _final(logits, positions).gather(1, answer_tokens)
    diff = picked[:, 1] - picked[:, 0]
    return diff if per_prompt else diff.mean()


def diff_always_last(logits, answer_tokens, per_prompt=False, positions=None):
    picked = logits[:, -1].gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


def diff_at_answer_token(logits, answer_tokens, per_prompt=False, positions=None):
    positions = None if positions is None else positions + 1  # "the answer's own position"
    picked = _final(logits, positions).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


def diff_never_mean(logits, answer_tokens, per_prompt=False, positions=None):
    picked = _final(logits, positions).gather(1, answer_tokens)
    return picked[:, 0] - picked[:, 1]


def diff_always_mean(logits, answer_tokens, per_prompt=False, positions=None):
    picked = _final(logits, positions).gather(1, answer_tokens)
    return (picked[:, 0] - picked[:, 1]).mean()


def diff_of_probs(logits, answer_tokens, per_prompt=False, positions=None):
    picked = _final(logits, positions).softmax(-1).gather(1, answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()


# ---- io_probability -------------------------------------------------------------------------


def prob_of_s(logits, answer_tokens, positions=None):
    return _final(logits, positions).softmax(-1).gather(1, answer_tokens[:, 1:]).squeeze(1)


def prob_no_softmax(logits, answer_tokens, positions=None):
    return _final(logits, positions).gather(1, answer_tokens[:, :1]).squeeze(1)


def prob_log_softmax(logits, answer_tokens, positions=None):
    return _final(logits, positions).log_softmax(-1).gather(1, answer_tokens[:, :1]).squeeze(1)


def prob_softmax_over_batch(logits, answer_tokens, positions=None):
    return _final(logits, positions).softmax(0).gather(1, answer_tokens[:, :1]).squeeze(1)


def prob_always_last(logits, answer_tokens, positions=None):
    return logits[:, -1].softmax(-1).gather(1, answer_tokens[:, :1]).squeeze(1)


# ---- prompt_scores --------------------------------------------------------------------------


def _scores(model, ds, read_last=False, top1_from_pair=False, drop=None):
    logits = model(ds.toks)
    end = None if read_last else ds.word_idx["end"]
    final = _final(logits, end)
    picked = final.gather(1, ds.answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    top1 = (diff > 0) if top1_from_pair else (final.argmax(-1) == ds.io_tokenIDs)
    out = {
        "logit_diff": diff,
        "io_over_s": (diff > 0).float(),
        "io_top1": top1.float(),
        "io_prob": final.softmax(-1).gather(1, ds.answer_tokens[:, :1]).squeeze(1),
    }
    if drop:
        del out[drop]
    return out


def scores_missing_prob(model, ds):
    return _scores(model, ds, drop="io_prob")


def scores_at_last(model, ds):
    return _scores(model, ds, read_last=True)


def scores_top1_from_pair(model, ds):
    return _scores(model, ds, top1_from_pair=True)


PLANTED = {
    ("logits_to_ave_logit_diff", "wrong_sign"): diff_s_minus_io,
    ("logits_to_ave_logit_diff", "ignored_positions"): diff_always_last,
    ("logits_to_ave_logit_diff", "position_off_by_one"): diff_at_answer_token,
    ("logits_to_ave_logit_diff", "returned_per_prompt"): diff_never_mean,
    ("logits_to_ave_logit_diff", "ignored_per_prompt"): diff_always_mean,
    ("logits_to_ave_logit_diff", "probabilities"): diff_of_probs,
    ("io_probability", "s_probability"): prob_of_s,
    ("io_probability", "no_softmax"): prob_no_softmax,
    ("io_probability", "log_probability"): prob_log_softmax,
    ("io_probability", "softmax_wrong_dim"): prob_softmax_over_batch,
    ("io_probability", "ignored_positions"): prob_always_last,
    ("prompt_scores", "missing_keys"): scores_missing_prob,
    ("prompt_scores", "ignored_positions"): scores_at_last,
    ("prompt_scores", "top1_over_answers"): scores_top1_from_pair,
}

"""Answers that compute the right values but leave the model (or the SAE) changed.

In a notebook such a change silently alters every later cell, so `Exercise.call` fails it
(`ioi.checks.core.ModuleLeaks`). One representative answer per kind of leak, each on a fast
exercise; each is the course's solution plus the one line a learner might add.
"""

from __future__ import annotations

import torch

import solutions.part1_model_and_task as s1
import solutions.part2_logit_attribution as s2
from tests.checks.corpus import variant, wrong
from tests.checks.planted_features import _atp


@wrong("logit_diff_directions", "hooks_left")
def dirs_perma_hook(model, answer_tokens):
    """Adds a permanent hook (add_perma_hook) to watch the residual stream; never removed."""
    model.add_perma_hook("blocks.0.hook_resid_pre", lambda resid, hook: resid)
    return s2.logit_diff_directions(model, answer_tokens)


@wrong("prompt_scores", "flag_left_on")
def scores_attn_result_on(model, ds):
    """Turns on use_attn_result (to look at the heads' outputs) and never turns it off."""
    model.set_use_attn_result(True)
    return s1.prompt_scores(model, ds)


@wrong("logit_diff_directions", "grads_left")
def dirs_by_backward(model, answer_tokens):
    """The directions as the gradient of the logit difference with respect to a residual
    vector, by .backward(): W_U requires grad too, so its .grad is left filled."""
    with torch.enable_grad():
        resid = torch.zeros(answer_tokens.shape[0], model.cfg.d_model, requires_grad=True)
        logits = resid @ model.W_U
        rows = torch.arange(answer_tokens.shape[0])
        diff = logits[rows, answer_tokens[:, 0]] - logits[rows, answer_tokens[:, 1]]
        diff.sum().backward()
    return resid.grad


@wrong("prompt_scores", "requires_grad_changed")
def scores_frozen(model, ds):
    """Freezes the model's parameters first (requires_grad_(False), as before inference)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return s1.prompt_scores(model, ds)


@wrong("prompt_scores", "train_mode_left")
def scores_train_mode(model, ds):
    """Calls model.train() (copied from a training loop) and never model.eval()."""
    model.train()
    return s1.prompt_scores(model, ds)


@wrong("logit_diff_directions", "moved_or_cast")
def dirs_in_float64(model, answer_tokens):
    """Casts the model to float64 for precision (model.to(torch.float64)) and leaves it so."""
    model.to(torch.float64)
    return s2.logit_diff_directions(model, answer_tokens)


@wrong("logit_diff_directions", "mutated_input")
def dirs_centred_unembed(model, answer_tokens):
    """Centres W_U over the vocabulary in place first (as center_unembed does): the
    differences are unchanged, but so is every later logit."""
    with torch.no_grad():
        model.W_U.sub_(model.W_U.mean(-1, keepdim=True))
    return s2.logit_diff_directions(model, answer_tokens)


variant(
    "feature_attribution_patching",
    "grads_left",
    _atp,
    "The course's method with .backward() in place of torch.autograd.grad: the scores are "
    "right, but .grad is left on the model's parameters.",
    fn_name="atp_by_backward",
)

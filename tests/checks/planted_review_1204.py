"""Answers from a second independent adversarial review of the checkers (2026-12-04).

Against the checkers of that day, of this reviewer's 104 wrong answers 2 passed and 5 got a
misleading diagnosis; these are those answers (in the reviewer's learner style), each tagged
with the diagnosis a new checker case now gives. The reviewer's other answers are not planted
here, so that a later review can still be measured on answers the checkers were not tuned on.
"""

# ruff: noqa: E741

from __future__ import annotations

import solutions.part1_model_and_task as s1
import solutions.part6_further as s6
from ioi.circuit import BackupResult
from ioi.head import Head
from tests.checks.corpus import wrong
from tests.checks.planted_review import _perm


@wrong(
    "patch_residual_component",
    "ignored_hook_name",
    "always reads clean_cache['resid_pre', layer], whatever hook point it is attached to",
)
def w_prc_resid_pre_name(corrupted_residual_component, hook, pos, clean_cache):
    corrupted_residual_component[:, pos] = clean_cache["resid_pre", hook.layer()][:, pos]
    return corrupted_residual_component


@wrong(
    "backup_name_mover_experiment",
    "wrong_heads_recorded",
    "ablated keeps a head named twice twice (the naive prediction then counts it twice)",
)
def w_bk_dupes(ablation, name_movers, at="end"):
    r = s6.backup_name_mover_experiment(ablation, name_movers, at)
    heads = tuple(Head.coerce(h) for h in name_movers)
    return BackupResult(heads, r.dla_before, r.dla_after, r.logit_diff_before, r.logit_diff_after)


@wrong("prompt_scores", "io_over_s_from_probability", "io_over_s read as P(IO) > 0.5")
def w_ps_io_over_s_prob(model, ds):
    out = s1.prompt_scores(model, ds)
    out["io_over_s"] = (out["io_prob"] > 0.5).float()
    return out


@wrong(
    "permutation_test",
    "null_not_shuffled",
    "draws each permutation but scores the unshuffled labels (null all equal to the observed)",
)
def w_pt_noperm(importance, labels, n_permutations=1000, seed=0):
    return _perm(importance, labels, n_permutations, seed, shuffle=False)


@wrong("permutation_test", "wrong_tail", "p-value counts null <= observed")
def w_pt_le(importance, labels, n_permutations=1000, seed=0):
    return _perm(importance, labels, n_permutations, seed, tail="le")

"""Planted mistakes for section 6: one wrong implementation per diagnosis its checkers make."""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from ioi.circuit import BackupResult, PermutationTest
from ioi.circuit.ablation import keep_masks, logit_diff_with_hooks, replace_where
from ioi.heads import per_head_logit_diffs

# ---- backup_name_mover_experiment -------------------------------------------------------------


def _backup(ablation, name_movers, at, *, everywhere=False, zeros=False, hooks_after=True):
    model, ds, means = ablation.model, ablation.ds, ablation.means
    heads = tuple((int(layer), int(head)) for layer, head in name_movers)
    rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx])
    masks = keep_masks(model, ds, {h: None if everywhere else (at,) for h in heads})
    hooks = []
    for layer, mask in enumerate(masks):
        if mask.any():
            values = torch.zeros(1) if zeros else means.z[layer][rows][:, : ds.toks.shape[1]]
            hooks.append((get_act_name("z", layer), replace_where(mask, values)))

    def dla(hook_list):
        with model.hooks(fwd_hooks=hook_list):
            _, cache = model.run_with_cache(ds.toks)
        return per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"]).detach()

    return BackupResult(
        heads,
        dla([]),
        dla(hooks if hooks_after else []),
        float(logit_diff_with_hooks(model, ds).mean()),
        float(logit_diff_with_hooks(model, ds, hooks).mean()),
    )


def backup_everywhere(ablation, name_movers, at="end"):
    return _backup(ablation, name_movers, at, everywhere=True)


def backup_with_zeros(ablation, name_movers, at="end"):
    return _backup(ablation, name_movers, at, zeros=True)


def backup_forgets_hooks_for_dla(ablation, name_movers, at="end"):
    return _backup(ablation, name_movers, at, hooks_after=False)


# ---- permutation_test -------------------------------------------------------------------------


def _permutation(
    importance, labels, n_permutations, seed, *, weighted=True, plus_one=True, seed_shift=0
):
    _, labels = labels.long().unique(return_inverse=True)
    n_groups = int(labels.max()) + 1
    flat = importance.reshape(importance.shape[0], -1)

    def statistic(group_of):
        onehot = torch.nn.functional.one_hot(group_of, n_groups).float()
        counts = onehot.sum(0)
        means = (onehot.T @ flat) / counts[:, None]
        weights = counts[:, None] if weighted else 1.0
        return (weights * (means - flat.mean(0)) ** 2).sum()

    observed = statistic(labels)
    gen = torch.Generator().manual_seed(seed + seed_shift)
    null = torch.stack(
        [
            statistic(labels[torch.randperm(len(labels), generator=gen)])
            for _ in range(n_permutations)
        ]
    )
    count = int((null >= observed).sum())
    p = (1 + count) / (1 + n_permutations) if plus_one else count / n_permutations
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    means = torch.einsum("bg,blh->glh", onehot, importance) / onehot.sum(0)[:, None, None]
    return PermutationTest(float(observed), p, n_permutations, means, null)


def permutation_unweighted(importance, labels, n_permutations=1000, seed=0):
    return _permutation(importance, labels, n_permutations, seed, weighted=False)


def permutation_no_plus_one(importance, labels, n_permutations=1000, seed=0):
    return _permutation(importance, labels, n_permutations, seed, plus_one=False)


def permutation_other_generator(importance, labels, n_permutations=1000, seed=0):
    return _permutation(importance, labels, n_permutations, seed, seed_shift=1)


PLANTED = {
    ("backup_name_mover_experiment", "knocked_out_everywhere"): backup_everywhere,
    ("backup_name_mover_experiment", "zero_ablation"): backup_with_zeros,
    ("backup_name_mover_experiment", "after_equals_before"): backup_forgets_hooks_for_dla,
    ("permutation_test", "unweighted_statistic"): permutation_unweighted,
    ("permutation_test", "p_value_without_plus_one"): permutation_no_plus_one,
    ("permutation_test", "different_shuffles"): permutation_other_generator,
}

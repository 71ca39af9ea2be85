"""Section 6 answers: backup name movers and the permutation test."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from transformer_lens.utilities import get_act_name

from ioi.circuit import BackupResult, PermutationTest
from ioi.circuit.ablation import keep_masks, logit_diff_with_hooks, replace_where
from ioi.heads import per_head_logit_diffs
from tests.checks.corpus import correct, variant, wrong

# ---- backup_name_mover_experiment --------------------------------------------------------------


def _backup(
    ablation,
    name_movers,
    at="end",
    *,
    values="template",
    everywhere=False,
    after_from_before=False,
    swap=False,
    last_column=False,
    movers=None,
    none_in_tuple=False,
    stale_scale=False,
):
    model, ds, means = ablation.model, ablation.ds, ablation.means
    heads = tuple((int(a), int(b)) for a, b in (movers or name_movers))
    n_pos = ds.toks.shape[1]
    rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx])
    where = None if ((at is None and not none_in_tuple) or everywhere) else (at,)
    masks = keep_masks(model, ds, {h: where for h in heads})
    hooks = []
    for layer, mask in enumerate(masks):
        if not mask.any():
            continue
        z = means.z[layer]
        if values == "template":
            v = z[rows][:, :n_pos]
        elif values == "global":
            v = z.mean(0, keepdim=True)[:, :n_pos].expand(ds.N, -1, -1, -1)
        else:
            v = torch.zeros(1)
        hooks.append((get_act_name("z", layer), replace_where(mask, v)))
    positions = (
        torch.full_like(ds.word_idx["end"], n_pos - 1) if last_column else ds.word_idx["end"]
    )

    def dla(hook_list, scale_of=None):
        with torch.no_grad(), model.hooks(fwd_hooks=hook_list):
            _, cache = model.run_with_cache(ds.toks)
        if scale_of is not None:  # another run's final layer-norm scale
            cache.cache_dict["ln_final.hook_scale"] = scale_of["ln_final.hook_scale"]
        return per_head_logit_diffs(model, cache, ds.answer_tokens, positions).cpu()

    before = dla([])
    if stale_scale:
        with torch.no_grad():
            _, unablated = model.run_with_cache(ds.toks)
        after = dla(hooks, scale_of=unablated)
    else:
        after = before.clone() if after_from_before else dla(hooks)
    ld_before = float(logit_diff_with_hooks(model, ds).mean())
    ld_after = float(logit_diff_with_hooks(model, ds, hooks).mean())
    if swap:
        before, after, ld_before, ld_after = after, before, ld_after, ld_before
    return BackupResult(heads, before, after, ld_before, ld_after)


variant(
    "backup_name_mover_experiment",
    "knocked_out_everywhere",
    _backup,
    "Ignores `at`.",
    fn_name="backup_everywhere",
    everywhere=True,
)


variant(
    "backup_name_mover_experiment",
    "zero_ablation",
    _backup,
    "Zeros.",
    fn_name="backup_zero",
    values="zero",
)


variant(
    "backup_name_mover_experiment",
    "global_mean_ablation",
    _backup,
    "One mean over all templates.",
    fn_name="backup_global",
    values="global",
)


variant(
    "backup_name_mover_experiment",
    "after_equals_before",
    _backup,
    "dla_after read without the hooks.",
    fn_name="backup_no_second_run",
    after_from_before=True,
)


variant(
    "backup_name_mover_experiment",
    "swapped_fields",
    _backup,
    "before and after exchanged.",
    fn_name="backup_swapped",
    swap=True,
)


variant(
    "backup_name_mover_experiment",
    "ignored_positions",
    _backup,
    "DLA read at the last column.",
    fn_name="backup_dla_last_column",
    last_column=True,
)


variant(
    "backup_name_mover_experiment",
    "ignored_name_movers",
    _backup,
    "name_movers hard-coded to 1.0 and 1.1.",
    fn_name="backup_fixed_movers",
    movers=[(1, 0), (1, 1)],
)


def _backup_once(ablation, name_movers, at="end", **how):
    """`_backup` of each name mover once."""
    heads = list(dict.fromkeys((int(a), int(b)) for a, b in name_movers))
    return _backup(ablation, heads, at, **how)


variant(
    "backup_name_mover_experiment",
    "none_at_raised",
    _backup_once,
    "at=None passed on as a position key: {head: (None,)}.",
    fn_name="backup_none_as_key",
    none_in_tuple=True,
)


variant(
    "backup_name_mover_experiment",
    "stale_ln_scale",
    _backup_once,
    "dla_after uses the unablated run's final layer-norm scale.",
    fn_name="backup_old_scale",
    stale_scale=True,
)


@correct("backup_name_mover_experiment", "the logit difference read from the cached run")
def backup_from_cache(ablation, name_movers, at="end"):
    model, ds, means = ablation.model, ablation.ds, ablation.means
    heads = list(dict.fromkeys((int(a), int(b)) for a, b in name_movers))
    rows = [means.row_of[int(t)] for t in ds.template_idx]
    n_pos = ds.toks.shape[1]
    masks = keep_masks(model, ds, {h: None if at is None else (at,) for h in heads})
    hooks = [
        (get_act_name("z", layer), replace_where(mask, means.z[layer][rows][:, :n_pos]))
        for layer, mask in enumerate(masks)
        if mask.any()
    ]
    end, r = ds.word_idx["end"], torch.arange(ds.N)

    def run(hook_list):
        with torch.no_grad(), model.hooks(fwd_hooks=hook_list):
            logits, cache = model.run_with_cache(ds.toks)
        final = logits[r, end]
        ld = (final[r, ds.answer_tokens[:, 0]] - final[r, ds.answer_tokens[:, 1]]).mean()
        return per_head_logit_diffs(model, cache, ds.answer_tokens, end), float(ld)

    (before, ld_b), (after, ld_a) = run([]), run(hooks)
    return BackupResult(tuple(heads), before, after, ld_b, ld_a)


# ---- permutation_test --------------------------------------------------------------------------


def _stat(flat, labels, n_groups, weighted=True):
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    counts = onehot.sum(0)
    means = (onehot.T @ flat) / counts[:, None]
    w = counts[:, None] if weighted else 1.0
    return (w * (means - flat.mean(0)) ** 2).sum()


def _perm(
    importance,
    labels,
    n_permutations=1000,
    seed=0,
    *,
    weighted=True,
    plus_one=True,
    renumber=True,
    group_sums=False,
    shuffler="torch",
):
    labels = labels.long()
    if renumber:
        _, labels = labels.unique(return_inverse=True)
    n_groups = int(labels.max()) + 1
    flat = importance.reshape(importance.shape[0], -1)
    observed = _stat(flat, labels, n_groups, weighted)
    if shuffler == "torch":
        gen = torch.Generator().manual_seed(seed)
        perms = [torch.randperm(len(labels), generator=gen) for _ in range(n_permutations)]
    else:
        rng = np.random.default_rng(seed)
        perms = [torch.from_numpy(rng.permutation(len(labels))) for _ in range(n_permutations)]
    null = torch.stack([_stat(flat, labels[p], n_groups, weighted) for p in perms])
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    sums = torch.einsum("bg,blh->glh", onehot, importance)
    means = sums if group_sums else sums / onehot.sum(0)[:, None, None]
    hits = int((null >= observed).sum())
    p = (1 + hits) / (1 + n_permutations) if plus_one else hits / n_permutations
    return PermutationTest(float(observed), p, n_permutations, means, null)


variant(
    "permutation_test",
    "unweighted_statistic",
    _perm,
    "No n_g weights.",
    fn_name="perm_unweighted",
    weighted=False,
)


variant(
    "permutation_test",
    "p_value_without_plus_one",
    _perm,
    "#/n.",
    fn_name="perm_no_plus_one",
    plus_one=False,
)


variant(
    "permutation_test",
    "different_shuffles",
    _perm,
    "numpy's generator.",
    fn_name="perm_numpy",
    shuffler="numpy",
)


@wrong("permutation_test", "ignored_seed")
def perm_seed_zero(importance, labels, n_permutations=1000, seed=0):
    """seed hard-coded to 0."""
    return _perm(importance, labels, n_permutations, 0)


variant(
    "permutation_test",
    "labels_not_renumbered",
    _perm,
    "Labels used as group indices without renumbering: empty groups.",
    fn_name="perm_no_renumbering",
    renumber=False,
)


variant(
    "permutation_test",
    "group_sums_not_means",
    _perm,
    "group_means holds sums.",
    fn_name="perm_group_sums",
    group_sums=True,
)


@correct("permutation_test", "a python loop over groups for the statistic")
def perm_loop(importance, labels, n_permutations=1000, seed=0):
    groups = sorted(set(labels.tolist()))
    index = torch.tensor([groups.index(x) for x in labels.tolist()])
    flat = importance.reshape(importance.shape[0], -1)

    def stat(lab):
        total = flat.mean(0)
        return sum(
            (lab == g).sum() * ((flat[lab == g].mean(0) - total) ** 2).sum()
            for g in range(len(groups))
        )

    observed = stat(index)
    gen = torch.Generator().manual_seed(seed)
    null = torch.stack(
        [
            torch.as_tensor(stat(index[torch.randperm(len(index), generator=gen)]))
            for _ in range(n_permutations)
        ]
    ).float()
    means = torch.stack([importance[index == g].mean(0) for g in range(len(groups))])
    p = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    return PermutationTest(float(observed), p, n_permutations, means, null)


# ---- more permutation_test mistakes ------------------------------------------------------------


@wrong("permutation_test", "observed_in_null")
def perm_null_with_observed(importance, labels, n_permutations=1000, seed=0):
    """Appends the observed statistic to the null."""
    r = _perm(importance, labels, n_permutations, seed)
    null = torch.cat([r.null, torch.tensor([r.statistic])])
    return PermutationTest(r.statistic, r.p_value, r.n_permutations, r.group_means, null)


@wrong("permutation_test", "group_means_flattened")
def perm_flat_means(importance, labels, n_permutations=1000, seed=0):
    """group_means left as [group, layer * head] (in a record of its own)."""
    r = _perm(importance, labels, n_permutations, seed)
    return SimpleNamespace(**{**vars(r), "group_means": r.group_means.flatten(1)})


def _f_ratio(flat, labels, n_groups):
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    means = (onehot.T @ flat) / onehot.sum(0)[:, None]
    between = (onehot.sum(0)[:, None] * (means - flat.mean(0)) ** 2).sum() / (n_groups - 1)
    within = ((flat - onehot @ means) ** 2).sum() / (len(labels) - n_groups)
    return between / within


@wrong("permutation_test", "f_statistic")
def perm_anova_f(importance, labels, n_permutations=1000, seed=0):
    """The ANOVA F ratio as the statistic."""
    _, labels = labels.long().unique(return_inverse=True)
    n_groups = int(labels.max()) + 1
    flat = importance.reshape(importance.shape[0], -1)
    observed = _f_ratio(flat, labels, n_groups)
    gen = torch.Generator().manual_seed(seed)
    null = torch.stack(
        [
            _f_ratio(flat, labels[torch.randperm(len(labels), generator=gen)], n_groups)
            for _ in range(n_permutations)
        ]
    )
    base = _perm(importance, labels, n_permutations, seed)
    p = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    return PermutationTest(float(observed), p, n_permutations, base.group_means, null)

"""Checkers for section 6, further topics: backup name movers and the permutation test across templates.

Expected values come from `ioi.circuit.backup_name_mover_experiment` and
`ioi.circuit.permutation_test`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from ioi.checks.core import exercise, one_thread
from ioi.checks.replication import _ablation
from ioi.circuit import backup_name_mover_experiment, permutation_test
from ioi.circuit.ablation import keep_masks, logit_diff_with_hooks, replace_where
from ioi.heads import per_head_logit_diffs

MOVERS = [(1, 0), (1, 1)]

BACKUP = exercise(
    "backup_name_mover_experiment",
    hint="build hook_z hooks that replace the name movers' output by its template mean at "
    "word_idx[at] only (keep_masks and replace_where from ioi.circuit.ablation help); record "
    "per_head_logit_diffs at end without and with the hooks, and the mean logit difference "
    "without and with them; return a BackupResult.",
    diagnoses={
        "knocked_out_everywhere": "the name movers were replaced at every position; knock them "
        "out only at `at` (the paper: at end)",
        "zero_ablation": "you replaced the name movers' output by zeros; the paper uses the "
        "mean over the ABC prompts of the same template",
        "after_equals_before": "dla_after equals dla_before: the run you read the second "
        "attribution from did not have the knockout hooks on",
    },
)


def _pack(result: object) -> Tensor | object:
    """[dla_before, dla_after, logit_diff_before, logit_diff_after] as one flat tensor."""
    fields = ("dla_before", "dla_after", "logit_diff_before", "logit_diff_after")
    if not all(hasattr(result, f) for f in fields):
        return result
    return torch.cat(
        [
            torch.as_tensor(result.dla_before).detach().float().cpu().flatten(),
            torch.as_tensor(result.dla_after).detach().float().cpu().flatten(),
            torch.tensor([float(result.logit_diff_before), float(result.logit_diff_after)]),
        ]
    )


def _zero_knockout(ablation, heads, at: str) -> Tensor:
    """What zero-ablating ``heads`` at ``at`` gives, packed like `_pack`."""
    model, ds = ablation.model, ablation.ds
    masks = keep_masks(model, ds, {h: (at,) for h in heads})
    hooks = [
        (get_act_name("z", layer), replace_where(mask, torch.zeros(1)))
        for layer, mask in enumerate(masks)
        if mask.any()
    ]
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    names.append("ln_final.hook_scale")

    def dla(hook_list):
        with torch.no_grad(), model.hooks(fwd_hooks=hook_list):
            _, cache = model.run_with_cache(ds.toks, names_filter=names)
        return per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"]).flatten()

    before, after = dla([]), dla(hooks)
    lds = [float(logit_diff_with_hooks(model, ds, h).mean()) for h in ([], hooks)]
    return torch.cat([before, after, torch.tensor(lds)]).cpu()


@one_thread()
def test_backup_name_mover_experiment(backup_name_mover_experiment_fn: Callable) -> None:
    """Check ``backup_name_mover_experiment(ablation, name_movers, at="end") -> BackupResult``."""
    ex, (b, ablation) = BACKUP, _ablation()
    call = (
        f"backup_name_mover_experiment(ablation, name_movers={MOVERS}, at='end')  [{b.describe()}]"
    )
    raw = ex.call(
        backup_name_mover_experiment_fn, ablation, MOVERS, "end", call=call, model=b.model
    )
    expected_result = backup_name_mover_experiment(ablation, MOVERS, "end")
    expected = _pack(expected_result)
    n = expected_result.dla_before.numel()

    def unchanged():
        out = expected.clone()
        out[n : 2 * n] = out[:n]
        return out

    mistakes = {
        "knocked_out_everywhere": lambda: _pack(
            backup_name_mover_experiment(ablation, MOVERS, None)
        ),
        "zero_ablation": lambda: _zero_knockout(ablation, MOVERS, "end"),
        "after_equals_before": unchanged,
    }
    ex.expect_tensor(
        _pack(raw),
        expected,
        call=call + "  as [dla_before, dla_after, logit_diff_before, logit_diff_after]",
        mistakes=mistakes,
        atol=1e-3,
    )
    ex.passed(
        f"logit diff {expected_result.logit_diff_before:.2f} -> {expected_result.logit_diff_after:.2f}, "
        f"naive prediction {expected_result.naive_prediction:.2f}"
    )


PERMUTATION = exercise(
    "permutation_test",
    hint="statistic = sum over groups g of n_g * ||mean_g - overall mean||^2 over the flattened "
    "[layer, head] importances; gen = torch.Generator().manual_seed(seed); each permutation "
    "recomputes it with labels[torch.randperm(len(labels), generator=gen)]; p = (1 + #{null >= "
    "observed}) / (1 + n_permutations).",
    diagnoses={
        "unweighted_statistic": "your statistic does not weight each group by its size n_g",
        "p_value_without_plus_one": "your p-value is #{null >= observed} / n_permutations; "
        "count the observed labelling as one of the permutations: (1 + #) / (1 + n)",
        "different_shuffles": "the statistic and group means are right but the null "
        "distribution differs: draw the permutations exactly as the docstring says, so "
        "results are reproducible from the seed",
    },
)


def _stat(values: Tensor, labels: Tensor, n_groups: int, weighted: bool = True) -> Tensor:
    flat = values.reshape(values.shape[0], -1)
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    counts = onehot.sum(0)
    means = (onehot.T @ flat) / counts[:, None]
    weights = counts[:, None] if weighted else torch.ones_like(counts)[:, None]
    return (weights * (means - flat.mean(0)) ** 2).sum()


def _pack_test(result: object) -> Tensor | object:
    fields = ("statistic", "p_value", "group_means", "null")
    if not all(hasattr(result, f) for f in fields):
        return result
    return torch.cat(
        [
            torch.tensor([float(result.statistic), float(result.p_value)]),
            torch.as_tensor(result.group_means).float().flatten(),
            torch.as_tensor(result.null).float().flatten(),
        ]
    )


@one_thread()
def test_permutation_test(permutation_test_fn: Callable) -> None:
    """Check ``permutation_test(importance, labels, n_permutations=1000, seed=0) -> PermutationTest``."""
    ex = PERMUTATION
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])  # unequal group sizes
    importance = torch.randn(12, 3, 4, generator=gen) + 0.8 * labels[:, None, None].float()
    n_perm, seed = 200, 5
    call = (
        f"permutation_test(importance [12, 3, 4], labels {labels.tolist()}, "
        f"n_permutations={n_perm}, seed={seed})"
    )
    raw = ex.call(permutation_test_fn, importance.clone(), labels.clone(), n_perm, seed, call=call)
    expected_result = permutation_test(importance, labels, n_perm, seed)
    expected = _pack_test(expected_result)
    got = _pack_test(raw)

    def unweighted():
        observed = _stat(importance, labels, 3, weighted=False)
        shuffle = torch.Generator().manual_seed(seed)
        null = torch.stack(
            [
                _stat(importance, labels[torch.randperm(12, generator=shuffle)], 3, weighted=False)
                for _ in range(n_perm)
            ]
        )
        p = (1 + int((null >= observed).sum())) / (1 + n_perm)
        return torch.cat(
            [torch.tensor([float(observed), p]), expected_result.group_means.flatten(), null]
        )

    def without_plus_one():
        out = expected.clone()
        out[1] = int((expected_result.null >= expected_result.statistic).sum()) / n_perm
        return out

    def other_shuffles():
        if not isinstance(got, Tensor) or got.shape != expected.shape:
            return None
        head = 2 + expected_result.group_means.numel()
        same_start = torch.allclose(got[[0]], expected[[0]], atol=1e-4) and torch.allclose(
            got[2:head], expected[2:head], atol=1e-4
        )
        return got if same_start else None

    mistakes = {
        "unweighted_statistic": unweighted,
        "p_value_without_plus_one": without_plus_one,
        "different_shuffles": other_shuffles,
    }
    ex.expect_tensor(
        got,
        expected,
        call=call + "  as [statistic, p_value, group_means..., null...]",
        mistakes=mistakes,
        atol=1e-4,
    )
    ex.passed(f"statistic {expected_result.statistic:.2f}, p = {expected_result.p_value:.3f}")

"""Checkers for section 6, further topics: backup name movers and the permutation test across templates.

Expected values come from `ioi.circuit.backup_name_mover_experiment` and
`ioi.circuit.permutation_test`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens.utilities import get_act_name

from ioi.checks.core import AnyOf, exercise, one_thread
from ioi.checks.replication import _ablation
from ioi.circuit import BackupResult, backup_name_mover_experiment, permutation_test
from ioi.circuit.ablation import keep_masks, logit_diff_with_hooks, replace_where
from ioi.heads import per_head_logit_diffs

BACKUP = exercise(
    "backup_name_mover_experiment",
    hint="build hook_z hooks that replace the name movers' output by its template mean at "
    "word_idx[at] only (keep_masks and replace_where from ioi.circuit.ablation help); record "
    "per_head_logit_diffs at end without and with the hooks, and the mean logit difference "
    "without and with them; return a BackupResult.",
    diagnoses={
        "knocked_out_everywhere": "the name movers were replaced at every position; knock them "
        "out only at `at` (the paper: at end)",
        "after_equals_before": "dla_after equals dla_before: the run you read the second "
        "attribution from did not have the knockout hooks on",
        "ignored_positions": "the attributions are read at the last column of the padded "
        "batch; read them at each prompt's word_idx['end']",
        "ignored_name_movers": "you knocked out other heads than the `name_movers` you were given",
        "ignored_at": "the name movers were knocked out at 'end' whatever `at` asked for; "
        "knock them out at word_idx[at]",
        "direct_effects_summed": "your logit difference is the sum of the heads' direct "
        "attributions; measure it from the model's logits (it also contains the embeddings, "
        "the MLPs, the biases and every indirect effect)",
        "none_at_raised": "at=None raised: with at=None the name movers are knocked out at "
        "every position, which keep_masks spells as None for the head ({head: None}), not as "
        "a position key inside a tuple ((None,))",
        "stale_ln_scale": "dla_after divides by the final layer norm's scale of the run "
        "*without* the knockout; the knockout changes the residual stream and so its scale: "
        "attribute the knocked-out run with its own cache",
    },
    shared=("zero_ablation", "global_mean_ablation", "swapped_fields", "wrong_heads_recorded"),
)

BACKUP_FIELDS = ("dla_before", "dla_after", "logit_diff_before", "logit_diff_after")


def knockout_variant(
    ablation,
    heads,
    at: str | None,
    *,
    values: str = "template",
    dla_at: str = "end",
    stale_scale: bool = False,
) -> SimpleNamespace:
    """The experiment's four fields, with switches for the mistakes: ``values`` ``"zero"`` or
    ``"global"`` (one mean over all templates), ``dla_at="last"`` (the last column),
    ``stale_scale`` (dla_after divided by the unablated run's layer-norm scale)."""
    model, ds, means = ablation.model, ablation.ds, ablation.means
    n_pos = ds.toks.shape[1]
    rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx])
    masks = keep_masks(model, ds, {h: None if at is None else (at,) for h in heads})

    def replacement(layer: int) -> Tensor:
        z = means.z[layer]
        if values == "zero":
            return torch.zeros(1)
        if values == "global":
            return z.mean(0, keepdim=True)[:, :n_pos]
        return z[rows][:, :n_pos]

    hooks = [
        (get_act_name("z", layer), replace_where(mask, replacement(layer)))
        for layer, mask in enumerate(masks)
        if mask.any()
    ]
    end = ds.word_idx["end"] if dla_at == "end" else torch.full((ds.N,), n_pos - 1)
    names = [get_act_name("z", lay) for lay in range(model.cfg.n_layers)]
    names.append("ln_final.hook_scale")

    def run(hook_list):
        with torch.no_grad(), model.hooks(fwd_hooks=hook_list):
            return model.run_with_cache(ds.toks, names_filter=names)[1]

    before, after = run([]), run(hooks)
    if stale_scale:
        scale = {"ln_final.hook_scale": before["ln_final.hook_scale"]}
        after = ActivationCache({**after.cache_dict, **scale}, model)

    return SimpleNamespace(
        dla_before=per_head_logit_diffs(model, before, ds.answer_tokens, end).cpu(),
        dla_after=per_head_logit_diffs(model, after, ds.answer_tokens, end).cpu(),
        logit_diff_before=float(logit_diff_with_hooks(model, ds).mean()),
        logit_diff_after=float(logit_diff_with_hooks(model, ds, hooks).mean()),
    )


@one_thread()
def test_backup_name_mover_experiment(backup_name_mover_experiment_fn: Callable) -> None:
    """Check ``backup_name_mover_experiment(ablation, name_movers, at="end") -> BackupResult``."""
    ex, (b, ablation) = BACKUP, _ablation()
    cases = (
        ([(1, 0), (1, 1)], "end"),
        ([(2, 1), (1, 3)], "end"),
        ([(0, 1), (0, 3)], "S2"),
        ([(2, 0), (1, 2), (2, 0)], "end"),  # a head named twice is ablated (and counted) once
        ([(1, 0), (2, 1)], None),  # at every position
    )
    for movers, at in cases:
        call = (
            f"backup_name_mover_experiment(ablation, name_movers={movers}, at={at!r})  "
            f"[{b.describe()}]"
        )
        raw = ex.call(
            backup_name_mover_experiment_fn,
            ablation,
            movers,
            at,
            call=call,
            model=b.model,
            raised_as="none_at_raised" if at is None else None,
        )
        expected: BackupResult = backup_name_mover_experiment(ablation, movers, at)
        others = [m for m, _ in cases if m != movers]

        def unchanged(e=expected):
            return SimpleNamespace(
                dla_before=e.dla_before,
                dla_after=e.dla_before,
                logit_diff_before=e.logit_diff_before,
                logit_diff_after=e.logit_diff_after,
            )

        mistakes = {
            "knocked_out_everywhere": lambda m=movers: knockout_variant(ablation, m, None),
            "zero_ablation": lambda m=movers, a=at: knockout_variant(ablation, m, a, values="zero"),
            "global_mean_ablation": lambda m=movers, a=at: knockout_variant(
                ablation, m, a, values="global"
            ),
            "after_equals_before": unchanged,
            "ignored_positions": lambda m=movers, a=at: knockout_variant(
                ablation, m, a, dla_at="last"
            ),
            "ignored_name_movers": lambda a=at, o=others: AnyOf(
                knockout_variant(ablation, m, a) for m in o
            ),
            "ignored_at": lambda m=movers, a=at: (
                None if a == "end" else knockout_variant(ablation, m, "end")
            ),
            "stale_ln_scale": lambda m=movers, a=at: knockout_variant(
                ablation, m, a, stale_scale=True
            ),
            "direct_effects_summed": lambda e=expected: AnyOf(
                [
                    SimpleNamespace(**{**vars(e), "logit_diff_after": float(e.dla_after.sum())}),
                    SimpleNamespace(
                        **{
                            **vars(e),
                            "logit_diff_before": float(e.dla_before.sum()),
                            "logit_diff_after": float(e.dla_after.sum()),
                        }
                    ),
                ]
            ),
        }
        ex.expect_record(raw, expected, BACKUP_FIELDS, call=call, mistakes=mistakes, atol=1e-3)
        ex.expect_heads(raw, expected, "ablated", call=call)
    result = backup_name_mover_experiment(ablation, cases[0][0], "end")
    ex.passed(
        f"logit diff {result.logit_diff_before:.2f} -> {result.logit_diff_after:.2f}, "
        f"naive prediction {result.naive_prediction:.2f}"
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
        "ignored_seed": "your null distribution is that of another seed: pass `seed` to the "
        "generator",
        "labels_not_renumbered": "the labels were used as group indices as they are; labels "
        "like [0, 3, 7] leave empty groups (NaN means). Renumber them 0 .. G-1 first "
        "(labels.unique(return_inverse=True))",
        "group_sums_not_means": "group_means holds the groups' sums; divide by each group's size",
        "strict_inequality": "your p-value counts null > observed; a shuffle that ties the "
        "observed statistic is as extreme as it, so count null >= observed",
        "unweighted_grand_mean": "your overall mean is the plain mean of the group means; with "
        "groups of unequal size it must be the mean over every prompt",
        "n_permutations_not_recorded": "n_permutations does not record the number of shuffles "
        "drawn: return the n_permutations you were given",
        "null_not_shuffled": "every null value equals the observed statistic: the labels were "
        "never shuffled. Compute each null value from labels[perm], the shuffled labels",
        "wrong_tail": "your p-value counts null <= observed; a large statistic is the extreme "
        "one here, so count null >= observed",
        "observed_in_null": "null holds the observed statistic as well as the n_permutations "
        "shuffled ones; the observed labelling enters only the p-value's + 1: return the "
        "n_permutations shuffled statistics alone",
        "f_statistic": "you computed an F statistic (between-group over within-group "
        "variance); the statistic asked is the between-group sum of squares, sum over groups "
        "of n_g * ||mean_g - overall mean||^2",
        "group_means_flattened": "group_means is [group, layer * head]: the means are right, "
        "but keep the importances' [layer, head] shape: [group, layer, head]",
    },
)

PERM_FIELDS = ("statistic", "p_value", "group_means", "null", "n_permutations")


def _stat(
    values: Tensor,
    labels: Tensor,
    n_groups: int,
    weighted: bool = True,
    grand: str = "prompts",
    f: bool = False,
) -> Tensor:
    flat = values.reshape(values.shape[0], -1)
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    counts = onehot.sum(0)
    means = (onehot.T @ flat) / counts[:, None]
    weights = counts[:, None] if weighted else torch.ones_like(counts)[:, None]
    overall = flat.mean(0) if grand == "prompts" else means.mean(0)
    between = (weights * (means - overall) ** 2).sum()
    if not f:
        return between
    within = ((flat - means[labels]) ** 2).sum()
    return (between / (n_groups - 1)) / (within / (len(labels) - n_groups))


def permutation_variant(
    importance: Tensor,
    labels: Tensor,
    n_perm: int,
    seed: int,
    *,
    weighted: bool = True,
    plus_one: bool = True,
    renumber: bool = True,
    sums: bool = False,
    strict: bool = False,
    grand: str = "prompts",
    recorded: int | None = None,
    f: bool = False,
) -> SimpleNamespace:
    """The permutation test with switches for the mistakes (``f``: the F statistic)."""
    if renumber:
        _, labels = labels.unique(return_inverse=True)
    n_groups = int(labels.max()) + 1
    observed = _stat(importance, labels, n_groups, weighted, grand, f)
    gen = torch.Generator().manual_seed(seed)
    null = torch.stack(
        [
            _stat(
                importance,
                labels[torch.randperm(len(labels), generator=gen)],
                n_groups,
                weighted,
                grand,
                f,
            )
            for _ in range(n_perm)
        ]
    )
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    total = torch.einsum("bg,blh->glh", onehot, importance)
    hits = int((null > observed).sum() if strict else (null >= observed).sum())
    return SimpleNamespace(
        statistic=float(observed),
        p_value=(1 + hits) / (1 + n_perm) if plus_one else hits / n_perm,
        group_means=total if sums else total / onehot.sum(0)[:, None, None],
        null=null,
        n_permutations=n_perm if recorded is None else recorded,
    )


@one_thread()
def test_permutation_test(permutation_test_fn: Callable) -> None:
    """Check ``permutation_test(importance, labels, n_permutations=1000, seed=0) -> PermutationTest``."""
    ex = PERMUTATION
    gen = torch.Generator().manual_seed(3)
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])  # unequal group sizes
    importance = torch.randn(12, 3, 4, generator=gen) + 0.8 * groups[:, None, None].float()
    # Four prompts in two pairs: a third of all shuffles give the observed grouping back,
    # so the null ties the observed statistic exactly and > differs from >=.
    pairs = torch.randn(4, 3, 4, generator=gen)
    cases = (
        (importance, groups, 200, 5),
        (importance, torch.tensor([0, 0, 0, 0, 0, 3, 3, 3, 7, 7, 7, 7]), 150, 11),
        (pairs, torch.tensor([0, 0, 1, 1]), 60, 2),
    )
    for importance, labels, n_perm, seed in cases:
        call = (
            f"permutation_test(importance {list(importance.shape)}, labels {labels.tolist()}, "
            f"n_permutations={n_perm}, seed={seed})"
        )
        raw = ex.call(
            permutation_test_fn, importance.clone(), labels.clone(), n_perm, seed, call=call
        )
        expected = permutation_test(importance, labels, n_perm, seed)
        have = SimpleNamespace(**{f: getattr(raw, f, None) for f in PERM_FIELDS})

        def other_shuffles(e=expected, have=have, raw=raw):
            try:  # right statistic and group means, another null: a different generator
                same = abs(float(have.statistic) - e.statistic) < 1e-4 and torch.allclose(
                    torch.as_tensor(have.group_means).float(), e.group_means, atol=1e-4
                )
            except (TypeError, ValueError, RuntimeError):
                return None
            return raw if same else None

        def variant(lab=labels, n=n_perm, s=seed, imp=importance, **how):
            return permutation_variant(imp, lab, n, s, **how)

        mistakes = {
            "unweighted_statistic": lambda v=variant: v(weighted=False),
            "p_value_without_plus_one": lambda v=variant: v(plus_one=False),
            "ignored_seed": lambda v=variant, s=seed: AnyOf(
                v(s=other) for other in (0, 1, 42) if other != s
            ),
            "labels_not_renumbered": lambda v=variant, lab=labels: (
                None
                if bool((lab.unique() == torch.arange(len(lab.unique()))).all())
                else v(renumber=False)
            ),
            "group_sums_not_means": lambda v=variant: v(sums=True),
            "strict_inequality": lambda v=variant: v(strict=True),
            "unweighted_grand_mean": lambda v=variant: v(grand="groups"),
            "n_permutations_not_recorded": lambda v=variant, n=n_perm: AnyOf(
                v(recorded=other) for other in (1000, n + 1, n - 1, 0)
            ),
            "null_not_shuffled": lambda e=expected, n=n_perm: SimpleNamespace(
                **{
                    **{f: getattr(e, f) for f in PERM_FIELDS},
                    "null": torch.full((n,), e.statistic),
                    "p_value": 1.0,
                }
            ),
            "wrong_tail": lambda e=expected, n=n_perm: SimpleNamespace(
                **{
                    **{f: getattr(e, f) for f in PERM_FIELDS},
                    "p_value": (1 + int((e.null <= e.statistic).sum())) / (1 + n),
                }
            ),
            "observed_in_null": lambda e=expected: AnyOf(
                SimpleNamespace(**{**{f: getattr(e, f) for f in PERM_FIELDS}, "null": null})
                for null in (
                    torch.cat([torch.tensor([e.statistic]), e.null]),
                    torch.cat([e.null, torch.tensor([e.statistic])]),
                )
            ),
            "f_statistic": lambda v=variant: v(f=True),
            "group_means_flattened": lambda e=expected: SimpleNamespace(
                **{
                    **{f: getattr(e, f) for f in PERM_FIELDS},
                    "group_means": e.group_means.reshape(e.group_means.shape[0], -1),
                }
            ),
            "different_shuffles": other_shuffles,
        }
        ex.expect_record(raw, expected, PERM_FIELDS, call=call, mistakes=mistakes, atol=1e-4)
    result = permutation_test(cases[0][0], groups, 200, 5)
    ex.passed(f"statistic {result.statistic:.2f}, p = {result.p_value:.3f}")

# %% [markdown]
# # 6. Further: backups, signals, and one circuit or many
#
# Three questions the paper raised that a first pass leaves open:
#
# 1. **Backup heads.** Knock out the name movers and GPT-2 small still does IOI almost as well:
#    other heads start copying the IO. What compensates, and by how much?
# 2. **What does the moved signal say?** The S-inhibition heads tell the name movers which name
#    to avoid. Do they say "the token John" or "the name at position 2"? The paper separates a
#    *token* signal from a *positional* signal.
# 3. **One circuit or several?** The dataset mixes templates and both name orders. Does the
#    model use the same heads for all of them?

# %% tags=["module"]
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from ioi.circuit import BackupResult, MeanAblation, PermutationTest
from ioi.circuit.ablation import keep_masks, logit_diff_with_hooks, replace_where
from ioi.edges import Edge
from ioi.edges.runs import receiver_hook, split_inputs
from ioi.head import Head
from ioi.heads import per_head_logit_diffs
from ioi.patching import PatchResult
from ioi.statistics import Estimate

# %%
import os

import plotly.express as px

import ioi.checks as checks
import ioi.patching as patching
from ioi.circuit import (
    PathPatchingOracle,
    compare_groups,
    gpt2_small_circuit,
    head_importance_per_prompt,
)
from ioi.circuit.compare import group_labels
from ioi.dataset import IOIDataset
from ioi.edges import EdgeGraph, edge_attribution, exact_edge_patching
from ioi.heads import ioi_attention
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.models import load_model
from ioi.reference import provenance, reference_figures

torch.set_grad_enabled(False)
MODEL_NAME = os.environ.get("IOI_MODEL", "toy")
model = load_model(MODEL_NAME, device="auto")
REFERENCE = reference_figures()
GPT2 = MODEL_NAME.startswith("gpt2")

N = 48
ds = IOIDataset(N=N, prompt_type="mixed", seed=5, tokenizer=model)
abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
ablation = MeanAblation.build(model, ds, abc)
# The heads that write the answer, and the heads whose output they read (sections 2 and 4):
# the paper's classes on GPT-2 small; measured here on any other model.
if GPT2:
    paper = gpt2_small_circuit()
    movers, movers_at = list(paper.heads["name_mover"]), "end"
    signal_heads, signal_at = list(paper.heads["s_inhibition"]), "end"
else:
    _, cache = model.run_with_cache(ds.toks)
    dla = per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"]).cpu()
    ranked = dla.flatten().argsort(descending=True)[:2].tolist()
    movers, movers_at = [Head(*divmod(i, model.cfg.n_heads)) for i in ranked], "end"
    s2_to_io = ioi_attention(model, ds, "S2", "IO")[0]  # layer 0
    signal_heads = [Head(0, h) for h in range(model.cfg.n_heads) if s2_to_io[h] > 0.5]
    signal_at = "S2"
print(
    f"movers {', '.join(map(str, movers))} at {movers_at}; "
    f"signal heads {', '.join(map(str, signal_heads))} at {signal_at}"
)

# %% [markdown]
# ## Backup name movers
#
# Knock the movers out **at `end` only** (their output there replaced by its mean over the
# ABC prompts of the same template), then compare every head's direct logit attribution before
# and after. With no backup, the logit difference would fall by exactly what the movers wrote
# directly: the *naive prediction*. Heads whose attribution *rises* after the knockout are
# backups.
#
# ### Exercise: `backup_name_mover_experiment`
#
# **Difficulty:** ●●●○○ · **Time:** about 20 minutes
#
# `keep_masks(model, ds, {head: (at,) for head in heads})` gives, per layer, a `[batch, pos,
# head]` mask that is True at those heads and positions; `replace_where(mask, values)` is a
# `hook_z` hook writing `values` where the mask is True. The template means for layer `l` are
# `means.z[l][rows]` with `rows = [means.row_of[int(t)] for t in ds.template_idx]`, cut to
# the dataset's width. Record attributions with `per_head_logit_diffs` at `end`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Two runs, one with the knockout hooks and one without; read the same four numbers from
# each. Knock out at `at` only, with the template means (not zeros).
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `masks = keep_masks(model, ds, {h: (at,) for h in name_movers})`; hooks
# `(get_act_name("z", layer), replace_where(mask, means.z[layer][rows][:, :n_pos]))` for the
# layers whose mask has any True; DLA via `model.run_with_cache` inside `model.hooks(...)` and
# `per_head_logit_diffs(..., ds.word_idx["end"])`; logit differences via
# `logit_diff_with_hooks(model, ds, hooks).mean()`.
#
# </details>


# %%
def backup_name_mover_experiment(
    ablation: MeanAblation, name_movers: Sequence[tuple[int, int]], at: str | None = "end"
) -> BackupResult:
    """Knock out ``name_movers`` at ``at`` (template means) and record every head's DLA before and after.

    ``ablated`` lists each knocked-out head once, even if ``name_movers`` names it twice.
    """
    # EXERCISE: the same measurements with and without the knockout at `at`.
    # SOLUTION
    model, ds, means = ablation.model, ablation.ds, ablation.means
    heads = tuple(dict.fromkeys((int(layer), int(head)) for layer, head in name_movers))
    n_pos = ds.toks.shape[1]
    rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx])
    masks = keep_masks(model, ds, {head: None if at is None else (at,) for head in heads})
    hooks = [
        (get_act_name("z", layer), replace_where(mask, means.z[layer][rows][:, :n_pos]))
        for layer, mask in enumerate(masks)
        if mask.any()
    ]

    def attribution(hook_list: list) -> Tensor:
        with model.hooks(fwd_hooks=hook_list):
            _, cache = model.run_with_cache(ds.toks)
        return per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"]).cpu()

    return BackupResult(
        ablated=heads,
        dla_before=attribution([]),
        dla_after=attribution(hooks),
        logit_diff_before=float(logit_diff_with_hooks(model, ds).mean()),
        logit_diff_after=float(logit_diff_with_hooks(model, ds, hooks).mean()),
    )
    # END SOLUTION


# %%
checks.test_backup_name_mover_experiment(backup_name_mover_experiment)

# %% [markdown]
# **Predict, then run.** Knocking the movers out at `end` removes their direct attribution.
# Will the logit difference fall by that much (to the naive prediction), by less, or by more?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# By less: the cell prints the logit difference after the knockout above the naive
# prediction, and lists the heads whose attribution rises (on the toy, checked in
# `tests/course/test_claims.py`). Other heads step in: self-repair.
#
# </details>

# %%
backup = backup_name_mover_experiment(ablation, movers, movers_at)
print(
    f"logit diff {backup.logit_diff_before:.3f} -> {backup.logit_diff_after:.3f} after the "
    f"knockout; with no compensation it would be {backup.naive_prediction:.3f}"
)
print("heads that step in:", [(str(h), round(c, 3)) for h, c in backup.backup_heads(0.1)])
px.imshow(
    backup.change.numpy(),
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "head", "y": "layer", "color": "DLA after - before"},
    title="Change in each head's direct logit attribution when the movers are knocked out",
).show()
print(
    "GPT-2 small, 9.9 alone:",
    REFERENCE["ioi_dataset_n25_seed1_mixed"]["ablate_9.9_at_end_with_abc_mean"],
)
print(provenance("ioi_dataset_n25_seed1_mixed"))

# %% [markdown]
# By those published figures, knocking out head 9.9 at `end` in GPT-2 small should cost its
# 1.71 of direct attribution (naive prediction 1.10), yet the logit difference only falls from
# 2.81 to 2.63: the paper's backup name movers (10.10, 10.6, ...) take over. The toy's numbers
# are printed above the figure. Self-repair like this is why a single-head ablation
# underestimates a head's role, and why the paper's completeness criterion exists.
#
# ## Positional versus token signal
#
# Replace the signal heads' output, at their position, by their output on a **flipped**
# prompt, and see what survives:
#
# - **position flip** (`"ABB->BAB, BAB->ABB"`): the same two names, with the IO and S1 swapped
#   in the sentence. A head carrying *which token* is repeated is unchanged; a head carrying
#   *where* the repeated name first appeared now points at the wrong place.
# - **token flip** (`"ABB->CDD, BAB->DCD"`): two fresh names in the same slots. Same
#   positions, different tokens.
# - **both** (`"ABB->DCD, BAB->CDD"`).
#
# Each run is scored against the *original* answers.
#
# **Predict, then run.** The toy's signal heads attend from S2 to the IO (section 2). Which
# flip will hurt the logit difference: the position flip, the token flip, both?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The bar chart and the printed values answer it. On the toy the position flip leaves the
# logit difference close to the unpatched one and the token flip destroys most of it (checked
# in `tests/course/test_claims.py`): these heads carry *which name* the IO is, wherever it
# stands.
#
# </details>


# %%
def patched_logit_diff(heads: list[tuple[int, int]], position: str, source: IOIDataset) -> float:
    """Mean logit difference on ``ds`` with ``heads`` at ``position`` given their output on ``source``."""
    _, source_cache = model.run_with_cache(
        source.toks, names_filter=lambda name: name.endswith("z")
    )
    masks = keep_masks(model, ds, {head: (position,) for head in heads})
    hooks = [
        (get_act_name("z", layer), replace_where(mask, source_cache["z", layer]))
        for layer, mask in enumerate(masks)
        if mask.any()
    ]
    return float(logit_diff_with_hooks(model, ds, hooks).mean())


flips = {
    "none": None,
    "position": "ABB->BAB, BAB->ABB",
    "token": "ABB->CDD, BAB->DCD",
    "both": "ABB->DCD, BAB->CDD",
}
signal = {
    name: patched_logit_diff(
        signal_heads, signal_at, ds if rule is None else ds.gen_flipped_prompts(rule)
    )
    for name, rule in flips.items()
}
print({name: round(value, 3) for name, value in signal.items()})
print(ds.sentences[0])
print(ds.gen_flipped_prompts(flips["position"]).sentences[0], "  <- position flip")
print(ds.gen_flipped_prompts(flips["token"]).sentences[0], "  <- token flip")
px.bar(
    x=list(signal),
    y=list(signal.values()),
    labels={"x": "signal heads' output taken from", "y": "logit diff (original answers)"},
    title=f"Patching {signal_heads} at {signal_at} from flipped prompts",
).show()

# %% [markdown]
# **Reading it.** On the toy the signal heads carry a **token** signal (the printed values):
# the output says "the IO is Mary" wherever Mary stands. That fits what they do: they copy
# the unrepeated name into S2's stream. The paper reports that GPT-2 small's S-inhibition
# heads carry both kinds, and that the **positional** signal (where the duplicated name first
# appeared, relative to the IO) is the larger. Two models, two encodings of "which name to
# avoid", and one experiment to tell them apart. With `IOI_MODEL=gpt2-small` this cell patches
# the S-inhibition heads at `end`.
#
# ## One circuit or several?
#
# Score each head's importance on each prompt separately (the drop in logit difference when
# its output takes the ABC value, as a fraction of the IOI-ABC gap:
# `ioi.circuit.head_importance_per_prompt`), then ask whether prompts of different groups
# (BABA vs ABBA, or template by template) use the heads differently. A **permutation test**
# answers without assuming any distribution: if the group labels did not matter, shuffling
# them across prompts would give differences as large as the real one.
#
# ### Exercise: `permutation_test`
#
# **Difficulty:** ●●●○○ · **Time:** about 20 minutes
#
# The statistic is the between-group sum of squares of mean head importance,
# $\sum_g n_g \lVert \bar{x}_g - \bar{x} \rVert^2$ over all `layer * head` entries. Draw
# permutations with `gen = torch.Generator().manual_seed(seed)` and, each time,
# `labels[torch.randperm(len(labels), generator=gen)]`. The p-value is
# $(1 + \#\{\text{null} \ge \text{observed}\}) / (1 + \text{n\_permutations})$: the observed
# labelling counts as one of the permutations, so p is never 0. Return a
# `PermutationTest(statistic, p_value, n_permutations, group_means, null)` with `group_means`
# of shape `[group, layer, head]`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Labels can be any integers (`[0, 3, 7]`): number the groups 0 .. G-1 first. Use the seed you
# are given, and draw the permutations exactly as described, so that results reproduce.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `_, labels = labels.unique(return_inverse=True)`; a helper computing the statistic from
# one-hot labels (`means = onehot.T @ flat / counts`); `observed = stat(labels)`; `null =
# torch.stack([stat(labels[torch.randperm(n, generator=gen)]) for _ in range(n_permutations)])`;
# `p = (1 + (null >= observed).sum()) / (1 + n_permutations)`.
#
# </details>


# %%
def permutation_test(
    importance: Tensor,
    labels: Int[Tensor, " batch"],
    n_permutations: int = 1000,
    seed: int = 0,
) -> PermutationTest:
    """Do groups of prompts use heads differently? Shuffle the labels, recompute the statistic."""
    # EXERCISE: the statistic, observed and under label shuffles; the p-value; the group means.
    # SOLUTION
    labels = labels.cpu().long()
    _, labels = labels.unique(return_inverse=True)  # groups numbered 0 .. G-1
    n_groups = int(labels.max()) + 1
    flat = importance.reshape(importance.shape[0], -1)  # [batch, layer * head]

    def statistic(group_of: Tensor) -> Tensor:
        onehot = torch.nn.functional.one_hot(group_of, n_groups).float()  # [batch, group]
        counts = onehot.sum(0)
        means = (onehot.T @ flat) / counts[:, None]  # [group, layer * head]
        return (counts[:, None] * (means - flat.mean(0)) ** 2).sum()

    observed = statistic(labels)
    gen = torch.Generator().manual_seed(seed)
    null = torch.stack(
        [
            statistic(labels[torch.randperm(len(labels), generator=gen)])
            for _ in range(n_permutations)
        ]
    )
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    group_means = torch.einsum("bg,blh->glh", onehot, importance) / onehot.sum(0)[:, None, None]
    p_value = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    return PermutationTest(float(observed), p_value, n_permutations, group_means, null)
    # END SOLUTION


# %%
checks.test_permutation_test(permutation_test)

# %% [markdown]
# **Predict, then run.** BABA and ABBA prompts put the names in opposite orders. Will the
# permutation test find that the two families use the heads differently?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The cell prints the statistic and the p-value for families and for templates. Read the
# p-value against the sample size: 48 prompts over the number of template groups the cell
# prints leaves only a few prompts per group for the template-level test.
#
# </details>

# %%
importance = head_importance_per_prompt(model, ds, abc)  # [batch, layer, head]
for by in ("family", "template"):
    group_of, names = group_labels(ds, by)
    test = permutation_test(importance, group_of, n_permutations=500, seed=0)
    print(f"by {by}: {len(names)} groups, statistic {test.statistic:.3f}, p = {test.p_value:.3f}")
family_of, family_names = group_labels(ds, "family")
family_test = permutation_test(importance, family_of, n_permutations=500, seed=0)
px.imshow(
    family_test.group_means.numpy(),
    facet_col=0,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "head", "y": "layer", "color": "importance"},
    title="Mean head importance: " + ", ".join(f"{i}: {n}" for i, n in enumerate(family_names)),
).show()

# %% [markdown]
# The library's `compare_groups` goes one step further: it discovers a circuit on each group
# separately (recursive path patching, section 4) and reports how much the circuits overlap
# (Jaccard index: shared heads over all heads), together with the same permutation test.

# %%
oracle = PathPatchingOracle(model, ds, abc)
comparison = compare_groups(oracle, threshold=0.03, by="family", n_permutations=200)
print("groups:", comparison.groups)
print("Jaccard overlap of the discovered circuits:\n", comparison.jaccard)
for group, found in zip(comparison.groups, comparison.circuits, strict=True):
    print(f"--- {group}\n{found.circuit.describe() if found.circuit else '(no head passes)'}")

# %% [markdown]
# **Reading it.** A small p-value says the groups differ *somewhere*; the group means and the
# Jaccard overlap say where and how much. A high overlap with a few heads changing roles is
# one circuit with variations; a low overlap would be several mechanisms sharing an output.
# Keep the sample sizes in mind: a few dozen prompts split over thirty templates leaves one
# or two prompts per template on average, so template-level results are noisy (raise `N` on
# a GPU).

# %% [markdown]
# ## Edges: attribution patching one edge at a time
#
# A head's importance mixes everything it does: an edge says *which reader* its output
# matters to. The residual stream is a sum, so the input of a receiver `v` (a head's query,
# key or value input, an MLP's input, or the final residual that becomes the logits) is the
# sum of every earlier sender's output `a_u`. Patching the edge `u -> v` adds the sender's
# change `a_u(corrupted) - a_u(clean)` to `v`'s input only, and leaves every other reader of
# `a_u` clean. Exact edge patching (`ioi.edges.exact_edge_patching`) runs the model once per
# edge (in stacked batches): the toy has a few hundred edges (`len(graph.edges)`), GPT-2
# small tens of thousands.
#
# **Edge attribution patching** (EAP) expands the metric to first order around the clean
# run. Seen as a function of `v`'s input alone, the metric moves by about
#
# $$M(\text{patched}) - M(\text{clean}) \approx \sum_{\text{pos}} \big(a_u(\text{corrupted}) - a_u(\text{clean})\big) \cdot \frac{\partial M}{\partial\, \text{input}_v}\Big|_\text{clean}$$
#
# the first term of a Taylor series whose next terms involve the second derivative and the
# square of the change. The gradient is the same for every sender into `v`, so one backward
# pass of the clean run scores every edge at once: that is the whole appeal. The sum runs over
# positions because the edge carries the change at every position, each read by `v` there; the
# dot product runs over `d_model`. With a per-prompt metric each prompt's score uses that
# prompt's own gradient, and the edge's score is their mean over prompts.
#
# ### Exercise: `eap_edge_score`
#
# **Difficulty:** ●●●○○ · **Time:** about 25 minutes
#
# Score one edge (`edge.pos` is None: every position). `metric` returns one value per prompt
# ([batch]); return the mean over prompts of each prompt's score, as a 0-d tensor. The sender's
# change comes from caches of the two runs: the embeddings' from `blocks.0.hook_resid_pre`, an
# MLP's from `hook_mlp_out`, head `h`'s from `(z' - z)[:, :, h] @ W_O[layer, h]`. The
# receiver's input is the activation at `receiver_hook(model, edge.receiver)`; for q, k and v
# it exists, split per head (`[batch, pos, head, d_model]`), only inside `with
# split_inputs(model):`, which also restores the model's flags afterwards.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Three runs: two caches without gradients, then one run of the *clean* prompts with
# gradients on (`torch.enable_grad()`, as this notebook turned them off), in which a hook
# keeps the receiver's input so that `torch.autograd.grad` can differentiate with respect to
# it. Sum the per-prompt metric before differentiating: prompts do not interact, so each
# prompt's row of the gradient is its own.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `delta` ([batch, pos, d_model]) from the caches; a hook `(name, keep)` that stores its
# activation and returns it; `value = metric(model(clean_tokens)).sum()` under
# `torch.enable_grad()`, `split_inputs(model)` and `model.hooks(...)`; `(grad,) =
# torch.autograd.grad(value, kept)`; `grad[:, :, edge.receiver.head]` when it has a head axis;
# `(delta * grad).sum((1, 2)).mean()`.
#
# </details>


# %%
def eap_edge_score(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, " batch"]],
    edge: Edge,
) -> Float[Tensor, ""]:
    """EAP score of ``edge``: (a_u(corrupted) - a_u(clean)) . dM/d input_v at the clean run,
    summed over positions and d_model, averaged over prompts."""
    # EXERCISE: the sender's change from two caches, the receiver's input gradient on the clean
    # EXERCISE: run, their dot product summed over positions and averaged over prompts.
    # SOLUTION
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupted_cache = model.run_with_cache(corrupted_tokens)
    sender = edge.sender
    if sender.kind == "head":
        dz = corrupted_cache["z", sender.layer] - clean_cache["z", sender.layer]
        delta = dz[:, :, sender.head] @ model.W_O[sender.layer, sender.head]
    else:
        name = "resid_pre" if sender.kind == "embed" else "mlp_out"
        delta = corrupted_cache[name, sender.layer] - clean_cache[name, sender.layer]
    kept: dict[str, Tensor] = {}

    def keep(activation: Tensor, hook: HookPoint) -> Tensor:
        activation = activation if activation.requires_grad else activation.requires_grad_()
        kept["input"] = activation
        return activation

    hook_name = receiver_hook(model, edge.receiver)
    with torch.enable_grad(), split_inputs(model), model.hooks(fwd_hooks=[(hook_name, keep)]):
        value = metric(model(clean_tokens)).sum()  # each prompt's gradient in its own row
        (grad,) = torch.autograd.grad(value, kept["input"])
    if grad.ndim == 4:  # [batch, pos, head, d_model]: this receiver head's input
        grad = grad[:, :, edge.receiver.head]
    return (delta * grad).sum((1, 2)).mean()  # positions and d_model, then prompts
    # END SOLUTION


# %%
checks.test_eap_edge_score(eap_edge_score)

# %% [markdown]
# **Predict, then run.** The next cell scores the edges that the library's EAP ranks highest
# on this notebook's prompts, with your function and with exact edge patching. Will EAP get
# the signs right? The sizes?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The table prints both columns edge by edge, and the line under it how many signs agree. On
# the toy the two edges where the columns part most are edges into a query or a key, whose
# effect passes through a softmax: exact patching finds them many times larger than EAP does
# (checked in `tests/course/test_claims.py`). A softmax far from its linear range has a
# gradient that says little about a large change, so EAP can call an edge minor that exact
# patching finds large.
#
# </details>

# %%
end = ds.word_idx["end"]
clean_ld = float(logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, positions=end))
abc_ld = float(logits_to_ave_logit_diff(model(abc.toks), ds.answer_tokens, positions=end))
per_prompt_metric = make_ioi_metric(clean_ld, abc_ld, ds.answer_tokens, end, reduce="none")
graph = EdgeGraph.from_model(model)
library_eap = edge_attribution(
    model, graph, ds.toks, abc.toks, lambda logits: per_prompt_metric(logits).mean()
)
shown = graph.subset(library_eap.top(6))
exact_scores = exact_edge_patching(
    model, shown, ds.toks, abc.toks, lambda logits: per_prompt_metric(logits).mean()
)
mine = [float(eap_edge_score(model, ds.toks, abc.toks, per_prompt_metric, e)) for e in shown.edges]
for edge, estimate, exact_score in zip(
    shown.edges, mine, exact_scores.scores.tolist(), strict=True
):
    print(f"{str(edge):22} EAP {estimate:+.4f}   exact {exact_score:+.4f}")
same_sign = sum((a > 0) == (b > 0) for a, b in zip(mine, exact_scores.scores.tolist(), strict=True))
print(f"signs agree on {same_sign} of {len(mine)} edges")

# %% [markdown]
# **Reading it.** EAP is a screen: one backward pass ranks every edge, and exact patching
# confirms the few that matter. The first-order term is exact where the metric is linear in
# the receiver's input (the logit difference is linear in the final residual, but the
# normalised metric here is read after the final layer norm, which is not); everywhere else
# its error grows with the square of the change. `ioi.edges.compare_edges` reports the
# agreement of a whole scoring with exact patching (Pearson, Spearman, top-k overlap), and
# EAP-IG (`edge_attribution(..., method="eap-ig")`) averages the gradient along the way from
# the clean to the corrupted embeddings, which helps where a single gradient misleads.
#
# ## Reading intervals
#
# Every number in this course is a mean over a few dozen prompts. Other prompts of the same
# templates would give another mean; a **confidence interval** says how far. The percentile
# bootstrap makes one without assuming a distribution: draw the prompts again with
# replacement, many times, recompute the mean each time, and read the middle `level` of those
# means. A 95% interval is a statement about the *procedure*: intervals built this way cover
# the true mean in about 95% of samples. It does not say the true mean lies inside with 95%
# probability, it says nothing about a single prompt (one prompt's effect can lie far
# outside), and it says nothing about prompts from another distribution (other templates,
# another model).
#
# ### Exercise: `bootstrap_estimate`
#
# **Difficulty:** ●●○○○ · **Time:** about 15 minutes
#
# `per_prompt` holds one value per prompt on its **last** axis (`[*grid, batch]`, as
# `PatchResult.per_prompt`). Return an `Estimate` with the mean over prompts, its standard
# error `std(ddof=1) / sqrt(n)`, and the percentile interval: draw every resample at once,
# `index = torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))`,
# use the *same* index table for every cell (so all cells are resampled on the same prompts),
# and take the `(1 - level) / 2` and `(1 + level) / 2` quantiles of the resampled means
# (`torch.quantile`). Fill `n`, `level`, `resamples` and `seed` too.
#
# <details><summary>Hint 1: a nudge</summary>
#
# `per_prompt[..., index]` has shape `[*grid, resample, batch]`; its mean over the last axis
# is every resample's mean for every cell.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `draws = per_prompt[..., index].mean(-1)`; `low = torch.quantile(draws, (1 - level) / 2,
# dim=-1)`, `high` likewise; `se = per_prompt.std(-1) / math.sqrt(n)`; `Estimate(mean, se, low,
# high, n, level, resamples=resamples, seed=seed)`.
#
# </details>


# %%
def bootstrap_estimate(
    per_prompt: Float[Tensor, "*grid batch"],
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Mean over prompts (the last axis), its standard error and a seeded percentile interval."""
    # EXERCISE: one [resample, batch] index table for every cell; quantiles of the means.
    # SOLUTION
    n = per_prompt.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, n, (resamples, n), generator=gen)  # [resample, batch]
    draws = per_prompt[..., index].mean(-1)  # [*grid, resample]
    low = torch.quantile(draws, (1 - level) / 2, dim=-1)
    high = torch.quantile(draws, (1 + level) / 2, dim=-1)
    se = per_prompt.std(-1) / math.sqrt(n)  # sample std (ddof 1)
    mean = per_prompt.mean(-1)
    return Estimate(mean, se, low, high, n, level, resamples=resamples, seed=seed)
    # END SOLUTION


# %%
checks.test_bootstrap_estimate(bootstrap_estimate)

# %% [markdown]
# Patch each head's output from the ABC run into the clean run (noising) with the per-prompt
# metric, so that the result keeps every prompt's effect, and compare your interval of each
# head's *change* (patched minus unpatched, prompt by prompt) with the library's.

# %%
heads_noised = patching.activation_patching(
    model,
    ds.toks,
    abc.toks,
    per_prompt_metric,
    patching.sweep(model, "z", ds.toks.shape[1]),
    mode="noise",
)
change_per_prompt = heads_noised.per_prompt - heads_noised.clean_per_prompt  # [layer, head, batch]
mine_estimate = bootstrap_estimate(change_per_prompt.cpu().double(), seed=0)
library = heads_noised.interval("change", seed=0)
print(library.describe())
print(
    "largest difference from the library's bounds:",
    f"{float(torch.maximum((mine_estimate.low - library.low).abs(), (mine_estimate.high - library.high).abs()).max()):.2g}",
)

# %% [markdown]
# ### Exercise: `significant_heads`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# Return the heads of a head-by-head `PatchResult` whose interval of the change excludes 0 (at
# the given `level`, `resamples` and `seed`), largest `|change|` first, as `Head(layer, head)`.
# This is what `result.significant(by="interval")` does; write it from `result.interval`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# An interval excludes 0 when it lies wholly above it *or* wholly below it.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `est = result.interval("change", level=level, resamples=resamples, seed=seed)`; `keep =
# (est.low > 0) | (est.high < 0)`; sort the `(layer, head)` pairs where `keep` holds by
# `-abs(result.change[layer, head])`.
#
# </details>


# %%
def significant_heads(
    result: PatchResult, level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> list[Head]:
    """Heads whose bootstrap interval of the change excludes 0, largest |change| first."""
    # EXERCISE: the interval of the change; keep those wholly above or below 0; sort.
    # SOLUTION
    est = result.interval("change", level=level, resamples=resamples, seed=seed)
    keep = (est.low > 0) | (est.high < 0)  # [layer, head]
    heads = [Head(int(layer), int(head)) for layer, head in keep.nonzero().tolist()]
    return sorted(heads, key=lambda h: -abs(float(result.change[h.layer, h.head])))
    # END SOLUTION


# %%
checks.test_significant_heads(significant_heads)

# %% [markdown]
# **Predict, then run.** Selecting heads by a threshold on the size of the change (10% of the
# clean-corrupted gap, `significant()`'s default) and by the interval: which heads will one
# keep and the other not?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The cell prints both lists and their differences. A head with a small change that every
# prompt agrees on passes the interval and fails the threshold; a head with a large mean
# carried by a few prompts can pass the threshold while its interval still reaches 0. Which of
# the two kinds the toy has, the printed lists say.
#
# </details>

# %%
by_interval = significant_heads(heads_noised)
by_threshold = [Head(r["layer"], r["head"]) for r in heads_noised.significant(0.1)]
print("interval excludes 0:", ", ".join(map(str, by_interval)) or "(none)")
print("|change| >= 10% of the gap:", ", ".join(map(str, by_threshold)) or "(none)")
print("only by interval:", [str(h) for h in by_interval if h not in by_threshold])
print("only by threshold:", [str(h) for h in by_threshold if h not in by_interval])
library_heads = [Head(r["layer"], r["head"]) for r in heads_noised.significant(by="interval")]
print("same as result.significant(by='interval'):", by_interval == library_heads)

# %% [markdown]
# **Reading it.** An interval that excludes 0 says the mean change is unlikely to be 0 *on
# prompts like these*; it does not say the effect is large (with many prompts a tiny, steady
# effect excludes 0), nor that it holds for every prompt. Testing every head at 95% also lets
# about one in twenty null heads through by chance: with many heads, expect a few false
# positives, and read the size of the change beside its interval.
#
# ## Where to go next
#
# - Run every notebook with `IOI_MODEL=gpt2-small` and compare with the paper's circuit
#   (`ioi/data/gpt2_small_ioi.json`).
# - Automated circuit discovery at the level of edges (ACDC) recovers the IOI circuit with an
#   ROC AUC of about 0.87 over GPT-2 small's ~33,000 edges, by the figures in `later_work` of
#   the reference file (printed below with their sources); compare with what
#   `ioi.circuit.discover_circuit` finds by thresholding.
# - Edge-level ablation changes faithfulness a lot (about 150% of the logit difference for
#   the paper's circuit, by the same file): how much do the toy model's numbers move under a
#   different ablation?

# %%
print(REFERENCE["later_work"])
print(provenance("later_work"))

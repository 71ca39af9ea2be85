# %% [markdown]
# # 7. Feature circuits: the same question, asked of SAE features
#
# Sections 2 to 6 found the circuit in units of **heads**. A head can do several things at
# once, so Marks et al. (2024, "Sparse Feature Circuits") ask the question again in units of
# **sparse autoencoder (SAE) features**: splice an SAE into the residual stream, so that the
# activation there is `x = decode(f) + error`, and score every feature `f_i` and every
# **error node** by its indirect effect on the IOI metric.
#
# The toy model ships with two TopK SAEs (SAELens `TopKSAE`s, 256 features, `k = 16`) on
# `blocks.1.hook_resid_pre` and `blocks.2.hook_resid_pre`: `ioi.features.load_toy_saes()`.
# Because the SAEs read the toy, this section always runs on the toy model, whatever
# `IOI_MODEL` says (for GPT-2 small, `ioi.features.load_pretrained_saes("gpt2-small-res-jb")`
# loads published SAEs, once they are in your Hugging Face cache).
#
# 1. The SAE forward pass, by hand.
# 2. How good a reconstruction is: fraction of variance explained.
# 3. Feature attribution by attribution patching, error node included.
# 4. One circuit or several: the overlap of two families' feature circuits.

# %% tags=["module"]
from __future__ import annotations

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor

# %%
import plotly.express as px

import ioi.checks as checks
from ioi.dataset import IOIDataset
from ioi.features import (
    compare_families,
    family_labels,
    feature_attribution,
    load_toy_saes,
    spliced,
)
from ioi.features.quality import dead_features, l0
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.models import load_model

torch.set_grad_enabled(False)
model = load_model("toy", device="cpu")  # the shipped SAEs read the toy (see above)
saes = load_toy_saes(device="cpu")
HOOK = "blocks.2.hook_resid_pre"
sae = saes[HOOK]
ds = IOIDataset(N=40, prompt_type="mixed", seed=11, tokenizer=model)
abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
_, cache = model.run_with_cache(ds.toks, names_filter=HOOK)
real = torch.arange(ds.toks.shape[1])[None] < ds.seq_lens[:, None]  # [batch, pos] not padding
x = cache[HOOK][real]  # [token, d_model]: every real token's residual stream
print(
    f"{HOOK}: {x.shape[0]} tokens of width {x.shape[1]}; SAE {sae.cfg.d_sae} features, k={sae.cfg.k}"
)

# %% [markdown]
# ## The SAE forward pass
#
# A TopK SAE encodes `x` in four steps, with its own parameters `W_enc [d_in, d_sae]`, `b_enc`,
# `W_dec [d_sae, d_in]` and `b_dec`:
#
# 1. subtract the decoder bias: `x - b_dec` (the SAE is centred on `b_dec`);
# 2. pre-activations: `(x - b_dec) @ W_enc + b_enc`;
# 3. these SAEs pick their `k` features as if every decoder row had norm 1
#    (`cfg.rescale_acts_by_decoder_norm`): multiply the pre-activations by `W_dec.norm(dim=-1)`;
# 4. keep the `k = sae.cfg.k` largest per token, ReLU them, and set every other feature to 0.
#
# Decoding is `(f / W_dec.norm(dim=-1)) @ W_dec + b_dec` (the rescaling undone).
#
# ### Exercise: `sae_encode`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# Return the feature activations `sae.encode(x)` would, without calling `sae.encode`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# `torch.topk(pre, k, dim=-1)` gives the values and indices of the `k` largest;
# `torch.zeros_like(pre).scatter(-1, indices, values)` puts them back in place. Read `k` from
# the SAE you are given: not every SAE has the toy's 16.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc`; if `sae.cfg.rescale_acts_by_decoder_norm`,
# `pre = pre * sae.W_dec.norm(dim=-1)`; `top = pre.topk(sae.cfg.k, dim=-1)`; return
# `torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())`.
#
# </details>


# %%
def sae_encode(sae: SAE, x: Float[Tensor, "token d_in"]) -> Float[Tensor, "token d_sae"]:
    """The TopK SAE's feature activations of ``x``, computed from its parameters."""
    # EXERCISE: centre on b_dec, project, rescale by the decoder norms, keep the top k.
    # SOLUTION
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc  # [token, d_sae]
    if sae.cfg.rescale_acts_by_decoder_norm:
        pre = pre * sae.W_dec.norm(dim=-1)
    top = pre.topk(sae.cfg.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    # END SOLUTION


# %%
checks.test_sae_encode(sae_encode)

# %% [markdown]
# **Predict, then run.** A TopK SAE keeps 16 features per token. Is its L0 (the mean number of
# non-zero features per token) exactly 16 on these prompts, or can it be less?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# It could be less: the ReLU after the top-k zeroes any of the 16 whose pre-activation is
# negative. On these prompts it is not: the L0 printed equals k (checked in
# `tests/course/test_claims_features.py`), so every token's 16 largest pre-activations are
# positive. The cell also prints the number of dead features (active on no token).
#
# </details>

# %%
f = sae_encode(sae, x)
x_hat = sae.decode(f)
print(
    f"L0 {l0(f):.2f} (k = {sae.cfg.k}); dead features {int(dead_features(f).sum())} of {sae.cfg.d_sae}"
)
px.histogram(
    x=(f != 0).float().mean(0).numpy(),
    nbins=40,
    labels={"x": "fraction of tokens on which the feature is active"},
    title=f"How often each of the {sae.cfg.d_sae} features fires ({HOOK})",
).show()

# %% [markdown]
# ## How good is the reconstruction?
#
# The **fraction of variance explained** compares the reconstruction's squared error with the
# activations' spread *over tokens*:
# $1 - \sum \lVert x - \hat{x} \rVert^2 / \sum \lVert x - \bar{x} \rVert^2$, where $\bar{x}$ is
# the mean activation over tokens (a vector of width `d_in`) and both sums run over every token
# and dimension. It is 1 for a perfect reconstruction and 0 for one no better than the mean.
#
# ### Exercise: `variance_explained`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# <details><summary>Hint 1: a nudge</summary>
#
# The mean is over the token axis (0), one number per dimension; the ratio is of two totals,
# not a mean of per-dimension ratios.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `total = (x - x.mean(0)).pow(2).sum()`; return `float(1 - (x - x_hat).pow(2).sum() / total)`.
#
# </details>


# %%
def variance_explained(x: Float[Tensor, "token d"], x_hat: Float[Tensor, "token d"]) -> float:
    """``1 - sum |x - x_hat|^2 / sum |x - mean_over_tokens(x)|^2``."""
    # EXERCISE: the residual sum of squares over the total sum of squares about the token mean.
    # SOLUTION
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - (x - x_hat).pow(2).sum() / total)
    # END SOLUTION


# %%
checks.test_variance_explained(variance_explained)

# %% [markdown]
# **Predict, then run.** Splicing the reconstruction in place of the activation (no error
# term) changes what the later layers read. Will the IOI logit difference stay close to the
# clean one?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The cell prints the variance explained and the logit difference with and without the
# reconstruction spliced in; `python -m ioi.features quality` tabulates both SAEs. A high
# variance explained does not promise the task survives: what matters is whether the part of
# `x` the SAE misses is the part the IOI circuit reads.
#
# </details>

# %%
clean_ld = float(
    logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, positions=ds.word_idx["end"])
)
with spliced(model, {HOOK: sae}, error_term=False):
    sae_ld = float(
        logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, positions=ds.word_idx["end"])
    )
print(f"variance explained {variance_explained(x, x_hat):.3f}")
print(f"logit diff clean {clean_ld:.3f}, with the reconstruction spliced in {sae_ld:.3f}")

# %% [markdown]
# ## Feature attribution, error node included
#
# With `x = decode(f) + error` at one hook point, a node (a feature at a position, or the error
# at a position) has the indirect effect `m(clean, node <- corrupted) - m(clean)`. Attribution
# patching estimates all of them from one clean forward and backward pass:
#
# $$\text{IE}(f_i) \approx \sum_\text{prompts} \frac{\partial m}{\partial f_i}\,(f_i^\text{corrupt} - f_i^\text{clean}),
# \qquad \text{IE}(\text{error}) \approx \sum_\text{prompts} \nabla_x m \cdot (e^\text{corrupt} - e^\text{clean}).$$
#
# The gradient is taken in the **clean** run. A feature's gradient is the activation's
# gradient mapped back through the decoder, `autograd.grad(sae.decode(f), f, grad_x)`; the
# error node's gradient is the activation's own. The error node must be a node: whatever the
# SAE fails to reconstruct still carries part of the effect, and leaving it out silently
# credits that part to nobody.
#
# ### Exercise: `feature_attribution_patching`
#
# **Difficulty:** ●●●○○ · **Time:** about 20 minutes
#
# Return a `[pos, d_sae + 1]` tensor: column `i < d_sae` is feature `i`, the last column the
# error node, each summed over the prompts (the metric is already a mean over prompts).
#
# <details><summary>Hint 1: a nudge</summary>
#
# The notebook turned gradients off: work inside `with torch.enable_grad():`. A hook at
# `hook_name` that returns `act.detach().requires_grad_(True)` (and keeps it) gives you a leaf;
# `torch.autograd.grad(metric(logits), leaf)` is the gradient you need (`.backward()` works too,
# but also fills every weight's `.grad`).
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# Corrupted activation from `model.run_with_cache(corrupted_tokens, names_filter=hook_name)`;
# clean activation and its gradient from the hooked clean run; `f = sae.encode(a)`,
# `e = a - sae.decode(f)` for both runs; `grad_f = torch.autograd.grad(sae.decode(leaf), leaf,
# grad)` with `leaf = f_clean.detach().requires_grad_(True)`; features
# `((f_corr - f_clean) * grad_f).sum(0)`, error `((e_corr - e_clean) * grad).sum(-1).sum(0)`;
# `torch.cat([features, error[:, None]], dim=-1)`.
#
# </details>


# %%
def feature_attribution_patching(
    model,
    sae: SAE,
    hook_name: str,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric,
) -> Float[Tensor, "pos node"]:
    """Attribution patching over the SAE's features and error node at ``hook_name``."""
    # EXERCISE: grad (clean run) * (corrupted - clean), for features and for the error node.
    # SOLUTION
    _, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=hook_name)
    a_corr = corrupted_cache[hook_name]
    kept = {}

    def keep(act, hook):
        kept["a"] = act.detach().requires_grad_(True)
        return kept["a"]

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[(hook_name, keep)]):
            value = metric(model(clean_tokens))
        # autograd.grad, not .backward(): only this gradient, none piled up in the weights
        (grad,) = torch.autograd.grad(value, kept["a"])
        a_clean = kept["a"].detach()
        f_clean, f_corr = sae.encode(a_clean).detach(), sae.encode(a_corr).detach()
        leaf = f_clean.clone().requires_grad_(True)
        (grad_f,) = torch.autograd.grad(sae.decode(leaf), leaf, grad)
    e_clean = a_clean - sae.decode(f_clean)
    e_corr = a_corr - sae.decode(f_corr)
    features = ((f_corr - f_clean) * grad_f).sum(0)  # [pos, d_sae]
    error = ((e_corr - e_clean) * grad).sum(-1).sum(0)  # [pos]
    return torch.cat([features, error[:, None]], dim=-1).detach()
    # END SOLUTION


# %%
checks.test_feature_attribution_patching(feature_attribution_patching)

# %% [markdown]
# **Predict, then run.** Patching the whole hook point, every position, from the corrupted
# run gives the corrupted run's metric: a total effect of 0 - 1 = -1. Will the attributions of
# all the nodes (features and error nodes) add up to about -1?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# No: the cell prints their sum, far from -1 (checked in `tests/course/test_claims_features.py`).
# Attribution patching is a first-order estimate around the clean run, and swapping every name
# moves the activations too far for one gradient to describe. Integrated gradients
# (`ioi.features.feature_attribution(..., method="ig")`, the gradient averaged along the path
# from clean to corrupted) add up to the whole hook point's effect by construction; the cell
# prints that sum too. The ranking of nodes is what a circuit needs, and the error nodes'
# share (printed) says how much of it the SAE leaves unexplained.
#
# </details>

# %%
end = ds.word_idx["end"]
ld_clean = logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, positions=end)
ld_abc = logits_to_ave_logit_diff(model(abc.toks), ds.answer_tokens, positions=end)
metric = make_ioi_metric(ld_clean, ld_abc, ds.answer_tokens, positions=end)
scores = feature_attribution_patching(model, sae, HOOK, ds.toks, abc.toks, metric)
error_share = float(scores[:, -1].abs().sum() / scores.abs().sum())
with torch.enable_grad():
    ig = feature_attribution(model, {HOOK: sae}, ds.toks, abc.toks, metric, method="ig", steps=10)
print(
    f"sum of all node attributions: attribution patching {float(scores.sum()):.3f}, "
    f"integrated gradients {float(ig.scores[HOOK].sum()):.3f}; whole hook point patched: -1"
)
print(f"error nodes' share of the total |attribution|: {error_share:.1%}")
top = scores.abs().flatten().argsort(descending=True)[:5]
for i in top.tolist():
    pos, col = divmod(i, scores.shape[1])
    name = "error" if col == sae.cfg.d_sae else f"feature {col}"
    print(f"  position {pos}, {name}: {float(scores[pos, col]):+.3f}")
px.imshow(
    scores[:, :-1].T.numpy(),
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    aspect="auto",
    labels={"x": "position", "y": "feature", "color": "IE (atp)"},
    title=f"Attribution of every feature at {HOOK}",
).show()

# %% [markdown]
# The library's `ioi.features.feature_attribution` does the same for several hook points at
# once (and integrated gradients, `method="ig"`, where the linear estimate is poor);
# `ioi.features.feature_circuit` keeps the nodes above a threshold and the edges between them.
#
# ## One circuit or several?
#
# Section 6 asked whether BABA and ABBA prompts use the same heads. Here: do they use the same
# features? Each family's circuit is its `top_n` nodes by `|IE|`; two circuits are compared by
# the **Jaccard index** of their node *sets*, `|A ∩ B| / |A ∪ B|`. (The library's
# `ioi.features.compare_families` adds a weighted Jaccard index and a seeded permutation test
# over random splits of the prompts, with p = (1 + #{as different}) / (1 + n_permutations).)
#
# ### Exercise: `circuit_jaccard`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# Given two families' attributions (any shape, the same for both), return the Jaccard index of
# their top-`top_n` node sets, nodes ranked by absolute value.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Flatten both, rank by `.abs()`, and compare *which* nodes are chosen (their flat indices), not
# how large they are.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `a = set(scores_a.flatten().abs().topk(top_n).indices.tolist())`, the same for `b`; return
# `len(a & b) / len(a | b)`.
#
# </details>


# %%
def circuit_jaccard(scores_a: Tensor, scores_b: Tensor, top_n: int) -> float:
    """Jaccard index of the top-``top_n`` nodes (by |score|) of two attributions."""
    # EXERCISE: the two node sets, then |A & B| / |A | B|.
    # SOLUTION
    a = set(scores_a.flatten().abs().topk(top_n).indices.tolist())
    b = set(scores_b.flatten().abs().topk(top_n).indices.tolist())
    return len(a & b) / len(a | b)
    # END SOLUTION


# %%
checks.test_circuit_jaccard(circuit_jaccard)

# %% [markdown]
# **Predict, then run.** BABA and ABBA prompts put the two names in opposite orders. Will
# the two families' top-20 feature circuits (integrated gradients, both SAEs) overlap much,
# and will the permutation test call them different?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The cell prints your Jaccard index beside the library's, the weighted index, the p-value over
# 200 seeded random splits of the prompts into groups of the same sizes, and the verdict
# (`ioi.features.compare_families`). A low Jaccard index alone does not make the families
# different: random halves of the same prompts also share few of their top nodes when the
# attributions are noisy, which is what the permutation test measures.
#
# </details>

# %%
with torch.enable_grad():
    attribution = feature_attribution(
        model, saes, ds.toks, abc.toks, metric, method="ig", steps=5, per_prompt=True
    )
labels = family_labels(ds)
comparison = compare_families(attribution, labels, top_n=20, n_permutations=200, seed=0)
shares = torch.cat([t.flatten(1) for t in attribution.per_prompt.values()], dim=1)
baba = torch.tensor([label == "BABA" for label in labels])
mine = circuit_jaccard(shares[baba].mean(0), shares[~baba].mean(0), 20)
((pair, theirs),) = comparison.test.jaccard.items()
print(f"Jaccard {pair}: yours {mine:.3f}, the library's {theirs:.3f}")
print(f"weighted Jaccard {comparison.test.weighted_jaccard[pair]:.3f}")
print(f"p = {comparison.p_value:.3f} over 200 splits: {comparison.verdict}")
for family, nodes in comparison.circuits.items():
    print(family, "top 5:", ", ".join(map(str, nodes[:5])))

# %% [markdown]
# **Reading it.** Similar circuits give a p-value well above 0.05 ("shared"); a small one with
# a low Jaccard index ("family-specific") would say the model solves the two name orders with
# different features, a question heads alone could not ask. Nodes are per position, so
# templates of different lengths differ by position alone: `ioi.features.compare_families`'s
# docstring says which families are fair to compare.

# %% [markdown]
# # 2. Logit attribution
#
# Section 1 gave one number per prompt. This section asks *where it comes from*, using only a
# single forward pass and some linear algebra.
#
# **The residual stream is a sum.** Every attention layer and every MLP reads the residual
# stream and *adds* its output back. So the final residual stream at `end` is the sum of the
# token embedding, the position embedding, and the output of every attention head and every MLP
# at that position:
#
# $$x_\text{final} = x_\text{embed} + x_\text{pos} + \sum_{l,h} \text{head}_{l,h} + \sum_l \text{mlp}_l.$$
#
# **The logits are (almost) linear in it.** The model turns $x_\text{final}$ into logits with
# the final layer norm and the unembedding $W_U$. The layer norm centres the vector and divides
# it by its norm, the *scale*. Within one forward pass the scale is a single number per prompt
# and position; take it from the cache as a constant and the whole map is linear:
#
# $$\text{logit}(\text{IO}) - \text{logit}(\text{S}) = \frac{\text{centre}(x_\text{final})}{\text{scale}} \cdot \big(W_U[:, \text{IO}] - W_U[:, \text{S}]\big)$$
#
# (plus the difference of the two unembedding biases, which is zero in GPT-2 small; on the toy
# it is a few hundredths averaged over this section's prompts, as printed below, and up to a
# few tenths on a single prompt). Because the dot product distributes over the sum, each component
# gets its own share of the logit difference: its **direct logit attribution** (DLA).
#
# **What DLA does not tell you.** "Direct" means the path from a component straight to the
# logits. A head whose output is only read by later heads (the paper's S-inhibition heads, or
# the toy's layer-0 heads) has a small DLA even if the task depends on it. DLA finds the heads
# that *write the answer*; sections 3 and 4 find the rest.

# %% tags=["module"]
from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from ioi.dataset import IOIDataset

# %%
import os

import circuitsvis as cv
import plotly.express as px
from IPython.display import display

import ioi.checks as checks
from ioi.metrics import logits_to_ave_logit_diff
from ioi.models import load_model
from ioi.reference import provenance, reference_figures

torch.set_grad_enabled(False)  # this section only reads activations
MODEL_NAME = os.environ.get("IOI_MODEL", "toy")
model = load_model(MODEL_NAME, device="auto")
REFERENCE = reference_figures()

N = 32
ds = IOIDataset(N=N, prompt_type="mixed", seed=1, tokenizer=model)
end = ds.word_idx["end"]
answer_tokens = ds.answer_tokens
logits, cache = model.run_with_cache(ds.toks)
logit_diff = logits_to_ave_logit_diff(logits, answer_tokens, positions=end)
print(f"{MODEL_NAME}: mean logit diff {logit_diff.item():.3f} on {N} prompts")

# %% [markdown]
# ## The logit difference direction
#
# Column `W_U[:, t]` of the unembedding is the direction in the residual stream that raises
# token `t`'s logit. The direction that raises the IO's logit *relative to* the S's is the
# difference of their two columns.
#
# ### Exercise: `logit_diff_directions`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# Return one direction per prompt, `[batch, d_model]`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Which matrix turns the residual stream into logits? Its column for a token is that token's
# direction.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `model.tokens_to_residual_directions(answer_tokens)` gives `[batch, 2, d_model]` (the
# columns `W_U[:, IO]` and `W_U[:, S]`); return the first minus the second. Do not normalise:
# the length of the direction is part of the logit difference.
#
# </details>


# %%
def logit_diff_directions(
    model: HookedTransformer, answer_tokens: Int[Tensor, "batch 2"]
) -> Float[Tensor, "batch d_model"]:
    """The residual-stream direction of logit(IO) - logit(S) for each prompt."""
    # EXERCISE: the unembedding direction of the IO minus that of the S.
    # SOLUTION
    both = model.tokens_to_residual_directions(answer_tokens)  # [batch, 2, d_model]
    return both[:, 0] - both[:, 1]
    # END SOLUTION


# %%
checks.test_logit_diff_directions(logit_diff_directions)

# %% [markdown]
# Check the claim above on the real run: the final residual stream at `end`, after the final
# layer norm, dotted with these directions, gives back the logit difference (up to the bias
# term).

# %%
directions = logit_diff_directions(model, answer_tokens)
rows = torch.arange(N)
final_normalised = cache["ln_final.hook_normalized"][rows, end]  # [batch, d_model]
by_hand = (final_normalised * directions).sum(-1).mean()
bias = (model.b_U[answer_tokens[:, 0]] - model.b_U[answer_tokens[:, 1]]).mean()
print(f"by hand {by_hand.item():.4f} + bias {bias.item():.4f} = {(by_hand + bias).item():.4f}")
print(f"model's logit diff          {logit_diff.item():.4f}")

# %% [markdown]
# ## Applying the final layer norm to any component
#
# `ln_final.hook_normalized` is the layer norm applied to the *whole* stream. To attribute, we
# apply the same map to each component separately: centre it over `d_model`, then divide by
# the scale the model computed for the whole stream, `cache["ln_final.hook_scale"]` (shape
# `[batch, pos, 1]`), at each prompt's position. TransformerLens's
# `cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)` does this when every prompt ends at
# the last position; our right-padded prompts need the scale at `end`, so you will index it
# yourself.
#
# ### Exercise: `apply_final_ln`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# `residual_stack` holds any number of components, each already taken at each prompt's
# predicting position: shape `[..., batch, d_model]`. `positions` says where they were taken
# (`None`: the last position), so you can read the matching scale. Return the same shape.
#
# <details><summary>Hint 1: a nudge</summary>
#
# `model.ln_final(stack)` is *not* the answer: it would divide each component by its own norm.
# The layer norm divided the whole stream by one number; use that number.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `scale = cache["ln_final.hook_scale"]` is `[batch, pos, 1]`; take `scale[rows, positions]`
# (`[batch, 1]`, or `scale[:, -1]`); return
# `(stack - stack.mean(-1, keepdim=True)) / scale`, which broadcasts over the components.
#
# </details>


# %%
def apply_final_ln(
    residual_stack: Float[Tensor, "*comp batch d_model"],
    cache: ActivationCache,
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "*comp batch d_model"]:
    """Centre each component and divide by the final layer norm's cached scale at ``positions``."""
    # EXERCISE: centre each component, then divide by the stream's cached final scale.
    # SOLUTION
    scale = cache["ln_final.hook_scale"]  # [batch, pos, 1]
    if positions is None:
        scale = scale[:, -1]  # [batch, 1]
    else:
        rows = torch.arange(scale.shape[0], device=scale.device)
        scale = scale[rows, positions.to(scale.device)]  # [batch, 1]
    centred = residual_stack - residual_stack.mean(dim=-1, keepdim=True)
    return centred / scale
    # END SOLUTION


# %%
checks.test_apply_final_ln(apply_final_ln)

# %% [markdown]
# ### Exercise: `residual_stack_to_logit_diff`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# Now the attribution itself: each component's mean contribution to the logit difference,
# shape `[...]` (one number per component).
#
# <details><summary>Hint 1: a nudge</summary>
#
# Three steps: the layer norm, a dot product per prompt, a mean over prompts.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `scaled = apply_final_ln(residual_stack, cache, positions)`;
# `einops.einsum(scaled, logit_diff_directions, "... batch d_model, batch d_model -> ... batch")`;
# `.mean(-1)` (a mean, not a sum: the result should read like the mean logit difference).
#
# </details>


# %%
def residual_stack_to_logit_diff(
    residual_stack: Float[Tensor, "*comp batch d_model"],
    cache: ActivationCache,
    logit_diff_directions: Float[Tensor, "batch d_model"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "*comp"]:
    """Each component's mean direct contribution to the logit difference, through the final LN."""
    # EXERCISE: layer norm, dot product with the directions, mean over prompts.
    # SOLUTION
    scaled = apply_final_ln(residual_stack, cache, positions)
    per_prompt = einops.einsum(
        scaled,
        logit_diff_directions.to(scaled.device),
        "... batch d_model, batch d_model -> ... batch",
    )
    return per_prompt.mean(dim=-1)
    # END SOLUTION


# %%
checks.test_residual_stack_to_logit_diff(residual_stack_to_logit_diff)

# %% [markdown]
# ## Layer by layer
#
# Two views of the same stream:
#
# - **accumulated**: the residual stream as it stands before each layer's attention, between
#   attention and MLP, and at the end (`cache.accumulated_resid(layer=-1, incl_mid=True)`,
#   `2 * n_layers + 1` entries). Projecting each onto the logit-difference direction is a
#   "logit lens": how much the model already knows at that depth.
# - **decomposed**: what each piece *added*: embeddings, then each layer's attention output
#   and MLP output (`cache.decompose_resid(layer=-1)`, `2 * n_layers + 2` entries).
#
# Both methods return `[component, batch, pos, d_model]`, and with `return_labels=True` also a
# list of names for the plot. You need each prompt's row at its own position:
# `stack[:, torch.arange(batch), positions]`. Both exercises return `(values, labels)` and
# take the answers, not the directions: use your `logit_diff_directions`.
#
# ### Exercise: `accumulated_resid_logit_diffs`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# <details><summary>Hint 1: a nudge</summary>
#
# TransformerLens's cache already knows the accumulated stream; you only take each prompt's
# position and reuse your attribution.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `stack, labels = cache.accumulated_resid(layer=-1, incl_mid=True, return_labels=True)`;
# `stack[:, torch.arange(batch), positions]`; then
# `residual_stack_to_logit_diff(stack, cache, logit_diff_directions(model, answer_tokens),
# positions)`; return it with the labels.
#
# </details>


# %%
def accumulated_resid_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> tuple[Float[Tensor, " comp"], list[str]]:
    """Logit difference read off the accumulated residual stream after each sub-layer, and labels."""
    # EXERCISE: the cache's accumulated residual stream (with the mid-layer entries), attributed.
    # SOLUTION
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=True, return_labels=True)
    if positions is None:
        stack = stack[:, :, -1]  # [comp, batch, d_model]
    else:
        stack = stack[:, torch.arange(stack.shape[1]), positions]  # [comp, batch, d_model]
    directions = logit_diff_directions(model, answer_tokens)
    return residual_stack_to_logit_diff(stack, cache, directions, positions), labels
    # END SOLUTION


# %%
checks.test_accumulated_resid_logit_diffs(accumulated_resid_logit_diffs)

# %% [markdown]
# ### Exercise: `per_layer_logit_diffs`
#
# **Difficulty:** ●●○○○ · **Time:** about 5 minutes
#
# <details><summary>Hint 1: a nudge</summary>
#
# The same as the last exercise, with the other cache method.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `cache.decompose_resid(layer=-1, return_labels=True)` (embeddings, every attention and MLP
# output), each prompt's position, then `residual_stack_to_logit_diff`.
#
# </details>


# %%
def per_layer_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> tuple[Float[Tensor, " comp"], list[str]]:
    """Direct logit attribution of the embeddings and each attention and MLP output, and labels."""
    # EXERCISE: the cache's decomposed residual stream, attributed.
    # SOLUTION
    stack, labels = cache.decompose_resid(layer=-1, return_labels=True)
    if positions is None:
        stack = stack[:, :, -1]  # [comp, batch, d_model]
    else:
        stack = stack[:, torch.arange(stack.shape[1]), positions]  # [comp, batch, d_model]
    directions = logit_diff_directions(model, answer_tokens)
    return residual_stack_to_logit_diff(stack, cache, directions, positions), labels
    # END SOLUTION


# %%
checks.test_per_layer_logit_diffs(per_layer_logit_diffs)

# %%
accumulated, accumulated_labels = accumulated_resid_logit_diffs(model, cache, answer_tokens, end)
per_layer, layer_labels = per_layer_logit_diffs(model, cache, answer_tokens, end)
px.line(
    x=accumulated_labels,
    y=accumulated.cpu().numpy(),
    markers=True,
    title="Logit lens: logit difference of the accumulated residual stream",
    labels={"x": "residual stream", "y": "logit diff"},
).show()
px.bar(
    x=layer_labels,
    y=per_layer.cpu().numpy(),
    title="Direct logit attribution of each layer's output",
    labels={"x": "component", "y": "logit diff"},
).show()

# %% [markdown]
# **What to look for.** Where does the curve jump? A jump at `k_mid` means layer `k`'s
# *attention* wrote part of the answer. The last accumulated value is the model's logit
# difference minus the small bias term: a sanity check of your code.

# %%
ranked = sorted(zip(layer_labels, per_layer.tolist(), strict=True), key=lambda x: -abs(x[1]))
print("largest direct contributions:", ", ".join(f"{n} {v:+.2f}" for n, v in ranked[:3]))

# %% [markdown]
# On GPT-2 small the published per-layer DLA is concentrated in late attention layers:

# %%
print(REFERENCE["eight_prompts"]["per_layer_direct_logit_attribution"])
print(provenance("eight_prompts"))

# %% [markdown]
# By those figures layer 9's attention writes most of the answer (+4.6) and layers 10 and 11
# partly undo it (negative values): the paper's *name movers* and *negative name movers*. On
# the toy the cell above prints where the answer is written; with three layers there is no
# room for GPT-2's sequence of stages.
#
# ## Head by head
#
# An attention layer's output is the sum of its heads' outputs. Head `h` of layer `l` writes
# `z[:, :, h] @ W_O[l, h]`: its value-weighted sum `z` (cached as `cache["z", l]`, shape
# `[batch, pos, head, d_head]`) through its output matrix (`model.W_O[l]`, shape
# `[head, d_head, d_model]`). (The layer's bias `b_O` is shared by the heads, so we leave it
# out.) TransformerLens's `cache.stack_head_results` does the same for every position; here
# you compute it only where you need it.
#
# ### Exercise: `head_results_at`
#
# **Difficulty:** ●●●○○ · **Time:** about 15 minutes
#
# <details><summary>Hint 1: a nudge</summary>
#
# Only two tensors are needed per layer: `cache["z", layer]` and `model.W_O[layer]`. Do not
# add `b_O`: it belongs to the layer, not to any head. (`cache["result", layer]` only exists
# after `model.set_use_attn_result(True)`.)
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# For each layer: `z = cache["z", layer][rows, positions]` (`[batch, head, d_head]`), then
# `einops.einsum(z, model.W_O[layer], "batch head d_head, head d_head d_model -> head batch
# d_model")`; `torch.stack` the layers into `[layer, head, batch, d_model]`.
#
# </details>


# %%
def head_results_at(
    model: HookedTransformer, cache: ActivationCache, positions: Int[Tensor, " batch"] | None
) -> Float[Tensor, "layer head batch d_model"]:
    """Every head's output (``z @ W_O``, no bias) at each prompt's position (the last column
    when ``positions`` is None)."""
    # EXERCISE: each head's z at the positions, through its own W_O, for every layer.
    # SOLUTION
    per_layer = []
    for layer in range(model.cfg.n_layers):
        z = cache["z", layer]  # [batch, pos, head, d_head]
        rows = torch.arange(z.shape[0], device=z.device)
        at = z[:, -1] if positions is None else z[rows, positions.to(z.device)]
        per_layer.append(
            einops.einsum(
                at, model.W_O[layer], "batch head d_head, head d_head d_model -> head batch d_model"
            )
        )
    return torch.stack(per_layer)
    # END SOLUTION


# %%
checks.test_head_results_at(head_results_at)

# %% [markdown]
# ### Exercise: `per_head_logit_diffs`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# With every head's output at `end` in hand, the per-head attribution is one call away.
#
# <details><summary>Hint 1: a nudge</summary>
#
# `[layer, head, batch, d_model]` is a stack of components like any other.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `residual_stack_to_logit_diff(head_results_at(model, cache, positions), cache,
# logit_diff_directions(model, answer_tokens), positions)`.
#
# </details>


# %%
def per_head_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "layer head"]:
    """Direct logit attribution of every attention head, as a [layer, head] grid."""
    # EXERCISE: two of your functions, composed.
    # SOLUTION
    results = head_results_at(model, cache, positions)
    directions = logit_diff_directions(model, answer_tokens)
    return residual_stack_to_logit_diff(results, cache, directions, positions)
    # END SOLUTION


# %%
checks.test_per_head_logit_diffs(per_head_logit_diffs)

# %%
per_head = per_head_logit_diffs(model, cache, answer_tokens, end)
px.imshow(
    per_head.cpu().numpy(),
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "head", "y": "layer", "color": "logit diff"},
    title="Direct logit attribution per head",
).show()
from ioi.head import Head  # a (layer, head) pair that prints as "layer.head"

top = torch.topk(per_head.abs().flatten(), k=min(6, per_head.numel())).indices
top_heads = [Head(*divmod(int(i), model.cfg.n_heads)) for i in top]
print(
    "heads with the largest |DLA|:",
    ", ".join(f"{head} ({per_head[head]:+.2f})" for head in top_heads),
)

# %% [markdown]
# Compare with the published per-head DLA of GPT-2 small: by those figures the name movers
# 9.9, 9.6 and 10.0 write the IO, and the negative name movers 10.7 and 11.10 write *against*
# it, which the paper reads as the model hedging its bets.

# %%
print(REFERENCE["eight_prompts"]["per_head_direct_logit_attribution"])
print(provenance("eight_prompts"))

# %% [markdown]
# ## Why the weights are processed
#
# Every model in this course is loaded the way the IOI literature loads GPT-2 small, with
# four TransformerLens processing steps. Each rewrites the weights without changing the
# function the model computes:
#
# - `fold_ln`: each LayerNorm's weight and bias are folded into the matrices that read its
#   output, so a LayerNorm only centres and divides by its scale.
# - `center_writing_weights`: everything written to the residual stream has mean zero over
#   `d_model` (LayerNorm would remove that mean anyway).
# - `center_unembed`: the unembedding's columns have mean zero over the vocabulary, which only
#   moves every logit at a position by the same amount.
# - `refactor_factored_attn_matrices`: each head's `W_Q, W_K` and `W_V, W_O` are rebalanced;
#   only the products `W_Q W_K^T` and `W_V W_O` matter.
#
# If the function does not change, what do they buy? `ioi.processing.undo_processing` builds
# a model that computes the same logits with one step undone (with random LayerNorm weights,
# offsets or changes of basis), and `processing_effects` measures which results of this course
# move.
#
# **Predict, then run.** Undo each step in turn. Which of these move: the logits, the logit
# difference, the per-head DLA as you computed it, the DLA of the IO logit alone, the q/k/v
# patching results of section 3, the norms of the heads' `z` and of their outputs?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The logit difference moves for none of them: the function is the same (the `logits` column
# moves only for `center_unembed`, by the same amount for every token). Undoing `fold_ln`
# moves your per-head DLA: `apply_final_ln` divides by the cached scale but knows nothing of a
# LayerNorm weight, so on an unfolded model it is simply wrong. Undoing `center_unembed` moves
# the attribution of a single logit, but not of a *difference* of logits. Undoing
# `center_writing_weights` moves the norm of a head's output (a constant vector the LayerNorm
# throws away is added to it), and undoing the refactoring moves the norm of `z` (its basis
# changed); no patching result moves, because every patch replaces whole vectors. The test
# `tests/course/test_claims.py` checks this pattern on the toy.
#
# </details>

# %%
from ioi.processing import effects_table, processing_effects

processing = processing_effects(model, ds, ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ"))
columns = ("logits", "logit_diff", "head_dla", "io_logit_dla", "qkv_patching")
columns += ("z_norm", "output_norm")
print(f"{'undone step':34}" + "".join(f"{c:>13}" for c in columns))
for row in effects_table(processing):
    print(f"{row['step']:34}" + "".join(f"{row[c]:>13.4f}" for c in columns))
print("(each entry: the largest change of that measurement, over prompts and heads)")

# %% [markdown]
# So the processing is what makes the quantities of this course *mean* something: DLA through
# a weightless LayerNorm, norms of head outputs without a constant the model ignores, logit
# attributions without a vocabulary-wide shift. Results you read off a model loaded without
# it need these corrections by hand.

# %% [markdown]
# ## What do the top heads attend to?
#
# A head moves information from the positions it attends to (keys, *src*) to the position
# doing the attending (the query, *dest*). The paper's name movers at `end` attend to the IO and
# copy it. To test that kind of claim across a dataset, average the attention probability
# between two named words.
#
# ### Exercise: `ioi_attention`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# Return, for every head, the attention probability from word `dest` to word `src`, averaged
# over the prompts of `ds`: `[layer, head]`. Use `cache` if one is given, else run the model:
# a given cache may come from a hooked or patched run of these prompts (the checker passes one
# whose layer-0 head outputs were patched), and re-running would measure a plain run instead.
# `cache["pattern", layer]` has shape `[batch, head, dest, src]`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Each prompt has its own `dest` and `src` positions: index rows, queries and keys together.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `rows = torch.arange(ds.N)`; per layer
# `cache["pattern", layer][rows, :, ds.word_idx[dest], ds.word_idx[src]]` is `[batch, head]`;
# `.mean(0)`, then `torch.stack` over layers.
#
# </details>


# %%
def ioi_attention(
    model: HookedTransformer,
    ds: IOIDataset,
    dest: str,
    src: str,
    cache: ActivationCache | None = None,
) -> Float[Tensor, "layer head"]:
    """Mean attention probability from ``word_idx[dest]`` to ``word_idx[src]`` on IOI prompts."""
    # EXERCISE: per layer, the pattern at each prompt's (dest, src), averaged over prompts.
    # SOLUTION
    if cache is None:
        _, cache = model.run_with_cache(ds.toks)
    rows = torch.arange(ds.N)
    dest_pos, src_pos = ds.word_idx[dest], ds.word_idx[src]
    per_layer = [
        cache["pattern", layer].cpu()[rows, :, dest_pos, src_pos].mean(0)
        for layer in range(model.cfg.n_layers)
    ]
    return torch.stack(per_layer)
    # END SOLUTION


# %%
checks.test_ioi_attention(ioi_attention)

# %% [markdown]
# **Predict, then run.** The heads with the largest DLA write the IO's direction at `end`.
# Where do they attend from `end`: to the IO, to S1, or to S2?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# On the toy model, to **S2**: the cell after the figure prints each top head's attention
# from `end` to S2 and to the IO (`tests/course/test_claims.py` checks that every layer-1 and
# layer-2 head puts at least 0.9 on S2 here). A head that copies the IO while looking at the
# repeated name is a puzzle; the facets `S2 -> IO` and `S1+1 -> S1` start to solve it.
#
# </details>

# %%
pairs = [("end", "IO"), ("end", "S1"), ("end", "S2"), ("S2", "IO"), ("S1+1", "S1")]
grids = torch.stack([ioi_attention(model, ds, d, s, cache) for d, s in pairs])
px.imshow(
    grids.numpy(),
    facet_col=0,
    zmin=0,
    zmax=1,
    color_continuous_scale="Blues",
    labels={"x": "head", "y": "layer", "color": "attention"},
    title="Mean attention between named words: " + ", ".join(f"{d} -> {s}" for d, s in pairs),
).show()
attention = dict(zip(pairs, grids, strict=True))
for head in top_heads:
    print(
        f"{head}: end -> S2 {attention['end', 'S2'][head]:.2f}, "
        f"end -> IO {attention['end', 'IO'][head]:.2f}"
    )
layer0 = range(model.cfg.n_heads)
s2_writers = [Head(0, h) for h in layer0 if attention["S2", "IO"][0, h] > 0.5]
previous = [Head(0, h) for h in layer0 if attention["S1+1", "S1"][0, h] > 0.5]
print("layer-0 heads attending S2 -> IO above 0.5:", ", ".join(map(str, s2_writers)))
print("layer-0 heads attending S1+1 -> S1 above 0.5:", ", ".join(map(str, previous)))

# %% [markdown]
# Now look at the patterns on one prompt. Hover over a token to see where each head attends
# from it. Start with the heads of largest DLA.

# %%
prompt = 0
tokens = model.to_str_tokens(ds.toks[prompt, : int(end[prompt]) + 2])
for layer in sorted({layer for layer, _ in top_heads}):
    pattern = cache["pattern", layer][prompt, :, : len(tokens), : len(tokens)]
    display(
        cv.attention.attention_heads(
            attention=pattern.cpu(),
            tokens=tokens,
            attention_head_names=[str(Head(layer, h)) for h in range(model.cfg.n_heads)],
        )
    )

# %% [markdown]
# **Reading the toy model.** The heads of largest DLA attend from `end` to **S2**, not to the
# IO (the printed numbers). How can copying from S2 produce the IO? Look at `S2 -> IO`: the
# layer-0 heads printed above attend, at S2, to the IO (the name that is *not* repeated) and
# can write it into S2's residual stream; later layers then carry it from S2 to `end`. The
# `S1+1 -> S1` facet shows layer-0 heads that act as *previous-token* heads on these prompts.
# That is a hypothesis, built from attention patterns; sections 3 to 5 test it.
#
# It is not GPT-2 small's algorithm as the paper reports it: there, name movers at `end`
# attend to the IO itself and S-inhibition heads tell them to avoid the S. Same task, same
# behaviour, two circuits: a reminder that a model's circuit is found by experiment, never
# assumed.
#
# DLA only shows the last step. Which earlier components matter, and through which paths,
# needs interventions: activation patching, next.

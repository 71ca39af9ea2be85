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
# (plus the difference of the two unembedding biases, which is zero in GPT-2 small and a few
# hundredths on the toy). Because the dot product distributes over the sum, each component
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
from ioi.reference import reference_figures

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
# Return one direction per prompt, `[batch, d_model]`.


# %%
def logit_diff_directions(
    model: HookedTransformer, answer_tokens: Int[Tensor, "batch 2"]
) -> Float[Tensor, "batch d_model"]:
    """The residual-stream direction of logit(IO) - logit(S) for each prompt."""
    # EXERCISE: model.tokens_to_residual_directions(answer_tokens) gives [batch, 2, d_model]
    # EXERCISE: (or index model.W_U yourself); subtract the S column's direction from the IO's.
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
# `residual_stack` holds any number of components, each already taken at each prompt's
# predicting position: shape `[..., batch, d_model]`. `positions` says where they were taken
# (`None`: the last position), so you can read the matching scale. Return the same shape.


# %%
def apply_final_ln(
    residual_stack: Float[Tensor, "*comp batch d_model"],
    cache: ActivationCache,
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "*comp batch d_model"]:
    """Centre each component and divide by the final layer norm's cached scale at ``positions``."""
    # EXERCISE: centre over d_model, then divide by cache["ln_final.hook_scale"] read at each
    # EXERCISE: prompt's position: shape [batch, 1], which broadcasts over the components.
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
# Now the attribution itself: each component's mean contribution to the logit difference,
# shape `[...]` (one number per component).


# %%
def residual_stack_to_logit_diff(
    residual_stack: Float[Tensor, "*comp batch d_model"],
    cache: ActivationCache,
    logit_diff_directions: Float[Tensor, "batch d_model"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "*comp"]:
    """Each component's mean direct contribution to the logit difference, through the final LN."""
    # EXERCISE: apply_final_ln, then einops.einsum with the directions over d_model
    # EXERCISE: ("... batch d_model, batch d_model -> ... batch"), then the mean over the batch.
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
# ### Exercise: `accumulated_resid_logit_diffs` and `per_layer_logit_diffs`


# %%
def accumulated_resid_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> tuple[Float[Tensor, " comp"], list[str]]:
    """Logit difference read off the accumulated residual stream after each sub-layer, and labels."""
    # EXERCISE: cache.accumulated_resid(layer=-1, incl_mid=True, return_labels=True), take each
    # EXERCISE: prompt's position, then residual_stack_to_logit_diff with logit_diff_directions.
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


# %%
def per_layer_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> tuple[Float[Tensor, " comp"], list[str]]:
    """Direct logit attribution of the embeddings and each attention and MLP output, and labels."""
    # EXERCISE: cache.decompose_resid(layer=-1, return_labels=True), take each prompt's
    # EXERCISE: position, then residual_stack_to_logit_diff with logit_diff_directions.
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
# **What to look for.** Where does the curve jump? A jump after `k_attn_out` means layer `k`'s
# *attention* writes the answer; MLPs hardly matter in IOI. The last accumulated value is the
# model's logit difference (minus the small bias term): a good sanity check of your code.
#
# On GPT-2 small the published per-layer DLA (eight hand-written prompts) is concentrated in
# late attention layers:

# %%
print(REFERENCE["eight_prompts"]["per_layer_direct_logit_attribution"])

# %% [markdown]
# Layer 9's attention writes most of the answer (+4.6) and layers 10 and 11 partly undo it
# (negative values): the paper's *name movers* and *negative name movers*. On the toy model
# the work is done by layers 1 and 2: the model has only three.
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


# %%
def head_results_at(
    model: HookedTransformer, cache: ActivationCache, positions: Int[Tensor, " batch"] | None
) -> Float[Tensor, "layer head batch d_model"]:
    """Every head's output (``z @ W_O``, no bias) at each prompt's position."""
    # EXERCISE: per layer: z = cache["z", layer] at the positions ([batch, head, d_head]), then
    # EXERCISE: einops.einsum with model.W_O[layer] -> [head, batch, d_model]; stack the layers.
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
# With every head's output at `end` in hand, the per-head attribution is one call away.


# %%
def per_head_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "layer head"]:
    """Direct logit attribution of every attention head, as a [layer, head] grid."""
    # EXERCISE: head_results_at gives [layer, head, batch, d_model]: exactly the
    # EXERCISE: "[*comp, batch, d_model]" stack residual_stack_to_logit_diff takes.
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
# Compare with the heads the paper found in GPT-2 small (DLA on its eight prompts): name
# movers 9.9, 9.6 and 10.0 write the IO; negative name movers 10.7 and 11.10 write *against*
# it, which the paper reads as the model hedging its bets.

# %%
print(REFERENCE["eight_prompts"]["per_head_direct_logit_attribution"])

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
# Return, for every head, the attention probability from word `dest` to word `src`, averaged
# over the prompts of `ds`: `[layer, head]`. Use `cache` if one is given, else run the model.
# `cache["pattern", layer]` has shape `[batch, head, dest, src]`.


# %%
def ioi_attention(
    model: HookedTransformer,
    ds: IOIDataset,
    dest: str,
    src: str,
    cache: ActivationCache | None = None,
) -> Float[Tensor, "layer head"]:
    """Mean attention probability from ``word_idx[dest]`` to ``word_idx[src]`` on IOI prompts."""
    # EXERCISE: for each layer read cache["pattern", layer][rows, :, word_idx[dest], word_idx[src]]
    # EXERCISE: ([batch, head]), average over the prompts, and stack the layers.
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
# **Reading the toy model.** On the toy model the heads of layers 1 and 2 with large DLA
# attend from `end` to **S2**, not to the IO, with probability close to 1: the facet
# `end -> S2` lights up and `end -> IO` does not. How can copying from S2 produce the IO?
# Look at `S2 -> IO`: two layer-0 heads at S2 attend to the IO (the name that is *not*
# repeated) and write it into S2's residual stream. Layers 1 and 2 then carry that
# information from S2 to `end`. And `S1+1 -> S1` shows two layer-0 *previous-token* heads.
#
# That is a different algorithm from GPT-2 small's, where name movers at `end` attend to the
# IO itself and S-inhibition heads tell them to avoid the S. Same task, same behaviour, two
# circuits: a reminder that a model's circuit is found by experiment, never assumed. (Run
# this notebook with `IOI_MODEL=gpt2-small` to see the paper's name movers light up in the
# `end -> IO` facet.)
#
# DLA only shows the last step. Which earlier components matter, and through which paths,
# needs interventions: activation patching, next.

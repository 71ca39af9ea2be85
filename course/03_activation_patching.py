# %% [markdown]
# # 3. Activation patching
#
# Logit attribution (section 2) tells you who *writes* the answer. It cannot tell you who
# *decides* it: a head that finds the repeated name and passes that on has no direct effect on
# the logits at all. To find such components we intervene.
#
# **The experiment.** Take two runs that differ in exactly the information you care about:
#
# - the **clean** run, on IOI prompts, where the model does the task;
# - the **corrupted** run, on the ABC prompts of section 1: same templates and positions, three
#   unrelated names, so there is no repeated name to exploit.
#
# Then run one of them while overwriting a single activation (one layer's residual stream at
# one position, or one head's output) with its value from the other run, and see how much of
# the behaviour comes back.
#
# - **Denoising** (what TransformerLens's `get_act_patch_*` functions do): run *corrupted*,
#   patch in one *clean* activation. A big recovery means this activation **suffices** to carry
#   the IOI information from there on.
# - **Noising**: run *clean*, patch in one *corrupted* activation. A big drop means the model
#   **needs** this activation.
#
# The two are not mirror images: when several components each carry the information
# (redundancy, "OR"), noising any one of them does little while denoising any one of them
# does a lot; when several must work together ("AND"), the reverse. Run both when you can.
#
# **What to measure.** A raw logit difference means little across models and datasets, so we
# normalise it: 0 is the corrupted run's value, 1 the clean run's. A patched run scoring 0.7
# recovered 70% of the clean behaviour.

# %% tags=["module"]
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

# %%
import os

import plotly.express as px

import ioi.checks as checks
from ioi import patching
from ioi.dataset import IOIDataset
from ioi.head import Head
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.models import load_model
from ioi.reference import provenance, reference_figures

torch.set_grad_enabled(False)  # patching only runs forward passes (attribution re-enables it)
MODEL_NAME = os.environ.get("IOI_MODEL", "toy")
model = load_model(MODEL_NAME, device="auto")
REFERENCE = reference_figures()

N = 16  # every patched site costs a forward pass: keep the batch small on a CPU
ds = IOIDataset(N=N, prompt_type="mixed", seed=1, tokenizer=model)
abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
end, answer_tokens = ds.word_idx["end"], ds.answer_tokens
clean_tokens, corrupted_tokens = ds.toks, abc.toks
clean_logits, clean_cache = model.run_with_cache(clean_tokens)
corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens)
clean_logit_diff = logits_to_ave_logit_diff(clean_logits, answer_tokens, positions=end).item()
corrupted_logit_diff = logits_to_ave_logit_diff(
    corrupted_logits, answer_tokens, positions=end
).item()
print(f"clean logit diff {clean_logit_diff:.3f}, corrupted {corrupted_logit_diff:.3f}")

# %% [markdown]
# ## The normalised metric
#
# ### Exercise: `ioi_metric`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# $$\text{ioi\_metric} = \frac{\text{logit diff} - \text{corrupted logit diff}}{\text{clean logit diff} - \text{corrupted logit diff}}$$
#
# where the logit difference is your section-1 mean at `positions`, for the IO/S answers of
# the *clean* prompts (the corrupted run is scored against the same answers). Return a 0-d
# tensor computed from `logits` by torch operations (no `.item()`, `float()` or `.detach()`):
# attribution patching, at the end of this section, takes its gradient. The formula holds
# whichever baseline is larger; a clean logit difference below the corrupted one is allowed.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Check your formula on the two runs it is built from: clean logits must give 1, corrupted
# logits 0.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `final = logits[rows, positions]`; `picked = final.gather(1, answer_tokens)`;
# `d = (picked[:, 0] - picked[:, 1]).mean()`; return
# `(d - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)`.
#
# </details>


# %%
def ioi_metric(
    logits: Float[Tensor, "batch pos d_vocab"],
    answer_tokens: Int[Tensor, "batch 2"],
    corrupted_logit_diff: float,
    clean_logit_diff: float,
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, ""]:
    """Logit difference rescaled so the corrupted baseline is 0 and the clean one is 1."""
    # EXERCISE: the mean logit difference, rescaled so corrupted -> 0 and clean -> 1.
    # SOLUTION
    rows = torch.arange(logits.shape[0], device=logits.device)
    final = logits[:, -1] if positions is None else logits[rows, positions.to(logits.device)]
    picked = final.gather(1, answer_tokens.to(logits.device))  # [batch, 2]
    logit_diff = (picked[:, 0] - picked[:, 1]).mean()
    return (logit_diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
    # END SOLUTION


# %%
checks.test_ioi_metric(ioi_metric)

# %% [markdown]
# Patching functions take a metric of the logits alone. Bind the other arguments once: the
# library's `make_ioi_metric` is the factory that does exactly that (`functools.partial` of your
# function would do too).

# %%
metric = make_ioi_metric(clean_logit_diff, corrupted_logit_diff, answer_tokens, end)
print(f"clean: {metric(clean_logits).item():.3f}, corrupted: {metric(corrupted_logits).item():.3f}")
assert torch.isclose(
    metric(clean_logits),
    ioi_metric(clean_logits, answer_tokens, corrupted_logit_diff, clean_logit_diff, end),
)

# %% [markdown]
# ## Patching the residual stream
#
# A TransformerLens *hook* is a function `hook_fn(activation, hook) -> activation` attached to
# a named point of the model, e.g. `blocks.3.hook_resid_pre` (`get_act_name("resid_pre", 3)`).
# `model.run_with_hooks(tokens, fwd_hooks=[(name, hook_fn)])` runs the model with it, and
# removes it afterwards. Extra arguments are bound with `functools.partial`.
#
# ### Exercise: `patch_residual_component`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# A hook function that overwrites position `pos` of the residual stream (every prompt of the
# batch) with the clean run's value, read from `clean_cache[hook.name]`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# The hook is called for whichever layer it is attached to: `hook.name` says which. Write into
# the activation you are given, never into the cache you read from (`clean_cache[name]` is the
# cache's own tensor, not a copy).
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `corrupted_residual_component[:, pos, :] = clean_cache[hook.name][:, pos, :]`, then return
# `corrupted_residual_component`.
#
# </details>


# %%
def patch_residual_component(
    corrupted_residual_component: Float[Tensor, "batch pos d_model"],
    hook: HookPoint,
    pos: int,
    clean_cache: ActivationCache,
) -> Float[Tensor, "batch pos d_model"]:
    """Hook: replace position ``pos`` of this residual-stream activation by its clean value."""
    # EXERCISE: one position of every prompt, from the clean run.
    # SOLUTION
    corrupted_residual_component[:, pos, :] = clean_cache[hook.name][:, pos, :]
    return corrupted_residual_component
    # END SOLUTION


# %%
checks.test_patch_residual_component(patch_residual_component)

# %% [markdown]
# ### Exercise: `get_act_patch_resid_pre`
#
# **Difficulty:** ●●○○○ · **Time:** about 15 minutes
#
# Patch the residual stream entering each layer, at each position, one at a time, and return
# the metric of each patched run as a `[layer, pos]` tensor. (The same name and arguments as
# `transformer_lens.patching.get_act_patch_resid_pre`.) Wrap the loops in
# `torch.inference_mode()`: no gradients are needed and none should pile up.
#
# <details><summary>Hint 1: a nudge</summary>
#
# One forward pass per (layer, position), each with one hook; the hook is your function with
# its extra arguments bound by `functools.partial`. Loop over every layer: `range(n_layers)`.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# For each `layer` and `pos`: `hook_fn = partial(patch_residual_component, pos=pos,
# clean_cache=clean_cache)`; `logits = model.run_with_hooks(corrupted_tokens,
# fwd_hooks=[(get_act_name("resid_pre", layer), hook_fn)])`;
# `results[layer, pos] = patching_metric(logits)`.
#
# </details>


# %%
def get_act_patch_resid_pre(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
) -> Float[Tensor, "layer pos"]:
    """Metric after patching the clean ``resid_pre`` into the corrupted run, per layer and position."""
    # EXERCISE: one patched forward pass per (layer, position), each scored by the metric.
    # SOLUTION
    n_pos = corrupted_tokens.shape[1]
    results = torch.zeros(model.cfg.n_layers, n_pos, device=model.cfg.device)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for pos in range(n_pos):
                hook_fn = partial(patch_residual_component, pos=pos, clean_cache=clean_cache)
                logits = model.run_with_hooks(
                    corrupted_tokens, fwd_hooks=[(get_act_name("resid_pre", layer), hook_fn)]
                )
                results[layer, pos] = patching_metric(logits)
    return results
    # END SOLUTION


# %%
checks.test_get_act_patch_resid_pre(get_act_patch_resid_pre)

# %% [markdown]
# **Positions need a shared template.** Position 7 is a different word in each template, so a
# `[layer, pos]` picture only makes sense for prompts that share one. Build a larger dataset and
# keep the rows of its most common template (`ds.groups` lists the rows of each template);
# their corrupted twins keep the same positions.

# %%
big = IOIDataset(N=120, prompt_type="BABA", seed=3, tokenizer=model)
big_abc = big.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
rows = max(big.groups, key=len)[:8]  # eight prompts of the most common template
length = int(big.word_idx["end"][rows[0]]) + 1  # up to and including `end`
one_clean, one_corrupted = big.toks[rows, :length], big_abc.toks[rows, :length]
one_end = big.word_idx["end"][rows]
one_answers = big.answer_tokens[rows]
one_logits, one_cache = model.run_with_cache(one_clean)
one_metric = make_ioi_metric(
    logits_to_ave_logit_diff(one_logits, one_answers, positions=one_end),
    logits_to_ave_logit_diff(model(one_corrupted), one_answers, positions=one_end),
    one_answers,
    one_end,
)
labels = [f"{t!r} {i}" for i, t in enumerate(model.to_str_tokens(one_clean[0]))]
print(f"{len(rows)} prompts of the template {big.templates[int(big.template_idx[rows[0]])]!r}")

# %% [markdown]
# **Predict, then run.** Before you look: in layer 0, at which positions can patching the
# residual stream change anything at all? And in the last layer?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# In layer 0 the residual stream is just the embeddings, and clean and corrupted prompts
# differ only in the names: every other position gives exactly 0 (the cell prints the
# positions that move the metric by more than 0.1 in each layer, and the test
# `tests/course/test_claims.py` checks the zeros). By the last layer the answer is being
# gathered at `end`, where that layer's largest effect sits on the toy; the toy still reads
# part of it from S2 there.
#
# </details>

# %%
resid_pre = get_act_patch_resid_pre(model, one_corrupted, one_cache, one_metric)
px.imshow(
    resid_pre.cpu().numpy(),
    x=labels,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "position", "y": "layer", "color": "metric"},
    title="Denoising resid_pre, one layer and position at a time",
).show()
for layer, row in enumerate(resid_pre.cpu()):
    moved = [labels[p] for p in range(len(row)) if abs(row[p]) > 0.1]
    print(f"layer {layer}: |effect| > 0.1 at", ", ".join(moved) or "no position")

# %% [markdown]
# **What to look for.** The layer where the bright cell moves from a name position to `end`
# is where information moves between positions, which only attention can do. In the paper's
# GPT-2 small circuit that move from S2 to `end` is the S-inhibition heads' job, in layers 7
# and 8 (Wang et al. 2022, figure 2).
#
# ### Exercise: `get_act_patch_block_every`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# The residual stream entering a layer is the sum of everything before it. Patch instead what
# each layer's attention and MLP *add*: return a `[3, layer, pos]` tensor of the sweeps over
# `resid_pre`, `attn_out` and `mlp_out`, in that order (TransformerLens's
# `get_act_patch_block_every` has the same layout).
#
# <details><summary>Hint 1: a nudge</summary>
#
# `attn_out` and `mlp_out` have the residual stream's shape, `[batch, pos, d_model]`: your
# hook works on them unchanged.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# For each name in `("resid_pre", "attn_out", "mlp_out")`, the same two loops as
# `get_act_patch_resid_pre` with `get_act_name(name, layer)`; `torch.stack` the three grids.
#
# </details>


# %%
def get_act_patch_block_every(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
) -> Float[Tensor, "component layer pos"]:
    """Metric after patching each layer's resid_pre, attn_out or mlp_out at each position."""
    # EXERCISE: three residual-shaped hook points, one [layer, pos] sweep each.
    # SOLUTION
    n_pos = corrupted_tokens.shape[1]
    components = ("resid_pre", "attn_out", "mlp_out")
    results = torch.zeros(len(components), model.cfg.n_layers, n_pos, device=model.cfg.device)
    with torch.inference_mode():
        for index, component in enumerate(components):
            for layer in range(model.cfg.n_layers):
                for pos in range(n_pos):
                    hook_fn = partial(patch_residual_component, pos=pos, clean_cache=clean_cache)
                    logits = model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name(component, layer), hook_fn)]
                    )
                    results[index, layer, pos] = patching_metric(logits)
    return results
    # END SOLUTION


# %%
checks.test_get_act_patch_block_every(get_act_patch_block_every)

# %%
every_block = get_act_patch_block_every(model, one_corrupted, one_cache, one_metric)
px.imshow(
    every_block.cpu().numpy(),
    x=labels,
    facet_col=0,
    facet_col_wrap=1,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    title="Denoising resid_pre, attn_out and mlp_out (rows: facets 0, 1, 2)",
    height=700,
).show()

# %% [markdown]
# ## Patching heads
#
# Attention outputs are where IOI lives, so go one level finer: a head's output. The cleanest
# handle is `z` (`blocks.{l}.attn.hook_z`, shape `[batch, pos, head, d_head]`), the head's
# value-weighted sum just before `W_O`. Patching head `h`'s slice of `z` patches exactly that
# head's output.
#
# ### Exercise: `patch_head_vector`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# The same kind of hook as before, on `z` (or `q`, `k`, `v`: all `[batch, pos, head, d_head]`),
# replacing one head at every position.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Which axis is the head? Count: batch, pos, head, d_head.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `corrupted_head_vector[:, :, head_index] = clean_cache[hook.name][:, :, head_index]`; return it.
#
# </details>


# %%
def patch_head_vector(
    corrupted_head_vector: Float[Tensor, "batch pos head d_head"],
    hook: HookPoint,
    head_index: int,
    clean_cache: ActivationCache,
) -> Float[Tensor, "batch pos head d_head"]:
    """Hook: replace head ``head_index`` of this z/q/k/v activation by its clean value, all positions."""
    # EXERCISE: one head, every position, from the clean run.
    # SOLUTION
    corrupted_head_vector[:, :, head_index] = clean_cache[hook.name][:, :, head_index]
    return corrupted_head_vector
    # END SOLUTION


# %%
checks.test_patch_head_vector(patch_head_vector)

# %% [markdown]
# ### Exercise: `get_act_patch_attn_head_out_all_pos`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# A `[layer, head]` grid: the metric after patching each head's output (`z`) at every position.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Patch `hook_z`, not `hook_result`: the heads' `result` is only computed after
# `model.set_use_attn_result(True)`, so a hook on it never fires.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# For each `layer` and `head`: `run_with_hooks(corrupted_tokens,
# fwd_hooks=[(get_act_name("z", layer), partial(patch_head_vector, head_index=head,
# clean_cache=clean_cache))])`, and store the metric.
#
# </details>


# %%
def get_act_patch_attn_head_out_all_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
) -> Float[Tensor, "layer head"]:
    """Metric after patching each head's clean output (z) into the corrupted run, all positions."""
    # EXERCISE: one patched forward pass per head.
    # SOLUTION
    results = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, device=model.cfg.device)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                hook_fn = partial(patch_head_vector, head_index=head, clean_cache=clean_cache)
                logits = model.run_with_hooks(
                    corrupted_tokens, fwd_hooks=[(get_act_name("z", layer), hook_fn)]
                )
                results[layer, head] = patching_metric(logits)
    return results
    # END SOLUTION


# %%
checks.test_get_act_patch_attn_head_out_all_pos(get_act_patch_attn_head_out_all_pos)

# %%
head_out = get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, clean_cache, metric)
px.imshow(
    head_out.cpu().numpy(),
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "head", "y": "layer", "color": "metric"},
    title="Denoising each head's output (all positions)",
).show()
print(
    "GPT-2 small, published:",
    REFERENCE["eight_prompts"]["head_out_patching_all_pos_denoise_normalised"],
)
print(provenance("eight_prompts"))

# %% [markdown]
# By those published figures (flipped-subject corruption, not the ABC prompts used here; see
# below), the heads that recover the most in GPT-2 small are not only the name mover 9.9 but
# also the induction head 5.5 and the S-inhibition heads 8.6 and 8.10: heads with little
# *direct* effect that patching reveals. Negative values (10.7, 11.10) are heads that, clean,
# push *against* the answer.
#
# On the toy, compare this grid with the DLA grid of section 2: heads that matter here but
# wrote little directly are doing their work through other heads.
#
# ### Exercise: `get_act_patch_attn_head_out_by_pos`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# Patch each head at each position separately: a `[layer, pos, head]` grid (the layout of
# TransformerLens's `get_act_patch_attn_head_out_by_pos`). It says not only *which* head
# matters but *where* its output matters.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Your `patch_head_vector` patches all positions; this hook patches one (position, head) cell.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# Three loops (layer, pos, head); a hook `z[:, pos, head] = clean_cache[hook.name][:, pos,
# head]` on `get_act_name("z", layer)`; `results[layer, pos, head] = patching_metric(logits)`.
#
# </details>


# %%
def get_act_patch_attn_head_out_by_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
) -> Float[Tensor, "layer pos head"]:
    """Metric after patching each head's clean output (z) at one position at a time."""
    # EXERCISE: one patched forward pass per (layer, position, head).
    # SOLUTION
    n_pos = corrupted_tokens.shape[1]
    results = torch.zeros(model.cfg.n_layers, n_pos, model.cfg.n_heads, device=model.cfg.device)

    def patch_one(z: Tensor, hook: HookPoint, pos: int, head: int) -> Tensor:
        z[:, pos, head] = clean_cache[hook.name][:, pos, head]
        return z

    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):
            for pos in range(n_pos):
                for head in range(model.cfg.n_heads):
                    hook_fn = partial(patch_one, pos=pos, head=head)
                    logits = model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name("z", layer), hook_fn)]
                    )
                    results[layer, pos, head] = patching_metric(logits)
    return results
    # END SOLUTION


# %%
checks.test_get_act_patch_attn_head_out_by_pos(get_act_patch_attn_head_out_by_pos)

# %% [markdown]
# **Predict, then run.** Section 2 found layer-1 and layer-2 heads that attend from `end` to
# S2, and layer-0 heads that attend from S2 to the IO. At which position should patching a
# layer-0 head's output matter, and at which a layer-2 head's?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# If the story is right: layer-0 heads at S2, later heads at `end`. The cell prints, for each
# layer, the (position, head) cell of largest effect; on the toy they fall where the story
# says (checked in `tests/course/test_claims.py`).
#
# </details>

# %%
by_pos = get_act_patch_attn_head_out_by_pos(model, one_corrupted, one_cache, one_metric)
px.imshow(
    by_pos.permute(2, 0, 1).cpu().numpy(),  # [head, layer, pos]: one facet per head
    x=labels,
    facet_col=0,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    title="Denoising each head's output at each position (facet = head)",
).show()
for layer in range(model.cfg.n_layers):
    flat = int(by_pos[layer].abs().argmax())
    pos, head = divmod(flat, model.cfg.n_heads)
    print(
        f"layer {layer}: largest effect {by_pos[layer, pos, head]:+.2f} at {labels[pos]}, head {head}"
    )

# %% [markdown]
# ## What inside a head matters: query, key, value, pattern
#
# A head's output depends on its query (what the destination looks for), its keys (what each
# source offers), its values (what each source sends) and the attention pattern they produce.
# Patching each separately says which one carries the clean information: a head whose effect
# comes through its **values** moves clean content; one whose effect comes through its
# **query** or **pattern** has changed *where* it looks.
#
# ### Exercise: `patch_attn_patterns`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# Patterns (`blocks.{l}.attn.hook_pattern`) have shape `[batch, head, query_pos, key_pos]`:
# note where the head axis is.
#
# <details><summary>Hint 1: a nudge</summary>
#
# The same hook as `patch_head_vector`, with the head on another axis.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `corrupted_head_vector[:, head_index] = clean_cache[hook.name][:, head_index]`; return it.
#
# </details>


# %%
def patch_attn_patterns(
    corrupted_head_vector: Float[Tensor, "batch head pos pos"],
    hook: HookPoint,
    head_index: int,
    clean_cache: ActivationCache,
) -> Float[Tensor, "batch head pos pos"]:
    """Hook: replace head ``head_index``'s attention pattern by its clean pattern."""
    # EXERCISE: one head's whole pattern, from the clean run.
    # SOLUTION
    corrupted_head_vector[:, head_index] = clean_cache[hook.name][:, head_index]
    return corrupted_head_vector
    # END SOLUTION


# %%
checks.test_patch_attn_patterns(patch_attn_patterns)

# %% [markdown]
# ### Exercise: `get_act_patch_attn_head_all_pos_every`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# Five `[layer, head]` grids stacked in this order: output (`z`), `q`, `k`, `v`, `pattern`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Four of the five use the same hook; the pattern needs its own.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# For each component of `("z", "q", "k", "v", "pattern")`: the `[layer, head]` loops with
# `patch_head_vector` (or `patch_attn_patterns` for `"pattern"`) at
# `get_act_name(component, layer)`; stack the five grids in that order.
#
# </details>


# %%
def get_act_patch_attn_head_all_pos_every(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
) -> Float[Tensor, "component layer head"]:
    """Metric after patching each head's z, q, k, v or pattern (all positions): [5, layer, head]."""
    # EXERCISE: one [layer, head] sweep per component, in the order above.
    # SOLUTION
    components = ("z", "q", "k", "v", "pattern")
    results = torch.zeros(
        len(components), model.cfg.n_layers, model.cfg.n_heads, device=model.cfg.device
    )
    with torch.inference_mode():
        for index, component in enumerate(components):
            patcher = patch_attn_patterns if component == "pattern" else patch_head_vector
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):
                    hook_fn = partial(patcher, head_index=head, clean_cache=clean_cache)
                    logits = model.run_with_hooks(
                        corrupted_tokens, fwd_hooks=[(get_act_name(component, layer), hook_fn)]
                    )
                    results[index, layer, head] = patching_metric(logits)
    return results
    # END SOLUTION


# %%
checks.test_get_act_patch_attn_head_all_pos_every(get_act_patch_attn_head_all_pos_every)

# %%
every = get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, clean_cache, metric)
px.imshow(
    every.cpu().numpy(),
    facet_col=0,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    title="Denoising each head's output, query, key, value, pattern (facets 0-4)",
).show()

# %% [markdown]
# **What to look for.** In the paper's account of GPT-2 small the S-inhibition heads (7.3,
# 7.9, 8.6, 8.10) carry "the S is the repeated name" from S2 to `end` in their outputs, and
# act on the name movers (9.9, 9.6, 10.0) through the movers' **queries** (Wang et al. 2022,
# section 3). On the toy model, ask the same question of this grid: which heads act through
# their value (content moved from where they attend) and which through their query? The cell
# prints, per component, the heads it moves most.

# %%
for index, component in enumerate(("z", "q", "k", "v", "pattern")):
    grid = every[index].cpu()
    strongest = grid.abs().flatten().argsort(descending=True)[:3].tolist()
    shown = [f"{Head(*divmod(i, model.cfg.n_heads))} ({grid.flatten()[i]:+.2f})" for i in strongest]
    print(f"{component:8}", ", ".join(shown))

# %% [markdown]
# ## Why ABC, and not flipped subjects?
#
# The published GPT-2 small patching figures printed above come from a different corruption:
# each prompt's "flipped" partner, in which the second mention of the subject is the *other*
# name ("When John and Mary went to the shops, Mary gave the bag to"). Scored against the
# original answers, that run prefers the wrong name, so its logit difference is roughly the
# clean one negated. The ABC prompts replace all three names by fresh ones instead.
#
# The two ask different questions. The flipped prompts still contain a repeated name: whatever
# a head computes from "a name occurs twice" is the same in both runs, and patching it changes
# nothing; what differs is *which* name. The ABC prompts remove the repetition itself, so every
# head that depends on it can show up. Both are measured here on the toy, with the same metric
# (0 = the corrupted run, 1 = the clean one):
#
# **Predict, then run.** Which corruption will give the larger effects when single heads are
# patched in, and will any entry of the flipped grid leave the interval [0, 1]?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The cell prints both corrupted logit differences, the correlation of the two head grids and
# each grid's range. On the toy the flipped run's logit difference is negative (the model
# prefers the wrong name), and the two grids rank the heads similarly but not identically:
# the numbers, not a rule, decide which heads a study finds. Whichever you use, say which.
#
# </details>

# %%
flipped = ds.gen_flipped_prompts("ABB->ABA, BAB->BAA")  # S2 becomes the IO's name
print(ds.sentences[0], "|", flipped.sentences[0])
flipped_logit_diff = logits_to_ave_logit_diff(
    model(flipped.toks), answer_tokens, positions=end
).item()
flipped_metric = make_ioi_metric(clean_logit_diff, flipped_logit_diff, answer_tokens, end)
by_corruption = {
    "ABC": patching.get_act_patch_attn_head_out_all_pos(
        model, corrupted_tokens, clean_cache, metric
    ),
    "flipped": patching.get_act_patch_attn_head_out_all_pos(
        model, flipped.toks, clean_cache, flipped_metric
    ),
}
print(f"corrupted logit diff: ABC {corrupted_logit_diff:.3f}, flipped {flipped_logit_diff:.3f}")
print(
    "correlation of the two head grids:",
    f"{patching.correlation(by_corruption['ABC'].cpu(), by_corruption['flipped'].cpu()):.3f}",
)
for name, grid in by_corruption.items():
    print(f"{name:8} range [{grid.min():.3f}, {grid.max():.3f}]")
px.imshow(
    torch.stack(list(by_corruption.values())).cpu().numpy(),
    facet_col=0,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    title="Denoising each head's output: ABC corruption (0) vs flipped subject (1)",
).show()

# %% [markdown]
# The ABC prompts are the paper's choice for path patching and mean ablation, and this
# course's throughout: they take away exactly the repeated-name signal the task is about.
# Whenever a GPT-2 small figure is printed beside the toy's, its line names the corruption.
#
# ## Noising versus denoising
#
# Everything so far was denoising. The library's `activation_patching` runs either direction
# on any sweep of sites, and keeps both baselines, so results come back normalised.

# %%
z_sweep = patching.sweep(model, "z", clean_tokens.shape[1])  # every head, all positions
denoise = patching.activation_patching(
    model, clean_tokens, corrupted_tokens, metric, z_sweep, mode="denoise"
)
noise = patching.activation_patching(
    model, clean_tokens, corrupted_tokens, metric, z_sweep, mode="noise"
)
px.imshow(
    torch.stack([denoise.normalized, noise.normalized]).cpu().numpy(),
    facet_col=0,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    title="Each head's output: denoising (0: what suffices) vs noising (1: what is needed)",
).show()

# %% [markdown]
# Read the noising facet as "fraction of the clean behaviour left when this head is corrupted"
# (1: nothing lost). A head that denoising shows to suffice but noising shows to be
# unnecessary has a backup: another head can do its job (section 6 meets GPT-2's backup name
# movers). A head that noising shows to be needed but whose denoising recovers little works
# only together with others.
#
# ## Attribution patching: a linear shortcut
#
# Exact patching costs one forward pass per site: fine for heads, slow for every neuron or
# every edge. **Attribution patching** replaces each patched run by a first-order Taylor
# expansion around the run being patched:
#
# $$\text{metric}(\text{patched}) \approx \text{metric}(\text{corrupted}) + (a_\text{clean} - a_\text{corrupted}) \cdot \frac{\partial\, \text{metric}}{\partial a}\Big|_\text{corrupted}$$
#
# One forward and one backward pass of the corrupted run, plus a forward pass of the clean run,
# estimate every site at once.
#
# ### Exercise: `attribution_patch_attn_head_out_all_pos`
#
# **Difficulty:** ●●●●○ · **Time:** about 25 minutes
#
# Estimate `get_act_patch_attn_head_out_all_pos` this way: for each head, the dot product runs
# over the whole slice `z[:, :, head, :]` (batch, positions and `d_head`); return the estimated
# *metric*, not the change. Take gradients with `torch.autograd.grad` on activations you saved
# in hooks during the corrupted forward pass (under `torch.enable_grad()`, as this notebook
# turned gradients off).
#
# <details><summary>Hint 1: a nudge</summary>
#
# You need three things per layer: the corrupted z, the gradient of the metric with respect
# to it (both from one corrupted pass with gradients), and the clean z.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# Cache the clean z's; in a `model.hooks` block that saves each `hook_z` activation, compute
# `value = patching_metric(model(corrupted_tokens))` with gradients on; `grads =
# torch.autograd.grad(value, saved_z_list)`; per layer
# `((clean_z - corrupted_z) * grad).sum(dim=(0, 1, 3))` is `[head]`; stack the layers and add
# `value`.
#
# </details>


# %%
def attribution_patch_attn_head_out_all_pos(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
) -> Float[Tensor, "layer head"]:
    """First-order estimate of denoising each head's output (z) at all positions."""
    # EXERCISE: a first-order Taylor step from the corrupted run towards the clean z.
    # SOLUTION
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    with torch.inference_mode():
        _, clean_z = model.run_with_cache(clean_tokens, names_filter=lambda name: name in names)
    saved: dict[str, Tensor] = {}

    def save(activation: Tensor, hook: HookPoint) -> None:
        saved[hook.name] = activation

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[(name, save) for name in names]):
            value = patching_metric(model(corrupted_tokens))
        grads = torch.autograd.grad(value, [saved[name] for name in names])
    estimate = torch.stack(
        [
            ((clean_z[name] - saved[name].detach()) * grad).sum(dim=(0, 1, 3))  # [head]
            for name, grad in zip(names, grads, strict=True)
        ]
    )
    return value.detach() + estimate
    # END SOLUTION


# %%
checks.test_attribution_patch_attn_head_out_all_pos(attribution_patch_attn_head_out_all_pos)

# %% [markdown]
# **Predict, then run.** Patching one head at every position is a large change. How well will
# the linear estimate track the exact values: a correlation near 1, or much lower?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The title prints the correlation measured on this batch; the scatter shows which heads the
# estimate misses. Read the paragraph below the figure for why the two can part.
#
# </details>

# %%
estimate = attribution_patch_attn_head_out_all_pos(model, clean_tokens, corrupted_tokens, metric)
exact = head_out
fig = px.scatter(
    x=exact.flatten().cpu().numpy(),
    y=estimate.flatten().cpu().numpy(),
    hover_name=Head.grid_labels(model.cfg.n_layers, model.cfg.n_heads),
    labels={"x": "exact (activation patching)", "y": "estimate (attribution patching)"},
    title=f"Attribution vs exact patching, per head: r = {patching.correlation(estimate.cpu(), exact.cpu()):.3f}",
)
fig.add_shape(type="line", x0=-0.2, y0=-0.2, x1=1.0, y1=1.0, line={"dash": "dot"})
fig.show()

# %% [markdown]
# **When to trust it.** The estimate is exact for a metric linear in the activation and good
# for small changes. Patching a whole head at every position is not a small change, and
# attention and layer norm are far from linear, so expect the estimates to rank the heads
# sensibly but miss the sizes, sometimes badly (a saturated softmax has almost no gradient).
# Use attribution patching to screen many sites, then confirm the interesting ones exactly.
#
# **Summary.** Denoising finds what suffices, noising what is needed; positions show where
# information moves; q/k/v/pattern patching shows how a head's behaviour changed. What
# patching a head cannot tell you is *which path* its effect takes: through the logits
# directly, or through later heads. Path patching, next, separates those.

# %% [markdown]
# # 4. Path patching
#
# Activation patching a head measures its **total** effect: whatever its output does, directly
# to the logits and through every head downstream of it. To draw a circuit we need the
# *edges*: does head A matter **because it feeds head B**? Path patching answers that by
# letting a change flow along one chosen path only.
#
# **The recipe** (Wang et al. 2022, section 3; here in the direction the paper uses):
#
# 1. Run the **orig** prompts (IOI) and the **new** prompts (ABC) and cache both.
# 2. To measure the path *sender → logits*: run the orig prompts with every head's output
#    **frozen** at its orig value, except the sender, which gets its **new** value. MLPs are
#    recomputed, so the sender's change reaches the logits directly or through MLPs, but
#    never through another head.
# 3. To measure the path *sender → receivers' input* (q, k or v): run step 2's patched run
#    and record the receivers' inputs; then run the orig prompts once more, replacing only the
#    receivers' inputs with those recorded values. Everything else is the orig run.
#
# With the normalised metric (orig = 1, new = 0), a path that matters pulls the metric below
# 1; one that works against the answer pushes it above 1.
#
# This is *noising* along a path: it asks how much the behaviour needs that path. On GPT-2
# small it found the paper's classes (Wang et al. 2022, figure 2): **name movers** (9.9, 9.6,
# 10.0) write the IO to the logits; **S-inhibition** heads (7.3, 7.9, 8.6, 8.10) feed the
# name movers' queries; **induction** and **duplicate-token** heads feed the S-inhibition
# heads' values.

# %% tags=["module"]
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from ioi.dataset import IOIDataset

# %%
import os

import plotly.express as px

import ioi.checks as checks
from ioi import path_patching
from ioi.circuit import PathPatchingOracle, discover_circuit
from ioi.head import Head
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.models import load_model
from ioi.reference import reference_figures

torch.set_grad_enabled(False)
MODEL_NAME = os.environ.get("IOI_MODEL", "toy")
model = load_model(MODEL_NAME, device="auto")
REFERENCE = reference_figures()

N = 16
ioi_dataset = IOIDataset(N=N, prompt_type="mixed", seed=1, tokenizer=model)
abc_dataset = ioi_dataset.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
end, answers = ioi_dataset.word_idx["end"], ioi_dataset.answer_tokens
ioi_logits, ioi_cache = model.run_with_cache(ioi_dataset.toks)
abc_logits, abc_cache = model.run_with_cache(abc_dataset.toks)
ioi_logit_diff = logits_to_ave_logit_diff(ioi_logits, answers, positions=end).item()
abc_logit_diff = logits_to_ave_logit_diff(abc_logits, answers, positions=end).item()
metric = make_ioi_metric(ioi_logit_diff, abc_logit_diff, answers, end)
print(f"orig (IOI) {ioi_logit_diff:.3f}, new (ABC) {abc_logit_diff:.3f}")

# %% [markdown]
# ## Freezing
#
# ### Exercise: `patch_or_freeze_head_vectors`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# A hook for every layer's `hook_z`: overwrite **all** heads with their orig values; then, if
# this hook is in the sender's layer (`hook.layer()`), give the sender head its new value.
# The incoming activation is whatever the patched run computed so far, which is exactly what
# must not leak through.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Start from the orig cache's values, not from the incoming activation, and do not write into
# the cache: `orig_cache[hook.name]` is the cache's own tensor.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `orig_head_vector[...] = orig_cache[hook.name]`; `layer, head = head_to_patch`; if
# `hook.layer() == layer`: `orig_head_vector[:, :, head] = new_cache[hook.name][:, :, head]`;
# return `orig_head_vector`.
#
# </details>


# %%
def patch_or_freeze_head_vectors(
    orig_head_vector: Float[Tensor, "batch pos head d_head"],
    hook: HookPoint,
    new_cache: ActivationCache,
    orig_cache: ActivationCache,
    head_to_patch: tuple[int, int],
) -> Float[Tensor, "batch pos head d_head"]:
    """Hook on z: freeze every head at its orig value, except ``head_to_patch`` = (layer, head), set to new."""
    # EXERCISE: everything frozen at orig; the sender, in its own layer, at new.
    # SOLUTION
    orig_head_vector[...] = orig_cache[hook.name][...]
    layer, head = head_to_patch
    if hook.layer() == layer:
        orig_head_vector[:, :, head] = new_cache[hook.name][:, :, head]
    return orig_head_vector
    # END SOLUTION


# %%
checks.test_patch_or_freeze_head_vectors(patch_or_freeze_head_vectors)

# %% [markdown]
# ## Sender → logits
#
# ### Exercise: `get_path_patch_head_to_final_resid_post`
#
# **Difficulty:** ●●○○○ · **Time:** about 15 minutes
#
# Apply step 2 to every head. A filter function can stand for a hook name:
# `fwd_hooks=[(lambda name: name.endswith("z"), hook_fn)]` hooks every layer's `z`. The
# datasets are `IOIDataset`s (use `.toks`). Use the caches you are given: they may come from
# a hooked or patched run (the checker passes one whose layer-0 head outputs were patched), and
# re-running the model would silently replace them with a plain run. Run the model yourself only
# for a cache that is `None`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# One forward pass of the *orig* prompts per sender, with your hook on every layer's `z`; the
# MLPs get no hook, so they recompute.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# Cache both runs if a cache is missing (`run_with_cache` of `new_dataset.toks` and
# `orig_dataset.toks`); for each `(layer, head)`: `hook_fn = partial(patch_or_freeze_head_vectors,
# new_cache=new_cache, orig_cache=orig_cache, head_to_patch=(layer, head))`;
# `logits = model.run_with_hooks(orig_dataset.toks, fwd_hooks=[(z_filter, hook_fn)])`; store
# `patching_metric(logits)` in a `[layer, head]` grid.
#
# </details>


# %%
def get_path_patch_head_to_final_resid_post(
    model: HookedTransformer,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
    new_dataset: IOIDataset,
    orig_dataset: IOIDataset,
    new_cache: ActivationCache | None = None,
    orig_cache: ActivationCache | None = None,
) -> Float[Tensor, "layer head"]:
    """Path patching from every head to the logits (directly or through MLPs).

    Steps:
        1. Cache the new and orig runs (if not given).
        2. For each head: run the orig prompts with every head frozen at orig and this head
           at new (MLPs recomputed), and record the metric.
    """

    # EXERCISE: one frozen orig run per sender, scored by the metric.
    # SOLUTION
    def z_filter(name: str) -> bool:
        return name.endswith("z")

    if new_cache is None:
        _, new_cache = model.run_with_cache(new_dataset.toks, names_filter=z_filter)  # 1.
    if orig_cache is None:
        _, orig_cache = model.run_with_cache(orig_dataset.toks, names_filter=z_filter)
    results = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, device=model.cfg.device)
    with torch.inference_mode():
        for layer in range(model.cfg.n_layers):  # 2.
            for head in range(model.cfg.n_heads):
                hook_fn = partial(
                    patch_or_freeze_head_vectors,
                    new_cache=new_cache,
                    orig_cache=orig_cache,
                    head_to_patch=(layer, head),
                )
                logits = model.run_with_hooks(orig_dataset.toks, fwd_hooks=[(z_filter, hook_fn)])
                results[layer, head] = patching_metric(logits)
    return results
    # END SOLUTION


# %%
checks.test_get_path_patch_head_to_final_resid_post(get_path_patch_head_to_final_resid_post)

# %% [markdown]
# **Predict, then run.** Section 3's activation patching found heads whose output matters.
# Path patching to the logits keeps only each head's *direct* path. On the toy, will any
# single head's direct path cost the answer more than 10%? Will every head lower the metric?
#
# <details><summary>Answer (open after running the next cells)</summary>
#
# The second cell below prints every head's effect, the heads past the threshold, and the
# heads that *raise* the metric. On the toy no single direct path costs 10%
# (`tests/course/test_claims.py` checks it on this dataset), and not every head lowers the
# metric: the toy spreads the answer over several heads, so removing one path costs only a
# few percent, and some heads push the other way.
#
# </details>

# %%
to_logits = get_path_patch_head_to_final_resid_post(
    model, metric, abc_dataset, ioi_dataset, abc_cache, ioi_cache
)
px.imshow(
    (to_logits - 1).cpu().numpy(),
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "head", "y": "layer", "color": "metric - 1"},
    title="Path patching: each head -> logits (negative: the answer needs this path)",
).show()

# %% [markdown]
# The library's `ioi.path_patching.get_path_patch_head_to_final_resid_post` takes the same
# arguments and returns the same grid, computed for many senders per pass:

# %%
library = path_patching.get_path_patch_head_to_final_resid_post(
    model, metric, abc_dataset, ioi_dataset, abc_cache, ioi_cache
)
print(f"largest difference from yours: {(library - to_logits.cpu()).abs().max().item():.2e}")

# %% [markdown]
# Pick the heads whose direct path the answer needs: the *movers*. The threshold is a choice;
# a small model with redundant heads needs a lower one than GPT-2 small, where the paper's
# name movers each move the metric by much more.

# %%
threshold = 0.02
effects = (to_logits - 1).cpu()
movers = [Head(*divmod(i, model.cfg.n_heads)) for i in range(effects.numel())]
movers = [h for h in movers if effects[h] < -threshold]
raisers = [Head(*divmod(i, model.cfg.n_heads)) for i in range(effects.numel())]
raisers = [h for h in raisers if effects[h] > 0]
print(
    ", ".join(
        f"{Head(*divmod(i, model.cfg.n_heads))} {v:+.3f}"
        for i, v in enumerate(effects.flatten().tolist())
    )
)
print(f"heads whose direct path costs more than {threshold}:", ", ".join(map(str, movers)))
print("heads whose direct path works against the answer:", ", ".join(map(str, raisers)))

# %% [markdown]
# ## Sender → receivers
#
# ### Exercise: `patch_head_input`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# Step 3's second run needs a hook that overwrites the receivers' input (their `q`, `k` or `v`,
# all `[batch, pos, head, d_head]`) with values recorded earlier, for the receiver heads in
# this hook's layer only.
#
# <details><summary>Hint 1: a nudge</summary>
#
# `head_list` may name heads of several layers; this hook sees one layer.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `heads = [h for layer, h in head_list if layer == hook.layer()]`;
# `orig_activation[:, :, heads] = patched_cache[hook.name][:, :, heads]`; return it.
#
# </details>


# %%
def patch_head_input(
    orig_activation: Float[Tensor, "batch pos head d_head"],
    hook: HookPoint,
    patched_cache: ActivationCache,
    head_list: list[tuple[int, int]],
) -> Float[Tensor, "batch pos head d_head"]:
    """Hook on q/k/v: overwrite the heads of ``head_list`` in this layer with ``patched_cache`` values."""
    # EXERCISE: only the receivers that live in this hook's layer.
    # SOLUTION
    heads = [head for layer, head in head_list if layer == hook.layer()]
    orig_activation[:, :, heads] = patched_cache[hook.name][:, :, heads]
    return orig_activation
    # END SOLUTION


# %%
checks.test_patch_head_input(patch_head_input)

# %% [markdown]
# ### Exercise: `get_path_patch_head_to_heads`
#
# **Difficulty:** ●●●○○ · **Time:** about 25 minutes
#
# Every head in a layer below the highest receiver can send; return a `[n_layers, n_heads]`
# grid whose rows at and above the highest receiver layer are **NaN**: nothing there can
# reach the receivers, and a 0 would read as a measured value (for this metric, a huge one:
# "no effect" is 1). Record the receivers' inputs with `run_with_cache` inside
# `with model.hooks(fwd_hooks=...)`. As before, read `new_cache` and `orig_cache` when they are
# given, and run the model only for a cache that is `None`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Two runs per sender. The first is step 2 of the recipe, recording the receivers' input; the
# second is a plain orig run in which *only* the receivers' input is replaced. If the freezing
# hooks stay on in the second run, you get the sender -> logits grid back.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `top = max(layer for layer, _ in receiver_heads)`; `results = torch.full((n_layers,
# n_heads), float("nan"))`; for each sender below `top`: (a) `with
# model.hooks(fwd_hooks=[(z_filter, freeze)]): _, patched = model.run_with_cache(orig_toks,
# names_filter=input_filter)`; (b) `logits = model.run_with_hooks(orig_toks,
# fwd_hooks=[(input_filter, partial(patch_head_input, patched_cache=patched,
# head_list=receiver_heads))])`; store the metric.
#
# </details>


# %%
def get_path_patch_head_to_heads(
    receiver_heads: list[tuple[int, int]],
    receiver_input: str,
    model: HookedTransformer,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
    new_dataset: IOIDataset,
    orig_dataset: IOIDataset,
    new_cache: ActivationCache | None = None,
    orig_cache: ActivationCache | None = None,
) -> Float[Tensor, "layer head"]:
    """Path patching from every earlier head to the receivers' ``receiver_input`` ("q", "k" or "v").

    Steps:
        1. Cache the new and orig runs (if not given).
        2. For each sender below the top receiver layer: run the orig prompts with every head
           frozen at orig and the sender at new (MLPs recomputed); record the receivers' inputs.
        3. Run the orig prompts with only the receivers' inputs replaced by those records, and
           record the metric. Rows that cannot reach the receivers are NaN.
    """
    # EXERCISE: two runs per sender (record, then replay into the receivers only); NaN rows above.
    # SOLUTION
    input_names = {get_act_name(receiver_input, layer) for layer, _ in receiver_heads}

    def z_filter(name: str) -> bool:
        return name.endswith("z")

    def input_filter(name: str) -> bool:
        return name in input_names

    if new_cache is None:
        _, new_cache = model.run_with_cache(new_dataset.toks, names_filter=z_filter)  # 1.
    if orig_cache is None:
        _, orig_cache = model.run_with_cache(orig_dataset.toks, names_filter=z_filter)
    top = max(layer for layer, _ in receiver_heads)
    results = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
    with torch.inference_mode():
        for layer in range(top):
            for head in range(model.cfg.n_heads):
                freeze = partial(
                    patch_or_freeze_head_vectors,
                    new_cache=new_cache,
                    orig_cache=orig_cache,
                    head_to_patch=(layer, head),
                )
                with model.hooks(fwd_hooks=[(z_filter, freeze)]):  # 2.
                    _, patched_cache = model.run_with_cache(
                        orig_dataset.toks, names_filter=input_filter
                    )
                patch = partial(
                    patch_head_input, patched_cache=patched_cache, head_list=receiver_heads
                )
                logits = model.run_with_hooks(
                    orig_dataset.toks, fwd_hooks=[(input_filter, patch)]
                )  # 3.
                results[layer, head] = patching_metric(logits)
    return results
    # END SOLUTION


# %%
checks.test_get_path_patch_head_to_heads(get_path_patch_head_to_heads)

# %% [markdown]
# ## Who feeds the movers?
#
# Send every earlier head into the movers' queries, keys and values in turn. Which movers?
# On GPT-2 small, the paper's name movers (9.9, 9.6, 10.0, from the reference file), so that
# this notebook repeats the paper's experiment; on any other model, the movers that circuit
# discovery (`ioi.circuit.discover_circuit`, section 5) finds with the threshold above,
# printed next to yours.

# %%
if MODEL_NAME.startswith("gpt2"):
    receivers = [Head.parse(h) for h in REFERENCE["paper"]["circuit"]["name_mover"]]
else:
    discovered = discover_circuit(PathPatchingOracle(model, ioi_dataset, abc_dataset), threshold)
    receivers = [f.head for f in discovered.findings if f.role == "logits" and f.effect < 0]
print(
    "receivers:",
    ", ".join(map(str, receivers)),
    "  (your movers:",
    ", ".join(map(str, movers)) + ")",
)
top = max(layer for layer, _ in receivers)

# %% [markdown]
# **Predict, then run.** Section 2 found that the toy's movers attend from `end` to S2, and
# that layer-0 heads at S2 attend to the IO. Which input of the movers will the earlier
# heads feed most: their queries, keys or values?
#
# <details><summary>Answer (open after running the next cells)</summary>
#
# The cell after the figure prints the largest effect per input and the strongest senders.
# On the toy the values carry the largest effect and the queries the smallest (checked in
# `tests/course/test_claims.py`): the movers do not need to be told *where* to look (they
# look at S2 anyway), they need *what* is there.
#
# </details>

# %%
grids = torch.stack(
    [
        get_path_patch_head_to_heads(
            receivers, part, model, metric, abc_dataset, ioi_dataset, abc_cache, ioi_cache
        )
        for part in ("q", "k", "v")
    ]
)
px.imshow(
    (grids - 1).cpu().numpy(),
    facet_col=0,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "head", "y": "layer", "color": "metric - 1"},
    title="Path patching: each earlier head -> the receivers' q (0), k (1), v (2)",
).show()
print(
    f"Blank rows (layer {top} and above) are NaN: those heads sit at or above the highest "
    "receiver's layer and cannot reach it, so nothing was measured there."
)

# %% [markdown]
# Numbers beat eyeballing. For each input, list the strongest senders next to two attention
# scores from section 2: how much the sender, at S2, attends to the IO, and how much it acts as
# a previous-token head (`S1+1 -> S1`).

# %%
from ioi.heads import ioi_attention

s2_to_io = ioi_attention(model, ioi_dataset, "S2", "IO", ioi_cache)
previous = ioi_attention(model, ioi_dataset, "S1+1", "S1", ioi_cache)
for index, part in enumerate(("q", "k", "v")):
    part_effects = (grids[index, :top] - 1).cpu()
    print(f"{part}: largest |effect| {part_effects.abs().max():.3f}")
    for flat in part_effects.flatten().argsort()[:3].tolist():
        sender = Head(*divmod(flat, model.cfg.n_heads))
        print(
            f"   sender {sender} effect {part_effects[sender]:+.3f}   "
            f"attention S2->IO {s2_to_io[sender]:.2f}, S1+1->S1 {previous[sender]:.2f}"
        )

# %% [markdown]
# **Reading the toy model.** The paths into the queries and keys cost a few percent of the gap
# at most; only the values' strongest senders cost more (the printed largest |effect| per
# input). The toy spreads its work over several heads, so the ranking matters more than the
# size. The printout says which layer-0 heads feed the movers' values and keys
# and what those heads attend to. Together with section 2 that suggests the toy's circuit:
#
# 1. layer-0 heads at **S2** attend to the name that is not repeated (the IO) and write it
#    into S2's residual stream, and a previous-token head shapes what S2 offers as a key;
# 2. layer-1 and layer-2 heads at **end** attend to **S2** and copy what they find there to
#    the logits.
#
# In the paper's account GPT-2 small does it differently: induction and duplicate-token
# heads at S2 mark "this name is repeated"; S-inhibition heads move that to `end`, where their
# output steers the name movers' **queries** away from the S, and the name movers copy the
# remaining name, the IO. Both reach the same answer: "find the name that occurs once" can be
# computed by suppressing the repeated name or by locating the unrepeated one early. Run this
# notebook with `IOI_MODEL=gpt2-small` to measure which it is there; this course has not run
# it (no GPT-2 weights on its machines), so it makes no claim about the result.
#
# ## Path patching at chosen positions
#
# The paper patches at specific positions only: senders at `end` into the name movers'
# queries at `end`, and senders at S2 into the keys and values the movers read at S2. A
# position restricts both ends of the path: the sender's new value is used only at its
# position, and the receivers' input is replaced only at theirs.
#
# ### Exercise: `path_patch_head_to_heads_at`
#
# **Difficulty:** ●●●○○ · **Time:** about 20 minutes
#
# Path patching from every earlier head to the receivers' input, with the sender patched only
# at `word_idx[sender_position]` of each prompt and the receivers' input replaced only at
# `word_idx[receiver_position]` (`None`: every position). Rows that cannot reach the
# receivers are NaN, as before.
#
# <details><summary>Hint 1: a nudge</summary>
#
# Every prompt has its own S2 and `end`: build a `[batch, pos]` mask from `word_idx` for each
# end of the path and use it in both hooks.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `mask = torch.zeros(batch, pos, dtype=torch.bool); mask[torch.arange(batch),
# word_idx[key]] = True` (all True for `None`). In the freezing hook, after freezing, write the
# sender's new value only where the sender mask is True (`torch.where(mask[..., None], new,
# frozen)`); in the receivers' hook, replace their input only where the receiver mask is True.
# Everything else as in `get_path_patch_head_to_heads`.
#
# </details>


# %%
def path_patch_head_to_heads_at(
    receiver_heads: list[tuple[int, int]],
    receiver_input: str,
    model: HookedTransformer,
    patching_metric: Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]],
    new_dataset: IOIDataset,
    orig_dataset: IOIDataset,
    sender_position: str | None,
    receiver_position: str | None,
) -> Float[Tensor, "layer head"]:
    """`get_path_patch_head_to_heads` with the sender and the receivers patched at one word each."""
    # EXERCISE: the same two runs, each patch limited to one word_idx position per prompt.
    # SOLUTION
    orig_toks = orig_dataset.toks
    batch, n_pos = orig_toks.shape

    def mask_of(key: str | None) -> Tensor:
        mask = torch.ones(batch, n_pos, dtype=torch.bool, device=model.cfg.device)
        if key is not None:
            mask[:] = False
            mask[torch.arange(batch), orig_dataset.word_idx[key]] = True
        return mask  # [batch, pos]

    sender_mask, receiver_mask = mask_of(sender_position), mask_of(receiver_position)
    input_names = {get_act_name(receiver_input, layer) for layer, _ in receiver_heads}

    def z_filter(name: str) -> bool:
        return name.endswith("z")

    def input_filter(name: str) -> bool:
        return name in input_names

    _, new_cache = model.run_with_cache(new_dataset.toks, names_filter=z_filter)
    _, orig_cache = model.run_with_cache(orig_toks, names_filter=z_filter)

    def freeze(z: Tensor, hook: HookPoint, sender: tuple[int, int]) -> Tensor:
        z[...] = orig_cache[hook.name]
        if hook.layer() == sender[0]:
            new = new_cache[hook.name][:, :, sender[1]]
            z[:, :, sender[1]] = torch.where(sender_mask[..., None], new, z[:, :, sender[1]])
        return z

    def replay(act: Tensor, hook: HookPoint, recorded: ActivationCache) -> Tensor:
        for layer, head in receiver_heads:
            if layer == hook.layer():
                new = recorded[hook.name][:, :, head]
                act[:, :, head] = torch.where(receiver_mask[..., None], new, act[:, :, head])
        return act

    top = max(layer for layer, _ in receiver_heads)
    results = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
    with torch.inference_mode():
        for layer in range(top):
            for head in range(model.cfg.n_heads):
                with model.hooks(fwd_hooks=[(z_filter, partial(freeze, sender=(layer, head)))]):
                    _, recorded = model.run_with_cache(orig_toks, names_filter=input_filter)
                hook_fn = partial(replay, recorded=recorded)
                logits = model.run_with_hooks(orig_toks, fwd_hooks=[(input_filter, hook_fn)])
                results[layer, head] = patching_metric(logits)
    return results
    # END SOLUTION


# %%
checks.test_path_patch_head_to_heads_at(path_patch_head_to_heads_at)

# %% [markdown]
# **Predict, then run.** Patch the senders at S2 only, and the receivers' queries at `end`
# only. With every other head frozen, what can the grid show?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# Nothing: every entry is 1 (the cell prints the largest deviation, which
# `tests/course/test_claims.py` checks is below 1e-5 on the toy). A sender's output at S2
# enters the residual stream at S2; only attention moves information between positions, and
# every head is frozen, so nothing can carry it to the receivers' queries at `end`. Path
# patching at positions measures a path *through one position*: senders at `end` for the
# queries at `end`, senders at S2 for what the movers read at S2.
#
# </details>

# %%
settings = [("S2", "end", "q"), ("end", "end", "q"), ("S2", "S2", "k"), ("S2", "S2", "v")]
at_positions = {}
for sender_at, receiver_at, part in settings:
    grid = path_patch_head_to_heads_at(
        receivers, part, model, metric, abc_dataset, ioi_dataset, sender_at, receiver_at
    )
    at_positions[sender_at, receiver_at, part] = grid
    print(
        f"senders at {sender_at:4} -> receivers' {part} at {receiver_at:4}: largest |effect| "
        f"{(grid[:top] - 1).abs().max():.5f}"
    )
px.imshow(
    (torch.stack(list(at_positions.values())) - 1).cpu().numpy(),
    facet_col=0,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "head", "y": "layer", "color": "metric - 1"},
    title="At positions: "
    + "; ".join(f"{i}: {s} -> {p}@{r}" for i, (s, r, p) in enumerate(settings)),
).show()
print(f"Blank rows (layer {top} and above) are NaN: those heads cannot reach the receivers.")

# %% [markdown]
# The library's `get_path_patch_head_to_heads` takes `sender_positions` and
# `receiver_positions` for the same purpose. And the recursion you did by hand, from the
# logits backwards one layer of receivers at a time, is automated by
# `ioi.circuit.discover_circuit`, which section 5 uses to build and score whole circuits.

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
# small it found the paper's classes: **name movers** (9.9, 9.6, 10.0) write the IO to the
# logits; **S-inhibition** heads (7.3, 7.9, 8.6, 8.10) feed the name movers' queries;
# **induction** and **duplicate-token** heads feed the S-inhibition heads' values.

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
# A hook for every layer's `hook_z`: overwrite **all** heads with their orig values; then, if
# this hook is in the sender's layer (`hook.layer()`), give the sender head its new value.
# The incoming activation is whatever the patched run computed so far, which is exactly what
# must not leak through.


# %%
def patch_or_freeze_head_vectors(
    orig_head_vector: Float[Tensor, "batch pos head d_head"],
    hook: HookPoint,
    new_cache: ActivationCache,
    orig_cache: ActivationCache,
    head_to_patch: tuple[int, int],
) -> Float[Tensor, "batch pos head d_head"]:
    """Hook on z: freeze every head at its orig value, except ``head_to_patch`` = (layer, head), set to new."""
    # EXERCISE: overwrite the whole activation with orig_cache[hook.name]; then patch the sender's
    # EXERCISE: head from new_cache[hook.name] if head_to_patch[0] == hook.layer().
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
# Apply step 2 to every head. A filter function can stand for a hook name:
# `fwd_hooks=[(lambda name: name.endswith("z"), hook_fn)]` hooks every layer's `z`. The
# datasets are `IOIDataset`s (use `.toks`); run the model yourself if a cache is `None`.


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

    # EXERCISE: loop over (layer, head); hook every z with patch_or_freeze_head_vectors bound
    # EXERCISE: by partial; run orig_dataset.toks; store patching_metric(logits).
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
# **What to look for.** On GPT-2 small this grid picks out the name movers (9.9, 9.6, 10.0:
# well below 1) and the negative name movers (10.7, 11.10: above 1). On the toy model every
# head of layers 1 and 2 lowers the metric a little and none by much: the toy spreads the
# answer over all eight heads, so removing one path costs only a few percent. That is
# redundancy, and the reason single-head effects must be read against the whole grid.
#
# Pick the heads that write the answer: the *movers*. The threshold is a choice, and a small
# model with redundant heads needs a lower one than GPT-2 small, where the paper's name movers
# each move the metric by 10-30%.

# %%
from ioi.head import Head

threshold = 0.02
movers = [
    Head(layer, head)
    for layer in range(model.cfg.n_layers)
    for head in range(model.cfg.n_heads)
    if to_logits[layer, head] < 1 - threshold
]
print("heads whose direct path the answer needs:", ", ".join(map(str, movers)))

# %% [markdown]
# ## Sender → receivers
#
# ### Exercise: `patch_head_input`
#
# Step 3's second run needs a hook that overwrites the receivers' input (their `q`, `k` or `v`,
# all `[batch, pos, head, d_head]`) with values recorded earlier, for the receiver heads in
# this hook's layer only.


# %%
def patch_head_input(
    orig_activation: Float[Tensor, "batch pos head d_head"],
    hook: HookPoint,
    patched_cache: ActivationCache,
    head_list: list[tuple[int, int]],
) -> Float[Tensor, "batch pos head d_head"]:
    """Hook on q/k/v: overwrite the heads of ``head_list`` in this layer with ``patched_cache`` values."""
    # EXERCISE: select the heads of head_list whose layer is hook.layer(), then patch them.
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
# Every head in a layer below the highest receiver can send; return a `[n_layers, n_heads]`
# grid whose rows at and above the highest receiver layer stay 0 (nothing there can reach the
# receivers). Record the receivers' inputs with `run_with_cache` inside
# `with model.hooks(fwd_hooks=...)`.


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
           record the metric.
    """
    # EXERCISE: for each sender: (2) hooks = patch_or_freeze_head_vectors on every z, cache the
    # EXERCISE: receivers' inputs; (3) run again with patch_head_input on those inputs; metric.
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
    results = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, device=model.cfg.device)
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
# Send every earlier head into the movers' queries, keys and values in turn. On GPT-2 small
# the movers' **queries** light up: the S-inhibition heads tell the name movers where *not*
# to look. Which input lights up on your model?

# %%
last_layer = max(layer for layer, _ in movers)
receivers = [head for head in movers if head.layer == last_layer]
grids = torch.stack(
    [
        get_path_patch_head_to_heads(
            receivers, part, model, metric, abc_dataset, ioi_dataset, abc_cache, ioi_cache
        )
        for part in ("q", "k", "v")
    ]
)
top = max(layer for layer, _ in receivers)
print("receivers:", ", ".join(map(str, receivers)))
px.imshow(
    (grids[:, :top] - 1).cpu().numpy(),
    facet_col=0,
    color_continuous_scale="RdBu",
    color_continuous_midpoint=0.0,
    labels={"x": "head", "y": "layer", "color": "metric - 1"},
    title="Path patching: each earlier head -> the receivers' q (0), k (1), v (2)",
).show()

# %% [markdown]
# Numbers beat eyeballing. For each input, list the strongest senders next to two attention
# scores from section 2: how much the sender, at S2, attends to the IO, and how much it acts as
# a previous-token head (`S1+1 -> S1`).

# %%
from ioi.heads import ioi_attention

s2_to_io = ioi_attention(model, ioi_dataset, "S2", "IO", ioi_cache)
previous = ioi_attention(model, ioi_dataset, "S1+1", "S1", ioi_cache)
for index, part in enumerate(("q", "k", "v")):
    effects = (grids[index, :top] - 1).cpu()
    for flat in effects.flatten().argsort()[:3].tolist():
        sender = Head(*divmod(flat, model.cfg.n_heads))
        print(
            f"{part}: sender {sender} effect {effects[sender]:+.3f}   "
            f"attention S2->IO {s2_to_io[sender]:.2f}, S1+1->S1 {previous[sender]:.2f}"
        )

# %% [markdown]
# **Reading the toy model.** Every effect here is a few percent of the gap at most: the toy
# spreads its work over many heads, so any single path is small, and the ranking matters more
# than the size. On the toy the receivers' **queries** hardly matter. Their **values** are fed
# most by a layer-0 head that attends from S2 to the IO; their **keys** by a previous-token
# head. Together with section 2, that gives the toy's circuit:
#
# 1. layer-0 heads at **S2** attend to the name that is not repeated (the IO) and write it
#    into S2's residual stream, and previous-token heads shape what S2 offers as a key;
# 2. layer-1 and layer-2 heads at **end** attend to **S2** and copy what they find there (the
#    IO) to the logits.
#
# GPT-2 small does it differently: induction and duplicate-token heads at S2 mark "this name
# is repeated"; S-inhibition heads move that to `end`, where their output steers the name
# movers' **queries** away from the S, and the name movers copy the remaining name, the IO.
# Both circuits reach the same answer: "find the name that occurs once" can be computed by
# suppressing the repeated name (GPT-2) or by locating the unrepeated one early (toy). Run
# this notebook with `IOI_MODEL=gpt2-small` and the query facet lights up at 7.3, 7.9, 8.6 and
# 8.10 instead.
#
# The paper also patches at specific positions only (senders at S2 or `end`, receivers' q at
# `end`). The library's functions take `sender_positions` and `receiver_positions` for that,
# e.g. `receiver_positions="end"`. And the recursion you just did by hand, from the logits
# backwards one layer of receivers at a time, is automated by `ioi.circuit.discover_circuit`,
# which section 5 uses to score whole circuits.

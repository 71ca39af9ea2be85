# %% [markdown]
# # 5. Replicating the paper: head classes and the three criteria
#
# Sections 2 to 4 found *where* the IOI computation happens. The paper goes on to say *what
# each head does* and *whether the circuit explains the model*. This section rebuilds both.
#
# **What a head does**, from its weights and from its attention on controlled inputs:
#
# - **Copying score**: does the head's OV circuit, fed a name, raise that same name's logit?
#   Name movers should copy; negative name movers should copy with a minus sign.
# - **Attention detectors** on sequences of random tokens repeated twice: a *previous-token*
#   head attends to the token before; a *duplicate-token* head attends from a token's second
#   occurrence to its first; an *induction* head attends to the token *after* the first
#   occurrence (predicting that the sequence repeats).
#
# **Whether the circuit explains the model**, by knocking out everything else. The paper
# replaces each head's output outside the circuit by its **mean over the ABC prompts of the
# same template** (so positions line up), keeps each circuit head only at the position its
# class works at (name movers at `end`, induction heads at S2, ...), and defines
# $F(X)$ = the logit difference with only $X$ left working. Then:
#
# - **Faithfulness**: $F(C) \approx F(M)$: the circuit alone does what the model does.
# - **Completeness**: for subsets $K \subseteq C$, $|F(C \setminus K) - F(M \setminus K)|$
#   is small: knocking out part of the circuit hurts the circuit as much as the model, so no
#   important head was left out.
# - **Minimality**: every head $v \in C$ matters for some $K$:
#   $|F(C \setminus (K \cup \{v\})) - F(C \setminus K)|$ is large.

# %% tags=["module"]
from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.circuit import Circuit, Faithfulness, KnockoutScore, MeanAblation, TemplateMeans
from ioi.dataset import IOIDataset
from ioi.head import Head
from ioi.heads import NameMoverScatter, name_tokens, repeated_tokens

# %%
import os

import plotly.express as px
from plotly.subplots import make_subplots

import ioi.checks as checks
from ioi.circuit import PathPatchingOracle, discover_circuit, gpt2_small_circuit
from ioi.circuit.ablation import logit_diff_with_hooks, template_means
from ioi.circuit.discovery import DiscoveredCircuit
from ioi.heads import ioi_attention, per_head_logit_diffs
from ioi.models import load_model
from ioi.path_patching import get_path_patch_head_to_final_resid_post
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.reference import provenance, reference_figures
from ioi.report.figures import circuit_graph, name_mover_scatter_figure

torch.set_grad_enabled(False)
MODEL_NAME = os.environ.get("IOI_MODEL", "toy")
GPT2 = MODEL_NAME.startswith("gpt2")
model = load_model(MODEL_NAME, device="auto")
PAPER = reference_figures()["paper"]
labels = {"x": "head", "y": "layer"}

# %% [markdown]
# ## Copying scores
#
# The paper feeds each name through the model's "extended embedding" (the token embedding plus
# block 0's MLP, which GPT-2 uses as part of its embedding), the head's layer norm, the
# head's OV matrix $W_V W_O$, the final layer norm and the unembedding, and asks whether the
# name itself is among the top 5 logits. The score is the fraction of names for which it is.
#
# ### Exercise: `get_copying_scores`
#
# **Difficulty:** ●●●○○ · **Time:** about 20 minutes
#
# <details><summary>Hint 1: a nudge</summary>
#
# Treat each name as a one-token sequence: `model.embed(tokens[:, None])` is
# `[name, 1, d_model]`, and every block method (`ln1`, `apply_mlp`, `ln_final`, `unembed`)
# takes that shape. `k`, `names` and `negative` are all arguments: use each.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `resid = embed + blocks[0].apply_mlp(blocks[0].ln2(embed))`; per layer `normed =
# blocks[layer].ln1(resid)`; per head `out = normed @ W_V[layer, head] @ W_O[layer, head]`
# (negated if `negative`: negate the output, do not take the bottom k); `logits =
# model.unembed(model.ln_final(out))[:, 0]`; the score is
# `(logits.topk(k).indices == tokens[:, None]).any(-1).float().mean()`.
#
# </details>


# %%
def get_copying_scores(
    model: HookedTransformer,
    names: list[str] | Int[Tensor, " name"] | None = None,
    k: int = 5,
    negative: bool = False,
) -> Float[Tensor, "layer head"]:
    """Fraction of names each head's OV circuit puts among its own top-``k`` logits."""
    # EXERCISE: each name through the head's OV circuit; is the name itself among the top k?
    # SOLUTION
    tokens = names if isinstance(names, Tensor) else name_tokens(model, names)
    tokens = tokens.to(model.cfg.device)
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.inference_mode():
        embed = model.embed(tokens[:, None])  # [name, 1, d_model]: a batch of 1-token "sequences"
        resid = embed
        if not model.cfg.attn_only:
            resid = embed + model.blocks[0].apply_mlp(model.blocks[0].ln2(embed))
        for layer in range(model.cfg.n_layers):
            normed = model.blocks[layer].ln1(resid)
            for head in range(model.cfg.n_heads):
                out = normed @ model.W_V[layer, head] @ model.W_O[layer, head]
                logits = model.unembed(model.ln_final(-out if negative else out))[:, 0]
                top = logits.topk(k, dim=-1).indices  # [name, k]
                scores[layer, head] = (top == tokens[:, None]).any(-1).float().mean()
    return scores
    # END SOLUTION


# %%
checks.test_get_copying_scores(get_copying_scores)

# %% [markdown]
# **Predict, then run.** The paper's name movers copy the name they attend to. The toy's
# layer-1 and layer-2 heads write the IO (section 2). Will they have high copying scores?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# No: the cell prints each layer's best score, and on the toy the copiers are the
# **layer-0** heads while the layer-1 and layer-2 heads score low (checked in
# `tests/course/test_claims.py`). What the later heads read at S2 is not a raw name
# embedding but what layer 0 wrote there; a copying score tests one particular input, and a
# head can move names in a format the test does not feed it.
#
# </details>

# %%
copying = torch.stack([get_copying_scores(model), get_copying_scores(model, negative=True)])
px.imshow(
    copying.numpy(),
    facet_col=0,
    zmin=0,
    zmax=1,
    color_continuous_scale="Blues",
    labels=labels,
    title="Copying scores: positive (0) and negative (1)",
).show()
for layer in range(model.cfg.n_layers):
    print(f"layer {layer}: best copying score {copying[0, layer].max():.2f}")
print("GPT-2 small, published:", PAPER["copy_scores_top5"])
print(provenance("paper"))

# %% [markdown]
# By the paper's figures, in GPT-2 small the name movers copy (9.9 scores 1.0, 9.6 and 10.0
# 0.945) and the negative name movers copy negatively (10.7 and 11.10 both 1.0), against
# about 0.1 for an average head.
#
# ## Attention detectors
#
# `ioi.heads.repeated_tokens(model, seq_len, batch, seed)` returns `[BOS, t_1 .. t_L, t_1 ..
# t_L]` with random tokens. In the second copy, position `d` (from `L + 1` to `2L`) holds the
# same token as position `d - L`:
#
# - previous-token score: mean attention from each position `d` to `d - 1` (every position);
# - duplicate-token score: from `d` to `d - L`, second copy only;
# - induction score: from `d` to `d - L + 1` (the token that followed the first occurrence),
#   second copy only.
#
# ### Exercise: `get_attn_scores`
#
# **Difficulty:** ●●○○○ · **Time:** about 15 minutes
#
# Any other `kind` (a typo such as `"induction_head"`) raises `ValueError` naming the valid
# kinds, rather than silently returning another detector's scores.
#
# <details><summary>Hint 1: a nudge</summary>
#
# All three scores are means along one diagonal of the pattern; they differ in the offset and
# in which destinations count. Pass `seq_len`, `batch` and `seed` on to `repeated_tokens`.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# Previous token: `pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, -1))`. Duplicate and
# induction: `dest = torch.arange(L + 1, 2L + 1)`, `src = dest - L` (plus 1 for induction),
# `pattern[:, :, dest, src].mean((0, -1))`. Stack the layers.
#
# </details>


# %%
def get_attn_scores(
    model: HookedTransformer, seq_len: int, batch: int, seed: int, kind: str
) -> Float[Tensor, "layer head"]:
    """One detector's [layer, head] scores on seeded repeated random tokens.

    Args:
        kind: ``"previous_token"``, ``"duplicate_token"`` or ``"induction"``.
    """
    # EXERCISE: one diagonal of each pattern, chosen by `kind`, averaged.
    # SOLUTION
    kinds = ("previous_token", "duplicate_token", "induction")
    if kind not in kinds:
        raise ValueError(f"unknown kind {kind!r}; choose one of {kinds}")
    toks = repeated_tokens(model, seq_len, batch, seed).to(model.cfg.device)
    with torch.inference_mode():
        _, cache = model.run_with_cache(toks, names_filter=lambda name: name.endswith("pattern"))
    dest = torch.arange(seq_len + 1, 2 * seq_len + 1)  # the second copy
    src = dest - seq_len + (1 if kind == "induction" else 0)
    scores = []
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer].cpu()  # [batch, head, dest, src]
        if kind == "previous_token":
            scores.append(pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, -1)))
        else:
            scores.append(pattern[:, :, dest, src].mean((0, -1)))
    return torch.stack(scores)
    # END SOLUTION


# %%
checks.test_get_attn_scores(get_attn_scores)

# %%
kinds = ("previous_token", "duplicate_token", "induction")
detectors = torch.stack([get_attn_scores(model, 20, 16, 0, kind) for kind in kinds])
px.imshow(
    detectors.numpy(),
    facet_col=0,
    zmin=0,
    zmax=1,
    color_continuous_scale="Blues",
    labels=labels,
    title="Previous-token (0), duplicate-token (1), induction (2) scores on repeated random tokens",
).show()
for kind, grid in zip(kinds, detectors, strict=True):
    print(f"{kind:16} highest score {grid.max():.2f}")
print({kind: PAPER["circuit"][kind] for kind in kinds}, "(the paper's heads of each class)")

# %% [markdown]
# The paper finds its previous-token, duplicate-token and induction heads in GPT-2 small with
# detectors like these. On the toy the printed maxima are low: it never saw random token
# sequences (it was trained on IOI sentences only), so a detector built on random tokens asks
# it something it has no reason to answer. Measure the same relations on the prompts the
# model knows instead: on IOI prompts, "previous token" is `S1+1 -> S1` and "duplicate" is
# `S2 -> S1`.

# %%
ds = IOIDataset(N=60, prompt_type="BABA", seed=2, tokenizer=model)
abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
on_prompts = torch.stack(
    [
        ioi_attention(model, ds, "S1+1", "S1"),
        ioi_attention(model, ds, "S2", "S1"),
        ioi_attention(model, ds, "S2", "IO"),
    ]
)
px.imshow(
    on_prompts.numpy(),
    facet_col=0,
    zmin=0,
    zmax=1,
    color_continuous_scale="Blues",
    labels=labels,
    title="On IOI prompts: S1+1 -> S1 (0), S2 -> S1 (1), S2 -> IO (2)",
).show()

# %% [markdown]
# ## The name-mover scatter
#
# The paper's figure 3 tests what a name mover does prompt by prompt: for each prompt, the
# head's attention from `end` to a name (x) against the dot product of the head's output at
# `end` with that name's unembedding `W_U[:, name]` (y). A head that copies what it attends
# to puts the IO points on a rising line: the more it attends to the IO, the more it writes
# the IO.
#
# ### Exercise: `name_mover_scatter`
#
# **Difficulty:** ●●○○○ · **Time:** about 15 minutes
#
# Return a `NameMoverScatter(layer, head, attn_to_io, attn_to_s, proj_io, proj_s)`: per
# prompt, the attention from `end` to the IO and to the S (both mentions, S1 plus S2), and the
# head's output at `end`, `z @ W_O` (no bias), dotted with `W_U[:, IO]` and `W_U[:, S]`.
#
# <details><summary>Hint 1: a nudge</summary>
#
# One cached run gives the head's pattern and z. Every prompt has its own `end`, IO, S1 and S2.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `pattern = cache["pattern", layer][:, head]` (`[batch, dest, src]`); `attn_to_io =
# pattern[rows, end, word_idx["IO"]]`, `attn_to_s` the sum for `"S1"` and `"S2"`; `out =
# cache["z", layer][rows, end, head] @ model.W_O[layer, head]`; `proj_io = (out *
# model.W_U[:, ds.io_tokenIDs].T).sum(-1)`, `proj_s` the same with `ds.s_tokenIDs`.
#
# </details>


# %%
def name_mover_scatter(
    model: HookedTransformer, ds: IOIDataset, layer: int, head: int
) -> NameMoverScatter:
    """Per prompt: attention from end to IO and S, and the head's output on each name's unembedding."""
    # EXERCISE: attention from end to each name, and the head's output on each name's direction.
    # SOLUTION
    _, cache = model.run_with_cache(ds.toks)
    rows, end, idx = torch.arange(ds.N), ds.word_idx["end"], ds.word_idx
    pattern = cache["pattern", layer][:, head].cpu()  # [batch, dest, src]
    out = (
        cache["z", layer][rows, end, head].cpu() @ model.W_O[layer, head].cpu()
    )  # [batch, d_model]
    W_U = model.W_U.cpu()
    return NameMoverScatter(
        layer=layer,
        head=head,
        attn_to_io=pattern[rows, end, idx["IO"]],
        attn_to_s=pattern[rows, end, idx["S1"]] + pattern[rows, end, idx["S2"]],
        proj_io=(out * W_U[:, ds.io_tokenIDs].T).sum(-1),
        proj_s=(out * W_U[:, ds.s_tokenIDs].T).sum(-1),
    )
    # END SOLUTION


# %%
checks.test_name_mover_scatter(name_mover_scatter)

# %% [markdown]
# **Predict, then run.** Take the toy head with the largest DLA and a layer-0 head that
# attends to the IO. For each, will the IO points rise with the attention to the IO?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The cell prints each head's mean attention to the IO and to the S, its mean projections,
# and the correlation of attention and projection on the IO. On the toy the top mover puts
# almost no attention on the IO, nearly all on the S, and still writes the IO strongly: it is
# not the paper's kind of name mover; it copies what layer 0 wrote at S2. The layer-0 head's
# IO points do rise with its attention to the IO. (`tests/course/test_claims.py` checks
# these on this dataset.)
#
# </details>

# %%
_, ds_cache = model.run_with_cache(ds.toks)
dla = per_head_logit_diffs(model, ds_cache, ds.answer_tokens, ds.word_idx["end"]).cpu()
top_mover = Head(*divmod(int(dla.flatten().argmax()), model.cfg.n_heads))
s2_to_io = ioi_attention(model, ds, "S2", "IO")
io_reader = Head(0, int(s2_to_io[0].argmax()))
for head in (top_mover, io_reader):
    data = name_mover_scatter(model, ds, *head)
    name_mover_scatter_figure(data).show()
    rise = torch.corrcoef(torch.stack([data.attn_to_io, data.proj_io]))[0, 1]
    print(
        f"{head}: attention to IO {data.attn_to_io.mean():.2f}, to S {data.attn_to_s.mean():.2f}; "
        f"projection on IO {data.proj_io.mean():+.2f}, on S {data.proj_s.mean():+.2f}; "
        f"corr(attention to IO, projection on IO) {rise:.2f}"
    )

# %% [markdown]
# ## Mean ablation by template
#
# `ioi.circuit.ablation.template_means(model, abc)` averages every head's `z` over the ABC
# prompts of each template: `means.z[layer]` is `[template_row, pos, head, d_head]`, and
# `means.row_of[t]` is the row of template index `t` (each prompt's template index is
# `ds.template_idx[i]`).
#
# A circuit is given as a **keep map**: `{(layer, head): ("end",), ...}`, the `word_idx` keys
# where each circuit head keeps its own output (`None`: every position). Every other head, and
# every circuit head at every other position, gets its template mean.
#
# ### Exercise: `mean_ablation_hooks`
#
# **Difficulty:** ●●●●○ · **Time:** about 25 minutes
#
# Return the hooks (a list of `(hook name, hook function)` pairs, one per layer's `hook_z`) and
# let the caller run them: `with model.hooks(fwd_hooks=hooks): ...`. (ARENA's
# `add_mean_ablation_hook` adds permanent hooks instead; returning them keeps the model clean.)
#
# <details><summary>Hint 1: a nudge</summary>
#
# Not zeros, and not one mean over all prompts: each prompt gets the mean of *its own
# template*, so that position 7 means the same word in both.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# Per layer: `mask = torch.zeros(batch, pos, n_heads, dtype=bool)`; for each kept head of
# that layer set `mask[rows, ds.word_idx[key], head] = True` for its keys (all positions for
# `None`); `mean = means.z[layer][[means.row_of[int(t)] for t in ds.template_idx]]`, padded or
# cut to `pos`; the hook returns `torch.where(mask[..., None], z, mean)`.
#
# </details>


# %%
def mean_ablation_hooks(
    model: HookedTransformer,
    ds: IOIDataset,
    means: TemplateMeans,
    keep: dict[tuple[int, int], tuple[str, ...] | None],
) -> list[tuple[str, object]]:
    """``hook_z`` hooks that replace every head's output by its template mean, except where kept."""
    # EXERCISE: a keep mask per layer; the template mean wherever a head is not kept.
    # SOLUTION
    batch, n_pos = ds.toks.shape
    rows = torch.arange(batch)
    template_rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx])
    hooks = []
    for layer in range(model.cfg.n_layers):
        mask = torch.zeros(batch, n_pos, model.cfg.n_heads, dtype=torch.bool)  # True: keep
        for (head_layer, head), keys in keep.items():
            if head_layer != layer:
                continue
            if keys is None:
                mask[:, :, head] = True
            for key in keys or ():
                mask[rows, ds.word_idx[key], head] = True
        mean = means.z[layer][
            template_rows.to(means.z[layer].device)
        ]  # [batch, ref_pos, head, d_head]
        if mean.shape[1] < n_pos:  # the reference prompts are shorter: pad (past every end)
            mean = torch.cat(
                [mean, mean.new_zeros(batch, n_pos - mean.shape[1], *mean.shape[2:])], 1
            )
        mean = mean[:, :n_pos]

        def hook_fn(z: Tensor, hook, mask: Tensor = mask, mean: Tensor = mean) -> Tensor:
            return torch.where(mask.to(z.device)[..., None], z, mean.to(z.device, z.dtype))

        hooks.append((get_act_name("z", layer), hook_fn))
    return hooks
    # END SOLUTION


# %%
checks.test_mean_ablation_hooks(mean_ablation_hooks)

# %% [markdown]
# ## The circuit under test
#
# For GPT-2 small, the paper's circuit (`ioi.circuit.gpt2_small_circuit()`). For the toy, a
# circuit built by the paper's recipe from the measurements of sections 2 to 4, computed here:
# the **movers** are the heads whose direct path to the logits costs more than the threshold
# (kept at `end`); the **S2 writers** are layer-0 heads that attend from S2 to the IO (kept at
# S2); the **previous-token** heads attend from S1+1 to S1 and are kept at S1+1, where the
# paper keeps its previous-token heads.

# %%
end, answers = ds.word_idx["end"], ds.answer_tokens
ds_logit_diff = logits_to_ave_logit_diff(model(ds.toks), answers, positions=end)
abc_logit_diff = logits_to_ave_logit_diff(model(abc.toks), answers, positions=end)
metric = make_ioi_metric(ds_logit_diff, abc_logit_diff, answers, end)
threshold = 0.02
if GPT2:
    circuit = gpt2_small_circuit()
else:
    direct = get_path_patch_head_to_final_resid_post(model, metric, abc, ds) - 1
    n_heads = model.cfg.n_heads
    every_head = [Head(*divmod(i, n_heads)) for i in range(model.cfg.n_layers * n_heads)]
    layer0 = [h for h in every_head if h.layer == 0]
    circuit = Circuit(
        heads={
            "mover": [h for h in every_head if direct[h] < -threshold],
            "s2_writer": [h for h in layer0 if on_prompts[2][h] > 0.5],
            "previous_token": [h for h in layer0 if on_prompts[0][h] > 0.5],
        },
        positions={"mover": "end", "s2_writer": "S2", "previous_token": "S1+1"},
        name="toy model, by the paper's recipe (sections 2-4)",
    )
print(circuit.describe())
means = template_means(model, abc)
keep = circuit.kept_positions()
with_circuit = logit_diff_with_hooks(model, ds, mean_ablation_hooks(model, ds, means, keep)).mean()
print(f"logit diff with only the circuit working: {with_circuit:.3f}")

# %% [markdown]
# The library's `MeanAblation` wraps the model, the dataset and the means:
# `ablation.logit_diff(keep)` is $F$ for a keep map, `keep=None` runs the intact model and
# `keep={}` ablates every head. `circuit.without(K)` is the keep map of $C \setminus K$ and
# `ablation.all_heads_except(K)` that of $M \setminus K$.
#
# ### Exercise: `faithfulness`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# A head may sit in several classes of a circuit; it is then kept at each of their positions
# (`circuit.kept_positions()` lists them).
#
# <details><summary>Hint 1: a nudge</summary>
#
# $F(M)$ ablates nothing; $F(C)$ ablates everything except the circuit, at its positions.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `Faithfulness(f_model=float(ablation.logit_diff(None)),
# f_circuit=float(ablation.logit_diff(circuit.kept_positions())))`.
#
# </details>


# %%
def faithfulness(ablation: MeanAblation, circuit: Circuit) -> Faithfulness:
    """``F(M)`` (intact model) and ``F(C)`` (only the circuit, at its positions)."""
    # EXERCISE: F(M) and F(C) are two calls of ablation.logit_diff.
    # SOLUTION
    return Faithfulness(
        f_model=float(ablation.logit_diff(None)),
        f_circuit=float(ablation.logit_diff(circuit.kept_positions())),
    )
    # END SOLUTION


# %%
checks.test_faithfulness(faithfulness)

# %%
ablation = MeanAblation.build(model, ds, abc)
faith = faithfulness(ablation, circuit)
print(f"F(M) = {faith.f_model:.3f}, F(C) = {faith.f_circuit:.3f}, F(C)/F(M) = {faith.ratio:.3f}")
print("paper (GPT-2 small):", PAPER["faithfulness"], "--", provenance("paper"))
print("later work:", reference_figures()["later_work"]["edge_ablation_faithfulness_note"])

# %% [markdown]
# ## Where does this head act?
#
# The recipe kept the previous-token heads at S1+1 because that is where the paper keeps
# GPT-2's. But a head's output may matter somewhere else: section 4 found the toy's
# previous-token head among the senders into the movers' **keys**, and path patching at
# positions sent it from S2. Test it directly: keep one head of the circuit at one position
# instead of its class's, ablate it everywhere else, and measure $F(C)$.
#
# ### Exercise: `keep_head_at`
#
# **Difficulty:** ●●○○○ · **Time:** about 10 minutes
#
# Return `{position: F}`: for each position key, $F(C)$ with `head` kept at that position
# only (every other circuit head as the circuit keeps it).
#
# <details><summary>Hint 1: a nudge</summary>
#
# Start from `circuit.kept_positions()` and change one entry: *move* the head, do not add a
# position to the one it has.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# For each `p` in `positions`: `keep = circuit.kept_positions()`; `keep[Head(*head)] = (p,)`;
# `result[p] = float(ablation.logit_diff(keep))`.
#
# </details>


# %%
def keep_head_at(
    ablation: MeanAblation, circuit: Circuit, head: tuple[int, int], positions: tuple[str, ...]
) -> dict[str, float]:
    """``F(C)`` with ``head`` kept at each position of ``positions`` (one at a time) instead of its own."""
    # EXERCISE: one keep map per position, with that head moved there.
    # SOLUTION
    result = {}
    for position in positions:
        keep = circuit.kept_positions()
        keep[Head(*head)] = (position,)
        result[position] = float(ablation.logit_diff(keep))
    return result
    # END SOLUTION


# %%
checks.test_keep_head_at(keep_head_at)

# %% [markdown]
# **Predict, then run.** Keep each previous-token head at S1+1 (the paper's position), at S2,
# or at `end`. Where will $F(C)$ be highest?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The cell prints $F(C)$ for each position. On the toy, S2 gives the highest $F(C)$ (above
# S1+1's, checked in `tests/course/test_claims.py`): the head acts at S2, through what S2
# offers the movers as a key, not at the position where the paper's class acts in GPT-2.
# A class name is a hypothesis about a mechanism; where a head acts is measured.
#
# </details>

# %%
candidates = ("S1+1", "S2", "end")
moves = {
    h: keep_head_at(ablation, circuit, h, candidates)
    for h in circuit.heads.get("previous_token", ())
}
for head, by_position in moves.items():
    print(f"{head}: " + ", ".join(f"F(C) kept at {p} = {f:.3f}" for p, f in by_position.items()))
if moves:  # keep every previous-token head where it does most
    best = {h: max(v, key=v.get) for h, v in moves.items()}
    heads = {k: list(v) for k, v in circuit.heads.items() if k != "previous_token"}
    positions = {k: circuit.positions[k] for k in heads}
    for head, position in best.items():
        heads.setdefault(f"previous_token@{position}", []).append(head)
        positions[f"previous_token@{position}"] = position
    circuit = Circuit(heads, positions, name=circuit.name + ", previous-token heads moved")
    print(circuit.describe())
    print(f"F(C) = {faithfulness(ablation, circuit).f_circuit:.3f}")

# %% [markdown]
# ### Exercise: `completeness`
#
# **Difficulty:** ●●●○○ · **Time:** about 15 minutes
#
# Implement the `"class"` mode: $K$ is each class of the circuit in turn. Return one
# `KnockoutScore(label, removed, f_with, f_without, score, relative)` per class, labelled
# `"class NAME"`, with `f_with` $= F(C \setminus K)$, `f_without` $= F(M \setminus K)$,
# `score` their absolute difference and `relative` the score over $F(M)$. A head may sit in
# several classes (it is then kept at each of their positions); $C \setminus K$ removes $K$'s
# heads from the circuit altogether, at every position. (The library's
# `ioi.circuit.completeness` also samples random subsets and grows $K$ greedily.)
#
# <details><summary>Hint 1: a nudge</summary>
#
# $K$ is removed from *both* the circuit and the model.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# For each class `name, members`: `f_c_k = ablation.logit_diff(circuit.without(members))`,
# `f_m_k = ablation.logit_diff(ablation.all_heads_except(members))`, `gap = abs(f_c_k -
# f_m_k)`; `KnockoutScore(f"class {name}", tuple(sorted(members)), f_c_k, f_m_k, gap, gap /
# abs(F(M)))`.
#
# </details>


# %%
def completeness(
    ablation: MeanAblation, circuit: Circuit, modes: tuple[str, ...] = ("class",)
) -> list[KnockoutScore]:
    """Incompleteness ``|F(C \\ K) - F(M \\ K)|`` for each class ``K`` of the circuit."""
    # EXERCISE: per class K, two knocked-out logit differences and their gap.
    # SOLUTION
    if tuple(modes) != ("class",):
        raise ValueError("this version implements modes=('class',); see ioi.circuit.completeness")
    f_m = float(ablation.logit_diff(None))
    scores = []
    for name, members in circuit.heads.items():
        k = list(members)
        f_c_k = float(ablation.logit_diff(circuit.without(k)))
        f_m_k = float(ablation.logit_diff(ablation.all_heads_except(k)))
        gap = abs(f_c_k - f_m_k)
        scores.append(
            KnockoutScore(f"class {name}", tuple(sorted(k)), f_c_k, f_m_k, gap, gap / abs(f_m))
        )
    return scores
    # END SOLUTION


# %%
checks.test_completeness(completeness)

# %% [markdown]
# ### Exercise: `minimality`
#
# **Difficulty:** ●●●○○ · **Time:** about 15 minutes
#
# Implement the `"class"` mode: for each head $v$, $K$ is the rest of $v$'s class (of its
# first class, `circuit.classes_of(v)[0]`, when $v$ sits in several). Return one
# `KnockoutScore` per head of `circuit.all_heads()`, labelled `"layer.head"`, with `f_with`
# $= F(C \setminus (K \cup \{v\}))$, `f_without` $= F(C \setminus K)$, `score` their absolute
# difference and `relative` the score over $F(C)$.
#
# <details><summary>Hint 1: a nudge</summary>
#
# $K$ never contains $v$ itself, or removing $v$ would change nothing.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `f_c = ablation.logit_diff(circuit.kept_positions())`; for each `v`: `k = [h for h in
# circuit.heads[circuit.classes_of(v)[0]] if h != v]`; `f_with = logit_diff(circuit.without([*k,
# v]))`, `f_without = logit_diff(circuit.without(k))`; score and relative as above, over `f_c`.
#
# </details>


# %%
def minimality(
    ablation: MeanAblation, circuit: Circuit, mode: str = "class"
) -> list[KnockoutScore]:
    """Per head ``v``: ``|F(C \\ (K + v)) - F(C \\ K)| / F(C)`` with ``K`` the rest of v's class."""
    # EXERCISE: per head v, the gap v makes once the rest of its class is gone.
    # SOLUTION
    if mode != "class":
        raise ValueError("this version implements mode='class'; see ioi.circuit.minimality")
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    scores = []
    for v in circuit.all_heads():
        k = [h for h in circuit.heads[circuit.classes_of(v)[0]] if h != v]
        f_with = float(ablation.logit_diff(circuit.without([*k, v])))
        f_without = float(ablation.logit_diff(circuit.without(k)))
        gap = abs(f_with - f_without)
        scores.append(
            KnockoutScore(str(v), tuple(sorted(k)), f_with, f_without, gap, gap / abs(f_c))
        )
    return scores
    # END SOLUTION


# %%
checks.test_minimality(minimality)

# %%
complete = completeness(ablation, circuit)
minimal = minimality(ablation, circuit)
px.bar(
    x=[s.label for s in complete],
    y=[s.relative for s in complete],
    labels={"x": "K", "y": "|F(C\\K) - F(M\\K)| / F(M)"},
    title="Incompleteness per class (small is good)",
).show()
px.bar(
    x=[s.label for s in minimal],
    y=[s.relative for s in minimal],
    labels={"x": "head v", "y": "|F(C\\(K+v)) - F(C\\K)| / F(C)"},
    title="Minimality per head, K = the rest of its class (large is good)",
).show()

# %% [markdown]
# **Reading the results.** A faithful circuit keeps most of $F(M)$ (the paper: 87% for GPT-2
# small). Completeness per class says whether removing a class hurts the circuit and the
# model alike; a large gap means heads outside the circuit can stand in for that class in the
# full model, a hint of backup heads (section 6). Minimality per head flags members that do
# little once their classmates are gone.
#
# All three numbers depend on the ablation: mean over ABC prompts per template, heads as
# nodes, each head kept at one position. Ablating *edges* instead (later work) changes the
# faithfulness of the very same circuit a lot, and so, as you measured, does the position a
# head is kept at. Report the method with the number.
#
# ## The circuit, drawn
#
# Last, discovery: `ioi.circuit.discover_circuit` repeats sections 2 to 4 automatically
# (recursive path patching from the logits backwards, each head kept where its effect is
# largest, named by what it attends to). Below, GPT-2 small's circuit as the paper publishes it
# (its classes and heads, from the reference file) beside the one discovery finds on this
# model.

# %%
found = discover_circuit(PathPatchingOracle(model, ds, abc), threshold)
print(found.circuit.describe() if found.circuit else "(no head passes the threshold)")
if found.circuit is not None:
    print(f"discovered circuit: F(C) = {faithfulness(ablation, found.circuit).f_circuit:.3f}")
paper_figure = circuit_graph(
    DiscoveredCircuit.from_spec(gpt2_small_circuit()), 12, "GPT-2 small (Wang et al. 2022)"
)
found_figure = circuit_graph(found, model.cfg.n_layers, f"{MODEL_NAME}, discovered")
both = make_subplots(
    rows=1, cols=2, subplot_titles=("GPT-2 small, the paper's classes", f"{MODEL_NAME}, discovered")
)
for column, figure in ((1, paper_figure), (2, found_figure)):
    for trace in figure.data:
        both.add_trace(trace, row=1, col=column)
both.update_yaxes(visible=False)
both.update_xaxes(title_text="layer")
both.update_layout(
    height=520, title="The IOI circuit: as published (left) and as discovered (right)"
)
both.show()

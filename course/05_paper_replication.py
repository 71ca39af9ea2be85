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
from ioi.heads import name_tokens, repeated_tokens

# %%
import os

import plotly.express as px

import ioi.checks as checks
from ioi.circuit import gpt2_small_circuit
from ioi.circuit.ablation import logit_diff_with_hooks, template_means
from ioi.heads import ioi_attention
from ioi.models import load_model
from ioi.reference import reference_figures

torch.set_grad_enabled(False)
MODEL_NAME = os.environ.get("IOI_MODEL", "toy")
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


# %%
def get_copying_scores(
    model: HookedTransformer,
    names: list[str] | Int[Tensor, " name"] | None = None,
    k: int = 5,
    negative: bool = False,
) -> Float[Tensor, "layer head"]:
    """Fraction of names each head's OV circuit puts among its own top-``k`` logits."""
    # EXERCISE: tokens = name_tokens(model, names) (unless names are already ids); resid = embed +
    # EXERCISE: blocks[0] MLP(ln2(embed)); per head: ln1 of its layer, @ W_V @ W_O, negate if asked,
    # EXERCISE: ln_final, unembed; is the name's own id among the top k?
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
print("GPT-2 small, published:", PAPER["copy_scores_top5"])

# %% [markdown]
# In GPT-2 small the name movers copy (9.9 scores 1.0, 9.6 and 10.0 0.945) and the negative
# name movers copy negatively (10.7 and 11.10 both 1.0), against about 0.1 for an average
# head. On the toy model the copiers are the **layer-0** heads: they are the ones that move a
# name's identity (into S2's stream, section 4). The layer-1 and layer-2 heads that write the
# answer score low, because what they read is not a raw name embedding but what layer 0
# wrote at S2. A copying score tests one particular input; a head can move names in a format
# the test does not feed it.
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


# %%
def get_attn_scores(
    model: HookedTransformer, seq_len: int, batch: int, seed: int, kind: str
) -> Float[Tensor, "layer head"]:
    """One detector's [layer, head] scores on seeded repeated random tokens.

    Args:
        kind: ``"previous_token"``, ``"duplicate_token"`` or ``"induction"``.
    """
    # EXERCISE: build the tokens with repeated_tokens, cache the patterns, and average the
    # EXERCISE: right (dest, src) pairs over the batch and the destinations.
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
print({kind: PAPER["circuit"][kind] for kind in ("previous_token", "duplicate_token", "induction")})

# %% [markdown]
# On GPT-2 small the detectors find the paper's heads. On the toy model they find little: it
# never saw random token sequences (it was trained on IOI sentences only), so a detector built
# on random tokens asks it something it has no reason to answer. Measure the same relations on
# the prompts the model knows instead: on IOI prompts, "previous token" is `S1+1 -> S1` and
# "duplicate" is `S2 -> S1`.

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
# Return the hooks (a list of `(hook name, hook function)` pairs, one per layer's `hook_z`) and
# let the caller run them: `with model.hooks(fwd_hooks=hooks): ...`. (ARENA's
# `add_mean_ablation_hook` adds permanent hooks instead; returning them keeps the model clean.)


# %%
def mean_ablation_hooks(
    model: HookedTransformer,
    ds: IOIDataset,
    means: TemplateMeans,
    keep: dict[tuple[int, int], tuple[str, ...] | None],
) -> list[tuple[str, object]]:
    """``hook_z`` hooks that replace every head's output by its template mean, except where kept."""
    # EXERCISE: per layer: a bool [batch, pos, head] keep mask (per prompt i, positions
    # EXERCISE: ds.word_idx[key][i]); the prompt's template mean; a hook computing
    # EXERCISE: torch.where(mask[..., None], z, mean).
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
# For GPT-2 small, the paper's circuit (`ioi.circuit.gpt2_small_circuit()`). For the toy
# model, the circuit sections 2 and 4 found: the movers in layers 1 and 2, kept at `end`; the
# layer-0 heads that write the IO into S2, kept at `S2`; the previous-token heads, kept at
# `S1+1`. (`ioi.circuit.discover_model_circuit` finds a circuit by recursive path patching
# with a threshold chosen for faithfulness; try it and compare.)

# %%
if MODEL_NAME.startswith("gpt2"):
    circuit = gpt2_small_circuit()
else:
    circuit = Circuit(
        heads={
            "mover": ("1.0", "1.1", "1.2", "1.3", "2.0", "2.1", "2.2", "2.3"),
            "s2_writer": ("0.1", "0.3"),
            "previous_token": ("0.0", "0.2"),
        },
        positions={"mover": "end", "s2_writer": "S2", "previous_token": "S1+1"},
        name="toy model (sections 2-4)",
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


# %%
def faithfulness(ablation: MeanAblation, circuit: Circuit) -> Faithfulness:
    """``F(M)`` (intact model) and ``F(C)`` (only the circuit, at its positions)."""
    # EXERCISE: two calls of ablation.logit_diff; wrap the floats in Faithfulness(f_model, f_circuit).
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
print("paper (GPT-2 small):", PAPER["faithfulness"])
print("later work:", reference_figures()["later_work"]["edge_ablation_faithfulness_note"])

# %% [markdown]
# ### Exercise: `completeness`
#
# Implement the `"class"` mode: $K$ is each class of the circuit in turn. Return one
# `KnockoutScore(label, removed, f_with, f_without, score, relative)` per class, labelled
# `"class NAME"`, with `f_with` $= F(C \setminus K)$, `f_without` $= F(M \setminus K)$,
# `score` their absolute difference and `relative` the score over $F(M)$. (The library's
# `ioi.circuit.completeness` also samples random subsets and grows $K$ greedily.)


# %%
def completeness(
    ablation: MeanAblation, circuit: Circuit, modes: tuple[str, ...] = ("class",)
) -> list[KnockoutScore]:
    """Incompleteness ``|F(C \\ K) - F(M \\ K)|`` for each class ``K`` of the circuit."""
    # EXERCISE: F(M) = ablation.logit_diff(None); for each class: circuit.without(members) and
    # EXERCISE: ablation.all_heads_except(members) give the two keep maps.
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
# Implement the `"class"` mode: for each head $v$, $K$ is the rest of $v$'s class. Return one
# `KnockoutScore` per head of `circuit.all_heads()`, labelled `"layer.head"`, with `f_with`
# $= F(C \setminus (K \cup \{v\}))$, `f_without` $= F(C \setminus K)$, `score` their absolute
# difference and `relative` the score over $F(C)$.


# %%
def minimality(
    ablation: MeanAblation, circuit: Circuit, mode: str = "class"
) -> list[KnockoutScore]:
    """Per head ``v``: ``|F(C \\ (K + v)) - F(C \\ K)| / F(C)`` with ``K`` the rest of v's class."""
    # EXERCISE: F(C) = ablation.logit_diff(circuit.kept_positions()); for each head v, K = the
    # EXERCISE: other members of its first class (circuit.classes_of(v)[0]); two logit diffs.
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
# nothing once their classmates are gone. On the toy model, look at the previous-token heads:
# their minimality scores are tiny, so under this ablation scheme they are not needed at
# `S1+1`, and a smaller circuit would do as well.
#
# All three numbers depend on the ablation: mean over ABC prompts per template, heads as
# nodes. Ablating *edges* instead (later work) changes the faithfulness of the very same
# circuit a lot. Report the method with the number.

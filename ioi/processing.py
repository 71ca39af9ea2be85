"""What TransformerLens's weight processing changes, measured: equivalent models with a step undone.

The IOI literature loads GPT-2 small with four processing steps (``fold_ln``,
``center_writing_weights``, ``center_unembed``, ``refactor_factored_attn_matrices``), and the
bundled toy model ships processed the same way. Each step rewrites the weights without changing
the function the model computes, so the way to see what a step buys is to undo it:
`undo_processing` builds a model that computes the same logits with one step reversed (the
free choices it makes, such as LayerNorm weights or a change of basis, are random from a seed),
and `processing_effects` measures which of the course's results move.

* ``fold_ln``: a LayerNorm's weight and bias are folded into the matrices that read its output,
  so every LayerNorm only centres and divides by its scale. Undone: LayerNorms get weights
  again, and the readers are divided by them.
* ``center_writing_weights``: every matrix that writes to the residual stream writes vectors
  of mean zero over ``d_model`` (LayerNorm removes that mean anyway). Undone: a random constant
  is added to each written vector.
* ``center_unembed``: the unembedding's columns have mean zero over the vocabulary, which only
  shifts every logit at a position by the same amount. Undone: a random vector is added to
  every column.
* ``refactor_factored_attn_matrices``: each head's ``W_Q``, ``W_K`` (and ``W_V``, ``W_O``) are
  rebalanced by an SVD; only the products ``W_Q W_K^T`` and ``W_V W_O`` matter. Undone: a random
  invertible change of basis per head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import einops
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset

STEPS = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "refactor_factored_attn_matrices",
)


def undo_processing(model: HookedTransformer, step: str, seed: int = 0) -> HookedTransformer:
    """A model that computes the same function as ``model`` with processing ``step`` undone.

    Args:
        model: a processed model (LayerNorms without weights, ``normalization_type="LNPre"``).
        step: one of `STEPS`.
        seed: the seed of the random choices (LayerNorm weights, offsets, changes of basis).

    Raises:
        ValueError: an unknown step, or ``fold_ln`` on a model whose LayerNorms have weights.
    """
    if step not in STEPS:
        raise ValueError(f"unknown processing step {step!r}; choose one of {', '.join(STEPS)}")
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = copy.deepcopy(model.cfg)
    if step == "fold_ln":
        if cfg.normalization_type != "LNPre":
            raise ValueError(
                f"fold_ln can only be undone on a model with folded LayerNorms (LNPre); this one "
                f"has normalization_type={cfg.normalization_type!r}"
            )
        cfg.normalization_type = "LN"
        _unfold_layer_norms(state, cfg, gen)
    elif step == "center_writing_weights":
        _uncenter_writers(state, cfg, gen)
    elif step == "center_unembed":
        state["unembed.W_U"] += torch.randn(cfg.d_model, 1, generator=gen)
    else:
        _change_head_bases(state, cfg, gen)
    out = HookedTransformer(cfg, tokenizer=model.tokenizer, move_to_device=False)
    out.load_state_dict(state, strict=False)
    out.to(model.cfg.device, print_details=False)
    out.eval()
    return out


def _positive(n: int, gen: torch.Generator) -> Tensor:
    return torch.exp(0.3 * torch.randn(n, generator=gen))


def _unfold_layer_norms(state: dict, cfg, gen: torch.Generator) -> None:
    """Give every LayerNorm a random weight (bias 0) and divide its readers by it."""
    d = cfg.d_model
    for layer in range(cfg.n_layers):
        w1 = _positive(d, gen)
        state[f"blocks.{layer}.ln1.w"], state[f"blocks.{layer}.ln1.b"] = w1, torch.zeros(d)
        for name in ("W_Q", "W_K", "W_V"):  # [head, d_model, d_head]
            state[f"blocks.{layer}.attn.{name}"] /= w1[None, :, None]
        if not cfg.attn_only:
            w2 = _positive(d, gen)
            state[f"blocks.{layer}.ln2.w"], state[f"blocks.{layer}.ln2.b"] = w2, torch.zeros(d)
            state[f"blocks.{layer}.mlp.W_in"] /= w2[:, None]  # [d_model, d_mlp]
    w_final = _positive(d, gen)
    state["ln_final.w"], state["ln_final.b"] = w_final, torch.zeros(d)
    state["unembed.W_U"] /= w_final[:, None]  # [d_model, d_vocab]


def _uncenter_writers(state: dict, cfg, gen: torch.Generator) -> None:
    """Add a random constant (the same on every d_model coordinate) to every written vector."""

    def offset(*shape: int) -> Tensor:
        return torch.randn(*shape, 1, generator=gen)

    state["embed.W_E"] += offset(state["embed.W_E"].shape[0])
    state["pos_embed.W_pos"] += offset(state["pos_embed.W_pos"].shape[0])
    for layer in range(cfg.n_layers):
        state[f"blocks.{layer}.attn.W_O"] += offset(cfg.n_heads, cfg.d_head)
        state[f"blocks.{layer}.attn.b_O"] += offset(1)[0]
        if not cfg.attn_only:
            state[f"blocks.{layer}.mlp.W_out"] += offset(cfg.d_mlp)
            state[f"blocks.{layer}.mlp.b_out"] += offset(1)[0]


def _basis(n: int, gen: torch.Generator) -> Tensor:
    """A random well-conditioned invertible [n, n] matrix (a rotation times a scaling)."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    return q * _positive(n, gen)[None, :]


def _change_head_bases(state: dict, cfg, gen: torch.Generator) -> None:
    """Per head: q, k in a basis R and R^-T (scores unchanged), v, z in S and W_O by S^-1."""
    for layer in range(cfg.n_layers):
        attn = f"blocks.{layer}.attn"
        for head in range(cfg.n_heads):
            r, s = _basis(cfg.d_head, gen), _basis(cfg.d_head, gen)
            r_inv_t, s_inv = torch.linalg.inv(r).T, torch.linalg.inv(s)
            state[f"{attn}.W_Q"][head] = state[f"{attn}.W_Q"][head] @ r
            state[f"{attn}.b_Q"][head] = state[f"{attn}.b_Q"][head] @ r
            state[f"{attn}.W_K"][head] = state[f"{attn}.W_K"][head] @ r_inv_t
            state[f"{attn}.b_K"][head] = state[f"{attn}.b_K"][head] @ r_inv_t
            state[f"{attn}.W_V"][head] = state[f"{attn}.W_V"][head] @ s
            state[f"{attn}.b_V"][head] = state[f"{attn}.b_V"][head] @ s
            state[f"{attn}.W_O"][head] = s_inv @ state[f"{attn}.W_O"][head]


# ---- what moves --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessingEffect:
    """How far each measurement moves when one processing step is undone (max |difference|)."""

    step: str
    logits: float  # every logit at each prompt's end
    logit_diff: float  # the mean logit difference
    head_dla: float  # per-head direct logit attribution, as the library computes it
    head_dla_not_centred: float  # the same, without centring each head's output first
    io_logit_dla: float  # per-head attribution to the IO logit alone (not IO - S)
    qkv_patching: float  # denoising each head's q, k, v (all positions), normalised metric
    z_norm: float  # mean norm of each head's z
    output_norm: float  # mean norm of each head's output (z @ W_O) at end

    def moved(self, tol: float = 1e-3) -> tuple[str, ...]:
        """The measurements that moved by more than ``tol``."""
        names = (
            "logits",
            "logit_diff",
            "head_dla",
            "head_dla_not_centred",
            "io_logit_dla",
            "qkv_patching",
            "z_norm",
            "output_norm",
        )
        return tuple(n for n in names if getattr(self, n) > tol)


@torch.no_grad()
def _measure(model: HookedTransformer, ds: IOIDataset, abc: IOIDataset) -> dict[str, Tensor]:
    from ioi import patching
    from ioi.heads import head_results_at
    from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric

    end, answers = ds.word_idx["end"], ds.answer_tokens
    rows = torch.arange(ds.N)
    logits, cache = model.run_with_cache(ds.toks)
    corrupted = model(abc.toks)
    results = head_results_at(model, cache, end)  # [layer, head, batch, d_model]
    scale = cache["ln_final.hook_scale"][rows, end]  # [batch, 1]
    directions = model.W_U[:, answers[:, 0]].T - model.W_U[:, answers[:, 1]].T
    io_dirs = model.W_U[:, answers[:, 0]].T

    def attribute(stack: Tensor, dirs: Tensor, centre: bool = True) -> Tensor:
        if centre:
            stack = stack - stack.mean(-1, keepdim=True)
        per = einops.einsum(stack / scale, dirs, "l h b d, b d -> l h b")
        return per.mean(-1)

    clean_ld = logits_to_ave_logit_diff(logits, answers, positions=end)
    metric = make_ioi_metric(
        clean_ld, logits_to_ave_logit_diff(corrupted, answers, positions=end), answers, end
    )
    # denoise each head's q, k and v at all positions: the three sweeps share passes
    grids = [patching.sweep(model, c, ds.toks.shape[1]) for c in ("q", "k", "v")]
    qkv = patching.activation_patching(
        model, ds.toks, abc.toks, metric, [site for grid in grids for site in grid.sites]
    )
    z_norm = torch.stack(
        [cache["z", layer].norm(dim=-1).mean((0, 1)) for layer in range(model.cfg.n_layers)]
    )
    return {
        "logits": logits[rows, end],
        "logit_diff": clean_ld,
        "head_dla": attribute(results, directions),
        "head_dla_not_centred": attribute(results, directions, centre=False),
        "io_logit_dla": attribute(results, io_dirs),
        "qkv_patching": qkv.effect,  # one value per (component, layer, head)
        "z_norm": z_norm,
        "output_norm": results.norm(dim=-1).mean(-1),
    }


def processing_effects(
    model: HookedTransformer, ds: IOIDataset, abc: IOIDataset, seed: int = 0
) -> list[ProcessingEffect]:
    """For each step of `STEPS`: how far each measurement moves when the step is undone.

    Args:
        model: the processed model.
        ds, abc: IOI prompts and their ABC version (the corruption of the patching sweep).
        seed: the seed of `undo_processing`'s random choices.
    """
    base = _measure(model, ds, abc)
    out = []
    for step in STEPS:
        other = _measure(undo_processing(model, step, seed), ds, abc)
        moved = {k: float((other[k] - base[k]).abs().max()) for k in base}
        out.append(ProcessingEffect(step=step, **moved))
    return out


def effects_table(effects: list[ProcessingEffect]) -> list[dict[str, float | str]]:
    """Rows of `processing_effects` for printing (one dict per step)."""
    return [vars(e) | {"moved": ", ".join(e.moved()) or "nothing"} for e in effects]

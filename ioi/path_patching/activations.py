"""Step 1 of path patching: the activations of the clean and the corrupted run.

The engine needs, from the clean run, every layer's residual input, attention output and MLP
output (to rebuild the residual stream with attention frozen), every head's ``z`` (to form a
sender's change) and the final residual; from the corrupted run only the senders' outputs.
A cache the caller already has is used as it is; otherwise one forward pass fills it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.inputs import check_model_tokens
from ioi.patching.sources import check_cache


@dataclass(frozen=True)
class RunActivations:
    """Per-layer activations of one run, all [batch, pos, ...] on the model's device.

    ``resid_pre``, ``attn_out``, ``mlp_out`` hold [batch, pos, d_model] per layer, ``z``
    [batch, pos, head, d_head] per layer; a list is empty when it was not asked for.
    """

    resid_pre: list[Tensor]
    attn_out: list[Tensor]
    mlp_out: list[Tensor]
    z: list[Tensor]
    resid_final: Tensor | None

    def resid_mid(self, layer: int) -> Float[Tensor, "batch pos d_model"]:
        """Residual after the layer's attention (same sum the block computes)."""
        return self.resid_pre[layer] + self.attn_out[layer]

    def resid_post(self, layer: int) -> Float[Tensor, "batch pos d_model"]:
        """Residual after the whole layer."""
        if not self.mlp_out:
            return self.resid_mid(layer)
        return self.resid_mid(layer) + self.mlp_out[layer]


def needed_names(model: HookedTransformer, parts: tuple[str, ...]) -> list[str]:
    """Hook names for the parts asked for: any of resid_pre, attn_out, mlp_out, z, final."""
    names = []
    for layer in range(model.cfg.n_layers):
        for part in ("resid_pre", "attn_out", "z", "mlp_out"):
            if part in parts and not (part == "mlp_out" and model.cfg.attn_only):
                names.append(get_act_name(part, layer))
    if "final" in parts:
        names.append(get_act_name("resid_post", model.cfg.n_layers - 1))
    return names


ALL_PARTS = ("resid_pre", "attn_out", "mlp_out", "z", "final")


def cache_for_path_patching(
    model: HookedTransformer, toks: Int[Tensor, "batch pos"]
) -> ActivationCache:
    """A cache holding exactly what path patching reads, to reuse across many calls.

    Raises:
        TypeError, ValueError: ``toks`` is not a [batch, pos] tensor of the model's token ids
            (`ioi.inputs.check_model_tokens`).
    """
    toks = check_model_tokens(model, toks, "toks")
    names = needed_names(model, ALL_PARTS)
    with torch.no_grad():
        _, cache = model.run_with_cache(
            toks.to(model.cfg.device), names_filter=lambda name: name in names, return_type=None
        )
    return cache


def collect_activations(
    model: HookedTransformer,
    toks: Int[Tensor, "batch pos"],
    parts: tuple[str, ...],
    cache: ActivationCache | Mapping[str, Tensor] | None = None,
    want_logits: bool = False,
    what: str = "cache",
) -> tuple[RunActivations, Tensor | None]:
    """Read ``parts`` from ``cache`` or from a fresh forward pass; optionally the logits too.

    Returns:
        The activations and, if ``want_logits``, the [batch, pos, d_vocab] logits (rebuilt from
        the cached final residual when a cache is given), else None.

    Raises:
        ValueError: the cache lacks some hook the engine needs (all missing names are listed),
            or holds a run of another shape.
        TypeError: ``cache`` is neither None, an `ActivationCache` nor a dict.
    """
    names = needed_names(model, parts)
    logits = None
    if cache is None:
        with torch.no_grad():
            out, cache = model.run_with_cache(
                toks.to(model.cfg.device),
                names_filter=lambda name: name in names,
                return_type="logits" if want_logits else None,
            )
        logits = out if want_logits else None
    else:
        check_cache(cache, what)
    missing = [n for n in names if n not in cache]
    if missing:
        raise ValueError(
            f"{what} lacks {len(missing)} activation(s) path patching needs: "
            f"{', '.join(missing)}; pass {what}=None to compute them, or cache all of them"
        )
    for name in names:
        if tuple(cache[name].shape[:2]) != tuple(toks.shape):
            raise ValueError(
                f"{what} holds {name!r} for a run of shape {tuple(cache[name].shape[:2])}, but "
                f"the tokens have shape {tuple(toks.shape)}; cache the same prompts"
            )
    n = model.cfg.n_layers

    def per_layer(part: str) -> list[Tensor]:
        if part not in parts or (part == "mlp_out" and model.cfg.attn_only):
            return []
        return [cache[get_act_name(part, layer)].to(model.cfg.device) for layer in range(n)]

    final = cache[get_act_name("resid_post", n - 1)] if "final" in parts else None
    acts = RunActivations(
        resid_pre=per_layer("resid_pre"),
        attn_out=per_layer("attn_out"),
        mlp_out=per_layer("mlp_out"),
        z=per_layer("z"),
        resid_final=final.to(model.cfg.device) if final is not None else None,
    )
    if want_logits and logits is None:
        with torch.no_grad():
            logits = model.unembed(model.ln_final(acts.resid_final))
    return acts, logits

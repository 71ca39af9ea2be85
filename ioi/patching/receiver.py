"""The run being patched ("receiver"): run it once and keep what every patched pass reuses.

Each patched pass restarts from this run's residual stream at the site's layer, reuses its
keys and values for the untouched prefix of positions, and its logits for those positions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities import get_act_name

from ioi.patching.blocks import KEYS_CHANGED_IN_FORWARD
from ioi.patching.tail import logits_from_layer


@dataclass(frozen=True)
class ReceiverRun:
    """One unpatched forward pass and the activations the patched passes start from.

    Attributes:
        tokens: the input, [batch, pos].
        logits: its output, [batch, pos, d_vocab].
        acts: hook name -> activation (resid_pre of each layer, keys/values, patched hooks).
        attention_mask: the padding mask TransformerLens built for the input, or None.
        shortformer_pos_embed: positional embedding of shortformer models, or None.
        reuse_prefix: whether passes may reuse keys/values of untouched leading positions
            (only sound for causal attention without a padding mask).
    """

    tokens: Int[Tensor, "batch pos"]
    logits: Float[Tensor, "batch pos d_vocab"]
    acts: dict[str, Tensor]
    attention_mask: Tensor | None
    shortformer_pos_embed: Tensor | None
    reuse_prefix: bool

    @property
    def batch(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[1])

    def residual(
        self, layer: int, start_pos: int, copies: int
    ) -> Float[Tensor, "batch pos d_model"]:
        """Residual stream entering ``layer`` from ``start_pos`` on, repeated ``copies`` times."""
        resid = self.acts[get_act_name("resid_pre", layer)][:, start_pos:]
        return resid.repeat(copies, 1, 1)  # [copies * batch, pos - start_pos, d_model]

    def extras(self, start_pos: int, copies: int) -> dict[str, Tensor]:
        """Keyword arguments ``model.forward`` needs when starting at a layer."""
        extras = {}
        if self.attention_mask is not None:
            extras["attention_mask"] = self.attention_mask.repeat(copies, 1)
        if self.shortformer_pos_embed is not None:
            extras["shortformer_pos_embed"] = self.shortformer_pos_embed[:, start_pos:].repeat(
                copies, 1, 1
            )
        return extras

    def prefix_cache(
        self, model: HookedTransformer, layer: int, start_pos: int, copies: int
    ) -> TransformerLensKeyValueCache:
        """A frozen key/value cache holding this run's keys and values before ``start_pos``."""
        entries = []
        for i in range(model.cfg.n_layers):
            if i < layer:  # blocks before the start layer are never run
                keys = values = torch.empty(0)
            else:
                keys = self.acts[get_act_name("k", i)][:, :start_pos].repeat(copies, 1, 1, 1)
                values = self.acts[get_act_name("v", i)][:, :start_pos].repeat(copies, 1, 1, 1)
            entries.append(TransformerLensKeyValueCacheEntry(keys, values, frozen=True))
        mask = torch.ones(
            copies * self.batch, start_pos, dtype=torch.int, device=self.tokens.device
        )
        return TransformerLensKeyValueCache(entries, mask, frozen=True)


def can_reuse_prefix(model: HookedTransformer, attention_mask: Tensor | None) -> bool:
    """Prefix reuse needs causal attention, no padding mask (positions then mean offsets), and
    keys/values that a key/value cache holds exactly as ``hook_k``/``hook_v`` see them: not after
    a query/key norm or a clamp, which TransformerLens applies after those hooks."""
    cfg = model.cfg
    return (
        cfg.attention_dir == "causal"
        and attention_mask is None
        and not cfg.use_qk_norm
        and cfg.clip_qkv is None
        and cfg.original_architecture not in KEYS_CHANGED_IN_FORWARD
    )


def run_receiver(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"], hook_names: Iterable[str]
) -> ReceiverRun:
    """Run the model once on ``tokens``, caching ``hook_names``, resid_pre of every layer, and
    keys/values of every layer when passes can reuse them."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape [batch, pos], got {tuple(tokens.shape)}")
    residual, tokens, shortformer, attention_mask = model.input_to_embed(tokens)
    reuse_prefix = can_reuse_prefix(model, attention_mask)
    kept = ("resid_pre", "k", "v") if reuse_prefix else ("resid_pre",)
    wanted = set(hook_names)
    for layer in range(model.cfg.n_layers):
        wanted |= {get_act_name(c, layer) for c in kept}
    acts: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        acts[hook.name] = act.detach()

    extras = {}
    if attention_mask is not None:
        extras["attention_mask"] = attention_mask
    if shortformer is not None:
        extras["shortformer_pos_embed"] = shortformer
    with model.hooks(fwd_hooks=[(name, keep) for name in sorted(wanted)]):
        # TransformerLens's own modules, so the baseline is bitwise the model's output
        logits = logits_from_layer(model, residual, 0, fused=False, **extras)
    return ReceiverRun(
        tokens=tokens,
        logits=logits,
        acts=acts,
        attention_mask=attention_mask,
        shortformer_pos_embed=shortformer,
        reuse_prefix=reuse_prefix,
    )

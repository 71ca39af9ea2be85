"""Attention views for the site: patterns of chosen heads, drawn by circuitsvis offline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.head import Head


def dataset_patterns(
    model: HookedTransformer, toks: Int[Tensor, " pos"], heads: Sequence[tuple[int, int]]
) -> Float[Tensor, "chosen dest src"]:
    """Attention patterns of ``heads`` on one prompt's tokens (padding already removed)."""
    if not heads:
        raise ValueError("choose at least one head")
    names = sorted({get_act_name("pattern", layer) for layer, _ in heads})
    with torch.no_grad():
        _, cache = model.run_with_cache(
            toks[None].to(model.cfg.device), names_filter=names, return_type=None
        )
    return torch.stack([cache[get_act_name("pattern", lay)][0, h].cpu() for lay, h in heads])


def attention_html(
    tokens: Sequence[str],
    patterns: Float[Tensor, "chosen dest src"],
    heads: Sequence[tuple[int, int]],
) -> str:
    """A circuitsvis attention view, with its JavaScript inlined so that it works offline.

    (``str()`` of a circuitsvis object loads the JavaScript from unpkg.com instead.) Angle
    brackets in tokens are shown as ‹ › so that no token can end the script it sits in.
    """
    import circuitsvis as cv

    # Tokens go into a JSON literal inside a <script>; keep a typed "</script>" from closing it.
    shown = [t.replace("<", "\u2039").replace(">", "\u203a") for t in tokens]
    rendered = cv.attention.attention_heads(
        attention=patterns.detach().float().cpu(),
        tokens=shown,
        attention_head_names=[str(Head(layer, head)) for layer, head in heads],
    )
    return rendered.local_src

"""The name-mover scatter (Wang et al. 2022, figure 3), as data.

Per prompt, attention from ``end`` to a name against the head output's projection on that
name's unembedding. `ioi.report.figures.name_mover_scatter_figure` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.dataset import IOIDataset
from ioi.head import Head


@dataclass(frozen=True)
class NameMoverScatter:
    """Per prompt: attention from ``end`` to IO / S, and the head output's projection on each.

    ``attn_to_s`` adds the attention to both S tokens (S1 and S2).
    """

    layer: int
    head: int
    attn_to_io: Float[Tensor, " batch"]
    attn_to_s: Float[Tensor, " batch"]
    proj_io: Float[Tensor, " batch"]
    proj_s: Float[Tensor, " batch"]


@torch.no_grad()
def name_mover_scatter(
    model: HookedTransformer, ds: IOIDataset, layer: int, head: int
) -> NameMoverScatter:
    """Data for the paper's figure 3 for one head: attention vs. projection on the name's unembedding."""
    if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
        raise ValueError(
            f"head {Head(layer, head)} is not in this model: layers 0..{model.cfg.n_layers - 1}, "
            f"heads 0..{model.cfg.n_heads - 1}"
        )
    names = [get_act_name("pattern", layer), get_act_name("z", layer)]
    _, cache = model.run_with_cache(
        ds.toks.to(model.cfg.device), names_filter=names, return_type=None
    )
    rows, end = torch.arange(ds.N), ds.word_idx["end"]
    pattern = cache[names[0]][:, head].cpu()  # [batch, dest, src]
    out = (
        cache[names[1]][:, :, head].cpu()[rows, end] @ model.W_O[layer, head].cpu()
    )  # [batch, d_model]
    W_U = model.W_U.cpu()
    return NameMoverScatter(
        layer=layer,
        head=head,
        attn_to_io=pattern[rows, end, ds.word_idx["IO"]],
        attn_to_s=pattern[rows, end, ds.word_idx["S1"]] + pattern[rows, end, ds.word_idx["S2"]],
        proj_io=(out * W_U[:, ds.io_tokenIDs].T).sum(-1),
        proj_s=(out * W_U[:, ds.s_tokenIDs].T).sum(-1),
    )

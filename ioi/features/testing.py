"""Tiny SAEs built in code for tests: an exact identity dictionary and a seeded random one."""

from __future__ import annotations

import torch
from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig


def identity_sae(d_in: int, dtype: torch.dtype = torch.float32) -> StandardSAE:
    """A ReLU SAE that reconstructs every input exactly: ``d_sae = 2 d_in`` features, the
    positive and negative parts of each coordinate (``W_enc = [I, -I]``, ``W_dec = [I; -I]``,
    no biases), so ``relu(x) - relu(-x) == x`` with no rounding at all.
    """
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=2 * d_in, dtype=_name(dtype)))
    eye = torch.eye(d_in, dtype=dtype)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))  # [d_in, 2 d_in]
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))  # [2 d_in, d_in]
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def random_sae(
    d_in: int, d_sae: int, seed: int = 0, architecture: str = "standard", k: int = 4
) -> StandardSAE | TopKSAE:
    """A seeded random SAE (``"standard"`` ReLU or ``"topk"``) whose reconstruction is imperfect."""
    generator = torch.Generator().manual_seed(seed)
    if architecture == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    elif architecture == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    else:
        raise ValueError(f"unknown architecture {architecture!r}; choose 'standard' or 'topk'")
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * d_in**-0.5)
    return sae


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")

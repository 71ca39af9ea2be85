"""Random SAELens SAEs for tiny models built in code (seeded, no global RNG)."""

from __future__ import annotations

import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig


def random_sae(d_in: int, d_sae: int, seed: int = 0, dtype: str = "float64") -> SAE:
    """A StandardSAE with seeded normal weights and biases, so about half its latents fire."""
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, dtype=dtype))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float64)
            param.copy_(noise * (0.3 if param.ndim == 2 else 0.1))
    return sae.eval()


def sae_hooks_left(saes) -> list[str]:
    """Hook points of the SAEs that still carry a hook."""
    return [
        f"{name}.{point}"
        for name, sae in saes.items()
        for point, module in sae.hook_dict.items()
        if module.fwd_hooks or module.bwd_hooks or module._forward_hooks
    ]

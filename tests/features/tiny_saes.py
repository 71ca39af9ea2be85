"""Helpers for the feature tests: float64 random SAEs, and a check that no SAE keeps a hook."""

from __future__ import annotations

import torch
from sae_lens import SAE

from ioi.features.testing import random_sae


def random_sae64(d_in: int, d_sae: int, seed: int = 0) -> SAE:
    """`ioi.features.testing.random_sae` in float64 (for tiny float64 models)."""
    return random_sae(d_in, d_sae, seed=seed).to(dtype=torch.float64)


def sae_hooks_left(saes) -> list[str]:
    """Hook points of the SAEs that still carry a hook."""
    return [
        f"{name}.{point}"
        for name, sae in saes.items()
        for point, module in sae.hook_dict.items()
        if module.fwd_hooks or module.bwd_hooks or module._forward_hooks
    ]

"""What both benchmarks run on: a GPT-2-small-shaped model with random weights, random prompts.

No machine of this project has GPT-2 small's weights, and the timings do not depend on them:
the model has GPT-2 small's shape and GPT-2's initialisation, drawn from a seeded generator;
the prompts are random tokens after a shared BOS, IOI-sized (15 tokens).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

GPT2_SMALL_SHAPE = dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072)
# A small model with GPT-2's vocabulary, where unembedding outweighs the blocks: the quick one to
# iterate on, and the one where computing only the logits a metric reads matters most.
D256_SHAPE = dict(n_layers=6, n_heads=8, d_model=256, d_head=32, d_mlp=1024)
GEOMETRIES = {"gpt2-small": GPT2_SMALL_SHAPE, "d256": D256_SHAPE}
D_VOCAB = 50257
BOS = 50256  # GPT-2's <|endoftext|>, which starts every IOI prompt
N_POS = 15


def gpt2_shaped_model(
    device: torch.device, seed: int = 0, shape: dict | None = None
) -> HookedTransformer:
    """GPT-2 small's shape (or ``shape``: n_layers, n_heads, d_model, d_head, d_mlp), random weights.

    Weights follow GPT-2's initialisation (normal, std 0.02; norms 1, biases 0) and come from
    a private generator, so the global RNG is neither used for them nor reseeded.
    """
    cfg = HookedTransformerConfig(
        **(GPT2_SMALL_SHAPE if shape is None else shape),
        d_vocab=D_VOCAB,
        n_ctx=1024,
        act_fn="gelu_new",
        normalization_type="LN",
        device=str(device),
        init_weights=False,
        seed=None,
    )
    with warnings.catch_warnings():  # TransformerLens 3 flags HookedTransformer as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, move_to_device=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "w":  # LayerNorm scale
                param.fill_(1.0)
            elif leaf.startswith("b"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    model.to(device, print_details=False)
    return model.eval()


def random_prompts(
    n: int, d_vocab: int, seed: int, changed: Sequence[int] | None = None
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Int[Tensor, "batch 2"]]:
    """Clean and corrupted prompts (random tokens after a shared BOS) and answer pairs.

    Args:
        changed: the positions where the corrupted prompts are drawn afresh (the rest are the
            clean tokens); None redraws every position after BOS.
    """
    generator = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, d_vocab, (n, N_POS), generator=generator)
    if changed is None:
        corrupted = torch.randint(0, d_vocab, (n, N_POS), generator=generator)
    else:
        corrupted = clean.clone()
        slots = torch.tensor(list(changed))
        corrupted[:, slots] = torch.randint(0, d_vocab, (n, len(slots)), generator=generator)
    clean[:, 0] = corrupted[:, 0] = BOS
    answers = torch.randint(0, d_vocab, (n, 2), generator=generator)
    return clean, corrupted, answers


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer around it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[float, Tensor]:
    """Wall time of one call, synchronising CUDA around it, and its result."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result

"""Sparse autoencoders (SAELens) on the IOI model: splice them in, collect activations, train,
measure their quality, load the shipped toy SAEs and published GPT-2 small ones.

- `spliced`: route activations through SAEs inside a ``with`` block (error node optional).
- `collect_activations`, `iter_activations`, `ioi_and_abc`: activations at any hook point.
- `train_sae`, `train_saes`, `SAESpec`: training with SAELens's ``SAETrainer``.
- `evaluate_saes`, `SAEQuality`, `quality_table`: L0, variance explained, dead features, logit
  difference and loss recovered.
- `load_toy_saes`, `load_saes_dir`, `load_pretrained_saes`: the shipped, local or published SAEs.
"""

from ioi.features.activations import (
    POSITION_CHOICES,
    collect_activations,
    ioi_and_abc,
    iter_activations,
    load_activations,
)
from ioi.features.pretrained import load_pretrained_saes, load_saes_dir, load_toy_saes
from ioi.features.quality import SAEQuality, evaluate_saes, quality_table
from ioi.features.splice import activation_widths, sae_hook_name, splice_hooks, spliced
from ioi.features.train import SAESpec, save_saes, train_sae, train_saes

__all__ = [
    "POSITION_CHOICES",
    "SAEQuality",
    "SAESpec",
    "activation_widths",
    "collect_activations",
    "evaluate_saes",
    "ioi_and_abc",
    "iter_activations",
    "load_activations",
    "load_pretrained_saes",
    "load_saes_dir",
    "load_toy_saes",
    "quality_table",
    "sae_hook_name",
    "save_saes",
    "splice_hooks",
    "spliced",
    "train_sae",
    "train_saes",
]

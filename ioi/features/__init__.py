"""Sparse autoencoders (SAELens) on the IOI model: splice them in, collect activations, train,
measure their quality, load the shipped toy SAEs and published GPT-2 small ones.
"""

from ioi.features.splice import activation_widths, sae_hook_name, splice_hooks, spliced

__all__ = ["activation_widths", "sae_hook_name", "splice_hooks", "spliced"]

"""Sparse features of the IOI model (placeholder until the sae branch's package lands)."""

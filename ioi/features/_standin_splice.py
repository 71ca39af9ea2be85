"""PRIVATE stand-in for the sae branch's ``ioi.features.splice.spliced``; deleted after merging."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from sae_lens import SAE


@contextmanager
def spliced(model, saes: Mapping[str, SAE], *, error_term: bool = True) -> Iterator[None]:
    previous = {name: sae._use_error_term for name, sae in saes.items()}

    def make(sae):
        def hook(act, hook):
            return sae(act).to(act.dtype)

        return hook

    try:
        for name, sae in saes.items():
            sae._use_error_term = error_term
        with model.hooks(fwd_hooks=[(name, make(sae)) for name, sae in saes.items()]):
            yield
    finally:
        for name, sae in saes.items():
            sae._use_error_term = previous[name]

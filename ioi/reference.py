"""Published GPT-2 small IOI figures (Wang et al. 2022 and follow-ups), shipped with the package.

The file is ``ioi/data/gpt2_small_ioi.json``; every block in it names its ``source`` and the
``corruption`` (the contrast run) that produced its figures, and `provenance` says both in one
line, for printing beside a figure.
"""

from __future__ import annotations

import json
from importlib import resources


def reference_figures() -> dict:
    """Published GPT-2 small IOI figures (Wang et al. 2022 and follow-ups), shipped with the package."""
    text = (resources.files("ioi") / "data" / "gpt2_small_ioi.json").read_text(encoding="utf-8")
    return json.loads(text)


def provenance(block: str) -> str:
    """``"GPT-2 small, <source>; corruption: <corruption>"`` for a block of the reference file.

    Raises:
        ValueError: ``block`` is not a block of the file (the message lists the blocks).
    """
    figures = reference_figures()
    blocks = sorted(k for k, v in figures.items() if isinstance(v, dict) and "source" in v)
    if block not in blocks:
        raise ValueError(f"unknown reference block {block!r}; blocks: {', '.join(blocks)}")
    entry = figures[block]
    return f"GPT-2 small, {entry['source']}; corruption: {entry['corruption']}"


def comparison_basis(model_name: str, cfg) -> str | None:
    """Why the published GPT-2 small figures may be set beside this model's, or ``None``.

    They may for a model loaded as GPT-2 small (``"gpt2-small"``, ``"gpt2"``), and for any
    model with GPT-2 small's layout (`ioi.models.has_gpt2_small_layout`: a GPT-2 of 12 layers of
    12 heads with GPT-2's vocabulary, so head (layer, head) and token ids mean the same thing),
    such as a local directory of GPT-2 small's weights; for that one the sentence says the
    figures are comparable only if the weights are GPT-2 small's, which nothing here can check.

    Args:
        model_name: the name the report uses (a `ioi.models.load_model` name or a path).
        cfg: the model's ``HookedTransformerConfig``.
    """
    from ioi.models import GPT2_ALIASES, has_gpt2_small_layout

    if model_name in GPT2_ALIASES:
        return f"the model was loaded as GPT-2 small ({model_name!r})"
    if has_gpt2_small_layout(cfg):
        return (
            f"{model_name} has GPT-2 small's layout (a GPT-2 of 12 layers of 12 heads with "
            "GPT-2's vocabulary of 50257), so its heads and tokens line up with the published "
            "ones; the figures are comparable only if its weights are GPT-2 small's"
        )
    return None

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

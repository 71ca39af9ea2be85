"""Published GPT-2 small IOI figures (Wang et al. 2022 and follow-ups), shipped with the package.

The file is ``ioi/data/gpt2_small_ioi.json``; every figure in it names its source and setting.
"""

from __future__ import annotations

import json
from importlib import resources


def reference_figures() -> dict:
    """Published GPT-2 small IOI figures (Wang et al. 2022 and follow-ups), shipped with the package."""
    text = (resources.files("ioi") / "data" / "gpt2_small_ioi.json").read_text(encoding="utf-8")
    return json.loads(text)

"""ioi: Indirect Object Identification in GPT-2 small, and the methods that find its circuit.

The names a newcomer reaches for first are here; everything loads on first use, so
``import ioi`` imports neither torch nor TransformerLens::

    import ioi

    model = ioi.load_model("toy")
    ds = ioi.IOIDataset(50, seed=1, tokenizer=model)
    logits = model(ds.toks)
    ioi.logits_to_ave_logit_diff(logits, ds.answer_tokens, positions=ds.word_idx["end"])

The layers, each a subpackage or module reachable as ``ioi.<name>``:

* data: `dataset` (IOI prompts), `metrics` (logit difference and the normalised metric;
  ``reduce="none"`` keeps one value per prompt), `statistics` (`Estimate`, `bootstrap`: the
  mean over prompts, its standard error and a seeded bootstrap interval),
  `models` (GPT-2 small, local GPT-2 weights, the bundled toy model; other architectures and
  TransformerLens model names through `architectures`), `head` (`Head`);
* engines: `patching` (activation patching), `path_patching`;
* analysis: `heads` (what single heads do), `circuit` (mean ablation, criteria, discovery);
* products: `report` (``ioi replicate``), `checks` (the course's graded checkers), and the
  course build (`ioi.course`), the site's data (`ioi.site`), the benchmarks (`ioi.bench`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it (attributes), or None (the name is a submodule)
_EXPORTS: dict[str, str | None] = {
    "Estimate": "ioi.statistics",
    "Head": "ioi.head",
    "IOIDataset": "ioi.dataset",
    "load_model": "ioi.models",
    "logits_to_ave_logit_diff": "ioi.metrics",
    "make_ioi_metric": "ioi.metrics",
    "make_logit_diff_metric": "ioi.metrics",
    "bootstrap": "ioi.statistics",
    "resolve_device": "ioi.device",
    "checks": None,
    "circuit": None,
    "dataset": None,
    "heads": None,
    "metrics": None,
    "models": None,
    "patching": None,
    "path_patching": None,
    "report": None,
    "statistics": None,
}
__all__ = [
    "Estimate",
    "Head",
    "IOIDataset",
    "bootstrap",
    "checks",
    "circuit",
    "dataset",
    "heads",
    "load_model",
    "logits_to_ave_logit_diff",
    "make_ioi_metric",
    "make_logit_diff_metric",
    "metrics",
    "models",
    "patching",
    "path_patching",
    "report",
    "resolve_device",
    "statistics",
]


def __getattr__(name: str) -> Any:
    """Import an exported name (PEP 562) the first time it is used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ioi' has no attribute {name!r}")
    home = _EXPORTS[name]
    value = (
        importlib.import_module(f"ioi.{name}")
        if home is None
        else getattr(importlib.import_module(home), name)
    )
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]


if TYPE_CHECKING:  # what editors and type checkers see
    from ioi import (
        checks,
        circuit,
        dataset,
        heads,
        metrics,
        models,
        patching,
        path_patching,
        report,
        statistics,
    )
    from ioi.dataset import IOIDataset
    from ioi.device import resolve_device
    from ioi.head import Head
    from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric, make_logit_diff_metric
    from ioi.models import load_model
    from ioi.statistics import Estimate, bootstrap

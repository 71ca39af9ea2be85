"""The feature browser's data: one SAE feature on a prompt, its top prompts, its logit effects.

Everything is a call into `ioi.features`; the page (``streamlit_app/pages/9_Feature_browser.py``)
only renders the `FeatureView`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset
from ioi.features.attribution import node_values
from ioi.features.interpret import FeatureReport, RoleContrast, interpret_feature
from ioi.report.document import Table


@dataclass(frozen=True)
class FeatureView:
    """What the feature browser shows for one feature.

    Attributes:
        report: the feature interpreted over the prompts (`ioi.features.interpret_feature`).
        tokens: the chosen prompt's tokens, as text.
        activations: [pos] the feature's activation at each token of the chosen prompt.
    """

    report: FeatureReport
    tokens: tuple[str, ...]
    activations: Float[Tensor, " pos"]


def feature_view(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    hook: str,
    feature: int,
    ds: IOIDataset,
    prompt: int,
    k: int = 5,
    abc: IOIDataset | None = None,
) -> FeatureView:
    """Feature ``feature`` of the SAE at ``hook``: on prompt ``prompt`` of ``ds``, and over all.

    Args:
        abc: the ABC prompts of ``ds``, row for row (``ds.gen_flipped_prompts(ABC_FLIP)``): the
            role is then read from the contrast (`ioi.features.RoleContrast.of`) and its
            evidence kept in ``report.role_evidence``; None: the positional role only.

    Raises:
        ValueError: no SAE at ``hook``, a feature outside the SAE, a prompt outside ``ds``,
            ``abc`` of another length than ``ds``.
    """
    if hook not in saes:
        raise ValueError(f"no SAE at {hook!r}; SAEs are at {list(saes)}")
    if not isinstance(prompt, int) or not 0 <= prompt < len(ds):
        raise ValueError(f"prompt must be an index in 0..{len(ds) - 1}, got {prompt!r}")
    contrast = None if abc is None else RoleContrast.of(ds, abc)
    report = interpret_feature(
        model, saes[hook], hook, feature, ds.toks, ds.word_idx, k=k, seq_lens=ds.seq_lens,
        contrast=contrast,
    )  # fmt: skip
    n_tok = int(ds.seq_lens[prompt]) - 1  # the prompt without its answer
    tokens = ds.toks[prompt : prompt + 1, :n_tok]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
    acts = node_values(saes[hook], hook, cache[hook])[0][0, :, feature]
    words = tuple(model.to_str_tokens(tokens[0]))
    return FeatureView(report, words, acts.cpu())


def top_prompts_table(view: FeatureView, ds: IOIDataset, model: HookedTransformer) -> Table:
    """The feature's top-activating (prompt, token) pairs."""
    rows = []
    for i, pos, act in view.report.top_examples:
        token = model.to_string(ds.toks[i, pos : pos + 1])
        rows.append((i, pos, token, act, ds.sentences[i]))
    return Table.build(
        "Top-activating prompts", ("prompt", "position", "token", "activation", "sentence"), rows
    )


def logit_effects_table(view: FeatureView) -> Table:
    """Tokens the feature's decoder direction promotes and suppresses most through ``W_U``."""
    # Both lists hold k tokens (or none, for an SAE outside the residual stream).
    rows = [
        (a, x, b, y)
        for (a, x), (b, y) in zip(view.report.promoted, view.report.suppressed, strict=True)
    ]
    return Table.build(
        "Logit effects (W_dec @ W_U)",
        ("promoted", "effect (+)", "suppressed", "effect (-)"),
        rows,
    )

"""What individual heads do: direct logit attribution, attention detectors, copying scores.

Tools from Wang et al. (2022) for characterising heads, each model-generic, one module each:

* `ioi.heads.attribution`: direct logit attribution (DLA) per head, per layer and accumulated,
  through the final LayerNorm's cached scale, on the logit-difference direction.
* `ioi.heads.scores`: previous-token, duplicate-token and induction scores on repeated random
  tokens, attention between IOI word positions, and copying scores through each OV circuit.
* `ioi.heads.scatter`: the data of the name-mover scatter (paper, figure 3); the figure itself
  is `ioi.report.figures.name_mover_scatter_figure`.

Example:
    >>> _, cache = model.run_with_cache(ds.toks)
    >>> per_head = per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"])
"""

from ioi.heads.attribution import (
    accumulated_resid_logit_diffs,
    apply_final_ln,
    head_results_at,
    logit_diff_directions,
    per_head_logit_diffs,
    per_layer_logit_diffs,
    residual_stack_to_logit_diff,
)
from ioi.heads.scatter import NameMoverScatter, name_mover_scatter
from ioi.heads.scores import (
    DETECTOR_KINDS,
    attention_detector_scores,
    get_attn_scores,
    get_copying_scores,
    ioi_attention,
    known_tokens,
    name_embeddings_after_mlp0,
    name_tokens,
    repeated_tokens,
)

__all__ = [
    "DETECTOR_KINDS",
    "NameMoverScatter",
    "accumulated_resid_logit_diffs",
    "apply_final_ln",
    "attention_detector_scores",
    "get_attn_scores",
    "get_copying_scores",
    "head_results_at",
    "ioi_attention",
    "known_tokens",
    "logit_diff_directions",
    "name_embeddings_after_mlp0",
    "name_mover_scatter",
    "name_tokens",
    "per_head_logit_diffs",
    "per_layer_logit_diffs",
    "repeated_tokens",
    "residual_stack_to_logit_diff",
]

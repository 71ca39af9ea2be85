"""Fast, exact activation patching over TransformerLens.

- Drop-in: ``get_act_patch_*`` with TransformerLens's names, arguments and results.
- General: `Site`, `sweep`, `activation_patching` (denoise/noise, zero/mean ablation) returning a
  `PatchResult` (named axes, baselines, normalised effect, tables, heatmaps).
- Attribution patching: `attribution_patching`, `compare_with_exact`.
- Statistics: with a per-prompt metric (``reduce="none"`` in `ioi.metrics`) a result keeps
  per-prompt effects: `PatchResult.interval` (seeded bootstrap, `ioi.statistics`),
  ``significant(by="interval")``, interval table columns, ``heatmap(..., mask=True)``.
- Engine: `patch_sites` (many sites per pass, starting at each site's layer and first changed
  position, memory-bounded, out-of-memory safe).
"""

from ioi.patching.api import activation_patching
from ioi.patching.attribution import (
    AttributionComparison,
    attribution_patching,
    compare_with_exact,
    correlation,
)
from ioi.patching.dropin import (
    get_act_patch_attn_head_all_pos_every,
    get_act_patch_attn_head_by_pos_every,
    get_act_patch_attn_head_k_all_pos,
    get_act_patch_attn_head_k_by_pos,
    get_act_patch_attn_head_out_all_pos,
    get_act_patch_attn_head_out_by_pos,
    get_act_patch_attn_head_pattern_all_pos,
    get_act_patch_attn_head_pattern_by_pos,
    get_act_patch_attn_head_pattern_dest_src_pos,
    get_act_patch_attn_head_q_all_pos,
    get_act_patch_attn_head_q_by_pos,
    get_act_patch_attn_head_v_all_pos,
    get_act_patch_attn_head_v_by_pos,
    get_act_patch_attn_out,
    get_act_patch_block_every,
    get_act_patch_mlp_out,
    get_act_patch_resid_mid,
    get_act_patch_resid_pre,
)
from ioi.patching.engine import Metric, patch_sites
from ioi.patching.plot import heatmap
from ioi.patching.result import PatchResult
from ioi.patching.sites import COMPONENTS, PerPrompt, Site
from ioi.patching.sources import MeanSource, RunSource, ZeroSource
from ioi.patching.sweep import LastK, Sweep, Together, sweep

__all__ = [
    "COMPONENTS",
    "AttributionComparison",
    "LastK",
    "MeanSource",
    "Metric",
    "PatchResult",
    "PerPrompt",
    "RunSource",
    "Site",
    "Sweep",
    "Together",
    "ZeroSource",
    "activation_patching",
    "attribution_patching",
    "compare_with_exact",
    "correlation",
    "get_act_patch_attn_head_all_pos_every",
    "get_act_patch_attn_head_by_pos_every",
    "get_act_patch_attn_head_k_all_pos",
    "get_act_patch_attn_head_k_by_pos",
    "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_out_by_pos",
    "get_act_patch_attn_head_pattern_all_pos",
    "get_act_patch_attn_head_pattern_by_pos",
    "get_act_patch_attn_head_pattern_dest_src_pos",
    "get_act_patch_attn_head_q_all_pos",
    "get_act_patch_attn_head_q_by_pos",
    "get_act_patch_attn_head_v_all_pos",
    "get_act_patch_attn_head_v_by_pos",
    "get_act_patch_attn_out",
    "get_act_patch_block_every",
    "get_act_patch_mlp_out",
    "get_act_patch_resid_mid",
    "get_act_patch_resid_pre",
    "heatmap",
    "patch_sites",
    "sweep",
]

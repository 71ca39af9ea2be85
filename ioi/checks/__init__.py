"""Graded checkers for the course's exercises.

Each exercise ``name`` has a checker ``test_<name>(fn)`` here. A notebook calls it on the
learner's function::

    import ioi.checks as checks
    checks.test_logits_to_ave_logit_diff(logits_to_ave_logit_diff)

and pytest runs the same checker on ``solutions/`` (must pass) and on the stubs in
``exercises/`` (must fail), see ``tests/checks``. A checker runs the function on the bundled toy
model on the CPU with a few prompts, compares with the library, prints a tick when it passes and
raises `CheckFailed` (an ``AssertionError``) when it does not, with the call, the expected and
returned values, a diagnosis of the likely mistake and a hint.
"""

from ioi.checks.activation_patching import (
    test_attribution_patch_attn_head_out_all_pos,
    test_get_act_patch_attn_head_all_pos_every,
    test_get_act_patch_attn_head_out_all_pos,
    test_get_act_patch_attn_head_out_by_pos,
    test_get_act_patch_block_every,
    test_get_act_patch_resid_pre,
    test_ioi_metric,
    test_patch_attn_patterns,
    test_patch_head_vector,
    test_patch_residual_component,
)
from ioi.checks.core import GENERIC_DIAGNOSES, CheckFailed, Exercise, registry
from ioi.checks.edges import test_eap_edge_score
from ioi.checks.features import (
    test_circuit_jaccard,
    test_feature_attribution_patching,
    test_sae_encode,
    test_variance_explained,
)
from ioi.checks.further import test_backup_name_mover_experiment, test_permutation_test
from ioi.checks.intervals import test_bootstrap_estimate, test_significant_heads
from ioi.checks.logit_attribution import (
    test_accumulated_resid_logit_diffs,
    test_apply_final_ln,
    test_head_results_at,
    test_ioi_attention,
    test_logit_diff_directions,
    test_per_head_logit_diffs,
    test_per_layer_logit_diffs,
    test_residual_stack_to_logit_diff,
)
from ioi.checks.model_and_task import (
    test_io_probability,
    test_logits_to_ave_logit_diff,
    test_prompt_scores,
)
from ioi.checks.path_patching import (
    test_get_path_patch_head_to_final_resid_post,
    test_get_path_patch_head_to_heads,
    test_patch_head_input,
    test_patch_or_freeze_head_vectors,
    test_path_patch_head_to_heads_at,
)
from ioi.checks.replication import (
    test_completeness,
    test_faithfulness,
    test_get_attn_scores,
    test_get_copying_scores,
    test_keep_head_at,
    test_mean_ablation_hooks,
    test_minimality,
    test_name_mover_scatter,
)

__all__ = [
    "test_variance_explained",
    "test_sae_encode",
    "test_feature_attribution_patching",
    "test_circuit_jaccard",
    "CheckFailed",
    "Exercise",
    "GENERIC_DIAGNOSES",
    "checker_for",
    "registry",
    "test_accumulated_resid_logit_diffs",
    "test_apply_final_ln",
    "test_attribution_patch_attn_head_out_all_pos",
    "test_backup_name_mover_experiment",
    "test_bootstrap_estimate",
    "test_eap_edge_score",
    "test_significant_heads",
    "test_completeness",
    "test_faithfulness",
    "test_get_act_patch_attn_head_all_pos_every",
    "test_get_act_patch_attn_head_out_all_pos",
    "test_get_act_patch_attn_head_out_by_pos",
    "test_get_act_patch_block_every",
    "test_get_act_patch_resid_pre",
    "test_get_attn_scores",
    "test_get_copying_scores",
    "test_get_path_patch_head_to_final_resid_post",
    "test_get_path_patch_head_to_heads",
    "test_head_results_at",
    "test_io_probability",
    "test_ioi_attention",
    "test_ioi_metric",
    "test_keep_head_at",
    "test_logit_diff_directions",
    "test_logits_to_ave_logit_diff",
    "test_mean_ablation_hooks",
    "test_minimality",
    "test_name_mover_scatter",
    "test_patch_attn_patterns",
    "test_patch_head_input",
    "test_patch_head_vector",
    "test_patch_or_freeze_head_vectors",
    "test_path_patch_head_to_heads_at",
    "test_patch_residual_component",
    "test_per_head_logit_diffs",
    "test_per_layer_logit_diffs",
    "test_permutation_test",
    "test_prompt_scores",
    "test_residual_stack_to_logit_diff",
]


def checker_for(name: str):
    """The checker of exercise ``name`` (``test_<name>``).

    Raises:
        ValueError: no exercise of that name has a checker; the message lists those that do.
    """
    fn = globals().get(f"test_{name}")
    if fn is None or name not in registry():
        raise ValueError(
            f"no checker for exercise {name!r}; exercises with checkers: {', '.join(sorted(registry()))}"
        )
    return fn

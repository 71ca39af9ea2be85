"""Circuit validation and discovery for IOI (Wang et al. 2022, sections 3-4).

Public API:
    Circuit, gpt2_small_circuit: the spec (class -> heads, class -> position) and the paper's.
    MeanAblation: per-template mean ablation of every head outside a kept set.
    faithfulness, completeness, minimality: the paper's three criteria.
    backup_name_mover_experiment: knock out name movers, watch other heads compensate.
    PathPatchingOracle, discover_circuit: automatic discovery by recursive path patching.
    threshold_sweep, choose_threshold, discover_model_circuit: faithfulness vs threshold,
        and a model's own circuit (the bundled toy model's, derived by the code).
    compare_groups, permutation_test, jaccard: one mechanism or several across templates?
"""

from ioi.circuit.ablation import MeanAblation, TemplateMeans, mean_ablation_hooks, template_means
from ioi.circuit.backup import BackupResult, backup_name_mover_experiment
from ioi.circuit.compare import (
    GroupComparison,
    PermutationTest,
    compare_groups,
    group_labels,
    head_importance_per_prompt,
    jaccard,
    permutation_test,
)
from ioi.circuit.criteria import (
    Faithfulness,
    KnockoutScore,
    completeness,
    faithfulness,
    minimality,
)
from ioi.circuit.discovery import DiscoveredCircuit, Edge, HeadFinding, discover_circuit, name_head
from ioi.circuit.oracle import PathPatchingOracle, make_rows_ioi_metric
from ioi.circuit.spec import PAPER_CLASSES, Circuit, gpt2_small_circuit
from ioi.circuit.sweep import (
    DEFAULT_THRESHOLDS,
    SweepPoint,
    choose_threshold,
    discover_model_circuit,
    threshold_sweep,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PAPER_CLASSES",
    "BackupResult",
    "Circuit",
    "DiscoveredCircuit",
    "Edge",
    "Faithfulness",
    "GroupComparison",
    "HeadFinding",
    "KnockoutScore",
    "MeanAblation",
    "PathPatchingOracle",
    "PermutationTest",
    "SweepPoint",
    "TemplateMeans",
    "backup_name_mover_experiment",
    "choose_threshold",
    "compare_groups",
    "completeness",
    "discover_circuit",
    "discover_model_circuit",
    "faithfulness",
    "gpt2_small_circuit",
    "group_labels",
    "head_importance_per_prompt",
    "jaccard",
    "make_rows_ioi_metric",
    "mean_ablation_hooks",
    "minimality",
    "name_head",
    "permutation_test",
    "template_means",
    "threshold_sweep",
]

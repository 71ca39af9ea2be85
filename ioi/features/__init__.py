"""Sparse autoencoders (SAELens) on the IOI model: splice them in, collect activations, train,
measure their quality, load the shipped toy SAEs and published GPT-2 small ones.

- `spliced`: route activations through SAEs inside a ``with`` block (error node optional).
- `collect_activations`, `iter_activations`, `ioi_and_abc`: activations at any hook point.
- `train_sae`, `train_saes`, `SAESpec`: training with SAELens's ``SAETrainer``.
- `evaluate_saes`, `SAEQuality`, `quality_table`: L0, variance explained, dead features, logit
  difference and loss recovered.
- `load_toy_saes`, `load_saes_dir`, `load_pretrained_saes`: the shipped, local or published SAEs.
- `feature_attribution`, `exact_node_effects`, `compare_feature_attribution`: the indirect
  effect of every feature and error node (attribution patching, integrated gradients, exact).
- `feature_circuit`, `edge_attribution`, `faithfulness`, `faithfulness_curve`: the circuit.
- `compare_families`, `permutation_test`: one circuit or several across template families.
- `by_word_position`, `WordAttribution`: nodes per IOI word (IO, S1, S2, end, ...) instead of
  per token position, so templates of different lengths line up.
- `interpret_features`: top prompts, logit effects and IOI roles of circuit features;
  `RoleContrast`, `role_evidence`: the ABC and family contrast a role is read from.
"""

from ioi.features.activations import (
    POSITION_CHOICES,
    collect_activations,
    ioi_and_abc,
    iter_activations,
    load_activations,
)
from ioi.features.attribution import (
    FeatureAttribution,
    FeatureAttributionComparison,
    FeatureNode,
    compare_feature_attribution,
    exact_node_effects,
    feature_attribution,
)
from ioi.features.circuit import (
    FeatureCircuit,
    edge_attribution,
    faithfulness,
    faithfulness_curve,
    feature_circuit,
    select_nodes,
)
from ioi.features.families import (
    FamilyComparison,
    PermutationTest,
    compare_families,
    family_labels,
    permutation_test,
)
from ioi.features.interpret import (
    FeatureReport,
    RoleContrast,
    interpret_feature,
    interpret_features,
    role_evidence,
)
from ioi.features.pretrained import load_pretrained_saes, load_saes_dir, load_toy_saes
from ioi.features.quality import SAEQuality, evaluate_saes, quality_table
from ioi.features.splice import activation_widths, sae_hook_name, splice_hooks, spliced
from ioi.features.train import SAESpec, save_saes, train_sae, train_saes
from ioi.features.word_positions import WORD_POSITIONS, WordAttribution, by_word_position

__all__ = [
    "FamilyComparison",
    "FeatureAttribution",
    "FeatureAttributionComparison",
    "FeatureCircuit",
    "FeatureNode",
    "FeatureReport",
    "RoleContrast",
    "PermutationTest",
    "compare_families",
    "compare_feature_attribution",
    "edge_attribution",
    "exact_node_effects",
    "faithfulness",
    "faithfulness_curve",
    "feature_attribution",
    "feature_circuit",
    "family_labels",
    "interpret_feature",
    "interpret_features",
    "role_evidence",
    "permutation_test",
    "select_nodes",
    "POSITION_CHOICES",
    "SAEQuality",
    "SAESpec",
    "activation_widths",
    "collect_activations",
    "evaluate_saes",
    "ioi_and_abc",
    "iter_activations",
    "load_activations",
    "load_pretrained_saes",
    "load_saes_dir",
    "load_toy_saes",
    "quality_table",
    "sae_hook_name",
    "save_saes",
    "splice_hooks",
    "spliced",
    "train_sae",
    "train_saes",
    "WORD_POSITIONS",
    "WordAttribution",
    "by_word_position",
]

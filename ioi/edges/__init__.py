"""Edge-level circuits: the edge graph, EAP / EAP-IG estimates and exact edge patching.

* `EdgeGraph.from_model`: every sender -> receiver edge (`ioi.edges.graph`).
* `edge_attribution`: EAP and EAP-IG scores of every edge (`ioi.edges.attribution`).
* `exact_edge_patching`: each edge's exact effect, many edges per pass (`ioi.edges.exact`);
  `plain_edge_effects`, one edge per forward pass, is its reference (`ioi.edges.plain`).
* `compare_edges`, `agreement_with_exact`: Pearson, Spearman and top-k overlap of an estimate
  with exact patching (`ioi.edges.agreement`).
* `edge_circuit`, `faithfulness_curve`, `compare_heads`: a circuit of edges, its faithfulness
  against its number of edges, its heads against a node-level circuit (`ioi.edges.circuit`).
"""

from ioi.edges.agreement import EdgeAgreement, agreement_with_exact, compare_edges
from ioi.edges.attribution import METHODS, EdgeScores, edge_attribution
from ioi.edges.circuit import (
    ABLATIONS,
    EdgeCircuit,
    FaithfulnessCurve,
    HeadOverlap,
    compare_heads,
    edge_circuit,
    faithfulness_curve,
    prune,
    run_circuit,
)
from ioi.edges.exact import exact_edge_patching
from ioi.edges.graph import (
    RECEIVER_KINDS,
    SENDER_KINDS,
    Edge,
    EdgeGraph,
    EdgeReceiver,
    EdgeSender,
)
from ioi.edges.plain import plain_edge_effects

__all__ = [
    "ABLATIONS",
    "EdgeAgreement",
    "EdgeCircuit",
    "FaithfulnessCurve",
    "HeadOverlap",
    "agreement_with_exact",
    "compare_edges",
    "compare_heads",
    "edge_circuit",
    "faithfulness_curve",
    "prune",
    "plain_edge_effects",
    "run_circuit",
    "METHODS",
    "RECEIVER_KINDS",
    "SENDER_KINDS",
    "Edge",
    "EdgeGraph",
    "EdgeReceiver",
    "EdgeScores",
    "EdgeSender",
    "edge_attribution",
    "exact_edge_patching",
]

"""Edge-level circuits: the edge graph, EAP / EAP-IG estimates and exact edge patching.

* `EdgeGraph.from_model`: every sender -> receiver edge (`ioi.edges.graph`).
* `edge_attribution`: EAP and EAP-IG scores of every edge (`ioi.edges.attribution`).
* `exact_edge_patching`: each edge's exact effect, many edges per pass (`ioi.edges.exact`).
* `compare_edges`: how well an estimate agrees with exact patching (`ioi.edges.agreement`).
"""

from ioi.edges.attribution import METHODS, EdgeScores, edge_attribution
from ioi.edges.exact import exact_edge_patching
from ioi.edges.graph import (
    RECEIVER_KINDS,
    SENDER_KINDS,
    Edge,
    EdgeGraph,
    EdgeReceiver,
    EdgeSender,
)

__all__ = [
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

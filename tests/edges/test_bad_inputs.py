"""Bad input to the edge methods, as a tired user passes it: a NaN metric, edges that are not in
the graph (or not edges), duplicate edges, edge counts that are not ints, runs the metric cannot
tell apart. Each is a clear ValueError or TypeError, never a silent NaN or an ignored edge, and
no hook outlives the call."""

from __future__ import annotations

import pytest
import torch

from ioi.edges import (
    Edge,
    EdgeGraph,
    EdgeReceiver,
    EdgeSender,
    agreement_with_exact,
    edge_attribution,
    faithfulness_curve,
    run_circuit,
)
from ioi.testing import assert_user_session_errors, hooks_left, logit_diff, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    clean, corrupted = token_pair(seed=1)
    graph = EdgeGraph.from_model(model)
    return (
        model,
        graph,
        clean,
        corrupted,
        edge_attribution(model, graph, clean, corrupted, logit_diff),
    )


def _nan(logits):
    return logit_diff(logits) * float("nan")


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_a_nan_metric_is_refused_not_turned_into_nan_scores(setup, method):
    model, graph, clean, corrupted, _ = setup
    with pytest.raises(ValueError, match="the metric is nan on the clean run"):
        edge_attribution(model, graph, clean, corrupted, _nan, method=method, steps=2)
    assert hooks_left(model) == []


def test_faithfulness_curve_refuses_a_nan_metric_and_ends_it_cannot_tell_apart(setup):
    model, graph, clean, corrupted, scores = setup
    with pytest.raises(ValueError, match="the metric is nan on the clean run"):
        faithfulness_curve(model, scores, clean, corrupted, _nan, [3])
    with pytest.raises(ValueError, match="with every edge kept and with none"):
        faithfulness_curve(model, scores, clean, clean, logit_diff, [3])
    assert hooks_left(model) == []


def test_run_circuit_refuses_an_edge_outside_the_graph(setup):
    model, graph, clean, corrupted, _ = setup
    outside = Edge(EdgeSender("head", 1, 0), EdgeReceiver("q", 1, 2))
    with pytest.raises(ValueError, match=r"edge a1\.0 -> 1\.2\.q is not in this graph"):
        run_circuit(model, graph, [outside], clean, corrupted, logit_diff)
    assert hooks_left(model) == []


def test_graphs_refuse_duplicates_and_a_logits_layer(setup):
    _, graph, *_ = setup
    with pytest.raises(ValueError, match="appears twice"):
        EdgeGraph((graph.edges[0], graph.edges[1], graph.edges[0]))
    with pytest.raises(ValueError, match="the logits receiver has layer 0"):
        EdgeReceiver("logits", 1)


@pytest.mark.parametrize("n_exact", [0, -1])
def test_agreement_names_a_bad_n_exact(setup, n_exact):
    model, graph, clean, corrupted, _ = setup
    with pytest.raises(ValueError, match="n_exact must be None .* or an int >= 1"):
        agreement_with_exact(model, graph, clean, corrupted, logit_diff, n_exact=n_exact)
    assert torch.equal(clean, token_pair(seed=1)[0])  # nothing the user passed changed


USER_SETUP = """
from ioi.edges import EdgeGraph, agreement_with_exact, edge_attribution, faithfulness_curve
from ioi.edges import prune, run_circuit
from ioi.testing import logit_diff, tiny_model, token_pair
model = tiny_model()
clean, corrupted = token_pair(seed=1)
graph = EdgeGraph.from_model(model)
scores = edge_attribution(model, graph, clean, corrupted, logit_diff)
"""
CASES = {  # outside the tests' runtime type checks, our own checks answer
    "float count": (
        "faithfulness_curve(model, scores, clean, corrupted, logit_diff, [2.5])",
        "ValueError",
        "list of ints >= 0, got \\[2\\.5\\]",
    ),
    "one count": (
        "faithfulness_curve(model, scores, clean, corrupted, logit_diff, 5)",
        "TypeError",
        "n_edges must be a list of edge counts",
    ),
    "str edges": (
        "run_circuit(model, graph, [str(graph.edges[0])], clean, corrupted, logit_diff)",
        "TypeError",
        "kept must be Edge objects",
    ),
    "prune str": (
        "prune('a0.1 -> logits')",
        "TypeError",
        "collection of Edge objects",
    ),
    "graph of str": (
        "EdgeGraph((graph.edges[0], 'embed -> logits'))",
        "TypeError",
        "an EdgeGraph holds Edge objects, got str",
    ),
    "list graph": (
        "EdgeGraph(list(graph.edges[:3])).edges == graph.edges[:3]",
        "none",
        "True",
    ),
    "float n_exact": (
        "agreement_with_exact(model, graph, clean, corrupted, logit_diff, n_exact=2.0)",
        "ValueError",
        "n_exact must be None",
    ),
}


def test_wrong_types_are_named_in_a_user_session():
    assert_user_session_errors(USER_SETUP, CASES)

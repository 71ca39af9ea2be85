"""Edge circuits: the two ends of the circuit run, single dropped edges, pruning, the curve."""

from __future__ import annotations

import pytest
import torch

from ioi.edges import (
    Edge,
    EdgeGraph,
    EdgeReceiver,
    EdgeScores,
    EdgeSender,
    agreement_with_exact,
    compare_edges,
    compare_heads,
    edge_attribution,
    edge_circuit,
    exact_edge_patching,
    faithfulness_curve,
    prune,
    run_circuit,
)
from ioi.head import Head
from ioi.testing import hooks_left, logit_diff, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(n_layers=3)
    clean, corrupted = token_pair(seed=1)
    return model, EdgeGraph.from_model(model), clean, corrupted


def _metric(model, tokens):
    with torch.inference_mode():
        return float(logit_diff(model(tokens)))


def test_keeping_every_edge_is_the_clean_run_and_none_the_corrupted_run(setup):
    model, graph, clean, corrupted = setup
    every = run_circuit(model, graph, graph.edges, clean, corrupted, logit_diff)
    none = run_circuit(model, graph, (), clean, corrupted, logit_diff)
    assert every == pytest.approx(_metric(model, clean), abs=1e-5)
    assert none == pytest.approx(_metric(model, corrupted), abs=1e-5)
    assert abs(every - none) > 0.5
    assert hooks_left(model) == [] and not model.cfg.use_attn_result


@pytest.mark.parametrize("split", [False, True])
def test_dropping_one_edge_is_exact_patching_of_that_edge(setup, split):
    model, graph, clean, corrupted = setup
    if split:
        graph = EdgeGraph.from_model(
            model, {"a": torch.tensor([1, 4, 2]), "b": torch.tensor([5] * 3)}
        )
    kinds = ("q", "k", "v", "mlp", "logits")
    sample = graph.subset(
        e for kind in kinds for e in [e for e in graph.edges if e.receiver.kind == kind][1::7][:2]
    )
    assert len(sample) == 10
    exact = exact_edge_patching(model, sample, clean, corrupted, logit_diff)
    base = _metric(model, clean)
    for edge, score in zip(sample.edges, exact.scores.tolist(), strict=True):
        kept = [e for e in graph.edges if e != edge]
        value = run_circuit(model, graph, kept, clean, corrupted, logit_diff)
        assert value - base == pytest.approx(score, abs=1e-5), str(edge)


def _per_edge_loop_run(model, graph, kept, clean, corrupted, metric, ablation):
    """`run_circuit` written plainly: one hook per receiver input that subtracts each dropped
    edge's change on its own, edge by edge (the reference for the stacked product)."""
    from ioi.edges.runs import position_mask, receiver_hook, split_inputs

    senders = {"embed": "blocks.0.hook_resid_pre"}
    for layer in range(model.cfg.n_layers):
        senders[f"head{layer}"] = f"blocks.{layer}.attn.hook_result"
        senders[f"mlp{layer}"] = f"blocks.{layer}.hook_mlp_out"

    def key(s):
        return "embed" if s.kind == "embed" else f"{s.kind}{s.layer}"

    model.cfg.use_attn_result = True
    try:
        with split_inputs(model), torch.inference_mode():
            _, cache = model.run_with_cache(clean if ablation == "mean" else corrupted)
            ref = {k: cache[n] for k, n in senders.items()}
            if ablation == "mean":
                ref = {k: v.mean(0, keepdim=True).expand_as(v) for k, v in ref.items()}
            now = {}
            hooks = [(n, lambda a, hook, k=k: now.__setitem__(k, a)) for k, n in senders.items()]
            by_hook = {}
            for e in graph.edges:
                if e not in set(kept):
                    by_hook.setdefault(receiver_hook(model, e.receiver), []).append(e)

            def correct(edges):
                def hook(act, hook):
                    out = act.clone()
                    for e in edges:
                        change = now[key(e.sender)] - ref[key(e.sender)]
                        if e.sender.kind == "head":
                            change = change[:, :, e.sender.head]
                        change = change * position_mask(graph, e.pos, change)[..., None]
                        if e.receiver.head is None:
                            out = out - change
                        else:
                            out[:, :, e.receiver.head] -= change
                    return out

                return hook

            hooks += [(n, correct(es)) for n, es in by_hook.items()]
            logits = model.run_with_hooks(clean, fwd_hooks=hooks)
    finally:
        model.cfg.use_attn_result = False
    return float(metric(logits))


@pytest.mark.parametrize("ablation", ["corrupted", "mean"])
@pytest.mark.parametrize("split", [False, True])
def test_run_circuit_equals_an_edge_by_edge_loop_on_random_circuits(setup, split, ablation):
    model, graph, clean, corrupted = setup
    if split:
        graph = EdgeGraph.from_model(
            model, {"a": torch.tensor([1, 4, 2]), "b": torch.tensor([5] * 3)}
        )
    generator = torch.Generator().manual_seed(0)
    values = []
    for fraction in (0.05, 0.3, 0.7):
        keep = torch.rand(len(graph), generator=generator) < fraction
        kept = [e for e, k in zip(graph.edges, keep.tolist(), strict=True) if k]
        ours = run_circuit(model, graph, kept, clean, corrupted, logit_diff, ablation)
        ref = _per_edge_loop_run(model, graph, kept, clean, corrupted, logit_diff, ablation)
        assert ours == pytest.approx(ref, abs=1e-5), (fraction, split, ablation)
        values.append(ours)
    assert max(values) - min(values) > 1e-2, "the circuits must differ for the test to bite"
    assert hooks_left(model) == []


def test_mean_ablating_every_edge_reads_the_batch_mean_final_residual(setup):
    model, graph, clean, corrupted = setup
    none = run_circuit(model, graph, (), clean, corrupted, logit_diff, ablation="mean")
    with torch.inference_mode():
        _, cache = model.run_with_cache(clean)
        final = cache["blocks.2.hook_resid_post"].mean(0, keepdim=True).expand(3, -1, -1)
        expected = float(logit_diff(model.unembed(model.ln_final(final))))
    assert none == pytest.approx(expected, abs=1e-5)
    assert abs(none - _metric(model, corrupted)) > 1e-2


def test_prune_keeps_only_edges_on_a_path_from_the_embeddings_to_the_logits():
    embed, logits = EdgeSender("embed"), EdgeReceiver("logits")
    on = [
        Edge(embed, EdgeReceiver("q", 0, 1)),
        Edge(EdgeSender("head", 0, 1), EdgeReceiver("mlp", 1)),
        Edge(EdgeSender("mlp", 1), logits),
    ]
    off = [
        Edge(EdgeSender("head", 0, 2), logits),  # nothing reaches 0.2
        Edge(embed, EdgeReceiver("k", 1, 0)),  # 1.0 reaches nothing
        Edge(EdgeSender("mlp", 0), EdgeReceiver("v", 2, 3)),  # neither end is connected
    ]
    assert prune(off[:1] + on + off[1:]) == on
    circuit = edge_circuit(
        EdgeScores(EdgeGraph(tuple(on + off)), torch.ones(6).double(), "exact", 0, 0.0), 6
    )
    assert circuit.edges == tuple(on) and circuit.heads() == {Head(0, 1)}
    overlap = compare_heads(circuit, ["0.1", (2, 3)])
    assert overlap.both == {Head(0, 1)} and overlap.only_nodes == {Head(2, 3)}
    assert overlap.jaccard == 0.5


def test_faithfulness_curve_runs_from_the_ablated_to_the_clean_end(setup):
    model, graph, clean, corrupted = setup
    scores = edge_attribution(model, graph, clean, corrupted, logit_diff)
    curve = faithfulness_curve(model, scores, clean, corrupted, logit_diff, [0, 30, len(graph)])
    assert curve.faithfulness[0] == pytest.approx(0.0, abs=1e-5)
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)
    assert curve.n_kept[0] == 0 and curve.n_kept[-1] == len(graph) and curve.n_kept[1] <= 30
    with pytest.raises(ValueError, match=r"choose one of \('corrupted', 'mean'\)"):
        faithfulness_curve(model, scores, clean, corrupted, logit_diff, [3], ablation="zero")
    assert hooks_left(model) == []


def test_agreement_of_exact_with_itself_is_perfect_and_eap_is_not(setup):
    model, graph, clean, corrupted = setup
    exact = exact_edge_patching(model, graph, clean, corrupted, logit_diff)
    same = compare_edges(exact, exact, top_k=20)
    assert (same.pearson, same.spearman, same.top_k_overlap, same.max_abs_error) == pytest.approx(
        (1.0, 1.0, 1.0, 0.0)
    )
    eap = agreement_with_exact(model, graph, clean, corrupted, logit_diff, top_k=20)
    assert eap.exact.scores.tolist() == pytest.approx(exact.scores.tolist(), abs=1e-6)
    assert 0 < eap.pearson < 0.99 and eap.top_k_overlap < 1.0
    top = agreement_with_exact(model, graph, clean, corrupted, logit_diff, n_exact=40, top_k=10)
    assert len(top.exact.graph) == 40 and top.top_k == 10
    with pytest.raises(ValueError, match="different edges"):
        compare_edges(top.estimate, exact)
    with pytest.raises(ValueError, match=r"top_k must be an int in 1\.\.40"):
        compare_edges(top.estimate, top.exact, top_k=41)

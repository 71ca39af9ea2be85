"""Edge graph, EAP / EAP-IG and exact edge patching, checked against independent references."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ioi.edges import (
    Edge,
    EdgeGraph,
    EdgeReceiver,
    EdgeSender,
    edge_attribution,
    exact_edge_patching,
)
from ioi.edges.plain import plain_edge_effects
from ioi.path_patching import Receiver, Sender, path_patch
from ioi.path_patching.batched import PathQuery, path_patch_queries
from ioi.testing import hooks_left, logit_diff, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")


def _shape_only(n_layers=12, n_heads=12, **overrides):
    cfg = dict(n_layers=n_layers, n_heads=n_heads, d_model=24, d_head=2, d_mlp=8, d_vocab=10)
    cfg.update(n_ctx=8, act_fn="gelu", device="cpu", **overrides)
    if cfg.get("attn_only"):
        cfg.pop("d_mlp")
    return HookedTransformer(HookedTransformerConfig(**cfg))


def _count(n_layers: int, n_heads: int) -> int:
    """Edges of a sequential model, from the definition: each sender to every later reader."""
    later_heads = lambda layer: 3 * n_heads * (n_layers - 1 - layer)  # noqa: E731
    embed = 3 * n_heads * n_layers + n_layers + 1
    heads = n_heads * sum(later_heads(i) + (n_layers - i) + 1 for i in range(n_layers))
    mlps = sum(later_heads(i) + (n_layers - 1 - i) + 1 for i in range(n_layers))
    return embed + heads + mlps


def test_gpt2_small_geometry_has_32491_edges():
    graph = EdgeGraph.from_model(_shape_only())
    assert len(graph) == _count(12, 12) == 32491
    assert len(set(graph.edges)) == len(graph)
    labels = [str(e) for e in graph.edges]
    assert "a9.9 -> logits" in labels and "a5.1 -> 9.9.q" in labels and "m3 -> m4" in labels
    assert "a4.0 -> m4" in labels and "m4 -> 4.0.q" not in labels and "a4.0 -> 4.1.k" not in labels


def test_split_positions_repeat_every_edge_and_parallel_blocks_drop_head_to_own_mlp():
    model = _shape_only(3, 2)
    split = EdgeGraph.from_model(model, {"S2": torch.tensor([1, 2]), "end": torch.tensor([3, 3])})
    assert len(split) == 2 * _count(3, 2)
    assert str(split.edges[0]) == "embed -> 0.0.q @S2"
    parallel = EdgeGraph.from_model(_shape_only(3, 2, parallel_attn_mlp=True))
    assert len(parallel) == _count(3, 2) - 3 * 2  # a head no longer feeds its own layer's MLP
    attn_only = EdgeGraph.from_model(_shape_only(3, 2, attn_only=True))
    kinds = {e.sender.kind for e in attn_only.edges} | {e.receiver.kind for e in attn_only.edges}
    assert kinds == {"embed", "head", "q", "k", "v", "logits"}
    assert len(attn_only) == (3 * 2 * 3 + 1) + 2 * sum(3 * 2 * (2 - i) + 1 for i in range(3))


@pytest.fixture(scope="module")
def runs():
    return token_pair(seed=1)


def _by_receiver(graph):
    kinds = {}
    for i, e in enumerate(graph.edges):
        kinds.setdefault(e.receiver.kind, []).append(i)
    return kinds


def test_exact_edge_patching_matches_a_plain_per_edge_loop(runs):
    clean, corrupted = runs
    model = tiny_model(n_layers=3)
    graph = EdgeGraph.from_model(model)
    assert len(graph) == 262 and set(_by_receiver(graph)) == {"q", "k", "v", "mlp", "logits"}
    ours = exact_edge_patching(model, graph, clean, corrupted, logit_diff, edges_per_pass=7)
    reference = plain_edge_effects(model, graph.edges, clean, corrupted, logit_diff)
    torch.testing.assert_close(ours.scores, reference, atol=1e-5, rtol=0)
    assert reference.abs().max() > 0.1  # the edges do something: the check can fail
    assert hooks_left(model) == []


def test_exact_edge_patching_with_split_positions_matches_the_plain_loop(runs):
    clean, corrupted = runs
    model = tiny_model()
    positions = {"S2": torch.tensor([2, 3, 1]), "end": torch.tensor([5, 5, 5])}
    graph = EdgeGraph.from_model(model, positions)
    ours = exact_edge_patching(model, graph, clean, corrupted, logit_diff)
    reference = plain_edge_effects(model, graph.edges, clean, corrupted, logit_diff, positions)
    torch.testing.assert_close(ours.scores, reference, atol=1e-5, rtol=0)
    s2 = torch.tensor([e.pos == "S2" for e in graph.edges])
    assert reference[s2].abs().max() > 1e-3 and reference[~s2].abs().max() > 1e-3


def _softmax_metric(logits):
    """Reads every logit of the last position (no partial readout can serve it)."""
    return logits[:, -1].softmax(-1)[:, 1].mean()


def _every_position_metric(logits):
    """Reads two tokens at every position (several positions per prompt: a full readout)."""
    return (logits[..., 1] - logits[..., 2]).mean()


@pytest.mark.parametrize("metric", [_softmax_metric, _every_position_metric])
def test_exact_edge_patching_matches_the_plain_loop_for_metrics_read_on_every_logit(runs, metric):
    clean, corrupted = runs
    model = tiny_model(n_layers=2)
    graph = EdgeGraph.from_model(model)
    ours = exact_edge_patching(model, graph, clean, corrupted, metric, edges_per_pass=5)
    reference = plain_edge_effects(model, graph.edges, clean, corrupted, metric)
    torch.testing.assert_close(ours.scores, reference, atol=1e-5, rtol=0)
    assert reference.abs().max() > 1e-3  # the edges move the metric: the check can fail


def test_eap_is_the_derivative_of_the_edge_effect_central_differences(runs):
    clean, corrupted = runs
    model = tiny_model(n_layers=3, dtype=torch.float64)
    graph = EdgeGraph.from_model(model)
    sample = graph.subset(graph.edges[::5])  # every receiver kind is in the sample
    assert set(_by_receiver(sample)) == {"q", "k", "v", "mlp", "logits"}
    eap = edge_attribution(model, sample, clean, corrupted, logit_diff)
    eps = 1e-4
    up = plain_edge_effects(model, sample.edges, clean, corrupted, logit_diff, scale=eps)
    down = plain_edge_effects(model, sample.edges, clean, corrupted, logit_diff, scale=-eps)
    torch.testing.assert_close(eap.scores, (up - down) / (2 * eps), atol=1e-6, rtol=1e-5)
    exact = exact_edge_patching(model, sample, clean, corrupted, logit_diff)
    assert (eap.scores - exact.scores).abs().max() > 1e-2  # LayerNorm: EAP is only first order


def test_eap_equals_exact_patching_for_direct_edges_to_logits_without_final_layernorm(runs):
    clean, corrupted = runs
    model = tiny_model(normalization_type=None)
    graph = EdgeGraph.from_model(model)
    direct = graph.subset(e for e in graph.edges if e.receiver.kind == "logits")
    eap = edge_attribution(model, direct, clean, corrupted, logit_diff)
    exact = exact_edge_patching(model, direct, clean, corrupted, logit_diff)
    torch.testing.assert_close(eap.scores, exact.scores, atol=1e-5, rtol=0)
    assert exact.scores.abs().max() > 0.1


def test_eap_ig_with_one_step_is_eap_and_more_steps_differ(runs):
    clean, corrupted = runs
    model = tiny_model()
    graph = EdgeGraph.from_model(model)
    eap = edge_attribution(model, graph, clean, corrupted, logit_diff)
    one = edge_attribution(model, graph, clean, corrupted, logit_diff, method="eap-ig", steps=1)
    torch.testing.assert_close(one.scores, eap.scores, atol=1e-6, rtol=0)
    many = edge_attribution(model, graph, clean, corrupted, logit_diff, method="eap-ig", steps=4)
    assert (many.scores - eap.scores).abs().max() > 1e-3
    assert (many.method, many.steps, eap.steps) == ("eap-ig", 4, 1)


def test_eap_ig_steps_are_a_riemann_sum_from_the_clean_end(runs):
    """Two steps: the gradient is the mean of the clean run's and the midpoint run's."""
    clean, corrupted = runs
    model = tiny_model(dtype=torch.float64)
    graph = EdgeGraph.from_model(model)
    two = edge_attribution(model, graph, clean, corrupted, logit_diff, method="eap-ig", steps=2)
    eap = edge_attribution(model, graph, clean, corrupted, logit_diff)
    # At the midpoint the edge's score is the change times the gradient there; the plain loop's
    # central difference around the midpoint embedding gives that gradient independently.
    from transformer_lens.utilities import get_act_name

    name = get_act_name("resid_pre", 0)
    with torch.inference_mode():
        _, cc = model.run_with_cache(clean)
        _, kc = model.run_with_cache(corrupted)
    mid_embed = (cc[name] + kc[name]) / 2

    def at_mid(act, hook):
        return mid_embed

    logits_edges = graph.subset(e for e in graph.edges if e.receiver.kind == "logits")
    eps = 1e-4
    up, down = (
        plain_edge_effects(
            model,
            logits_edges.edges,
            clean,
            corrupted,
            logit_diff,
            scale=s,
            run_hooks=[(name, at_mid)],
        )
        for s in (eps, -eps)
    )
    mid = (up - down) / (2 * eps)
    idx = [graph.index(e) for e in logits_edges.edges]
    torch.testing.assert_close(two.scores[idx], (eap.scores[idx] + mid) / 2, atol=1e-6, rtol=1e-5)


def test_direct_edges_agree_with_the_path_patching_engine_on_an_attention_only_model(runs):
    """Path patching freezes the heads between sender and receiver and recomputes MLPs; an
    attention-only model has none of either on a direct edge, so the two definitions agree."""
    clean, corrupted = runs
    model = tiny_model(n_layers=2, attn_only=True)
    base = float(logit_diff(model(clean).detach()))
    to_heads = [
        Edge(EdgeSender("head", 0, h), EdgeReceiver(i, 1, g))
        for h in range(4)
        for g in (0, 3)
        for i in ("q", "k", "v")
    ]
    queries = [
        PathQuery(
            Sender("head", 0, e.sender.head), (Receiver(1, e.receiver.head, e.receiver.kind),)
        )
        for e in to_heads
    ]
    paths = path_patch_queries(model, logit_diff, corrupted, clean, queries) - base
    graph = EdgeGraph(tuple(to_heads))
    exact = exact_edge_patching(model, graph, clean, corrupted, logit_diff)
    torch.testing.assert_close(exact.scores, paths.double(), atol=1e-5, rtol=0)
    senders = [Sender("head", 0, h) for h in range(4)]
    direct = path_patch(model, logit_diff, corrupted, clean, senders) - base
    to_logits = EdgeGraph(
        tuple(Edge(EdgeSender("head", 0, h), EdgeReceiver("logits")) for h in range(4))
    )
    exact = exact_edge_patching(model, to_logits, clean, corrupted, logit_diff)
    torch.testing.assert_close(exact.scores, direct.double(), atol=1e-5, rtol=0)


def test_path_patching_to_logits_is_not_an_edge_when_mlps_sit_between(runs):
    """With MLPs, path patching to the logits also carries the sender's effect through them."""
    clean, corrupted = runs
    model = tiny_model(n_layers=2)
    base = float(logit_diff(model(clean).detach()))
    path = path_patch(model, logit_diff, corrupted, clean, [Sender("head", 0, 1)]) - base
    edge = EdgeGraph((Edge(EdgeSender("head", 0, 1), EdgeReceiver("logits")),))
    exact = exact_edge_patching(model, edge, clean, corrupted, logit_diff)
    assert abs(float(path[0]) - float(exact.scores[0])) > 1e-3


def _graph_with(model, edge):
    return EdgeGraph((edge,))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: EdgeReceiver("o", 1, 0), "choose one of ('q', 'k', 'v', 'mlp', 'logits')"),
        (lambda: EdgeSender("attn", 1, 0), "choose one of ('embed', 'head', 'mlp')"),
        (lambda: EdgeReceiver("mlp", 1, 2), "has no head"),
        (lambda: EdgeSender("head", 1), "head must be an int >= 0"),
    ],
)
def test_bad_nodes_name_the_choices(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_bad_calls_raise_value_errors_and_leave_no_hooks(runs):
    clean, corrupted = runs
    model = tiny_model()
    graph = EdgeGraph.from_model(model)
    flags = (model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in)
    backwards = EdgeGraph((Edge(EdgeSender("head", 1, 0), EdgeReceiver("q", 1, 2)),))
    mlp_back = EdgeGraph((Edge(EdgeSender("mlp", 1), EdgeReceiver("q", 1, 0)),))
    too_deep = EdgeGraph((Edge(EdgeSender("head", 0, 0), EdgeReceiver("q", 5, 0)),))
    split = EdgeGraph.from_model(model, {"end": torch.tensor([5, 5])})
    for call, message in [
        (lambda: edge_attribution(model, graph, clean, corrupted, logit_diff, method="ig"),
         "choose one of \\('eap', 'eap-ig'\\)"),
        (lambda: edge_attribution(model, graph, clean, corrupted, logit_diff, method="eap-ig",
                                  steps=0), "steps must be an int >= 1"),
        (lambda: exact_edge_patching(model, backwards, clean, corrupted, logit_diff),
         "does not write before its receiver reads"),
        (lambda: edge_attribution(model, mlp_back, clean, corrupted, logit_diff),
         "does not write before its receiver reads"),
        (lambda: exact_edge_patching(model, too_deep, clean, corrupted, logit_diff),
         "receiver layer 5 is outside 0..1"),
        (lambda: exact_edge_patching(model, split, clean, corrupted, logit_diff),
         "batch of 2 prompts, the tokens have 3"),
        (lambda: exact_edge_patching(model, graph, clean, corrupted, logit_diff,
                                     edges_per_pass=0), "edges_per_pass must be an int >= 1"),
        (lambda: edge_attribution(model, graph, clean, corrupted, lambda x: x[:, -1, :2]),
         "must return a scalar or one value per prompt"),
        (lambda: exact_edge_patching(model, graph, clean, corrupted, lambda x: x[:, -1, :2]),
         "must return a scalar or one value per prompt"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            call()
        assert hooks_left(model) == []
        assert (model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in) == flags
    with pytest.raises(ValueError, match="not in this graph"):
        graph.index(Edge(EdgeSender("head", 1, 0), EdgeReceiver("q", 1, 2)))


def test_mismatched_batches_are_a_value_error_in_a_user_session():
    """Outside the tests' jaxtyping checks, our own check names both batches."""
    from ioi.testing import errors_in_a_user_session

    setup = (
        "from ioi.edges import EdgeGraph, edge_attribution, exact_edge_patching\n"
        "from ioi.testing import tiny_model, token_pair, logit_diff\n"
        "m = tiny_model(); g = EdgeGraph.from_model(m); c, k = token_pair()"
    )
    out = errors_in_a_user_session(
        setup,
        {
            "eap": "edge_attribution(m, g, c, k[:2], logit_diff)",
            "exact": "exact_edge_patching(m, g, c[:, :4], k, logit_diff)",
        },
    )
    for kind, message in out.values():
        assert kind == "ValueError" and "must have the same shape" in message, message


def _per_prompt_diff(logits):
    """`logit_diff` before the mean: one value per prompt."""
    return logits[:, -1, 3] - logits[:, -1, 7]


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_per_prompt_eap_is_each_prompt_alone_and_its_mean_the_scalar_score(runs, method):
    clean, corrupted = runs
    model = tiny_model(n_layers=2)
    graph = EdgeGraph.from_model(model)
    rows = edge_attribution(model, graph, clean, corrupted, _per_prompt_diff, method=method)
    scalar = edge_attribution(model, graph, clean, corrupted, logit_diff, method=method)
    assert rows.per_prompt.shape == (len(graph), clean.shape[0]) and scalar.per_prompt is None
    torch.testing.assert_close(rows.scores, scalar.scores, atol=1e-6, rtol=0)
    for b in range(clean.shape[0]):  # independent reference: the prompt scored on its own
        alone = edge_attribution(
            model, graph, clean[b : b + 1], corrupted[b : b + 1], logit_diff, method=method
        )
        torch.testing.assert_close(rows.per_prompt[:, b], alone.scores, atol=1e-5, rtol=0)
    assert (rows.per_prompt.std(1) > 1e-3).any()  # prompts differ: the check can fail


def test_per_prompt_exact_edge_patching_matches_the_plain_loop_per_prompt(runs):
    clean, corrupted = runs
    model = tiny_model(n_layers=2)
    graph = EdgeGraph.from_model(model)
    ours = exact_edge_patching(model, graph, clean, corrupted, _per_prompt_diff, edges_per_pass=6)
    reference = plain_edge_effects(model, graph.edges, clean, corrupted, _per_prompt_diff)
    assert reference.shape == (len(graph), clean.shape[0])
    torch.testing.assert_close(ours.per_prompt, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.scores, reference.mean(1), atol=1e-6, rtol=0)
    assert (reference.std(1) > 1e-3).any()


def test_edge_intervals_are_the_seeded_bootstrap_of_the_per_prompt_scores(runs):
    from ioi.statistics import bootstrap

    clean, corrupted = runs
    model = tiny_model(n_layers=2)
    graph = EdgeGraph.from_model(model)
    rows = edge_attribution(model, graph, clean, corrupted, _per_prompt_diff)
    est = rows.interval(seed=3)
    ref = bootstrap(rows.per_prompt, seed=3)
    torch.testing.assert_close(est.low, ref.low) and torch.testing.assert_close(est.high, ref.high)
    torch.testing.assert_close(est.mean, rows.scores.to(est.mean.dtype), atol=1e-9, rtol=0)
    assert not torch.equal(rows.interval(seed=4).low, est.low)  # the seed matters
    sub = rows.subset(rows.top(5))
    torch.testing.assert_close(
        sub.interval(seed=3).low, est.low[[graph.index(e) for e in sub.graph.edges]]
    )
    scalar = edge_attribution(model, graph, clean, corrupted, logit_diff)
    with pytest.raises(ValueError, match="per-prompt metric"):
        scalar.interval()

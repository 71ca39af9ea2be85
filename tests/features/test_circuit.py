"""Feature circuits: edges against finite differences, faithfulness against a plain ablation loop."""

from __future__ import annotations

import pytest
import torch

from ioi.features.attribution import FeatureNode, feature_attribution
from ioi.features.circuit import (
    ablated_metric,
    edge_attribution,
    faithfulness,
    faithfulness_curve,
    feature_circuit,
    node_means,
    select_nodes,
)
from ioi.testing import hooks_left, logit_diff, tiny_model, token_pair
from tests.features.tiny_saes import random_sae64, sae_hooks_left

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

HOOKS = ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


@pytest.fixture(scope="module")
def model():
    return tiny_model(dtype=torch.float64)


@pytest.fixture(scope="module")
def saes():
    return {hook: random_sae64(32, 16, seed=10 + i) for i, hook in enumerate(HOOKS)}


@pytest.fixture(scope="module")
def tokens():
    return token_pair(seed=2)


def run_nudged(model, hook, tokens, shift, read=None):
    """Logits (or the activation at ``read``) with ``shift`` added to the activation at ``hook``."""
    seen = {}
    hooks = [(hook, lambda act, hook: act + shift)]
    if read is not None:
        hooks.append((read, lambda act, hook: seen.setdefault("act", act)))
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return seen["act"] if read is not None else logits


def node_direction(sae, x_clean, x_corr, node):
    """How the activation moves when ``node`` goes from its clean to its corrupted value."""
    f_clean, f_corr = sae.encode(x_clean), sae.encode(x_corr)
    e_clean, e_corr = x_clean - sae.decode(f_clean), x_corr - sae.decode(f_corr)
    move = torch.zeros_like(x_clean)
    if node.feature is None:
        move[:, node.pos] = e_corr[:, node.pos] - e_clean[:, node.pos]
    else:
        delta = f_corr[:, node.pos, node.feature] - f_clean[:, node.pos, node.feature]
        move[:, node.pos] = delta[:, None] * sae.W_dec[node.feature]
    return move


def reference_edge(model, saes, clean, corrupted, up, down, eps=1e-5) -> float:
    """Central differences only: v = d(down node)/d(up node) * its change, as a move of the
    downstream activation; the edge is the metric's derivative along v."""
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corr_cache = model.run_with_cache(corrupted)
        sae_u, sae_d = saes[up.hook], saes[down.hook]
        move = node_direction(sae_u, clean_cache[up.hook], corr_cache[up.hook], up)

        def downstream(t):
            x = run_nudged(model, up.hook, clean, t * move, read=down.hook)
            f = sae_d.encode(x)
            return f, x - sae_d.decode(f)

        (f_plus, e_plus), (f_minus, e_minus) = downstream(eps), downstream(-eps)
        v = torch.zeros_like(clean_cache[down.hook])
        if down.feature is None:
            v[:, down.pos] = (e_plus - e_minus)[:, down.pos] / (2 * eps)
        else:
            slope = (f_plus - f_minus)[:, down.pos, down.feature] / (2 * eps)
            v[:, down.pos] = slope[:, None] * sae_d.W_dec[down.feature]
        plus = logit_diff(run_nudged(model, down.hook, clean, eps * v))
        minus = logit_diff(run_nudged(model, down.hook, clean, -eps * v))
    return float((plus - minus) / (2 * eps))


def test_edges_match_finite_differences(model, saes, tokens):
    clean, corrupted = tokens
    attribution = feature_attribution(model, saes, clean, corrupted, logit_diff)
    nodes = []
    for hook in HOOKS:  # the largest few of each hook point, and its error node at one position
        ranked = [n for n in attribution.top(len(attribution.nodes())) if n.hook == hook]
        nodes += [n for n in ranked if n.feature is not None][:3] + [FeatureNode(hook, 5, None)]
    edges = edge_attribution(model, saes, clean, corrupted, logit_diff, nodes)
    assert len(edges) == 2 * 4 * 4
    assert all(up.hook != HOOKS[0] or down.hook == HOOKS[1] for up, down in edges)
    checked = list(edges.items())[::3]
    reference = [reference_edge(model, saes, clean, corrupted, u, d) for (u, d), _ in checked]
    got = [value for _, value in checked]
    assert max(abs(r) for r in reference) > 1e-3
    torch.testing.assert_close(torch.tensor(got), torch.tensor(reference), atol=1e-6, rtol=1e-5)
    assert hooks_left(model) == [] and sae_hooks_left(saes) == []


def plain_ablation(model, saes, tokens, keep) -> float:
    """Every hook point in turn: nodes outside ``keep`` at their mean over the prompts."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        means = {}
        for hook, sae in saes.items():
            f = sae.encode(cache[hook])
            means[hook] = (f.mean(0), (cache[hook] - sae.decode(f)).mean(0))

        def ablate(act, hook):
            sae, (mean_f, mean_e) = saes[hook.name], means[hook.name]
            f = sae.encode(act)
            e = act - sae.decode(f)
            f_new, e_new = mean_f.expand_as(f).clone(), mean_e.expand_as(e).clone()
            for node in keep:
                if node.hook == hook.name and node.feature is None:
                    e_new[:, node.pos] = e[:, node.pos]
                elif node.hook == hook.name:
                    f_new[:, node.pos, node.feature] = f[:, node.pos, node.feature]
            return sae.decode(f_new) + e_new

        logits = model.run_with_hooks(tokens, fwd_hooks=[(h, ablate) for h in saes])
    return float(logit_diff(logits))


def test_mean_ablation_matches_a_plain_loop(model, saes, tokens):
    clean, _ = tokens
    gen = torch.Generator().manual_seed(0)
    means = node_means(model, saes, clean)
    for size in (0, 5, 40):
        keep = {
            FeatureNode(
                HOOKS[int(torch.randint(3, (1,), generator=gen))],
                int(torch.randint(6, (1,), generator=gen)),
                None if i % 4 == 0 else int(torch.randint(16, (1,), generator=gen)),
            )
            for i in range(size)
        }
        got = ablated_metric(model, saes, clean, logit_diff, keep, means)
        assert got == pytest.approx(plain_ablation(model, saes, clean, keep), abs=1e-9)


def test_faithfulness_is_one_for_everything_and_zero_for_nothing(model, saes, tokens):
    clean, corrupted = tokens
    attribution = feature_attribution(model, saes, clean, corrupted, logit_diff)
    every = attribution.nodes()
    assert faithfulness(model, saes, clean, logit_diff, every) == pytest.approx(1.0, abs=1e-9)
    curve = faithfulness_curve(model, saes, clean, logit_diff, [[], attribution.top(10), every])
    assert [n for n, _ in curve] == [0, 10, len(every)]
    assert curve[0][1] == pytest.approx(0.0, abs=1e-9) and curve[2][1] == pytest.approx(1.0)
    assert hooks_left(model) == [] and sae_hooks_left(saes) == []


def test_feature_circuit_puts_the_steps_together(model, saes, tokens):
    clean, corrupted = tokens
    circuit = feature_circuit(
        model, saes, clean, corrupted, logit_diff, threshold=0.05, steps=4, curve_sizes=(1, 8)
    )
    assert circuit.nodes and all(abs(circuit.effect(n)) >= 0.05 for n in circuit.nodes)
    left_out = set(circuit.attribution.nodes()) - set(circuit.nodes)
    assert all(abs(circuit.effect(n)) < 0.05 for n in left_out)
    assert all(u in circuit.nodes and d in circuit.nodes for u, d in circuit.edges)
    assert [n for n, _ in circuit.curve] == [1, 8]
    assert circuit.faithfulness == pytest.approx(
        faithfulness(model, saes, clean, logit_diff, circuit.nodes)
    )


def test_select_nodes_needs_exactly_one_rule(model, saes, tokens):
    clean, corrupted = tokens
    attribution = feature_attribution(
        model, {HOOKS[1]: saes[HOOKS[1]]}, clean, corrupted, logit_diff
    )
    for kwargs in (dict(), dict(threshold=0.1, top_n=3)):
        with pytest.raises(ValueError, match="exactly one"):
            select_nodes(attribution, **kwargs)
    with pytest.raises(ValueError, match="non-negative"):
        select_nodes(attribution, threshold=-1.0)
    assert select_nodes(attribution, threshold=1e9) == []
    assert select_nodes(attribution, top_n=3) == attribution.top(3)


def test_curve_sizes_must_be_node_counts(model, saes, tokens):
    clean, corrupted = tokens
    with pytest.raises(ValueError, match="curve_sizes must be positive node counts"):
        feature_circuit(
            model, saes, clean, corrupted, logit_diff, threshold=0.1, curve_sizes=(5, 0)
        )
    assert hooks_left(model) == []

"""Feature attribution against a plain per-node patching loop written here."""

from __future__ import annotations

import pytest
import torch
from jaxtyping import TypeCheckError

from ioi.features.attribution import (
    FeatureNode,
    compare_feature_attribution,
    exact_node_effects,
    feature_attribution,
    spearman,
)
from ioi.features.circuit import ablated_metric, node_means
from ioi.metrics import make_logit_diff_metric
from ioi.testing import hooks_left, logit_diff, tiny_model, token_pair
from tests.features.tiny_saes import random_sae64, sae_hooks_left

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out")


@pytest.fixture(scope="module")
def model():
    return tiny_model(dtype=torch.float64)


@pytest.fixture(scope="module")
def saes():
    return {hook: random_sae64(32, 24, seed=i) for i, hook in enumerate(HOOKS)}


@pytest.fixture(scope="module")
def tokens():
    return token_pair(seed=1)


def plain_patch(model, sae, hook, clean, corrupted, node) -> float:
    """m(clean with one node from the corrupted run) - m(clean): x' = decode(f') + error'."""
    _, clean_cache = model.run_with_cache(clean)
    _, corr_cache = model.run_with_cache(corrupted)
    x_clean, x_corr = clean_cache[hook], corr_cache[hook]
    f_clean, f_corr = sae.encode(x_clean), sae.encode(x_corr)
    e_clean, e_corr = x_clean - sae.decode(f_clean), x_corr - sae.decode(f_corr)
    features, error = f_clean.clone(), e_clean.clone()
    if node.feature is None:
        error[:, node.pos] = e_corr[:, node.pos]
    else:
        features[:, node.pos, node.feature] = f_corr[:, node.pos, node.feature]
    patched = sae.decode(features) + error
    logits = model.run_with_hooks(clean, fwd_hooks=[(hook, lambda act, hook: patched)])
    return float(logit_diff(logits) - logit_diff(model(clean)))


def some_nodes(hook):
    return [FeatureNode(hook, 2, 3), FeatureNode(hook, 5, 0), FeatureNode(hook, 5, None)] + [
        FeatureNode(hook, pos, f) for pos in (1, 4) for f in (7, 11, 23)
    ]


def test_exact_matches_a_plain_per_node_loop(model, saes, tokens):
    clean, corrupted = tokens
    nodes = [node for hook in HOOKS for node in some_nodes(hook)]
    with torch.no_grad():
        expected = [plain_patch(model, saes[n.hook], n.hook, clean, corrupted, n) for n in nodes]
    got = exact_node_effects(model, saes, clean, corrupted, logit_diff, nodes, nodes_per_pass=4)
    assert torch.tensor(expected).abs().max() > 1e-3  # the patches change something
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), atol=1e-9, rtol=0)
    assert hooks_left(model) == [] and sae_hooks_left(saes) == []


@pytest.mark.parametrize(
    ("overrides", "hook"),
    [
        (dict(normalization_type=None), "blocks.1.hook_resid_post"),
        (dict(), "ln_final.hook_normalized"),
    ],
)
def test_atp_is_exact_where_the_metric_is_linear_in_the_nodes(overrides, hook, tokens):
    # After the last nonlinearity the logits are an affine map of the activation, and the
    # activation is decode(f) + error with an affine decoder: the metric is linear in each node.
    model = tiny_model(dtype=torch.float64, **overrides)
    saes = {hook: random_sae64(32, 24, seed=5)}
    clean, corrupted = tokens
    result = compare_feature_attribution(
        model, saes, clean, corrupted, logit_diff, method="atp", top_k=40
    )
    assert result.exact.abs().max() > 1e-2
    torch.testing.assert_close(result.estimate, result.exact, atol=1e-9, rtol=0)
    assert result.pearson == pytest.approx(1.0) and result.spearman == pytest.approx(1.0)


def test_atp_is_not_exact_in_the_middle_of_the_model(model, saes, tokens):
    # The check above can fail: before a nonlinearity the first-order estimate is off.
    clean, corrupted = tokens
    result = compare_feature_attribution(model, saes, clean, corrupted, logit_diff, top_k=30)
    assert result.max_abs_error > 1e-4


def whole_hook_patch(model, hook, clean, corrupted) -> float:
    _, corr_cache = model.run_with_cache(corrupted)
    logits = model.run_with_hooks(
        clean, fwd_hooks=[(hook, lambda act, hook: corr_cache[hook.name])]
    )
    return float(logit_diff(logits) - logit_diff(model(clean)))


@pytest.mark.parametrize("hook", HOOKS)
def test_integrated_gradients_are_complete(model, saes, tokens, hook):
    """Sum of IG over one hook point's nodes = patching the whole hook point, as steps grow."""
    clean, corrupted = tokens
    with torch.no_grad():
        target = whole_hook_patch(model, hook, clean, corrupted)
    if hook == "blocks.1.hook_resid_pre":  # the whole residual stream: the corrupted run
        with torch.no_grad():
            whole = logit_diff(model(corrupted)) - logit_diff(model(clean))
        assert target == pytest.approx(float(whole))
    errors = []
    for steps in (1, 4, 16):
        result = feature_attribution(
            model, {hook: saes[hook]}, clean, corrupted, logit_diff, method="ig", steps=steps
        )
        errors.append(abs(float(result.scores[hook].sum()) - target))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 2e-3 * max(1.0, abs(target))
    assert hooks_left(model) == [] and sae_hooks_left(saes) == []


def test_per_prompt_shares_average_to_the_scores(model, saes, tokens):
    clean, corrupted = tokens
    for method in ("atp", "ig"):
        result = feature_attribution(
            model, saes, clean, corrupted, logit_diff, method=method, steps=3, per_prompt=True
        )
        for hook in HOOKS:
            assert result.per_prompt[hook].shape == (3, 6, 25)
            torch.testing.assert_close(result.per_prompt[hook].mean(0), result.scores[hook])


def test_nodes_top_and_effect_agree(model, saes, tokens):
    clean, corrupted = tokens
    result = feature_attribution(model, saes, clean, corrupted, logit_diff)
    nodes, flat = result.nodes(), result.flat()
    assert len(nodes) == flat.numel() == 3 * 6 * 25
    for i in (0, 24, 25, 200, len(nodes) - 1):
        assert result.effect(nodes[i]) == float(flat[i])
    top = result.top(5)
    assert [abs(result.effect(n)) for n in top] == sorted(flat.abs().tolist(), reverse=True)[:5]


def test_spearman_against_hand_ranks():
    a = torch.tensor([1.0, 5.0, 3.0, 3.0])
    b = torch.tensor([10.0, 40.0, 20.0, 30.0])
    # ranks a: 0, 3, 1.5, 1.5; b: 0, 3, 1, 2 -> Pearson of those
    ra, rb = torch.tensor([0, 3, 1.5, 1.5]), torch.tensor([0.0, 3, 1, 2])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    assert spearman(a, b) == pytest.approx(float(ra @ rb / (ra.norm() * rb.norm())))


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (dict(method="exact"), ValueError, ["atp", "ig"]),
        (dict(method="ig", steps=0), ValueError, ["steps", "at least 1"]),
        (dict(method="ig", steps=2.0), TypeError, ["steps"]),
        (dict(saes="blocks.0.hook_nothing"), ValueError, ["not a hook point", "get_act_name"]),
        (dict(saes={}), TypeError, ["non-empty"]),
        (dict(saes={"blocks.0.hook_resid_pre": "sae"}), TypeError, ["sae"]),
        (dict(saes="blocks.0.mlp.hook_post"), ValueError, ["d_in=32", "width 64"]),
        # jaxtyping catches the shapes first while tests run; users get the ValueError
        (
            dict(corrupted=torch.zeros(3, 5, dtype=torch.long)),
            (ValueError, TypeCheckError),
            ["pos"],
        ),
    ],
)
def test_bad_input_is_named(model, saes, tokens, kwargs, error, words):
    clean, corrupted = tokens
    kwargs = dict(kwargs)
    chosen = kwargs.pop("saes", saes)
    if isinstance(chosen, str):  # a hook name: a well-formed SAE there
        chosen = {chosen: random_sae64(32, 8)}
    corrupted = kwargs.pop("corrupted", corrupted)
    with pytest.raises(error) as info:
        feature_attribution(model, chosen, clean, corrupted, logit_diff, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert hooks_left(model) == []


def test_exact_refuses_nodes_outside_the_saes(model, saes, tokens):
    clean, corrupted = tokens
    for node, words in [
        (FeatureNode("blocks.0.hook_resid_pre", 0, 1), "SAEs are at"),
        (FeatureNode(HOOKS[0], 9, 1), "position outside 0..5"),
        (FeatureNode(HOOKS[0], 1, 24), "feature outside 0..23"),
    ]:
        with pytest.raises(ValueError, match=words):
            exact_node_effects(model, saes, clean, corrupted, logit_diff, [node])


def test_a_metric_that_declares_its_logits_gets_the_same_answers(model, saes, tokens):
    # The IOI metrics declare the positions and tokens they read, and get only those logits
    # (the rest NaN); every result must equal the one computed from full logits.
    clean, corrupted = tokens
    answers = torch.tensor([[3, 7], [8, 1], [2, 9]])
    declared = make_logit_diff_metric(answers, positions=torch.tensor([5, 3, 4]))
    undeclared = lambda logits: declared(logits)  # noqa: E731  (no attributes: full logits)
    assert hasattr(declared, "logit_positions") and not hasattr(undeclared, "logit_positions")
    nodes = [node for hook in HOOKS for node in some_nodes(hook)]
    fast = exact_node_effects(model, saes, clean, corrupted, declared, nodes)
    full = exact_node_effects(model, saes, clean, corrupted, undeclared, nodes)
    assert full.abs().max() > 1e-3
    torch.testing.assert_close(fast, full, atol=1e-10, rtol=0)
    for metric_pair in [(declared, undeclared)]:
        a, b = (
            feature_attribution(model, saes, clean, corrupted, m, method="ig", steps=3)
            for m in metric_pair
        )
        for hook in HOOKS:
            torch.testing.assert_close(a.scores[hook], b.scores[hook], atol=1e-10, rtol=0)
    means = node_means(model, saes, clean)
    keep = nodes[:5]
    assert ablated_metric(model, saes, clean, declared, keep, means) == pytest.approx(
        ablated_metric(model, saes, clean, undeclared, keep, means), abs=1e-10
    )

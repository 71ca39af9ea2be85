"""Bad input to the engines (activation patching, the drop-ins, attribution, path patching) fails
with a clear error by class, as a user sees it, never as a raw torch error or a NaN grid.

Classes: a metric that is not finite (on the unpatched run, or at some sites: the first such
site is named, checked against a plain per-site loop), token batches that are empty, of the
wrong dtype, outside the vocabulary or longer than the context, caches of the wrong type or
run, a sweep built for another sequence length, receiver heads that are not int pairs, and a
memory_budget that is not None or a positive int.
"""

from __future__ import annotations

import re

import pytest
import torch

from ioi.patching import activation_patching, attribution_patching, get_act_patch_resid_pre, sweep
from ioi.path_patching import (
    Sender,
    get_path_patch_head_to_final_resid_post,
    get_path_patch_head_to_heads,
    make_receivers,
    plain_path_patch,
)
from ioi.testing import (
    N_POS,
    errors_in_a_user_session,
    hooks_left,
    logit_diff,
    tiny_model,
    token_pair,
)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    clean, corrupted = token_pair(shared_prefix=1)
    with torch.no_grad():
        if logit_diff(model(clean)) < logit_diff(model(corrupted)):  # clean: the higher one
            clean, corrupted = corrupted, clean
        _, cache = model.run_with_cache(clean)
    return model, clean, corrupted, cache


def _nan_between(low: float, high: float):
    """A metric that is NaN whenever the logit difference lies strictly inside (low, high)."""

    def metric(logits):
        value = logit_diff(logits)
        return torch.tensor(float("nan")) if low < value < high else value

    return metric


def _band(values: torch.Tensor, low: float, high: float) -> tuple[float, float]:
    """A band strictly between the two baselines holding some but not all of ``values``."""
    span = high - low
    band = (low + 0.05 * span, high - 0.05 * span)
    inside = (values > band[0]) & (values < band[1])
    assert inside.any() and not inside.all(), "the test needs sites inside and outside the band"
    return band


def _first_inside(values: torch.Tensor, band: tuple[float, float], labels: list[str]) -> str:
    inside = ((values.flatten() > band[0]) & (values.flatten() < band[1])).nonzero()
    return labels[int(inside[0, 0])]


def test_a_metric_nan_at_some_sites_names_the_first_one(setup):
    """The baselines are finite; the sites whose value falls inside a band go NaN."""
    model, clean, corrupted, cache = setup
    grid = sweep(model, "z", N_POS, positions="each")
    honest = activation_patching(model, clean, corrupted, logit_diff, grid).effect.flatten()
    with torch.no_grad():
        low, high = float(logit_diff(model(corrupted))), float(logit_diff(model(clean)))
    band = _band(honest, low, high)
    # The honest values come from the engine, which is checked against a per-site loop in
    # test_api.py; the first site inside the band is the one the error must name.
    first = _first_inside(honest, band, [site.describe() for site in grid.sites])
    metric = _nan_between(*band)
    with pytest.raises(ValueError, match=rf"not finite \(nan\) when patching {re.escape(first)},"):
        activation_patching(model, clean, corrupted, metric, grid)
    resid = sweep(model, "resid_pre", N_POS, positions="each")
    honest = get_act_patch_resid_pre(model, corrupted, cache, logit_diff).flatten()
    first = _first_inside(honest, _band(honest, low, high), [s.describe() for s in resid.sites])
    with pytest.raises(ValueError, match=rf"when patching {re.escape(first)},"):
        get_act_patch_resid_pre(model, corrupted, cache, _nan_between(*_band(honest, low, high)))
    assert not hooks_left(model)


def test_a_metric_nan_on_the_unpatched_run_says_so(setup):
    model, clean, corrupted, cache = setup
    grid = sweep(model, "z", N_POS)

    def nan_metric(logits):
        return logit_diff(logits) * float("nan")

    def inf_metric(logits):
        return logit_diff(logits) / 0.0

    for metric in (nan_metric, inf_metric):
        for run in (
            lambda m=metric: activation_patching(model, clean, corrupted, m, grid),
            lambda m=metric: activation_patching(model, clean, corrupted, m, grid, mode="noise"),
            lambda m=metric: get_act_patch_resid_pre(model, corrupted, cache, m),
            lambda m=metric: attribution_patching(model, clean, corrupted, m, grid),
        ):
            with pytest.raises(ValueError, match=r"(nan|inf) on the unpatched \w* ?run already"):
                run()
    assert not hooks_left(model)


def test_path_patching_names_the_first_sender_whose_metric_is_not_finite(setup):
    model, clean, corrupted, _ = setup
    senders = [Sender("head", layer, head) for layer in range(2) for head in range(4)]
    honest = torch.stack(
        [plain_path_patch(model, logit_diff, corrupted, clean, s) for s in senders]
    )
    band = _band(honest, float(honest.min()) - 1e-3, float(honest.max()) + 1e-3)
    first = _first_inside(honest, band, [f"sender {s}" for s in senders])
    with pytest.raises(ValueError, match=re.escape(f"when patching {first},")):
        get_path_patch_head_to_final_resid_post(model, _nan_between(*band), corrupted, clean)
    with pytest.raises(ValueError, match=r"every site"):
        get_path_patch_head_to_final_resid_post(
            model, lambda logits: logit_diff(logits) * float("nan"), corrupted, clean
        )
    assert not hooks_left(model)


def test_path_patching_to_heads_leaves_unreachable_rows_nan(setup):
    model, clean, corrupted, _ = setup
    grid = get_path_patch_head_to_heads([(1, 2)], "q", model, logit_diff, corrupted, clean)
    assert grid[1].isnan().all() and not grid[0].isnan().any()


def test_receiver_heads_that_are_not_int_pairs_are_refused():
    # (What a user without a runtime type checker sees is tested in a user session below.)
    for bad in ((1.9, 0), (True, 0), (1, 0.0)):
        with pytest.raises(TypeError):
            make_receivers([bad], "q")
    assert make_receivers(["1.2", (0, 3)], "k")[0].head == 2


SETUP = """
import torch
from ioi.patching import *
from ioi.path_patching import *
from ioi.testing import tiny_model, token_pair, logit_diff
m = tiny_model()
clean, corr = token_pair()
_, cache = m.run_with_cache(clean)
grid = sweep(m, "resid_pre", clean.shape[1], positions="each")
long = torch.zeros(3, m.cfg.n_ctx + 1, dtype=torch.long)
"""

ENGINES = {
    "act": "activation_patching(m, {clean}, {corr}, logit_diff, grid)",
    "attr": "attribution_patching(m, {clean}, {corr}, logit_diff, grid)",
    "dropin": "get_act_patch_resid_pre(m, {corr}, cache, logit_diff)",
    "path": "get_path_patch_head_to_final_resid_post(m, logit_diff, {corr}, {clean})",
    "path_heads": "get_path_patch_head_to_heads([(1, 0)], 'q', m, logit_diff, {corr}, {clean})",
}
TOKENS = {  # bad tokens -> (exception, message pattern)
    "empty": ("{x}[:0]", "ValueError", "is empty"),
    "float": ("{x}.float()", "ValueError", "must hold integers"),
    "bool": ("{x}.bool()", "ValueError", "must hold integers"),
    "out_of_vocab": ("{x} + m.cfg.d_vocab", "ValueError", "outside the vocabulary"),
    "negative": ("{x} - 10**6", "ValueError", "outside the vocabulary"),
    "one_dim": ("{x}[0]", "ValueError", "must have 2 dimension"),
    "none": ("None", "TypeError", "must be"),
    "list": ("{x}.tolist()", "TypeError", "must be"),
}
OTHER = {
    "cache_none": (
        "get_act_patch_resid_pre(m, corr, None, logit_diff)",
        "TypeError",
        "clean_cache must be an ActivationCache",
    ),
    "cache_str": (
        "get_path_patch_head_to_final_resid_post(m, logit_diff, corr, clean, orig_cache='x')",
        "TypeError",
        "orig_cache must be",
    ),
    "cache_other_run": (
        "get_path_patch_head_to_final_resid_post(m, logit_diff, corr[:2], clean[:2], orig_cache=cache)",
        "ValueError",
        "cache the same prompts",
    ),
    "cache_missing": (
        "get_path_patch_head_to_final_resid_post(m, logit_diff, corr, clean, new_cache={})",
        "ValueError",
        "new_cache lacks",
    ),
    # path_patch names the runs clean/corrupted; the ARENA-named wrappers orig/new, as called
    "path_patch_cache_str": (
        "path_patch(m, logit_diff, corr, clean, [Sender('head', 0, 0)], clean_cache='x')",
        "TypeError",
        "^clean_cache must be",
    ),
    "path_patch_dataset_list": (
        "path_patch(m, logit_diff, corr.tolist(), clean, [Sender('head', 0, 0)])",
        "TypeError",
        "^corrupted_dataset must be",
    ),
    "path_wrapper_dataset_list": (
        "get_path_patch_head_to_final_resid_post(m, logit_diff, corr, clean.tolist())",
        "TypeError",
        "^orig_dataset must be",
    ),
    "mean_cache_none": (
        "activation_patching(m, clean, corr, logit_diff, grid, ablation='mean', mean_cache=3)",
        "TypeError",
        "mean-ablation cache must be",
    ),
    "too_long": (
        "get_act_patch_resid_pre(m, long, {}, logit_diff)",
        "ValueError",
        "the model's context is 16",
    ),
    "sweep_shorter": (
        "activation_patching(m, clean, corr, logit_diff, sweep(m, 'resid_pre', 3, positions='each'))",
        "ValueError",
        "built for n_pos=3 but the tokens have 6",
    ),
    "sweep_longer": (
        "activation_patching(m, clean, corr, logit_diff, sweep(m, 'z', 9, positions='last'))",
        "ValueError",
        "built for n_pos=9",
    ),
    "sweep_float_npos": ("sweep(m, 'z', 6.0)", "TypeError", "n_pos must be an int"),
    "sweep_zero_npos": ("sweep(m, 'z', 0)", "ValueError", "n_pos must be at least 1"),
    "receiver_triple": ("make_receivers([(1, 2, 3)], 'q')", "ValueError", "3 items"),
    "receiver_bool": ("make_receivers([(True, 0)], 'q')", "TypeError", "bool"),
    "receiver_float": (
        "get_path_patch_head_to_heads([(1.9, 0)], 'q', m, logit_diff, corr, clean)",
        "TypeError",
        "float 1.9",
    ),
    "sites_of_str": (
        "activation_patching(m, clean, corr, logit_diff, ['blocks.0.hook_z'])",
        "TypeError",
        r"sites must be Site values \(e\.g\. Site\('z', 9, head=9\)\) or a Sweep",
    ),
    "one_site": (
        "activation_patching(m, clean, corr, logit_diff, Site('z', 0, head=1))",
        "TypeError",
        "sites must be a Sweep or a list of Site values",
    ),
    "sites_per_pass_float": (
        "activation_patching(m, clean, corr, logit_diff, sweep(m, 'z', 6), max_sites_per_pass=2.0)",
        "ValueError",
        r"max_sites_per_pass must be None \(as many as fit\) or an int >= 1, got 2\.0",
    ),
    "sender_tuple": (
        "path_patch(m, logit_diff, corr, clean, [(0, 1)])",
        "TypeError",
        r"a sender is a Sender, e\.g\. Sender\('head', 0, 1\)",
    ),
    "one_sender": (
        "path_patch(m, logit_diff, corr, clean, Sender('head', 0, 1))",
        "TypeError",
        "senders is a list of Sender values; got one",
    ),
    "plain_sender_tuple": (
        "plain_path_patch(m, logit_diff, corr, clean, (0, 1))",
        "TypeError",
        "a sender is a Sender",
    ),
    "shapes_differ": (
        "activation_patching(m, clean, corr[:, :-1], logit_diff, sweep(m, 'z', 6))",
        "ValueError",
        "must have the same shape",
    ),
}
# A bad memory_budget: both engines refuse it through one check, naming the valid choices.
BUDGETS = {"zero": "0", "negative": "-1", "float": "1.5e9", "str": "'1GiB'", "bool": "True"}
BUDGET_CALLS = {
    "act": "activation_patching(m, clean, corr, logit_diff, grid, memory_budget={})",
    "dropin": "get_act_patch_resid_pre(m, corr, cache, logit_diff, memory_budget={})",
    "path": "get_path_patch_head_to_final_resid_post(m, logit_diff, corr, clean, memory_budget={})",
    "path_heads": "get_path_patch_mlp_to_heads([(1, 0)], 'q', m, logit_diff, corr, clean, "
    "memory_budget={})",
}
OTHER.update(
    {
        f"budget-{call}-{name}": (
            template.format(budget),
            "ValueError" if name in ("zero", "negative") else "TypeError",
            r"memory_budget must be None \(the default: .*\) or a positive int of bytes",
        )
        for call, template in BUDGET_CALLS.items()
        for name, budget in BUDGETS.items()
    }
)


def _cases() -> dict[str, tuple[str, str, str]]:
    cases = {}
    for engine, template in ENGINES.items():
        for name, (bad, exc, pattern) in TOKENS.items():
            for role in ("clean", "corr"):
                if role == "clean" and engine == "dropin":
                    continue  # the drop-ins take the clean run as a cache
                args = {"clean": "clean", "corr": "corr"}
                args[role] = bad.format(x=role)
                cases[f"{engine}-{role}-{name}"] = (template.format(**args), exc, pattern)
    cases.update(OTHER)
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def outcomes():
    return errors_in_a_user_session(SETUP, {key: expr for key, (expr, _, _) in CASES.items()})


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_clearly_in_a_user_session(outcomes, case):
    _, exc, pattern = CASES[case]
    got_exc, message = outcomes[case]
    assert got_exc == exc and re.search(pattern, message), (case, got_exc, message)

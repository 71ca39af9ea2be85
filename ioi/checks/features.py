"""Checkers for section 7, feature circuits: the SAE forward pass, variance explained, feature
attribution by attribution patching (error node included) and the overlap of two circuits.

Expected values come from SAELens (``sae.encode``), `ioi.features.quality.variance_explained`,
`ioi.features.feature_attribution` (``method="atp"``) and `ioi.features.families.jaccard`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from sae_lens import SAE
from torch import Tensor

from ioi.checks.core import exercise, one_thread
from ioi.checks.fixtures import ioi_batch, toy_model
from ioi.features import feature_attribution, load_toy_saes
from ioi.features.families import jaccard, weighted_jaccard
from ioi.features.quality import variance_explained
from ioi.features.testing import random_sae
from ioi.metrics import make_ioi_metric

# ---- shared inputs -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _toy_saes() -> dict[str, SAE]:
    return load_toy_saes(device="cpu")


@functools.lru_cache(maxsize=1)
def _small_sae() -> SAE:
    """A random TopK SAE unlike the toy's: k=4 (not 16), decoder rows of norms from 0.5 to 2
    (the toy's are all 1, so only here does the decoder-norm rescaling change anything), and an
    encoder bias that makes the 4th largest pre-activation negative on about half the tokens
    (so a missing ReLU shows)."""
    sae = random_sae(64, 32, seed=3, architecture="topk", k=4)
    sae.cfg.rescale_acts_by_decoder_norm = True
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 32)[:, None] / sae.W_dec.norm(dim=-1, keepdim=True))
        x = _residuals("blocks.2.hook_resid_pre")
        kth = sae.encode(x).sort(dim=-1, descending=True).values[:, 3]
        sae.b_enc -= kth.median()
    return sae.eval()


def _residuals(hook: str) -> Tensor:
    """Every real token's activation at ``hook`` on the checkers' prompts, [token, d_model]."""
    b = ioi_batch()
    acts = b.clean_cache[hook]
    real = torch.arange(b.ds.toks.shape[1])[None] < b.ds.seq_lens[:, None]
    return acts[real].clone()


def _sae_cases() -> list[tuple[str, SAE, Tensor]]:
    saes = _toy_saes()
    cases = [(f"toy SAE at {hook}", sae, _residuals(hook)) for hook, sae in saes.items()]
    x = _residuals("blocks.2.hook_resid_pre")
    cases.append(("a random TopK SAE, k=4, d_sae=32", _small_sae(), x))
    return cases


# ---- sae_encode --------------------------------------------------------------------------------

ENCODE = exercise(
    "sae_encode",
    hint="pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc; times sae.W_dec.norm(dim=-1) if "
    "sae.cfg.rescale_acts_by_decoder_norm; keep the sae.cfg.k largest per token, ReLU them, "
    "zero the rest (topk, then zeros_like(pre).scatter).",
    diagnoses={
        "forgot_b_dec": "you did not subtract the decoder bias before encoding: the SAE reads "
        "x - b_dec (cfg.apply_b_dec_to_input)",
        "relu_not_topk": "every positive feature is kept (a ReLU SAE's rule); a TopK SAE keeps "
        "only the k largest per token and sets the rest to 0",
        "hard_coded_k": "you kept 16 features per token, the toy SAEs' k; this SAE has "
        "another: read it from sae.cfg.k",
        "ignored_decoder_norm": "the features were chosen and scaled without the decoder norms: "
        "with cfg.rescale_acts_by_decoder_norm the pre-activations are multiplied by "
        "W_dec.norm(dim=-1) before the top k are picked",
        "no_relu_after_topk": "a negative pre-activation among the top k was kept: ReLU the k "
        "values before scattering them back (an SAE's features are never negative)",
        "tied_weights": "you encoded with the decoder transposed (W_dec.T); the encoder has its "
        "own matrix, W_enc [d_in, d_sae]",
    },
)


def encode_variant(
    sae: SAE,
    x: Tensor,
    *,
    centre: bool = True,
    topk: bool = True,
    k: int | None = None,
    rescale: bool | None = None,
    relu: bool = True,
    tied: bool = False,
) -> Tensor:
    """``sae.encode(x)`` written out, with switches for the mistakes."""
    enc = sae.W_dec.T if tied else sae.W_enc
    pre = ((x - sae.b_dec) if centre else x) @ enc + sae.b_enc
    if sae.cfg.rescale_acts_by_decoder_norm if rescale is None else rescale:
        pre = pre * sae.W_dec.norm(dim=-1)
    if not topk:
        return pre.relu()
    top = pre.topk(sae.cfg.k if k is None else k, dim=-1)
    values = top.values.relu() if relu else top.values
    return torch.zeros_like(pre).scatter(-1, top.indices, values)


@one_thread()
@torch.no_grad()
def test_sae_encode(sae_encode_fn: Callable) -> None:
    """Check ``sae_encode(sae, x) -> [token, d_sae]`` against SAELens's ``sae.encode``."""
    ex = ENCODE
    for label, sae, x in _sae_cases():
        call = f"sae_encode(sae, x {list(x.shape)})  [{label}]"
        got = ex.call(sae_encode_fn, sae, x.clone(), call=call)
        expected = sae.encode(x)
        rescaled = sae.cfg.rescale_acts_by_decoder_norm

        def v(s=sae, x=x, **how):
            return encode_variant(s, x, **how)

        mistakes = {
            "forgot_b_dec": lambda v=v: v(centre=False),
            # before relu_not_topk: on the k=4 SAE fewer than 16 features are positive,
            # so the top 16 ReLU'd are every positive one
            "hard_coded_k": lambda v=v, s=sae: None if s.cfg.k == 16 else v(k=16),
            "relu_not_topk": lambda v=v: v(topk=False),
            "ignored_decoder_norm": lambda v=v, r=rescaled: v(rescale=False) if r else None,
            "no_relu_after_topk": lambda v=v: v(relu=False),
            "tied_weights": lambda v=v: v(tied=True),
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-4)
    ex.passed("the features of both toy SAEs and of a k=4 SAE match sae.encode")


# ---- variance_explained ------------------------------------------------------------------------

VARIANCE = exercise(
    "variance_explained",
    hint="total = (x - x.mean(0)).pow(2).sum(); return 1 - (x - x_hat).pow(2).sum() / total",
    diagnoses={
        "mean_over_wrong_axis": "you centred each token on its own mean over dimensions "
        "(x.mean(-1)); the variance is over tokens: subtract x.mean(0), one mean per dimension",
        "not_centred": "you divided by sum x^2, not by the sum of squares about the mean: "
        "subtract x.mean(0) first (otherwise a constant offset counts as 'explained')",
        "unexplained_fraction": "you returned the fraction *unexplained*, sum |x - x_hat|^2 / "
        "total; the fraction explained is 1 minus it",
        "mean_of_ratios": "you averaged one ratio per dimension; the fraction of variance "
        "explained is one ratio of two totals over all tokens and dimensions",
    },
)


def variance_variant(x: Tensor, x_hat: Tensor, how: str) -> float:
    """Variance explained computed with one mistake ``how``."""
    residual = (x - x_hat).pow(2)
    if how == "mean_over_wrong_axis":
        return float(1 - residual.sum() / (x - x.mean(-1, keepdim=True)).pow(2).sum())
    if how == "not_centred":
        return float(1 - residual.sum() / x.pow(2).sum())
    if how == "unexplained_fraction":
        return float(residual.sum() / (x - x.mean(0)).pow(2).sum())
    if how == "mean_of_ratios":
        return float((1 - residual.sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean())
    raise ValueError(f"unknown mistake {how!r}")


def _variance_cases() -> list[tuple[str, Tensor, Tensor]]:
    # First: dimensions of very different spread and a large offset, so every mistake gives
    # its own value (the toy's residual stream has mean 0 over d_model, where centring on the
    # wrong axis and not centring at all agree).
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, 6, generator=gen) * torch.tensor([5.0, 1.0, 0.2, 2.0, 0.5, 3.0]) + 4.0
    x_hat = x + 0.3 * torch.randn(40, 6, generator=gen)
    cases = [("40 tokens of width 6, offset 4, uneven spreads", x, x_hat)]
    for label, sae, x in _sae_cases()[:2]:
        with torch.no_grad():
            cases.append((label, x, sae.decode(sae.encode(x))))
    return cases


@one_thread()
def test_variance_explained(variance_explained_fn: Callable) -> None:
    """Check ``variance_explained(x, x_hat) -> float`` against `ioi.features.quality`'s."""
    ex = VARIANCE
    for label, x, x_hat in _variance_cases():
        call = f"variance_explained(x {list(x.shape)}, x_hat {list(x_hat.shape)})  [{label}]"
        got = ex.call(variance_explained_fn, x.clone(), x_hat.clone(), call=call)
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.reshape(())
        expected = torch.tensor(variance_explained(x, x_hat))
        mistakes = {
            key: lambda key=key, x=x, x_hat=x_hat: torch.tensor(variance_variant(x, x_hat, key))
            for key in VARIANCE.diagnoses
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-4)
    ex.passed("matches ioi.features.quality.variance_explained on both toy SAEs")


# ---- feature_attribution_patching --------------------------------------------------------------

ATTRIBUTION = exercise(
    "feature_attribution_patching",
    hint="gradient of the metric at hook_name in the *clean* run; features: (f_corrupt - "
    "f_clean) * (that gradient through sae.decode), summed over prompts; error node: "
    "(e_corrupt - e_clean) . gradient, summed over d_model and prompts, in the last column.",
    diagnoses={
        "sign_flipped": "every attribution has the wrong sign: the change is corrupted minus "
        "clean (a_corrupt - a_clean), the value the node is patched *to* minus what it was",
        "gradient_at_corrupted": "the gradient was taken in the corrupted run; attribution "
        "patching linearises around the clean run, so take the gradient there",
        "no_error_node": "the error node is missing (or 0): the last column must hold "
        "(e_corrupt - e_clean) . grad, summed over d_model, where e = a - sae.decode(f). The "
        "part of the activation the SAE misses carries part of the effect too",
        "summed_over_positions": "you summed over positions; each position's features are "
        "nodes of their own: return [pos, d_sae + 1]",
        "mean_over_prompts": "the result is the expected one divided by the number of prompts: "
        "the metric already averages over prompts, so sum the products over the batch",
        "decoder_norm_in_gradient": "the feature gradient misses the decoder-norm rescaling: "
        "this SAE decodes f / W_dec.norm(dim=-1), so map the gradient back through "
        "sae.decode itself (torch.autograd.grad(sae.decode(leaf), leaf, grad))",
    },
)


def attribution_variant(
    model,
    sae: SAE,
    hook_name: str,
    clean: Tensor,
    corrupted: Tensor,
    metric,
    *,
    grad_at: str = "clean",
) -> dict[str, Tensor]:
    """Attribution-patching parts with the gradient taken at ``grad_at``: the feature and error
    deltas and gradients (for the mistakes the library's function does not make)."""
    kept = {}

    def keep(act, hook):
        kept["a"] = act.detach().requires_grad_(True)
        return kept["a"]

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[(hook_name, keep)]):
            value = metric(model(clean if grad_at == "clean" else corrupted))
        (grad,) = torch.autograd.grad(value, kept["a"])
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=hook_name)
        _, corr_cache = model.run_with_cache(corrupted, names_filter=hook_name)
        a_clean, a_corr = cache[hook_name], corr_cache[hook_name]
        f_clean, f_corr = sae.encode(a_clean), sae.encode(a_corr)
        e_clean, e_corr = a_clean - sae.decode(f_clean), a_corr - sae.decode(f_corr)
    with torch.enable_grad():
        leaf = f_clean.clone().requires_grad_(True)
        (grad_f,) = torch.autograd.grad(sae.decode(leaf), leaf, grad)
    return {
        "df": f_corr - f_clean,
        "grad_f": grad_f,
        "grad_f_plain": grad @ sae.W_dec.detach().T,
        "error": ((e_corr - e_clean) * grad).sum(-1).sum(0),
    }


def _table(df: Tensor, grad_f: Tensor, error: Tensor) -> Tensor:
    return torch.cat([(df * grad_f).sum(0), error[:, None]], dim=-1).detach()


@one_thread()
def test_feature_attribution_patching(feature_attribution_patching_fn: Callable) -> None:
    """Check ``feature_attribution_patching(model, sae, hook_name, clean_tokens,
    corrupted_tokens, metric) -> [pos, d_sae + 1]`` against `ioi.features.feature_attribution`."""
    ex, b, model = ATTRIBUTION, ioi_batch(), toy_model()
    metric = make_ioi_metric(
        b.clean_logit_diff, b.corrupted_logit_diff, b.answer_tokens, positions=b.end
    )
    clean, corrupted = b.ds.toks, b.abc.toks
    cases = [(hook, sae, f"toy SAE at {hook}") for hook, sae in _toy_saes().items()]
    cases.append(("blocks.1.hook_resid_pre", _small_sae(), "a random TopK SAE, k=4"))
    for hook, sae, label in cases:
        call = (
            f"feature_attribution_patching(model, sae, {hook!r}, clean_tokens, "
            f"corrupted_tokens, metric)  [{label}; {b.describe()}; metric: make_ioi_metric]"
        )
        got = ex.call(
            feature_attribution_patching_fn,
            model,
            sae,
            hook,
            clean.clone(),
            corrupted.clone(),
            metric,
            call=call,
            model=model,
        )
        with torch.enable_grad():
            result = feature_attribution(model, {hook: sae}, clean, corrupted, metric)
        expected = result.scores[hook]

        def parts(at="clean", h=hook, s=sae):
            return attribution_variant(model, s, h, clean, corrupted, metric, grad_at=at)

        def no_error(e=expected):
            return [e[:, :-1], torch.cat([e[:, :-1], torch.zeros_like(e[:, -1:])], -1)]

        def corrupted_grad(parts=parts):
            p = parts("corrupted")
            return _table(p["df"], p["grad_f"], p["error"])

        def plain_grad(parts=parts):
            p = parts()
            return _table(p["df"], p["grad_f_plain"], p["error"])

        mistakes = {
            "sign_flipped": lambda e=expected: -e,
            "summed_over_positions": lambda e=expected: [e.sum(0), e[:, :-1].sum(0)],
            "mean_over_prompts": lambda e=expected: e / clean.shape[0],
            "no_error_node": no_error,
            "gradient_at_corrupted": corrupted_grad,
            "decoder_norm_in_gradient": plain_grad,
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-5, rtol=1e-3)
    ex.passed("matches ioi.features.feature_attribution(method='atp'): both toy SAEs, a k=4 one")


# ---- circuit_jaccard ---------------------------------------------------------------------------

JACCARD = exercise(
    "circuit_jaccard",
    hint="a = set(scores_a.flatten().abs().topk(top_n).indices.tolist()), the same for b; "
    "return len(a & b) / len(a | b)",
    diagnoses={
        "signed_ranking": "you ranked the nodes by their signed score; a node that pushes the "
        "metric down matters as much as one that pushes it up: rank by |score|",
        "weights_not_sets": "you compared the scores' sizes (a weighted Jaccard index, sum min "
        "/ sum max); the Jaccard index of two circuits compares their node *sets*",
        "overlap_over_top_n": "you divided the shared nodes by top_n (or by the smaller set); "
        "the Jaccard index divides by the size of the union, |A | B|",
        "shared_count": "you returned the number of shared nodes; divide it by the size of the "
        "union",
    },
)


def _top(scores: Tensor, n: int, signed: bool = False) -> set[int]:
    flat = scores.flatten()
    return set((flat if signed else flat.abs()).topk(n).indices.tolist())


def _jaccard_cases() -> list[tuple[Tensor, Tensor, int]]:
    gen = torch.Generator().manual_seed(9)
    a = torch.randn(6, 9, generator=gen)
    b = a + 0.8 * torch.randn(6, 9, generator=gen)
    c = torch.randn(30, generator=gen) * torch.linspace(3, 0.1, 30)
    d = -c.roll(2) + 0.3 * torch.randn(30, generator=gen)
    return [(a, b, 10), (c, d, 6), (a, -b, 15)]


@one_thread()
def test_circuit_jaccard(circuit_jaccard_fn: Callable) -> None:
    """Check ``circuit_jaccard(scores_a, scores_b, top_n) -> float`` against
    `ioi.features.families.jaccard` of the two top-``top_n`` node sets."""
    ex = JACCARD
    for a, b, n in _jaccard_cases():
        call = f"circuit_jaccard(scores_a {list(a.shape)}, scores_b {list(b.shape)}, top_n={n})"
        got = ex.call(circuit_jaccard_fn, a.clone(), b.clone(), n, call=call)
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.reshape(())
        sa, sb = _top(a, n), _top(b, n)
        expected = torch.tensor(jaccard(sa, sb))

        def weighted(a=a, b=b, sa=sa, sb=sb):
            union = sorted(sa | sb)
            fa, fb = a.flatten(), b.flatten()
            return [
                torch.tensor(weighted_jaccard(fa, fb)),
                torch.tensor(weighted_jaccard(fa[union], fb[union])),
            ]

        mistakes = {
            "signed_ranking": lambda a=a, b=b, n=n: torch.tensor(
                jaccard(_top(a, n, True), _top(b, n, True))
            ),
            "weights_not_sets": weighted,
            "overlap_over_top_n": lambda sa=sa, sb=sb, n=n: torch.tensor(len(sa & sb) / n),
            "shared_count": lambda sa=sa, sb=sb: torch.tensor(float(len(sa & sb))),
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-6)
    ex.passed("the Jaccard index of the top-|score| node sets")

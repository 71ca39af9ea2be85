"""Checkers for section 7, feature circuits: the SAE forward pass, variance explained, feature
attribution by attribution patching (error node included) and the overlap of two circuits.

Expected values come from SAELens (``sae.encode``), `ioi.features.quality.variance_explained`,
`ioi.features.feature_attribution` (``method="atp"``) and `ioi.features.families.jaccard`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from copy import deepcopy

import torch
from sae_lens import SAE
from torch import Tensor

from ioi.checks.core import ModuleState, exercise, gradients_off_error, one_thread
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


@functools.lru_cache(maxsize=1)
def _wide_sae() -> SAE:
    """Like `_small_sae` but with no encoder-bias shift: most tokens have far more than k
    positive pre-activations, so picking the top k before or after the decoder-norm
    rescaling gives different features (on `_small_sae` the choice only moves features whose
    ReLU'd value is 0)."""
    sae = random_sae(64, 32, seed=4, architecture="topk", k=4)
    sae.cfg.rescale_acts_by_decoder_norm = True
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(2.0, 0.5, 32)[:, None] / sae.W_dec.norm(dim=-1, keepdim=True))
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
    cases.append(("a random TopK SAE, k=4, most pre-activations positive", _wide_sae(), x))
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
        "added_b_dec": "you added the decoder bias to x; encoding takes it off, x - b_dec "
        "(decoding is what adds it back)",
        "forgot_b_enc": "the encoder bias is missing: pre = (x - b_dec) @ W_enc + b_enc",
        "relu_not_topk": "every positive feature is kept (a ReLU SAE's rule); a TopK SAE keeps "
        "only the k largest per token and sets the rest to 0",
        "hard_coded_k": "you kept 16 features per token, the toy SAEs' k; this SAE has "
        "another: read it from sae.cfg.k",
        "k_off_by_one": "you kept one feature too many or too few per token: keep exactly "
        "sae.cfg.k (topk(sae.cfg.k), or a slice [:k], not [:k + 1] or [:k - 1])",
        "topk_over_tokens": "you took the top k over the token axis (dim=0): each token keeps "
        "its own k largest features, so take topk(..., dim=-1) and scatter along -1",
        "ignored_decoder_norm": "the features were chosen and scaled without the decoder norms: "
        "with cfg.rescale_acts_by_decoder_norm the pre-activations are multiplied by "
        "W_dec.norm(dim=-1) before the top k are picked",
        "selected_before_rescaling": "you picked the top k before multiplying by the decoder "
        "norms (and scaled the k values after): the norms change which features are largest. "
        "Multiply every pre-activation by W_dec.norm(dim=-1) first, then take the top k",
        "divided_by_decoder_norm": "you divided the pre-activations by W_dec.norm(dim=-1); that "
        "is decoding's step, which undoes the rescaling. Encoding multiplies by the norms",
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
    centre: float = 1.0,
    b_enc: bool = True,
    topk: bool = True,
    k: int | None = None,
    rescale: str | None = None,
    dim: int = -1,
    relu: bool = True,
    tied: bool = False,
) -> Tensor:
    """``sae.encode(x)`` written out, with switches for the mistakes.

    ``centre``: the multiple of b_dec subtracted (1, 0 or -1); ``rescale``: ``"multiply"``,
    ``"divide"``, ``"after"`` (the top k picked unscaled, then scaled) or ``"none"`` (default:
    ``"multiply"`` if the SAE rescales, else ``"none"``); ``dim``: the axis of the top k.
    """
    enc = sae.W_dec.T if tied else sae.W_enc
    pre = (x - centre * sae.b_dec) @ enc + (sae.b_enc if b_enc else 0.0)
    norms = sae.W_dec.norm(dim=-1)
    rescale = rescale or ("multiply" if sae.cfg.rescale_acts_by_decoder_norm else "none")
    if rescale == "multiply":
        pre = pre * norms
    elif rescale == "divide":
        pre = pre / norms
    if not topk:
        return pre.relu()
    top = pre.topk(sae.cfg.k if k is None else k, dim=dim)
    values = top.values * norms[top.indices] if rescale == "after" else top.values
    values = values.relu() if relu else values
    return torch.zeros_like(pre).scatter(dim, top.indices, values)


def learner_copy(sae: SAE) -> tuple[SAE, dict[str, ModuleState]]:
    """A copy of ``sae`` for the learner's function and the ``read_only`` entry that shows a
    change to it: the checkers' SAEs are cached, so one folded in place (``fold_W_dec_norm``)
    would spoil every later check."""
    copy = deepcopy(sae)
    return copy, {"the SAE's parameters": ModuleState(copy)}


@one_thread()
@torch.no_grad()
def test_sae_encode(sae_encode_fn: Callable) -> None:
    """Check ``sae_encode(sae, x) -> [token, d_sae]`` against SAELens's ``sae.encode``."""
    ex = ENCODE
    for label, sae, x in _sae_cases():
        call = f"sae_encode(sae, x {list(x.shape)})  [{label}]"
        given, watched = learner_copy(sae)
        got = ex.call(sae_encode_fn, given, x.clone(), call=call, read_only=watched)
        expected = sae.encode(x)
        rescaled = sae.cfg.rescale_acts_by_decoder_norm

        def v(s=sae, x=x, **how):
            return encode_variant(s, x, **how)

        mistakes = {
            "forgot_b_dec": lambda v=v: v(centre=0.0),
            "added_b_dec": lambda v=v: v(centre=-1.0),
            "forgot_b_enc": lambda v=v: v(b_enc=False),
            # before relu_not_topk: on the k=4 SAE fewer than 16 features are positive,
            # so the top 16 ReLU'd are every positive one
            "hard_coded_k": lambda v=v, s=sae: None if s.cfg.k == 16 else v(k=16),
            "k_off_by_one": lambda v=v, s=sae: [v(k=s.cfg.k - 1), v(k=s.cfg.k + 1)],
            "relu_not_topk": lambda v=v: v(topk=False),
            "topk_over_tokens": lambda v=v, s=sae, x=x: v(dim=0) if x.shape[0] >= s.cfg.k else None,
            "ignored_decoder_norm": lambda v=v, r=rescaled: v(rescale="none") if r else None,
            "selected_before_rescaling": lambda v=v, r=rescaled: v(rescale="after") if r else None,
            "divided_by_decoder_norm": lambda v=v, r=rescaled: v(rescale="divide") if r else None,
            "no_relu_after_topk": lambda v=v: v(relu=False),
            "tied_weights": lambda v=v: v(tied=True),
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-4)
    ex.passed("the features of both toy SAEs and of two k=4 SAEs match sae.encode")


# ---- variance_explained ------------------------------------------------------------------------

VARIANCE = exercise(
    "variance_explained",
    hint="total = (x - x.mean(0)).pow(2).sum(); return 1 - (x - x_hat).pow(2).sum() / total",
    diagnoses={
        "mean_over_wrong_axis": "you centred each token on its own mean over dimensions "
        "(x.mean(-1)); the variance is over tokens: subtract x.mean(0), one mean per dimension",
        "global_mean": "you centred on one mean over every token and dimension (x.mean(), or "
        "x.var() of the whole tensor); the variance is over tokens, about each dimension's own "
        "mean: subtract x.mean(0)",
        "not_centred": "you divided by sum x^2, not by the sum of squares about the mean: "
        "subtract x.mean(0) first (otherwise a constant offset counts as 'explained')",
        "centred_on_reconstruction": "the total sum of squares is that of x_hat; the variance "
        "to explain is that of x: (x - x.mean(0)).pow(2).sum()",
        "centred_residual": "you subtracted the residual's own mean (x - x_hat minus its mean "
        "over tokens, or x and x_hat each centred): a reconstruction off by a constant vector "
        "then counts as perfect. The error is x - x_hat itself",
        "mixed_normalisation": "the two sums are normalised differently: torch.var divides by "
        "n - 1 (unbiased) where a mean of squares divides by n. Use two plain sums (or "
        "x.var(0, unbiased=False))",
        "norms_not_squared": "you divided norms, not squared norms: the variance is a sum of "
        "squares, so square the errors (x - x_hat).pow(2).sum(), not (x - x_hat).norm()",
        "unexplained_fraction": "you returned the fraction *unexplained*, sum |x - x_hat|^2 / "
        "total; the fraction explained is 1 minus it",
        "mean_of_ratios": "you averaged one ratio per dimension (or per token); the fraction of "
        "variance explained is one ratio of two totals over all tokens and dimensions",
    },
)


def variance_variant(x: Tensor, x_hat: Tensor, how: str) -> float | list[float]:
    """Variance explained computed with one mistake ``how`` (a list: several ways to make it)."""
    residual = (x - x_hat).pow(2)
    centred = (x - x.mean(0)).pow(2)
    r = x - x_hat
    if how == "mean_over_wrong_axis":
        return float(1 - residual.sum() / (x - x.mean(-1, keepdim=True)).pow(2).sum())
    if how == "global_mean":
        by_var = 1 - (r - r.mean()).pow(2).sum() / (x - x.mean()).pow(2).sum()
        return [float(1 - residual.sum() / (x - x.mean()).pow(2).sum()), float(by_var)]
    if how == "not_centred":
        return float(1 - residual.sum() / x.pow(2).sum())
    if how == "centred_on_reconstruction":
        return float(1 - residual.sum() / (x_hat - x_hat.mean(0)).pow(2).sum())
    if how == "centred_residual":
        return float(1 - (r - r.mean(0)).pow(2).sum() / centred.sum())
    if how == "mixed_normalisation":
        n = x.shape[0]
        return [float(1 - residual.sum() / centred.sum() * f) for f in ((n - 1) / n, n / (n - 1))]
    if how == "norms_not_squared":
        whole = 1 - r.norm() / (x - x.mean(0)).norm()
        per_token = 1 - r.norm(dim=-1).sum() / (x - x.mean(0)).norm(dim=-1).sum()
        return [float(whole), float(per_token)]
    if how == "unexplained_fraction":
        return float(residual.sum() / centred.sum())
    if how == "mean_of_ratios":
        return [
            float((1 - residual.sum(0) / centred.sum(0)).mean()),
            float((1 - residual.sum(-1) / centred.sum(-1)).mean()),
        ]
    raise ValueError(f"unknown mistake {how!r}; choose one of {sorted(VARIANCE.diagnoses)}")


def _variance_cases() -> list[tuple[str, Tensor, Tensor]]:
    # First: dimensions of very different spreads and offsets, so every mistake gives its own
    # value (the toy's residual stream has mean 0 over d_model, where centring on the wrong
    # axis, on the global mean and not centring at all agree), and a reconstruction with a
    # constant error vector (which centring the residual would hide).
    gen = torch.Generator().manual_seed(5)
    spread = torch.tensor([5.0, 1.0, 0.2, 2.0, 0.5, 3.0])
    offset = torch.tensor([4.0, -3.0, 1.0, 6.0, -2.0, 0.5])
    x = torch.randn(40, 6, generator=gen) * spread + offset
    x_hat = x + 0.3 * torch.randn(40, 6, generator=gen) + torch.tensor([0.2, 0, 0, -0.1, 0, 0])
    cases = [("40 tokens of width 6, uneven spreads and offsets", x, x_hat)]
    for label, sae, x in _sae_cases()[:2]:
        with torch.no_grad():
            cases.append((label, x, sae.decode(sae.encode(x))))
    return cases


def _tensors(values: float | list[float]) -> Tensor | list[Tensor]:
    if isinstance(values, list):
        return [torch.tensor(v) for v in values]
    return torch.tensor(values)


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
            key: lambda key=key, x=x, x_hat=x_hat: _tensors(variance_variant(x, x_hat, key))
            for key in VARIANCE.diagnoses
        }
        # tight: float32 sums of a few thousand squares agree to about 1e-6, and using n - 1
        # in one sum and n in the other moves the result by only (1 - expected) / n
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-5, rtol=1e-5)
    ex.passed("matches ioi.features.quality.variance_explained on both toy SAEs")


# ---- feature_attribution_patching --------------------------------------------------------------

ATTRIBUTION = exercise(
    "feature_attribution_patching",
    hint="gradient of the metric at hook_name in the *clean* run (inside torch.enable_grad()); "
    "features: (f_corrupt - f_clean) * (that gradient through sae.decode), summed over prompts; "
    "error node: (e_corrupt - e_clean) . gradient, summed over d_model and prompts, in the last "
    "column.",
    diagnoses={
        "sign_flipped": "every attribution has the wrong sign: the change is corrupted minus "
        "clean (a_corrupt - a_clean), the value the node is patched *to* minus what it was",
        "error_sign_flipped": "the features are right but the error node has the wrong sign: "
        "its change is e_corrupt - e_clean too",
        "gradient_at_corrupted": "the gradient was taken in the corrupted run; attribution "
        "patching linearises around the clean run, so take the gradient there",
        "no_error_node": "the error node is missing (or 0): the last column must hold "
        "(e_corrupt - e_clean) . grad, summed over d_model, where e = a - sae.decode(f). The "
        "part of the activation the SAE misses carries part of the effect too",
        "error_node_whole_change": "the error node holds the change of the whole activation, "
        "(a_corrupt - a_clean) . grad; the error node is only the part the SAE misses: "
        "e = a - sae.decode(sae.encode(a)) in each run, and its change e_corrupt - e_clean",
        "error_column_first": "the error node is in the first column; the features come first "
        "(columns 0 .. d_sae - 1) and the error node last: torch.cat([features, error[:, None]], "
        "dim=-1)",
        "summed_over_positions": "you summed over positions; each position's features are "
        "nodes of their own: return [pos, d_sae + 1]",
        "not_summed_over_prompts": "the result still has the prompt axis: sum the products over "
        "prompts (the metric already averages over them) and return [pos, d_sae + 1]",
        "mean_over_prompts": "the result is the expected one divided by the number of prompts: "
        "the metric already averages over prompts, so sum the products over the batch",
        "decoder_norm_in_gradient": "the feature gradient misses the decoder-norm rescaling: "
        "this SAE decodes f / W_dec.norm(dim=-1), so map the gradient back through "
        "sae.decode itself (torch.autograd.grad(sae.decode(leaf), leaf, grad))",
        "encoder_gradient": "you mapped the gradient through the encoder (grad @ W_enc); a "
        "feature reaches the activation through the decoder, so its gradient is the "
        "activation's gradient through sae.decode (torch.autograd.grad(sae.decode(leaf), "
        "leaf, grad))",
    },
    shared=("gradients_off",),
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
    """Attribution-patching parts, per prompt, with the gradient taken at ``grad_at``: the
    feature deltas and three feature gradients (through sae.decode, through W_dec.T alone,
    through W_enc), and the error node's and the whole activation's products [batch, pos]."""
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
        "grad_f_encoder": grad @ sae.W_enc.detach(),
        "error": ((e_corr - e_clean) * grad).sum(-1),
        "whole": ((a_corr - a_clean) * grad).sum(-1),
    }


def _table(df: Tensor, grad_f: Tensor, error: Tensor, per_prompt: bool = False) -> Tensor:
    """[pos, d_sae + 1] (or [batch, pos, d_sae + 1]): the features, then the error node."""
    table = torch.cat([df * grad_f, error[..., None]], dim=-1).detach()
    return table if per_prompt else table.sum(0)


@one_thread()
def test_feature_attribution_patching(feature_attribution_patching_fn: Callable) -> None:
    """Check ``feature_attribution_patching(model, sae, hook_name, clean_tokens,
    corrupted_tokens, metric) -> [pos, d_sae + 1]`` against `ioi.features.feature_attribution`.

    The function is called with gradients off, as the notebook calls it."""
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
            f"corrupted_tokens, metric)  [{label}; {b.describe()}; metric: make_ioi_metric; "
            "gradients off, as in the notebook]"
        )
        given, watched = learner_copy(sae)
        with torch.no_grad():
            got = ex.call(
                feature_attribution_patching_fn,
                model,
                given,
                hook,
                clean.clone(),
                corrupted.clone(),
                metric,
                call=call,
                model=model,
                read_only=watched,
                raised_as=gradients_off_error,
            )
        with torch.enable_grad():
            result = feature_attribution(model, {hook: sae}, clean, corrupted, metric)
        expected = result.scores[hook]
        computed: dict[str, dict[str, Tensor]] = {}

        def parts(at="clean", h=hook, s=sae, computed=computed):
            if at not in computed:  # three runs of the model: once per case and run
                computed[at] = attribution_variant(
                    model, s, h, clean, corrupted, metric, grad_at=at
                )
            return computed[at]

        def no_error(e=expected):
            return [e[:, :-1], torch.cat([e[:, :-1], torch.zeros_like(e[:, -1:])], -1)]

        def with_error(column, e=expected):
            return torch.cat([e[:, :-1], column[:, None]], -1)

        def corrupted_grad(parts=parts):
            p = parts("corrupted")
            return _table(p["df"], p["grad_f"], p["error"])

        def feature_grad(key, parts=parts):
            p = parts()
            return _table(p["df"], p[key], p["error"])

        def per_prompt(parts=parts):
            p = parts()
            return _table(p["df"], p["grad_f"], p["error"], per_prompt=True)

        mistakes = {
            "sign_flipped": lambda e=expected: -e,
            "error_sign_flipped": lambda e=expected: with_error(-e[:, -1]),
            "summed_over_positions": lambda e=expected: [e.sum(0), e[:, :-1].sum(0)],
            "not_summed_over_prompts": per_prompt,
            "mean_over_prompts": lambda e=expected: e / clean.shape[0],
            "no_error_node": no_error,
            "error_node_whole_change": lambda parts=parts: with_error(parts()["whole"].sum(0)),
            "error_column_first": lambda e=expected: torch.cat([e[:, -1:], e[:, :-1]], -1),
            "gradient_at_corrupted": corrupted_grad,
            "decoder_norm_in_gradient": lambda: feature_grad("grad_f_plain"),
            "encoder_gradient": lambda: feature_grad("grad_f_encoder"),
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
        "smallest_nodes": "you took the top_n *smallest* |scores| (argsort() ascending, or "
        "topk(..., largest=False)); a circuit is its largest nodes: argsort(descending=True) "
        "or topk",
        "node_count_off_by_one": "each circuit has one node too many or too few: take exactly "
        "top_n nodes (topk(top_n), or a slice [:top_n])",
        "weights_not_sets": "you compared the scores' sizes (a weighted Jaccard index, sum min "
        "/ sum max); the Jaccard index of two circuits compares their node *sets*",
        "overlap_over_top_n": "you divided the shared nodes by top_n (or by the smaller or "
        "larger set; the Dice coefficient 2|A & B| / (|A| + |B|) is the same number here); the "
        "Jaccard index divides by the size of the union, |A | B|",
        "union_counts_shared_twice": "you divided by |A| + |B|, which counts every shared node "
        "twice; the union has |A| + |B| - |A & B| nodes (len(a | b))",
        "shared_count": "you returned the number of shared nodes; divide it by the size of the "
        "union",
        "jaccard_distance": "you returned 1 - Jaccard (the Jaccard *distance*); the index "
        "itself is |A & B| / |A | B|: 1 for the same circuit, 0 for disjoint ones",
        "zero_overlap": "you returned 0, though the circuits share nodes: sets of the scores' "
        "*values* (topk(...).values) share no members, since the two attributions are "
        "different numbers, and integer division (//) rounds the index down to 0. Compare "
        "the nodes' indices, and divide with /",
    },
)


def _top(scores: Tensor, n: int, signed: bool = False, largest: bool = True) -> set[int]:
    flat = scores.flatten()
    return set((flat if signed else flat.abs()).topk(n, largest=largest).indices.tolist())


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
            "smallest_nodes": lambda a=a, b=b, n=n: torch.tensor(
                jaccard(_top(a, n, largest=False), _top(b, n, largest=False))
            ),
            "node_count_off_by_one": lambda a=a, b=b, n=n: [
                torch.tensor(jaccard(_top(a, m), _top(b, m))) for m in (n - 1, n + 1)
            ],
            "weights_not_sets": weighted,
            "overlap_over_top_n": lambda sa=sa, sb=sb, n=n: torch.tensor(len(sa & sb) / n),
            "union_counts_shared_twice": lambda sa=sa, sb=sb: torch.tensor(
                len(sa & sb) / (len(sa) + len(sb))
            ),
            "shared_count": lambda sa=sa, sb=sb: torch.tensor(float(len(sa & sb))),
            "jaccard_distance": lambda e=expected: 1 - e,
            "zero_overlap": lambda e=expected: torch.tensor(0.0) if float(e) > 0 else None,
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-6)
    ex.passed("the Jaccard index of the top-|score| node sets")

"""Section 7 answers: the SAE forward pass, variance explained, feature attribution patching
and the Jaccard index of two feature circuits."""

from __future__ import annotations

import torch

from tests.checks.corpus import correct, variant

# ---- sae_encode ------------------------------------------------------------------------------


def _encode(sae, x, *, centre=True, topk=True, k=None, rescale=True, relu=True, tied=False):
    enc = sae.W_dec.T if tied else sae.W_enc
    pre = ((x - sae.b_dec) if centre else x) @ enc + sae.b_enc
    if rescale and sae.cfg.rescale_acts_by_decoder_norm:
        pre = pre * sae.W_dec.norm(dim=-1)
    if not topk:
        return pre.relu()
    values, indices = torch.topk(pre, sae.cfg.k if k is None else k, dim=-1)
    out = torch.zeros_like(pre)
    out.scatter_(-1, indices, values.relu() if relu else values)
    return out


variant(
    "sae_encode", "forgot_b_dec", _encode, "Projects x without subtracting b_dec.", centre=False
)
variant(
    "sae_encode",
    "relu_not_topk",
    _encode,
    "A ReLU SAE's encoder: every positive feature.",
    topk=False,
)
variant("sae_encode", "hard_coded_k", _encode, "Keeps 16 features, the toy SAEs' k.", k=16)
variant("sae_encode", "ignored_decoder_norm", _encode, "No W_dec-norm rescaling.", rescale=False)
variant(
    "sae_encode", "no_relu_after_topk", _encode, "Top-k values kept even if negative.", relu=False
)
variant("sae_encode", "tied_weights", _encode, "Encodes with W_dec.T.", tied=True)


@correct("sae_encode")
def sae_encode_by_mask(sae, x):
    """Threshold at the k-th largest value instead of scattering (ties aside, the same)."""
    pre = torch.einsum("td,ds->ts", x - sae.b_dec, sae.W_enc) + sae.b_enc
    if sae.cfg.rescale_acts_by_decoder_norm:
        pre = pre * torch.linalg.vector_norm(sae.W_dec, dim=1)
    kth = pre.topk(sae.cfg.k, dim=-1).values[:, -1:]
    return torch.where(pre >= kth, pre, 0.0).clamp(min=0)


# ---- variance_explained ----------------------------------------------------------------------


def _fve(x, x_hat, *, how="right"):
    residual = (x - x_hat).pow(2)
    if how == "wrong_axis":
        return float(1 - residual.sum() / (x - x.mean(1, keepdim=True)).pow(2).sum())
    if how == "uncentred":
        return float(1 - residual.sum() / x.pow(2).sum())
    if how == "unexplained":
        return float(residual.sum() / (x - x.mean(0)).pow(2).sum())
    return float((1 - residual.sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean())


variant(
    "variance_explained", "mean_over_wrong_axis", _fve, "Centres on x.mean(1).", how="wrong_axis"
)
variant("variance_explained", "not_centred", _fve, "Divides by sum x^2.", how="uncentred")
variant(
    "variance_explained",
    "unexplained_fraction",
    _fve,
    "Returns the ratio, not 1 - ratio.",
    how="unexplained",
)
variant(
    "variance_explained", "mean_of_ratios", _fve, "Averages per-dimension ratios.", how="per_dim"
)


@correct("variance_explained")
def variance_explained_from_var(x, x_hat):
    """Through torch.var (the n/(n-1) corrections cancel) and a 0-d tensor returned."""
    n = x.shape[0]
    total = x.var(0, unbiased=False).sum() * n
    return 1 - ((x - x_hat) ** 2).sum() / total


# ---- feature_attribution_patching ------------------------------------------------------------


def _atp(
    model,
    sae,
    hook_name,
    clean_tokens,
    corrupted_tokens,
    metric,
    *,
    sign=1.0,
    grad_run="clean",
    error=True,
    zero_error=False,
    sum_pos=False,
    mean=False,
    plain_grad=False,
    leave_hook=False,
):
    kept = {}

    def keep(act, hook):
        kept["a"] = act.detach().requires_grad_(True)
        return kept["a"]

    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted_tokens, names_filter=hook_name)
        _, clean_cache = model.run_with_cache(clean_tokens, names_filter=hook_name)
    a_corr, a_clean = cache[hook_name], clean_cache[hook_name]
    tokens = clean_tokens if grad_run == "clean" else corrupted_tokens
    if leave_hook:
        model.add_hook(hook_name, keep)
    with torch.enable_grad():
        if leave_hook:
            metric(model(tokens)).backward()
        else:
            with model.hooks(fwd_hooks=[(hook_name, keep)]):
                metric(model(tokens)).backward()
        grad = kept["a"].grad
        f_clean, f_corr = sae.encode(a_clean).detach(), sae.encode(a_corr).detach()
        if plain_grad:
            grad_f = grad @ sae.W_dec.detach().T
        else:
            leaf = f_clean.clone().requires_grad_(True)
            (grad_f,) = torch.autograd.grad(sae.decode(leaf), leaf, grad)
    with torch.no_grad():
        e_clean, e_corr = a_clean - sae.decode(f_clean), a_corr - sae.decode(f_corr)
        feats = sign * ((f_corr - f_clean) * grad_f).sum(0)
        err = sign * ((e_corr - e_clean) * grad).sum(-1).sum(0)
        if zero_error:
            err = torch.zeros_like(err)
        out = torch.cat([feats, err[:, None]], -1) if error else feats
        if sum_pos:
            out = out.sum(0)
        if mean:
            out = out / clean_tokens.shape[0]
    return out


variant("feature_attribution_patching", "sign_flipped", _atp, "clean - corrupted.", sign=-1.0)
variant(
    "feature_attribution_patching",
    "gradient_at_corrupted",
    _atp,
    "Backward pass on the corrupted run.",
    grad_run="corrupted",
)
variant(
    "feature_attribution_patching",
    "no_error_node",
    _atp,
    "Features only, [pos, d_sae].",
    error=False,
)
variant(
    "feature_attribution_patching",
    "no_error_node",
    _atp,
    "The error column left at 0.",
    fn_name="atp_error_left_zero",
    zero_error=True,
)
variant(
    "feature_attribution_patching",
    "summed_over_positions",
    _atp,
    "Summed over positions.",
    sum_pos=True,
)
variant(
    "feature_attribution_patching", "mean_over_prompts", _atp, "Mean over the batch.", mean=True
)
variant(
    "feature_attribution_patching",
    "decoder_norm_in_gradient",
    _atp,
    "grad @ W_dec.T, ignoring the decoder-norm rescaling.",
    plain_grad=True,
)
variant(
    "feature_attribution_patching",
    "hooks_left",
    _atp,
    "model.add_hook never removed.",
    leave_hook=True,
)


@correct("feature_attribution_patching")
def atp_with_backward_hook(model, sae, hook_name, clean_tokens, corrupted_tokens, metric):
    """Gradient by a TransformerLens backward hook, feature gradient by the closed form."""
    grads, acts = {}, {}

    def save_act(act, hook):
        acts["a"] = act.detach()

    def save_grad(grad, hook):
        grads["g"] = grad.detach()

    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted_tokens, names_filter=hook_name)
    with (
        torch.enable_grad(),
        model.hooks(fwd_hooks=[(hook_name, save_act)], bwd_hooks=[(hook_name, save_grad)]),
    ):
        metric(model(clean_tokens)).backward()
    model.zero_grad(set_to_none=True)
    grad, a_clean, a_corr = grads["g"], acts["a"], cache[hook_name]
    with torch.no_grad():
        f_clean, f_corr = sae.encode(a_clean), sae.encode(a_corr)
        norms = sae.W_dec.norm(dim=-1) if sae.cfg.rescale_acts_by_decoder_norm else 1.0
        grad_f = (grad @ sae.W_dec.T) / norms
        e_delta = (a_corr - sae.decode(f_corr)) - (a_clean - sae.decode(f_clean))
        feats = torch.einsum("bps,bps->ps", f_corr - f_clean, grad_f)
        err = torch.einsum("bpd,bpd->p", e_delta, grad)
    return torch.cat([feats, err.unsqueeze(-1)], dim=-1)


# ---- circuit_jaccard ---------------------------------------------------------------------------


def _jac(scores_a, scores_b, top_n, *, how="right"):
    if how == "weights":
        x, y = scores_a.flatten().abs(), scores_b.flatten().abs()
        return float(torch.minimum(x, y).sum() / torch.maximum(x, y).sum())
    signed = how == "signed"

    def top(s):
        flat = s.flatten() if signed else s.flatten().abs()
        return set(flat.topk(top_n).indices.tolist())

    a, b = top(scores_a), top(scores_b)
    if how == "over_n":
        return len(a & b) / top_n
    if how == "count":
        return len(a & b)
    return len(a & b) / len(a | b)


variant("circuit_jaccard", "signed_ranking", _jac, "topk of the signed scores.", how="signed")
variant("circuit_jaccard", "weights_not_sets", _jac, "Weighted Jaccard of |scores|.", how="weights")
variant("circuit_jaccard", "overlap_over_top_n", _jac, "|A & B| / top_n.", how="over_n")
variant("circuit_jaccard", "shared_count", _jac, "|A & B| alone.", how="count")


@correct("circuit_jaccard")
def circuit_jaccard_by_masks(scores_a, scores_b, top_n):
    """Boolean masks of the top nodes; a 0-d tensor returned."""

    def mask(s):
        flat = s.flatten().abs()
        m = torch.zeros_like(flat, dtype=torch.bool)
        m[flat.argsort(descending=True)[:top_n]] = True
        return m

    a, b = mask(scores_a), mask(scores_b)
    return (a & b).sum() / (a | b).sum()

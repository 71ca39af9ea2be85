"""Section 7 answers: the SAE forward pass, variance explained, feature attribution patching
and the Jaccard index of two feature circuits."""

from __future__ import annotations

import contextlib

import torch

from tests.checks.corpus import correct, variant, wrong

# ---- sae_encode ------------------------------------------------------------------------------


def _encode(
    sae,
    x,
    *,
    centre=1.0,
    b_enc=True,
    topk=True,
    k=None,
    k_shift=0,
    rescale="multiply",
    dim=-1,
    relu=True,
    relu_first=False,
    tied=False,
):
    enc = sae.W_dec.T if tied else sae.W_enc
    pre = (x - centre * sae.b_dec) @ enc + (sae.b_enc if b_enc else 0)
    norms = sae.W_dec.norm(dim=-1)
    if sae.cfg.rescale_acts_by_decoder_norm and rescale in ("multiply", "divide"):
        pre = pre * norms if rescale == "multiply" else pre / norms
    if relu_first:
        pre = pre.relu()
    if not topk:
        return pre.relu()
    values, indices = torch.topk(pre, (sae.cfg.k if k is None else k) + k_shift, dim=dim)
    if sae.cfg.rescale_acts_by_decoder_norm and rescale == "after":
        values = values * norms[indices]
    out = torch.zeros_like(pre)
    out.scatter_(dim, indices, values.relu() if relu else values)
    return out


variant("sae_encode", "forgot_b_dec", _encode, "Projects x without subtracting b_dec.", centre=0.0)
variant("sae_encode", "added_b_dec", _encode, "x + b_dec, not x - b_dec.", centre=-1.0)
variant("sae_encode", "forgot_b_enc", _encode, "No encoder bias.", b_enc=False)
variant("sae_encode", "k_off_by_one", _encode, "Keeps k + 1 features.", k_shift=1)
variant(
    "sae_encode",
    "k_off_by_one",
    _encode,
    "Keeps k - 1 features.",
    fn_name="encode_k_minus_one",
    k_shift=-1,
)
variant("sae_encode", "topk_over_tokens", _encode, "topk(dim=0): over tokens.", dim=0)
variant(
    "sae_encode",
    "selected_before_rescaling",
    _encode,
    "Top k of the unscaled pre-activations, then the k values scaled by the norms.",
    rescale="after",
)
variant(
    "sae_encode",
    "divided_by_decoder_norm",
    _encode,
    "pre / W_dec.norm: decoding's step.",
    rescale="divide",
)
variant(
    "sae_encode",
    "relu_not_topk",
    _encode,
    "A ReLU SAE's encoder: every positive feature.",
    topk=False,
)
variant("sae_encode", "hard_coded_k", _encode, "Keeps 16 features, the toy SAEs' k.", k=16)
variant("sae_encode", "ignored_decoder_norm", _encode, "No W_dec-norm rescaling.", rescale="none")
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


@wrong("sae_encode", "mutated_input")
def encode_after_folding(sae, x):
    """Folds the decoder norms into the encoder in place (sae.fold_W_dec_norm()), so that
    no rescaling is needed: the values are right, but the SAE it was given has changed."""
    sae.fold_W_dec_norm()
    return _encode(sae, x, rescale="none")


@correct("sae_encode")
def sae_encode_relu_first(sae, x):
    """ReLU before the top k (a token with fewer than k positive features picks zeros), and
    the rows indexed directly instead of scattered."""
    pre = torch.addmm(sae.b_enc, x - sae.b_dec, sae.W_enc)
    if sae.cfg.rescale_acts_by_decoder_norm:
        pre = pre * torch.linalg.vector_norm(sae.W_dec, dim=1)
    pre = pre.relu()
    idx = pre.argsort(dim=-1, descending=True)[:, : sae.cfg.k]
    rows = torch.arange(pre.shape[0])[:, None]
    out = torch.zeros_like(pre)
    out[rows, idx] = pre[rows, idx]
    return out


# ---- variance_explained ----------------------------------------------------------------------


def _fve(x, x_hat, *, how="right"):
    residual = (x - x_hat).pow(2)
    if how == "wrong_axis":
        return float(1 - residual.sum() / (x - x.mean(1, keepdim=True)).pow(2).sum())
    if how == "uncentred":
        return float(1 - residual.sum() / x.pow(2).sum())
    if how == "unexplained":
        return float(residual.sum() / (x - x.mean(0)).pow(2).sum())
    if how == "global":
        return float(1 - residual.sum() / (x - x.mean()).pow(2).sum())
    if how == "flat_var":
        return float(1 - (x - x_hat).var() / x.var())
    if how == "on_x_hat":
        return float(1 - residual.sum() / (x_hat - x_hat.mean(0)).pow(2).sum())
    if how == "both_centred":
        xc, hc = x - x.mean(0), x_hat - x_hat.mean(0)
        return float(1 - (xc - hc).pow(2).sum() / xc.pow(2).sum())
    if how == "mse_over_var":
        return float(1 - residual.mean(0).sum() / x.var(0).sum())
    if how == "norms":
        return float(1 - (x - x_hat).norm() / (x - x.mean(0)).norm())
    if how == "token_norms":
        return float(1 - (x - x_hat).norm(dim=-1).sum() / (x - x.mean(0)).norm(dim=-1).sum())
    if how == "per_token":
        return float((1 - residual.sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean())
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
variant(
    "variance_explained",
    "mean_of_ratios",
    _fve,
    "Averages per-token ratios.",
    fn_name="fve_per_token_ratios",
    how="per_token",
)
variant("variance_explained", "global_mean", _fve, "Centres on x.mean(), a scalar.", how="global")
variant(
    "variance_explained",
    "global_mean",
    _fve,
    "1 - (x - x_hat).var() / x.var(), over the flattened tensors.",
    fn_name="fve_flat_var",
    how="flat_var",
)
variant(
    "variance_explained",
    "centred_on_reconstruction",
    _fve,
    "The total from x_hat's spread.",
    how="on_x_hat",
)
variant(
    "variance_explained",
    "centred_residual",
    _fve,
    "x and x_hat each centred on their own means.",
    how="both_centred",
)
variant(
    "variance_explained",
    "mixed_normalisation",
    _fve,
    "Mean squared error over torch.var's unbiased variance.",
    how="mse_over_var",
)
variant("variance_explained", "norms_not_squared", _fve, "A ratio of Frobenius norms.", how="norms")
variant(
    "variance_explained",
    "norms_not_squared",
    _fve,
    "A ratio of sums of per-token norms.",
    fn_name="fve_token_norms",
    how="token_norms",
)


@correct("variance_explained")
def variance_explained_mse_loss(x, x_hat):
    """Through F.mse_loss(reduction="sum") and an explicit keepdim mean."""
    total = (x - x.mean(dim=0, keepdim=True)).square().sum()
    return 1 - torch.nn.functional.mse_loss(x_hat, x, reduction="sum") / total


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
    encoder_grad=False,
    leave_hook=False,
    grad_on=True,
    error_sign=1.0,
    whole_error=False,
    error_first=False,
    per_prompt=False,
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
    with torch.enable_grad() if grad_on else contextlib.nullcontext():
        if leave_hook:
            metric(model(tokens)).backward()
        else:
            with model.hooks(fwd_hooks=[(hook_name, keep)]):
                metric(model(tokens)).backward()
        grad = kept["a"].grad
        f_clean, f_corr = sae.encode(a_clean).detach(), sae.encode(a_corr).detach()
        if plain_grad:
            grad_f = grad @ sae.W_dec.detach().T
        elif encoder_grad:
            grad_f = grad @ sae.W_enc.detach()
        else:
            leaf = f_clean.clone().requires_grad_(True)
            (grad_f,) = torch.autograd.grad(sae.decode(leaf), leaf, grad)
    with torch.no_grad():
        e_clean, e_corr = a_clean - sae.decode(f_clean), a_corr - sae.decode(f_corr)
        if whole_error:
            e_clean, e_corr = a_clean, a_corr
        feats = sign * ((f_corr - f_clean) * grad_f).sum(0)
        err = error_sign * sign * ((e_corr - e_clean) * grad).sum(-1).sum(0)
        if per_prompt:
            feats = sign * (f_corr - f_clean) * grad_f
            err = sign * ((e_corr - e_clean) * grad).sum(-1)
        if zero_error:
            err = torch.zeros_like(err)
        out = torch.cat([feats, err[..., None]], -1) if error else feats
        if error_first:
            out = torch.cat([out[:, -1:], out[:, :-1]], -1)
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


variant(
    "feature_attribution_patching",
    "gradients_off",
    _atp,
    "No torch.enable_grad(): in the notebook the backward pass finds no graph.",
    grad_on=False,
)
variant(
    "feature_attribution_patching",
    "error_sign_flipped",
    _atp,
    "Features right, the error node e_clean - e_corrupt.",
    error_sign=-1.0,
)
variant(
    "feature_attribution_patching",
    "error_node_whole_change",
    _atp,
    "The error node is (a_corrupt - a_clean) . grad.",
    whole_error=True,
)
variant(
    "feature_attribution_patching",
    "error_column_first",
    _atp,
    "torch.cat([error, features]).",
    error_first=True,
)
variant(
    "feature_attribution_patching",
    "not_summed_over_prompts",
    _atp,
    "[batch, pos, d_sae + 1]: never summed over prompts.",
    per_prompt=True,
)
variant(
    "feature_attribution_patching",
    "encoder_gradient",
    _atp,
    "grad @ W_enc: the gradient through the encoder.",
    encoder_grad=True,
)


@wrong("feature_attribution_patching", "mutated_input")
def atp_after_folding(model, sae, hook_name, clean_tokens, corrupted_tokens, metric):
    """Folds the decoder norms into the SAE in place, so that grad @ W_dec.T is the feature
    gradient: the values are right, but the SAE it was given has changed."""
    sae.fold_W_dec_norm()
    return _atp(model, sae, hook_name, clean_tokens, corrupted_tokens, metric, plain_grad=True)


@correct("feature_attribution_patching")
def atp_spliced(model, sae, hook_name, clean_tokens, corrupted_tokens, metric):
    """Marks et al.'s way: splice decode(f) + error in as leaves, one backward pass gives both
    gradients."""
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted_tokens, names_filter=hook_name)
        f_corr = sae.encode(cache[hook_name])
        e_corr = cache[hook_name] - sae.decode(f_corr)
    leaves = {}

    def splice(act, hook):
        f = sae.encode(act).detach().requires_grad_(True)
        e = (act - sae.decode(f)).detach().requires_grad_(True)
        leaves["f"], leaves["e"] = f, e
        return sae.decode(f) + e

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[(hook_name, splice)]):
            value = metric(model(clean_tokens))
        grad_f, grad_e = torch.autograd.grad(value, [leaves["f"], leaves["e"]])
    feats = ((f_corr - leaves["f"].detach()) * grad_f).sum(0)
    err = ((e_corr - leaves["e"].detach()) * grad_e).sum((0, 2))
    return torch.cat([feats, err[:, None]], dim=1)


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
    n = top_n + {"one_more": 1, "one_fewer": -1}.get(how, 0)

    def top(s):
        flat = s.flatten() if signed else s.flatten().abs()
        order = flat.argsort(descending=how != "ascending")[:n]
        return set((flat[order] if how == "values" else order).tolist())

    a, b = top(scores_a), top(scores_b)
    if how == "over_n":
        return len(a & b) / top_n
    if how == "dice":
        return 2 * len(a & b) / (len(a) + len(b))
    if how == "sum_union":
        return len(a & b) / (len(a) + len(b))
    if how == "count":
        return len(a & b)
    if how == "int_div":
        return len(a & b) // len(a | b)
    if how == "distance":
        return 1 - len(a & b) / len(a | b)
    return len(a & b) / len(a | b)


variant("circuit_jaccard", "signed_ranking", _jac, "topk of the signed scores.", how="signed")
variant("circuit_jaccard", "weights_not_sets", _jac, "Weighted Jaccard of |scores|.", how="weights")
variant("circuit_jaccard", "overlap_over_top_n", _jac, "|A & B| / top_n.", how="over_n")
variant(
    "circuit_jaccard",
    "overlap_over_top_n",
    _jac,
    "The Dice coefficient, 2|A & B| / (|A| + |B|).",
    fn_name="jac_dice",
    how="dice",
)
variant("circuit_jaccard", "shared_count", _jac, "|A & B| alone.", how="count")
variant(
    "circuit_jaccard", "smallest_nodes", _jac, "argsort() ascending: the smallest.", how="ascending"
)
variant(
    "circuit_jaccard",
    "node_count_off_by_one",
    _jac,
    "A slice [:top_n + 1].",
    how="one_more",
)
variant(
    "circuit_jaccard",
    "node_count_off_by_one",
    _jac,
    "A slice [:top_n - 1].",
    fn_name="jac_one_fewer",
    how="one_fewer",
)
variant(
    "circuit_jaccard",
    "union_counts_shared_twice",
    _jac,
    "|A & B| / (|A| + |B|).",
    how="sum_union",
)
variant("circuit_jaccard", "jaccard_distance", _jac, "1 - |A & B| / |A | B|.", how="distance")
variant(
    "circuit_jaccard", "zero_overlap", _jac, "Sets of the top values, not indices.", how="values"
)
variant(
    "circuit_jaccard",
    "zero_overlap",
    _jac,
    "Integer division, //.",
    fn_name="jac_integer_division",
    how="int_div",
)


@correct("circuit_jaccard")
def circuit_jaccard_isin(scores_a, scores_b, top_n):
    """torch.isin on the two index tensors; the union's size from inclusion-exclusion."""
    a = scores_a.reshape(-1).abs().topk(top_n).indices
    b = scores_b.reshape(-1).abs().topk(top_n).indices
    shared = int(torch.isin(a, b).sum())
    return shared / (2 * top_n - shared)


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

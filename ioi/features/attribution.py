"""Feature attribution: the indirect effect of every SAE feature and error node on a metric.

Marks et al. (2024, "Sparse Feature Circuits") splice an SAE into each chosen hook point, so the
activation there is ``x = decode(f) + eps``: the features ``f`` and the error ``eps`` are the
*nodes* of that hook point, one set per position. A node's indirect effect is

    IE(node) = m(clean run with the node set to its corrupted value) - m(clean run),

everything else free to respond. Three ways to get it, all returned in the same shape:

* ``"atp"`` (their eq. 3): ``grad m . (a_corrupt - a_clean)``, the gradient in the clean run;
  one forward and backward pass for every node of every hook point.
* ``"ig"`` (their eq. 4): the same product with the gradient averaged over ``steps`` points on
  the straight line from the clean to the corrupted nodes of one hook point (midpoint rule), so
  the attributions of one hook point add up to that whole hook point's patching effect.
* exact activation patching (`exact_node_effects`), the check, for a short list of nodes.

The gradient of a node is the model's own gradient at the hook point mapped through the decoder
(the error node's gradient is the hook point's gradient). That is Marks et al.'s straight-through
rule, and what a gradient through `ioi.features.splice.spliced` gives (its error term is in the
autograd graph), computed from one backward pass of the plain model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.features.splice import sae_hook_name, splice_hooks, spliced
from ioi.inputs import check_baseline_finite, check_metric_finite, check_token_pair
from ioi.patching.attribution import correlation, receiver_gradients
from ioi.patching.engine import (
    Metric,
    declared_rows,
    declared_tokens,
    metric_on_rows,
    metric_value,
)
from ioi.patching.readout import NaNLogits
from ioi.patching.tail import logits_at_rows

METHODS = ("atp", "ig")


@dataclass(frozen=True)
class FeatureNode:
    """One node of a spliced hook point: a feature, or the error term, at one position.

    Attributes:
        hook: the TransformerLens hook name the SAE reads (``blocks.1.hook_resid_pre``).
        pos: the token position.
        feature: the SAE latent, or None for the hook point's error node.
    """

    hook: str
    pos: int
    feature: int | None = None

    @property
    def is_error(self) -> bool:
        return self.feature is None

    def __str__(self) -> str:
        what = "error" if self.feature is None else f"f{self.feature}"
        return f"{self.hook}[{self.pos}].{what}"


@dataclass(frozen=True)
class FeatureAttribution:
    """Indirect effects of every feature and error node of the spliced hook points.

    Attributes:
        scores: hook name -> [pos, d_sae + 1]; column ``d_sae`` (the last) is the error node.
        method: ``"atp"`` or ``"ig"``.
        steps: the number of integration points (1 for ``"atp"``).
        clean_metric, corrupted_metric: the metric on the unpatched runs.
        per_prompt: hook name -> [batch, pos, d_sae + 1], each prompt's share scaled so that the
            mean over prompts is ``scores`` (exact for a metric that averages a per-prompt
            quantity, as the IOI metrics do); None unless asked for.
    """

    scores: dict[str, Tensor]
    method: str
    steps: int
    clean_metric: float
    corrupted_metric: float
    per_prompt: dict[str, Tensor] | None = field(default=None, repr=False)

    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(self.scores)

    def effect(self, node: FeatureNode) -> float:
        """The node's indirect effect."""
        return float(self.scores[node.hook][node.pos, _column(self, node)])

    def nodes(self) -> list[FeatureNode]:
        """Every node, hook by hook, position by position, features then the error."""
        out = []
        for hook, table in self.scores.items():
            n_pos, width = table.shape
            for pos in range(n_pos):
                out += [FeatureNode(hook, pos, i) for i in range(width - 1)]
                out.append(FeatureNode(hook, pos, None))
        return out

    def flat(self) -> Float[Tensor, " node"]:
        """Every node's effect, in the order of `nodes`."""
        return torch.cat([table.flatten() for table in self.scores.values()])

    def top(self, k: int) -> list[FeatureNode]:
        """The ``k`` nodes with the largest ``|IE|``, largest first."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        values = self.flat()
        order = values.abs().argsort(descending=True, stable=True)[:k].tolist()
        return [_node_at(self, i) for i in order]


def _column(result: FeatureAttribution, node: FeatureNode) -> int:
    if node.hook not in result.scores:
        raise ValueError(f"no SAE at {node.hook!r}; the attribution covers {list(result.scores)}")
    n_pos, width = result.scores[node.hook].shape
    if node.feature is None:
        return width - 1
    if not 0 <= node.feature < width - 1 or not 0 <= node.pos < n_pos:
        raise ValueError(
            f"{node} is outside the SAE at {node.hook} (features 0..{width - 2}, "
            f"positions 0..{n_pos - 1})"
        )
    return node.feature


def _node_at(result: FeatureAttribution, index: int) -> FeatureNode:
    for hook, table in result.scores.items():
        if index < table.numel():
            pos, column = divmod(index, table.shape[1])
            return FeatureNode(hook, pos, None if column == table.shape[1] - 1 else column)
        index -= table.numel()
    raise IndexError(index)


# ---- checks ----------------------------------------------------------------------------------


def check_saes(model: HookedTransformer, saes: Mapping[str, SAE]) -> dict[str, SAE]:
    """``saes`` checked as `spliced` checks it (and non-empty), in the model's forward order."""
    if isinstance(saes, Mapping) and not saes:
        raise TypeError("saes must be a non-empty mapping of hook name -> sae_lens.SAE, got {}")
    splice_hooks(model, saes)  # raises on a bad name, type, width, dtype or device
    order = {name: i for i, name in enumerate(model.hook_dict)}
    return {name: saes[name] for name in sorted(saes, key=order.__getitem__)}


def check_method(method: object, steps: object) -> None:
    """``method`` one of `METHODS`; ``steps`` a positive int."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise TypeError(f"steps must be an int, got {type(steps).__name__} {steps!r}")
    if steps < 1:
        raise ValueError(
            f"steps must be at least 1 (the number of integration points), got {steps}"
        )


def check_nodes(saes: Mapping[str, SAE], nodes: object, n_pos: int) -> list[FeatureNode]:
    """``nodes``, an iterable of `FeatureNode` of the spliced hook points, as a list."""
    if isinstance(nodes, FeatureNode | str) or not hasattr(nodes, "__iter__"):
        raise TypeError(f"nodes must be a list of FeatureNode values, got {nodes!r}")
    nodes = list(nodes)
    for node in nodes:
        if not isinstance(node, FeatureNode):
            raise TypeError(f"nodes must be FeatureNode values, got {node!r}")
        if node.hook not in saes:
            raise ValueError(f"no SAE at {node.hook!r} for {node}; SAEs are at {list(saes)}")
        for what, value in (("position", node.pos), ("feature", node.feature)):
            if isinstance(value, bool) or not isinstance(value, int | None):
                raise TypeError(f"{node}: the {what} must be an int, got {value!r}")
        if not 0 <= node.pos < n_pos:
            raise ValueError(f"{node}: position outside 0..{n_pos - 1}")
        if node.feature is not None and not 0 <= node.feature < saes[node.hook].cfg.d_sae:
            raise ValueError(f"{node}: feature outside 0..{saes[node.hook].cfg.d_sae - 1}")
    return nodes


# ---- nodes of one hook point -----------------------------------------------------------------


def node_values(
    sae: SAE, hook: str, act: Float[Tensor, "batch pos ..."]
) -> tuple[Float[Tensor, "batch pos d_sae"], Float[Tensor, "batch pos ..."]]:
    """The features and the error term of one hook point's activation (no gradient)."""
    with torch.no_grad():
        features = sae.encode(act)
        error = act - sae.decode(features).to(act.dtype)
    return features, error


def decoder_grad(
    sae: SAE, features: Float[Tensor, "batch pos d_sae"], grad: Float[Tensor, "batch pos ..."]
) -> Float[Tensor, "batch pos d_sae"]:
    """d m / d features from d m / d activation: the decoder's vector-Jacobian product."""
    with torch.inference_mode(False), torch.enable_grad():
        leaf = features.detach().clone().requires_grad_(True)
        recon = sae.decode(leaf)
        (out,) = torch.autograd.grad(recon, leaf, grad.to(recon.dtype))
    return out


def _nodes_product(
    delta_f: Tensor, grad_f: Tensor, delta_e: Tensor, grad_e: Tensor
) -> Float[Tensor, "batch pos node"]:
    """Per-prompt delta * gradient of every feature, and of the error node (summed over d)."""
    error = (delta_e * grad_e).flatten(2).sum(-1)  # [batch, pos]
    return torch.cat([delta_f * grad_f, error.unsqueeze(-1).to(delta_f.dtype)], dim=-1)


# ---- the two estimates -----------------------------------------------------------------------


def feature_attribution(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    *,
    method: str = "atp",
    steps: int = 10,
    per_prompt: bool = False,
) -> FeatureAttribution:
    """Indirect effect of every feature and error node of every SAE, per position.

    Args:
        model: any `HookedTransformer`.
        saes: hook name -> SAELens SAE trained on that hook point.
        clean_tokens, corrupted_tokens: same-shaped batches (IOI and its ABC version), [batch, pos].
        metric: ``logits -> scalar``, differentiable (e.g. `ioi.metrics.make_ioi_metric`).
        method: ``"atp"`` (one gradient) or ``"ig"`` (integrated gradients, per hook point).
        steps: integration points for ``"ig"`` (ignored by ``"atp"``).
        per_prompt: also keep each prompt's share (`FeatureAttribution.per_prompt`).

    Returns:
        A `FeatureAttribution`; a node's score estimates
        ``m(clean, node <- corrupted) - m(clean)``.
    """
    check_method(method, steps)
    saes = check_saes(model, saes)
    check_token_pair(model, clean_tokens, corrupted_tokens)
    names = list(saes)
    with torch.no_grad():
        corrupted_logits, cache = model.run_with_cache(
            corrupted_tokens, names_filter=lambda n: n in saes
        )
        corrupted_metric = float(metric_value(metric, corrupted_logits))
    check_baseline_finite(corrupted_metric, "the corrupted run")
    clean_metric, acts, grads = receiver_gradients(model, clean_tokens, metric, names)
    check_baseline_finite(clean_metric, "the clean run")
    batch = clean_tokens.shape[0]
    shares = {}
    for name, sae in saes.items():
        f_clean, e_clean = node_values(sae, name, acts[name])
        f_corr, e_corr = node_values(sae, name, cache[name].to(acts[name].device))
        if method == "atp":
            grad_f, grad_e = decoder_grad(sae, f_clean, grads[name]), grads[name]
        else:
            grad_f, grad_e = _path_gradients(
                model, name, sae, clean_tokens, metric, (f_clean, e_clean), (f_corr, e_corr), steps
            )
        shares[name] = batch * _nodes_product(f_corr - f_clean, grad_f, e_corr - e_clean, grad_e)
    scores = {name: share.mean(0) for name, share in shares.items()}
    for name, table in scores.items():
        if not bool(torch.isfinite(table).all()):
            raise ValueError(f"the attribution at {name} is not finite; is the metric finite?")
    return FeatureAttribution(
        scores,
        method,
        1 if method == "atp" else steps,
        clean_metric,
        corrupted_metric,
        shares if per_prompt else None,
    )


def _path_gradients(
    model: HookedTransformer,
    name: str,
    sae: SAE,
    tokens: Tensor,
    metric: Metric,
    clean: tuple[Tensor, Tensor],
    corrupted: tuple[Tensor, Tensor],
    steps: int,
) -> tuple[Tensor, Tensor]:
    """Gradients of the features and the error, averaged over ``steps`` midpoints of the line
    from the clean to the corrupted nodes of hook point ``name`` (all copies in one pass)."""
    batch = tokens.shape[0]
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps

    def line(start: Tensor, end: Tensor) -> Tensor:
        shape = (steps,) + (1,) * start.ndim
        alpha = alphas.to(start.device, start.dtype).reshape(shape)
        points = start + alpha * (end - start)  # [steps, batch, pos, ...]
        return points.reshape(steps * batch, *start.shape[1:]).requires_grad_(True)

    with torch.inference_mode(False), torch.enable_grad():
        features, error = line(clean[0], corrupted[0]), line(clean[1], corrupted[1])
        hooks = [
            (sae_hook_name(name, "hook_sae_acts_post"), lambda act, hook: features),
            (sae_hook_name(name, "hook_sae_error"), lambda act, hook: error),
        ]
        with spliced(model, {name: sae}, error_term=True), model.hooks(fwd_hooks=hooks):
            logits = model(tokens.repeat(steps, 1))  # copy-major: copy k is alpha_k
        total = sum(metric_value(metric, logits[k * batch : (k + 1) * batch]) for k in range(steps))
        grad_f, grad_e = torch.autograd.grad(total, [features, error])
    mean_f = grad_f.reshape(steps, batch, *grad_f.shape[1:]).mean(0)
    mean_e = grad_e.reshape(steps, batch, *grad_e.shape[1:]).mean(0)
    return mean_f, mean_e


# ---- the metric of each copy of a batch ------------------------------------------------------


def copy_metrics(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    copies: int,
    spliced_hooks: Sequence[str],
) -> list[Tensor]:
    """The metric of each of ``copies`` stacked copies of ``tokens`` in one forward pass.

    Run inside the caller's hooks. A metric that declares ``logit_positions`` and
    ``logit_tokens`` (the `ioi.metrics` factories do) gets only those logits, every other entry
    NaN, through the patching engine's own readout (`ioi.patching.tail.logits_at_rows`,
    `ioi.patching.engine.metric_on_rows`): unembedding every position at GPT-2's vocabulary
    costs more than the rest of a small model. Full logits where the metric declares nothing,
    or a spliced hook lies outside the blocks (it would see the picked rows only).
    """
    batch, n_pos = tokens.shape
    stacked = tokens.repeat(copies, 1)  # copy-major: copy c is rows c*batch .. (c+1)*batch-1
    device = stacked.device
    rows = declared_rows(metric, batch, n_pos, 0, copies, device)
    picked = None
    if rows is not None and all(h.startswith("blocks.") for h in spliced_hooks):
        vocab = declared_tokens(metric, model.cfg.d_vocab, device)
        embedded = model(stacked, stop_at_layer=0)  # [copies*batch, pos, d_model]
        picked = logits_at_rows(model, embedded, 0, rows, vocab)
    if picked is None:
        logits = model(stacked)
        return [metric_value(metric, logits[c * batch : (c + 1) * batch]) for c in range(copies)]
    logits = NaNLogits().get(batch, n_pos, model.cfg.d_vocab, picked)
    return metric_on_rows(logits, metric, picked, rows[:batch], vocab, copies)


# ---- the check: exact patching of a few nodes ------------------------------------------------


def exact_node_effects(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    nodes: Sequence[FeatureNode],
    *,
    nodes_per_pass: int = 16,
) -> Float[Tensor, " node"]:
    """``m(clean, node <- corrupted) - m(clean)`` for each node, by activation patching.

    Each node is patched alone (in every prompt at once) with its hook point's SAE spliced in,
    error term on, so nothing else changes until the model recomputes it downstream.
    ``nodes_per_pass`` copies of the batch share one forward pass.
    """
    saes = check_saes(model, saes)
    check_token_pair(model, clean_tokens, corrupted_tokens)
    if (
        not isinstance(nodes_per_pass, int)
        or isinstance(nodes_per_pass, bool)
        or nodes_per_pass < 1
    ):
        raise ValueError(f"nodes_per_pass must be a positive integer, got {nodes_per_pass!r}")
    nodes = check_nodes(saes, nodes, clean_tokens.shape[1])
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted_tokens, names_filter=lambda n: n in saes)
        _, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n in saes)
    out = torch.full((len(nodes),), float("nan"), dtype=torch.float64)
    for name, sae in saes.items():
        indices = [i for i, node in enumerate(nodes) if node.hook == name]
        if not indices:
            continue
        f_corr, e_corr = node_values(sae, name, cache[name])
        node_values(sae, name, clean_cache[name])  # checks d_in before any pass
        base = _patched_metrics(model, name, sae, clean_tokens, metric, [], f_corr, e_corr)[0]
        check_baseline_finite(base, f"the clean run with the SAE at {name!r} spliced in")
        for start in range(0, len(indices), nodes_per_pass):
            chunk = indices[start : start + nodes_per_pass]
            values = _patched_metrics(
                model, name, sae, clean_tokens, metric, [nodes[i] for i in chunk], f_corr, e_corr
            )
            out[chunk] = torch.tensor(values, dtype=torch.float64) - base
    check_metric_finite(out, lambda i: f"node {nodes[i]}")
    return out


def _patched_metrics(
    model, name, sae, tokens, metric, nodes: list[FeatureNode], f_corr, e_corr
) -> list[float]:
    """Metric of copy ``c`` of the batch with ``nodes[c]`` patched (one unpatched copy if none)."""
    batch, copies = tokens.shape[0], max(1, len(nodes))

    def patch_features(act: Tensor, hook) -> Tensor:
        act = act.clone()
        for c, node in enumerate(nodes):
            if node.feature is not None:
                rows = slice(c * batch, (c + 1) * batch)
                act[rows, node.pos, node.feature] = f_corr[:, node.pos, node.feature].to(act.dtype)
        return act

    def patch_error(act: Tensor, hook) -> Tensor:
        act = act.clone()
        for c, node in enumerate(nodes):
            if node.feature is None:
                act[c * batch : (c + 1) * batch, node.pos] = e_corr[:, node.pos].to(act.dtype)
        return act

    hooks = [
        (sae_hook_name(name, "hook_sae_acts_post"), patch_features),
        (sae_hook_name(name, "hook_sae_error"), patch_error),
    ]
    with torch.no_grad(), spliced(model, {name: sae}, error_term=True), model.hooks(hooks):
        return [float(v) for v in copy_metrics(model, tokens, metric, copies, [name])]


# ---- the comparison --------------------------------------------------------------------------


def spearman(a: Float[Tensor, " n"], b: Float[Tensor, " n"]) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks; ties get their mean rank)."""
    return correlation(_ranks(a.flatten()), _ranks(b.flatten()))


def _ranks(x: Tensor) -> Tensor:
    values = x.double()
    order = values.argsort(stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=torch.float64)
    for value in values.unique():  # ties: the mean of their ranks
        same = values == value
        ranks[same] = ranks[same].mean()
    return ranks


@dataclass(frozen=True)
class FeatureAttributionComparison:
    """An attribution estimate against exact patching of its top nodes.

    Attributes:
        attribution: every node's estimate.
        nodes: the top-k nodes by ``|estimate|``.
        estimate, exact: [k] the estimate and the exact patching effect of those nodes.
        pearson, spearman: their correlations (nan if either is constant).
        max_abs_error: largest ``|estimate - exact|``.
    """

    attribution: FeatureAttribution
    nodes: tuple[FeatureNode, ...]
    estimate: Tensor
    exact: Tensor
    pearson: float
    spearman: float
    max_abs_error: float


def compare_feature_attribution(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    *,
    method: str = "atp",
    steps: int = 10,
    top_k: int = 50,
) -> FeatureAttributionComparison:
    """`feature_attribution`, then exact patching of its ``top_k`` nodes, and their agreement."""
    result = feature_attribution(
        model, saes, clean_tokens, corrupted_tokens, metric, method=method, steps=steps
    )
    nodes = result.top(top_k)
    exact = exact_node_effects(model, saes, clean_tokens, corrupted_tokens, metric, nodes)
    estimate = torch.tensor([result.effect(node) for node in nodes], dtype=torch.float64)
    return FeatureAttributionComparison(
        result,
        tuple(nodes),
        estimate,
        exact,
        correlation(estimate, exact),
        spearman(estimate, exact),
        float((estimate - exact).abs().max()),
    )

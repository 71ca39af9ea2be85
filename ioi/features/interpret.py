"""What a circuit feature is: where it fires, what its decoder writes, which IOI word it reads.

For one feature of one SAE, `interpret_feature` gives

* its top-activating (prompt, position) pairs over a batch of prompts (right-padding is never
  a position: a prompt's tokens end at its ``seq_lens`` entry, or, when none are given, before
  the run of pad tokens that ends it);
* its decoder direction's direct effect on the logits, ``W_dec[i] @ W_U`` (the tokens it
  promotes and suppresses most; the final LayerNorm's scale is left out, as in a direct logit
  attribution of a direction);
* an IOI role: the word position (``IO``, ``S1``, ``S2``, ``end``, ... from
  ``IOIDataset.word_idx``) that holds the largest share of the feature's total activation, if
  that share is at least `ROLE_SHARE`; otherwise ``"mixed"`` (or ``"silent"`` if it never fires).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.features.attribution import FeatureNode, check_saes, node_values
from ioi.inputs import check_model_tokens

ROLES = ("IO", "S1", "S1+1", "S2", "end")
ROLE_SHARE = 0.5  # share of a feature's activation mass one word must hold to name its role


@dataclass(frozen=True)
class FeatureReport:
    """One feature, interpreted.

    Attributes:
        hook, feature: which SAE latent.
        top_examples: ``(prompt, position, activation)``, largest first.
        promoted, suppressed: ``(token, logit effect)`` of ``W_dec[feature] @ W_U``, largest
            first (most negative first for ``suppressed``); empty for an SAE whose ``d_in`` is
            not ``d_model`` (not a residual-stream direction).
        role: the IOI word it fires on (see the module docstring), ``"mixed"`` or ``"silent"``.
        role_shares: each role's share of the feature's activation mass (``"other"``: the rest).
    """

    hook: str
    feature: int
    top_examples: tuple[tuple[int, int, float], ...]
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]
    role: str
    role_shares: dict[str, float]


def role_shares(
    activations: Tensor, word_idx: Mapping[str, Tensor], roles: Sequence[str] = ROLES
) -> dict[str, float]:
    """Share of ``activations`` ([batch, pos], non-negative) at each role's position per prompt.

    A position that is two roles (it cannot be, for IOI words) counts for the first listed.
    """
    total = float(activations.sum())
    rows = torch.arange(activations.shape[0])
    taken = torch.zeros_like(activations, dtype=torch.bool)
    shares = {}
    for role in roles:
        if role not in word_idx:
            raise ValueError(f"word_idx has no {role!r}; it has {sorted(word_idx)}")
        mask = torch.zeros_like(taken)
        mask[rows, word_idx[role].to(torch.long)] = True
        mask &= ~taken
        taken |= mask
        shares[role] = float(activations[mask].sum()) / total if total > 0 else 0.0
    shares["other"] = float(activations[~taken].sum()) / total if total > 0 else 0.0
    return shares


def _role(shares: dict[str, float]) -> str:
    if sum(shares.values()) == 0:
        return "silent"
    best = max((r for r in shares if r != "other"), key=shares.__getitem__)
    return best if shares[best] >= ROLE_SHARE else "mixed"


def interpret_feature(
    model: HookedTransformer,
    sae: SAE,
    hook: str,
    feature: int,
    tokens: Int[Tensor, "batch pos"],
    word_idx: Mapping[str, Tensor],
    *,
    k: int = 5,
    roles: Sequence[str] = ROLES,
    seq_lens: Int[Tensor, " batch"] | None = None,
) -> FeatureReport:
    """Interpret one feature of the SAE at ``hook`` over ``tokens`` (see the module docstring)."""
    return interpret_features(
        model, {hook: sae}, [(hook, feature)], tokens, word_idx, k=k, roles=roles, seq_lens=seq_lens
    )[0]


def interpret_features(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    features: Iterable[tuple[str, int] | FeatureNode],
    tokens: Int[Tensor, "batch pos"],
    word_idx: Mapping[str, Tensor],
    *,
    k: int = 5,
    roles: Sequence[str] = ROLES,
    seq_lens: Int[Tensor, " batch"] | None = None,
) -> list[FeatureReport]:
    """Interpret each distinct ``(hook, feature)`` (circuit nodes may be given; error nodes and
    repeats at other positions are skipped), in the order given.

    Args:
        seq_lens: each prompt's number of real tokens (``IOIDataset.seq_lens``); positions from
            there on are padding and never count. None: each prompt ends before the run of
            the tokenizer's pad tokens that closes it (every position counts without a
            tokenizer or pad token).
    """
    saes = check_saes(model, saes)
    check_model_tokens(model, tokens)
    real = real_positions(model, tokens, seq_lens)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    wanted: list[tuple[str, int]] = []
    for item in features:
        hook, feature = (item.hook, item.feature) if isinstance(item, FeatureNode) else item
        if feature is None or (hook, feature) in wanted:
            continue
        if hook not in saes or not 0 <= feature < saes[hook].cfg.d_sae:
            raise ValueError(f"no feature {feature} in an SAE at {hook!r}; SAEs: {list(saes)}")
        wanted.append((hook, feature))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in saes)
    acts = {hook: node_values(sae, hook, cache[hook])[0] for hook, sae in saes.items()}
    return [
        _report(
            model, saes[hook], hook, feature, acts[hook][..., feature], real, word_idx, k, roles
        )
        for hook, feature in wanted
    ]


def real_positions(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"], seq_lens: Tensor | None
) -> Bool[Tensor, "batch pos"]:
    """True at each prompt's real tokens, False at its right-padding (see `interpret_features`)."""
    n_batch, n_pos = tokens.shape
    if seq_lens is None:
        pad = getattr(model.tokenizer, "pad_token_id", None)
        if pad is None:
            return torch.ones(n_batch, n_pos, dtype=torch.bool, device=tokens.device)
        # Padding is the trailing run of pad tokens: count them from the end of each row.
        is_pad = tokens == pad
        trailing = is_pad.flip(-1).to(torch.long).cumprod(-1).sum(-1)  # [batch]
        seq_lens = n_pos - trailing
    if not isinstance(seq_lens, Tensor) or seq_lens.shape != (n_batch,):
        raise ValueError(
            f"seq_lens must be a [batch] tensor of {n_batch} prompt lengths (IOIDataset.seq_lens), "
            f"got {seq_lens!r}"
        )
    seq_lens = seq_lens.to(tokens.device)
    if bool((seq_lens < 1).any()) or bool((seq_lens > n_pos).any()):
        raise ValueError(
            f"seq_lens must lie in 1..{n_pos} (the tokens' positions), got {seq_lens.tolist()}"
        )
    return torch.arange(n_pos, device=tokens.device)[None, :] < seq_lens[:, None]


def _report(model, sae, hook, feature, acts, real, word_idx, k, roles) -> FeatureReport:
    real = real.to(acts.device)
    # Padding ranks below every real token and carries no activation mass.
    ranked = acts.masked_fill(~real, float("-inf")).flatten()
    order = ranked.argsort(descending=True, stable=True)[: min(k, int(real.sum()))]
    flat = acts.flatten()
    top = tuple((i // acts.shape[1], i % acts.shape[1], float(flat[i])) for i in order.tolist())
    up, down = [], []
    if sae.cfg.d_in == model.cfg.d_model:  # a residual-stream direction: read it through W_U
        with torch.no_grad():
            effect = sae.W_dec[feature].to(model.W_U.dtype) @ model.W_U  # [d_vocab]
        up = effect.argsort(descending=True, stable=True)[:k].tolist()
        down = effect.argsort(stable=True)[:k].tolist()
    shares = role_shares(acts.clamp(min=0).masked_fill(~real, 0.0), word_idx, roles)
    return FeatureReport(
        hook,
        feature,
        top,
        tuple((_token(model, t), float(effect[t])) for t in up),
        tuple((_token(model, t), float(effect[t])) for t in down),
        _role(shares),
        shares,
    )


def _token(model: HookedTransformer, token: int) -> str:
    if model.tokenizer is None:
        return str(token)
    return model.tokenizer.decode([token])

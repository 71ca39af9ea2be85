"""What a circuit feature is: where it fires, what its decoder writes, which IOI word it reads.

For one feature of one SAE, `interpret_feature` gives

* its top-activating (prompt, position) pairs over a batch of prompts (right-padding is never
  a position: a prompt's tokens end at its ``seq_lens`` entry, or, when none are given, before
  the run of pad tokens that ends it);
* its decoder direction's direct effect on the logits, ``W_dec[i] @ W_U`` (the tokens it
  promotes and suppresses most; the final LayerNorm's scale is left out, as in a direct logit
  attribution of a direction);
* an IOI role. Positionally: the word position (``IO``, ``S1``, ``S2``, ``end``, ... from
  ``IOIDataset.word_idx``) that holds the largest share of the feature's total activation, if
  that share is at least `ROLE_SHARE`; otherwise ``"mixed"`` (or ``"silent"`` if it never fires).
  Given a `RoleContrast` (the ABC prompts and BABA/ABBA families of the same prompts), the role
  says what information the feature carries, from effect sizes (Cohen's d of the feature's
  activation at one word position between two prompt sets, `cohens_d`):

  - ``"S is duplicated"``: at ``S2`` or ``end``, IOI prompts above the ABC prompts (whose name
    there is no repeat) by d >= `ROLE_EFFECT`;
  - ``"position of S"``: at ``S2`` or ``end``, BABA and ABBA prompts apart by |d| >= `ROLE_EFFECT`;
  - ``"IO name"``: at the IO name above the S1 name (the other first name) by d >= `ROLE_EFFECT`;
  - ``"name token"``: the three names (IO, S1, S2) hold at least `ROLE_SHARE` of the mass and no
    name is apart from S1 by |d| >= `ROLE_EFFECT`.

  The first three compete: the one whose effect is largest wins. If none holds, the role is the
  positional label. Each effect is in `FeatureReport.role_evidence` so a reader can see why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset
from ioi.features.attribution import FeatureNode, check_saes, node_values
from ioi.features.families import family_labels
from ioi.inputs import check_model_tokens

ROLES = ("IO", "S1", "S1+1", "S2", "end")
ROLE_SHARE = 0.5  # share of a feature's activation mass one word must hold to name its role
# Cohen's d a contrast must reach to name a role: 0.8 is Cohen's "large" effect, so the two
# prompt sets' distributions overlap by under ~70%; smaller effects keep the positional label.
# d from n prompts split in two halves has a standard error of about 2 / sqrt(n) (0.25 at 64
# prompts): with fewer than ~50 prompts noise alone can reach it.
ROLE_EFFECT = 0.8
CONTRAST_ROLES = ("S is duplicated", "position of S", "IO name")
NAMES = ("IO", "S1", "S2")  # the name positions of an IOI prompt


@dataclass(frozen=True)
class FeatureReport:
    """One feature, interpreted.

    Attributes:
        hook, feature: which SAE latent.
        top_examples: ``(prompt, position, activation)``, largest first.
        promoted, suppressed: ``(token, logit effect)`` of ``W_dec[feature] @ W_U``, largest
            first (most negative first for ``suppressed``); empty for an SAE whose ``d_in`` is
            not ``d_model`` (not a residual-stream direction).
        role: the information it carries (``"S is duplicated"``, ``"position of S"``,
            ``"IO name"``, ``"name token"``; only with a `RoleContrast`), else the IOI word it
            fires on, ``"mixed"`` or ``"silent"`` (see the module docstring).
        role_shares: each role's share of the feature's activation mass (``"other"``: the rest).
        role_evidence: each contrast's effect size (Cohen's d; ``"name share"``: the names'
            share of the mass), as `role_evidence` computes it; empty without a `RoleContrast`.
    """

    hook: str
    feature: int
    top_examples: tuple[tuple[int, int, float], ...]
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]
    role: str
    role_shares: dict[str, float]
    role_evidence: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoleContrast:
    """The prompt sets a feature's role is read from, beside the IOI prompts interpreted.

    Attributes:
        abc_tokens, abc_word_idx: the ABC prompts (each IOI prompt with fresh names in its
            name slots, `ioi.features.activations.ABC_FLIP`), row for row.
        families: each IOI prompt's family, ``"BABA"`` or ``"ABBA"`` (`family_labels`).
    """

    abc_tokens: Int[Tensor, "batch pos"]
    abc_word_idx: Mapping[str, Tensor]
    families: tuple[str, ...]

    @classmethod
    def of(cls, ds: IOIDataset, abc: IOIDataset) -> RoleContrast:
        """The contrast of IOI prompts ``ds`` with their ABC prompts ``abc``."""
        if len(abc) != len(ds):
            raise ValueError(f"abc must hold one prompt per IOI prompt: {len(abc)} != {len(ds)}")
        return cls(abc.toks, abc.word_idx, tuple(family_labels(ds)))


def cohens_d(a: Tensor, b: Tensor) -> float:
    """Cohen's d of samples ``a`` and ``b``: the difference of means over the pooled SD.

    Two constant samples give 0.0 if equal, else +-inf (a difference no noise explains).
    """
    a, b = a.double().flatten(), b.double().flatten()
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each sample needs 2 or more values, got {len(a)} and {len(b)}")
    diff = float(a.mean() - b.mean())
    pooled = ((len(a) - 1) * a.var() + (len(b) - 1) * b.var()) / (len(a) + len(b) - 2)
    sd = float(pooled.sqrt())
    if sd == 0:
        return 0.0 if diff == 0 else float("inf") if diff > 0 else float("-inf")
    return diff / sd


def role_evidence(
    ioi: Float[Tensor, "batch pos"],
    word_idx: Mapping[str, Tensor],
    abc: Float[Tensor, "batch pos"],
    abc_word_idx: Mapping[str, Tensor],
    families: Sequence[str],
) -> dict[str, float]:
    """Each role's contrast for one feature's activations on the IOI and the ABC prompts.

    Keys: ``"S is duplicated at S2"``/``"... at end"`` (d of IOI over ABC),
    ``"position of S at S2"``/``"... at end"`` (d of BABA over ABBA, both families needed),
    ``"IO over S1"``, ``"S2 over S1"`` (d between the names of the same prompts) and
    ``"name share"`` (IO, S1 and S2's share of the activation mass: zero ``ioi`` at padding).
    """
    for name, idx in (("word_idx", word_idx), ("abc_word_idx", abc_word_idx)):
        missing = [w for w in (*NAMES, "end") if w not in idx]
        if missing:
            raise ValueError(f"{name} has no {missing}; it has {sorted(idx)}")
    if len(families) != ioi.shape[0] or abc.shape[0] != ioi.shape[0]:
        raise ValueError(
            f"families ({len(families)}) and ABC prompts ({abc.shape[0]}) must match the "
            f"{ioi.shape[0]} IOI prompts row for row"
        )

    def at(acts: Tensor, idx: Mapping[str, Tensor], word: str) -> Tensor:
        return acts[torch.arange(acts.shape[0]), idx[word].to(acts.device, torch.long)]

    evidence = {}
    for word in ("S2", "end"):
        evidence[f"S is duplicated at {word}"] = cohens_d(
            at(ioi, word_idx, word), at(abc, abc_word_idx, word)
        )
    baba = torch.tensor([f == "BABA" for f in families], device=ioi.device)
    if 2 <= int(baba.sum()) <= len(families) - 2:
        for word in ("S2", "end"):
            values = at(ioi, word_idx, word)
            evidence[f"position of S at {word}"] = cohens_d(values[baba], values[~baba])
    s1 = at(ioi, word_idx, "S1")
    evidence["IO over S1"] = cohens_d(at(ioi, word_idx, "IO"), s1)
    evidence["S2 over S1"] = cohens_d(at(ioi, word_idx, "S2"), s1)
    shares = role_shares(ioi.clamp(min=0), word_idx, NAMES)
    evidence["name share"] = sum(shares[w] for w in NAMES)
    return evidence


def contrast_role(evidence: Mapping[str, float], positional: str) -> str:
    """The role `role_evidence` supports (see the module docstring), else ``positional``."""
    if positional == "silent":
        return positional
    effects = {
        "S is duplicated": max(evidence[f"S is duplicated at {w}"] for w in ("S2", "end")),
        "position of S": max(
            (abs(v) for k, v in evidence.items() if k.startswith("position of S")), default=0.0
        ),
        "IO name": evidence["IO over S1"],
    }
    best = max(CONTRAST_ROLES, key=effects.__getitem__)
    if effects[best] >= ROLE_EFFECT:
        return best
    alike = all(abs(evidence[k]) < ROLE_EFFECT for k in ("IO over S1", "S2 over S1"))
    if evidence["name share"] >= ROLE_SHARE and alike:
        return "name token"
    return positional


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


def positional_role(shares: Mapping[str, float]) -> str:
    """The word holding at least `ROLE_SHARE` of `role_shares`, else ``"mixed"``/``"silent"``."""
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
    contrast: RoleContrast | None = None,
) -> FeatureReport:
    """Interpret one feature of the SAE at ``hook`` over ``tokens`` (see the module docstring)."""
    return interpret_features(
        model,
        {hook: sae},
        [(hook, feature)],
        tokens,
        word_idx,
        k=k,
        roles=roles,
        seq_lens=seq_lens,
        contrast=contrast,
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
    contrast: RoleContrast | None = None,
) -> list[FeatureReport]:
    """Interpret each distinct ``(hook, feature)`` (circuit nodes may be given; error nodes and
    repeats at other positions are skipped), in the order given.

    Args:
        seq_lens: each prompt's number of real tokens (``IOIDataset.seq_lens``); positions from
            there on are padding and never count. None: each prompt ends before the run of
            the tokenizer's pad tokens that closes it (every position counts without a
            tokenizer or pad token).
        contrast: the ABC prompts and families of ``tokens``' prompts (`RoleContrast.of`): the
            role then says what the feature carries; None: the positional role only.
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
    abc_acts = _contrast_acts(model, saes, contrast, tokens.shape[0])
    reports = []
    for hook, feature in wanted:
        report = _report(
            model, saes[hook], hook, feature, acts[hook][..., feature], real, word_idx, k, roles
        )
        if contrast is not None:
            # Padding is never a word position, but it must not count in the names' share.
            ioi = acts[hook][..., feature].masked_fill(~real.to(acts[hook].device), 0.0)
            evidence = role_evidence(
                ioi,
                word_idx,
                abc_acts[hook][..., feature],
                contrast.abc_word_idx,
                contrast.families,
            )
            role = contrast_role(evidence, report.role)
            report = replace(report, role=role, role_evidence=evidence)
        reports.append(report)
    return reports


def _contrast_acts(model, saes, contrast: RoleContrast | None, n_batch: int) -> dict[str, Tensor]:
    """Every SAE's features on the ABC prompts of ``contrast`` (none without one)."""
    if contrast is None:
        return {}
    if not isinstance(contrast, RoleContrast):
        raise TypeError(f"contrast must be a RoleContrast, got {type(contrast).__name__}")
    check_model_tokens(model, contrast.abc_tokens)
    if contrast.abc_tokens.shape[0] != n_batch:
        raise ValueError(
            f"the contrast's ABC prompts ({contrast.abc_tokens.shape[0]}) must match the "
            f"{n_batch} IOI prompts row for row"
        )
    with torch.no_grad():
        _, cache = model.run_with_cache(contrast.abc_tokens, names_filter=lambda n: n in saes)
    return {hook: node_values(sae, hook, cache[hook])[0] for hook, sae in saes.items()}


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
        positional_role(shares),
        shares,
    )


def _token(model: HookedTransformer, token: int) -> str:
    if model.tokenizer is None:
        return str(token)
    return model.tokenizer.decode([token])

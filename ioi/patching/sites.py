"""A `Site`: one place in the model to patch, and how to select it inside an activation.

A site names a hook point (component + layer) and the slice of that activation to overwrite:
a head, a position (or several, or one per prompt), and for attention patterns a source
position. The engine never inspects a component by name; it asks the site for its hook name
and for a boolean selection mask over the activation's indexable dimensions.

Activation layouts, as TransformerLens caches them (batch first):

====================================  ==============================  ====================
component                             activation                      selectable dims
====================================  ==============================  ====================
resid_pre, resid_mid, resid_post,     [batch, pos, d_model]           pos
attn_out, mlp_out
z, q                                  [batch, pos, head, d_head]      pos, head
k, v                                  [batch, pos, kv_head, d_head]   pos, head (kv heads)
pattern                               [batch, head, dest, src]        head, dest, src
====================================  ==============================  ====================

For grouped-query attention (``cfg.n_key_value_heads`` set) the k and v hooks hold one vector
per *key/value* head, so a k/v site's ``head`` indexes the ``n_key_value_heads`` kv heads: patching
kv head ``h`` changes the keys seen by query heads ``h*g .. h*g+g-1`` (``g = n_heads //
n_key_value_heads``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool
from torch import Tensor
from transformer_lens import HookedTransformerConfig
from transformer_lens.utilities import get_act_name

RESID_COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
HEAD_VECTOR_COMPONENTS = ("z", "q", "k", "v")
PATTERN_COMPONENTS = ("pattern",)
COMPONENTS: tuple[str, ...] = RESID_COMPONENTS + HEAD_VECTOR_COMPONENTS + PATTERN_COMPONENTS


@dataclass(frozen=True)
class PerPrompt:
    """One position per prompt, e.g. ``word_idx["end"]``: prompt ``b`` is patched at ``values[b]``."""

    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.values) == 0:
            raise ValueError("PerPrompt positions need at least one value (one per prompt)")
        if any(not isinstance(v, int) or v < 0 for v in self.values):
            raise ValueError(f"PerPrompt positions must be non-negative ints, got {self.values}")

    @classmethod
    def from_tensor(cls, positions: Tensor) -> PerPrompt:
        """Build from an integer tensor of shape [batch]."""
        if positions.ndim != 1 or positions.is_floating_point():
            raise ValueError(
                f"per-prompt positions must be an integer tensor of shape [batch], "
                f"got dtype {positions.dtype} and shape {tuple(positions.shape)}"
            )
        return cls(tuple(int(p) for p in positions.tolist()))


Position = int | tuple[int, ...] | PerPrompt | None
"""``None``: every position; ``int``: one; ``tuple``: several patched together; `PerPrompt`."""

PositionLike = Position | list[int] | Tensor
"""What `Site` accepts: a `Position`, a list (normalised to a sorted tuple) or a [batch] tensor."""


def _normalise_position(pos: object, what: str) -> Position:
    if pos is None or isinstance(pos, PerPrompt):
        return pos
    if isinstance(pos, Tensor):
        if pos.ndim == 0:
            return _normalise_position(int(pos), what)
        return PerPrompt.from_tensor(pos)
    if isinstance(pos, bool) or not isinstance(pos, int | tuple | list):
        raise ValueError(
            f"{what} must be None (all), an int, a tuple of ints (patched together), "
            f"a PerPrompt or an integer tensor of shape [batch]; got {pos!r}"
        )
    if isinstance(pos, int):
        if pos < 0:
            raise ValueError(f"{what} must be >= 0, got {pos}")
        return pos
    values = tuple(pos)
    if len(values) == 0 or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(f"{what} as a sequence must hold one or more ints, got {pos!r}")
    if any(v < 0 for v in values):
        raise ValueError(f"{what} must be >= 0, got {values}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class Site:
    """Where to patch: a component at a layer, optionally one head, some positions.

    Args:
        component: one of `COMPONENTS`.
        layer: block index.
        head: head index for z/q/k/v/pattern (kv-head index for k/v under grouped-query
            attention); ``None`` patches every head. Must be ``None`` for residual-like components.
        pos: positions to patch (destination positions for ``pattern``), see `Position`.
            A tensor of shape [batch] becomes a `PerPrompt`, a list a sorted tuple; after
            construction ``pos`` is always a `Position`.
        src_pos: source (key) position, ``pattern`` only; ``None`` for all.

    Example:
        >>> Site("z", layer=9, head=6, pos=3)
        Site(component='z', layer=9, head=6, pos=3, src_pos=None)
    """

    component: str
    layer: int
    head: int | None = None
    pos: PositionLike = field(default=None)
    src_pos: int | None = None

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(
                f"unknown component {self.component!r}; valid components: {', '.join(COMPONENTS)}"
            )
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"layer must be an int >= 0, got {self.layer!r}")
        if self.head is not None:
            if self.component in RESID_COMPONENTS:
                raise ValueError(
                    f"component {self.component!r} has no head axis; use head=None, or one of "
                    f"the head components {', '.join(HEAD_VECTOR_COMPONENTS + PATTERN_COMPONENTS)}"
                )
            if isinstance(self.head, bool) or not isinstance(self.head, int) or self.head < 0:
                raise ValueError(f"head must be None or an int >= 0, got {self.head!r}")
        object.__setattr__(self, "pos", _normalise_position(self.pos, "pos"))
        if self.src_pos is not None:
            if self.component != "pattern":
                raise ValueError("src_pos is only valid for component 'pattern'")
            if not isinstance(self.src_pos, int) or self.src_pos < 0:
                raise ValueError(f"src_pos must be None or an int >= 0, got {self.src_pos!r}")

    @property
    def hook_name(self) -> str:
        """The TransformerLens hook this site patches."""
        return get_act_name(self.component, self.layer)

    @property
    def pos_axis(self) -> int:
        """Axis of the (destination) position in the activation, counting batch as axis 0."""
        return 2 if self.component == "pattern" else 1

    def describe(self) -> str:
        """A short human label, e.g. ``"z L9 H6 @3"``."""
        parts = [self.component, f"L{self.layer}"]
        if self.head is not None:
            parts.append(f"H{self.head}")
        if self.pos is not None:
            parts.append(f"@{_position_label(self.pos)}")
        if self.src_pos is not None:
            parts.append(f"<-{self.src_pos}")
        return " ".join(parts)

    def mask(self, batch: int, n_pos: int, n_heads: int) -> Bool[Tensor, "batch ..."]:
        """Which entries of this site's activation are overwritten, over its selectable dims.

        Returns a bool tensor of shape [batch, pos] (residual-like), [batch, pos, head]
        (z/q/k/v) or [batch, head, dest, src] (pattern); feature dims are left out.
        """
        by_pos = _position_selector(self.pos, batch, n_pos)  # [batch, pos]
        if self.component in RESID_COMPONENTS:
            return by_pos
        by_head = torch.zeros(n_heads, dtype=torch.bool)
        by_head[slice(None) if self.head is None else self.head] = True
        if self.component in HEAD_VECTOR_COMPONENTS:
            return by_pos[:, :, None] & by_head[None, None, :]
        by_src = torch.zeros(n_pos, dtype=torch.bool)
        by_src[slice(None) if self.src_pos is None else self.src_pos] = True
        # [batch, head, dest, src] from the three independent selectors
        return by_head[None, :, None, None] & by_pos[:, None, :, None] & by_src[None, None, None, :]


def _position_label(pos: Position) -> str:
    if isinstance(pos, PerPrompt):
        return "per-prompt"
    if isinstance(pos, tuple):
        return ",".join(str(p) for p in pos)
    return str(pos)


def _position_selector(pos: Position, batch: int, n_pos: int) -> Bool[Tensor, "batch pos"]:
    selected = torch.zeros(batch, n_pos, dtype=torch.bool)
    if pos is None:
        selected[:] = True
    elif isinstance(pos, PerPrompt):
        selected[torch.arange(batch), torch.tensor(pos.values)] = True
    else:
        selected[:, list(pos) if isinstance(pos, tuple) else pos] = True
    return selected


def n_heads_at(component: str, cfg: HookedTransformerConfig) -> int:
    """How many heads the component's hook holds: kv heads for k/v under grouped-query attention."""
    grouped = cfg.n_key_value_heads is not None and not cfg.ungroup_grouped_query_attention
    if component in ("k", "v") and grouped:
        return int(cfg.n_key_value_heads)
    return cfg.n_heads


def valid_components(cfg: HookedTransformerConfig) -> tuple[str, ...]:
    """Components this model actually computes (attn-only models have no MLP or resid_mid)."""
    missing: set[str] = set()
    if cfg.attn_only:
        missing |= {"mlp_out", "resid_mid"}
    if cfg.parallel_attn_mlp:
        missing.add("resid_mid")
    return tuple(c for c in COMPONENTS if c not in missing)


def check_site(site: Site, cfg: HookedTransformerConfig, batch: int, n_pos: int) -> None:
    """Raise `ValueError` if the site does not exist in this model for inputs of this shape."""
    components = valid_components(cfg)
    if site.component not in components:
        reason = "attn_only" if cfg.attn_only else "parallel_attn_mlp"
        raise ValueError(
            f"{site.describe()}: this model ({reason}) has no {site.component!r}; "
            f"valid components: {', '.join(components)}"
        )
    if site.layer >= cfg.n_layers:
        raise ValueError(
            f"{site.describe()}: layer {site.layer} is out of range; valid layers: "
            f"0..{cfg.n_layers - 1}"
        )
    n_heads = n_heads_at(site.component, cfg)
    if site.head is not None and site.head >= n_heads:
        kind = "kv heads" if n_heads != cfg.n_heads else "heads"
        raise ValueError(
            f"{site.describe()}: head {site.head} is out of range; valid {kind}: 0..{n_heads - 1}"
        )
    _check_position(site, batch, n_pos)


def _check_position(site: Site, batch: int, n_pos: int) -> None:
    pos = site.pos
    values: tuple[int, ...] = ()
    if isinstance(pos, PerPrompt):
        if len(pos.values) != batch:
            raise ValueError(
                f"{site.describe()}: per-prompt positions have {len(pos.values)} entries "
                f"but the batch has {batch} prompts"
            )
        values = pos.values
    elif isinstance(pos, int):
        values = (pos,)
    elif isinstance(pos, tuple):
        values = pos
    if site.src_pos is not None:
        values = values + (site.src_pos,)
    bad = [v for v in values if v >= n_pos]
    if bad:
        raise ValueError(
            f"{site.describe()}: position {bad[0]} is out of range; valid positions: 0..{n_pos - 1}"
        )

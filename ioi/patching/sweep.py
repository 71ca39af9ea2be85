"""Sweeps: grids of sites over layers x heads x positions, with named axes.

A `Sweep` is the list of sites a patching run visits plus the shape the results come back in.
Build one with `sweep`; each of ``layers``, ``heads`` and ``positions`` either becomes an axis
(one site per value) or is fixed for every site.

Position specs (``positions``, and ``src_positions`` for attention patterns):

- ``"all"``: every position at once (no axis);
- ``"each"``: one site per position (axis);
- ``"last"``: the last position only (no axis);
- ``LastK(k)``: each of the last ``k`` positions, one at a time (axis);
- a list of ints: those positions, one at a time (axis);
- ``Together([...])``: those positions patched together (no axis);
- an integer tensor of shape [batch]: one position per prompt, e.g. ``word_idx["end"]`` (no axis);
- a dict of name -> [batch] tensor: each named per-prompt position in turn (axis labelled by name).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.patching.sites import (
    COMPONENTS,
    HEAD_VECTOR_COMPONENTS,
    RESID_COMPONENTS,
    PerPrompt,
    Site,
    check_site,
    n_heads_at,
)


@dataclass(frozen=True)
class LastK:
    """The last ``k`` positions, each patched on its own."""

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"LastK needs k >= 1, got {self.k}")


@dataclass(frozen=True)
class Together:
    """Several positions patched together, as one site."""

    positions: tuple[int, ...]

    def __init__(self, positions: Sequence[int]) -> None:
        object.__setattr__(self, "positions", tuple(int(p) for p in positions))
        if not self.positions:
            raise ValueError("Together needs at least one position")


# Strings are typed as plain `str` so that a wrong one reaches the ValueError that lists the
# valid choices, rather than a type-checker message.
PositionSpec = str | LastK | Together | list[int] | Tensor | Mapping[str, Tensor]
"""``"all"``, ``"each"``, ``"last"``, `LastK`, `Together`, a list, a [batch] tensor, or a dict."""
HeadSpec = str | int | list[int]
"""``"each"``, ``"all"``, one head, or a list of heads."""
LayerSpec = str | int | list[int]
"""``"all"``, one layer, or a list of layers."""

_Option = tuple[str, object]  # (label, value) one axis entry


@dataclass(frozen=True)
class Sweep:
    """Sites in row-major order over ``shape``, with one name and label list per axis.

    Attributes:
        sites: the sites, ``len(sites) == prod(shape)``.
        axes: axis names, e.g. ``("layer", "pos", "head")``.
        shape: result shape.
        labels: per axis, one label per index (for plots and tables).
        n_pos: the sequence length it was built for (`sweep`'s ``n_pos``); None for a sweep
            made from explicit sites. Running it on inputs of another length is refused.
    """

    sites: tuple[Site, ...]
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    labels: tuple[tuple[str, ...], ...]
    n_pos: int | None = None

    def __post_init__(self) -> None:
        n = 1
        for size in self.shape:
            n *= size
        assert n == len(self.sites), "sweep shape does not match its sites"
        assert len(self.axes) == len(self.shape) == len(self.labels)

    @classmethod
    def from_sites(cls, sites: Sequence[Site]) -> Sweep:
        """A flat sweep with one ``site`` axis."""
        if isinstance(sites, str | Site):
            raise TypeError(f"sites must be a Sweep or a list of Site values, got {sites!r}")
        sites = tuple(sites)
        if not sites:
            raise ValueError("a sweep needs at least one site")
        for site in sites:
            if not isinstance(site, Site):
                raise TypeError(
                    f"sites must be Site values (e.g. Site('z', 9, head=9)) or a Sweep "
                    f"(sweep(model, ...)), got {type(site).__name__} {site!r}"
                )
        labels = tuple(site.describe() for site in sites)
        return cls(sites, ("site",), (len(sites),), (labels,))

    def check(self, model: HookedTransformer, batch: int, n_pos: int) -> None:
        """Raise `ValueError` for the first site that does not exist in this model/input, or
        when the sweep was built for another sequence length (``"each"`` would then patch
        only the first ``n_pos`` positions of longer inputs, or miss the ends of shorter ones)."""
        if self.n_pos is not None and self.n_pos != n_pos:
            raise ValueError(
                f"this sweep was built for n_pos={self.n_pos} but the tokens have {n_pos} "
                f"positions; build it with sweep(..., n_pos=tokens.shape[1])"
            )
        for site in self.sites:
            check_site(site, model.cfg, batch, n_pos)


def sweep(
    model: HookedTransformer,
    component: str,
    n_pos: int,
    *,
    layers: LayerSpec = "all",
    heads: HeadSpec = "each",
    positions: PositionSpec = "all",
    src_positions: PositionSpec = "all",
    axes: Sequence[str] | None = None,
) -> Sweep:
    """Build the grid of sites for one component.

    Args:
        model: the model (for its number of layers and heads).
        component: one of `ioi.patching.sites.COMPONENTS`.
        n_pos: sequence length of the prompts.
        layers: ``"all"``, one layer, or a list of layers (each its own site).
        heads: ``"each"`` (one site per head), ``"all"`` (all heads together), one head, or a
            list; ignored for residual-like components. For k/v under grouped-query attention,
            heads are kv heads.
        positions: a position spec (see module docs); destination positions for ``pattern``.
        src_positions: source positions, ``pattern`` only.
        axes: order of the result axes; default layer, pos, head (layer, head, dest_pos,
            src_pos for patterns), keeping only the swept ones.

    Returns:
        A `Sweep`.

    Example:
        >>> sweep(model, "z", n_pos=15, positions="each").shape  # (n_layers, 15, n_heads)
    """
    if component not in COMPONENTS:
        raise ValueError(
            f"unknown component {component!r}; valid components: {', '.join(COMPONENTS)}"
        )
    if isinstance(n_pos, bool) or not isinstance(n_pos, int):
        raise TypeError(f"n_pos must be an int (tokens.shape[1]), got {type(n_pos).__name__}")
    if n_pos < 1:
        raise ValueError(f"n_pos must be at least 1 (tokens.shape[1]), got {n_pos}")
    if component != "pattern" and not (isinstance(src_positions, str) and src_positions == "all"):
        raise ValueError("src_positions only applies to component 'pattern'")
    options: dict[str, list[_Option] | _Option] = {"layer": _layer_options(layers, model)}
    if component in RESID_COMPONENTS:
        options["pos"] = _position_options(positions, n_pos, "positions")
        default_axes = ("layer", "pos")
    else:
        options["head"] = _head_options(heads, n_heads_at(component, model.cfg))
        if component in HEAD_VECTOR_COMPONENTS:
            options["pos"] = _position_options(positions, n_pos, "positions")
            default_axes = ("layer", "pos", "head")
        else:
            options["dest_pos"] = _position_options(positions, n_pos, "positions")
            options["src_pos"] = _position_options(src_positions, n_pos, "src_positions")
            default_axes = ("layer", "head", "dest_pos", "src_pos")
    swept = tuple(name for name in default_axes if isinstance(options[name], list))
    order = _axis_order(axes, swept)
    grid = [options[name] for name in order]
    sites = []
    for combo in itertools.product(*grid):
        chosen = {name: value for name, (_, value) in zip(order, combo, strict=True)}
        for name in default_axes:
            if name not in chosen:
                chosen[name] = options[name][1]  # fixed (label, value) pair
        sites.append(_make_site(component, chosen))
    shape = tuple(len(g) for g in grid)
    labels = tuple(tuple(label for label, _ in g) for g in grid)
    return Sweep(tuple(sites), order, shape, labels, n_pos)


def _make_site(component: str, chosen: dict[str, object]) -> Site:
    pos = chosen.get("pos", chosen.get("dest_pos"))
    if component in RESID_COMPONENTS:
        return Site(component, chosen["layer"], None, pos)
    if component in HEAD_VECTOR_COMPONENTS:
        return Site(component, chosen["layer"], chosen["head"], pos)
    src = chosen["src_pos"]
    if isinstance(src, tuple | PerPrompt):
        raise ValueError("src_positions must be 'all', 'each', 'last', LastK or a list of ints")
    return Site(component, chosen["layer"], chosen["head"], pos, src_pos=src)


def _axis_order(axes: Sequence[str] | None, swept: tuple[str, ...]) -> tuple[str, ...]:
    if axes is None:
        return swept
    axes = tuple(axes)
    if sorted(axes) != sorted(swept):
        raise ValueError(
            f"axes {axes} must be an ordering of the swept axes {swept}; "
            "only layers/heads/positions given as 'each'/'all'/lists become axes"
        )
    return axes


def _layer_options(layers: LayerSpec, model: HookedTransformer) -> list[_Option] | _Option:
    n_layers = model.cfg.n_layers
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', an int or a list of ints, got {layers!r}")
        return [(str(layer), layer) for layer in range(n_layers)]
    if isinstance(layers, int):
        if not 0 <= layers < n_layers:
            raise ValueError(f"layer {layers} is out of range; valid layers: 0..{n_layers - 1}")
        return (str(layers), layers)
    if isinstance(layers, list) and layers:
        bad = [layer for layer in layers if not 0 <= layer < n_layers]
        if bad:
            raise ValueError(f"layer {bad[0]} is out of range; valid layers: 0..{n_layers - 1}")
        return [(str(layer), layer) for layer in layers]
    raise ValueError(f"layers must be 'all', an int or a non-empty list of ints, got {layers!r}")


def _head_options(heads: HeadSpec, n_heads: int) -> list[_Option] | _Option:
    if heads == "each":
        return [(str(h), h) for h in range(n_heads)]
    if heads == "all":
        return ("all", None)
    if isinstance(heads, str):
        raise ValueError(f"heads must be 'each', 'all', an int or a list of ints, got {heads!r}")
    values = [heads] if isinstance(heads, int) else heads
    if not isinstance(values, list) or not values:
        raise ValueError(f"heads must be 'each', 'all', an int or a list of ints, got {heads!r}")
    bad = [h for h in values if not 0 <= h < n_heads]
    if bad:
        raise ValueError(f"head {bad[0]} is out of range; valid heads: 0..{n_heads - 1}")
    if isinstance(heads, int):
        return (str(heads), heads)
    return [(str(h), h) for h in values]


def _position_options(spec: PositionSpec, n_pos: int, what: str) -> list[_Option] | _Option:
    def in_range(values: Sequence[int]) -> list[int]:
        bad = [p for p in values if not 0 <= p < n_pos]
        if bad:
            raise ValueError(f"{what}: position {bad[0]} is out of range; valid: 0..{n_pos - 1}")
        return list(values)

    if isinstance(spec, str):
        if spec == "all":
            return ("all", None)
        if spec == "each":
            return [(str(p), p) for p in range(n_pos)]
        if spec == "last":
            return (str(n_pos - 1), n_pos - 1)
        raise ValueError(
            f"{what}: unknown spec {spec!r}; valid: 'all', 'each', 'last', LastK(k), a list of "
            "ints, Together([...]), a [batch] tensor or a dict of name -> [batch] tensor"
        )
    if isinstance(spec, LastK):
        return [(str(p), p) for p in in_range(range(n_pos - spec.k, n_pos))]
    if isinstance(spec, Together):
        values = in_range(spec.positions)
        return (",".join(map(str, values)), tuple(values))
    if isinstance(spec, Tensor):
        return ("per-prompt", PerPrompt.from_tensor(spec))
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError(f"{what}: the dict of named positions is empty")
        return [(name, PerPrompt.from_tensor(idx)) for name, idx in spec.items()]
    if isinstance(spec, list) and spec:
        return [(str(p), p) for p in in_range(spec)]
    raise ValueError(f"{what}: cannot use {spec!r} as a position spec")

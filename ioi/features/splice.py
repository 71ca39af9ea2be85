"""Splice SAELens sparse autoencoders into a `HookedTransformer` for the length of a block.

Inside `spliced(model, {hook_name: sae})` every forward of ``model`` sends the activation at each
hook name through its SAE. The SAE's own hook points fire on the way, so the usual
TransformerLens tools (``model.hooks``, caching, backward hooks) reach the feature activations
and the error node:

==========================  ===============================================================
SAE hook point              value
==========================  ===============================================================
``hook_sae_input``          the activation, as the SAE reads it
``hook_sae_acts_pre``       the features before the activation function
``hook_sae_acts_post``      the feature activations ``f``
``hook_sae_recons``         the reconstruction ``x_hat`` (before output normalisation)
``hook_sae_error``          the error node ``x - x_hat`` (only with ``error_term=True``)
``hook_sae_output``         the value passed on to the model
==========================  ===============================================================

With ``error_term=True`` the model reads ``x_hat + error``: its output is the plain model's up to
float error, and an intervention on ``hook_sae_acts_post`` moves the output by exactly the change
in the reconstruction, because the error is computed from an unhooked pass of the SAE (as
SAELens's ``HookedSAETransformer.add_sae(sae, use_error_term=True)`` does). Unlike SAELens we keep
the error in the autograd graph, so a gradient reaches both ``hook_sae_error`` and
``hook_sae_acts_post`` (what attribution patching over features needs) and the gradient
flowing upstream of the splice is the plain model's. With ``error_term=False`` the
reconstruction replaces the activation.

Inside the block the SAE hook points are also hook points *of the model*, named
``f"{hook_name}.{sae_hook}"`` (`sae_hook_name`, SAELens's ``HookedSAETransformer`` names), so
``model.run_with_cache``, ``model.hooks(fwd_hooks=[("blocks.2.hook_resid_pre.hook_sae_acts_post",
fn)])`` and backward hooks reach them. A hook at ``hook_name`` itself sees the value passed on.

The SAEs are not modified (no ``use_error_term`` flag is set) and the hooks and hook names added
to the model are removed when the block exits, also on an exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from sae_lens import SAE
from sae_lens.saes.sae import _disable_hooks
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

__all__ = ["activation_widths", "sae_hook_name", "splice_hooks", "spliced"]

# A one-token probe is enough to learn each hook point's activation width.
_PROBE_TOKENS = 1


@contextmanager
def spliced(
    model: HookedTransformer, saes: Mapping[str, SAE], *, error_term: bool = True
) -> Iterator[None]:
    """Route the activation at each hook name of ``saes`` through its SAE inside the block.

    Args:
        model: the model to splice into.
        saes: TransformerLens hook name (e.g. ``"blocks.2.hook_resid_pre"``, from
            ``transformer_lens.utils.get_act_name``) -> SAELens ``SAE`` with ``d_in`` equal to
            that activation's width. The SAE's own ``cfg.metadata.hook_name`` is not consulted.
        error_term: pass on reconstruction + error (output unchanged) if True, the
            reconstruction alone if False.

    Raises:
        TypeError: ``saes`` is not a mapping, a key is not a string or a value is not an SAE.
        ValueError: a key is not a hook point of ``model`` (close names listed), or an SAE's
            ``d_in``, dtype or device does not fit the activation.

    Example:
        >>> with spliced(model, {"blocks.2.hook_resid_pre": sae}):
        ...     logits, cache = model.run_with_cache(tokens)
        >>> cache["blocks.2.hook_resid_pre.hook_sae_acts_post"]  # doctest: +SKIP
    """
    hooks = splice_hooks(model, saes, error_term=error_term)
    exposed = _expose(model, saes)
    try:
        with model.hooks(fwd_hooks=hooks):
            yield
    finally:
        _hide(model, exposed)


def sae_hook_name(hook_name: str, sae_hook: str) -> str:
    """The model-level name of an SAE hook point inside `spliced`, e.g.
    ``sae_hook_name("blocks.2.hook_resid_pre", "hook_sae_acts_post")`` ->
    ``"blocks.2.hook_resid_pre.hook_sae_acts_post"`` (SAELens's ``HookedSAETransformer`` names).
    """
    return f"{hook_name}.{sae_hook}"


def _expose(model: HookedTransformer, saes: Mapping[str, SAE]) -> dict[str, str]:
    """Make each SAE hook point a hook point of the model under `sae_hook_name`, so
    ``model.hooks``, ``run_with_cache`` and ``reset_hooks`` reach it; returns the old names."""
    old_names: dict[str, str] = {}
    for name, sae in saes.items():
        for short, hp in sae.hook_dict.items():
            full = sae_hook_name(name, short)
            old_names[full] = hp.name
            hp.name = full  # the cache keys activations by the hook point's name
            model.hook_dict[full] = hp
            model.mod_dict[full] = hp
    return old_names


def _hide(model: HookedTransformer, old_names: dict[str, str]) -> None:
    for full, old in old_names.items():
        hp = model.hook_dict.pop(full)
        model.mod_dict.pop(full, None)
        hp.name = old


def splice_hooks(
    model: HookedTransformer, saes: Mapping[str, SAE], *, error_term: bool = True
) -> list[tuple[str, Callable]]:
    """The ``(hook_name, hook_fn)`` forward hooks that `spliced` adds, after checking ``saes``.

    For callers that add their hooks in one ``model.hooks(fwd_hooks=...)`` call with others.
    Raises as `spliced` does.
    """
    if not isinstance(error_term, bool):
        raise TypeError(f"error_term must be a bool, got {type(error_term).__name__}")
    _check_types(saes)
    _check_names(model, saes)
    if len({id(sae) for sae in saes.values()}) < len(saes):
        raise ValueError("the same SAE object is given for two hook names: pass one SAE per name")
    widths, per_head = _probe(model, list(saes))
    for name, sae in saes.items():
        _check_fit(model, name, sae, widths[name], per_head[name])
    return [(name, _splice_fn(sae, error_term)) for name, sae in saes.items()]


def activation_widths(model: HookedTransformer, names: list[str]) -> dict[str, int]:
    """The width an SAE must read at each hook name: the last dimension of its activation, or
    ``n_heads * d_head`` for a per-head activation such as ``hook_z``.

    Learned from a forward pass of one token (no hook is left behind).
    """
    widths, _ = _probe(model, names)
    return widths


def _probe(model: HookedTransformer, names: list[str]) -> tuple[dict[str, int], dict[str, bool]]:
    """Each hook point's SAE width, and whether its activation is per head (4-D)."""
    widths: dict[str, int] = {}
    per_head: dict[str, bool] = {}

    def record(act: Tensor, hook: HookPoint) -> None:
        per_head[hook.name] = act.ndim == 4
        widths[hook.name] = act.shape[-1] * (act.shape[-2] if act.ndim == 4 else 1)

    tokens = torch.zeros((1, _PROBE_TOKENS), dtype=torch.long, device=model.cfg.device)
    with torch.no_grad(), model.hooks(fwd_hooks=[(name, record) for name in names]):
        model(tokens, return_type=None)
    missing = [name for name in names if name not in widths]
    if missing:
        raise ValueError(f"hook points {missing} did not fire in a forward pass of the model")
    return widths, per_head


def _splice_fn(sae: SAE, error_term: bool) -> Callable[[Tensor, HookPoint], Tensor]:
    def hook_fn(act: Tensor, hook: HookPoint) -> Tensor:
        recons = sae.decode(sae.encode(act))
        if not error_term:
            return sae.hook_sae_output(recons.to(act.dtype))
        if _has_hooks(sae):
            # Hooks on the SAE may edit the features; the error is the clean SAE's, so an
            # edit reaches the output in full (SAELens's rule), and stays differentiable.
            with _disable_hooks(sae):
                clean = sae.decode(sae.encode(act))
        else:
            clean = recons
        error = sae.hook_sae_error(act - clean.to(act.dtype))
        return sae.hook_sae_output(recons.to(act.dtype) + error)

    return hook_fn


def _has_hooks(sae: SAE) -> bool:
    return any(hp._forward_hooks or hp._backward_hooks for hp in sae.hook_dict.values())


def _check_types(saes: Mapping[str, SAE]) -> None:
    if not isinstance(saes, Mapping):
        raise TypeError(
            f"saes must be a mapping {{hook_name: SAE}}, got {type(saes).__name__}; "
            "e.g. {'blocks.2.hook_resid_pre': sae}"
        )
    for name, sae in saes.items():
        if not isinstance(name, str):
            raise TypeError(
                f"saes keys must be hook names (str), got {name!r} ({type(name).__name__})"
            )
        if not isinstance(sae, SAE):
            raise TypeError(
                f"saes[{name!r}] must be a sae_lens SAE, got {type(sae).__name__}; "
                "load one with sae_lens.SAE.load_from_disk or ioi.features.load_toy_saes"
            )


def _check_names(model: HookedTransformer, saes: Mapping[str, SAE]) -> None:
    for name in saes:
        if name not in model.hook_dict:
            close = difflib.get_close_matches(name, list(model.hook_dict), n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise ValueError(
                f"{name!r} is not a hook point of the model{hint} "
                "(build names with transformer_lens.utils.get_act_name, e.g. "
                "get_act_name('resid_pre', 2) == 'blocks.2.hook_resid_pre')"
            )


def _check_fit(model: HookedTransformer, name: str, sae: SAE, width: int, per_head: bool) -> None:
    if sae.cfg.d_in != width:
        raise ValueError(
            f"the SAE for {name!r} reads d_in={sae.cfg.d_in} but the activation there has width "
            f"{width}: splice it at a hook point of width {sae.cfg.d_in}, or train one with "
            f"d_in={width} (ioi.features.train)"
        )
    if per_head and not getattr(sae, "hook_z_reshaping_mode", False):
        raise ValueError(
            f"{name!r} holds one vector per head but its SAE does not flatten heads: build it "
            "with cfg.reshape_activations='hook_z' (or call sae.turn_on_forward_pass_hook_z_reshaping())"
        )
    model_device = torch.device(model.cfg.device)
    if sae.device.type != model_device.type:
        raise ValueError(
            f"the SAE for {name!r} is on {sae.device} but the model is on {model_device}: "
            f"move it with sae.to({str(model_device)!r})"
        )
    if sae.dtype != model.cfg.dtype:
        raise ValueError(
            f"the SAE for {name!r} has dtype {sae.dtype} but the model computes in "
            f"{model.cfg.dtype}: cast it with sae.to(dtype={model.cfg.dtype})"
        )

"""Checkers for section 4, path patching: the freezing hook, head -> logits, head -> heads.

Expected values come from `ioi.path_patching`. Known mistakes are recomputed with a small
one-sender-per-pass implementation here (`naive_path_patch`), switched to make each mistake.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi import patching, path_patching
from ioi.checks.core import exercise, one_thread
from ioi.checks.fixtures import IOIBatch, fresh_cache, ioi_batch
from ioi.metrics import make_ioi_metric


@functools.lru_cache(maxsize=1)
def _batch() -> IOIBatch:
    return ioi_batch(n=4)


def _metric(b: IOIBatch):
    # orig = the IOI prompts (1), new = the ABC prompts (0)
    return make_ioi_metric(b.clean_logit_diff, b.corrupted_logit_diff, b.answer_tokens, b.end)


def _frozen_z_hooks(model, orig_cache, new_cache, sender, freeze: bool) -> list:
    """hook_z hooks: every head at its orig value (if ``freeze``), the sender at its new value."""

    def hook_fn(z: Tensor, hook, layer: int) -> Tensor:
        if freeze:
            z = orig_cache[hook.name].clone()
        if sender is not None and sender[0] == layer:
            z[:, :, sender[1]] = new_cache[hook.name][:, :, sender[1]]
        return z

    return [
        (get_act_name("z", layer), functools.partial(hook_fn, layer=layer))
        for layer in range(model.cfg.n_layers)
    ]


@torch.inference_mode()
def naive_path_patch(
    model: HookedTransformer,
    metric: Callable,
    orig_toks: Tensor,
    orig_cache: ActivationCache,
    new_cache: ActivationCache,
    receivers: Sequence[tuple[int, int]] | None = None,
    receiver_input: str = "q",
    *,
    freeze: bool = True,
    freeze_mlps: bool = False,
) -> Float[Tensor, "layer head"]:
    """Path patching one sender per pass, with switches that reproduce common mistakes.

    Receivers None: sender -> logits. Else sender -> receivers' ``receiver_input``; senders at
    or above the top receiver layer are left at 0.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    top = n_layers if receivers is None else max(layer for layer, _ in receivers)
    out = torch.zeros(n_layers, n_heads)
    mlp_hooks = []
    if freeze_mlps:
        mlp_hooks = [
            (get_act_name("mlp_out", layer), lambda act, hook: orig_cache[hook.name])
            for layer in range(n_layers)
        ]
    for layer in range(top):
        for head in range(n_heads):
            hooks = _frozen_z_hooks(model, orig_cache, new_cache, (layer, head), freeze) + mlp_hooks
            if receivers is None:
                out[layer, head] = metric(model.run_with_hooks(orig_toks, fwd_hooks=hooks))
                continue
            names = {get_act_name(receiver_input, r_layer) for r_layer, _ in receivers}
            with model.hooks(fwd_hooks=hooks):
                _, patched = model.run_with_cache(
                    orig_toks, names_filter=lambda n, names=names: n in names
                )
            out[layer, head] = metric(
                model.run_with_hooks(
                    orig_toks, fwd_hooks=_receiver_hooks(receivers, receiver_input, patched)
                )
            )
    return out


def _receiver_hooks(receivers, receiver_input: str, patched: ActivationCache) -> list:
    def hook_fn(act: Tensor, hook, heads: list[int]) -> Tensor:
        act[:, :, heads] = patched[hook.name][:, :, heads]
        return act

    by_layer: dict[int, list[int]] = {}
    for layer, head in receivers:
        by_layer.setdefault(layer, []).append(head)
    return [
        (get_act_name(receiver_input, layer), functools.partial(hook_fn, heads=heads))
        for layer, heads in by_layer.items()
    ]


# ---- patch_or_freeze_head_vectors -------------------------------------------------------------

FREEZE_HOOK = exercise(
    "patch_or_freeze_head_vectors",
    hint="start from orig_cache[hook.name] (every head frozen at the original run); if "
    "hook.layer() is the sender's layer, copy new_cache[hook.name][:, :, head] into the "
    "sender's head; return the result.",
    diagnoses={
        "did_not_freeze": "the other heads kept their current values; freezing means "
        "overwriting every head with its value in the original run (orig_cache)",
        "ignored_layer": "you patched head `head_to_patch[1]` in a layer that is not the "
        "sender's; patch only when hook.layer() == head_to_patch[0]",
        "did_not_patch": "the sender head was not patched: in its layer it must take its value "
        "from the new run (new_cache)",
    },
)


@one_thread()
def test_patch_or_freeze_head_vectors(patch_or_freeze_head_vectors_fn: Callable) -> None:
    """Check the hook ``patch_or_freeze_head_vectors(orig_head_vector, hook, new_cache, orig_cache, head_to_patch)``."""
    ex, b = FREEZE_HOOK, _batch()
    orig_cache, new_cache = b.clean_cache, b.corrupted_cache
    sender = (1, 2)
    for layer in (1, 2):
        hook = b.model.blocks[layer].attn.hook_z
        orig, new = orig_cache[hook.name], new_cache[hook.name]
        # The activation mid-run differs from both caches (earlier layers were patched).
        current = orig + 0.5 * torch.randn(
            orig.shape, generator=torch.Generator().manual_seed(layer)
        )
        call = (
            f"patch_or_freeze_head_vectors(z, hook (name {hook.name!r}), new_cache, orig_cache, "
            f"head_to_patch={sender})  where z is the current activation, different from both "
            f"caches  [{b.describe()}]"
        )
        given = current.clone()
        returned = ex.call(
            patch_or_freeze_head_vectors_fn,
            given,
            hook,
            fresh_cache(new_cache),
            fresh_cache(orig_cache),
            sender,
            call=call,
        )
        got = given if returned is None else returned
        expected = orig.clone()
        unfrozen = current.clone()
        if layer == sender[0]:
            expected[:, :, sender[1]] = new[:, :, sender[1]]
            unfrozen[:, :, sender[1]] = new[:, :, sender[1]]
            mistakes = {"did_not_freeze": lambda u=unfrozen: u, "did_not_patch": lambda o=orig: o}
        else:
            wrong = orig.clone()
            wrong[:, :, sender[1]] = new[:, :, sender[1]]
            mistakes = {"did_not_freeze": lambda c=current: c, "ignored_layer": lambda w=wrong: w}
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes)
    ex.passed()


# ---- patch_head_input -------------------------------------------------------------------------

INPUT_HOOK = exercise(
    "patch_head_input",
    hint="keep the heads of head_list whose layer is hook.layer(); copy "
    "patched_cache[hook.name][:, :, heads] into orig_activation[:, :, heads] and return it.",
    diagnoses={
        "ignored_layer": "you patched heads of head_list that live in other layers; only the "
        "heads whose layer equals hook.layer() belong to this hook",
        "patched_all_heads": "every head was replaced; patch only the receiver heads",
    },
)


@one_thread()
def test_patch_head_input(patch_head_input_fn: Callable) -> None:
    """Check the hook ``patch_head_input(orig_activation, hook, patched_cache, head_list)``."""
    ex, b = INPUT_HOOK, _batch()
    hook = b.model.blocks[2].attn.hook_v
    head_list = [(2, 1), (2, 3), (1, 0)]
    orig, patched = b.clean_cache[hook.name], b.corrupted_cache[hook.name]
    call = (
        f"patch_head_input(v, hook (name {hook.name!r}), patched_cache, head_list={head_list})"
        f"  [{b.describe()}]"
    )
    given = orig.clone()
    returned = ex.call(
        patch_head_input_fn, given, hook, fresh_cache(b.corrupted_cache), head_list, call=call
    )
    got = given if returned is None else returned

    def with_heads(heads):
        out = orig.clone()
        out[:, :, heads] = patched[:, :, heads]
        return out

    mistakes = {
        "ignored_layer": lambda: with_heads([1, 3, 0]),
        "patched_all_heads": lambda: patched,
    }
    ex.expect_tensor(got, with_heads([1, 3]), call=call, mistakes=mistakes)
    ex.passed()


# ---- get_path_patch_head_to_final_resid_post --------------------------------------------------

TO_LOGITS = exercise(
    "get_path_patch_head_to_final_resid_post",
    hint="cache both runs; for each head: run the orig tokens with patch_or_freeze_head_vectors "
    "on every layer's hook_z (every head frozen at orig, the sender at new; MLPs left to "
    "recompute) and store patching_metric(logits) in a [layer, head] tensor.",
    diagnoses={
        "not_frozen": "this is plain activation patching (noising): without freezing the other "
        "heads, the sender's effect also flows through every later head; path patching keeps "
        "only the direct path (and the MLPs)",
        "froze_mlps": "you froze the MLPs too: they must be recomputed, so the sender's effect "
        "that passes through an MLP on its way to the logits is kept",
        "datasets_swapped": "you ran the new (ABC) prompts and patched in the orig values; run "
        "the orig prompts and patch the sender's new value in",
        "transposed": "the result is [head, layer]; return [layer, head]",
    },
)


def _call_text(name: str, b: IOIBatch, extra: str = "") -> str:
    return (
        f"{name}({extra}model, patching_metric, new_dataset=abc, orig_dataset=ioi, new_cache, "
        f"orig_cache)  where patching_metric is the normalised IOI metric  [{b.describe()}]"
    )


@one_thread()
def test_get_path_patch_head_to_final_resid_post(fn: Callable) -> None:
    """Check ``get_path_patch_head_to_final_resid_post(model, patching_metric, new_dataset, orig_dataset, new_cache, orig_cache)``."""
    ex, b = TO_LOGITS, _batch()
    metric, model = _metric(b), b.model
    call = _call_text("get_path_patch_head_to_final_resid_post", b)
    got = ex.call(
        fn,
        model,
        metric,
        b.abc,
        b.ds,
        fresh_cache(b.corrupted_cache),
        fresh_cache(b.clean_cache),
        call=call,
        model=model,
    )
    expected = path_patching.get_path_patch_head_to_final_resid_post(
        model, metric, b.abc, b.ds, b.corrupted_cache, b.clean_cache
    )
    z_sweep = patching.sweep(model, "z", b.ds.toks.shape[1])
    mistakes = {
        "transposed": lambda: expected.T,
        "not_frozen": lambda: (
            patching.activation_patching(
                model, b.ds.toks, b.abc.toks, metric, z_sweep, mode="noise"
            ).effect
        ),
        "froze_mlps": lambda: naive_path_patch(
            model, metric, b.ds.toks, b.clean_cache, b.corrupted_cache, freeze_mlps=True
        ),
        "datasets_swapped": lambda: naive_path_patch(
            model, metric, b.abc.toks, b.corrupted_cache, b.clean_cache
        ),
    }
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-4, rtol=1e-4)
    ex.passed()


# ---- get_path_patch_head_to_heads -------------------------------------------------------------

TO_HEADS = exercise(
    "get_path_patch_head_to_heads",
    hint="for each sender below the top receiver layer: (1) run the orig tokens with every head "
    "frozen at orig except the sender at new (MLPs recompute) and cache the receivers' "
    "`receiver_input`; (2) run the orig tokens again with the receivers' input replaced by "
    "those values and store the metric. Leave the rows at and above the top receiver layer 0.",
    diagnoses={
        "returned_top_rows_only": "you returned only the rows of senders below the top receiver "
        "layer; return the full [n_layers, n_heads] grid with zeros in the other rows",
        "not_frozen": "in step 1 the other heads were not frozen, so the receivers also saw the "
        "sender's effect through intermediate heads",
        "wrong_receiver_input": "you patched a different input of the receivers than "
        "`receiver_input` asks for",
    },
)


@one_thread()
def test_get_path_patch_head_to_heads(fn: Callable) -> None:
    """Check ``get_path_patch_head_to_heads(receiver_heads, receiver_input, model, patching_metric, new_dataset, orig_dataset, ...)``."""
    ex, b = TO_HEADS, _batch()
    metric, model = _metric(b), b.model
    # Layer 2's values: a sender in layer 0 also reaches them through layer 1, so freezing
    # matters there; layer 1's values are where the toy's layer-0 heads have their effect.
    cases = (([(1, 0), (1, 1), (1, 2), (1, 3)], "v"), ([(2, 0), (2, 1), (2, 2), (2, 3)], "v"))
    for receivers, receiver_input in cases:
        call = _call_text("get_path_patch_head_to_heads", b, f"{receivers}, {receiver_input!r}, ")
        got = ex.call(
            fn,
            receivers,
            receiver_input,
            model,
            metric,
            b.abc,
            b.ds,
            fresh_cache(b.corrupted_cache),
            fresh_cache(b.clean_cache),
            call=call,
            model=model,
        )
        expected = path_patching.get_path_patch_head_to_heads(
            receivers, receiver_input, model, metric, b.abc, b.ds, b.corrupted_cache, b.clean_cache
        )
        top = max(layer for layer, _ in receivers)

        def other_input(r=receivers, inp=receiver_input, got=got):
            shape = tuple(getattr(got, "shape", ()))
            for other in ("q", "k", "v"):
                if other == inp:
                    continue
                value = path_patching.get_path_patch_head_to_heads(
                    r, other, model, metric, b.abc, b.ds, b.corrupted_cache, b.clean_cache
                )
                if value.shape == shape and torch.allclose(
                    got.detach().float().cpu(), value, atol=1e-3
                ):
                    return value
            return None

        mistakes = {
            "returned_top_rows_only": lambda e=expected, t=top: e[:t],
            "not_frozen": lambda r=receivers, inp=receiver_input: naive_path_patch(
                model, metric, b.ds.toks, b.clean_cache, b.corrupted_cache, r, inp, freeze=False
            ),
            "wrong_receiver_input": other_input,
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-4, rtol=1e-4)
    ex.passed()

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
from ioi.checks.core import exercise, one_thread, without_last_layer
from ioi.checks.fixtures import (
    IOIBatch,
    fresh_cache,
    ioi_batch,
    other_ioi_model,
    patched_run_cache,
)
from ioi.checks.other_sizes import (
    describe_other_ioi_model,
    expect_on_other_sizes,
    toy_grid_axes,
)
from ioi.metrics import make_ioi_metric, make_logit_diff_metric


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
        "caches_swapped": "you froze the heads at the new run and patched the sender from the "
        "original one: freeze at orig_cache, patch from new_cache",
        "ignored_head_to_patch": "you patched a fixed sender, not the `head_to_patch` you were "
        "given",
        "layer_and_head_swapped": "you read head_to_patch as (head, layer); it is (layer, head): "
        "`layer, head = head_to_patch`",
        "patched_whole_sender_layer": "every head of the sender's layer took its new value; "
        "only the sender head does (z[:, :, head]), the other heads of its layer stay frozen",
        "indexed_position_axis": "you indexed the position axis ([:, head]); z is [batch, pos, "
        "head, d_head], so the sender head is [:, :, head]",
    },
    shared=("assignment_shapes_differ",),
)


def _frozen(
    base: Tensor, other: Tensor, layer: int, sender: tuple[int, int], axis: int = 2
) -> Tensor:
    """``base`` with the sender's head taken from ``other`` when ``layer`` is its layer
    (``axis``: the axis indexed by the head, 2 in z)."""
    out = base.clone()
    if layer == sender[0]:
        index = (slice(None),) * axis + (sender[1],)
        out[index] = other[index]
    return out


@one_thread()
def test_patch_or_freeze_head_vectors(patch_or_freeze_head_vectors_fn: Callable) -> None:
    """Check the hook ``patch_or_freeze_head_vectors(orig_head_vector, hook, new_cache, orig_cache, head_to_patch)``."""
    ex, b = FREEZE_HOOK, _batch()
    orig_cache, new_cache = b.clean_cache, b.corrupted_cache
    n_layers, n_heads = b.model.cfg.n_layers, b.model.cfg.n_heads
    # (2, 0) at layer 0 first: read as (head, layer) it patches head 2 there, where the sender
    # read right patches nothing (its other cases cannot tell that from did_not_patch).
    cases = [((2, 0), 0), ((1, 3), 1), ((1, 3), 2), ((2, 0), 2), ((0, 1), 0), ((0, 1), 1)]
    for sender, layer in cases:
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
        given_new, given_orig = fresh_cache(new_cache), fresh_cache(orig_cache)
        other_senders = [
            (lay, h) for lay in range(n_layers) for h in range(n_heads) if (lay, h) != sender
        ]
        mistakes = {
            "did_not_freeze": lambda c=current, n=new, lay=layer, s=sender: _frozen(c, n, lay, s),
            "ignored_layer": lambda o=orig, n=new, s=sender: _frozen(o, n, s[0], s),
            # The sender left at the value it came with is as unpatched as left at orig.
            "did_not_patch": lambda o=orig, c=current, lay=layer, s=sender: [
                o,
                _frozen(o, c, lay, s),
            ],
            "caches_swapped": lambda o=orig, n=new, lay=layer, s=sender: _frozen(n, o, lay, s),
            # Before ignored_head_to_patch: (head, layer) is one particular other sender.
            "layer_and_head_swapped": lambda o=orig, n=new, lay=layer, s=sender: _frozen(
                o, n, lay, (s[1], s[0])
            ),
            "ignored_head_to_patch": lambda o=orig, n=new, lay=layer, others=other_senders: [
                _frozen(o, n, lay, other) for other in others if other[0] == lay
            ],
            "patched_whole_sender_layer": lambda o=orig, n=new, lay=layer, s=sender: (
                n if lay == s[0] else None
            ),
            "indexed_position_axis": lambda o=orig, n=new, lay=layer, s=sender: (
                _frozen(o, n, lay, s, axis=1) if lay == s[0] else None
            ),
        }
        ex.expect_hook(
            patch_or_freeze_head_vectors_fn,
            current,
            hook,
            given_new,
            given_orig,
            sender,
            call=call,
            expected=_frozen(orig, new, layer, sender),
            mistakes=mistakes,
            read_only={"new_cache": given_new, "orig_cache": given_orig},
            # Outside the sender's layer the activation left as it came is did_not_freeze (a
            # hook that only acts in the sender's layer), not a hook that never fires.
            unchanged=layer == sender[0],
        )
    ex.passed(f"{len(cases)} (sender, layer) pairs")


# ---- patch_head_input -------------------------------------------------------------------------

INPUT_HOOK = exercise(
    "patch_head_input",
    hint="keep the heads of head_list whose layer is hook.layer(); copy "
    "patched_cache[hook.name][:, :, heads] into orig_activation[:, :, heads] and return it.",
    diagnoses={
        "ignored_layer": "you patched heads of head_list that live in other layers; only the "
        "heads whose layer equals hook.layer() belong to this hook",
        "patched_all_heads": "every head was replaced; patch only the receiver heads",
        "one_receiver_only": "only one of this layer's receivers was patched; patch every head "
        "of head_list whose layer is hook.layer() (index with the list of them)",
        "layer_as_head_index": "you patched head number `layer` (the first item of each pair); "
        "each pair is (layer, head): the head index is the second item",
        "indexed_position_axis": "you indexed the position axis ([:, heads]); q, k and v are "
        "[batch, pos, head, d_head], so the heads are [:, :, heads]",
        "inverted_patch": "the receivers kept their orig values and every other head took the "
        "patched one: start from the orig activation the hook was given and copy "
        "patched_cache's receiver heads into it",
        "added_not_replaced": "you added the patched values to the orig ones (+=); patching "
        "replaces the receivers' values by the patched ones (=)",
        "mean_over_prompts": "you wrote the patched values' mean over prompts into every "
        "prompt; each prompt takes its own patched values (no .mean(0))",
        "ignored_hook_name": "you read a fixed hook point of patched_cache; read "
        "patched_cache[hook.name], the input this hook is attached to (q, k or v)",
    },
    shared=("assignment_shapes_differ",),
)


@one_thread()
def test_patch_head_input(patch_head_input_fn: Callable) -> None:
    """Check the hook ``patch_head_input(orig_activation, hook, patched_cache, head_list)``."""
    ex, b = INPUT_HOOK, _batch()
    head_list = [(2, 1), (2, 3), (1, 0)]
    for name in ("blocks.2.attn.hook_v", "blocks.1.attn.hook_q"):
        hook = b.model.hook_dict[name]
        orig, patched = b.clean_cache[name], b.corrupted_cache[name]
        call = (
            f"patch_head_input({name.split('_')[-1]}, hook (name {name!r}), patched_cache, "
            f"head_list={head_list})  [{b.describe()}]"
        )

        def with_heads(heads, source=patched, base=orig, axis=2):
            out = base.clone()
            index = (slice(None),) * axis + (heads,)
            out[index] = source[index]
            return out

        layer = hook.layer()
        mine = [h for lay, h in head_list if lay == layer]
        # The layer's other inputs, which a hook reading a fixed name would patch from.
        others = [get_act_name(point, layer) for point in "qkv" if point != name[-1]]
        given = fresh_cache(b.corrupted_cache)
        ex.expect_hook(
            patch_head_input_fn,
            orig,
            hook,
            given,
            head_list,
            call=call,
            expected=with_heads(mine),
            mistakes={
                "ignored_layer": lambda w=with_heads: w([h for _, h in head_list]),
                "patched_all_heads": lambda p=patched: p,
                "one_receiver_only": lambda w=with_heads, m=mine: (
                    [w([h]) for h in m] if len(m) > 1 else None
                ),
                "layer_as_head_index": lambda w=with_heads, lay=layer: w([lay]),
                "indexed_position_axis": lambda w=with_heads, m=mine: w(m, axis=1),
                "inverted_patch": lambda w=with_heads, m=mine, o=orig, p=patched: w(m, o, p),
                "added_not_replaced": lambda w=with_heads, m=mine, o=orig, p=patched: w(m, o + p),
                "mean_over_prompts": lambda w=with_heads, m=mine, p=patched: w(
                    m, p.mean(0, keepdim=True).expand_as(p)
                ),
                "ignored_hook_name": lambda w=with_heads, m=mine, o=others: [
                    w(m, b.corrupted_cache[other]) for other in o
                ],
            },
            read_only={"patched_cache": given},
        )
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
        "patched_whole_sender_layer": "every head of a layer gives the same value: you patched "
        "the sender's whole layer (z[...] = new) instead of the sender head alone "
        "(z[:, :, head])",
        "caches_from_one_run": "with no caches given, you built both caches from the same run "
        "(a typo such as run_with_cache(new_dataset.toks) for orig_cache): orig_cache comes "
        "from orig_dataset, new_cache from new_dataset",
    },
    shared=("missed_last_layer", "ignored_given_cache", "hard_coded_size"),
)


@torch.inference_mode()
def _whole_layer_patched(model, metric, orig_toks, orig_cache, new_cache) -> Tensor:
    """Every head frozen at orig except one whole layer at new, per layer (expanded over heads)."""
    out = []
    for sender_layer in range(model.cfg.n_layers):

        def hook_fn(z: Tensor, hook, layer: int, sender_layer=sender_layer) -> Tensor:
            return (new_cache if layer == sender_layer else orig_cache)[hook.name].clone()

        hooks = [
            (get_act_name("z", layer), functools.partial(hook_fn, layer=layer))
            for layer in range(model.cfg.n_layers)
        ]
        out.append(float(metric(model.run_with_hooks(orig_toks, fwd_hooks=hooks))))
    return torch.tensor(out)[:, None].expand(-1, model.cfg.n_heads)


CACHE_ARGS = {
    "plain": "new_cache, orig_cache",
    "none": "new_cache=None, orig_cache=None",
    "patched": "new_cache=<cache of a patched ABC run: layer 0's z from the IOI run>, orig_cache",
}


def _call_text(name: str, b: IOIBatch, extra: str = "", caches: str = "plain") -> str:
    return (
        f"{name}({extra}model, patching_metric, new_dataset=abc, orig_dataset=ioi, "
        f"{CACHE_ARGS[caches]})  where patching_metric is the normalised IOI metric  "
        f"[{b.describe()}]"
    )


def _cache_args(b: IOIBatch, caches: str) -> tuple[tuple, dict]:
    """The (new_cache, orig_cache) arguments (fresh copies, or None) and their read-only map.

    ``caches``: "plain" (both runs' caches), "none", or "patched" (new_cache from a patched run:
    a function that ignores the given cache and re-runs the model then gives the plain answer).
    """
    if caches == "none":
        return (None, None), {}
    new_run = patched_run_cache(b, "corrupted") if caches == "patched" else b.corrupted_cache
    new, orig = fresh_cache(new_run), fresh_cache(b.clean_cache)
    return (new, orig), {"new_cache": new, "orig_cache": orig}


@one_thread()
def test_get_path_patch_head_to_final_resid_post(fn: Callable) -> None:
    """Check ``get_path_patch_head_to_final_resid_post(model, patching_metric, new_dataset, orig_dataset, new_cache, orig_cache)``."""
    ex, b = TO_LOGITS, _batch()
    metric, model = _metric(b), b.model
    expected = path_patching.get_path_patch_head_to_final_resid_post(
        model, metric, b.abc, b.ds, b.corrupted_cache, b.clean_cache
    )
    z_sweep = patching.sweep(model, "z", b.ds.toks.shape[1])
    mistakes = {
        "transposed": lambda: expected.T,
        "missed_last_layer": lambda: without_last_layer(expected),
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
        "patched_whole_sender_layer": lambda: _whole_layer_patched(
            model, metric, b.ds.toks, b.clean_cache, b.corrupted_cache
        ),
        "caches_from_one_run": lambda: [
            naive_path_patch(model, metric, b.ds.toks, b.corrupted_cache, b.corrupted_cache),
            naive_path_patch(model, metric, b.ds.toks, b.clean_cache, b.clean_cache),
        ],
    }
    for given in ("plain", "none", "patched"):
        call = _call_text("get_path_patch_head_to_final_resid_post", b, caches=given)
        caches, read_only = _cache_args(b, given)
        got = ex.call(
            fn, model, metric, b.abc, b.ds, *caches, call=call, model=model, read_only=read_only
        )
        want, known = expected, mistakes
        if given == "patched":
            want = path_patching.get_path_patch_head_to_final_resid_post(
                model, metric, b.abc, b.ds, caches[0], b.clean_cache
            )
            known = {"ignored_given_cache": lambda: expected}
        ex.expect_tensor(got, want, call=call, mistakes=known, atol=1e-4, rtol=1e-4, unchanged=1.0)
    model, metric, baseline, setting = _other_sizes(b)
    call = (
        "get_path_patch_head_to_final_resid_post(model, patching_metric, new_dataset=abc, "
        f"orig_dataset=ioi, new_cache=None, orig_cache=None)  {setting}"
    )
    with torch.inference_mode():
        expected = path_patching.get_path_patch_head_to_final_resid_post(model, metric, b.abc, b.ds)
    expect_on_other_sizes(
        ex,
        fn,
        model,
        metric,
        b.abc,
        b.ds,
        None,
        None,
        call=call,
        model=model,
        expected=expected,
        axes=toy_grid_axes(),
        atol=1e-4,
        rtol=1e-4,
        unchanged=baseline,
    )
    ex.passed("on the toy and on a random model of other sizes")


# ---- get_path_patch_head_to_heads -------------------------------------------------------------

UNREACHABLE = (
    "rows of senders at or above the highest receiver layer must be NaN: nothing there can "
    "reach the receivers, and 0.0 would read as a measured value (for the normalised metric a "
    "very large one: no effect is 1.0)"
)

TO_HEADS_DIAGNOSES = {
    "returned_top_rows_only": "you returned only the rows of senders below the top receiver "
    "layer; return the full [n_layers, n_heads] grid with NaN in the other rows",
    "unreachable_rows_zero": "the reachable rows are right, but the unreachable ones are 0: "
    + UNREACHABLE,
    "not_frozen": "in the first patched run the other heads were not frozen, so the receivers "
    "also saw the sender's effect through intermediate heads",
    "kept_freeze_hooks": "the result equals the sender -> logits grid: in the last run (step 3) "
    "the freezing hooks were still on, so every head sat frozen and the receivers' patched "
    "inputs changed nothing. Step 3 runs the orig prompts with *only* the receivers' inputs "
    "patched",
    "patched_whole_layer": "in step 3 you patched every head of the receivers' layers, not only "
    "the receivers",
    "wrong_top_layer": "rows below the highest receiver layer are missing: the senders are every "
    "head below the *highest* receiver layer (max, not min)",
    "measured_unreachable_rows": "the rows of senders in the highest receiver layer (or above) "
    "hold a measured value, not NaN: a head there runs after the receivers' inputs are "
    "computed, so it cannot reach them; loop the senders over range(top) only, with NaN "
    "above",
}


def _with_unreachable(grid: Tensor, top: int, fill: float = float("nan")) -> Tensor:
    out = grid.clone().float().cpu()
    out[top:] = fill
    return out


TO_HEADS = exercise(
    "get_path_patch_head_to_heads",
    hint="for each sender below the top receiver layer: (1) run the orig tokens with every head "
    "frozen at orig except the sender at new (MLPs recompute) and cache the receivers' "
    "`receiver_input`; (2) run the orig tokens again with only the receivers' input replaced by "
    "those values and store the metric. Rows at and above the top receiver layer are NaN.",
    diagnoses={
        **TO_HEADS_DIAGNOSES,
        "wrong_receiver_input": "you patched a different input of the receivers than "
        "`receiver_input` asks for",
        "froze_mlps": "in the first patched run you froze the MLPs too: they must be "
        "recomputed, so the sender's effect that reaches the receivers through an MLP is kept",
        "datasets_swapped": "you ran the new (ABC) prompts and patched in the orig values; run "
        "the orig prompts, with the sender's new value patched in",
    },
    shared=("ignored_given_cache", "hard_coded_size"),
    no_effect_text="every entry equals the unpatched orig run (1.0): the receivers' inputs "
    "were replaced by values no different from the orig run's. Record them while the "
    "freezing hooks are on (run_with_cache *inside* `with model.hooks(...)`), record and "
    "patch the receivers' `receiver_input` (their z is frozen like every other head's), and "
    "build orig_cache and new_cache from different prompts",
)


def _library_grid(
    b: IOIBatch, metric, receivers, receiver_input: str, new_cache=None, **positions
) -> Tensor:
    """The library's head -> heads grid on the checkers' batch, unreachable rows NaN.

    ``new_cache``: the new run's cache (default: the plain ABC run's).
    """
    grid = path_patching.get_path_patch_head_to_heads(
        receivers,
        receiver_input,
        b.model,
        metric,
        b.abc,
        b.ds,
        b.corrupted_cache if new_cache is None else new_cache,
        b.clean_cache,
        **positions,
    )
    return _with_unreachable(grid, max(layer for layer, _ in receivers))


def _to_heads_mistakes(b, metric, receivers, receiver_input, expected, top, **positions):
    """Mistakes shared by the two head -> heads exercises (``positions``: the library's)."""
    model = b.model
    low = min(layer for layer, _ in receivers)
    layers = sorted({layer for layer, _ in receivers})
    whole = [(lay, h) for lay in layers for h in range(model.cfg.n_heads)]

    def library(r=receivers, inp=receiver_input, **changes):
        return _library_grid(b, metric, r, inp, **{**positions, **changes})

    return {
        "returned_top_rows_only": lambda: expected[:top],
        "unreachable_rows_zero": lambda: _with_unreachable(expected, top, 0.0),
        "measured_unreachable_rows": lambda: [
            torch.cat([expected[:top], torch.ones_like(expected[top:])]),
            torch.cat(
                [expected[:top], torch.ones_like(expected[top : top + 1]), expected[top + 1 :]]
            ),
            torch.cat(
                [
                    expected[:top],
                    torch.ones_like(expected[top : top + 1]),
                    torch.zeros_like(expected[top + 1 :]),
                ]
            ),
        ],
        "wrong_top_layer": lambda: [
            _with_unreachable(expected, low),
            _with_unreachable(expected, low, 0.0),
        ],
        "kept_freeze_hooks": lambda: _with_unreachable(
            path_patching.get_path_patch_head_to_final_resid_post(
                model,
                metric,
                b.abc,
                b.ds,
                b.corrupted_cache,
                b.clean_cache,
                sender_positions=positions.get("sender_positions"),
            ),
            top,
        ),
        "patched_whole_layer": lambda: library(r=whole),
        "not_frozen": lambda: (
            None
            if positions
            else _with_unreachable(
                naive_path_patch(
                    model,
                    metric,
                    b.ds.toks,
                    b.clean_cache,
                    b.corrupted_cache,
                    receivers,
                    receiver_input,
                    freeze=False,
                ),
                top,
            )
        ),
        "wrong_receiver_input": lambda: [
            library(inp=other) for other in ("q", "k", "v") if other != receiver_input
        ],
    }


@one_thread()
def test_get_path_patch_head_to_heads(fn: Callable) -> None:
    """Check ``get_path_patch_head_to_heads(receiver_heads, receiver_input, model, patching_metric, new_dataset, orig_dataset, ...)``."""
    ex, b = TO_HEADS, _batch()
    metric, model = _metric(b), b.model
    # Layer 2's values: a sender in layer 0 also reaches them through layer 1, so freezing
    # matters there; layer 1's values are where the toy's layer-0 heads have their effect;
    # receivers in two layers tell the highest layer from the lowest.
    # The last case's new_cache comes from a patched run: it must be read, not re-computed.
    cases = (
        ([(2, 0), (2, 1), (2, 2), (2, 3)], "v", "plain"),
        ([(1, 0), (1, 1), (1, 2), (1, 3)], "v", "none"),
        ([(1, 2), (2, 1)], "k", "plain"),
        ([(2, 0), (2, 1), (2, 2), (2, 3)], "v", "patched"),
    )
    for receivers, receiver_input, given in cases:
        call = _call_text(
            "get_path_patch_head_to_heads", b, f"{receivers}, {receiver_input!r}, ", given
        )
        caches, read_only = _cache_args(b, given)
        got = ex.call(
            fn,
            receivers,
            receiver_input,
            model,
            metric,
            b.abc,
            b.ds,
            *caches,
            call=call,
            model=model,
            read_only=read_only,
        )
        top = max(layer for layer, _ in receivers)
        expected = _library_grid(b, metric, receivers, receiver_input)
        mistakes = _to_heads_mistakes(b, metric, receivers, receiver_input, expected, top)

        def naive(toks, orig, new, r=receivers, inp=receiver_input, top=top, **switches):
            grid = naive_path_patch(model, metric, toks, orig, new, r, inp, **switches)
            return _with_unreachable(grid, top)

        mistakes |= {
            "froze_mlps": lambda n=naive: n(
                b.ds.toks, b.clean_cache, b.corrupted_cache, freeze_mlps=True
            ),
            "datasets_swapped": lambda n=naive: n(b.abc.toks, b.corrupted_cache, b.clean_cache),
        }
        if given == "patched":
            mistakes = {"ignored_given_cache": lambda e=expected: e}
            expected = _library_grid(b, metric, receivers, receiver_input, new_cache=caches[0])
        ex.expect_tensor(
            got, expected, call=call, mistakes=mistakes, atol=1e-4, rtol=1e-4, unchanged=1.0
        )
    _to_heads_on_other_sizes(ex, fn, b, "get_path_patch_head_to_heads")
    ex.passed(UNREACHABLE.split(":")[0] + "; on the toy and on a random model of other sizes")


def _other_sizes(b: IOIBatch) -> tuple[HookedTransformer, Callable, float, str]:
    """`other_ioi_model`, the plain logit difference metric on ``b``'s prompts, its value on
    the unpatched run, and the setting for messages."""
    model = other_ioi_model()
    metric = make_logit_diff_metric(b.answer_tokens, b.end)
    with torch.inference_mode():
        baseline = float(metric(model(b.ds.toks)))
    setting = (
        f"where patching_metric is the mean logit difference at end  [{describe_other_ioi_model()}]"
    )
    return model, metric, baseline, setting


def _to_heads_on_other_sizes(
    ex, fn: Callable, b: IOIBatch, name: str, positions: dict[str, str | None] | None = None
) -> None:
    """The same prompts through a random model of more layers and heads (`other_ioi_model`),
    the metric the plain logit difference: sizes written as the toy's are ``hard_coded_size``.

    ``positions``: the sender and receiver word_idx keys, for `path_patch_head_to_heads_at`
    (passed after the datasets); else the caches are passed as None.
    """
    model, metric, baseline, setting = _other_sizes(b)
    receivers, top = [(3, 0), (3, 4), (2, 4)], 3
    if positions is None:
        extra, shown, where = (None, None), "new_cache=None, orig_cache=None", {}
    else:
        extra = (positions["sender_positions"], positions["receiver_positions"])
        shown = f"sender_position={extra[0]!r}, receiver_position={extra[1]!r}"
        where = positions
    call = (
        f"{name}({receivers}, 'v', model, patching_metric, new_dataset=abc, orig_dataset=ioi, "
        f"{shown})  {setting}"
    )
    with torch.inference_mode():
        grid = path_patching.get_path_patch_head_to_heads(
            receivers, "v", model, metric, b.abc, b.ds, **where
        )
    expect_on_other_sizes(
        ex,
        fn,
        receivers,
        "v",
        model,
        metric,
        b.abc,
        b.ds,
        *extra,
        call=call,
        model=model,
        expected=_with_unreachable(grid, top),
        axes=toy_grid_axes(),
        atol=1e-4,
        rtol=1e-4,
        unchanged=baseline,
    )


# ---- path patching at positions ---------------------------------------------------------------

AT_POSITIONS = exercise(
    "path_patch_head_to_heads_at",
    hint="the same two runs as get_path_patch_head_to_heads, with two masks: the sender takes "
    "its new value only at word_idx[sender_position][i] of each prompt i, and the receivers' "
    "input is replaced only at word_idx[receiver_position][i] (None: every position).",
    diagnoses={
        **{k: v for k, v in TO_HEADS_DIAGNOSES.items() if k != "not_frozen"},
        "wrong_receiver_input": "you patched a different input of the receivers than "
        "`receiver_input` asks for",
        "sender_positions_ignored": "the sender was patched at every position; patch it only "
        "at word_idx[sender_position]",
        "receiver_positions_ignored": "the receivers' input was replaced at every position; "
        "replace it only at word_idx[receiver_position]",
        "position_off_by_one": "the sender or the receivers were patched one position away "
        "from the word (word_idx[key] - 1 or + 1): word_idx[key][i] already is prompt i's "
        "position of the word, use it as it is",
    },
    shared=("same_position_for_all_prompts", "hard_coded_size"),
    no_effect_text="every value equals the run without any patch (the metric is 1 "
    "everywhere). In this check the toy's receivers read nothing from the position one "
    "*after* the word (S2 + 1, end + 1), so positions read one late (word_idx[key] + 1) look "
    "exactly like a patch that never happens: check first that the masks use word_idx[key] "
    "as it is. Otherwise a "
    "hook never fired (hook names from get_act_name(receiver_input, layer)), a hook patched "
    "a copy and returned the original, or the values were taken from orig_dataset's own run "
    "instead of new_dataset's",
)


@one_thread()
def test_path_patch_head_to_heads_at(fn: Callable) -> None:
    """Check ``path_patch_head_to_heads_at(receiver_heads, receiver_input, model, patching_metric, new_dataset, orig_dataset, sender_position, receiver_position)``."""
    ex, b = AT_POSITIONS, _batch()
    metric, model = _metric(b), b.model
    # On the toy the layer-0 heads' effect travels through the receivers' values at S2, so
    # these cases tell each position mistake from the right answer by a clear margin.
    layer1 = [(1, 0), (1, 1), (1, 2), (1, 3)]
    # Cases whose right answer is close to "no effect" (senders at end, receivers at end)
    # come last: there they tell only the position mistakes from the right answer.
    cases = (
        ([(1, 1), (2, 2)], "v", None, "S2"),
        (layer1, "v", "S2", "S2"),
        (layer1, "k", None, "S2"),
        (layer1, "v", "end", None),
        (layer1, "v", "S2", "end"),
        # Sender and receivers at different words: nothing reaches the receivers. An answer
        # that drops the sender's position whenever the receivers have one fails only here.
        (layer1, "v", "end", "S2"),
    )
    for receivers, receiver_input, sender_key, receiver_key in cases:
        call = (
            f"path_patch_head_to_heads_at({receivers}, {receiver_input!r}, model, "
            f"patching_metric, new_dataset=abc, orig_dataset=ioi, sender_position="
            f"{sender_key!r}, receiver_position={receiver_key!r})  [{b.describe()}]"
        )
        got = ex.call(
            fn,
            receivers,
            receiver_input,
            model,
            metric,
            b.abc,
            b.ds,
            sender_key,
            receiver_key,
            call=call,
            model=model,
            read_only={"orig_dataset": b.ds, "new_dataset": b.abc},
        )
        top = max(layer for layer, _ in receivers)
        where = {"sender_positions": sender_key, "receiver_positions": receiver_key}

        def library(r=receivers, inp=receiver_input, where=where, **changes):
            return _library_grid(b, metric, r, inp, **{**where, **changes})

        def first_prompts(key):
            return None if key is None else b.ds.word_idx[key][:1].expand(b.ds.N).clone()

        def shifted(key, by, last=b.ds.toks.shape[1] - 1):
            return None if key is None else (b.ds.word_idx[key] + by).clamp(0, last)

        expected = library()
        shared = _to_heads_mistakes(b, metric, receivers, receiver_input, expected, top, **where)
        mistakes = {
            **{k: v for k, v in shared.items() if k in ex.diagnoses},
            "sender_positions_ignored": lambda lib=library: lib(sender_positions=None),
            "receiver_positions_ignored": lambda lib=library, k=receiver_key: (
                None if k is None else lib(receiver_positions=None)
            ),
            "same_position_for_all_prompts": lambda lib=library, s=sender_key, r=receiver_key: [
                lib(sender_positions=first_prompts(s)),
                lib(sender_positions=first_prompts(s), receiver_positions=first_prompts(r)),
            ],
            "position_off_by_one": lambda lib=library, s=sender_key, r=receiver_key: [
                lib(sender_positions=shifted(s, ks), receiver_positions=shifted(r, kr))
                for ks, kr in ((-1, -1), (-1, 0), (0, -1), (1, 1), (1, 0), (0, 1))
                if (ks == 0 or s is not None) and (kr == 0 or r is not None)
            ],
        }
        ex.expect_tensor(
            got, expected, call=call, mistakes=mistakes, atol=1e-4, rtol=1e-4, unchanged=1.0
        )
    where = {"sender_positions": None, "receiver_positions": "end"}
    _to_heads_on_other_sizes(ex, fn, b, "path_patch_head_to_heads_at", where)
    ex.passed("on the toy and on a random model of other sizes")

"""Section 4 answers: the freezing hook, the receivers' hook, head -> logits, head -> heads."""

from __future__ import annotations

from functools import partial

import torch
from transformer_lens.utilities import get_act_name

from tests.checks.corpus import correct, variant, wrong

# ---- patch_or_freeze_head_vectors --------------------------------------------------------------


@wrong("patch_or_freeze_head_vectors", "mutated_input")
def freeze_into_orig_cache(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """Patches the sender into orig_cache's own tensor and returns it."""
    frozen = orig_cache[hook.name]
    if hook.layer() == head_to_patch[0]:
        frozen[:, :, head_to_patch[1]] = new_cache[hook.name][:, :, head_to_patch[1]]
    return frozen


@wrong("patch_or_freeze_head_vectors", "did_not_freeze")
def freeze_forgot(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """Only patches the sender."""
    if hook.layer() == head_to_patch[0]:
        orig_head_vector[:, :, head_to_patch[1]] = new_cache[hook.name][:, :, head_to_patch[1]]
    return orig_head_vector


@wrong("patch_or_freeze_head_vectors", "ignored_layer")
def freeze_every_layer(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """Patches head head_to_patch[1] in every layer."""
    out = orig_cache[hook.name].clone()
    out[:, :, head_to_patch[1]] = new_cache[hook.name][:, :, head_to_patch[1]]
    return out


@wrong("patch_or_freeze_head_vectors", "caches_swapped")
def freeze_at_new(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """Freezes at new, patches the sender from orig."""
    out = new_cache[hook.name].clone()
    if hook.layer() == head_to_patch[0]:
        out[:, :, head_to_patch[1]] = orig_cache[hook.name][:, :, head_to_patch[1]]
    return out


@wrong("patch_or_freeze_head_vectors", "ignored_head_to_patch")
def freeze_fixed_sender(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """The sender hard-coded to 1.2 (the head the old checker used)."""
    out = orig_cache[hook.name].clone()
    if hook.layer() == 1:
        out[:, :, 2] = new_cache[hook.name][:, :, 2]
    return out


@wrong("patch_or_freeze_head_vectors", "did_not_patch")
def freeze_only(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """Freezes, never patches."""
    return orig_cache[hook.name].clone()


@correct("patch_or_freeze_head_vectors", "torch.where over a head mask")
def freeze_where(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    n_heads = orig_head_vector.shape[2]
    is_sender = torch.zeros(n_heads, dtype=torch.bool)
    if hook.layer() == head_to_patch[0]:
        is_sender[head_to_patch[1]] = True
    return torch.where(is_sender[:, None], new_cache[hook.name], orig_cache[hook.name])


@correct("patch_or_freeze_head_vectors", "in place into the activation, returning None")
def freeze_in_place(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    orig_head_vector.copy_(orig_cache[hook.name])
    if hook.layer() == head_to_patch[0]:
        orig_head_vector[:, :, head_to_patch[1]] = new_cache[hook.name][:, :, head_to_patch[1]]


# ---- patch_head_input --------------------------------------------------------------------------


@wrong("patch_head_input", "ignored_layer")
def input_all_layers(orig_activation, hook, patched_cache, head_list):
    """Patches every listed head index, whatever its layer."""
    heads = [h for _, h in head_list]
    orig_activation[:, :, heads] = patched_cache[hook.name][:, :, heads]
    return orig_activation


@wrong("patch_head_input", "patched_all_heads")
def input_whole_layer(orig_activation, hook, patched_cache, head_list):
    """The whole layer."""
    return patched_cache[hook.name].clone()


@wrong("patch_head_input", "no_effect")
def input_patched_a_copy(orig_activation, hook, patched_cache, head_list):
    """Patches a clone, returns the input."""
    heads = [h for layer, h in head_list if layer == hook.layer()]
    copy = orig_activation.clone()
    copy[:, :, heads] = patched_cache[hook.name][:, :, heads]
    return orig_activation


@wrong("patch_head_input", "mutated_input")
def input_into_patched_cache(orig_activation, hook, patched_cache, head_list):
    """Writes the other heads into patched_cache's tensor."""
    keep = [h for layer, h in head_list if layer == hook.layer()]
    out = patched_cache[hook.name]
    others = [h for h in range(out.shape[2]) if h not in keep]
    out[:, :, others] = orig_activation[:, :, others]
    return out


@correct("patch_head_input", "one head at a time")
def input_loop(orig_activation, hook, patched_cache, head_list):
    for layer, head in head_list:
        if layer == hook.layer():
            orig_activation[:, :, head] = patched_cache[hook.name][:, :, head]
    return orig_activation


# ---- get_path_patch_head_to_final_resid_post ---------------------------------------------------


def _freeze(z, hook, new_cache, orig_cache, sender, *, freeze=True, into_cache=False):
    if into_cache:
        out = orig_cache[hook.name]
    elif freeze:
        out = orig_cache[hook.name].clone()
    else:
        out = z
    if hook.layer() == sender[0]:
        out[:, :, sender[1]] = new_cache[hook.name][:, :, sender[1]]
    return out


def _frozen_at(cache):
    """A hook that replaces an activation by its value in ``cache``."""

    def hook(act, hook):
        return cache[hook.name].clone()

    return hook


def _is_z(name):
    return name.endswith("hook_z")


def _caches(model, new_dataset, orig_dataset, new_cache, orig_cache):
    if new_cache is None:
        _, new_cache = model.run_with_cache(new_dataset.toks)
    if orig_cache is None:
        _, orig_cache = model.run_with_cache(orig_dataset.toks)
    return new_cache, orig_cache


def _to_logits(
    model,
    metric,
    new_dataset,
    orig_dataset,
    new_cache,
    orig_cache,
    *,
    layers=None,
    swap=False,
    z_filter=_is_z,
    freeze_mlps=False,
    toy_sizes=False,
    **how,
):
    new_cache, orig_cache = _caches(model, new_dataset, orig_dataset, new_cache, orig_cache)
    toks = orig_dataset.toks
    if swap:
        new_cache, orig_cache, toks = orig_cache, new_cache, new_dataset.toks
    n_layers, n_heads = (3, 4) if toy_sizes else (model.cfg.n_layers, model.cfg.n_heads)
    out = torch.zeros(n_layers, n_heads)
    with torch.no_grad():
        for layer in range(n_layers)[:layers]:
            for head in range(n_heads):
                hook = partial(
                    _freeze, new_cache=new_cache, orig_cache=orig_cache, sender=(layer, head), **how
                )
                hooks = [(z_filter, hook)]
                if freeze_mlps:
                    hooks.append(
                        (lambda n: n.endswith("mlp_out"), lambda a, hook: orig_cache[hook.name])
                    )
                out[layer, head] = metric(model.run_with_hooks(toks, fwd_hooks=hooks))
    return out


variant(
    "get_path_patch_head_to_final_resid_post",
    "not_frozen",
    _to_logits,
    "Activation patching: the other heads are not frozen.",
    fn_name="to_logits_no_freeze",
    freeze=False,
)


variant(
    "get_path_patch_head_to_final_resid_post",
    "mutated_input",
    _to_logits,
    "The freezing hook patches the sender into orig_cache's own tensors.",
    fn_name="to_logits_freeze_into_cache",
    into_cache=True,
)


variant(
    "get_path_patch_head_to_final_resid_post",
    "no_effect",
    _to_logits,
    "Filter on 'hook_result': the hooks never fire, every run is the orig run.",
    fn_name="to_logits_filter_never_matches",
    z_filter=lambda name: name.endswith("hook_result"),
)


variant(
    "get_path_patch_head_to_final_resid_post",
    "datasets_swapped",
    _to_logits,
    "Runs the new prompts, patches orig in.",
    fn_name="to_logits_swapped",
    swap=True,
)


variant(
    "get_path_patch_head_to_final_resid_post",
    "hard_coded_size",
    _to_logits,
    "The toy's 3 layers x 4 heads written in (torch.zeros(3, 4), range(3), range(4)).",
    fn_name="to_logits_toy_sizes",
    toy_sizes=True,
)


@wrong("get_path_patch_head_to_final_resid_post", "transposed")
def to_logits_transposed(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    """[head, layer]."""
    return _to_logits(model, patching_metric, new_dataset, orig_dataset, new_cache, orig_cache).T


variant(
    "get_path_patch_head_to_final_resid_post",
    "froze_mlps",
    _to_logits,
    "Freezes the MLPs too.",
    fn_name="to_logits_freezes_mlps",
    freeze_mlps=True,
)


variant(
    "get_path_patch_head_to_final_resid_post",
    "missed_last_layer",
    _to_logits,
    "range(n_layers - 1).",
    fn_name="to_logits_range_minus_one",
    layers=-1,
)


@wrong("get_path_patch_head_to_final_resid_post", "no_effect")
def to_logits_caches_required(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    """Uses the caches when given; when None, caches the *orig* run for both (nothing changes)."""
    if new_cache is None:
        _, new_cache = model.run_with_cache(orig_dataset.toks)
    return _to_logits(model, patching_metric, new_dataset, orig_dataset, new_cache, orig_cache)


@wrong("get_path_patch_head_to_final_resid_post", "ignored_given_cache")
def to_logits_plain(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    """The library's plain reference, which runs both prompts itself: given caches are ignored."""
    from ioi.path_patching import plain_path_patch_head_to_final_resid_post

    return plain_path_patch_head_to_final_resid_post(
        model, patching_metric, new_dataset, orig_dataset
    )


@correct("get_path_patch_head_to_final_resid_post", "one hook per layer, caches of z only")
def to_logits_per_layer_hooks(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    new, orig = new_cache, orig_cache
    with torch.no_grad():
        if new is None:
            _, new = model.run_with_cache(new_dataset.toks, names_filter=names)
        if orig is None:
            _, orig = model.run_with_cache(orig_dataset.toks, names_filter=names)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            hooks = [
                (name, partial(_freeze, new_cache=new, orig_cache=orig, sender=(layer, head)))
                for name in names
            ]
            with torch.no_grad():
                out[layer, head] = patching_metric(
                    model.run_with_hooks(orig_dataset.toks, fwd_hooks=hooks)
                )
    return out


# ---- get_path_patch_head_to_heads --------------------------------------------------------------


def _to_heads(
    receiver_heads,
    receiver_input,
    model,
    metric,
    new_dataset,
    orig_dataset,
    new_cache,
    orig_cache,
    *,
    fill=float("nan"),
    keep_freeze=False,
    freeze=True,
    whole_layer=False,
    top=None,
    rows_only=False,
    freeze_mlps=False,
    swap_datasets=False,
    record_unhooked=False,
    receiver_point=None,
    rows=None,
    width=None,
    loop_heads=None,
):
    new_cache, orig_cache = _caches(model, new_dataset, orig_dataset, new_cache, orig_cache)
    if swap_datasets:  # runs the new prompts with the orig values patched in
        new_cache, orig_cache = orig_cache, new_cache
        orig_dataset = new_dataset
    names = {get_act_name(receiver_point or receiver_input, layer) for layer, _ in receiver_heads}
    mlp_names = {get_act_name("mlp_out", layer) for layer in range(model.cfg.n_layers)}
    top = max(layer for layer, _ in receiver_heads) if top is None else top
    out = torch.full((rows or model.cfg.n_layers, width or model.cfg.n_heads), fill)

    def patch(act, hook, recorded):
        heads = [h for layer, h in receiver_heads if layer == hook.layer()]
        if whole_layer:
            heads = list(range(act.shape[2]))
        act[:, :, heads] = recorded[hook.name][:, :, heads]
        return act

    with torch.no_grad():
        for layer in range(top):
            for head in range(loop_heads or model.cfg.n_heads):
                freezer = partial(
                    _freeze,
                    new_cache=new_cache,
                    orig_cache=orig_cache,
                    sender=(layer, head),
                    freeze=freeze,
                )
                hooks = [(_is_z, freezer)]
                if freeze_mlps:
                    hooks.append((lambda n: n in mlp_names, _frozen_at(orig_cache)))
                with model.hooks(fwd_hooks=[] if record_unhooked else hooks):
                    _, recorded = model.run_with_cache(
                        orig_dataset.toks, names_filter=lambda n: n in names
                    )
                hooks = [(lambda n: n in names, partial(patch, recorded=recorded))]
                if keep_freeze:
                    hooks.append((_is_z, freezer))
                out[layer, head] = metric(model.run_with_hooks(orig_dataset.toks, fwd_hooks=hooks))
    return out[:top] if rows_only else out


HEADS = "get_path_patch_head_to_heads"
variant(
    HEADS, "kept_freeze_hooks", _to_heads, "Step 3 keeps the freezing hooks on.", keep_freeze=True
)
variant(HEADS, "unreachable_rows_zero", _to_heads, "Unreachable rows left at 0.", fill=0.0)
variant(HEADS, "not_frozen", _to_heads, "Step 2 without freezing.", freeze=False)
variant(
    HEADS, "patched_whole_layer", _to_heads, "Step 3 patches the whole layer.", whole_layer=True
)
variant(HEADS, "returned_top_rows_only", _to_heads, "Only the reachable rows.", rows_only=True)
variant(HEADS, "froze_mlps", _to_heads, "Step 2 freezes the MLPs too.", freeze_mlps=True)
variant(
    HEADS,
    "datasets_swapped",
    _to_heads,
    "Runs the new prompts, patches orig values in.",
    swap_datasets=True,
)
variant(
    HEADS,
    "hard_coded_size",
    _to_heads,
    "The toy's 3 layers x 4 heads written in, for the grid and the loop.",
    fn_name="to_heads_toy_grid_and_loop",
    rows=3,
    width=4,
    loop_heads=4,
)
variant(
    HEADS,
    "hard_coded_size",
    _to_heads,
    "A grid 4 heads wide (the toy's), the loop over model.cfg.n_heads: an IndexError there.",
    fn_name="to_heads_toy_width",
    width=4,
)
variant(
    HEADS,
    "no_effect",
    _to_heads,
    "Records the receivers' inputs outside the freezing hooks' context.",
    record_unhooked=True,
)


@wrong("get_path_patch_head_to_heads", "wrong_top_layer")
def to_heads_lowest_top(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
):
    """Senders only below the lowest receiver layer (min instead of max)."""
    low = min(layer for layer, _ in receiver_heads)
    return _to_heads(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        new_cache,
        orig_cache,
        top=low,
    )


@wrong("get_path_patch_head_to_heads", "wrong_receiver_input")
def to_heads_always_q(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
):
    """receiver_input ignored: always 'q'."""
    return _to_heads(
        receiver_heads,
        "q",
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        new_cache,
        orig_cache,
    )


@wrong("get_path_patch_head_to_heads", "ignored_given_cache")
def to_heads_library(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
):
    """The library's engine, not given the caches (it runs both prompts itself)."""
    return to_heads_library_with_caches(
        receiver_heads, receiver_input, model, patching_metric, new_dataset, orig_dataset
    )


@correct("get_path_patch_head_to_heads", "the library's engine, given the caches")
def to_heads_library_with_caches(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
):
    from ioi.path_patching import get_path_patch_head_to_heads

    grid = get_path_patch_head_to_heads(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        new_cache,
        orig_cache,
    )
    top = max(layer for layer, _ in receiver_heads)
    grid[top:] = float("nan")
    return grid


@correct("get_path_patch_head_to_heads", "records with a saving hook instead of run_with_cache")
def to_heads_saving_hook(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
):
    new_cache, orig_cache = _caches(model, new_dataset, orig_dataset, new_cache, orig_cache)
    top = max(layer for layer, _ in receiver_heads)
    names = sorted({get_act_name(receiver_input, layer) for layer, _ in receiver_heads})
    out = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
    for layer in range(top):
        for head in range(model.cfg.n_heads):
            saved = {}

            def save(act, hook, saved=saved):
                saved[hook.name] = act.clone()

            freezer = partial(
                _freeze, new_cache=new_cache, orig_cache=orig_cache, sender=(layer, head)
            )
            with torch.no_grad():
                model.run_with_hooks(
                    orig_dataset.toks, fwd_hooks=[(_is_z, freezer)] + [(n, save) for n in names]
                )

                def put(act, hook, saved=saved):
                    for r_layer, r_head in receiver_heads:
                        if r_layer == hook.layer():
                            act[:, :, r_head] = saved[hook.name][:, :, r_head]
                    return act

                logits = model.run_with_hooks(
                    orig_dataset.toks, fwd_hooks=[(n, put) for n in names]
                )
            out[layer, head] = patching_metric(logits)
    return out


# ---- path_patch_head_to_heads_at ---------------------------------------------------------------


def _mask(ds, key, like):
    """[batch, pos] True at word_idx[key][i] of each prompt (everywhere for None)."""
    batch, n_pos = like.shape[:2]
    if key is None:
        return torch.ones(batch, n_pos, dtype=torch.bool)
    mask = torch.zeros(batch, n_pos, dtype=torch.bool)
    mask[torch.arange(batch), ds.word_idx[key]] = True
    return mask


def _at(
    receiver_heads,
    receiver_input,
    model,
    metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
    *,
    fill=float("nan"),
    first=False,
    keep_freeze=False,
    top=None,
    sender_all=False,
    receiver_all=False,
    shift=0,
    toy_sizes=False,
):
    sender_position = None if sender_all else sender_position
    receiver_position = None if receiver_all else receiver_position
    ds = orig_dataset
    if first or shift:
        import copy

        ds = copy.copy(orig_dataset)
        ds.word_idx = {
            k: v[:1].expand_as(v) if first else v + shift for k, v in orig_dataset.word_idx.items()
        }
    _, new_cache = model.run_with_cache(new_dataset.toks)
    _, orig_cache = model.run_with_cache(orig_dataset.toks)
    names = {get_act_name(receiver_input, layer) for layer, _ in receiver_heads}
    top = max(layer for layer, _ in receiver_heads) if top is None else top
    n_heads = 4 if toy_sizes else model.cfg.n_heads
    out = torch.full((3, 4) if toy_sizes else (model.cfg.n_layers, n_heads), fill)
    toks = orig_dataset.toks
    send_mask = _mask(ds, sender_position, toks)
    recv_mask = _mask(ds, receiver_position, toks)
    with torch.no_grad():
        for layer in range(top):
            for head in range(n_heads):

                def freeze(z, hook, sender=(layer, head)):
                    out_z = orig_cache[hook.name].clone()
                    if hook.layer() == sender[0]:
                        new = new_cache[hook.name][:, :, sender[1]]
                        out_z[:, :, sender[1]] = torch.where(
                            send_mask[..., None], new, out_z[:, :, sender[1]]
                        )
                    return out_z

                with model.hooks(fwd_hooks=[(_is_z, freeze)]):
                    _, recorded = model.run_with_cache(toks, names_filter=lambda n: n in names)

                def patch(act, hook, recorded=recorded):
                    for r_layer, r_head in receiver_heads:
                        if r_layer == hook.layer():
                            rec = recorded[hook.name][:, :, r_head]
                            act[:, :, r_head] = torch.where(
                                recv_mask[..., None], rec, act[:, :, r_head]
                            )
                    return act

                hooks = [(lambda n: n in names, patch)]
                if keep_freeze:
                    hooks.append((_is_z, freeze))
                out[layer, head] = metric(model.run_with_hooks(toks, fwd_hooks=hooks))
    return out


AT = "path_patch_head_to_heads_at"
variant(AT, "sender_positions_ignored", _at, "The sender at every position.", sender_all=True)
variant(AT, "receiver_positions_ignored", _at, "Receivers at every position.", receiver_all=True)
variant(AT, "same_position_for_all_prompts", _at, "Prompt 0's positions for all.", first=True)
variant(AT, "unreachable_rows_zero", _at, "Unreachable rows left at 0.", fill=0.0)
variant(AT, "kept_freeze_hooks", _at, "The freezing hooks kept on in step 3.", keep_freeze=True)
variant(AT, "position_off_by_one", _at, "Both masks at word_idx[key] - 1.", shift=-1)
variant(AT, "hard_coded_size", _at, "The toy's 3 x 4 grid and 4 heads.", toy_sizes=True)
variant(
    AT,
    "no_effect",
    _at,
    "Both masks at word_idx[key] + 1: the toy reads nothing there, so nothing changes.",
    shift=1,
)


@wrong("path_patch_head_to_heads_at", "sender_positions_ignored")
def at_one_mask_only(r, inp, model, metric, new_dataset, orig_dataset, sender, receiver):
    """One mask is enough, thinks the learner: the receivers' position when there is one,
    else the sender's (so a sender at `end` with receivers at S2 is patched everywhere)."""
    sender = sender if receiver is None else None
    return _at(r, inp, model, metric, new_dataset, orig_dataset, sender, receiver)


@correct("path_patch_head_to_heads_at", "the two positions exchanged: only where they meet counts")
def at_positions_exchanged(r, inp, model, metric, new_dataset, orig_dataset, sender, receiver):
    """With every other head frozen, the receivers' input at a position changes only through
    the sender's output at that position, so only the overlap of the two masks matters."""
    return _at(r, inp, model, metric, new_dataset, orig_dataset, receiver, sender)


@wrong("path_patch_head_to_heads_at", "measured_unreachable_rows")
def at_top_row_measured(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    """Senders over range(top + 1): the receivers' own layer is measured (1.0), not NaN."""
    top = max(layer for layer, _ in receiver_heads)
    grid = _at(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        sender_position,
        receiver_position,
        top=top + 1,
    )
    return grid


@wrong("path_patch_head_to_heads_at", "wrong_top_layer")
def at_lowest_top(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    """Senders below the lowest receiver layer only."""
    low = min(layer for layer, _ in receiver_heads)
    return _at(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        sender_position,
        receiver_position,
        top=low,
    )


@wrong("path_patch_head_to_heads_at", "returned_top_rows_only")
def at_rows_only(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    """Only the reachable rows."""
    top = max(layer for layer, _ in receiver_heads)
    return _at(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        sender_position,
        receiver_position,
    )[:top]


@wrong("path_patch_head_to_heads_at", "patched_whole_layer")
def at_whole_layer(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    """Every head of the receivers' layers."""
    layers = sorted({layer for layer, _ in receiver_heads})
    whole = [(layer, h) for layer in layers for h in range(model.cfg.n_heads)]
    out = _at(
        whole,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        sender_position,
        receiver_position,
    )
    return out


@wrong("path_patch_head_to_heads_at", "wrong_receiver_input")
def at_always_v(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    """receiver_input ignored: always 'v'."""
    return _at(
        receiver_heads,
        "v",
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        sender_position,
        receiver_position,
    )


@correct("path_patch_head_to_heads_at", "masks built from word_idx, hooks by filter")
def at_masks(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    return _at(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        sender_position,
        receiver_position,
    )


@correct("path_patch_head_to_heads_at", "the library's engine with the positions")
def at_library(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    sender_position,
    receiver_position,
):
    from ioi.path_patching import get_path_patch_head_to_heads

    grid = get_path_patch_head_to_heads(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        sender_positions=sender_position,
        receiver_positions=receiver_position,
    )
    grid[max(layer for layer, _ in receiver_heads) :] = float("nan")
    return grid


@wrong("patch_or_freeze_head_vectors", "assignment_shapes_differ")
def freeze_new_batch_index(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """new_cache[hook.name][head] picks a prompt, not a head."""
    out = orig_cache[hook.name].clone()
    if hook.layer() == head_to_patch[0]:
        out[:, :, head_to_patch[1]] = new_cache[hook.name][head_to_patch[1]]
    return out


@wrong("patch_head_input", "assignment_shapes_differ")
def input_batch_index(orig_activation, hook, patched_cache, head_list):
    """patched_cache[hook.name][heads] picks prompts, not heads."""
    heads = [h for layer, h in head_list if layer == hook.layer()]
    orig_activation[:, :, heads] = patched_cache[hook.name][heads]
    return orig_activation


# ---- adversarial review (chk36): the two hooks ------------------------------------------------


@wrong("patch_or_freeze_head_vectors", "layer_and_head_swapped")
def freeze_head_layer_unpacked(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """`head, layer = head_to_patch`: the pair read the wrong way round."""
    head, layer = head_to_patch
    orig_head_vector[...] = orig_cache[hook.name]
    if hook.layer() == layer:
        orig_head_vector[:, :, head] = new_cache[hook.name][:, :, head]
    return orig_head_vector


@wrong("patch_or_freeze_head_vectors", "patched_whole_sender_layer")
def freeze_sender_layer_at_new(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """The sender's whole layer taken from new_cache."""
    cache = new_cache if hook.layer() == head_to_patch[0] else orig_cache
    return cache[hook.name].clone()


@wrong("patch_or_freeze_head_vectors", "did_not_freeze")
def freeze_up_to_sender(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """Freezes only up to the sender's layer; later layers left as they come."""
    layer, head = head_to_patch
    if hook.layer() <= layer:
        orig_head_vector[...] = orig_cache[hook.name]
    if hook.layer() == layer:
        orig_head_vector[:, :, head] = new_cache[hook.name][:, :, head]
    return orig_head_vector


@wrong("patch_or_freeze_head_vectors", "did_not_patch")
def freeze_sender_kept_current(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """Freezes the other heads; the sender keeps the value it came with."""
    layer, head = head_to_patch
    out = orig_cache[hook.name].clone()
    if hook.layer() == layer:
        out[:, :, head] = orig_head_vector[:, :, head]
    return out


@wrong("patch_or_freeze_head_vectors", "indexed_position_axis")
def freeze_sender_on_pos_axis(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    """z[:, head] (a position) for the sender."""
    orig_head_vector[...] = orig_cache[hook.name]
    if hook.layer() == head_to_patch[0]:
        orig_head_vector[:, head_to_patch[1]] = new_cache[hook.name][:, head_to_patch[1]]
    return orig_head_vector


@correct("patch_or_freeze_head_vectors", "layer parsed from the name, cache read by (name, layer)")
def freeze_by_name(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    out = orig_cache[hook.name].clone()
    if int(hook.name.split(".")[1]) == head_to_patch[0]:
        new = new_cache["z", head_to_patch[0]]
        out[..., head_to_patch[1], :] = new[..., head_to_patch[1], :]
    return out


def _input(orig_activation, hook, patched_cache, head_list, *, how="right"):
    heads = [h for layer, h in head_list if layer == hook.layer()]
    patched = patched_cache[hook.name]
    if how == "first_only":
        heads = heads[:1]
    elif how == "layer_as_head":
        heads = [layer for layer, _ in head_list if layer == hook.layer()]
    elif how == "fixed_name":
        patched = patched_cache["v", hook.layer()]
    if how == "inverted":
        out = patched.clone()
        out[:, :, heads] = orig_activation[:, :, heads]
        return out
    if how == "pos_axis":
        orig_activation[:, heads] = patched[:, heads]
    elif how == "added":
        orig_activation[:, :, heads] += patched[:, :, heads]
    elif how == "mean":
        orig_activation[:, :, heads] = patched[:, :, heads].mean(0)
    else:
        orig_activation[:, :, heads] = patched[:, :, heads]
    return orig_activation


variant("patch_head_input", "one_receiver_only", _input, "heads[:1].", how="first_only")
variant(
    "patch_head_input",
    "layer_as_head_index",
    _input,
    "Pairs read as (head, ...).",
    how="layer_as_head",
)
variant("patch_head_input", "indexed_position_axis", _input, "[:, heads].", how="pos_axis")
variant("patch_head_input", "inverted_patch", _input, "Receivers kept at orig.", how="inverted")
variant("patch_head_input", "added_not_replaced", _input, "+=.", how="added")
variant("patch_head_input", "mean_over_prompts", _input, ".mean(0).", how="mean")
variant("patch_head_input", "ignored_hook_name", _input, "Always reads v.", how="fixed_name")


@correct("patch_head_input", "torch.where over a head mask")
def input_where(orig_activation, hook, patched_cache, head_list):
    n_heads = orig_activation.shape[2]
    mask = torch.tensor([(hook.layer(), h) in head_list for h in range(n_heads)])
    return torch.where(
        mask.to(orig_activation.device)[:, None], patched_cache[hook.name], orig_activation
    )

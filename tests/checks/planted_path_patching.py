"""Planted mistakes for section 4: one wrong implementation per diagnosis its checkers make."""

from __future__ import annotations

from functools import partial

import torch
from transformer_lens.utilities import get_act_name

# ---- patch_or_freeze_head_vectors -------------------------------------------------------------


def freeze_forgotten(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    layer, head = head_to_patch
    if hook.layer() == layer:
        orig_head_vector[:, :, head] = new_cache[hook.name][:, :, head]
    return orig_head_vector


def freeze_every_layer(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    orig_head_vector[...] = orig_cache[hook.name]
    orig_head_vector[:, :, head_to_patch[1]] = new_cache[hook.name][:, :, head_to_patch[1]]
    return orig_head_vector


def freeze_only(orig_head_vector, hook, new_cache, orig_cache, head_to_patch):
    return orig_cache[hook.name].clone()


# ---- patch_head_input -------------------------------------------------------------------------


def input_all_layers(orig_activation, hook, patched_cache, head_list):
    heads = [head for _, head in head_list]
    orig_activation[:, :, heads] = patched_cache[hook.name][:, :, heads]
    return orig_activation


def input_all_heads(orig_activation, hook, patched_cache, head_list):
    return patched_cache[hook.name].clone()


# ---- shared pieces ----------------------------------------------------------------------------


def _caches(model, new_dataset, orig_dataset, new_cache, orig_cache):
    if new_cache is None:
        _, new_cache = model.run_with_cache(new_dataset.toks)
    if orig_cache is None:
        _, orig_cache = model.run_with_cache(orig_dataset.toks)
    return new_cache, orig_cache


def _freeze(z, hook, new_cache, orig_cache, sender, freeze=True):
    if freeze:
        z[...] = orig_cache[hook.name]
    if hook.layer() == sender[0]:
        z[:, :, sender[1]] = new_cache[hook.name][:, :, sender[1]]
    return z


def _is_z(name):
    return name.endswith("z")


# ---- get_path_patch_head_to_final_resid_post --------------------------------------------------


@torch.inference_mode()
def _to_logits(model, metric, run_toks, source_cache, frozen_cache, freeze=True, freeze_mlps=False):
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    extra = []
    if freeze_mlps:
        extra = [(lambda n: n.endswith("mlp_out"), lambda act, hook: frozen_cache[hook.name])]
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            hook = partial(
                _freeze,
                new_cache=source_cache,
                orig_cache=frozen_cache,
                sender=(layer, head),
                freeze=freeze,
            )
            out[layer, head] = metric(
                model.run_with_hooks(run_toks, fwd_hooks=[(_is_z, hook), *extra])
            )
    return out


def to_logits_not_frozen(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    new_cache, orig_cache = _caches(model, new_dataset, orig_dataset, new_cache, orig_cache)
    return _to_logits(
        model, patching_metric, orig_dataset.toks, new_cache, orig_cache, freeze=False
    )


def to_logits_mlps_frozen(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    new_cache, orig_cache = _caches(model, new_dataset, orig_dataset, new_cache, orig_cache)
    return _to_logits(
        model, patching_metric, orig_dataset.toks, new_cache, orig_cache, freeze_mlps=True
    )


def to_logits_swapped(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    new_cache, orig_cache = _caches(model, new_dataset, orig_dataset, new_cache, orig_cache)
    return _to_logits(model, patching_metric, new_dataset.toks, orig_cache, new_cache)


def to_logits_transposed(
    model, patching_metric, new_dataset, orig_dataset, new_cache=None, orig_cache=None
):
    new_cache, orig_cache = _caches(model, new_dataset, orig_dataset, new_cache, orig_cache)
    return _to_logits(model, patching_metric, orig_dataset.toks, new_cache, orig_cache).T


# ---- get_path_patch_head_to_heads -------------------------------------------------------------


@torch.inference_mode()
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
    freeze=True,
    full_grid=True,
    patch_input=None,
):
    new_cache, orig_cache = _caches(model, new_dataset, orig_dataset, new_cache, orig_cache)
    part = patch_input or receiver_input
    names = {get_act_name(part, layer) for layer, _ in receiver_heads}
    top = max(layer for layer, _ in receiver_heads)
    out = torch.zeros(model.cfg.n_layers if full_grid else top, model.cfg.n_heads)
    toks = orig_dataset.toks

    def patch(act, hook, cache):
        heads = [h for layer, h in receiver_heads if layer == hook.layer()]
        act[:, :, heads] = cache[hook.name][:, :, heads]
        return act

    for layer in range(top):
        for head in range(model.cfg.n_heads):
            hook = partial(
                _freeze,
                new_cache=new_cache,
                orig_cache=orig_cache,
                sender=(layer, head),
                freeze=freeze,
            )
            with model.hooks(fwd_hooks=[(_is_z, hook)]):
                _, patched = model.run_with_cache(toks, names_filter=lambda n: n in names)
            logits = model.run_with_hooks(
                toks, fwd_hooks=[(lambda n: n in names, partial(patch, cache=patched))]
            )
            out[layer, head] = metric(logits)
    return out


def to_heads_top_rows(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
):
    return _to_heads(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        new_cache,
        orig_cache,
        full_grid=False,
    )


def to_heads_not_frozen(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
):
    return _to_heads(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        new_cache,
        orig_cache,
        freeze=False,
    )


def to_heads_always_queries(
    receiver_heads,
    receiver_input,
    model,
    patching_metric,
    new_dataset,
    orig_dataset,
    new_cache=None,
    orig_cache=None,
):
    return _to_heads(
        receiver_heads,
        receiver_input,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        new_cache,
        orig_cache,
        patch_input="q",
    )


PLANTED = {
    ("patch_or_freeze_head_vectors", "did_not_freeze"): freeze_forgotten,
    ("patch_or_freeze_head_vectors", "ignored_layer"): freeze_every_layer,
    ("patch_or_freeze_head_vectors", "did_not_patch"): freeze_only,
    ("patch_head_input", "ignored_layer"): input_all_layers,
    ("patch_head_input", "patched_all_heads"): input_all_heads,
    ("get_path_patch_head_to_final_resid_post", "not_frozen"): to_logits_not_frozen,
    ("get_path_patch_head_to_final_resid_post", "froze_mlps"): to_logits_mlps_frozen,
    ("get_path_patch_head_to_final_resid_post", "datasets_swapped"): to_logits_swapped,
    ("get_path_patch_head_to_final_resid_post", "transposed"): to_logits_transposed,
    ("get_path_patch_head_to_heads", "returned_top_rows_only"): to_heads_top_rows,
    ("get_path_patch_head_to_heads", "not_frozen"): to_heads_not_frozen,
    ("get_path_patch_head_to_heads", "wrong_receiver_input"): to_heads_always_queries,
}

"""Activation collection against a plain per-prompt loop over ``run_with_cache``."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.utils import get_act_name

from ioi.dataset import IOIDataset
from ioi.features import collect_activations, ioi_and_abc, iter_activations, load_activations
from ioi.testing import hook_count

RESID = get_act_name("resid_pre", 2)
Z = get_act_name("z", 1)


@pytest.fixture(scope="module")
def prompts(toy_model):
    return ioi_and_abc(toy_model, 5, seed=3)


def _reference(model, datasets, name, word=None):
    """One prompt at a time, sliced by hand."""
    rows = []
    for ds in datasets:
        for i in range(len(ds)):
            n = int(ds.seq_lens[i])
            _, cache = model.run_with_cache(ds.toks[i : i + 1, :n], names_filter=name)
            act = cache[name][0]
            act = act.reshape(act.shape[0], -1)  # per-head activations flattened
            rows.append(act if word is None else act[int(ds.word_idx[word][i])][None])
    return torch.cat(rows)


def test_every_position_matches_a_plain_loop(toy_model, prompts, no_hooks_after):
    acts = collect_activations(toy_model, prompts, [RESID, Z], batch_size=3, progress=False)
    total = sum(int(ds.seq_lens.sum()) for ds in prompts)
    assert acts[RESID].shape == (total, toy_model.cfg.d_model)
    assert acts[Z].shape == (total, toy_model.cfg.n_heads * toy_model.cfg.d_head)
    torch.testing.assert_close(
        acts[RESID], _reference(toy_model, prompts, RESID), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(acts[Z], _reference(toy_model, prompts, Z), atol=1e-5, rtol=0)
    no_hooks_after(toy_model)


def test_word_positions(toy_model, prompts):
    acts = collect_activations(toy_model, prompts, [RESID], positions=["S2", "end"], progress=False)
    s2 = _reference(toy_model, prompts, RESID, "S2")
    end = _reference(toy_model, prompts, RESID, "end")
    # Per prompt, its vectors in the order the positions were given.
    torch.testing.assert_close(acts[RESID][0::2], s2, atol=1e-5, rtol=0)
    torch.testing.assert_close(acts[RESID][1::2], end, atol=1e-5, rtol=0)


def test_chunks_cover_the_prompts_in_order(toy_model, prompts):
    chunks = list(
        iter_activations(toy_model, prompts[0], [RESID], "end", batch_size=2, progress=False)
    )
    assert [c[RESID].shape[0] for c in chunks] == [2, 2, 1]


def test_safetensors_round_trip(toy_model, prompts, tmp_path):
    path = tmp_path / "acts" / "resid.safetensors"
    acts = collect_activations(toy_model, prompts[:1], [RESID], "IO", progress=False, path=path)
    torch.testing.assert_close(load_activations(path)[RESID], acts[RESID])


def test_abc_prompts_have_fresh_names(toy_model, prompts):
    ioi, abc = prompts
    assert isinstance(abc, IOIDataset) and len(abc) == len(ioi)
    assert not torch.equal(ioi.toks, abc.toks)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hook_names=["blocks.2.hook_resid_pr"]), "close names: blocks.2.hook_resid_pre"),
        (dict(hook_names=[RESID], positions="S3"), "unknown position 'S3'.*S2, end"),
        (dict(hook_names=[RESID], positions=["all", "end"]), "pass it alone"),
        (dict(hook_names=[RESID], batch_size=0), "batch_size"),
        (dict(hook_names=[]), "at least one hook name"),
        (dict(hook_names=["blocks.0.attn.hook_pattern"]), "attention weights.*hook_z"),
        (
            dict(hook_names=["blocks.0.attn.hook_pattern"], positions="S2"),
            "not one vector per token",
        ),
        (dict(hook_names=["blocks.1.attn.hook_attn_scores"]), "attention weights"),
    ],
)
def test_bad_inputs(toy_model, prompts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        collect_activations(toy_model, prompts, progress=False, **kwargs)
    assert hook_count(toy_model) == 0

"""Passes rerun only the window of positions that can change: same numbers as the reference.

`path_patch_queries` reruns, for each pass, the positions from the first one its senders can
change (where they are patched, their receivers read, and the two prompts already differ) up
to the last one the metric reads, with the clean keys and values before the window taken as a
key-value cache. Each query is checked against `plain_path_patch` (hooks on full forward
passes, no windows) in float64, so that any row left out or misplaced shows above rounding.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import ioi.path_patching.batched as batched
import ioi.path_patching.receivers as receivers_module
from ioi.circuit import PathPatchingOracle
from ioi.dataset import IOIDataset
from ioi.path_patching import Receiver, Sender, plain_path_patch
from ioi.path_patching.batched import PathQuery, path_patch_queries
from ioi.path_patching.receivers import windows_supported
from ioi.testing import gpt2_vocab_model, hooks_left

pytestmark = pytest.mark.usefixtures("one_thread")

# (receivers, sender positions, receiver positions): q read at one position, k/v everywhere,
# senders patched everywhere or at one position each, early and late in the prompt.
ASKED = [
    ((Receiver(2, 1, "q"),), None, "end"),
    ((Receiver(2, 1, "q"), Receiver(1, 0, "q")), "S2", "end"),
    ((Receiver(2, 0, "q"),), None, "S2"),
    ((Receiver(2, 3, "v"),), None, None),
    ((Receiver(2, 3, "k"),), None, None),  # same senders and positions: one shared propagation
    ((Receiver(2, 3, "v"), Receiver(1, 2, "v")), "end", None),
    ((Receiver(1, 2, "k"), Receiver(2, 2, "k")), "S2", None),
    ((Receiver(2, 0, "k"),), "IO", None),
    ((Receiver(2, 0, "v"),), "S1+1", None),  # the same token in both prompts, after a name
]


def _setup(seed: int, **overrides):
    model = gpt2_vocab_model(seed=seed, **overrides).to(torch.float64)
    ioi = IOIDataset(6, "mixed", seed=seed, tokenizer=model)
    abc = ioi.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    return model, ioi, abc, PathPatchingOracle(model, ioi, abc).metric


def _spy_windows(monkeypatch) -> list[Tensor]:
    """Record each pass's window start per prompt."""
    firsts: list[Tensor] = []
    make = batched._window

    def spy(first, last, keys_values):
        firsts.append(first.clone())
        return make(first, last, keys_values)

    monkeypatch.setattr(batched, "_window", spy)
    return firsts


@pytest.mark.parametrize(
    "overrides",
    [{}, {"parallel_attn_mlp": True}, {"positional_embedding_type": "rotary", "rotary_dim": 8}],
    ids=["sequential", "parallel", "rotary"],
)
def test_windowed_passes_match_the_plain_reference(monkeypatch, overrides):
    model, ioi, abc, metric = _setup(4, **overrides)
    assert windows_supported(model)
    queries, expected = [], []
    for receivers, sp, rp in ASKED:
        top = min(r.layer for r in receivers)
        for sender in [Sender("head", layer, h) for layer in range(top) for h in range(4)]:
            queries.append(PathQuery(sender, receivers, sp, rp))
            expected.append(
                plain_path_patch(
                    model, metric, abc, ioi, sender, list(receivers),
                    sender_positions=sp, receiver_positions=rp,
                )
            )  # fmt: skip
    firsts = _spy_windows(monkeypatch)
    for batch_size in (None, 5):
        got = path_patch_queries(model, metric, abc, ioi, queries, batch_size=batch_size)
        torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=0)
    assert not hooks_left(model)
    # The windows did start late: at each prompt's S1+1, S2 and end for those senders (at the
    # earliest of them in every prompt where the blocks depend on positions).
    for key in ("S1+1", "S2", "end"):
        pos = ioi.word_idx[key]
        if "positional_embedding_type" in overrides:
            pos = pos.min().expand_as(pos)
        assert any(torch.equal(f, pos) for f in firsts), key
    assert not torch.allclose(got, got[0].expand_as(got))  # the queries differ


def test_a_sender_that_changes_nothing_the_receivers_read_has_no_effect(monkeypatch):
    """q read at S1 with the sender patched only at end: nothing the receivers read changes
    (the window is empty before the readout), so the metric is the clean one exactly."""
    model, ioi, abc, metric = _setup(5)
    senders = [Sender("head", 0, h) for h in range(4)]
    queries = [PathQuery(s, (Receiver(1, 0, "q"),), "end", "S1") for s in senders]
    got = path_patch_queries(model, metric, abc, ioi, queries)
    expected = [
        plain_path_patch(
            model, metric, abc, ioi, q.sender, list(q.receivers),
            sender_positions="end", receiver_positions="S1",
        )
        for q in queries
    ]  # fmt: skip
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(got, torch.ones_like(got), atol=1e-9, rtol=0)  # normalised clean


def test_models_whose_cache_is_not_the_hooks_rerun_the_whole_prompt(monkeypatch):
    """With query/key norms the cached keys are not ``hook_k``: no window, same numbers."""
    model, ioi, abc, metric = _setup(6, use_qk_norm=True)
    assert not windows_supported(model)
    receivers = (Receiver(2, 1, "k"),)
    queries = [PathQuery(Sender("head", 1, h), receivers, "S2", None) for h in range(4)]
    firsts = _spy_windows(monkeypatch)
    got = path_patch_queries(model, metric, abc, ioi, queries)
    expected = [
        plain_path_patch(model, metric, abc, ioi, q.sender, list(receivers), sender_positions="S2")
        for q in queries
    ]
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=0)
    assert firsts and all(not f.any() for f in firsts)


@pytest.mark.parametrize(
    "overrides", [{}, {"positional_embedding_type": "rotary", "rotary_dim": 8}], ids=str
)
def test_prompts_the_metric_does_not_read_do_not_move_the_windows(overrides):
    """A metric over some prompts only (`PathPatchingOracle.for_rows`): the other prompts'
    windows are empty and the one shared window (rotary) starts where the read ones need it."""
    model, ioi, abc, _ = _setup(7, **overrides)
    oracle = PathPatchingOracle(model, ioi, abc).for_rows(torch.tensor([1, 3, 4]))
    receivers = (Receiver(2, 1, "v"), Receiver(1, 3, "q"))
    queries = [
        PathQuery(Sender("head", 0, h), receivers, sp, None)
        for h in range(4)
        for sp in ("S1+1", "S2", "end")
    ]
    got = path_patch_queries(model, oracle.metric, abc, ioi, queries, readout=oracle.readout)
    expected = [
        plain_path_patch(
            model, oracle.metric, abc, ioi, q.sender, list(receivers),
            sender_positions=q.sender_positions,
        )
        for q in queries
    ]  # fmt: skip
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=0)


def test_the_last_block_runs_at_the_readout_rows_unless_a_receiver_is_in_it(monkeypatch):
    """One readout row per prompt: a pass whose receivers sit below the last layer runs that
    block on those rows alone (`ioi.patching.tail.last_block_at_rows`); with a receiver in the
    last layer the block runs in full (its hooks must see every position). Same numbers."""
    model, ioi, abc, metric = _setup(8)
    calls = []
    real = receivers_module.last_block_at_rows

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(receivers_module, "last_block_at_rows", counting)
    oracle = PathPatchingOracle(model, ioi, abc)  # its readout: each prompt's end
    for receivers, shortcut in (((Receiver(1, 2, "v"),), True), ((Receiver(2, 2, "v"),), False)):
        calls.clear()
        queries = [PathQuery(Sender("head", 0, h), receivers) for h in range(4)]
        got = path_patch_queries(model, oracle.metric, abc, ioi, queries, readout=oracle.readout)
        expected = [
            plain_path_patch(model, oracle.metric, abc, ioi, q.sender, list(receivers))
            for q in queries
        ]
        torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=0)
        assert bool(calls) == shortcut
    assert not hooks_left(model)

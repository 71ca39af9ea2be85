"""Batched discovery finds what the plain, one-question-per-call discovery finds.

`PlainOracle` answers every request on its own with `path_patch` (one call per request) and
memoises nothing: the discovery
as it was before effects were memoised per sender and stacked across requests. The batched
oracle must give the same heads, classes, positions and effects, threshold after threshold.
"""

from __future__ import annotations

import pytest
import torch

from ioi.circuit import PathPatchingOracle, discover_circuit
from ioi.dataset import IOIDataset
from ioi.path_patching import Receiver, Sender, path_patch
from ioi.path_patching.batched import PathQuery, path_patch_queries
from ioi.testing import gpt2_vocab_model

ABC = "ABB->XYZ, BAB->XYZ"
THRESHOLDS = (0.2, 0.1)

pytestmark = pytest.mark.usefixtures("one_thread")


class PlainOracle(PathPatchingOracle):
    """Every request computed anew with `path_patch` (one request per call, no memo).

    `path_patch` is itself checked against the one-sender-per-pass `plain_path_patch` in
    tests/path_patching; it shares none of `path_patch_queries`' stacking across requests.
    """

    def effects_many(self, requests):
        self.calls = getattr(self, "calls", 0) + len(requests)
        return [
            path_patch(
                self.model,
                self.metric,
                self.abc,
                self.ioi,
                list(senders),
                list(receivers) if receivers else None,
                sender_positions=sp,
                receiver_positions=rp,
            )
            - self.baseline
            for senders, receivers, sp, rp in requests
        ]


def assert_same_discovery(fast, plain, atol=1e-4):
    assert fast.heads() == plain.heads()
    assert [(f.head, f.role, f.position, f.cls) for f in fast.findings] == [
        (f.head, f.role, f.position, f.cls) for f in plain.findings
    ]
    assert [(e.sender, e.receivers, e.input, e.receiver_position) for e in fast.edges] == [
        (e.sender, e.receivers, e.input, e.receiver_position) for e in plain.edges
    ]
    for a, b in zip(fast.edges, plain.edges, strict=True):
        assert a.effect == pytest.approx(b.effect, abs=atol)
    for a, b in zip(fast.findings, plain.findings, strict=True):
        assert a.position_effects == pytest.approx(b.position_effects, abs=atol)
        assert a.attention == b.attention


def _oracles(model, n, seed):
    ioi = IOIDataset(n, "mixed", seed=seed, tokenizer=model)
    abc = ioi.gen_flipped_prompts(ABC)
    return PathPatchingOracle(model, ioi, abc), PlainOracle(model, ioi, abc)


@pytest.mark.parametrize("seed", [3])
def test_batched_discovery_matches_plain_on_a_tiny_random_model(seed):
    fast, plain = _oracles(gpt2_vocab_model(seed=seed), 8, seed)
    n_found = 0
    for t in THRESHOLDS:  # one oracle across the sweep, as `threshold_sweep` uses it
        ours, ref = discover_circuit(fast, t), discover_circuit(plain, t)
        assert_same_discovery(ours, ref)
        n_found += len(ours.heads())
    assert n_found > 0, "nothing found: the comparison would be empty"


def test_batched_discovery_matches_plain_on_the_toy_model(toy_model):
    fast, plain = _oracles(toy_model, 8, 0)
    for t in (0.1, 0.05):
        ours, ref = discover_circuit(fast, t), discover_circuit(plain, t)
        assert_same_discovery(ours, ref)
        assert ours.heads()


def test_memo_is_per_sender_so_a_smaller_threshold_reuses_effects():
    model = gpt2_vocab_model(seed=0)
    fast, _ = _oracles(model, 8, 0)
    receivers = [Receiver(2, 0, "k")]
    senders = [Sender("head", 1, h) for h in range(4)]
    first = fast.effects(senders[:2], receivers)
    known = len(fast._memo)
    both = fast.effects(senders, receivers)
    assert len(fast._memo) == known + 2  # only the two new senders were computed
    torch.testing.assert_close(both[:2], first)


def test_queries_match_path_patch_one_request_at_a_time():
    model = gpt2_vocab_model(seed=1)
    fast, _ = _oracles(model, 8, 1)
    asked = [
        ([Receiver(2, 1, "q"), Receiver(1, 0, "q")], "S2", "end"),
        ([Receiver(2, 3, "v")], None, None),
        ([Receiver(1, 2, "k"), Receiver(2, 2, "k")], "IO", None),
    ]
    queries, expected = [], []
    for receivers, sp, rp in asked:
        senders = [Sender("head", layer, h) for layer in range(2) for h in range(4)]
        expected.append(
            path_patch(
                model, fast.metric, fast.abc, fast.ioi, senders, receivers,
                sender_positions=sp, receiver_positions=rp,
            )
        )  # fmt: skip
        queries += [PathQuery(s, tuple(receivers), sp, rp) for s in senders]
    for batch_size in (None, 3):
        got = path_patch_queries(
            model, fast.metric, fast.abc, fast.ioi, queries, batch_size=batch_size
        )
        torch.testing.assert_close(got, torch.cat(expected), atol=1e-5, rtol=0)


def test_queries_take_token_tensors_and_position_tensors_as_well_as_names():
    """The engine needs no IOIDataset: plain token tensors with [batch] position tensors give
    what the word_idx names give, and equal position tensors that are different objects are
    grouped into one pass (the numbers are the same as for one shared tensor)."""
    model = gpt2_vocab_model(seed=2)
    fast, _ = _oracles(model, 8, 2)
    senders = [Sender("head", 0, h) for h in range(4)]
    receivers = (Receiver(1, 1, "q"), Receiver(2, 0, "v"))
    named = [PathQuery(s, receivers, "S2", None) for s in senders]
    named += [PathQuery(s, receivers, "end", "end") for s in senders]
    by_name = path_patch_queries(model, fast.metric, fast.abc, fast.ioi, named)
    s2, end = fast.ioi.word_idx["S2"], fast.ioi.word_idx["end"]
    tensors = [PathQuery(s, receivers, s2.clone(), None) for s in senders]
    tensors += [PathQuery(s, receivers, end.clone(), end.clone()) for s in senders]
    by_tensor = path_patch_queries(model, fast.metric, fast.abc.toks, fast.ioi.toks, tensors)
    torch.testing.assert_close(by_tensor, by_name, atol=1e-6, rtol=0)
    assert not torch.allclose(by_name, by_name[0].expand_as(by_name))  # senders differ
    with pytest.raises(ValueError, match="needs an IOIDataset"):
        path_patch_queries(
            model,
            fast.metric,
            fast.abc.toks,
            fast.ioi.toks,
            [PathQuery(senders[0], receivers, "S2")],
        )

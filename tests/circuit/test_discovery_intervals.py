"""Discovery keeps each head's per-prompt effect, and its interval is the bootstrap of them.

The reference is a direct `path_patch` call per finding, with the per-prompt IOI metric of
`ioi.metrics` (not the oracle's own metric), then `ioi.statistics.bootstrap`.
"""

from __future__ import annotations

import pytest
import torch

from ioi.circuit import PathPatchingOracle, discover_circuit
from ioi.dataset import IOIDataset
from ioi.metrics import make_ioi_metric
from ioi.path_patching import Receiver, Sender, all_head_senders, path_patch
from ioi.statistics import bootstrap
from ioi.testing import gpt2_vocab_model

ABC = "ABB->XYZ, BAB->XYZ"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def oracle():
    model = gpt2_vocab_model(seed=3)
    ioi = IOIDataset(8, "mixed", seed=3, tokenizer=model)
    return PathPatchingOracle(model, ioi, ioi.gen_flipped_prompts(ABC))


def _direct_per_prompt(oracle, finding, edge):
    """[batch] effects of the finding's edge from one `path_patch` call of its own."""
    metric = make_ioi_metric(
        oracle.clean_logit_diff,
        oracle.corrupted_logit_diff,
        oracle.ioi.answer_tokens,
        oracle.ioi.word_idx["end"],
        reduce="none",
    )
    receivers = None
    if edge.input != "logits":
        receivers = [Receiver(layer, h, edge.input) for layer, h in edge.receivers]
    values = path_patch(
        oracle.model,
        metric,
        oracle.abc,
        oracle.ioi,
        [Sender("head", *finding.head)],
        receivers,
        receiver_positions=edge.receiver_position,
    )
    return values[0] - 1.0  # the unpatched normalised metric is 1


def _edge_of(found, finding):
    """An edge that gave the finding its effect (same sender, role and effect; two such edges
    differ only by receivers at or below the sender, which see no change)."""
    return next(
        e
        for e in found.edges
        if e.sender == finding.head and e.input == finding.role and e.effect == finding.effect
    )


def test_finding_intervals_are_the_bootstrap_of_direct_path_patching(oracle, no_hooks_after):
    no_hooks_after(oracle.model)
    found = discover_circuit(oracle, 0.2)
    assert len(found.findings) > 1, "too few heads found: the comparison would be empty"
    assert {f.role for f in found.findings} > {"logits"}, "no q/k/v finding to compare"
    est = found.effects
    assert est.shape == (len(found.findings),) and est.n == oracle.ioi.N
    direct = torch.stack(
        [_direct_per_prompt(oracle, f, _edge_of(found, f)) for f in found.findings]
    )
    ref = bootstrap(direct)
    for got, want in (
        (est.mean, ref.mean),
        (est.se, ref.se),
        (est.low, ref.low),
        (est.high, ref.high),
    ):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    means = torch.tensor([f.effect for f in found.findings], dtype=torch.float64)
    torch.testing.assert_close(est.mean, means, atol=1e-4, rtol=0)
    assert bool((est.se > 0).all()) and bool((est.low <= est.mean).all())


def _patched_logit_diffs(oracle, effects):
    """Per-prompt effects back to patched logit differences (undo the oracle's normalisation,
    which a subset oracle takes from its own prompts)."""
    clean, corrupted = oracle.clean_logit_diff, oracle.corrupted_logit_diff
    return effects * (clean - corrupted) + clean


def test_per_prompt_effects_of_a_subset_oracle_are_its_rows(oracle):
    rows = torch.tensor([5, 1, 6])
    senders = all_head_senders(oracle.model)[:6]
    request = [(senders, [Receiver(2, 1, "v")], None, None), (senders, None, None, "end")]
    full = oracle.per_prompt_many(request)
    subset = oracle.for_rows(rows)
    sub = subset.per_prompt_many(request)
    for a, b in zip(full, sub, strict=True):
        assert b.shape == (len(senders), len(rows))
        torch.testing.assert_close(
            _patched_logit_diffs(subset, b),
            _patched_logit_diffs(oracle, a)[:, rows],
            atol=1e-4,
            rtol=0,
        )
    torch.testing.assert_close(oracle.effects(*request[0]), full[0].mean(-1))


def test_a_single_prompt_oracle_discovers_without_intervals(oracle):
    found = discover_circuit(oracle.for_rows(torch.tensor([2])), 0.2)
    assert found.findings and found.effects is None
    assert all(f.per_prompt.shape == (1,) for f in found.findings)


def test_memo_shares_answers_between_receiver_sets_a_sender_sees_alike(oracle):
    """A sender's path into {0.2, 2.1} is its path into {2.1} when it sits in layer 0 or 1
    (0.2 sees no change), and the order of the receivers does not matter: one memo entry,
    equal to `path_patch` into {2.1} alone."""
    senders = [Sender("head", 1, h) for h in range(4)]
    first = oracle.effects(senders, [Receiver(0, 2, "k"), Receiver(2, 1, "k")])
    known = len(oracle._memo)
    again = oracle.effects(senders, [Receiver(2, 1, "k")])
    assert len(oracle._memo) == known
    torch.testing.assert_close(again, first)
    direct = path_patch(
        oracle.model, oracle.metric, oracle.abc, oracle.ioi, senders, [Receiver(2, 1, "k")]
    )
    torch.testing.assert_close(first, direct - 1.0, atol=1e-4, rtol=0)
    swapped = [Receiver(2, 3, "v"), Receiver(2, 0, "v")]
    oracle.effects(senders, swapped)
    known = len(oracle._memo)
    oracle.effects(senders, swapped[::-1])
    assert len(oracle._memo) == known

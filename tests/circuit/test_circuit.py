"""Circuit spec, mean ablation, the paper's criteria, discovery and comparison across families."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer

from ioi.circuit import (
    Circuit,
    MeanAblation,
    PathPatchingOracle,
    backup_name_mover_experiment,
    compare_groups,
    completeness,
    discover_circuit,
    discover_model_circuit,
    faithfulness,
    gpt2_small_circuit,
    group_labels,
    jaccard,
    make_rows_ioi_metric,
    minimality,
    permutation_test,
)
from ioi.circuit.ablation import keep_masks
from ioi.dataset import IOIDataset
from ioi.head import Head
from ioi.heads import ioi_attention
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.testing import gpt2_vocab_model, hook_count

ABC = "ABB->XYZ, BAB->XYZ"
REFERENCE = Path(__file__).resolve().parents[2] / "ioi" / "data" / "gpt2_small_ioi.json"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0) -> HookedTransformer:
    """3 layers x 4 heads with folded LayerNorm over GPT-2's ids, one head with zero output."""
    model = gpt2_vocab_model(seed=seed)
    with torch.no_grad():
        model.blocks[1].attn.W_O[3] = 0.0  # a head that cannot matter
    return model


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    ioi = IOIDataset(16, "mixed", seed=1, tokenizer=model)
    abc = ioi.gen_flipped_prompts(ABC)
    return model, ioi, abc, MeanAblation.build(model, ioi, abc)


SMALL = Circuit(
    {"mover": [(2, 0), (2, 1)], "helper": ["1.3", "1.1"], "early": [(0, 2)]},
    {"mover": "end", "helper": "end", "early": "S2"},
)


# ---- spec --------------------------------------------------------------------------------


def test_gpt2_small_circuit_matches_the_reference():
    paper = json.loads(REFERENCE.read_text())["paper"]
    circuit = gpt2_small_circuit()
    for cls, heads in paper["circuit"].items():
        assert [str(h) for h in circuit.heads[cls]] == heads
        assert circuit.positions[cls] == paper["positions_kept_in_mean_ablation"][cls]
    assert len(circuit) == 26 and (9, 9) in circuit.all_heads()
    assert all(type(h) is Head for h in circuit.all_heads())
    assert "name_mover @end: 9.9 9.6 10.0" in circuit.describe()
    assert circuit.kept_positions()[(2, 2)] == ("S1+1",)


def test_circuit_validation():
    with pytest.raises(ValueError, match="at least one head"):
        Circuit({}, {})
    with pytest.raises(ValueError, match="at least one head"):
        Circuit({"name_mover": []}, {"name_mover": "end"})
    with pytest.raises(ValueError, match="valid keys: .*S1\\+1"):
        Circuit({"name_mover": ["9.9"]}, {"name_mover": "END"})
    with pytest.raises(ValueError, match="without a position"):
        Circuit({"name_mover": ["9.9"]}, {})
    with pytest.raises(ValueError, match="layer.head"):
        Circuit({"name_mover": ["9-9"]}, {"name_mover": "end"})
    with pytest.raises(TypeError, match="not bools"):
        Circuit({"name_mover": [(True, 1)]}, {"name_mover": "end"})
    with pytest.raises(ValueError, match=r"heads 9\.9 are not in this model"):
        Circuit({"name_mover": [Head(9, 9), "1.1"]}, {"name_mover": "end"}).check(tiny_model())
    with pytest.raises(ValueError, match=r"layers 0\.\.2"):
        Circuit({"name_mover": ["9.9"]}, {"name_mover": "end"}).check(tiny_model())
    both = Circuit({"a": ["1.1"], "b": ["1.1", "0.0"]}, {"a": "end", "b": "S2"})
    assert both.kept_positions()[(1, 1)] == ("end", "S2")
    assert both.classes_of((1, 1)) == ("a", "b")


# ---- mean ablation -----------------------------------------------------------------------


def test_keep_masks_are_per_prompt(setup):
    model, ioi, _, _ = setup
    masks = keep_masks(model, ioi, {(1, 2): ("S2",), (0, 1): None})
    s2 = ioi.word_idx["S2"]
    assert int(masks[1].sum()) == ioi.N, "one position per prompt, no cross product"
    assert masks[1][torch.arange(ioi.N), s2, 2].all()
    assert masks[0][:, :, 1].all() and int(masks[0].sum()) == masks[0][:, :, 1].numel()
    assert int(masks[2].sum()) == 0
    with pytest.raises(ValueError, match="valid keys"):
        keep_masks(model, ioi, {(1, 2): ("S3",)})


def test_full_keep_is_the_model_and_fast_logit_diff_is_exact(setup):
    model, ioi, _, ablation = setup
    with torch.no_grad():
        logits = model(ioi.toks)
    full = logits_to_ave_logit_diff(logits, ioi.answer_tokens, positions=ioi.word_idx["end"])
    assert float(ablation.logit_diff(None)) == pytest.approx(float(full), abs=1e-4)
    everything = ablation.all_heads_except([])
    assert float(ablation.logit_diff(everything)) == pytest.approx(float(full), abs=1e-4)


def test_ablating_everything_uses_per_template_means(setup, no_hooks_after):
    model, ioi, abc, ablation = setup
    no_hooks_after(model)
    _, cache = model.run_with_cache(abc.toks)
    hooks = []
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        means = torch.stack([z[ioi.template_idx == t].mean(0) for t in ioi.template_idx.tolist()])
        hooks.append((f"blocks.{layer}.attn.hook_z", lambda act, hook, m=means: m))
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(ioi.toks)
    expected = logits_to_ave_logit_diff(logits, ioi.answer_tokens, positions=ioi.word_idx["end"])
    assert float(ablation.logit_diff({})) == pytest.approx(float(expected), abs=1e-4)


def test_reference_must_cover_the_templates(setup):
    model, ioi, _, _ = setup
    small = IOIDataset(2, "BABA", seed=9, tokenizer=model)
    with pytest.raises(ValueError, match="not in the reference dataset"):
        MeanAblation.build(model, ioi, small.gen_flipped_prompts(ABC))
    with pytest.raises(ValueError, match="positions must align"):
        bos = IOIDataset(16, "mixed", seed=1, tokenizer=model, prepend_bos=True)
        MeanAblation.build(model, ioi, bos.gen_flipped_prompts(ABC))


def test_no_hook_survives_an_exception(setup, monkeypatch):
    model, ioi, _, ablation = setup

    def broken_block(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.blocks[2], "forward", broken_block)
    with pytest.raises(RuntimeError, match="boom"):
        ablation.logit_diff(SMALL.kept_positions())
    with pytest.raises(RuntimeError, match="boom"):
        backup_name_mover_experiment(ablation, [(2, 0)])
    assert hook_count(model) == 0


# ---- criteria ----------------------------------------------------------------------------


def test_faithfulness_completeness_minimality(setup, no_hooks_after):
    model, ioi, _, ablation = setup
    no_hooks_after(model)
    f = faithfulness(ablation, SMALL)
    assert f.f_model == pytest.approx(float(ablation.logit_diff(None)))
    assert f.ratio == pytest.approx(f.f_circuit / f.f_model)
    scores = completeness(ablation, SMALL, n_random=3, greedy_steps=2, seed=4)
    labels = [s.label for s in scores]
    assert labels == [
        "random 0",
        "random 1",
        "random 2",
        "class mover",
        "class helper",
        "class early",
        "greedy 1",
        "greedy 2",
    ]
    mover = scores[3]
    c_minus_k = float(ablation.logit_diff(SMALL.without([(2, 0), (2, 1)])))
    m_minus_k = float(ablation.logit_diff(ablation.all_heads_except([(2, 0), (2, 1)])))
    assert mover.score == pytest.approx(abs(c_minus_k - m_minus_k), abs=1e-5)
    assert [len(s.removed) for s in scores[-2:]] == [1, 2]
    again = completeness(ablation, SMALL, modes=("random",), n_random=3, seed=4)
    assert [s.removed for s in again] == [s.removed for s in scores[:3]]
    by_head = {s.label: s for s in minimality(ablation, SMALL)}
    assert by_head["1.3"].relative == pytest.approx(0.0, abs=1e-5), "W_O = 0: no effect"
    assert by_head["1.3"].removed == ((1, 1),), "K is the rest of the class"
    assert max(s.relative for s in by_head.values()) > 1e-3
    f_c = float(ablation.logit_diff(SMALL.kept_positions()))
    for s in minimality(ablation, SMALL, mode="greedy", greedy_steps=2):
        head = tuple(int(x) for x in s.label.split("."))
        alone = abs(float(ablation.logit_diff(SMALL.without([head]))) - f_c)
        assert s.score >= alone - 1e-5, "greedy keeps the best K seen, the empty set included"
    with pytest.raises(ValueError, match="random.*class.*greedy"):
        completeness(ablation, SMALL, modes=("all",))
    with pytest.raises(ValueError, match="class.*greedy"):
        minimality(ablation, SMALL, mode="random")


def test_backup_experiment(setup, no_hooks_after):
    model, ioi, abc, ablation = setup
    no_hooks_after(model)
    result = backup_name_mover_experiment(ablation, [(2, 0), "2.1"])
    assert result.ablated == (Head(2, 0), Head(2, 1))
    lost = float(result.dla_before[2, 0] + result.dla_before[2, 1])
    assert result.naive_prediction == pytest.approx(result.logit_diff_before - lost)
    assert all(h not in result.ablated for h, _ in result.backup_heads(-1e9))
    assert all(type(h) is Head for h, _ in result.backup_heads(-1e9))
    # The knockout by hand: both heads take their template mean at end only.
    _, cache = model.run_with_cache(abc.toks)
    z = cache["blocks.2.attn.hook_z"]
    means = torch.stack([z[ioi.template_idx == t].mean(0) for t in ioi.template_idx.tolist()])
    rows, end = torch.arange(ioi.N), ioi.word_idx["end"]

    def knock(act, hook):
        act[rows, end, :2] = means[rows, end, :2]
        return act

    with torch.no_grad(), model.hooks(fwd_hooks=[("blocks.2.attn.hook_z", knock)]):
        logits = model(ioi.toks)
    after = logits_to_ave_logit_diff(logits, ioi.answer_tokens, positions=end)
    assert result.logit_diff_after == pytest.approx(float(after), abs=1e-4)
    with pytest.raises(ValueError, match="empty"):
        backup_name_mover_experiment(ablation, [])
    with pytest.raises(ValueError, match="valid keys"):
        backup_name_mover_experiment(ablation, [(2, 0)], at="S9")
    with pytest.raises(ValueError, match=r"heads 7\.0 are not in this model"):
        backup_name_mover_experiment(ablation, ["7.0"])
    with pytest.raises(TypeError):  # Head.coerce's, or first the test-time annotation check's
        backup_name_mover_experiment(ablation, [(2.0, 1)])


# ---- the oracle's metric -------------------------------------------------------------------------
def test_rows_metric_is_the_ioi_metric_on_its_rows():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 11, generator=gen)
    answers = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])
    positions = torch.tensor([3, 2, 3, 1, 0])
    rows = torch.tensor([1, 3, 4])
    on_rows = make_rows_ioi_metric(2.0, -1.0, answers, positions, rows)
    expected = make_ioi_metric(2.0, -1.0, answers[rows], positions[rows])(logits[rows])
    assert float(on_rows(logits)) == pytest.approx(float(expected), abs=1e-6)
    everything = make_rows_ioi_metric(2.0, -1.0, answers, positions)
    assert float(everything(logits)) == pytest.approx(
        float(make_ioi_metric(2.0, -1.0, answers, positions)(logits)), abs=1e-6
    )
    for bad in ((1.5, 1.5), (float("inf"), 0.0)):
        with pytest.raises(ValueError, match="equal|finite"):
            make_rows_ioi_metric(*bad, answers, positions)


# ---- comparison --------------------------------------------------------------------------


def test_permutation_test_and_jaccard():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    noise = torch.randn(40, 2, 3, generator=gen)
    planted = noise.clone()
    planted[labels == 1, 1, 2] += 3.0
    strong = permutation_test(planted, labels, n_permutations=200, seed=1)
    null = permutation_test(noise, labels, n_permutations=200, seed=1)
    assert strong.p_value < 0.01 and null.p_value > 0.05
    assert strong.group_means.shape == (2, 2, 3)
    assert float(strong.group_means[1, 1, 2] - strong.group_means[0, 1, 2]) > 2.0
    again = permutation_test(planted, labels, n_permutations=200, seed=1)
    assert again.p_value == strong.p_value and torch.equal(again.null, strong.null)
    with pytest.raises(ValueError, match=">= 2 groups"):
        permutation_test(noise, torch.zeros(40, dtype=torch.long))
    with pytest.raises((ValueError, TypeError)):  # TypeError: the runtime shape check
        permutation_test(noise, labels[:10])
    assert jaccard([(1, 1), (2, 2)], [(2, 2), (3, 3)]) == pytest.approx(1 / 3)
    assert jaccard([], []) == 1.0


def test_group_labels(setup):
    _, ioi, _, _ = setup
    labels, names = group_labels(ioi, "family")
    assert names == ("BABA", "ABBA")
    assert torch.equal(labels, (ioi.template_idx >= 15).long())
    labels, names = group_labels(ioi, "template")
    assert len(names) == len(ioi.template_idx.unique()) == int(labels.max()) + 1
    with pytest.raises(ValueError, match="family.*template"):
        group_labels(ioi, "place")


def test_discovery_on_a_tiny_model_is_deterministic(setup, no_hooks_after):
    model, ioi, abc, _ = setup
    no_hooks_after(model)
    first = discover_circuit(PathPatchingOracle(model, ioi, abc), threshold=0.05)
    second = discover_circuit(PathPatchingOracle(model, ioi, abc), threshold=0.05)
    assert first.findings == second.findings and first.edges == second.edges
    assert (1, 3) not in first.heads(), "a head with W_O = 0 has no effect on anything"
    assert all(type(e.sender) is Head for e in first.edges)
    assert all(type(f.head) is Head for f in first.findings)
    with pytest.raises(ValueError, match="threshold must be > 0"):
        discover_circuit(PathPatchingOracle(model, ioi, abc), threshold=0.0)


# ---- the bundled model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_discovery(toy_model):
    return discover_model_circuit(toy_model, n_prompts=100, seed=0, min_faithfulness=0.8)


@pytest.mark.slow
def test_toy_circuit_is_faithful(toy_discovery):
    chosen, sweep = toy_discovery
    assert chosen.discovered.circuit is not None
    assert chosen.faithfulness >= 0.8, chosen.discovered.circuit.describe()
    assert chosen.n_heads < 12 or chosen.threshold == min(p.threshold for p in sweep)
    sizes = [p.n_heads for p in sorted(sweep, key=lambda p: -p.threshold)]
    assert sizes == sorted(sizes), "a lower threshold never finds fewer heads"


@pytest.mark.slow
def test_toy_circuit_classes_match_its_mechanism(toy_model, toy_discovery, no_hooks_after):
    """Structural facts measured independently of the discovery code."""
    no_hooks_after(toy_model)
    chosen, _ = toy_discovery
    circuit, findings = chosen.discovered.circuit, chosen.discovered.findings
    ioi = IOIDataset(100, "mixed", seed=0, tokenizer=toy_model)
    sources = ("IO", "IO+1", "S1", "S1+1", "S2", "end")
    direct = [f for f in findings if f.role == "logits"]
    assert direct, "the circuit has heads that write the answer"
    for f in direct:
        assert f.position == "end", "heads that write the answer act at end"
        attn = {s: float(ioi_attention(toy_model, ioi, "end", s)[f.head]) for s in sources}
        assert max(attn, key=attn.get) == f.attends_to, f
        assert attn[f.attends_to] > 0.5, "output heads attend sharply"
        if f.attends_to == "IO":
            assert f.cls in ("name_mover", "negative_name_mover")
    top_direct = max(direct, key=lambda f: abs(f.effect))
    assert top_direct.effect < 0, "the strongest output head raises the IO logit"
    for f in findings:
        homes = [c for c in circuit.classes_of(f.head) if c.split("@")[0] == f.cls]
        assert [circuit.positions[c] for c in homes] == [f.position]
        if f.role != "logits":
            assert f.head[0] < toy_model.cfg.n_layers - 1, "senders sit below their receivers"
            if f.attends_to == "previous":
                assert f.cls == "previous_token"
    receivers_of = {e.sender: e.receivers for e in chosen.discovered.edges if e.input != "logits"}
    for sender, receivers in receivers_of.items():
        assert all(sender[0] < r[0] for r in receivers)


@pytest.mark.slow
def test_toy_criteria_and_family_comparison(toy_model, toy_discovery):
    chosen, _ = toy_discovery
    circuit = chosen.discovered.circuit
    ioi = IOIDataset(60, "mixed", seed=0, tokenizer=toy_model)
    abc = ioi.gen_flipped_prompts(ABC)
    ablation = MeanAblation.build(toy_model, ioi, abc)
    classes = completeness(ablation, circuit, modes=("class",))
    assert len(classes) == len(circuit.heads)
    assert all(s.score >= 0 for s in classes)
    assert len(minimality(ablation, circuit)) == len(circuit)
    comparison = compare_groups(
        PathPatchingOracle(toy_model, ioi, abc), chosen.threshold, by="family", n_permutations=100
    )
    assert comparison.groups == ("BABA", "ABBA")
    assert comparison.jaccard.shape == (2, 2) and torch.allclose(
        comparison.jaccard.diag(), torch.ones(2)
    )
    assert 0 < comparison.test.p_value <= 1


def test_a_given_circuit_draws_like_a_discovered_one() -> None:
    from ioi.circuit import gpt2_small_circuit
    from ioi.circuit.discovery import DiscoveredCircuit

    paper = gpt2_small_circuit()
    found = DiscoveredCircuit.from_spec(paper)
    assert found.circuit is paper and found.edges == ()
    assert found.heads() == set(paper.all_heads())
    assert {f.cls for f in found.findings} == set(paper.heads)
    assert all(f.position == paper.positions[f.cls] for f in found.findings)

"""What the course's text says about the toy model's numbers, re-measured with the library.

Each test names the section and the sentence it checks, and uses the section's own dataset
(size, prompt type, seed), so a retrained toy model or a changed library that breaks a claim
of the prose fails here, not silently in a notebook nobody rereads.
"""

from __future__ import annotations

import functools

import pytest
import torch

from ioi import heads, patching, path_patching
from ioi.circuit import (
    Circuit,
    MeanAblation,
    PathPatchingOracle,
    backup_name_mover_experiment,
    discover_circuit,
)
from ioi.circuit.ablation import keep_masks, logit_diff_with_hooks, replace_where
from ioi.dataset import IOIDataset
from ioi.head import Head
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.processing import processing_effects
from ioi.reference import reference_figures

pytestmark = pytest.mark.slow
ABC = "ABB->XYZ, BAB->XYZ"


@functools.lru_cache(maxsize=8)
def run(n: int, prompt_type: str, seed: int):
    """The section's dataset, its ABC version, both runs and the normalised metric."""
    from ioi.models import load_model

    model = load_model("toy", device="cpu")
    ds = IOIDataset(n, prompt_type, seed=seed, tokenizer=model)
    abc = ds.gen_flipped_prompts(ABC)
    end, answers = ds.word_idx["end"], ds.answer_tokens
    with torch.no_grad():
        logits, cache = model.run_with_cache(ds.toks)
        corrupted = model(abc.toks)
    clean_ld = logits_to_ave_logit_diff(logits, answers, positions=end)
    abc_ld = logits_to_ave_logit_diff(corrupted, answers, positions=end)
    metric = make_ioi_metric(clean_ld, abc_ld, answers, end)
    return model, ds, abc, logits, cache, float(clean_ld), float(abc_ld), metric


# ---- section 1 -------------------------------------------------------------------------


def test_01_the_last_column_is_never_a_predicting_position() -> None:
    _, ds, *_ = run(32, "mixed", 1)
    assert not bool((ds.word_idx["end"] == ds.toks.shape[1] - 1).any())


def test_01_every_prompt_positive_and_several_times_gpt2() -> None:
    _, ds, _, logits, _, clean_ld, abc_ld, _ = run(32, "mixed", 1)
    per_prompt = logits_to_ave_logit_diff(
        logits, ds.answer_tokens, per_prompt=True, positions=ds.word_idx["end"]
    )
    assert bool((per_prompt > 0).all())
    assert clean_ld > 3 * reference_figures()["paper"]["mean_logit_diff_ioi_distribution"]
    assert abs(abc_ld) < 0.1 * clean_ld  # "below a tenth of the clean one"


# ---- section 2 -------------------------------------------------------------------------


def test_02_the_unembedding_bias_term_is_small() -> None:
    """'a few hundredths averaged over this section's prompts ... up to a few tenths on a
    single prompt'."""
    model, ds, *_ = run(32, "mixed", 1)
    with torch.no_grad():
        bias = model.b_U[ds.answer_tokens[:, 0]] - model.b_U[ds.answer_tokens[:, 1]]
    assert 0.01 <= abs(float(bias.mean())) < 0.1
    assert float(bias.abs().max()) < 0.5


def test_02_layer_0_heads_at_s2_attend_to_the_io_and_one_to_the_previous_token() -> None:
    """'the layer-0 heads printed above attend, at S2, to the IO ... The S1+1 -> S1 facet shows
    layer-0 heads that act as previous-token heads on these prompts.'"""
    model, ds, _, _, cache, *_ = run(32, "mixed", 1)
    assert float(heads.ioi_attention(model, ds, "S2", "IO", cache)[0].max()) > 0.9
    assert float(heads.ioi_attention(model, ds, "S1+1", "S1", cache)[0].max()) > 0.9


def test_02_late_heads_attend_from_end_to_s2() -> None:
    model, ds, _, _, cache, *_ = run(32, "mixed", 1)
    to_s2 = heads.ioi_attention(model, ds, "end", "S2", cache)
    assert bool((to_s2[1:] >= 0.9).all()), to_s2


def test_02_what_undoing_each_processing_step_moves() -> None:
    model, ds, abc, *_ = run(32, "mixed", 1)
    moved = {e.step: set(e.moved()) for e in processing_effects(model, ds, abc)}
    assert moved["fold_ln"] >= {"head_dla"} and not moved["fold_ln"] & {"logits", "z_norm"}
    assert moved["center_writing_weights"] == {"output_norm"}
    assert moved["center_unembed"] == {"logits", "io_logit_dla"}
    assert moved["refactor_factored_attn_matrices"] == {"z_norm"}
    assert not any(m & {"logit_diff", "qkv_patching"} for m in moved.values())


# ---- section 3 -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def one_template():
    """Section 3's batch: eight prompts of the most common template of a BABA dataset."""
    model, *_ = run(16, "mixed", 1)
    big = IOIDataset(N=120, prompt_type="BABA", seed=3, tokenizer=model)
    big_abc = big.gen_flipped_prompts(ABC)
    rows = max(big.groups, key=len)[:8]
    length = int(big.word_idx["end"][rows[0]]) + 1
    clean, corrupted = big.toks[rows, :length], big_abc.toks[rows, :length]
    end, answers = big.word_idx["end"][rows], big.answer_tokens[rows]
    with torch.no_grad():
        logits, cache = model.run_with_cache(clean)
        metric = make_ioi_metric(
            logits_to_ave_logit_diff(logits, answers, positions=end),
            logits_to_ave_logit_diff(model(corrupted), answers, positions=end),
            answers,
            end,
        )
    words = {k: int(v[rows[0]]) for k, v in big.word_idx.items()}
    return model, clean, corrupted, cache, metric, words


def test_03_layer_0_moves_only_at_names_and_the_last_layer_most_at_end() -> None:
    model, clean, corrupted, cache, metric, words = one_template()
    grid = patching.get_act_patch_resid_pre(model, corrupted, cache, metric).cpu()
    differs = (clean != corrupted).any(0)  # the name positions
    assert grid[0, ~differs].abs().max() < 1e-5
    assert int(grid[-1].abs().argmax()) == words["end"]
    assert float(grid[-1, words["S2"]]) > 0.1  # "the toy still reads part of it from S2 there"


def test_03_layer_0_heads_matter_at_s2_later_heads_at_end() -> None:
    model, _, corrupted, cache, metric, words = one_template()
    by_pos = patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric).cpu()
    where = [divmod(int(by_pos[layer].abs().argmax()), model.cfg.n_heads)[0] for layer in range(3)]
    assert where == [words["S2"], words["end"], words["end"]]


def test_03_flipped_subject_against_abc() -> None:
    model, ds, _, _, cache, clean_ld, abc_ld, metric = run(16, "mixed", 1)
    flipped = ds.gen_flipped_prompts("ABB->ABA, BAB->BAA")
    end, answers = ds.word_idx["end"], ds.answer_tokens
    with torch.no_grad():
        flipped_ld = float(logits_to_ave_logit_diff(model(flipped.toks), answers, positions=end))
    assert flipped_ld < 0
    assert abs(flipped_ld + clean_ld) < 0.2 * clean_ld  # "roughly the clean one negated"
    grids = [
        patching.get_act_patch_attn_head_out_all_pos(model, toks, cache, m).cpu()
        for toks, m in (
            (ds.gen_flipped_prompts(ABC).toks, metric),
            (flipped.toks, make_ioi_metric(clean_ld, flipped_ld, answers, end)),
        )
    ]
    assert 0.5 < patching.correlation(*grids) < 0.999  # similar, not identical
    assert 0.0 <= float(grids[1].min()) and float(grids[1].max()) <= 1.0


# ---- section 4 -------------------------------------------------------------------------


def test_04_no_direct_path_costs_a_tenth_and_some_raise_the_metric() -> None:
    model, ds, abc, *_, metric = run(16, "mixed", 1)
    effect = path_patching.get_path_patch_head_to_final_resid_post(model, metric, abc, ds) - 1
    assert float(effect.min()) > -0.1
    assert bool((effect > 0).any())
    assert {str(Head(*divmod(i, 4))) for i in range(12) if effect.flatten()[i] < -0.02} == {
        "1.0",
        "1.1",
        "2.1",
        "2.2",
    }


@functools.lru_cache(maxsize=1)
def movers():
    model, ds, abc, *_ = run(16, "mixed", 1)
    found = discover_circuit(PathPatchingOracle(model, ds, abc), 0.02)
    return [f.head for f in found.findings if f.role == "logits" and f.effect < 0]


def test_04_values_feed_the_movers_most_and_queries_least() -> None:
    model, ds, abc, *_, metric = run(16, "mixed", 1)
    receivers = movers()
    top = max(layer for layer, _ in receivers)
    largest = {
        part: float(
            (
                path_patching.get_path_patch_head_to_heads(receivers, part, model, metric, abc, ds)[
                    :top
                ]
                - 1
            )
            .abs()
            .max()
        )
        for part in "qkv"
    }
    assert largest["q"] < largest["k"] < largest["v"], largest


def test_04_only_the_values_cost_more_than_a_few_percent() -> None:
    """'The paths into the queries and keys cost a few percent of the gap at most; only the
    values' strongest senders cost more' (section 4, reading the toy model)."""
    model, ds, abc, *_, metric = run(16, "mixed", 1)
    receivers = movers()
    top = max(layer for layer, _ in receivers)
    largest = {
        part: float(
            (path_patching.get_path_patch_head_to_heads(receivers, part, model, metric, abc, ds))[
                :top
            ]
            .sub(1)
            .abs()
            .max()
        )
        for part in "qkv"
    }
    assert largest["q"] < 0.05 and largest["k"] < 0.05 and largest["v"] > 0.05, largest


def test_04_a_previous_token_head_feeds_the_keys_io_readers_the_values() -> None:
    """'layer-0 heads at S2 attend to the name that is not repeated (the IO) and write it into
    S2's residual stream, and a previous-token head shapes what S2 offers as a key' (section
    4), and section 5's 'section 4 found the toy's previous-token head among the senders into
    the movers' keys'."""
    model, ds, abc, _, cache, *_, metric = run(16, "mixed", 1)
    receivers = movers()
    top = max(layer for layer, _ in receivers)
    s2_to_io = heads.ioi_attention(model, ds, "S2", "IO", cache)
    previous = heads.ioi_attention(model, ds, "S1+1", "S1", cache)

    def strongest(part: str) -> Head:
        grid = path_patching.get_path_patch_head_to_heads(receivers, part, model, metric, abc, ds)
        return Head(*divmod(int(grid[:top].flatten().argmin()), model.cfg.n_heads))

    key, value = strongest("k"), strongest("v")
    assert key.layer == 0 and previous[key] > 0.5, key
    assert value.layer == 0 and s2_to_io[value] > 0.5, value


def test_04_senders_at_s2_cannot_reach_queries_at_end() -> None:
    model, ds, abc, *_, metric = run(16, "mixed", 1)
    receivers = movers()
    top = max(layer for layer, _ in receivers)
    grid = path_patching.get_path_patch_head_to_heads(
        receivers, "q", model, metric, abc, ds, sender_positions="S2", receiver_positions="end"
    )
    assert float((grid[:top] - 1).abs().max()) < 1e-5


# ---- section 5 -------------------------------------------------------------------------


def test_05_the_copiers_are_in_layer_0() -> None:
    model, *_ = run(60, "BABA", 2)
    scores = heads.get_copying_scores(model)
    assert float(scores[0].max()) > 0.5 and float(scores[1:].max()) < 0.1


def test_05_random_token_detectors_find_little() -> None:
    model, *_ = run(60, "BABA", 2)
    for grid in heads.attention_detector_scores(model, 20, 16, 0).values():
        assert float(grid.max()) < 0.2


def test_05_the_top_mover_looks_at_s_and_writes_the_io() -> None:
    model, ds, _, _, cache, *_ = run(60, "BABA", 2)
    dla = heads.per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"])
    mover = divmod(int(dla.flatten().argmax()), model.cfg.n_heads)
    data = heads.name_mover_scatter(model, ds, *mover)
    assert float(data.attn_to_io.mean()) < 0.05 and float(data.attn_to_s.mean()) > 0.9
    assert float(data.proj_io.mean()) > 1.0
    reader = (0, int(heads.ioi_attention(model, ds, "S2", "IO")[0].argmax()))
    data = heads.name_mover_scatter(model, ds, *reader)
    assert float(torch.corrcoef(torch.stack([data.attn_to_io, data.proj_io]))[0, 1]) > 0.8


def test_05_previous_token_heads_do_more_at_s2_than_at_s1_plus_1() -> None:
    model, ds, abc, *_, metric = run(60, "BABA", 2)
    direct = path_patching.get_path_patch_head_to_final_resid_post(model, metric, abc, ds) - 1
    attention = {p: heads.ioi_attention(model, ds, *p) for p in (("S2", "IO"), ("S1+1", "S1"))}
    every = [Head(*divmod(i, 4)) for i in range(12)]
    previous = [h for h in every if h.layer == 0 and attention["S1+1", "S1"][h] > 0.5]
    circuit = Circuit(
        heads={
            "mover": [h for h in every if direct[h] < -0.02],
            "s2_writer": [h for h in every if h.layer == 0 and attention["S2", "IO"][h] > 0.5],
            "previous_token": previous,
        },
        positions={"mover": "end", "s2_writer": "S2", "previous_token": "S1+1"},
    )
    ablation = MeanAblation.build(model, ds, abc)
    assert previous
    for head in previous:
        f = {}
        for position in ("S1+1", "S2", "end"):
            keep = circuit.kept_positions()
            keep[head] = (position,)
            f[position] = float(ablation.logit_diff(keep))
        assert max(f, key=f.get) == "S2" and f["S2"] > f["S1+1"], (head, f)


# ---- section 6 -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def further():
    model, ds, abc, _, cache, *_ = run(48, "mixed", 5)
    ablation = MeanAblation.build(model, ds, abc)
    dla = heads.per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"])
    movers = [Head(*divmod(i, 4)) for i in dla.flatten().argsort(descending=True)[:2].tolist()]
    s2_to_io = heads.ioi_attention(model, ds, "S2", "IO")[0]
    signal = [Head(0, h) for h in range(4) if s2_to_io[h] > 0.5]
    return model, ds, ablation, movers, signal


def test_06_backups_recover_more_than_the_naive_prediction() -> None:
    _, _, ablation, movers, _ = further()
    backup = backup_name_mover_experiment(ablation, movers, "end")
    assert backup.logit_diff_after > backup.naive_prediction
    assert backup.backup_heads(0.1)


def test_06_the_signal_heads_carry_a_token_signal() -> None:
    model, ds, _, _, signal = further()

    def patched(source: IOIDataset) -> float:
        with torch.no_grad():
            _, source_cache = model.run_with_cache(source.toks)
        masks = keep_masks(model, ds, {h: ("S2",) for h in signal})
        hooks = [
            (f"blocks.{layer}.attn.hook_z", replace_where(mask, source_cache["z", layer]))
            for layer, mask in enumerate(masks)
            if mask.any()
        ]
        return float(logit_diff_with_hooks(model, ds, hooks).mean())

    none = patched(ds)
    position = patched(ds.gen_flipped_prompts("ABB->BAB, BAB->ABB"))
    token = patched(ds.gen_flipped_prompts("ABB->CDD, BAB->DCD"))
    assert abs(position - none) < 0.05 * none
    assert token < 0.5 * none


def test_06_the_toy_has_a_few_hundred_edges() -> None:
    """'the toy has a few hundred edges (`len(graph.edges)`), GPT-2 small tens of thousands'."""
    from ioi.edges import EdgeGraph

    model, *_ = run(48, "mixed", 5)
    assert 100 <= len(EdgeGraph.from_model(model).edges) < 1000
    assert 10_000 <= reference_figures()["later_work"]["gpt2_small_total_edges"] < 100_000


def test_06_template_groups_hold_few_prompts() -> None:
    """'48 prompts over the number of template groups the cell prints leaves only a few prompts
    per group' and 'one or two prompts per template on average' over thirty templates."""
    from ioi.circuit.compare import group_labels
    from ioi.dataset import ABBA_TEMPLATES, BABA_TEMPLATES

    _, ds, *_ = run(48, "mixed", 5)
    _, names = group_labels(ds, "template")
    assert len(BABA_TEMPLATES) + len(ABBA_TEMPLATES) == 30
    assert 1 <= len(ds.toks) / len(names) <= 2, len(names)


def test_06_eap_and_exact_part_most_on_edges_into_a_query_or_key() -> None:
    """'the two edges where the columns part most are edges into a query or a key ... exact
    patching finds them many times larger than EAP does' (the six top EAP edges)."""
    from ioi.edges import EdgeGraph, edge_attribution, exact_edge_patching

    model, ds, abc, _, _, clean_ld, abc_ld, _ = run(48, "mixed", 5)
    end = ds.word_idx["end"]
    per_prompt = make_ioi_metric(clean_ld, abc_ld, ds.answer_tokens, end, reduce="none")

    def metric(logits):
        return per_prompt(logits).mean()

    graph = EdgeGraph.from_model(model)
    eap = edge_attribution(model, graph, ds.toks, abc.toks, metric)
    shown = graph.subset(eap.top(6))
    exact = exact_edge_patching(model, shown, ds.toks, abc.toks, metric).scores
    estimate = torch.tensor([eap.score(e) for e in shown.edges], dtype=exact.dtype)
    worst = (exact - estimate).abs().argsort(descending=True)[:2].tolist()
    for i in worst:
        assert shown.edges[i].receiver.kind in ("q", "k"), shown.edges[i]
        assert abs(float(exact[i])) > 5 * abs(float(estimate[i])), shown.edges[i]

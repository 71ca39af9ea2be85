"""The patching benchmark's bookkeeping (not its timings): sampling, comparing with TransformerLens."""

from __future__ import annotations

import pytest
import torch

from ioi import bench
from ioi.bench import patching, workload
from ioi.metrics import make_logit_diff_metric
from ioi.testing import D_VOCAB, logit_diff, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    clean, corrupted = token_pair(seed=11)
    _, cache = model.run_with_cache(clean)
    return model, corrupted, cache


@pytest.mark.parametrize("name", list(patching.BENCHMARKS))
@pytest.mark.parametrize("tl_sites", [None, 5])
def test_bench_rows_agree_with_transformer_lens(setup, name, tl_sites):
    model, corrupted, cache = setup
    device = torch.device("cpu")
    row = patching.bench_one(name, model, corrupted, cache, logit_diff, device, 1, tl_sites, seed=0)
    assert row.max_abs_diff < 1e-4, f"{name}: ours and TransformerLens disagree"
    assert row.max_abs_value > 0
    assert row.tl_seconds > 0 and row.ours_seconds > 0
    assert row.tl_note == "full" if tl_sites is None else "extrapolated" in row.tl_note


@pytest.mark.parametrize("kind", patching.METRIC_KINDS)
def test_each_metric_kind_is_the_logit_difference_and_agrees_with_transformer_lens(setup, kind):
    model, corrupted, cache = setup
    answers = torch.randint(
        0, D_VOCAB, (corrupted.shape[0], 2), generator=torch.Generator().manual_seed(4)
    )
    logits = model(corrupted)
    expected = make_logit_diff_metric(answers)(logits)
    metric = patching.bench_metric(kind, answers, baselines=(0.5, 2.5))
    got = metric(logits)
    if kind == "arena":
        got = got * 2.0 + 0.5  # undo the normalisation by (corrupted, clean) = (0.5, 2.5)
    torch.testing.assert_close(got, expected)
    assert hasattr(metric, "logit_positions") == (kind == "declared")
    device = torch.device("cpu")
    row = patching.bench_one(
        "attn_head_out_all_pos", model, corrupted, cache, metric, device, 1, None, 0, kind
    )
    assert row.metric == kind and row.max_abs_diff < 1e-4 and row.max_abs_value > 0


def test_an_unknown_metric_kind_is_refused():
    with pytest.raises(ValueError, match="declared, plain, arena"):
        patching.bench_metric("softmax", torch.zeros(2, 2, dtype=torch.long))


def test_sampled_sites_are_distinct_and_in_range():
    part = patching.BENCHMARKS["attn_head_out_by_pos"][0]
    frame = patching._sample_sites(part, torch.Size([3, 5, 4]), 7, seed=1)
    assert list(frame.columns) == ["layer", "pos", "head"] and len(frame) == 7
    assert len({tuple(row) for row in frame.itertuples(index=False)}) == 7
    assert frame["layer"].max() < 3 and frame["pos"].max() < 5 and frame["head"].max() < 4


def test_prompts_share_bos_and_weights_are_seeded():
    clean, corrupted, answers = workload.random_prompts(4, 100, seed=3)
    assert clean.shape == corrupted.shape == (4, workload.N_POS) and answers.shape == (4, 2)
    assert torch.all(clean[:, 0] == workload.BOS) and torch.all(corrupted[:, 0] == workload.BOS)
    again = workload.random_prompts(4, 100, seed=3)
    assert torch.equal(clean, again[0])


def test_bad_arguments_exit_with_status_2(capsys):
    assert bench.main(["patching", "--device", "tpu"]) == bench.EXIT_USAGE
    assert "unknown device" in capsys.readouterr().out


def test_profile_prints_where_our_time_goes(setup, capsys):
    model, corrupted, cache = setup
    device = torch.device("cpu")
    args = ("attn_head_out_all_pos", model, corrupted, cache, logit_diff, device, 1, 4, 0)
    patching.bench_one(*args, profile=False)
    assert "cProfile" not in capsys.readouterr().out
    row = patching.bench_one(*args, profile=True)
    out = capsys.readouterr().out
    assert "cProfile of ours (attn_head_out_all_pos, declared)" in out
    assert "tottime" in out and "function calls" in out
    assert row.max_abs_diff < 1e-4

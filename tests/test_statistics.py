"""`ioi.statistics`: the seeded bootstrap, its standard error, coverage and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from ioi.statistics import Estimate, bootstrap, check_options, percentiles, resample_counts


def normal(seed: int, shape=(40,), mean=0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64) + mean


def test_reproducible_for_a_seed_and_different_for_another():
    values = normal(0, (3, 30))
    a, b = bootstrap(values, seed=5), bootstrap(values, seed=5)
    c = bootstrap(values, seed=6)
    assert torch.equal(a.low, b.low) and torch.equal(a.high, b.high)
    assert not torch.equal(a.low, c.low)
    assert torch.equal(a.mean, c.mean)  # the point estimate does not depend on the seed


def test_global_rng_is_left_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    bootstrap(normal(1), seed=0)
    assert torch.equal(torch.rand(1), before)


def test_constant_series_gives_a_point():
    values = torch.full((4, 25), 0.1, dtype=torch.float64)
    est = bootstrap(values)
    assert torch.equal(est.low, est.mean) and torch.equal(est.high, est.mean)
    assert torch.equal(est.se, torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(est.mean, torch.full((4,), 0.1, dtype=torch.float64))


def test_mean_and_se_by_hand():
    values = [1.0, 2.0, 4.0, 7.0, 11.0]
    est = bootstrap(torch.tensor(values))
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert est.mean.item() == pytest.approx(mean)
    assert est.se.item() == pytest.approx(sd / math.sqrt(5))
    assert est.n == 5 and est.level == 0.95 and est.method == "percentile bootstrap"


def test_resampled_means_match_a_plain_loop():
    """The counts-matrix means equal averaging each resample's drawn prompts by hand."""
    values = normal(2, (2, 12))
    counts = resample_counts(12, resamples=7, seed=3)
    gen = torch.Generator().manual_seed(3)
    index = torch.randint(0, 12, (7, 12), generator=gen)
    by_hand = torch.stack([values[:, idx].mean(-1) for idx in index], -1)  # [2, 7]
    assert torch.equal(counts.sum(-1), torch.full((7,), 12.0, dtype=torch.float64))
    est = bootstrap(values, resamples=7, seed=3, level=0.5)
    low, high = percentiles(by_hand, 0.5)
    torch.testing.assert_close(est.low, low, atol=1e-12, rtol=0)
    torch.testing.assert_close(est.high, high, atol=1e-12, rtol=0)


def test_percentiles_match_torch_quantile():
    draws = normal(4, (3, 101))
    low, high = percentiles(draws, 0.9)
    torch.testing.assert_close(low, torch.quantile(draws, 0.05, dim=-1))
    torch.testing.assert_close(high, torch.quantile(draws, 0.95, dim=-1))


def test_coverage_on_normal_data():
    """About 95% of 200 seeded datasets' intervals contain the true mean (loose bounds)."""
    true_mean = 1.5
    hits = 0
    for seed in range(200):
        est = bootstrap(normal(seed, (60,), true_mean), resamples=500, seed=seed)
        hits += bool(est.low <= true_mean <= est.high)
    assert 0.88 <= hits / 200 <= 0.99, hits


def test_narrower_at_lower_level():
    values = normal(7, (50,))
    wide, narrow = bootstrap(values, level=0.99), bootstrap(values, level=0.5)
    assert narrow.high - narrow.low < wide.high - wide.low


def test_statistic_of_several_series():
    a, b = normal(8, (3, 20), 5.0), normal(9, (20,), 1.0)
    est = bootstrap([a, b], lambda x, y: x / y)
    torch.testing.assert_close(est.mean, a.mean(-1) / b.mean(-1))
    assert bool((est.low <= est.mean).all() and (est.mean <= est.high).all())
    assert bool((est.se > 0).all())


def test_excludes_zero_and_describe():
    values = torch.stack([normal(10, (30,), 3.0), normal(11, (30,), 0.0)])
    est = bootstrap(values)
    assert est.excludes_zero().tolist() == [True, False]
    assert "95% percentile bootstrap" in est.describe() and "n=30" in est.describe()
    assert "CI" in str(bootstrap(values[0]))
    assert isinstance(est, Estimate) and est.shape == (2,)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(level=1.0), ValueError, "strictly between 0 and 1"),
        (dict(level=0), ValueError, "strictly between 0 and 1"),
        (dict(resamples=0), ValueError, "at least 1"),
    ],
)
def test_bad_options_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        bootstrap(normal(0), **kwargs)


@pytest.mark.parametrize(
    "level, resamples, seed, match",
    [
        ("95%", 10, 0, "level must be a number in \\(0, 1\\)"),
        (True, 10, 0, "level must be a number"),
        (0.9, 10.0, 0, "resamples must be an int >= 1"),
        (0.9, 10, 1.5, "seed must be an int"),
    ],
)
def test_wrong_types_raise_type_error(level, resamples, seed, match):
    """`check_options` is what `bootstrap` runs first (outside the test-time type checker)."""
    with pytest.raises(TypeError, match=match):
        check_options(level, resamples, seed)
    with pytest.raises(TypeError):
        bootstrap(normal(0), level=level, resamples=resamples, seed=seed)


def test_bad_values_raise():
    with pytest.raises(TypeError):
        bootstrap([1.0, 2.0])
    with pytest.raises(TypeError, match="non-empty list"):
        bootstrap(())
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="float tensor"):
        bootstrap(torch.arange(5))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="different numbers of prompts"):
        bootstrap([normal(0, (5,)), normal(1, (6,))], lambda a, b: a - b)
    with pytest.raises(ValueError, match="not finite"):
        bootstrap([normal(0, (5,)), torch.zeros(5)], lambda a, b: a / b)


def test_grid_at_once_equals_each_cell_alone():
    """One resampling table serves every cell: the grid's interval is each cell's own."""
    values = normal(12, (2, 3, 15))
    grid = bootstrap(values, seed=4)
    for i in range(2):
        for j in range(3):
            one = bootstrap(values[i, j], seed=4)
            for name in ("mean", "se", "low", "high"):
                torch.testing.assert_close(getattr(grid, name)[i, j], getattr(one, name))

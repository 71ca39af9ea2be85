"""Training with SAELens's trainer: reproducible from the seed, both architectures, it learns."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, TopKSAE

from ioi.features import SAESpec, train_sae, train_saes
from ioi.features.activations import ioi_and_abc
from ioi.features.quality import variance_explained
from ioi.features.train import activation_batches

D_IN = 16


@pytest.fixture(scope="module")
def sparse_data():
    """Tokens that are sparse sums of 32 fixed directions: an SAE can explain them well."""
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(32, D_IN, generator=gen)
    codes = torch.rand(4096, 32, generator=gen) * (torch.rand(4096, 32, generator=gen) < 0.1)
    return codes @ directions


SMALL = dict(d_sae=32, steps=150, batch_size=128, lr=3e-3)


@pytest.mark.parametrize(
    "spec, cls",
    [
        (SAESpec(architecture="topk", k=4, **SMALL), TopKSAE),
        (SAESpec(architecture="standard", l1_coefficient=0.01, **SMALL), StandardSAE),
    ],
)
def test_same_seed_same_weights(sparse_data, spec, cls):
    before = torch.random.get_rng_state()
    a = train_sae(sparse_data, spec, seed=1, hook_name="blocks.0.hook_resid_pre")
    assert torch.equal(torch.random.get_rng_state(), before), "training moved the global RNG"
    b = train_sae(sparse_data, spec, seed=1)
    c = train_sae(sparse_data, spec, seed=2)
    assert isinstance(a, cls)
    for name, param in a.state_dict().items():
        assert torch.equal(param, b.state_dict()[name]), name
    assert not torch.equal(a.W_enc, c.W_enc)
    assert a.cfg.metadata.hook_name == "blocks.0.hook_resid_pre"
    with torch.no_grad():
        fve = variance_explained(sparse_data, a.decode(a.encode(sparse_data)))
    assert fve > 0.6, f"the SAE did not learn: variance explained {fve:.3f}"


def test_topk_keeps_k_features(sparse_data):
    sae = train_sae(sparse_data, SAESpec(architecture="topk", k=3, **SMALL))
    with torch.no_grad():
        active = (sae.encode(sparse_data) != 0).sum(-1)
    assert active.max() <= 3


def test_train_saes_on_collected_activations(toy_model):
    from ioi.features import collect_activations

    names = ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]
    acts = collect_activations(toy_model, ioi_and_abc(toy_model, 8, seed=5), names, progress=False)
    spec = SAESpec(d_sae=64, k=4, steps=5, batch_size=32)
    saes = train_saes(acts, {name: spec for name in names}, model_name="ioi-toy")
    assert list(saes) == names
    assert all(s.cfg.d_in == toy_model.cfg.d_model for s in saes.values())
    with pytest.raises(ValueError, match="no activations for"):
        train_saes(acts, {"blocks.0.hook_resid_pre": spec})


def test_batches_are_seeded_permutations():
    acts = torch.arange(10.0)[:, None]
    first = torch.cat([next(it) for it in [activation_batches(acts, 5, seed=0)] for _ in range(2)])
    assert sorted(first.flatten().tolist()) == list(range(10))  # one epoch: every row once
    again = activation_batches(acts, 5, seed=0)
    assert torch.equal(torch.cat([next(again), next(again)]), first)
    with pytest.raises(ValueError, match="at least batch_size=20"):
        next(activation_batches(acts, 20, seed=0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(architecture="gated"), "unknown architecture 'gated'.*topk, standard"),
        (dict(d_sae=0), "d_sae must be a positive int"),
        (dict(k=500, d_sae=256), "k=500 is more than d_sae=256"),
        (dict(lr=-1.0), "lr must be a positive number"),
    ],
)
def test_bad_specs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAESpec(**kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_activations_are_refused(sparse_data, bad):
    acts = sparse_data.clone()
    acts[3, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        train_sae(acts, SAESpec(architecture="topk", k=4, **SMALL))


def test_toy_recipe_matches_its_docstring():
    """The numbers the module docstring states are the recipe's."""
    from ioi.features import train

    assert train.TOY_SPEC.d_sae == 256 and train.TOY_SPEC.k == 16
    assert train.TOY_SPEC.architecture == "topk"
    assert 4 * train.TOY_TRAIN_PROMPTS == 6000  # IOI + ABC, each with and without BOS
    assert "256 features, k=16" in train.__doc__ and "6,000" in train.__doc__


def test_command_line_lists_its_commands(capsys):
    from ioi.features.__main__ import main

    assert main([]) == 2
    assert "python -m ioi.features train" in capsys.readouterr().err

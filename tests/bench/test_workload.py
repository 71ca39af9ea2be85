"""The benchmarks' shared workload: seeded weights and prompts, corrupted where asked."""

from __future__ import annotations

import torch

from ioi.bench import workload

SMALL = dict(n_layers=1, n_heads=2, d_model=16, d_head=8, d_mlp=32)


def test_model_weights_are_seeded_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = workload.gpt2_shaped_model(torch.device("cpu"), seed=1, shape=SMALL)
    assert torch.equal(state, torch.random.get_rng_state()), "the global RNG was used"
    b = workload.gpt2_shaped_model(torch.device("cpu"), seed=1, shape=SMALL)
    c = workload.gpt2_shaped_model(torch.device("cpu"), seed=2, shape=SMALL)
    assert a.cfg.d_vocab == workload.D_VOCAB and a.cfg.n_layers == 1
    assert torch.equal(a.W_Q, b.W_Q) and not torch.equal(a.W_Q, c.W_Q)
    assert float(a.b_Q.detach().abs().max()) == 0.0
    assert float(a.blocks[0].ln1.w.detach().min()) == 1.0


def test_changed_positions_are_the_only_differences():
    clean, corrupted, _ = workload.random_prompts(50, 1000, seed=0, changed=(2, 4, 9))
    differ = (clean != corrupted).any(0).nonzero().flatten().tolist()
    assert differ == [2, 4, 9]
    assert torch.all(clean[:, 0] == workload.BOS) and torch.all(corrupted[:, 0] == workload.BOS)

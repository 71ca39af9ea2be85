import random

import numpy as np
import pytest
import torch

from ioi.dataset import IOIDataset, flip_seed, parse_flip
from ioi.templates import ABBA_TEMPLATES, BABA_TEMPLATES
from ioi.tokenizer import gpt2_tokenizer


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


def decode_at(ds, key, i):
    return ds.tokenizer.decode(ds.toks[i, ds.word_idx[key][i]])


@pytest.mark.parametrize("prepend_bos", [False, True])
@pytest.mark.parametrize("prompt_type", ["BABA", "ABBA", "mixed"])
def test_word_positions_hold_the_words_they_claim(prompt_type, prepend_bos):
    ds = IOIDataset(N=60, prompt_type=prompt_type, seed=3, prepend_bos=prepend_bos)
    for i, p in enumerate(ds.prompts):
        io, s = ds.tokenizer.decode(ds.io_tokenIDs[i]), ds.tokenizer.decode(ds.s_tokenIDs[i])
        assert decode_at(ds, "IO", i) == io
        assert decode_at(ds, "S1", i) == s
        assert decode_at(ds, "S2", i) == s
        assert decode_at(ds, "end", i) == " to"
        assert ds.toks[i, ds.word_idx["end"][i] + 1] == ds.io_tokenIDs[i]  # the answer follows end
        assert ds.word_idx["S1"][i] < ds.word_idx["S2"][i] < ds.word_idx["end"][i]
        assert ds.word_idx["IO-1"][i] == ds.word_idx["IO"][i] - 1
        assert ds.word_idx["S1+1"][i] == ds.word_idx["S1"][i] + 1
        first = ds.toks[i, ds.word_idx["starts"][i]]
        if prepend_bos:
            assert ds.toks[i, 0] == ds.tokenizer.bos_token_id and first != ds.tokenizer.bos_token_id
        else:
            assert ds.toks[i, 0] != ds.tokenizer.bos_token_id
        # BABA prompts name S first, ABBA prompts name IO first.
        baba = p.template_idx < len(BABA_TEMPLATES)
        assert (ds.word_idx["S1"][i] < ds.word_idx["IO"][i]) == baba
        if prompt_type != "mixed":
            assert baba == (prompt_type == "BABA")
        assert ds.sentences[i].endswith(" " + io.strip())


def test_tokens_match_transformer_lens_to_tokens(toy_model):
    ds = IOIDataset(N=20, seed=4, tokenizer=toy_model, prepend_bos=True)
    for i, sentence in enumerate(ds.sentences):
        expected = toy_model.to_tokens(sentence, prepend_bos=True)[0]
        assert torch.equal(ds.toks[i, : len(expected)], expected)
        assert (ds.toks[i, len(expected) :] == ds.tokenizer.pad_token_id).all()


def test_mixed_alternates_and_groups_share_templates():
    ds = IOIDataset(N=40, prompt_type="mixed", seed=0)
    n = len(BABA_TEMPLATES)
    assert ((ds.template_idx < n) == torch.tensor([i % 2 == 0 for i in range(40)])).all()
    covered = torch.cat(ds.groups).sort().values
    assert torch.equal(covered, torch.arange(40))
    for g in ds.groups:
        assert (ds.template_idx[g] == ds.template_idx[g[0]]).all()
    assert len(ABBA_TEMPLATES) == len(BABA_TEMPLATES) == 15


def test_seeds_reproduce_and_leave_global_rng_alone(monkeypatch):
    # Python's global RNG is also used by beartype's runtime checks during tests, so instead of
    # comparing its state we make every global-RNG entry point our code could call explode.
    def forbidden(*args, **kwargs):
        raise AssertionError("the global RNG was used")

    for name in (
        "random",
        "randrange",
        "randint",
        "choice",
        "choices",
        "sample",
        "shuffle",
        "seed",
    ):
        monkeypatch.setattr(random, name, forbidden)
    np.random.seed(123)
    torch.manual_seed(123)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a = IOIDataset(N=30, seed=7)
    b = IOIDataset(N=30, seed=7)
    c = IOIDataset(N=30, seed=8)
    a.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    assert a.sentences == b.sentences and torch.equal(a.toks, b.toks)
    assert a.sentences != c.sentences
    assert (np.random.get_state()[1] == np_state).all()
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_abc_flip_keeps_positions_and_uses_fresh_names():
    ds = IOIDataset(N=50, seed=2, prepend_bos=True)
    abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    assert abc.toks.shape == ds.toks.shape
    for key in ds.word_idx:
        assert torch.equal(abc.word_idx[key], ds.word_idx[key])
    for i, q in enumerate(abc.prompts):
        assert len(set(q.slots)) == 3  # three distinct names
        assert not set(q.slots) & {
            ds.tokenizer.decode(ds.io_tokenIDs[i]).strip(),
            ds.tokenizer.decode(ds.s_tokenIDs[i]).strip(),
        }
        # Only the three name slots changed: every other token is the same.
        name_pos = {int(ds.word_idx[k][i]) for k in ("IO", "S1", "S2")}
        for pos in range(int(ds.word_idx["end"][i]) + 1):
            same = ds.toks[i, pos] == abc.toks[i, pos]
            assert bool(same) != (pos in name_pos), (i, pos)
        assert decode_at(abc, "end", i) == " to"


def test_cdd_and_baa_flips_replace_the_right_names():
    ds = IOIDataset(N=40, seed=5)
    cdd = ds.gen_flipped_prompts("ABB->CDD, BAB->DCD")
    for p, q in zip(ds.prompts, cdd.prompts, strict=True):
        assert q.pattern == p.pattern  # structure kept, names new
        assert not set(q.slots) & set(p.slots)
    swapped = ds.gen_flipped_prompts("ABB->BAA")
    for i, (p, q) in enumerate(zip(ds.prompts, swapped.prompts, strict=True)):
        if p.pattern == "ABB":  # IO and S trade places, so the new IO is the old S
            io, s = p.slots[0], p.slots[1]
            assert q.slots == (s, io, io)
            assert torch.equal(swapped.io_tokenIDs[i], ds.s_tokenIDs[i])
            assert torch.equal(swapped.s_tokenIDs[i], ds.io_tokenIDs[i])
        else:
            assert q == p


def test_flip_seeds_differ_between_flips():
    assert flip_seed(0, "ABB->XYZ, BAB->XYZ") != flip_seed(0, "ABB->CDD, BAB->DCD")
    assert flip_seed(0, "ABB->XYZ,BAB->XYZ") == flip_seed(0, "ABB->XYZ, BAB->XYZ")
    assert flip_seed(0, "ABB->XYZ") != flip_seed(1, "ABB->XYZ")
    ds = IOIDataset(N=20, seed=0)
    a = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    b = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    assert a.sentences == b.sentences


@pytest.mark.parametrize("flip", ["ABB->XY", "AAB->XYZ", "ABB=>XYZ", "ABB->xyz"])
def test_bad_flip_rules_raise(flip):
    with pytest.raises(ValueError, match="flip rule"):
        parse_flip(flip)


def test_flip_that_matches_nothing_raises():
    ds = IOIDataset(N=10, prompt_type="BABA", seed=0)
    with pytest.raises(ValueError, match="matched no prompt"):
        ds.gen_flipped_prompts("ABB->XYZ")


def test_multi_token_names_are_named_in_the_error():
    with pytest.raises(ValueError, match="Zzyzxqwerty"):
        IOIDataset(N=5, names=["Mary", "John", "Zzyzxqwerty", "Tom", "Amy", "Dan"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"N": 0}, "positive"),
        ({"N": -3}, "positive"),
        ({"N": 5, "prompt_type": "AABB"}, "prompt_type"),
        ({"N": 5, "seed": -1}, "seed"),
        ({"N": 5, "names": ["Mary", "John"]}, "at least 5"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IOIDataset(**kwargs)

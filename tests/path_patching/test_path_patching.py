"""Path patching: the batched engine against the one-sender-per-pass reference, and its edges."""

from __future__ import annotations

import copy
import inspect
import pydoc

import pytest
import torch
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric, make_logit_diff_metric
from ioi.patching.plan import copies_that_fit
from ioi.path_patching import (
    Receiver,
    Sender,
    cache_for_path_patching,
    detect_readout,
    engine,
    get_path_patch_head_to_final_resid_post,
    get_path_patch_head_to_heads,
    get_path_patch_mlp_to_final_resid_post,
    get_path_patch_mlp_to_heads,
    make_receivers,
    path_patch,
    plain_path_patch,
    plain_path_patch_head_to_final_resid_post,
)
from ioi.testing import gpt2_vocab_model, hook_count

ATOL = 1e-4
ABC = "ABB->XYZ, BAB->XYZ"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(
    normalization: str = "LN", attn_only: bool = False, seed: int = 0, **overrides
) -> HookedTransformer:
    """A 3-layer, 4-head model over GPT-2's ids."""
    return gpt2_vocab_model(
        normalization=normalization, attn_only=attn_only, seed=seed, **overrides
    )


ROTARY = dict(positional_embedding_type="rotary", rotary_dim=4)
VARIANTS = {
    "LN": {},
    "LNPre": dict(normalization="LNPre"),
    "attn_only": dict(attn_only=True),
    # GPT-NeoX's block: attention and MLP both read the block's input.
    "parallel": dict(parallel_attn_mlp=True, **ROTARY),
    # Llama's: RMSNorm, gated MLP, 2 key/value heads for 4 query heads (hooks ungrouped).
    "grouped": dict(
        normalization="RMS",
        gated_mlp=True,
        act_fn="silu",
        n_key_value_heads=2,
        ungroup_grouped_query_attention=True,
        **ROTARY,
    ),
}


def build_setup(variant: str):
    """A tiny model of one variant, 6 IOI prompts, their ABC version and the normalised metric."""
    model = tiny_model(**VARIANTS[variant])
    ioi = IOIDataset(6, "mixed", seed=3, tokenizer=model)
    abc = ioi.gen_flipped_prompts(ABC)
    end = ioi.word_idx["end"]
    with torch.no_grad():
        clean = logits_to_ave_logit_diff(model(ioi.toks), ioi.answer_tokens, positions=end)
        corrupt = logits_to_ave_logit_diff(model(abc.toks), ioi.answer_tokens, positions=end)
    metric = make_ioi_metric(clean, corrupt, ioi.answer_tokens, end)
    return model, metric, ioi, abc


@pytest.fixture(scope="module")
def setup():
    """The main tiny model (LayerNorm with weights, MLPs)."""
    return build_setup("LN")


@pytest.fixture(scope="module", params=["LNPre", "attn_only", "parallel", "grouped"])
def variant(request):
    """The other layouts: folded LayerNorm, attention-only, parallel and grouped-query blocks."""
    return build_setup(request.param)


def plain_grid(model, metric, abc, ioi, senders, receivers=None, **positions) -> torch.Tensor:
    """The reference: one hooked forward pass (two with receivers) per sender."""
    _, corrupted_cache = model.run_with_cache(abc.toks)
    _, clean_cache = model.run_with_cache(ioi.toks)
    caches = dict(corrupted_cache=corrupted_cache, clean_cache=clean_cache)
    return torch.stack(
        [
            plain_path_patch(model, metric, abc, ioi, s, receivers, **caches, **positions)
            for s in senders
        ]
    )


@pytest.mark.parametrize("readout", ["auto", "all"])
@pytest.mark.parametrize("sender_positions", [None, "S2", "end"])
def test_head_to_final_matches_plain(setup, readout, sender_positions, no_hooks_after):
    model, metric, ioi, abc = setup
    no_hooks_after(model)
    fast = get_path_patch_head_to_final_resid_post(
        model, metric, abc, ioi, readout=readout, sender_positions=sender_positions
    )
    plain = plain_path_patch_head_to_final_resid_post(
        model, metric, abc, ioi, sender_positions=sender_positions
    )
    assert fast.shape == (3, 4)
    torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)
    if sender_positions is None:
        assert (plain - 1).abs().max() > 1e-3, (
            "the test would pass trivially: no head has an effect"
        )


def test_variants_match_plain(variant, no_hooks_after):
    model, metric, ioi, abc = variant
    no_hooks_after(model)
    fast = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi)
    plain = plain_path_patch_head_to_final_resid_post(model, metric, abc, ioi)
    torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)
    fast = get_path_patch_head_to_heads([(2, 1), (1, 3)], ["k", "v"], model, metric, abc, ioi)
    senders = [Sender("head", layer, h) for layer in range(2) for h in range(4)]
    receivers = make_receivers([(2, 1), (1, 3)], ["k", "v"])
    plain = plain_grid(model, metric, abc, ioi, senders, receivers)
    torch.testing.assert_close(fast[:2].flatten(), plain, atol=ATOL, rtol=0)
    assert (plain - 1).abs().max() > 1e-3, "the test would pass trivially: no head has an effect"
    if model.cfg.attn_only:
        with pytest.raises(ValueError, match="attention-only"):
            path_patch(model, metric, abc, ioi, [Sender("mlp", 0)])
    else:
        mlps = [Sender("mlp", layer) for layer in range(2)]
        fast = path_patch(model, metric, abc, ioi, mlps, receivers)
        torch.testing.assert_close(fast, plain_grid(model, metric, abc, ioi, mlps, receivers))


def test_grouped_hooks_are_refused_with_the_fix():
    model, metric, ioi, abc = build_setup("grouped")
    model.cfg.ungroup_grouped_query_attention = False
    with pytest.raises(ValueError, match="ungroup_grouped_query_attention = True"):
        get_path_patch_head_to_final_resid_post(model, metric, abc, ioi)


def test_batch_size_does_not_change_results(setup):
    model, metric, ioi, abc = setup
    one = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi, batch_size=1)
    many = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi, batch_size=3)
    torch.testing.assert_close(one, many, atol=ATOL, rtol=0)


@pytest.fixture
def stacked(monkeypatch):
    """Records how many senders each pass stacks, and one sender's bytes as the engine asks
    the shared policy (`ioi.patching.plan.copies_that_fit`) about them."""
    seen = {"sizes": [], "sender_bytes": []}
    propagate, fit = engine.propagate_frozen, engine.copies_that_fit

    def counting_propagate(model, x, *args):
        seen["sizes"].append(x.shape[0])
        return propagate(model, x, *args)

    def recording_fit(cfg, copy_bytes, *args):
        seen["sender_bytes"].append(copy_bytes)
        return fit(cfg, copy_bytes, *args)

    monkeypatch.setattr(engine, "propagate_frozen", counting_propagate)
    monkeypatch.setattr(engine, "copies_that_fit", recording_fit)
    return seen


def test_memory_budget_sets_senders_per_pass_not_results(setup, stacked):
    """3 layers x 4 heads: passes stack one layer's heads, as many as the budget holds."""
    model, metric, ioi, abc = setup
    plain = plain_path_patch_head_to_final_resid_post(model, metric, abc, ioi)
    default = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi)
    assert stacked["sizes"] == [4, 4, 4]
    torch.testing.assert_close(default, plain, atol=ATOL, rtol=0)
    sender = stacked["sender_bytes"][0]
    for knobs, sizes in [
        (dict(memory_budget=3 * sender), [3, 1] * 3),
        (dict(memory_budget=2 * sender + 1), [2, 2] * 3),
        (dict(memory_budget=1), [1] * 12),
        (dict(memory_budget=2 * sender, batch_size=3), [2, 2] * 3),  # the budget bounds both
        (dict(memory_budget=2**40, batch_size=3), [3, 1] * 3),
    ]:
        stacked["sizes"].clear()
        got = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi, **knobs)
        assert stacked["sizes"] == sizes, knobs
        torch.testing.assert_close(got, plain, atol=ATOL, rtol=0)


def test_memory_budget_to_heads_matches_plain(setup, stacked):
    model, metric, ioi, abc = setup
    fast = get_path_patch_head_to_heads([(2, 1)], "v", model, metric, abc, ioi, memory_budget=1)
    assert stacked["sizes"] == [1] * 8
    senders = [Sender("head", layer, h) for layer in range(2) for h in range(4)]
    plain = plain_grid(model, metric, abc, ioi, senders, make_receivers([(2, 1)], "v"))
    torch.testing.assert_close(fast[:2].flatten(), plain, atol=ATOL, rtol=0)
    mlps = [Sender("mlp", layer) for layer in range(2)]
    fast = path_patch(model, metric, abc, ioi, mlps, make_receivers([(2, 1)], "v"), memory_budget=1)
    plain = plain_grid(model, metric, abc, ioi, mlps, make_receivers([(2, 1)], "v"))
    torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)


def test_the_cpu_bound_is_activation_patchings():
    """On a CPU a pass holds about 512 GPT-2-wide token rows, whichever engine plans it."""
    gpt2 = tiny_model(d_model=768, d_head=64, n_heads=12, d_mlp=3072, n_layers=1).cfg
    cpu, gib = torch.device("cpu"), 1024**3
    assert copies_that_fit(gpt2, 1, 100, cpu, 64 * gib, None) == 5  # 100 rows per sender
    assert copies_that_fit(gpt2, 1, 100, cpu, 64 * gib, 12) == 12  # batch_size replaces it
    assert copies_that_fit(gpt2, 1, 0, cpu, 64 * gib, None) == 64 * gib  # MLP-only rows
    assert copies_that_fit(gpt2, 1, 100, torch.device("cuda"), 64 * gib, None) == 64 * gib


@pytest.mark.parametrize("budget", [0, -1])
def test_a_budget_that_is_not_positive_is_refused(setup, budget):
    """(Types other than int are refused with a TypeError, tested in a user session in
    tests/patching/test_engine_bad_inputs.py: here the runtime type checker stops them first.)"""
    model, metric, ioi, abc = setup
    choices = r"memory_budget must be None \(the default: .*\) or a positive int of bytes"
    with pytest.raises(ValueError, match=choices):
        get_path_patch_head_to_final_resid_post(model, metric, abc, ioi, memory_budget=budget)
    with pytest.raises(ValueError, match=choices):
        get_path_patch_mlp_to_heads([(2, 0)], "q", model, metric, abc, ioi, memory_budget=budget)
    assert hook_count(model) == 0


@pytest.mark.parametrize("receiver_input", ["q", "k", "v"])
@pytest.mark.parametrize(("sender_positions", "receiver_positions"), [(None, None), ("S2", "end")])
def test_head_to_heads_matches_plain(
    setup, receiver_input, sender_positions, receiver_positions, no_hooks_after
):
    model, metric, ioi, abc = setup
    no_hooks_after(model)
    heads = [(2, 1), (1, 3)]
    fast = get_path_patch_head_to_heads(
        heads,
        receiver_input,
        model,
        metric,
        abc,
        ioi,
        sender_positions=sender_positions,
        receiver_positions=receiver_positions,
        batch_size=3,
    )
    senders = [Sender("head", layer, h) for layer in range(2) for h in range(4)]
    receivers = make_receivers(heads, receiver_input)
    plain = plain_grid(
        model,
        metric,
        abc,
        ioi,
        senders,
        receivers,
        sender_positions=sender_positions,
        receiver_positions=receiver_positions,
    )
    torch.testing.assert_close(fast[:2].flatten(), plain, atol=ATOL, rtol=0)
    assert fast[2].isnan().all(), "senders at or above the top receiver layer have no path: NaN"
    assert not fast[:2].isnan().any()


def test_mlp_senders_match_plain(setup, no_hooks_after):
    model, metric, ioi, abc = setup
    no_hooks_after(model)
    fast = get_path_patch_mlp_to_final_resid_post(model, metric, abc, ioi, sender_positions="S2")
    plain = plain_grid(
        model, metric, abc, ioi, [Sender("mlp", i) for i in range(3)], sender_positions="S2"
    )
    torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)
    to_heads = get_path_patch_mlp_to_heads([(2, 0)], ["q", "k", "v"], model, metric, abc, ioi)
    receivers = make_receivers([(2, 0)], ["q", "k", "v"])
    plain = plain_grid(model, metric, abc, ioi, [Sender("mlp", i) for i in range(2)], receivers)
    torch.testing.assert_close(to_heads[:2], plain, atol=ATOL, rtol=0)
    assert to_heads[2:].isnan().all(), "MLPs at or above the receiver layer have no path: NaN"


def test_mixed_senders_keep_their_order(setup):
    model, metric, ioi, abc = setup
    senders = [
        Sender("head", 2, 0),
        Sender("head", 0, 3),
        Sender("head", 1, 1),
        Sender("head", 0, 0),
    ]
    fast = path_patch(model, metric, abc, ioi, senders, batch_size=2)
    torch.testing.assert_close(
        fast, plain_grid(model, metric, abc, ioi, senders), atol=ATOL, rtol=0
    )


def test_last_layer_head_equals_activation_patching(setup):
    """Independent check: nothing but the last MLP follows a last-layer head, so path patching
    it to the logits is plain activation patching of its output."""
    model, metric, ioi, abc = setup
    _, abc_cache = model.run_with_cache(abc.toks)

    def patch(z, hook):
        z[:, :, 1] = abc_cache[hook.name][:, :, 1]
        return z

    with torch.no_grad(), model.hooks(fwd_hooks=[("blocks.2.attn.hook_z", patch)]):
        expected = metric(model(ioi.toks))
    grid = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi)
    assert float(grid[2, 1]) == pytest.approx(float(expected), abs=ATOL)


def test_zero_output_weights_give_zero_effect(setup):
    model, metric, ioi, abc = setup
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.blocks[0].attn.W_O[2] = 0.0
        model.blocks[1].attn.W_O[1] = 0.0
        logits = model(ioi.toks)
    baseline = float(metric(logits))
    to_final = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi)
    to_heads = get_path_patch_head_to_heads([(2, 0), (2, 3)], "v", model, metric, abc, ioi)
    for grid in (to_final, to_heads):
        assert float(grid[0, 2]) == pytest.approx(baseline, abs=1e-5)
        assert float(grid[1, 1]) == pytest.approx(baseline, abs=1e-5)
    assert (to_final - baseline).abs().max() > 1e-3, "other heads still have effects"


def test_deterministic(setup):
    model, metric, ioi, abc = setup
    first = get_path_patch_head_to_heads([(2, 2)], "q", model, metric, abc, ioi)
    second = get_path_patch_head_to_heads([(2, 2)], "q", model, metric, abc, ioi)
    assert torch.equal(first[:2], second[:2]) and first[2:].isnan().all()


def test_raw_logit_diff_metric_and_caches(setup):
    model, _, ioi, abc = setup
    metric = make_logit_diff_metric(ioi.answer_tokens, ioi.word_idx["end"])
    _, orig_cache = model.run_with_cache(ioi.toks)
    _, new_cache = model.run_with_cache(abc.toks)
    with_caches = get_path_patch_head_to_final_resid_post(
        model, metric, abc, ioi, new_cache=new_cache, orig_cache=orig_cache
    )
    without = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi)
    torch.testing.assert_close(with_caches, without, atol=ATOL, rtol=0)


# ---- readout ----------------------------------------------------------------------------


def test_readout_detects_the_metric_entries(setup):
    model, metric, ioi, _ = setup
    with torch.no_grad():
        logits = model(ioi.toks)
    readout = detect_readout(metric, logits)
    assert readout.n_rows == ioi.N
    assert torch.equal(readout.pos_idx, ioi.word_idx["end"][readout.batch_idx])
    assert set(readout.vocab_idx.tolist()) == set(ioi.answer_tokens.flatten().tolist())


def test_readout_falls_back_to_all_logits(setup):
    model, _, ioi, _ = setup
    with torch.no_grad():
        logits = model(ioi.toks)

    def reads_everything(x):
        return x.log_softmax(-1).mean()

    def no_gradient(x):
        return (x[:, -1].argmax(-1) == 0).float().mean()

    def step(x):  # zero gradient at x[:, 0, 1] and blind to NaN there, but it reads it
        return x[:, -1, 0].mean() + (x[:, 0, 1] > 100).float().mean()

    for metric in (reads_everything, no_gradient, step):
        assert detect_readout(metric, logits).is_full, metric.__name__


def test_explicit_readout_that_misses_entries_raises(setup):
    model, metric, ioi, abc = setup
    with torch.no_grad():
        logits = model(ioi.toks)
    readout = detect_readout(metric, logits)

    def last_position(x):
        return x[:, -1, 0].mean()

    with pytest.raises(ValueError, match="outside the readout"):
        path_patch(model, last_position, abc, ioi, [Sender("head", 0, 0)], readout=readout)


# ---- hooks and errors -------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_no_hook_survives_an_exception(setup, fast, monkeypatch):
    """A failure while the receivers' hooks are attached must not leave them behind."""
    model, metric, ioi, abc = setup
    caches = dict(
        clean_cache=cache_for_path_patching(model, ioi.toks),
        corrupted_cache=cache_for_path_patching(model, abc.toks),
    )

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    # the attention's projection runs in TransformerLens's blocks and in the fused ones
    monkeypatch.setattr(model.blocks[2].attn, "calculate_qkv_matrices", broken)
    receivers = [Receiver(2, 0, "q"), Receiver(1, 1, "k")]
    sender = Sender("head", 0, 0)
    with pytest.raises(RuntimeError, match="boom"):
        if fast:
            path_patch(model, metric, abc, ioi, [sender], receivers, readout="all", **caches)
        else:
            plain_path_patch(model, metric, abc, ioi, sender, receivers, **caches)
    assert hook_count(model) == 0


def test_bad_inputs_raise_value_errors_listing_choices(setup):
    model, metric, ioi, abc = setup
    with pytest.raises(ValueError, match=r"valid sender layers are 0\.\.0"):
        path_patch(model, metric, abc, ioi, [Sender("head", 1, 0)], [Receiver(1, 2, "q")])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        get_path_patch_head_to_heads([(2, 7)], "q", model, metric, abc, ioi)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        get_path_patch_head_to_heads([(5, 0)], "q", model, metric, abc, ioi)
    with pytest.raises(ValueError, match=r"'q', 'k', 'v'"):
        get_path_patch_head_to_heads([(2, 0)], "z", model, metric, abc, ioi)
    with pytest.raises(ValueError, match="at least one receiver"):
        get_path_patch_head_to_heads([], "q", model, metric, abc, ioi)
    with pytest.raises(ValueError, match="valid keys: .*S1\\+1"):
        get_path_patch_head_to_final_resid_post(model, metric, abc, ioi, sender_positions="S3")
    with pytest.raises(ValueError, match="valid keys"):
        get_path_patch_head_to_heads([(2, 0)], "q", model, metric, abc, ioi, receiver_positions="X")
    with pytest.raises(ValueError, match="'auto', 'all'"):
        get_path_patch_head_to_final_resid_post(model, metric, abc, ioi, readout="some")
    with pytest.raises(ValueError, match="must have the same shape"):
        get_path_patch_head_to_final_resid_post(model, metric, abc.toks[:, :-1], ioi)
    with pytest.raises(ValueError, match="'head', 'mlp'"):
        Sender("attn", 0, 0)
    assert hook_count(model) == 0


# ---- the bundled model ------------------------------------------------------------------


@pytest.mark.slow
def test_toy_model_matches_plain(toy_model, no_hooks_after):
    no_hooks_after(toy_model)
    ioi = IOIDataset(12, "mixed", seed=5, tokenizer=toy_model)
    abc = ioi.gen_flipped_prompts(ABC)
    end = ioi.word_idx["end"]
    with torch.no_grad():
        clean = logits_to_ave_logit_diff(toy_model(ioi.toks), ioi.answer_tokens, positions=end)
        corrupt = logits_to_ave_logit_diff(toy_model(abc.toks), ioi.answer_tokens, positions=end)
    metric = make_ioi_metric(clean, corrupt, ioi.answer_tokens, end)
    fast = get_path_patch_head_to_final_resid_post(toy_model, metric, abc, ioi)
    plain = plain_path_patch_head_to_final_resid_post(toy_model, metric, abc, ioi)
    torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)
    top = toy_model.cfg.n_layers - 1
    receivers = [(top, h) for h in range(toy_model.cfg.n_heads)]
    fast_v = get_path_patch_head_to_heads(receivers, "v", toy_model, metric, abc, ioi)
    senders = [Sender("head", lay, h) for lay in range(top) for h in range(toy_model.cfg.n_heads)]
    plain_v = plain_grid(toy_model, metric, abc, ioi, senders, make_receivers(receivers, "v"))
    torch.testing.assert_close(fast_v[:top].flatten(), plain_v, atol=ATOL, rtol=0)


# ---- the ARENA-named wrappers and the two runs' names ------------------------------------

# ARENA's path-patching exercises (and solutions/part4_path_patching.py): orig = clean, new =
# corrupted, in this order.
ARENA_TO_FINAL = [
    "model",
    "patching_metric",
    "new_dataset",
    "orig_dataset",
    "new_cache",
    "orig_cache",
]
ARENA_SIGNATURES = {
    get_path_patch_head_to_final_resid_post: ARENA_TO_FINAL,
    get_path_patch_mlp_to_final_resid_post: ARENA_TO_FINAL,
    get_path_patch_head_to_heads: ["receiver_heads", "receiver_input", *ARENA_TO_FINAL],
    get_path_patch_mlp_to_heads: ["receiver_heads", "receiver_input", *ARENA_TO_FINAL],
}


@pytest.mark.parametrize("wrapper", list(ARENA_SIGNATURES), ids=lambda f: f.__name__)
def test_arena_wrappers_show_their_own_signature_and_docstring(wrapper):
    params = inspect.signature(wrapper).parameters
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ARENA_SIGNATURES[wrapper]
    assert params["new_cache"].default is None and params["orig_cache"].default is None
    keyword_only = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert {"sender_positions", "readout", "batch_size", "memory_budget"} <= keyword_only
    assert ("receiver_positions" in keyword_only) == ("receiver_heads" in params)
    shown = pydoc.render_doc(wrapper)
    assert "orig_dataset" in shown and wrapper.__doc__.splitlines()[0] in shown


def test_path_patch_speaks_of_clean_and_corrupted():
    positional = list(inspect.signature(path_patch).parameters)[:6]
    assert positional[2:4] == ["corrupted_dataset", "clean_dataset"]
    assert {"corrupted_cache", "clean_cache"} <= set(inspect.signature(path_patch).parameters)


def test_errors_name_the_runs_as_the_caller_did(setup):
    """path_patch's errors say clean/corrupted; the ARENA-named wrappers' say orig/new."""
    model, metric, ioi, abc = setup
    sender = [Sender("head", 0, 0)]
    # (wrong types are caught by the test-time type checker first: tests/patching checks
    # those messages in a user session)
    with pytest.raises(ValueError, match="^clean_cache lacks"):
        path_patch(model, metric, abc, ioi, sender, clean_cache={})
    with pytest.raises(ValueError, match="^orig_cache lacks"):
        get_path_patch_head_to_heads([(2, 0)], "q", model, metric, abc, ioi, orig_cache={})
    with pytest.raises(ValueError, match="^corrupted_cache lacks"):
        path_patch(model, metric, abc, ioi, sender, corrupted_cache={})
    with pytest.raises(ValueError, match="^new_cache lacks"):
        get_path_patch_mlp_to_final_resid_post(model, metric, abc, ioi, new_cache={})


def test_the_clean_run_is_the_one_patched_into(setup):
    """Swapping the runs is not a no-op: the clean (IOI) run is frozen, the corrupted (ABC)
    sender patched in; with the runs swapped the normalised metric no longer starts from 1."""
    model, metric, ioi, abc = setup
    sender = [Sender("head", 0, 0)]
    same = path_patch(model, metric, ioi, ioi, sender)  # corrupted == clean: no effect
    torch.testing.assert_close(same, torch.ones(1), atol=1e-5, rtol=0)
    reference = plain_path_patch(model, metric, abc, ioi, sender[0])
    fast = path_patch(model, metric, corrupted_dataset=abc, clean_dataset=ioi, senders=sender)
    torch.testing.assert_close(fast[0], reference, atol=ATOL, rtol=0)

"""The drop-in ``get_act_patch_*`` sweeps equal TransformerLens's, however they are chunked."""

from __future__ import annotations

import inspect
import pydoc

import pytest
import torch
import transformer_lens.patching as tl_patching

import ioi.patching as ours
from ioi.testing import hooks_left, logit_diff, tiny_model, token_pair

ALL_NAMES = [
    "get_act_patch_resid_pre",
    "get_act_patch_resid_mid",
    "get_act_patch_attn_out",
    "get_act_patch_mlp_out",
    "get_act_patch_block_every",
    "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_q_all_pos",
    "get_act_patch_attn_head_k_all_pos",
    "get_act_patch_attn_head_v_all_pos",
    "get_act_patch_attn_head_pattern_all_pos",
    "get_act_patch_attn_head_out_by_pos",
    "get_act_patch_attn_head_q_by_pos",
    "get_act_patch_attn_head_k_by_pos",
    "get_act_patch_attn_head_v_by_pos",
    "get_act_patch_attn_head_pattern_by_pos",
    "get_act_patch_attn_head_all_pos_every",
    "get_act_patch_attn_head_by_pos_every",
    "get_act_patch_attn_head_pattern_dest_src_pos",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    clean, corrupted = token_pair(seed=1, shared_prefix=2)
    _, clean_cache = model.run_with_cache(clean)
    _, corrupted_cache = model.run_with_cache(corrupted)
    return model, clean, corrupted, clean_cache, corrupted_cache


_reference_cache: dict[tuple[str, str], torch.Tensor] = {}


def reference(name: str, setup, direction: str) -> torch.Tensor:
    """TransformerLens's result, computed once per function and direction."""
    model, clean, corrupted, clean_cache, corrupted_cache = setup
    if (name, direction) not in _reference_cache:
        tokens, cache = (
            (corrupted, clean_cache) if direction == "denoise" else (clean, corrupted_cache)
        )
        _reference_cache[name, direction] = getattr(tl_patching, name)(
            model, tokens, cache, logit_diff
        )
    return _reference_cache[name, direction]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_matches_transformer_lens(name, setup):
    model, clean, corrupted, clean_cache, _ = setup
    expected = reference(name, setup, "denoise")
    got = getattr(ours, name)(model, corrupted, clean_cache, logit_diff)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0, msg=lambda m: f"{name}: {m}")
    assert not hooks_left(model), f"{name} left hooks behind"


def _positional(function) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(function).parameters.values() if p.kind in kinds]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_signature_matches_transformer_lens(name):
    """Same positional parameters, in the same order, as TransformerLens's function of the name
    (which differ: ``metric`` for the ``*_every`` ones, ``patching_metric`` for the rest); ours
    adds only keyword-only knobs, with their defaults, annotations and own docstring."""
    ours_fn, theirs = getattr(ours, name), getattr(tl_patching, name)
    assert _positional(ours_fn) == _positional(theirs)
    params = inspect.signature(ours_fn).parameters
    keyword_only = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert keyword_only == {"max_sites_per_pass": None, "memory_budget": None, "progress": False}
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())
    assert inspect.signature(ours_fn).return_annotation.startswith("Float[Tensor")
    assert ours_fn.__name__ == name
    assert f"transformer_lens.patching.{name}" in ours_fn.__doc__
    # help() shows the real parameters and this function's own docstring
    shown = pydoc.render_doc(ours_fn)
    assert _positional(theirs)[-1] in shown and "max_sites_per_pass" in shown
    assert ours_fn.__doc__.splitlines()[0] in shown


def test_docstrings_are_their_own():
    """Each drop-in has a docstring of its own (not one shared by the family)."""
    firsts = [getattr(ours, name).__doc__.splitlines()[0] for name in ALL_NAMES]
    assert len(set(firsts)) == len(ALL_NAMES)


def test_a_wrong_call_is_refused_like_a_hand_written_def(setup):
    model, _, corrupted, clean_cache, _ = setup
    with pytest.raises(TypeError, match="memory_budget|positional"):
        ours.get_act_patch_resid_pre(model, corrupted, clean_cache, logit_diff, 1)
    with pytest.raises(TypeError, match="patching_metric"):
        ours.get_act_patch_resid_pre(model, corrupted, clean_cache)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ours.get_act_patch_resid_pre(model, corrupted, clean_cache, logit_diff, max_sites=2)
    got = ours.get_act_patch_resid_pre(
        model=model, corrupted_tokens=corrupted, clean_cache=clean_cache, patching_metric=logit_diff
    )
    torch.testing.assert_close(got, reference("get_act_patch_resid_pre", setup, "denoise"))


@pytest.mark.parametrize(
    "name",
    [
        "get_act_patch_resid_pre",
        "get_act_patch_attn_head_out_all_pos",
        "get_act_patch_attn_head_by_pos_every",
        "get_act_patch_block_every",
    ],
)
@pytest.mark.parametrize("max_sites", [1, 3, 7])
def test_uneven_chunks_match(name, max_sites, setup):
    """Passes of 1, 3 or 7 copies split every sweep unevenly, and must not change results."""
    model, clean, corrupted, clean_cache, _ = setup
    expected = reference(name, setup, "denoise")
    got = getattr(ours, name)(
        model, corrupted, clean_cache, logit_diff, max_sites_per_pass=max_sites
    )
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_tiny_memory_budget_runs_one_site_per_pass(setup):
    model, clean, corrupted, clean_cache, _ = setup
    expected = reference("get_act_patch_attn_head_out_by_pos", setup, "denoise")
    got = ours.get_act_patch_attn_head_out_by_pos(
        model, corrupted, clean_cache, logit_diff, memory_budget=1
    )
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "name",
    [
        "get_act_patch_resid_pre",
        "get_act_patch_attn_head_out_all_pos",
        "get_act_patch_attn_head_pattern_by_pos",
        "get_act_patch_attn_head_k_by_pos",
        "get_act_patch_mlp_out",
    ],
)
def test_noise_mode_matches_transformer_lens_with_roles_swapped(name, setup):
    model, clean, corrupted, _, _ = setup
    expected = reference(name, setup, "noise")
    component, positions = {
        "get_act_patch_resid_pre": ("resid_pre", "each"),
        "get_act_patch_attn_head_out_all_pos": ("z", "all"),
        "get_act_patch_attn_head_pattern_by_pos": ("pattern", "each"),
        "get_act_patch_attn_head_k_by_pos": ("k", "each"),
        "get_act_patch_mlp_out": ("mlp_out", "each"),
    }[name]
    grid = ours.sweep(model, component, clean.shape[1], positions=positions)
    result = ours.activation_patching(
        model, clean, corrupted, logit_diff, grid, mode="noise", max_sites_per_pass=5
    )
    torch.testing.assert_close(result.effect, expected, atol=1e-4, rtol=0)
    assert result.receiver_baseline == pytest.approx(
        float(logit_diff(model(clean)).detach()), abs=1e-5
    )
    assert not hooks_left(model)


class FakeOutOfMemory:
    """A user hook that fails like CUDA does whenever a pass stacks more than ``limit`` rows."""

    def __init__(self, limit: int, error: type[Exception] = torch.OutOfMemoryError):
        self.limit, self.error, self.raised, self.seen = limit, error, 0, []

    def __call__(self, act, hook):
        self.seen.append(act.shape[0])
        if act.shape[0] > self.limit:
            self.raised += 1
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_out_of_memory_halves_the_pass_and_continues(error, setup):
    model, clean, corrupted, clean_cache, _ = setup
    batch = corrupted.shape[0]
    fake = FakeOutOfMemory(limit=2 * batch, error=error)
    expected = reference("get_act_patch_attn_head_out_by_pos", setup, "denoise")
    with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", fake)]):
        got = ours.get_act_patch_attn_head_out_by_pos(
            model, corrupted, clean_cache, logit_diff, max_sites_per_pass=7
        )
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert fake.raised > 0, "the fake out-of-memory error never triggered"
    assert fake.seen[-1] <= 2 * batch
    assert not hooks_left(model)


def test_out_of_memory_on_a_single_site_is_raised(setup):
    model, clean, corrupted, clean_cache, _ = setup
    fake = FakeOutOfMemory(limit=0)
    with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", fake)]):
        with pytest.raises(torch.OutOfMemoryError):
            ours.get_act_patch_resid_pre(model, corrupted, clean_cache, logit_diff)
    assert not hooks_left(model)


def test_other_runtime_errors_are_not_swallowed(setup):
    model, clean, corrupted, clean_cache, _ = setup

    def broken(act, hook):
        if act.shape[0] > corrupted.shape[0]:
            raise RuntimeError("something else went wrong")

    with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", broken)]):
        with pytest.raises(RuntimeError, match="something else"):
            ours.get_act_patch_resid_pre(model, corrupted, clean_cache, logit_diff)
    assert not hooks_left(model)


def test_user_hooks_survive(setup):
    """The engine removes only its own hooks: a hook the caller added stays and keeps running."""
    model, clean, corrupted, clean_cache, _ = setup
    calls = []
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda act, hook: calls.append(1))]):
        ours.get_act_patch_attn_out(model, corrupted, clean_cache, logit_diff)
        assert model.mod_dict["blocks.0.hook_resid_pre"].fwd_hooks, "the caller's hook was removed"
    assert calls
    assert not hooks_left(model)


def test_metric_that_raises_leaves_no_hooks(setup):
    model, clean, corrupted, clean_cache, _ = setup
    calls = {"n": 0}

    def flaky(logits):
        calls["n"] += 1
        if calls["n"] > 1:  # the receiver baseline succeeds, a patched copy fails
            raise ZeroDivisionError("metric failed")
        return logit_diff(logits)

    with pytest.raises(ZeroDivisionError):
        ours.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, flaky)
    assert not hooks_left(model)


def test_progress_bar_runs(setup, capsys):
    model, clean, corrupted, clean_cache, _ = setup
    expected = reference("get_act_patch_resid_pre", setup, "denoise")
    got = ours.get_act_patch_resid_pre(model, corrupted, clean_cache, logit_diff, progress=True)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_results_are_ordinary_tensors(setup):
    """Results must not be inference-mode tensors: callers edit and differentiate through them."""
    model, clean, corrupted, clean_cache, _ = setup
    got = ours.get_act_patch_resid_pre(model, corrupted, clean_cache, logit_diff)
    assert not got.is_inference()
    got += 1  # in-place edits of inference tensors raise outside inference mode

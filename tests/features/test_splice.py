"""`spliced`: output unchanged with the error term, exact with an identity dictionary, hooks
removed (also on an exception), gradients at the feature and error nodes, bad inputs."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.utils import get_act_name

from ioi.features import activation_widths, sae_hook_name, spliced
from ioi.features.testing import identity_sae, random_sae
from ioi.testing import errors_in_a_user_session, hook_count, tiny_model, token_pair

D_MODEL = 32


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def tokens():
    return token_pair()[0]


def saes_at(*names, seed=0, architecture="standard"):
    return {
        n: random_sae(D_MODEL, 64, seed=seed + i, architecture=architecture)
        for i, n in enumerate(names)
    }


NAMES = (get_act_name("resid_pre", 1), get_act_name("attn_out", 0), get_act_name("mlp_out", 1))


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_error_term_leaves_output_unchanged(model, tokens, architecture):
    plain = model(tokens)
    saes = saes_at(*NAMES, architecture=architecture)
    with spliced(model, saes):
        out = model(tokens)
    with spliced(model, saes, error_term=False):
        replaced = model(tokens)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)
    # The random SAEs reconstruct badly, so replacing the activations must move the logits.
    assert (replaced - plain).abs().max() > 1e-2
    assert hook_count(model) == 0


def test_identity_dictionary_is_exact_without_error_term(model, tokens):
    plain = model(tokens)
    with spliced(model, {n: identity_sae(D_MODEL) for n in NAMES}, error_term=False):
        out = model(tokens)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)


def test_reconstruction_replaces_activation(model, tokens):
    """error_term=False: the next layer reads exactly the SAE's reconstruction of the activation."""
    name = NAMES[0]
    sae = saes_at(name)[name]
    _, cache = model.run_with_cache(tokens, names_filter=name)
    expected = sae.decode(sae.encode(cache[name]))
    with spliced(model, {name: sae}, error_term=False):
        _, spliced_cache = model.run_with_cache(tokens)
    torch.testing.assert_close(spliced_cache[name], expected)
    torch.testing.assert_close(spliced_cache[f"{name}.hook_sae_output"], expected)


def test_sae_hook_points_carry_features_and_error(model, tokens):
    name = NAMES[0]
    sae = saes_at(name)[name]
    _, cache = model.run_with_cache(tokens, names_filter=name)
    x = cache[name]
    feats = sae.encode(x)
    with spliced(model, {name: sae}):
        _, spliced_cache = model.run_with_cache(tokens)
    torch.testing.assert_close(spliced_cache[sae_hook_name(name, "hook_sae_acts_post")], feats)
    torch.testing.assert_close(
        spliced_cache[sae_hook_name(name, "hook_sae_error")], x - sae.decode(feats)
    )
    torch.testing.assert_close(spliced_cache[name], x, atol=1e-5, rtol=0)
    # Outside the block the names are gone and the SAE's hook points have their own names back.
    assert sae_hook_name(name, "hook_sae_error") not in model.hook_dict
    assert sae.hook_sae_error.name == "hook_sae_error"


def test_feature_edit_reaches_output_in_full(model, tokens):
    """A hook that edits the features moves the output as replacing x_hat by the edited x_hat would
    (the error stays the clean SAE's)."""
    name = NAMES[0]
    sae = saes_at(name)[name]
    _, cache = model.run_with_cache(tokens, names_filter=name)
    x = cache[name]
    feats = sae.encode(x)
    edited = feats.clone()
    edited[..., 3] += 2.0
    target = x + sae.decode(edited) - sae.decode(feats)
    with model.hooks(fwd_hooks=[(name, lambda act, hook: target)]):
        expected = model(tokens)

    def edit(f, hook):
        f = f.clone()
        f[..., 3] += 2.0
        return f

    acts = sae_hook_name(name, "hook_sae_acts_post")
    with spliced(model, {name: sae}), model.hooks(fwd_hooks=[(acts, edit)]):
        out = model(tokens)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert hook_count(model) == 0 and hook_count(sae) == 0


def _grad(store, key):
    def fn(grad, hook):
        store[key] = grad[0] if isinstance(grad, tuple) else grad

    return fn


def test_gradients_reach_features_and_error(model, tokens):
    """d metric / d error and d metric / d features, checked against the chain rule by hand:
    the output is x_hat + error, so d/d error = d/d activation, and d/d f = (d/d x_hat) W_dec^T."""
    name = NAMES[0]
    sae = saes_at(name)[name]
    grads = {}
    bwd = [
        (sae_hook_name(name, "hook_sae_error"), _grad(grads, "error")),
        (sae_hook_name(name, "hook_sae_acts_post"), _grad(grads, "acts")),
        (sae_hook_name(name, "hook_sae_output"), _grad(grads, "output")),
    ]
    with spliced(model, {name: sae}), model.hooks(bwd_hooks=bwd):
        model(tokens)[:, -1, 3].sum().backward()
    assert set(grads) == {"error", "acts", "output"}
    assert grads["error"].abs().sum() > 0
    torch.testing.assert_close(grads["error"], grads["output"])
    torch.testing.assert_close(grads["acts"], grads["output"] @ sae.W_dec.T.detach())

    # Upstream of the splice the gradient is the plain model's.
    upstream = get_act_name("resid_pre", 0)
    plain, with_sae = {}, {}
    with model.hooks(bwd_hooks=[(upstream, _grad(plain, "g"))]):
        model(tokens)[:, -1, 3].sum().backward()
    with spliced(model, {name: sae}), model.hooks(bwd_hooks=[(upstream, _grad(with_sae, "g"))]):
        model(tokens)[:, -1, 3].sum().backward()
    torch.testing.assert_close(with_sae["g"], plain["g"], atol=1e-5, rtol=1e-4)
    model.zero_grad(set_to_none=True)
    assert hook_count(model) == 0 and hook_count(sae) == 0


def test_hooks_removed_after_exception(model, tokens):
    saes = saes_at(*NAMES)
    with pytest.raises(RuntimeError, match="boom"):
        with spliced(model, saes):
            model(tokens)
            raise RuntimeError("boom")
    assert hook_count(model) == 0
    assert all(hook_count(s) == 0 for s in saes.values())
    assert not any(s.use_error_term for s in saes.values())
    torch.testing.assert_close(model(tokens), tiny_model()(tokens))


def test_unknown_hook_name_lists_close_names(model):
    with pytest.raises(ValueError, match="not a hook point.*blocks.1.hook_resid_pre"):
        with spliced(model, {"blocks.1.hook_resid_pr": identity_sae(D_MODEL)}):
            pass
    assert hook_count(model) == 0


def test_attention_weights_are_not_a_splice_site(model):
    with pytest.raises(ValueError, match="attention weights.*hook_attn_out"):
        with spliced(model, {get_act_name("pattern", 0): identity_sae(D_MODEL)}):
            pass
    assert hook_count(model) == 0


def test_wrong_width_says_both_numbers(model):
    name = get_act_name("mlp_post", 0)  # width d_mlp = 64
    with pytest.raises(ValueError, match="d_in=32.*width 64"):
        with spliced(model, {name: identity_sae(D_MODEL)}):
            pass
    assert hook_count(model) == 0


def test_per_head_activation_needs_hook_z_sae(model):
    with pytest.raises(ValueError, match="one vector per head"):
        with spliced(model, {get_act_name("z", 0): identity_sae(32)}):
            pass


def test_wrong_dtype(model):
    with pytest.raises(ValueError, match="dtype"):
        with spliced(model, {NAMES[0]: identity_sae(D_MODEL, dtype=torch.float64)}):
            pass


def test_wrong_types_in_a_user_session():
    """Without the tests' runtime type checker, a wrong Python type is our own TypeError."""
    setup = (
        "import torch\n"
        "from ioi.features import spliced\n"
        "from ioi.testing import tiny_model\n"
        "model = tiny_model()\n"
        "def enter(saes):\n"
        "    with spliced(model, saes):\n"
        "        pass\n"
    )
    cases = {
        "list": "enter([('blocks.0.hook_resid_pre', None)])",
        "module": "enter({'blocks.0.hook_resid_pre': torch.nn.Linear(32, 32)})",
        "key": "enter({0: None})",
    }
    got = errors_in_a_user_session(setup, cases)
    assert got["list"][0] == "TypeError" and "mapping" in got["list"][1]
    assert got["module"][0] == "TypeError" and "sae_lens SAE" in got["module"][1]
    assert got["key"][0] == "TypeError" and "hook names" in got["key"][1]


def test_static_widths_agree_with_a_forward_pass(model):
    """The widths read from the config are those of the activations themselves."""
    from ioi.features.splice import _static_shape

    names = [
        get_act_name(c, layer)
        for layer in range(model.cfg.n_layers)
        for c in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v")
    ] + [get_act_name("pre", 0), get_act_name("post", 1)]
    _, cache = model.run_with_cache(token_pair()[0][:1], names_filter=names)
    for name in names:
        act = cache[name]
        width = act.shape[-1] * (act.shape[-2] if act.ndim == 4 else 1)
        assert _static_shape(model.cfg, name) == (width, act.ndim == 4), name
    assert _static_shape(model.cfg, "hook_embed") is None  # falls back to the probe
    assert activation_widths(model, ["hook_embed", "blocks.0.ln1.hook_normalized"]) == {
        "hook_embed": 32,
        "blocks.0.ln1.hook_normalized": 32,
    }


def _sae_lens_reference(model, saes, error_term):
    """SAELens's own splice: a `HookedSAETransformer` with the same weights and copies of the
    SAEs attached by ``add_sae`` (which records each SAE's hook name and error-term flag)."""
    import copy

    from sae_lens import HookedSAETransformer

    ref = HookedSAETransformer(model.cfg)
    ref.load_state_dict(model.state_dict(), strict=False)
    for name, sae in saes.items():
        own = copy.deepcopy(sae)
        own.cfg.metadata.hook_name = name
        ref.add_sae(own, use_error_term=error_term)
    return ref


@pytest.mark.parametrize("architecture", ["standard", "topk"])
@pytest.mark.parametrize("error_term", [False, True])
def test_spliced_equals_sae_lens_hooked_sae_transformer(model, tokens, architecture, error_term):
    """Logits, feature activations and a feature edit agree with SAELens's splice."""
    saes = saes_at(*NAMES, architecture=architecture)
    ref = _sae_lens_reference(model, saes, error_term)
    acts = [sae_hook_name(n, "hook_sae_acts_post") for n in NAMES]
    with spliced(model, saes, error_term=error_term):
        ours, cache = model.run_with_cache(tokens, names_filter=acts)
    theirs, ref_cache = ref.run_with_cache(tokens, names_filter=acts)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for name in acts:
        torch.testing.assert_close(cache[name], ref_cache[name], atol=1e-5, rtol=1e-5)
    # Zero the three strongest features of the first SAE at every position, in both.
    top = cache[acts[0]].abs().sum((0, 1)).argsort(descending=True)[:3]

    def ablate(act, hook):
        act = act.clone()
        act[..., top] = 0.0
        return act

    with spliced(model, saes, error_term=error_term), model.hooks([(acts[0], ablate)]):
        ours_edit = model(tokens)
    with ref.hooks([(acts[0], ablate)]):
        theirs_edit = ref(tokens)
    assert (ours_edit - ours).abs().max() > 1e-3  # the edit matters
    torch.testing.assert_close(ours_edit, theirs_edit, atol=1e-5, rtol=1e-5)
    assert hook_count(model) == 0

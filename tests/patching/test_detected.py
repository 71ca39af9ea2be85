"""Any metric gets the fast path: the engine detects the logits a plain-function metric reads
(`ioi.patching.readout`, the detection path patching uses) and, when they are one position per
prompt, computes only those, as for a metric that declares them. Results equal
TransformerLens's for metrics it serves fast, for ones it must not (two positions per prompt),
and for one that fools the detection (it falls back to every logit)."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tl_patching

import ioi.patching as ours
from ioi.metrics import make_logit_diff_metric
from ioi.patching.engine import DetectedReadout, with_detected_readout
from ioi.testing import logit_diff, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(seed=3)
    clean, corrupted = token_pair(seed=2, shared_prefix=1)
    _, clean_cache = model.run_with_cache(clean)
    return model, corrupted, clean_cache


def _spy(metric):
    """The metric, counting the calls whose logits are NaN somewhere (the fast path's)."""
    seen = {"calls": 0, "partial": 0}

    def spied(logits):
        seen["calls"] += 1
        seen["partial"] += bool(torch.isnan(logits).any())
        return metric(logits)

    return spied, seen


def _softmax_metric(logits):
    return logits[:, -1].softmax(-1)[:, 3].mean()


def _two_positions(logits):
    return (logits[:, -1, 3] - logits[:, -2, 7]).mean()


def _argmax_metric(logits):
    return (logits[:, -1].argmax(-1) == 3).float().mean()


def _item_metric(logits):
    # Through a Python float (TransformerLens needs a tensor back): no gradient to detect with.
    return torch.tensor(logit_diff(logits).item())


def _softmax_everywhere(logits):
    return logits.softmax(-1)[:, :, 3].mean()  # the whole vocabulary at every position


@pytest.mark.parametrize(
    "metric, fast",
    [
        (logit_diff, True),
        (_softmax_metric, True),
        (_two_positions, False),
        (_argmax_metric, False),
        (_item_metric, False),
        (_softmax_everywhere, False),
    ],
    ids=[
        "logit diff",
        "softmax at the last position",
        "two positions",
        "argmax",
        ".item()",
        "softmax everywhere",
    ],
)
@pytest.mark.parametrize("name", ["get_act_patch_resid_pre", "get_act_patch_attn_head_out_by_pos"])
def test_plain_metrics_equal_transformer_lens_and_take_the_fast_path_when_they_can(
    setup, metric, fast, name
):
    model, corrupted, clean_cache = setup
    expected = getattr(tl_patching, name)(model, corrupted, clean_cache, metric)
    spied, seen = _spy(metric)
    got = getattr(ours, name)(model, corrupted, clean_cache, spied)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # The detection probes the metric a few times; the sweep's own calls dominate.
    if fast:
        assert seen["partial"] > seen["calls"] / 2, seen
    else:
        assert seen["partial"] <= 1, seen  # at most detection's NaN probe


def test_a_metric_that_fools_the_detection_falls_back_to_every_logit(setup):
    """At the unpatched logits it reads one position; once a patch changes its value it also
    reads position 0 (times zero: the value is the same, but NaN would poison it)."""
    model, corrupted, clean_cache = setup
    with torch.no_grad():
        base = float(logit_diff(model(corrupted)))

    def sneaky(logits):
        value = logit_diff(logits)
        if abs(float(value.detach()) - base) > 1e-6:
            return value + 0.0 * logits[:, 0, 5].mean()
        return value

    expected = tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, sneaky)
    got = ours.get_act_patch_resid_pre(model, corrupted, clean_cache, sneaky)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_detection_declares_positions_and_tokens_and_leaves_declared_metrics_alone(setup):
    model, corrupted, _ = setup
    with torch.inference_mode():
        logits = model(corrupted)
        found = with_detected_readout(logit_diff, logits)
        assert isinstance(found, DetectedReadout)
        assert found.logit_positions.tolist() == [corrupted.shape[1] - 1] * corrupted.shape[0]
        assert found.logit_tokens.tolist() == [3, 7]
        assert with_detected_readout(_two_positions, logits) is _two_positions
        factory = make_logit_diff_metric(torch.tensor([[3, 7]] * corrupted.shape[0]))
        assert with_detected_readout(factory, logits) is factory


def test_a_metric_that_refuses_nan_logits_still_works(setup):
    """Detection probes the metric with NaN elsewhere; a metric that raises on that is simply
    served every logit."""
    model, corrupted, clean_cache = setup

    def strict(logits):
        if torch.isnan(logits).any():
            raise ValueError("NaN logits")
        return logit_diff(logits)

    expected = tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, strict)
    got = ours.get_act_patch_resid_pre(model, corrupted, clean_cache, strict)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)

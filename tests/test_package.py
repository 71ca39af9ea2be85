"""``import ioi`` is the front door: every exported name resolves, and importing is cheap."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import ioi


def test_all_lists_exactly_the_exports():
    assert sorted(ioi.__all__) == sorted(ioi._EXPORTS), "__all__ and _EXPORTS disagree"
    assert len(set(ioi.__all__)) == len(ioi.__all__)
    assert set(ioi.__all__) <= set(dir(ioi))


@pytest.mark.parametrize("name", ioi.__all__)
def test_every_exported_name_resolves(name):
    value = getattr(ioi, name)
    home = ioi._EXPORTS[name]
    if home is None:
        assert isinstance(value, types.ModuleType) and value.__name__ == f"ioi.{name}"
    else:
        assert value.__module__ == home and value.__name__ == name


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        ioi.load_modle  # noqa: B018


def test_import_ioi_loads_neither_torch_nor_transformer_lens():
    code = (
        "import json, sys; import ioi; "
        "print(json.dumps([m for m in ('torch', 'transformer_lens', 'plotly') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], f"import ioi imported {out.stdout.strip()}"


def test_the_front_door_loads_the_bundled_model():
    code = (
        "import ioi; model = ioi.load_model('toy', device='cpu'); "
        "ds = ioi.IOIDataset(4, seed=1, tokenizer=model); "
        "diff = ioi.logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, "
        "positions=ds.word_idx['end']); print(float(diff) > 0, ioi.Head.parse('1.2'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "1.2"]


def test_intervals_are_at_the_front_door():
    import torch

    est = ioi.bootstrap(torch.tensor([[1.0, 2.0, 4.0], [3.0, 3.0, 3.0]]), seed=1)
    assert isinstance(est, ioi.Estimate) and ioi.bootstrap is ioi.statistics.bootstrap
    assert est.mean.tolist() == pytest.approx([7 / 3, 3.0]) and est.n == 3
    assert (est.low[1], est.high[1]) == (3.0, 3.0), "a constant series has a point interval"
    assert est.low[0] < est.mean[0] < est.high[0]

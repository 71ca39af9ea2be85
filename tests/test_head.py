"""`ioi.Head`: one value for a head, its label, and what a user may pass for one."""

from __future__ import annotations

import numpy as np
import pytest

from ioi.head import Head


def test_a_head_is_its_pair_and_prints_as_its_label():
    head = Head(9, 6)
    assert head == (9, 6) and hash(head) == hash((9, 6))
    layer, index = head
    assert (layer, index) == (head.layer, head.head) == (9, 6)
    assert str(head) == "9.6" and f"{head}" == "9.6"
    assert str(Head(10, 11)) == "10.11", "two-digit layers and heads"
    assert sorted([Head(10, 0), Head(2, 3), Head(2, 1)]) == [(2, 1), (2, 3), (10, 0)]


@pytest.mark.parametrize("label", ["0.0", "9.6", "10.11", "011.2"])
def test_parse_reads_back_what_str_writes(label):
    head = Head.parse(label)
    assert isinstance(head, Head)
    assert head == tuple(int(part) for part in label.split("."))
    assert Head.parse(str(head)) == head


@pytest.mark.parametrize(
    "label", ["9", "9.", ".9", "9.9.9", "a.b", "-1.2", "1.-2", " 9.9", "9.9 ", "9,9", "", "９.９"]
)
def test_parse_rejects_anything_but_two_integers_and_a_dot(label):
    with pytest.raises(ValueError, match="'layer.head'") as err:
        Head.parse(label)
    assert repr(label) in str(err.value), "the message shows what was passed"


def test_parse_wants_a_string():
    with pytest.raises(TypeError, match="str"):
        Head.parse(9.6)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9.6", (9, 6)),
        ((9, 6), (9, 6)),
        ([9, 6], (9, 6)),
        (Head(9, 6), (9, 6)),
        ((np.int64(3), np.int64(1)), (3, 1)),
        ((0, 0), (0, 0)),
    ],
)
def test_coerce_accepts_a_label_a_pair_or_a_head(value, expected):
    head = Head.coerce(value)
    assert isinstance(head, Head) and head == expected
    assert all(type(v) is int for v in head)


@pytest.mark.parametrize(
    ("value", "error", "needle"),
    [
        ((True, 1), TypeError, "not bools"),
        ((1, False), TypeError, "not bools"),
        ((1.9, 2), TypeError, "float"),
        ((1, 2.0), TypeError, "float"),
        (("9", "6"), TypeError, "str"),
        (9.6, TypeError, "'layer.head' label"),
        (None, TypeError, "NoneType"),
        ({9: 6}, TypeError, "dict"),
        ((-1, 2), ValueError, ">= 0"),
        ((1, -2), ValueError, ">= 0"),
        ((9,), ValueError, "1 items"),
        ((9, 6, 1), ValueError, "3 items"),
        ("9-6", ValueError, "'layer.head'"),
    ],
)
def test_coerce_rejects_everything_else_naming_the_forms(value, error, needle):
    with pytest.raises(error, match=needle):
        Head.coerce(value)


def test_grid_labels_are_layer_major():
    assert Head.grid_labels(2, 3) == ["0.0", "0.1", "0.2", "1.0", "1.1", "1.2"]
    assert Head.grid_labels(0, 4) == []

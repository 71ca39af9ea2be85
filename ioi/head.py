"""`Head`: one attention head, ``(layer, head)``, written ``"layer.head"`` (``"9.9"``).

The one value type for a head across the library, the report, the site and the course. It is a
`NamedTuple`, so ``Head(9, 9) == (9, 9)`` and it unpacks as ``layer, head = h``; ``str(h)`` is
its label and `Head.parse` reads a label back. `Head.coerce` accepts what a user may pass for
a head (a label, a pair of ints, a `Head`) and rejects everything else with a message naming
the expected forms. Constructing ``Head(layer, head)`` directly does not check its fields (a
`NamedTuple` cannot); coerce values that come from a user.
"""

from __future__ import annotations

import operator
import re
from typing import NamedTuple

_LABEL = re.compile(r"([0-9]+)\.([0-9]+)")
_FORMS = "a 'layer.head' label such as '9.6', a (layer, head) pair of ints >= 0, or a Head"


class Head(NamedTuple):
    """An attention head: its layer and its index within the layer, both from 0."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"{self.layer}.{self.head}"

    @classmethod
    def parse(cls, label: str) -> Head:
        """``"9.6"`` -> ``Head(9, 6)``.

        Raises:
            TypeError: ``label`` is not a string.
            ValueError: it is not two non-negative integers joined by one dot, with nothing
                around them (``"9"``, ``"9.6.1"``, ``"a.b"``, ``"-1.2"``, ``" 9.6"`` all fail).
        """
        if not isinstance(label, str):
            raise TypeError(f"a head label is a str such as '9.6'; got {type(label).__name__}")
        match = _LABEL.fullmatch(label)
        if match is None:
            raise ValueError(
                f"a head label reads 'layer.head' (two integers >= 0 joined by a dot, e.g. "
                f"'9.6'); got {label!r}"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def coerce(cls, value: object) -> Head:
        """A `Head` from ``"9.6"``, ``(9, 6)``, ``[9, 6]`` or a `Head`.

        Raises:
            TypeError: a value of another type, or a pair holding something other than ints
                (bools and floats such as ``1.9`` are not layer or head indices).
            ValueError: a malformed label, a sequence that is not a pair, a negative index.
        """
        if isinstance(value, str):
            return cls.parse(value)
        if not isinstance(value, tuple | list):
            raise TypeError(f"a head is {_FORMS}; got {type(value).__name__} {value!r}")
        if len(value) != 2:
            raise ValueError(f"a head is {_FORMS}; got {len(value)} items: {value!r}")
        layer, head = (_index(v, value) for v in value)
        if layer < 0 or head < 0:
            raise ValueError(f"layer and head indices are >= 0; got {value!r}")
        return cls(layer, head)

    @classmethod
    def grid_labels(cls, n_layers: int, n_heads: int) -> list[str]:
        """Labels of every head in layer-major order: ``["0.0", "0.1", ..., "L-1.H-1"]``."""
        return [str(cls(layer, h)) for layer in range(n_layers) for h in range(n_heads)]


HeadLike = Head | tuple[int, int] | str
"""What `Head.coerce` accepts (a `Head`, a ``(layer, head)`` pair, a label), for annotations."""


def _index(v: object, pair: object) -> int:
    """An int (or anything with ``__index__``, e.g. a NumPy integer), never a bool or a float."""
    if isinstance(v, bool):
        raise TypeError(f"a head's layer and index are ints, not bools; got {pair!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(
            f"a head's layer and index are ints; got {type(v).__name__} {v!r} in {pair!r}"
        ) from None

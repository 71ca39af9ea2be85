"""Named wrappers over one generic function: the ``def`` says what it is, a decorator how it runs.

A family of public functions that differ only in what they pass to one implementation (the 18
``get_act_patch_*`` drop-ins, the four ``get_path_patch_*`` wrappers) is written as real ``def``
statements with their own parameters, defaults, annotations and docstrings, and an empty body
(``...``); `body_from` supplies the body. So each function's signature and docstring are written
once, where a reader looks for them, and each body is said once, in the decorator's arguments.

Why this and not the alternatives:

- ``functools.partial`` objects with a patched ``__doc__`` (TransformerLens's way) have no
  signature of their own: ``help`` shows the generic function's parameters, and editors and
  type checkers see a ``partial``, not the function.
- A generated module plus a ``.pyi`` stub would write every signature and docstring a second
  time, in a file that has to be kept in step with the generator.

Here ``inspect.signature`` and ``help`` show the ``def``'s own parameters and docstring (the
wrapper carries ``__wrapped__``), and static tools read the ``def`` itself: `body_from` is typed
to return the function it was given.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def body_from(impl: Callable[..., Any], *fixed: Any) -> Callable[[F], F]:
    """Decorator: the decorated ``def`` runs ``impl(*fixed, *args, **kwargs)``.

    The caller's arguments are first bound to the ``def``'s signature, with its defaults filled
    in, so a wrong call raises the same `TypeError` a hand-written body would, and ``impl``
    receives every parameter: the positional-or-keyword ones positionally, in the ``def``'s
    order, and the keyword-only ones by name.

    Args:
        impl: the shared implementation.
        fixed: leading arguments that say which member of the family this ``def`` is.

    Example:
        >>> @body_from(pow, 2)
        ... def power_of_two(exponent: int) -> int:
        ...     \"\"\"2 ** exponent.\"\"\"
        ...     ...
        >>> power_of_two(exponent=10), str(inspect.signature(power_of_two))
        (1024, '(exponent: int) -> int')
    """

    def decorate(stub: F) -> F:
        signature = inspect.signature(stub)

        @functools.wraps(stub)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return impl(*fixed, *bound.args, **bound.kwargs)

        return wrapper  # type: ignore[return-value]  # same signature, via __wrapped__

    return decorate

"""Argument checks shared by the stage wrappers: one rule, one message shape per kind of argument.

Each check returns the value normalised (a plain ``int``) or raises the caller's
:mod:`biomatch.errors` class with a message that names the parameter and says what is wrong.
"""

from __future__ import annotations

import numpy as np

from .errors import BiomatchError


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None, *,
              error: type[BiomatchError] = BiomatchError, kind: str = "an integer") -> int:
    """``value`` as an int within [minimum, maximum] (either bound optional); bools are refused.

    Raises ``error`` ("<name>: expected <kind> 1..1000, got 0"; ``kind`` says what the
    integer is, e.g. "a shard number").
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if ok:
        value = int(value)
        ok = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            want = f"{kind} {minimum}..{maximum}"
        elif minimum is not None:
            want = f"{kind} >= {minimum}"
        elif maximum is not None:
            want = f"{kind} <= {maximum}"
        else:
            want = kind
        raise error(f"{name}: expected {want}, got {value!r}")
    return value

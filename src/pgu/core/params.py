"""Strict construction of the frozen parameter dataclasses (training recipe, unlearning and
de-poisoning configurations) from the dicts Kedro reads out of YAML.

A misspelt key or a value of the wrong type (``--params=unlearn.config.epochs=abc``) must fail
loudly, naming the key, never be ignored or surface as an error deep inside the loop.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

# What a YAML value of each field type may be: bools are ints to Python, but not to a user.
_CHECKS = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def _type_error(hint: Any, value: Any) -> str | None:
    """What ``value`` should have been for a field annotated ``hint``; None if it fits."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    checks = [_CHECKS[t] for t in options if t in _CHECKS]
    if not checks or any(ok(value) for _, ok in checks):
        return None  # a type this check does not know (or a match): the dataclass validates
    expected = " or ".join(name for name, _ in checks)
    return expected + (" or null" if type(None) in options else "")


def from_params(cls: type[T], params: Mapping[str, Any], what: str) -> T:
    """``cls(**params)``, rejecting unknown keys with their names and the valid ones.

    Args:
        cls: a dataclass.
        params: its fields as a mapping (e.g. ``params:unlearn.config``).
        what: what the parameters configure, for the message (e.g. "unlearning").
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown {what} parameters {sorted(unknown)}; valid: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for key, value in params.items():
        expected = _type_error(hints[key], value)
        if expected is not None:
            raise ValueError(f"{what} parameter {key} must be {expected}, got {value!r}")
    return cls(**dict(params))

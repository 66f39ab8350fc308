"""Strict construction of the frozen parameter dataclasses (training recipe, unlearning and
de-poisoning configurations) from the dicts Kedro reads out of YAML.

A misspelt key must fail loudly with the valid names, never be ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


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
    return cls(**dict(params))

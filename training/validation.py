"""Checks shared by the typed configs. Each error message starts with the field name, so that a web form or a
CLI can show it as it is."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeGuard


def is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool (YAML and JSON give true/false, which Python counts as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    """A finite int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_int(name: str, value: object, *, minimum: int) -> None:
    if not (is_int(value) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> None:
    in_range = (
        is_number(value)
        and (minimum is None or value >= minimum)
        and (above is None or value > above)
        and (below is None or value < below)
    )
    if not in_range:
        limits = ((">=", minimum), (">", above), ("<", below))
        bounds = [f"{sign} {bound:g}" for sign, bound in limits if bound is not None]
        raise ValueError(f"{name} must be a number {' and '.join(bounds)}, got {value!r}")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_known_keys(what: str, data: Mapping[str, Any], cls: type) -> None:
    """Refuse keys that are not fields of the dataclass `cls`, naming them and the known ones."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise ValueError(f"unknown {what} key(s): {', '.join(unknown)}; known: {', '.join(known)}")

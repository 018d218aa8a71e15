"""Whether a config value fits its annotation (types, ``Literal`` choices, ``Annotated``
ranges of :mod:`lightrec.params`), and the words for what an annotation allows: the
checker behind :func:`lightrec.config.check.check_config`."""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from lightrec.errors import LightrecError
from lightrec.params import CONSTRAINTS

UNIONS = (Union, types.UnionType)  # Optional[int] and int | None


def check_value(value: Any, annotation: Any, key: str) -> None:
    """Raise LightrecError unless ``value`` fits ``annotation`` (and its Range, if any)."""
    if not _fits(value, annotation):
        raise LightrecError(f"{key}={value!r} must be {describe(annotation)}")


def _fits(value: Any, annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        if not _fits(value, base):
            return False
        return all(r.contains(value) for r in meta if isinstance(r, CONSTRAINTS))
    if origin in UNIONS:
        return any(_fits(value, a) for a in get_args(annotation))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(annotation))
    if origin in (list, tuple):
        (item,) = get_args(annotation)[:1] or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin in (dict, Mapping) or annotation is Mapping:
        if not isinstance(value, dict):
            return False
        key_type, value_type = get_args(annotation)[:2] or (Any, Any)
        return all(_fits(k, key_type) and _fits(v, value_type) for k, v in value.items())
    if annotation is Any:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:  # a finite number: NaN passes every range check, inf breaks fits
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if annotation is str:
        return isinstance(value, str)
    return True  # a type this checker does not know: the constructor decides


def describe(annotation: Any) -> str:
    """What an annotation allows, in words.

    >>> from lightrec.params import Probability
    >>> describe(Probability), describe(list[int] | None), describe(Literal["a", "b"])
    ('a finite number in [0, 1)', 'a list of integers, or null', "one of 'a', 'b'")
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        ranges = [r.describe() for r in meta if isinstance(r, CONSTRAINTS)]
        return " ".join([describe(base), *ranges])
    if origin in UNIONS:
        parts = [describe(a) for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(parts)
        return f"{text}, or null" if type(None) in get_args(annotation) else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if origin in (list, tuple):
        (item,) = get_args(annotation)[:1] or (Any,)
        return f"a list of {_plural(describe(item))}"
    if origin in (dict, Mapping):
        key_type, value_type = get_args(annotation)[:2] or (Any, Any)
        return f"a mapping of {_plural(describe(key_type))} to {_plural(describe(value_type))}"
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(text: str) -> str:
    for one, many in (
        ("an integer", "integers"),
        ("a finite number", "finite numbers"),
        ("a number", "numbers"),
        ("a string", "strings"),
        ("a list of", "lists of"),
    ):
        if text.startswith(one):
            return many + text[len(one) :]
    return text

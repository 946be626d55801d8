"""Checks of configuration values, in one wording for every file, option and flag.

The fleet file, network profiles, probe options and the audience model are read from TOML,
JSON, the command line or Python, and each value is checked here: a check takes the value and
where it was read (``downlink.loss``, ``("targets", 1, "duration")``) and returns it typed, or
raises :class:`BadValue` naming where, what was expected and what was given::

    downlink.loss: must be between 0 and 1, got 1.5
    targets[1].cuont: unknown key; did you mean 'count'? (known: count, decode, ...)

A reader that knows more (the fleet file knows each key's line) catches :class:`BadValue` and
adds it, from :attr:`BadValue.where`, which stays a path rather than text.

Why not a validation library such as pydantic: it would check the types, but the two things
these messages give users, the TOML line of the bad key and the known key nearest a
misspelled one, it gives neither, and its messages would be rewritten here anyway. What is
left is some twenty lines of type and range checks, which do not earn a dependency.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from qoe.errors import ConfigError

__all__ = [
    "BadValue",
    "Where",
    "boolean",
    "dotted",
    "known_keys",
    "number",
    "one_of",
    "probability",
    "shown",
    "table",
    "text",
    "texts",
    "unknown",
    "whole",
]

Where = str | tuple[str | int, ...]
"""Where a value was read: a dotted name, or a path of table keys and list indexes."""


def _path(where: Where) -> tuple[str | int, ...]:
    if isinstance(where, str):
        return (where,) if where else ()
    return where


def shown(value: object) -> str:
    """A value as the user wrote it: TOML's ``true``, not Python's ``True``."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def dotted(where: Where) -> str:
    """``("targets", 1, "labels", "region")`` as ``targets[1].labels.region``."""
    out = ""
    for part in _path(where):
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else part
    return out


class BadValue(ConfigError):
    """A value that failed its check: ``where`` it was read and the ``problem`` with it."""

    def __init__(self, where: Where, problem: str) -> None:
        self.where = _path(where)
        self.problem = problem
        key = dotted(self.where)
        super().__init__(f"{key}: {problem}" if key else problem)

    def under(self, prefix: Where) -> BadValue:
        """The same problem, read under ``prefix`` (a profile's ``downlink``, say)."""
        return BadValue((*_path(prefix), *self.where), self.problem)


def number(
    value: object,
    where: Where = (),
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> float:
    """A finite number (not a bool), at least ``minimum``, more than ``above``, at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue(where, f"must be a number, got {shown(value)}")
    if not math.isfinite(value):
        raise BadValue(where, f"must be a finite number, got {shown(value)}")
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise BadValue(where, f"must be between {minimum:g} and {maximum:g}, got {shown(value)}")
    if minimum is not None and value < minimum:
        raise BadValue(where, f"must be >= {minimum:g}, got {shown(value)}")
    if above is not None and value <= above:
        raise BadValue(where, f"must be > {above:g}, got {shown(value)}")
    if maximum is not None and value > maximum:
        raise BadValue(where, f"must be <= {maximum:g}, got {shown(value)}")
    return float(value)


def probability(value: object, where: Where = ()) -> float:
    return number(value, where, minimum=0.0, maximum=1.0)


def whole(value: object, where: Where = (), *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool, not 2.0), at least ``minimum``, at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(where, f"must be a whole number, got {shown(value)}")
    if minimum is not None and value < minimum:
        raise BadValue(where, f"must be at least {minimum}, got {shown(value)}")
    if maximum is not None and value > maximum:
        raise BadValue(where, f"must be at most {maximum:,}, got {shown(value)}")
    return value


def boolean(value: object, where: Where = ()) -> bool:
    if not isinstance(value, bool):
        raise BadValue(where, f"must be true or false, got {shown(value)}")
    return value


def text(value: object, where: Where = (), *, empty: bool = False) -> str:
    """A string, non-empty unless ``empty``."""
    if not isinstance(value, str) or (not value and not empty):
        raise BadValue(where, f"must be a {'' if empty else 'non-empty '}string, got {shown(value)}")
    return value


def texts(value: object, where: Where = ()) -> list[str]:
    """A non-empty list of non-empty strings."""
    if not isinstance(value, list) or not value:
        raise BadValue(where, f"must be a non-empty list of strings, got {shown(value)}")
    return [text(item, (*_path(where), i)) for i, item in enumerate(value)]


def one_of(value: object, choices: Sequence[str], where: Where = ()) -> str:
    if value not in choices:
        raise BadValue(where, f"must be one of {', '.join(choices)}, got {shown(value)}")
    return str(value)


def table(value: object, where: Where = ()) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadValue(where, f"must be a table, got {shown(value)}")
    return value


def unknown(key: str, known: Iterable[str], where: Where = (), what: str = "key") -> BadValue:
    """The error for an unknown ``key`` (a ``what``: "key", "option for whep probes"), with
    the nearest known one suggested."""
    names = sorted(known)
    near = difflib.get_close_matches(key, names, n=1)
    noun, _, among = what.partition(" ")
    problem = f"unknown {noun} {key!r}{' ' + among if among else ''}"
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return BadValue((*_path(where), key), f"{problem}{hint} (known: {', '.join(names) or 'none'})")


def known_keys(values: Mapping[str, Any], known: Iterable[str], where: Where = (), what: str = "key") -> None:
    """Raise :func:`unknown` for the first key of ``values`` not in ``known``."""
    allowed = set(known)
    for key in values:
        if key not in allowed:
            raise unknown(key, allowed, where, what)

"""Named weak-network profiles: the built-in data file and user TOML files, strictly checked.

A profile is two :class:`~sim.netem.LinkConfig` (``downlink``: server to client,
``uplink``: client to server) plus a ``description`` and the ``source`` of its numbers.
The built-in ones live in ``profiles.toml`` next to this module, with the cellular traces
they use under ``traces/`` (package data: both must ship in the wheel).

File schema (TOML; units as in :class:`~sim.netem.LinkConfig`: seconds, bits per second)::

    [wifi]                                  # one table per profile, named by its key
    description = "Home Wi-Fi"              # optional string
    source = "Firefox DevTools Wi-Fi"       # optional string
    [wifi.downlink]                         # optional; absent = no impairment
    rate = 30_000_000
    delay = 0.001
    outages = [[30.0, 5.0]]                 # [start, duration] pairs
    schedule = [{at = 20.0, rate = 1_500_000}, {at = 40.0, rate = 30_000_000}]
    trace = "traces/Verizon-LTE-short.down" # relative to the TOML file's directory
    [wifi.uplink]
    rate = 15_000_000

A user file holds either such a table of profiles, or a single profile at the top level
(``description``/``source``/``downlink``/``uplink`` keys directly), which is named after the
file's stem. ``load_profile("my.toml")`` takes the file's only profile;
``load_profile("my.toml#name")`` picks one from a file with several.

Unknown keys, wrong types and out-of-range values raise :class:`~qoe.errors.ConfigError`
with a one-line message naming the profile and the field, e.g.
``profile '3g': downlink.loss: must be between 0 and 1, got 1.5``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from qoe import checks
from qoe.errors import ConfigError
from sim.netem import LinkConfig, Trace, parse_trace

__all__ = ["DIRECTIONS", "Profile", "list_profiles", "load_profile", "load_profiles"]

#: The two directions of a profile: ``downlink`` carries media to a viewer, ``uplink`` from
#: a publisher.
DIRECTIONS = ("downlink", "uplink")

_PROFILE_KEYS = frozenset({"description", "source", *DIRECTIONS})
_LINK_KEYS = frozenset(field.name for field in dataclasses.fields(LinkConfig))
_BUILTIN_FILE = "profiles.toml"
# Built-in traces are immutable package data; parsing the UMTS trace takes tens of ms.
_builtin_traces: dict[str, Trace] = {}


@dataclass(frozen=True)
class Profile:
    """A named pair of link configurations, with where its numbers come from."""

    name: str
    description: str
    source: str
    downlink: LinkConfig
    uplink: LinkConfig


def list_profiles() -> list[str]:
    """Names of the built-in profiles, in the order the data file defines them."""
    return list(_builtin_table())


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile from a user TOML file.

    A built-in name wins; otherwise the argument is taken as a path if it ends in ``.toml``,
    contains a path separator or names an existing file. ``PATH#NAME`` selects one profile
    of a file with several.
    """
    table = _builtin_table()
    if name_or_path in table:
        return _profile(name_or_path, table[name_or_path], _builtin_dir(), builtin=True)
    path, _, wanted = name_or_path.partition("#")
    if _looks_like_path(path):
        profiles = load_profiles(path)
        if wanted:
            if wanted not in profiles:
                raise ConfigError(f"{path}: no profile {wanted!r} (has: {', '.join(profiles) or 'none'})")
            return profiles[wanted]
        if len(profiles) != 1:
            raise ConfigError(
                f"{path}: holds {len(profiles)} profiles ({', '.join(profiles)}); choose one with {path}#NAME"
            )
        return next(iter(profiles.values()))
    raise ConfigError(
        f"unknown profile {name_or_path!r} (built-in: {', '.join(table)}; or give the path of a TOML file)"
    )


def load_profiles(path: str | Path) -> dict[str, Profile]:
    """Every profile in a user TOML file, by name (see the module docstring for the schema)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read: {reason}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    if not data:
        raise ConfigError(f"{path}: no profiles in file")
    # A file with profile keys at the top level is one profile, named after the file.
    table = {path.stem: data} if _PROFILE_KEYS & data.keys() else data
    return {name: _profile(name, raw, path.parent, builtin=False) for name, raw in table.items()}


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or "\\" in text or Path(text).is_file()


def _builtin_dir() -> Traversable:
    return resources.files(__package__)


def _builtin_table() -> dict[str, Any]:
    # Parsed on every call (about a millisecond): cheap, and edits show up without restarts.
    text = _builtin_dir().joinpath(_BUILTIN_FILE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _profile(name: str, raw: object, base: Traversable | Path, *, builtin: bool) -> Profile:
    try:
        fields = checks.table(raw)
        checks.known_keys(fields, _PROFILE_KEYS)
        return Profile(
            name=name,
            description=checks.text(fields.get("description", ""), "description", empty=True),
            source=checks.text(fields.get("source", ""), "source", empty=True),
            downlink=_link(fields.get("downlink", {}), "downlink", base, builtin),
            uplink=_link(fields.get("uplink", {}), "uplink", base, builtin),
        )
    except ConfigError as exc:
        raise ConfigError(f"profile {name!r}: {exc}") from None


def _link(raw: object, where: str, base: Traversable | Path, builtin: bool) -> LinkConfig:
    fields = dict(checks.table(raw, where))
    checks.known_keys(fields, _LINK_KEYS, where)
    if "schedule" in fields:
        fields["schedule"] = _schedule(fields["schedule"], f"{where}.schedule")
    if "outages" in fields and not isinstance(fields["outages"], list):
        raise ConfigError(f"{where}.outages: must be an array of [start, duration] pairs")
    if "trace" in fields:
        fields["trace"] = _trace(fields["trace"], f"{where}.trace", base, builtin)
    try:
        return LinkConfig(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None


def _schedule(raw: object, where: str) -> list[tuple[object, dict[str, Any]]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: must be an array of tables like {{at = 10.0, loss = 0.1}}")
    steps = []
    for i, step in enumerate(raw):
        if not isinstance(step, dict) or "at" not in step:
            raise ConfigError(f"{where}[{i}]: must be a table with 'at' and the fields to change")
        changes = {key: value for key, value in step.items() if key != "at"}
        steps.append((step["at"], changes))
    return steps


def _trace(raw: object, where: str, base: Traversable | Path, builtin: bool) -> Trace:
    file = checks.text(raw, where)
    if builtin and file in _builtin_traces:
        return _builtin_traces[file]
    resource = base.joinpath(file)
    name = str(resource)
    try:
        text = resource.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{where}: trace file {name}: cannot read: {reason}") from None
    try:
        trace = Trace(name=name, times_ms=parse_trace(text, name))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if builtin:
        _builtin_traces[file] = trace
    return trace

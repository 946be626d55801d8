"""The fleet file: targets, the probe runs against them, their schedule, and SLOs.

One TOML file feeds both ``qoe fleet run`` (CI) and ``qoe serve`` (the exporter). Example::

    slos = ["join.total_seconds p95 <= 2.0", "video.stall_ratio max <= 0.01"]

    [fleet]
    duration = 10          # seconds per probe run
    count = 3              # runs per target and network profile
    profiles = ["none"]
    interval = 60          # qoe serve: seconds between rounds of a target

    [[targets]]
    name = "demo"
    url = "http://127.0.0.1:8080/whep/demo"
    labels = { region = "local" }
    slos = ["av_sync.offset_seconds.median within [-0.185, 0.09]"]

    [[slo]]
    field = "join.total_seconds"
    aggregate = "p95"
    op = "<="
    bound = 1.0
    targets = ["demo"]

Validation is strict: an unknown key, a value of the wrong type, an unknown field path or
aggregate is an error naming the file, the line and the key. A mistyped threshold never
passes silently. Values are bounded too: ``count`` at most :data:`MAX_COUNT` and the fleet at
most :data:`MAX_RUNS` runs, ``interval`` at least :data:`MIN_INTERVAL` seconds, no profile
twice, tables nested at most :data:`MAX_NESTING` deep, and the file UTF-8.
(TOML puts keys after a ``[table]`` header into that table, so top-level
``slos`` must come before the first header.)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from probes import PROBES, checked_options, guess_kind, phases_of
from probes.options import OptionError
from qoe import checks
from qoe.errors import ConfigError
from qoe.fleet.locate import Locator
from qoe.fleet.slo import SLO, check_parts, numeric_fields, parse_slo
from sim.profiles import list_profiles

__all__ = [
    "DEFAULTS",
    "FLEET_ONLY",
    "MAX_COUNT",
    "MAX_RUNS",
    "MIN_INTERVAL",
    "Fleet",
    "Target",
    "load_fleet",
    "parse_fleet",
]

T = TypeVar("T")

DEFAULTS: dict[str, Any] = {
    "duration": 10.0,
    "count": 1,
    "profiles": ["none"],
    "interval": 60.0,
    "join_timeout": 10.0,
    "media_timeout": 5.0,
    "decode": True,
    "seed": None,
}
"""Fleet-wide defaults, in one place; ``[fleet]`` overrides them, a target overrides that."""
FLEET_ONLY: dict[str, Any] = {"concurrency": 8, "wait": 30.0, "warmup": 2.0, "probe_concurrency": 8}
"""``[fleet]`` settings a target cannot override: how many probes at once; how long ``qoe
fleet run`` waits for each target's server to take a connection; how long it watches
each target, unscored, before the measured runs (0: not at all), so that start-up costs on
either side (a room's first encoders, the runner's first decoders) are not judged; and how
many ``/probe`` requests ``qoe serve`` runs at once (more are refused with 503)."""
MAX_COUNT = 10_000
"""Most runs per target and profile. A mistyped ``count`` is refused at once, not planned:
thirty million runs took minutes and gigabytes before the first probe started."""
MAX_RUNS = 100_000
"""Most probe runs one fleet file plans (targets x profiles x count); split a larger fleet."""
MIN_INTERVAL = 1.0
"""Fewest seconds between a target's scheduled runs in ``qoe serve``: a probe takes longer
than that to join, so a shorter interval would only ever skip turns."""
MAX_NESTING = 16
"""Deepest nesting of tables and arrays read; a fleet file needs five levels. Deeper is refused
before it can exhaust the parser's or the checks' recursion."""
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")
RESERVED_LABELS = {
    "probe",
    "kind",
    "target",
    "profile",
    "phase",
    "quantile",
    "le",
    "job",
    "instance",
}


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    kind: str
    probe: str
    labels: dict[str, str]
    duration: float
    count: int
    profiles: tuple[str, ...]
    interval: float
    join_timeout: float
    options: dict[str, Any] = field(default_factory=dict)
    media_timeout: float = DEFAULTS["media_timeout"]
    decode: bool = True
    seed: int | None = None
    clock_offset: float | None = None
    """The publisher's clock minus the probe host's, seconds (see :mod:`qoe.clockdomain`)."""


@dataclass(frozen=True)
class Fleet:
    path: str
    targets: tuple[Target, ...]
    slos: tuple[SLO, ...]
    """Every SLO, with ``targets`` filled in for the ones a target declared itself."""
    concurrency: int
    allow: tuple[str, ...] = ()
    """Extra URL patterns ``qoe serve``'s /probe may reach besides the targets (fnmatch)."""
    wait: float = FLEET_ONLY["wait"]
    warmup: float = FLEET_ONLY["warmup"]
    probe_concurrency: int = FLEET_ONLY["probe_concurrency"]
    """``/probe`` requests ``qoe serve`` runs at once; beyond it answers 503 with Retry-After."""

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)


class _Checker:
    """The checks of :mod:`qoe.checks`, their errors located: ``file:line: key: problem``."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.locator = Locator(text)

    def fail(self, where: tuple[str | int, ...], message: str) -> ConfigError:
        line = self.locator.line(where)
        key = checks.dotted(where)
        location = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{location}: {key}: {message}" if key else f"{location}: {message}")

    def checked(self, where: tuple[str | int, ...], check: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``check(*args, **kwargs)`` from :mod:`qoe.checks`, its error reported at ``where``."""
        try:
            return check(*args, **kwargs)
        except checks.BadValue as exc:
            raise self.fail((*where, *exc.where), exc.problem) from None

    def keys(self, table: dict[str, Any], allowed: set[str], where: tuple[str | int, ...]) -> None:
        self.checked(where, checks.known_keys, table, allowed)

    def number(self, value: Any, where: tuple[str | int, ...], *, positive: bool = True) -> float:
        return self.checked(where, checks.number, value, above=0.0 if positive else None)

    def integer(self, value: Any, where: tuple[str | int, ...], maximum: int | None = None) -> int:
        return self.checked(where, checks.whole, value, minimum=1, maximum=maximum)

    def string(self, value: Any, where: tuple[str | int, ...]) -> str:
        return self.checked(where, checks.text, value)

    def strings(self, value: Any, where: tuple[str | int, ...]) -> list[str]:
        return self.checked(where, checks.texts, value)


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; ConfigError with file, line and key on any problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fleet file: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); TOML files are UTF-8"
        ) from None
    return parse_fleet(text, str(path))


def _too_deep(data: Any) -> tuple[str | int, ...] | None:
    """The path of the first value nested deeper than MAX_NESTING tables and arrays, if any
    (walked without recursion, so no depth can exhaust the stack)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict | list):
            if len(where) >= MAX_NESTING:
                return where
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(((*where, key), item) for key, item in items)
    return None


def parse_fleet(text: str, path: str = "<fleet>") -> Fleet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: arrays or tables nested too deeply (at most {MAX_NESTING})") from None
    c = _Checker(path, text)
    deep = _too_deep(data)
    if deep is not None:
        raise c.fail(deep, f"nested deeper than {MAX_NESTING} tables and arrays")
    c.keys(data, {"fleet", "targets", "slos", "slo"}, ())
    settings = dict(DEFAULTS)
    fleet_table = data.get("fleet", {})
    if not isinstance(fleet_table, dict):
        raise c.fail(("fleet",), "must be a [fleet] table")
    c.keys(fleet_table, {*DEFAULTS, *FLEET_ONLY, "allow"}, ("fleet",))
    settings.update(_settings(c, fleet_table, ("fleet",)))
    fleet_only = dict(FLEET_ONLY)
    for key in ("concurrency", "probe_concurrency"):
        if key in fleet_table:
            fleet_only[key] = c.integer(fleet_table[key], ("fleet", key))
    for key in ("wait", "warmup"):
        if key in fleet_table:
            fleet_only[key] = c.checked(("fleet", key), checks.number, fleet_table[key], minimum=0.0)
    allow = tuple(c.strings(fleet_table["allow"], ("fleet", "allow"))) if "allow" in fleet_table else ()

    phases = sorted({p for kind in PROBES for p in phases_of(kind)})
    fields = numeric_fields(phases)
    raw_targets = data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise c.fail(("targets",), "the fleet needs at least one [[targets]] table")
    targets: list[Target] = []
    slos: list[SLO] = []
    for i, raw in enumerate(raw_targets):
        where: tuple[str | int, ...] = ("targets", i)
        if not isinstance(raw, dict):
            raise c.fail(where, f"must be a [[targets]] table, got {checks.shown(raw)}")
        c.keys(
            raw,
            {"name", "url", "kind", "probe", "labels", "slos", "options", "clock_offset", *DEFAULTS},
            where,
        )
        name = c.string(raw.get("name"), (*where, "name"))
        if not NAME.match(name):
            raise c.fail(
                (*where, "name"),
                f"invalid target name {name!r}: use letters, digits, '.', '_', '-'",
            )
        if any(t.name == name for t in targets):
            raise c.fail((*where, "name"), f"duplicate target name {name!r}")
        url = c.string(raw.get("url"), (*where, "url"))
        try:
            kind = raw.get("kind") or guess_kind(url)
        except ConfigError as exc:
            raise c.fail((*where, "url"), str(exc)) from None
        if kind not in PROBES:
            raise c.fail((*where, "kind"), f"unknown probe kind {kind!r}; known: {', '.join(sorted(PROBES))}")
        labels = raw.get("labels", {})
        if not isinstance(labels, dict):
            raise c.fail((*where, "labels"), 'must be a table of label = "value"')
        for key, value in labels.items():
            if not LABEL.match(key) or key in RESERVED_LABELS:
                raise c.fail((*where, "labels", key), f"invalid or reserved label name {key!r}")
            c.string(value, (*where, "labels", key))
        own = {**settings, **_settings(c, raw, where)}
        options = raw.get("options", {})
        if not isinstance(options, dict):
            raise c.fail((*where, "options"), f"must be a table, got {options!r}")
        try:
            checked_options(kind, options)
        except OptionError as exc:
            raise c.fail((*where, "options", exc.key), str(exc)) from None
        targets.append(
            Target(
                name=name,
                url=url,
                kind=kind,
                probe=c.string(raw.get("probe", kind), (*where, "probe")),
                labels=dict(labels),
                duration=own["duration"],
                count=own["count"],
                profiles=tuple(own["profiles"]),
                interval=own["interval"],
                join_timeout=own["join_timeout"],
                options=dict(options),
                media_timeout=own["media_timeout"],
                decode=own["decode"],
                seed=own["seed"],
                clock_offset=(
                    c.number(raw["clock_offset"], (*where, "clock_offset"), positive=False)
                    if "clock_offset" in raw
                    else None
                ),
            )
        )
        if "slos" in raw:
            for j, text_slo in enumerate(c.strings(raw["slos"], (*where, "slos"))):
                slo = _parse(c, text_slo, (*where, "slos", j), fields)
                slos.append(SLO(slo.field, slo.aggregate, slo.op, slo.bound, targets=(name,)))
    names = {t.name for t in targets}
    if "slos" in data:
        for j, text_slo in enumerate(c.strings(data["slos"], ("slos",))):
            slos.append(_parse(c, text_slo, ("slos", j), fields))
    slo_tables = data.get("slo", [])
    if not isinstance(slo_tables, list):
        raise c.fail(("slo",), f"must be [[slo]] tables, got {checks.shown(slo_tables)}")
    for j, table in enumerate(slo_tables):
        slos.append(_slo_table(c, table, ("slo", j), fields, names))
    planned = sum(t.count * len(t.profiles) for t in targets)
    if planned > MAX_RUNS:
        raise c.fail(
            (),
            f"the fleet plans {planned:,} probe runs (targets x profiles x count); "
            f"at most {MAX_RUNS:,}: lower count or split the fleet",
        )
    return Fleet(
        path,
        tuple(targets),
        tuple(slos),
        fleet_only["concurrency"],
        allow,
        wait=fleet_only["wait"],
        warmup=fleet_only["warmup"],
        probe_concurrency=fleet_only["probe_concurrency"],
    )


def _settings(c: _Checker, table: dict[str, Any], where: tuple[str | int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("duration", "join_timeout", "media_timeout"):
        if key in table:
            out[key] = c.number(table[key], (*where, key))
    if "interval" in table:
        interval = table["interval"]
        out["interval"] = c.checked((*where, "interval"), checks.number, interval, minimum=MIN_INTERVAL)
    if "count" in table:
        out["count"] = c.integer(table["count"], (*where, "count"), maximum=MAX_COUNT)
    if "decode" in table:
        out["decode"] = c.checked((*where, "decode"), checks.boolean, table["decode"])
    if "seed" in table:
        out["seed"] = c.checked((*where, "seed"), checks.whole, table["seed"])
    if "profiles" in table:
        profiles = c.strings(table["profiles"], (*where, "profiles"))
        known = list_profiles()
        for k, name in enumerate(profiles):
            if name not in known and not name.endswith(".toml"):
                raise c.fail(
                    (*where, "profiles", k),
                    f"unknown network profile {name!r}; known: {', '.join(known)}",
                )
            if name in profiles[:k]:
                # Two runs of one profile would share a run id and one result would be lost.
                raise c.fail((*where, "profiles", k), f"profile {name!r} is listed twice")
        out["profiles"] = profiles
    return out


def _parse(c: _Checker, text: str, where: tuple[str | int, ...], fields: list[str]) -> SLO:
    try:
        return parse_slo(text, fields)
    except ValueError as exc:
        raise c.fail(where, str(exc)) from None


def _slo_table(
    c: _Checker, table: Any, where: tuple[str | int, ...], fields: list[str], names: set[str]
) -> SLO:
    if not isinstance(table, dict):
        raise c.fail(where, "must be an [[slo]] table")
    c.keys(table, {"field", "aggregate", "op", "bound", "targets", "profiles"}, where)
    field_path = c.string(table.get("field"), (*where, "field"))
    aggregate = c.string(table.get("aggregate", "every"), (*where, "aggregate"))
    op = c.string(table.get("op"), (*where, "op"))
    try:
        check_parts(field_path, aggregate, op, fields)
    except ValueError as exc:
        key = "field" if "figure" in str(exc) else "aggregate" if "aggregate" in str(exc) else "op"
        raise c.fail((*where, key), str(exc)) from None
    raw = table.get("bound")
    bound: float | tuple[float, float]
    if op == "within":
        if not isinstance(raw, list) or len(raw) != 2:
            raise c.fail((*where, "bound"), f"'within' needs bound = [LOW, HIGH], got {raw!r}")
        low = c.number(raw[0], (*where, "bound", 0), positive=False)
        high = c.number(raw[1], (*where, "bound", 1), positive=False)
        if low > high:
            raise c.fail((*where, "bound"), f"range [{low:g}, {high:g}] is empty")
        bound = (low, high)
    else:
        bound = c.number(raw, (*where, "bound"), positive=False)
    targets = tuple(c.strings(table["targets"], (*where, "targets"))) if "targets" in table else ()
    for k, name in enumerate(targets):
        if name not in names:
            raise c.fail((*where, "targets", k), f"no target named {name!r}")
    profiles = tuple(c.strings(table["profiles"], (*where, "profiles"))) if "profiles" in table else ()
    return SLO(field_path, aggregate, op, bound, targets, profiles)

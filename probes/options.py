"""Each probe kind's options: name, type, unit, default and help, declared beside the probe.

A probe module lists its options as :class:`Option` records (``OPTIONS``); :data:`probes.OPTIONS`
collects them by kind. :func:`validate` is the one check every way in goes through: the
runner, before a probe starts (so a probe reads typed values and never converts), ``qoe
fleet check`` (which reports the file and line), ``qoe probe --option`` and ``/probe``. An
unknown key is an error with the nearest known key suggested, never silently ignored; a value
of the wrong type is an error naming the key, the type expected and the value given (except a
secret's, such as a bearer token, which no message shows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qoe import checks
from qoe.errors import ConfigError
from qoe.media import Knobs
from qoe.signal import HOST_TONE_HZ
from qoe.signal.quality import DEFAULT_RATE, parse_rate

__all__ = [
    "ICE_TRANSPORTS",
    "QUALITY_OPTION",
    "SENDER_OPTIONS",
    "WEBRTC_OPTIONS",
    "Option",
    "OptionError",
    "describe",
    "validate",
]


@dataclass(frozen=True)
class Option:
    name: str
    type: type
    """``float``, ``int``, ``str``, ``bool``, or another class a Python caller passes (``Knobs``)."""
    default: Any
    help: str
    unit: str = ""
    choices: tuple[str, ...] = ()
    positive: bool = False
    """A number that must be > 0."""
    secret: bool = False
    """A credential: a non-empty string that no message, listing or result shows."""
    check: Callable[[Any], Any] | None = None
    """A value's own check, for what the type alone cannot say: returns the value to keep,
    raises ValueError with the problem."""
    kind_text: str = ""
    """What the value is, as --options lists it, where the type says too little."""

    def kind_name(self) -> str:
        if self.kind_text:
            return self.kind_text
        if self.choices:
            return " | ".join(repr(c) for c in self.choices)
        return {float: "number", int: "whole number", str: "string", bool: "true or false"}.get(
            self.type, self.type.__name__
        )


SENDER_OPTIONS: tuple[Option, ...] = (
    Option("knobs", Knobs, None, "what the test signal injects (A/V offset, freezes); from Python only"),
    Option("tone_hz", float, HOST_TONE_HZ, "frequency of the tone markers sent", "Hz", positive=True),
    Option("slot", int, 0, "where the flash marker is: 0 the host's, 1 a co-host's"),
    Option("width", int, 640, "picture width", "px", positive=True),
    Option("height", int, 360, "picture height", "px", positive=True),
)
"""What every publisher of the test signal takes (WHIP, RTMP publish)."""

ICE_TRANSPORTS = ("all", "relay")

WEBRTC_OPTIONS: tuple[Option, ...] = (
    Option(
        "token",
        str,
        None,
        "bearer token sent on every WHIP/WHEP request (Authorization: Bearer); never shown",
        secret=True,
    ),
    Option(
        "ice_transport",
        str,
        "all",
        "which candidates ICE may use: relay sends media only through the TURN server the "
        "endpoint announces (a TURN-only path)",
        choices=ICE_TRANSPORTS,
    ),
)
"""What every WebRTC probe takes (WHEP viewer, WHIP publisher)."""


def _quality_rate(value: Any) -> float | str:
    rate = parse_rate(value)
    return "all" if rate is None else rate


QUALITY_OPTION = Option(
    "quality",
    float,
    DEFAULT_RATE,
    "frames a second scored for picture quality (PSNR, SSIM) against the test signal they "
    "carry; 'all' scores every frame, 0 or 'off' none",
    "frames/s",
    check=_quality_rate,
    kind_text="number | 'all' | 'off'",
)
"""What every viewer of the test signal takes (WHEP, and the FFmpeg kinds)."""


class OptionError(ConfigError):
    """A bad option; ``key`` names it, so a fleet file can point at its line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def validate(kind: str, options: Mapping[str, Any], declared: tuple[Option, ...]) -> dict[str, Any]:
    """``options`` checked against ``declared``, with every default filled in."""
    by_name = {o.name: o for o in declared}
    values: dict[str, Any] = {}
    for key, value in options.items():
        option = by_name.get(key)
        if option is None:
            raise OptionError(key, checks.unknown(key, by_name, what=f"option for {kind} probes").problem)
        try:
            values[key] = _check(option, value)
        except checks.BadValue as exc:
            raise OptionError(key, f"option {key!r} of {kind} probes: {exc.problem}") from None
    for option in declared:
        values.setdefault(option.name, option.default)
    return values


def _check(option: Option, value: Any) -> Any:
    if value is None and option.default is None:
        return None
    if option.check is not None:
        try:
            return option.check(value)
        except ValueError as exc:
            raise checks.BadValue((), str(exc)) from None
    if option.secret:
        if not isinstance(value, str) or not value:
            raise checks.BadValue((), "must be a non-empty string (the value given is not shown)")
        return value
    if option.choices:
        return checks.one_of(value, option.choices)
    if option.type is float:
        return checks.number(value, above=0.0 if option.positive else None)
    if option.type is int:
        return checks.whole(value, minimum=1 if option.positive else None)
    if option.type is bool:
        return checks.boolean(value)
    if option.type is str:
        return checks.text(value, empty=True)
    if not isinstance(value, option.type):
        raise checks.BadValue((), f"must be a {option.type.__name__}, got {value!r}")
    return value


def describe(declared: tuple[Option, ...]) -> list[str]:
    """One line per option: name, type, unit, default and help (for --help and the docs)."""
    lines = []
    for o in declared:
        unit = f" ({o.unit})" if o.unit else ""
        default = "" if o.default is None else f" [default {o.default!r}]"
        lines.append(f"{o.name}: {o.kind_name()}{unit}{default}: {o.help}")
    return lines

"""The session-log schema ``qoe impact`` reads (see SCHEMA.md beside this file for the long form).

One row per viewer session, Parquet or CSV. Columns by kind:

- ``id``: any type (string or integer); compared as stored.
- ``timestamp``: a Parquet TIMESTAMP (with or without time zone; without is taken as UTC), a
  number of Unix seconds, or ISO 8601 text (``2026-03-02T20:15:00Z``, offsets allowed; text
  without an offset is UTC).
- ``number`` / ``integer``: numeric types, or text that parses as a finite number (integers
  must be whole).
- ``category``: anything; compared as text; empty means ``unknown``.

Rules a row must pass (the first one it fails is the reason it is excluded; nothing is dropped
without being counted): see :data:`REASONS`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BEHAVIOUR", "COLUMNS", "CONTROLS", "HEIGHT_RANGE", "REASONS", "REQUIRED", "Column", "column"]

HEIGHT_RANGE = (90, 4320)
"""Picture heights a session may report, pixels: from a 160x90 thumbnail rendition to 8K UHD.
Outside it the figure is no picture height (a bitrate or a byte count in the wrong column, a
placeholder such as 0 or -1), and the row is excluded as out of range rather than read as a very
low or very high resolution."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    """id, timestamp, number, integer or category."""
    required: bool
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column("viewer_id", "id", True, "who watched; links sessions into visits, returns and repurchases"),
    Column("room_id", "id", True, "the live room; matched to probe results by target or label"),
    Column(
        "session_id",
        "id",
        False,
        "unique per session; duplicates are excluded (first row kept). Absent: derived from "
        "viewer_id, room_id and session_start, so a repeated session is still caught",
    ),
    Column("session_start", "timestamp", True, "when the viewer clicked into the room"),
    Column(
        "session_end",
        "timestamp",
        True,
        "when the viewer left; empty (null) while the session is still open at the log's end (censored)",
    ),
    Column(
        "join_seconds",
        "number",
        False,
        "click to first frame, seconds; null when the first frame never showed (abandoned or failed)",
    ),
    Column(
        "stall_seconds", "number", False, "frozen time while watching, seconds (W3C webrtc-stats freezes)"
    ),
    Column("stall_count", "integer", False, "number of freezes"),
    Column(
        "av_offset_seconds", "number", False, "median A/V offset, seconds, + = audio ahead (ITU-R BT.1359)"
    ),
    Column("chat_echo_seconds", "number", False, "median chat echo time, seconds"),
    Column(
        "video_height",
        "integer",
        False,
        "picture height the viewer mostly watched, pixels (360, 540, 720, 1080, ...); "
        "null when no picture showed",
    ),
    Column("bitrate_kbps", "number", False, "mean received video bitrate, kbit/s"),
    Column("order_count", "integer", False, "orders placed in the session (absent: no repurchase analysis)"),
    Column("order_value", "number", False, "value of those orders, any currency"),
    Column("products_viewed", "integer", False, "behaviour: product cards the viewer opened in the session"),
    Column("chat_messages", "integer", False, "behaviour: chat messages the viewer sent in the session"),
    Column("shares", "integer", False, "behaviour: times the viewer shared the room in the session"),
    Column("coupon_grabs", "integer", False, "behaviour: coupons the viewer grabbed in the session"),
    Column("device", "category", False, "control: device class (ios, android, web, ...)"),
    Column("network", "category", False, "control: network type; names of sim/profiles match probe profiles"),
    Column("region", "category", False, "control: viewer region"),
    Column("app_version", "category", False, "covariate: client version (reported, not a control)"),
    Column("arm", "category", False, "A/B test arm; empty when the session was not in the test"),
)

REQUIRED = tuple(c.name for c in COLUMNS if c.required)
BEHAVIOUR = ("products_viewed", "chat_messages", "shares", "coupon_grabs")
"""Optional per-session counts of what viewers did, reported by QoE band (absent: not reported)."""
CONTROLS = ("room_id", "device", "network", "region", "hour")
"""Confounders matched on and controlled for: ``hour`` is the UTC hour of day of session_start."""

REASONS = {
    "missing_column": "a required column is missing from the file (every row excluded)",
    "missing_value": "viewer_id, room_id, session_start or (when the column exists) session_id is empty",
    "unparseable_timestamp": "session_start or session_end is not a timestamp from 1970 to 9999 (NaN, 1e308)",
    "wrong_type": "a number column holds something that is not a finite number within +-3.4e38 "
    "(or a whole one for counts)",
    "end_before_start": "session_end is before session_start",
    "out_of_range": "a negative figure, a join longer than the session, more stall than watch time, "
    f"or a video_height outside {HEIGHT_RANGE[0]}..{HEIGHT_RANGE[1]}",
    "duplicate_session_id": "the session_id already appeared in an earlier row (the first row is kept)",
}
"""Why a row is excluded, in the order they are checked."""


def column(name: str) -> Column:
    for c in COLUMNS:
        if c.name == name:
            return c
    raise KeyError(name)

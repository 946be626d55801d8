"""Coupon drops: the live-commerce moment when the host says "coupons now!".

Every ``every`` seconds (at each multiple of that many Unix seconds, as the room's other
timed knobs) a drop opens with ``stock`` coupons, and the host shows the drop's id in its
video code (:func:`qoe.signal.drop_tag`) from that instant for
:data:`~qoe.signal.DROP_SHOW_SECONDS`. ``POST /rooms/ROOM/grab`` with ``{"drop": ID,
"client": "..."}`` grabs one: the first ``stock`` distinct clients win, a winner asking
again is told it won (not a second coupon), everyone after is told the drop sold out. A
sold-out answer is a normal answer (200), never an error. A drop stays open until the next
one opens; grabbing it after that is ``410 Gone``, and an id never opened ``404``.

:class:`CouponDrops` is the drops' state and rules, with no I/O and no event loop; times are
passed in (Unix seconds, the room's clock, which is also its host's send clock), so tests
are exact. The room keeps the latest :data:`KEPT` drops as ground truth.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from qoe.errors import ConfigError
from qoe.signal import DROP_SHOW_SECONDS, drop_tag
from qoe.signal.code import DROP_ID_MAX

__all__ = [
    "CLIENT_ID_MAX",
    "KEPT",
    "CouponDrops",
    "Drop",
    "DropError",
    "GrabAnswer",
    "host_tag",
    "parse_grab",
]

KEPT = 100
"""Drops a room remembers (for grabs of closed drops and its ground truth); older ones go."""
CLIENT_ID_MAX = 64
"""Characters of a client id."""
STOCK_MAX = 100_000


class DropError(Exception):
    """A grab the room refuses: ``status`` is the HTTP status (404 unknown, 410 closed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Drop:
    id: int
    opened_at: float
    """Unix seconds (the room's clock) the host started showing it."""
    stock: int
    winners: list[str] = field(default_factory=list)
    """Client ids that won, in the order they grabbed."""
    sold_out_at: float | None = None
    """Unix seconds of the grab that took the last coupon."""
    closed_at: float | None = None
    """Unix seconds the next drop opened (grabs after it are refused)."""
    grabs: int = 0
    """Grab requests answered (won, sold out, repeats)."""

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "opened_at": self.opened_at,
            "stock": self.stock,
            "won": len(self.winners),
            "sold_out_at": self.sold_out_at,
            "closed_at": self.closed_at,
            "grabs": self.grabs,
        }


@dataclass(frozen=True)
class GrabAnswer:
    drop: int
    outcome: str
    """``won`` or ``sold_out``."""
    opened_at: float
    sold_out_at: float | None
    remaining: int

    def to_json(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "outcome": self.outcome,
            "opened_at": self.opened_at,
            "sold_out_at": self.sold_out_at,
            "remaining": self.remaining,
        }


class CouponDrops:
    """Timed drops of ``stock`` coupons every ``every`` seconds, and who won them."""

    def __init__(self, every: float, stock: int) -> None:
        if not math.isfinite(every) or every <= DROP_SHOW_SECONDS:
            raise ConfigError(
                f"--coupon-every must be longer than the {DROP_SHOW_SECONDS:g} s a drop shows, got {every}"
            )
        if not 1 <= stock <= STOCK_MAX:
            raise ConfigError(f"--coupon-stock must be from 1 to {STOCK_MAX}, got {stock}")
        self.every = every
        self.stock = stock
        self.drops: OrderedDict[int, Drop] = OrderedDict()
        self._next_id = 1

    def next_opening(self, now: float) -> float:
        """The next multiple of ``every`` Unix seconds after ``now``."""
        return (math.floor(now / self.every) + 1) * self.every

    def open(self, at: float) -> Drop:
        """Open the next drop at ``at``; the one before closes."""
        if self.drops:
            last = next(reversed(self.drops.values()))
            if last.closed_at is None:
                last.closed_at = at
        drop = Drop(self._next_id, at, self.stock)
        self._next_id = self._next_id % DROP_ID_MAX + 1
        self.drops.pop(drop.id, None)  # an id used again after 32767 drops
        self.drops[drop.id] = drop
        while len(self.drops) > KEPT:
            self.drops.popitem(last=False)
        return drop

    def showing(self, now: float) -> Drop | None:
        """The drop whose id the host shows at ``now``, if any."""
        if not self.drops:
            return None
        last = next(reversed(self.drops.values()))
        return last if last.opened_at <= now < last.opened_at + DROP_SHOW_SECONDS else None

    def grab(self, drop_id: int, client: str, now: float) -> GrabAnswer:
        """``client`` grabs drop ``drop_id`` at ``now``; raises :class:`DropError` for an
        unknown or closed drop."""
        drop = self.drops.get(drop_id)
        if drop is None:
            raise DropError(404, f"no drop {drop_id}")
        if drop.closed_at is not None and now >= drop.closed_at:
            raise DropError(410, f"drop {drop_id} closed when the next one opened")
        drop.grabs += 1
        if client in drop.winners:
            outcome = "won"
        elif len(drop.winners) < drop.stock:
            drop.winners.append(client)
            outcome = "won"
            if len(drop.winners) == drop.stock:
                drop.sold_out_at = now
        else:
            outcome = "sold_out"
        return GrabAnswer(drop.id, outcome, drop.opened_at, drop.sold_out_at, drop.stock - len(drop.winners))

    def info(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "stock": self.stock,
            "drops": [d.info() for d in self.drops.values()],
        }


def host_tag(coupons: CouponDrops | None, nonce: int, now: float) -> int:
    """What the host shows in the code's tag at ``now``: the drop on show, else the latest
    chat nonce (0: none); the layout is :mod:`qoe.signal.code`'s."""
    showing = coupons.showing(now) if coupons is not None else None
    return drop_tag(showing.id) if showing is not None else nonce


def parse_grab(body: Any) -> tuple[int, str]:
    """The drop id and client id of a grab's JSON body; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError('expected a JSON object {"drop": ID, "client": "..."}')
    drop, client = body.get("drop"), body.get("client")
    if isinstance(drop, str) and drop.isdigit():
        drop = int(drop)
    if not isinstance(drop, int) or isinstance(drop, bool) or not 1 <= drop <= DROP_ID_MAX:
        raise ValueError(f"'drop' must be a drop id from 1 to {DROP_ID_MAX}")
    if not isinstance(client, str) or not 1 <= len(client) <= CLIENT_ID_MAX or not client.isprintable():
        raise ValueError(f"'client' must be a client id of 1 to {CLIENT_ID_MAX} printable characters")
    return drop, client

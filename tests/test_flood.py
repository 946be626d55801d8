"""A trimmed flood (bench/flood.py) in the suite: a tenth of each flood against ``qoe room``
and ``qoe serve``, while a viewer watches the demo room.

Each flood must get the answer the room's bounds name (sim/room/limits.py) and cost nothing
once it is over: invalid WHIP offers a 400 that makes no room, abandoned WHEP offers a 201
whose session expires, a chat flood dropped and counted, scrapes answered 200 or refused
503. The viewer watching through it all must succeed.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from tests.conftest import run_bench

pytestmark = pytest.mark.alone  # a flood loads the machine on purpose: no test beside it

SCRIPT, ARGS = "flood.py", "--whip 100 --whep 50 --chat 1000 --scrapes 20 --viewer-seconds 6"


def test_a_trimmed_flood_gets_the_bounds_answers_and_the_viewer_watches_through(tmp_path: Path) -> None:
    summary = tmp_path / "flood.json"
    done, figures = run_bench(SCRIPT, ARGS, summary, timeout=180)
    assert done.returncode == 0, done.stdout
    answers = {
        name: collections.Counter({int(k): v for k, v in a.items()}) for name, a in figures["answers"].items()
    }
    assert answers["invalid WHIP offers"] == {400: 100}
    assert answers["WHEP offers never completed"] == {201: 50}  # under the 250 viewers of a room
    scrapes = answers["/probe scrapes"]
    assert set(scrapes) <= {200, 503} and scrapes[200] >= 1 and scrapes.total() == 20, scrapes
    chat = figures["chat"]
    assert chat["received"] + chat["flood_drops"] == 1000 and chat["flood_drops"] > 0, chat
    # Once the abandoned sessions expired: no room the refused offers named, no session left.
    assert figures["stats_after"]["rooms"] == 1 and figures["stats_after"]["sessions"] == 0
    before, after = figures["before"]["room"], figures["after"]["room"]
    assert after["room_fds"] <= before["room_fds"] + 4, (before, after)  # every session's sockets closed
    viewer = figures["viewer"]
    assert viewer["success"] is True and viewer["video"]["frames"] > 60, viewer["error"]

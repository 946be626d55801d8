"""In-process shaping of aiortc's own sockets (sim.shaper), on real loopback peers.

Two RTCPeerConnections on 127.0.0.1 exchange data-channel messages; only the offerer gathers
its candidates inside ``shaping()``, so its uplink carries what it sends and its downlink
what it receives. Tolerances are the shaper's promise: RTT within 15 ms of twice the one-way delay.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection

from probes.webrtc.peer import candidate_addresses, rtc_configuration
from qoe import looplag
from sim.netem import LinkConfig
from sim.profiles import Profile, load_profile
from sim.proxy.check import host_too_busy
from sim.shaper import Lateness, Scheduler, Shaper, current_shaper, shaping
from sim.shaper.aioice_hook import _ShapedTransport
from sim.shaper.timerfd import open_timerfd
from tests.servers import unavailable


def _profile(down: LinkConfig, up: LinkConfig) -> Profile:
    return Profile("test", "", "", downlink=down, uplink=up)


@dataclass
class Pair:
    a: RTCPeerConnection
    b: RTCPeerConnection
    channel: RTCDataChannel
    shaper: Shaper | None
    received: asyncio.Queue[tuple[Any, float]] = field(default_factory=asyncio.Queue)
    at_b: list[Any] = field(default_factory=list)


@asynccontextmanager
async def peers(profile: Profile | None, *, echo: bool, **channel: Any) -> AsyncIterator[Pair]:
    """Peer ``a`` (shaped with ``profile`` unless None) opens a data channel to ``b``."""
    a = RTCPeerConnection(rtc_configuration())
    b = RTCPeerConnection(rtc_configuration())
    pair = Pair(a, b, a.createDataChannel("probe", **channel), None)
    try:
        opened = asyncio.Event()
        pair.channel.on("open", opened.set)
        pair.channel.on("message", lambda m: pair.received.put_nowait((m, time.monotonic())))

        @b.on("datachannel")
        def on_channel(remote: RTCDataChannel) -> None:
            @remote.on("message")
            def on_message(message: Any) -> None:
                pair.at_b.append(message)
                if echo:
                    remote.send(message)

        with candidate_addresses(("127.0.0.1",)):
            if profile is None:
                await a.setLocalDescription(await a.createOffer())
            else:
                with shaping(profile, np.random.default_rng(11)) as pair.shaper:
                    await a.setLocalDescription(await a.createOffer())
            await b.setRemoteDescription(a.localDescription)
            await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        async with asyncio.timeout(15):
            await opened.wait()
        yield pair
    finally:
        await a.close()
        await b.close()
        if pair.shaper is not None:
            pair.shaper.close()


async def ping(pair: Pair, count: int) -> list[float]:
    rtts = []
    for i in range(count):
        sent = time.monotonic()
        pair.channel.send(f"ping {i}")
        async with asyncio.timeout(5):
            message, arrived = await pair.received.get()
        assert message == f"ping {i}"
        rtts.append(arrived - sent)
    return rtts


def protocols(pc: RTCPeerConnection) -> list[Any]:
    """aioice's StunProtocol objects behind a connected peer (test-only private access)."""
    assert pc.sctp is not None
    ice = pc.sctp.transport.transport
    return list(ice.iceGatherer._connection._protocols)


async def test_rtt_is_twice_the_one_way_delay() -> None:
    delay = LinkConfig(delay=0.1)
    before = looplag.cpu_times()
    async with peers(_profile(delay, delay), echo=True) as pair:
        rtts = await ping(pair, 8)
        stats = pair.shaper.stats() if pair.shaper else {}
    after = looplag.cpu_times()
    assert stats["sockets"] >= 1
    assert 0.185 <= statistics.median(rtts) <= 0.215, rtts
    # The shaper may deliver up to its batch window (0.2 ms) early, never more.
    assert min(rtts) >= 0.199, rtts
    # Deliveries on time within 1 ms, on a host that kept up (as `qoe netem check` judges it).
    assert before is not None and after is not None
    busy, total, stolen = (a - b for a, b in zip(after, before, strict=True))
    kept_up = not host_too_busy(None, busy / total, stolen / total)
    for direction in ("uplink", "downlink"):
        assert stats[direction]["sent"] > 8  # STUN, DTLS and SCTP all went through it
        if kept_up:
            assert stats[direction]["scheduling_error"]["p50"] < 0.001, (busy / total, stolen / total)


async def test_loss_drops_datagrams() -> None:
    # Loss starts 0.5 s after shaping began, so the connection itself is set up cleanly.
    lossy = LinkConfig(schedule=[(0.5, {"loss": 0.3})])
    async with peers(_profile(LinkConfig(), lossy), echo=False, ordered=False, maxRetransmits=0) as pair:
        assert pair.shaper is not None
        await asyncio.sleep(max(0.0, pair.shaper.start + 0.5 - time.monotonic()))
        for _ in range(300):
            pair.channel.send(b"x" * 100)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.5)
        up = pair.shaper.stats()["uplink"]
        received = len(pair.at_b)
    assert up["dropped"]["loss"] > 50
    assert up["sent"] == up["passed"] + sum(up["dropped"].values())
    assert 0.55 * 300 <= received <= 0.85 * 300


async def test_profile_none_changes_nothing() -> None:
    async with peers(load_profile("none"), echo=True) as pair:
        rtts = await ping(pair, 8)
        stats = pair.shaper.stats() if pair.shaper else {}
    assert statistics.median(rtts) < 0.02
    for direction in ("uplink", "downlink"):
        s = stats[direction]
        assert sum(s["dropped"].values()) == 0
        assert s["delivered"] == s["sent"] - s["pending"]


async def test_sockets_outside_a_context_are_untouched() -> None:
    with shaping(load_profile("none"), np.random.default_rng(1)):  # installs the hook
        assert current_shaper() is not None
    assert current_shaper() is None
    async with peers(None, echo=True) as pair:
        await ping(pair, 2)
        found = protocols(pair.a)
    assert found
    assert type(found[0]) is aioice.ice.StunProtocol  # the hook's class is aioice's now
    for protocol in found:
        assert not isinstance(protocol.transport, _ShapedTransport)
        assert "datagram_received" not in vars(protocol)


async def test_shaped_protocols_are_wrapped() -> None:
    delay = LinkConfig(delay=0.01)
    async with peers(_profile(delay, delay), echo=True) as pair:
        found = protocols(pair.a)
    assert found and all(isinstance(p.transport, _ShapedTransport) for p in found)


# -- the scheduler and its error record ------------------------------------------------------


def test_lateness_keeps_the_most_recent_samples() -> None:
    lateness = Lateness(keep=3)
    for value in (5.0, 1.0, 2.0, 3.0):
        lateness.add(value)
    assert lateness.count == 4
    assert lateness.samples().tolist() == [1.0, 2.0, 3.0]
    assert lateness.quantile(0.5) == 2.0
    assert lateness.summary()["max"] == 3.0
    assert Lateness().summary()["p99"] is None
    with pytest.raises(ValueError, match="keep"):
        Lateness(keep=0)


@pytest.mark.parametrize("precise", [True, False])
async def test_scheduler_runs_in_time_order_and_survives_failures(precise: bool) -> None:
    if precise and open_timerfd() is None:
        unavailable("no timerfd on this platform (Linux has it; the precise scheduler needs it)")
    scheduler = Scheduler(timerfd=precise)
    assert scheduler.precise is precise
    ran: list[tuple[str, float]] = []
    done = asyncio.Event()

    def record(name: str) -> None:
        ran.append((name, time.monotonic()))

    def fail() -> None:
        raise RuntimeError("boom")

    start = time.monotonic()
    scheduler.at(start + 0.030, record, "c")
    scheduler.at(start + 0.010, record, "a")
    scheduler.at(start + 0.010, fail)
    scheduler.at(start + 0.010, record, "b")  # same time: after "a", in insertion order
    scheduler.at(start + 0.040, done.set)
    async with asyncio.timeout(2):
        await done.wait()
    assert [name for name, _ in ran] == ["a", "b", "c"]
    assert ran[0][1] >= start + 0.010 - 0.001
    assert scheduler.failures == 1
    assert scheduler.ran == 5
    assert scheduler.lateness.count == 5
    assert scheduler.pending == 0
    scheduler.close()


async def test_a_paced_chain_survives_a_held_loop() -> None:
    """A sender that plans its next datagram from each one (the netem check's) finds 2,400
    due at once after the loop was held 0.6 s: they run in turn, none by recursion (which
    broke the chain with a RecursionError once a loop was held past some 250 ms)."""
    scheduler = Scheduler()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    sent: list[int] = []
    count, pace, start = 5000, 4000.0, time.monotonic()

    def send(seq: int) -> None:
        sent.append(seq)
        if seq + 1 < count:
            scheduler.at(start + (seq + 1) / pace, send, seq + 1)
        else:
            done.set_result(None)

    scheduler.at(start + 0.001, send, 0)
    time.sleep(0.6)  # the loop held, as a busy host holds it
    await asyncio.wait_for(done, 10)
    assert sent == list(range(count)) and scheduler.failures == 0
    scheduler.close()


async def test_scheduler_delivers_due_items_at_once_and_clears() -> None:
    scheduler = Scheduler()
    ran: list[int] = []
    scheduler.at(time.monotonic() - 1.0, ran.append, 1)  # already due, nothing pending
    assert ran == [1]
    scheduler.at(time.monotonic() + 10.0, ran.append, 2)
    assert scheduler.clear() == 1
    await asyncio.sleep(0.01)
    assert ran == [1]
    scheduler.close()

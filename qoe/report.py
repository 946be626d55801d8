"""Human-readable tables of probe results, for terminals and CI logs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qoe.result import ProbeResult

__all__ = ["host_note", "results_table"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _signed_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:+.0f}"


def _num(value: float | int | None, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _ssim(result: ProbeResult) -> float | None:
    quality = result.video.quality
    return None if quality is None else quality["ssim"]["p50"]


def _psnr(result: ProbeResult) -> float | None:
    quality = result.video.quality
    return None if quality is None else quality["psnr_db"]["p50"]


COLUMNS: list[tuple[str, Callable[[ProbeResult], str]]] = [
    ("probe", lambda r: r.probe),
    ("profile", lambda r: r.profile),
    ("ok", lambda r: "yes" if r.success else f"NO ({r.error.kind})" if r.error else "NO"),
    ("join ms", lambda r: _ms(r.join.total_seconds)),
    ("fps", lambda r: _num(r.video.fps, "{:.1f}")),
    ("freezes", lambda r: _num(r.video.freeze_count)),
    ("frozen s", lambda r: _num(r.video.freeze_seconds, "{:.2f}")),
    (
        "stall %",
        lambda r: _num(None if r.video.stall_ratio is None else r.video.stall_ratio * 100, "{:.1f}"),
    ),
    ("dropped", lambda r: _num(r.video.dropped_frames)),
    ("g2g p50 ms", lambda r: _ms(r.latency.glass_to_glass_seconds["p50"])),
    ("g2g p95 ms", lambda r: _ms(r.latency.glass_to_glass_seconds["p95"])),
    ("A/V ms", lambda r: _signed_ms(r.av_sync.offset_seconds["median"])),
    ("SSIM p50", lambda r: _num(_ssim(r), "{:.3f}")),
    ("PSNR p50", lambda r: _num(_psnr(r), "{:.1f}")),
]


CHAT_COLUMNS: list[tuple[str, Callable[[ProbeResult], str]]] = [
    ("echo p50 ms", lambda r: _ms(r.chat.echo_seconds["p50"])),
    ("echo p95 ms", lambda r: _ms(r.chat.echo_seconds["p95"])),
    ("sent", lambda r: _num(r.chat.sent)),
    ("lost", lambda r: _num(r.chat.lost)),
    ("dup", lambda r: _num(r.chat.duplicated)),
    ("reord", lambda r: _num(r.chat.reordered)),
]


GRAB_COLUMNS: list[tuple[str, Callable[[ProbeResult], str]]] = [
    ("drops", lambda r: _num(r.grab.seen)),
    ("seen after p50 ms", lambda r: _ms(r.grab.seen_after_seconds["p50"])),
    ("answer p95 ms", lambda r: _ms(r.grab.answer_seconds["p95"])),
    ("won", lambda r: _num(r.grab.won)),
    ("sold out", lambda r: _num(r.grab.sold_out)),
]


COHOST_COLUMNS: list[tuple[str, Callable[[ProbeResult], str]]] = [
    ("co-host ms", lambda r: _signed_ms(r.cohost.offset_seconds["median"])),
    ("co A/V ms", lambda r: _signed_ms(r.cohost.av_offset_seconds["median"])),
]


def results_table(results: Sequence[ProbeResult]) -> str:
    """A fixed-width table, one row per result; ``-`` marks a figure not measured.

    A/V is the median offset, positive when audio is ahead (ITU-R BT.1359). Chat columns
    replace the video ones when any result measured chat; grab columns (coupon drops seen,
    seen-after, grab answer, won and sold out) replace most of them when any grabbed.
    """
    if any(r.chat.sent is not None for r in results):
        columns = COLUMNS[:4] + CHAT_COLUMNS
    elif any(r.grab.seen is not None for r in results):
        columns = COLUMNS[:5] + COLUMNS[9:11] + GRAB_COLUMNS
    elif any(r.cohost.frames for r in results):
        columns = COLUMNS + COHOST_COLUMNS
    else:
        columns = COLUMNS
    rows = [[name for name, _ in columns]]
    rows += [[cell(r) for _, cell in columns] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def host_note(results: Sequence[ProbeResult]) -> str | None:
    """A line saying which runs' host was overloaded (their figures may be its own), or None."""
    busy = [r for r in results if r.probe_host.overloaded]
    if not busy:
        return None
    lag = max((r.probe_host.loop_lag_seconds.get("max") or 0.0) for r in busy)
    cpu = max((r.probe_host.cpu_busy_ratio or 0.0) for r in busy)
    return (
        f"note: this machine was overloaded during {len(busy)} of {len(results)} runs (event loop up to "
        f"{lag * 1000:.0f} ms late, CPUs up to {cpu:.0%} busy): their freezes and latency may be "
        "the machine's own, not the stream's"
    )

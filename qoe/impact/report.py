"""Write the impact report: ``report.html`` (self-contained: figures embedded as PNG data URIs,
no external URL), the same figures as PNG files, ``impact.json`` (every figure and the data
behind every plot) and ``qoe-impact.rules.yml`` (the recommended alert rules)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from qoe.errors import ConfigError

from .analysis import Impact
from .bands import WATCH_EDGES

__all__ = ["RULES_NAME", "clean", "write_report"]

RULES_NAME = "qoe-impact.rules.yml"
COLOURS = {"naive": "#9e9e9e", "stratified": "#1565c0", "matched": "#1565c0", "regression": "#e65100"}
LEGEND = {
    "naive": "naive",
    "stratified": "matched pairs / strata",
    "matched": "matched pairs / strata",
    "regression": "regression",
}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;
font-size:12px}.muted{color:#777}.bad{color:#b71c1c}.ok{color:#2e7d32}code{background:#f3f3f3;padding:0 .2em}
"""


METHOD = [
    "A visit is a run of one viewer's sessions less than the visit gap apart; its last session "
    "carries the visit's QoE. Return (repurchase) within k days: the viewer's next session (next "
    "session with an order) starts within k days of that session's end; sessions without k days "
    "of log after them are not counted.",
    "Watch time runs from the first frame; sessions still open at the log's end are censored "
    "(Kaplan-Meier), not exits. Watch-time effects are on the log scale (relative changes).",
    "Abandonment: waiting until the viewer left without a frame is the event, the first frame "
    "censors it (the join time of a viewer who left is unknown, so sessions cannot be paired on "
    "it). The knee and the slope come from a hinge fit to the curve.",
    "Matched pairs: the quasi-experimental design of Krishnan & Sitaraman (IMC 2012), reconstructed "
    "from docs/SOURCES.md; pairs are exact matches on the controls, drawn at random without "
    "replacement.",
    "Picture quality: a session is SD below 720p and HD from 720p up (the defaults), read from "
    "video_height; a log without it is read from bitrate_kbps instead (SD below 1500 kbit/s), "
    "never a mix of the two. The SD vs HD contrasts leave out sessions stalled above the stall "
    "threshold on both sides, so a stall's cost is not read as the picture's.",
    "Regression: least squares with additive fixed effects for each control; standard errors "
    "clustered by viewer. Both designs assume no confounder outside the controls.",
    "Designs and their support: a headline comes from matched pairs when at least 30 pairs hold "
    "at least 10 % of the treated sessions, else from the regression (a dose-response slope over "
    "every session with the exposure measured, at least 100 of them; a yes/no regression needs 30 "
    "treated and 30 control sessions), else the effect is reported as not estimable, with the "
    "reason. No design prints a figure below its minimum (qoe/impact/SCHEMA.md).",
    "Thresholds are this platform's measurement; the published figures (docs/SOURCES.md) are "
    "defaults, not truths.",
]


def clean(obj: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN and infinities to None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.generic):
        return clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def _figures(imp: Impact) -> dict[str, Any]:
    """Matplotlib figures by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, Any] = {}
    if imp.abandonment:
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        for m, c in imp.abandonment.items():
            ax.step(
                c.t,
                100 * c.share,
                where="post",
                color=COLOURS[m],
                lw=1.6,
                label=f"{m}: knee {c.knee.value:.2f} s, {100 * c.slope.value:.2f} %/s",
            )
            ax.plot(c.t, 100 * c.hinge(c.t), color=COLOURS[m], lw=0.9, ls="--")
        knee = imp.abandonment["stratified"].knee
        ax.axvspan(knee.low, knee.high, color=COLOURS["stratified"], alpha=0.08)
        ax.set(
            xlabel="waiting for the first frame (s)",
            ylabel="viewers who left (%)",
            title="Drop-off before the first frame (Kaplan-Meier, censored at the first frame)",
        )
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
        figs["abandonment.png"] = fig
    if imp.early_exit:
        ee = imp.early_exit
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        ax.scatter(
            ee["t"],
            100 * ee["share"],
            s=8 + 60 * ee["n"] / ee["n"].max(),
            color="#1565c0",
            alpha=0.7,
            label="share of joined sessions (size: sessions)",
        )
        h = ee["hinge"]
        ax.plot(
            ee["t"],
            100 * h(ee["t"]),
            color="#e65100",
            label=f"hinge: knee {h.knee:.2f} s, {100 * h.slope:.2f} %/s (naive)",
        )
        ax.set(
            xlabel="join time (s)", ylabel="left within 60 s (%)", title="Early exit after the first frame"
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        figs["early_exit.png"] = fig
    for b in imp.bands:
        if b.name == "join time":
            continue
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        for i, label in enumerate(b.labels):
            if b.sessions[i] >= 20 and np.isfinite(b.survival[i]).all():
                ax.step(
                    WATCH_EDGES[1:] / 60,
                    100 * b.survival[i],
                    where="post",
                    label=f"{label} ({b.sessions[i]})",
                    lw=1.3,
                )
        ax.set(
            xscale="log",
            xlabel="minutes since the first frame",
            ylabel="still watching (%)",
            title=f"Watch time by {b.name} (Kaplan-Meier; open sessions censored)",
        )
        if ax.get_legend_handles_labels()[0]:  # a small log may have no band of 20 sessions
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        figs[f"watch_{b.name.split()[0].replace('/', '').lower()}.png"] = fig
    rate_bands = [
        b for b in imp.bands if b.name in ("stall ratio", "join time") or b.name.startswith("picture")
    ]
    for what in ("return", "repurchase"):
        if not rate_bands:
            break
        fig, axes = plt.subplots(1, len(rate_bands), figsize=(5 * len(rate_bands), 3.8), squeeze=False)
        for ax, b in zip(axes[0], rate_bands, strict=True):
            x = np.arange(len(b.labels))
            for j, days in enumerate((1, 7, 30)):
                r = b.rates[f"{what}{days}"]
                share = np.nan_to_num(r["share"]) * 100
                err = np.nan_to_num(np.vstack([share - 100 * r["low"], 100 * r["high"] - share]), nan=0.0)
                ax.bar(x + (j - 1) * 0.27, share, 0.27, yerr=np.maximum(err, 0), capsize=2, label=f"{days} d")
            ax.set_xticks(x, b.labels, rotation=30, ha="right", fontsize=8)
            ax.set(ylabel=f"{what} within (%)", title=f"{what.capitalize()} by {b.name}")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
            ax.legend(fontsize=8, ncol=3, loc="upper center")
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        figs[f"{what}.png"] = fig
    if imp.attribution:
        fig, axes = plt.subplots(
            1, len(imp.attribution), figsize=(5 * len(imp.attribution), 3.6), squeeze=False
        )
        for ax, a in zip(axes[0], imp.attribution, strict=True):
            levels = a["levels"]
            x = np.arange(len(levels))
            lost = np.array([r["returns_lost"] for r in levels])
            err = np.array(
                [
                    [r["returns_lost"] - r["low"] for r in levels],
                    [r["high"] - r["returns_lost"] for r in levels],
                ]
            )
            ax.bar(x, lost, yerr=err, capsize=3, color="#1565c0")
            ax.set_xticks(x, [r["level"] for r in levels], rotation=30, ha="right", fontsize=8)
            ax.axhline(0, color="#999", lw=0.8)
            ax.set(ylabel="7-day returns lost to QoE", title=f"By {a['dimension']} (ranked)")
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        figs["segments.png"] = fig
    if imp.ab and imp.ab.get("differences"):
        keys = [
            k for k in ("no_first_frame", "return7", "repurchase7") if "value" in imp.ab["differences"][0][k]
        ]
        fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.5 * len(keys) * len(imp.ab["differences"])))
        y = 0.0
        labels = []
        for d in imp.ab["differences"]:
            for k in keys:
                e = d[k]
                ax.errorbar(
                    [100 * e["value"]],
                    [y],
                    xerr=[[100 * (e["value"] - e["low"])], [100 * (e["high"] - e["value"])]],
                    fmt="o",
                    color="#1565c0",
                    capsize=3,
                )
                labels.append(f"{d['arm']} − {d['against']}: {k}")
                y += 1
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.axvline(0, color="#999", lw=0.8)
        ax.invert_yaxis()
        ax.set(xlabel="difference (points)", title="A/B test: differences between arms (95 % CI)")
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        figs["arms.png"] = fig
    rows = _effect_rows(imp)
    if rows:
        fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(rows)))
        for i, (_, ests, truth) in enumerate(rows):
            for j, (m, (v, lo, hi)) in enumerate(ests.items()):
                y = i + (j - 1) * 0.22
                ax.errorbar(
                    [v],
                    [y],
                    xerr=[[v - lo], [hi - v]],
                    fmt="o",
                    color=COLOURS[m],
                    ms=4,
                    capsize=2,
                    label=LEGEND[m] if i == 0 else None,
                )
            if truth is not None:
                ax.plot(
                    [truth], [i], "D", color="#2e7d32", ms=6, mfc="none", label="truth" if i == 0 else None
                )
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
        ax.axvline(0, color="#999", lw=0.8)
        ax.invert_yaxis()
        ax.set(xlabel="effect (%, or points for returns and repurchases)", title="Naive vs causal estimates")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.6 / len(rows)), ncol=4)
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        figs["effects.png"] = fig
    return figs


def _effect_rows(imp: Impact) -> list[tuple[str, dict[str, tuple[float, float, float]], float | None]]:
    truth = imp.truth or {}
    rows = []
    if imp.abandonment:
        ests = {
            m: (100 * c.slope.value, 100 * c.slope.low, 100 * c.slope.high)
            for m, c in imp.abandonment.items()
        }
        t = truth.get("abandon_per_second")
        rows.append(("abandonment per s past knee", ests, None if t is None else 100 * t))
    for c in imp.contrasts:
        ests = {}
        for m, e in (("naive", c.naive), ("matched", c.matched.effect), ("regression", c.regression)):
            if c.why_not(m) is None:
                v, lo, hi = c.shown(e)
                ests[m] = (100 * v, 100 * lo, 100 * hi)
        t = truth.get(c.key)
        if ests:
            rows.append((c.key.replace("_", " "), ests, None if t is None else 100 * t))
    return rows


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _img(name: str, data: bytes, alt: str) -> str:
    return (
        f'<img alt="{_e(alt)}" title="{_e(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
    )


def _ci(v: float, lo: float, hi: float, scale: float = 100, digits: int = 2) -> str:
    if not all(math.isfinite(x) for x in (v, lo, hi)):
        return "–"
    interval = f"[{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"
    return f"{scale * v:+.{digits}f} <span class=muted>{interval}</span>"


def _vlh(e: Any) -> tuple[float, float, float]:
    return e.value, e.low, e.high


def _validation_html(imp: Impact) -> str:
    v = imp.validation
    out = [
        f"<p>{_e(v.rows)} rows read from <code>{_e(v.source)}</code> ({_e(v.format)}); "
        f"<b>{_e(v.valid)} used, {_e(v.excluded)} excluded</b>.",
        f" Log end: {_e(_time(v.log_end))} (from {_e(v.log_end_from or '–')}).",
        " session_id derived from viewer, room and start." if v.derived_session_id else "",
        f" Optional columns absent: {_e(', '.join(v.missing_optional) or 'none')}.</p>",
    ]
    if v.problems:
        out.append(
            "<table><tr><th>excluded because</th><th>rows</th><th>example rows (1-based, header not "
            "counted)</th></tr>"
        )
        for p in v.problems:
            ex = "<br>".join(
                f"row {e['row']}: <code>{_e(e['column'])}</code> — "
                + _e(", ".join(f"{k}={val}" for k, val in e["values"].items()))
                for e in p.examples
            )
            out.append(
                f"<tr><td><b>{_e(p.reason.replace('_', ' '))}</b><br><span class=muted>{_e(p.message)}"
                f"</span></td><td class=n>{p.count}</td><td>{ex}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append("<p class=ok>Every row passed validation.</p>")
    if imp.probes:
        pr = imp.probes
        out.append(
            f"<p>Probe results: {pr['used']} of {pr['rows']} lines used from <code>{_e(pr['source'])}</code> "
            f"(room from <code>{_e(pr['room_key'])}</code>; excluded: "
            f"{_e(', '.join(f'{k} {n}' for k, n in pr['excluded'].items()))}). QoE sources: "
            f"{_e(', '.join(f'{k}: {s}' for k, s in imp.sources.items()))}.</p>"
        )
    return "".join(out)


def _time(epoch: float | None) -> str:
    if epoch is None:
        return "–"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _html(imp: Impact, images: dict[str, bytes]) -> str:
    truth = imp.truth or {}
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>QoE impact: {_e(imp.source)}</title>"
        f"<style>{CSS}</style></head><body>",
        "<h1>What QoE costs: drop-off, watch time, return visits and repurchases</h1>",
        f"<p class=muted>{_e(imp.source)} · generated {_e(_time(dt.datetime.now(dt.UTC).timestamp()))}"
        f" · {_e(', '.join(f'{k} {v}' for k, v in imp.counts.items()))}</p>",
        "<h2>Data</h2>",
        _validation_html(imp),
    ]
    for note in imp.notes:
        parts.append(f"<p class=bad>{_e(note)}</p>")
    if imp.lines:
        parts.append(
            "<h2>Impact</h2><table><tr><th>finding (headline estimate, 95 % CI)</th><th>method</th></tr>"
        )
        for line in imp.lines:
            parts.append(f"<tr><td>{_e(line['text'])}</td><td>{_e(line['method'])}</td></tr>")
        parts.append("</table>")
    t = imp.thresholds
    parts.append(
        "<h2>Recommended SLO thresholds</h2><table><tr><th>figure</th><th>alert when</th><th>basis</th></tr>"
        f"<tr><td>join time p95</td><td>&gt; {t.join_seconds:g} s</td><td>{_e(t.join_basis)}</td></tr>"
        f"<tr><td>stall ratio</td><td>&gt; {100 * t.stall_ratio:.2f} %</td><td>{_e(t.stall_basis)}</td></tr>"
        f"<tr><td>A/V offset (median)</td><td>outside +{1000 * t.av_high:.0f}/{1000 * t.av_low:.0f} ms "
        f"({_e(t.av_severity)})</td><td>{_e(t.av_basis)}</td></tr></table>"
        f"<p>Written as Prometheus alert rules to <code>{RULES_NAME}</code> "
        "(format of grafana/alerts/qoe.rules.yml):</p>"
        f"<pre>{_e(imp.rules)}</pre>"
    )
    if imp.contrasts or imp.abandonment:
        parts.append(
            "<h2>Causal estimates beside the naive difference</h2>"
            "<p>Effects in % (watch time: relative change; abandonment and early exit: share of viewers "
            "per second) or points (returns, repurchases), with 95 % intervals. Matched pairs: exact "
            f"match on {_e(', '.join(imp.controls))}; net outcome = (pairs where the treated session did "
            "worse − pairs where it did better) / pairs, with a two-sided sign test. A gap between "
            "the naive and the causal columns is confounding.</p>"
        )
        parts.append(
            "<table><tr><th>effect</th><th>treated / control</th><th>naive</th><th>matched pairs</th>"
            "<th>net outcome · sign test</th><th>regression</th><th>headline design</th>"
            + ("<th>truth</th>" if truth else "")
            + "</tr>"
        )
        if imp.abandonment:
            a = imp.abandonment
            tr = truth.get("abandon_per_second")
            parts.append(
                "<tr><td>abandonment per second past the knee</td><td class=n>"
                f"{imp.counts.get('no_first_frame', 0)} left</td>"
                f"<td class=n>{_ci(*_vlh(a['naive'].slope))}</td>"
                f"<td class=n>{_ci(*_vlh(a['stratified'].slope))}"
                "<br><span class=muted>stratified Kaplan-Meier</span></td><td>–</td>"
                f"<td class=n>{_ci(*_vlh(a['regression'].slope))}"
                "<br><span class=muted>proportional hazards</span></td><td>stratified Kaplan-Meier</td>"
                + (f"<td class=n>{'–' if tr is None else f'{100 * tr:+.2f}'}</td>" if truth else "")
                + "</tr>"
            )
        for c in imp.contrasts:
            m = c.matched
            tr = truth.get(c.key)
            cells = [
                _ci(*c.shown(e)) if c.why_not(name) is None else f"not estimable: {_e(c.why_not(name))}"
                for name, e in (("naive", c.naive), ("matched", m.effect), ("regression", c.regression))
            ]
            design, _, note = c.headline()
            parts.append(
                f"<tr><td>{_e(c.title)} → {_e(c.outcome)}<br><span class=muted>{_e(c.key)}</span></td>"
                f"<td class=n>{c.treated} / {c.control}</td>"
                f"<td class=n>{cells[0]}</td><td class=n>{cells[1]}"
                f"<br><span class=muted>{m.pairs} pairs "
                f"({_pct(m.pairs / m.treated if m.treated else float('nan'), 0)} % of treated)</span></td>"
                f"<td class=n>{_ci(m.net_outcome, m.net_low, m.net_high)}"
                f"<br><span class=muted>+{m.worse} / −{m.better}"
                f" / ={m.ties}, p = {_p(m.sign_p)}</span></td><td class=n>{cells[2]}</td>"
                f"<td>{_e(design)}<br><span class=muted>{_e(note)}</span></td>"
                + (f"<td class=n>{'–' if tr is None else f'{100 * tr:+.2f}'}</td>" if truth else "")
                + "</tr>"
            )
        parts.append("</table>")
    if imp.doses:
        parts.append(_doses_html(imp))
    if imp.segments:
        parts.append(_segments_html(imp, images))
    if imp.behaviour:
        parts.append(_behaviour_html(imp))
    if imp.ab:
        parts.append(_ab_html(imp.ab, images))
    if "effects.png" in images:
        parts.append(_img("effects.png", images["effects.png"], "naive vs matched vs regression estimates"))
    parts.append("<h2>Drop-off against join time</h2>")
    if imp.abandonment:
        parts.append(_img("abandonment.png", images["abandonment.png"], "abandonment curve"))
        parts.append(
            "<table><tr><th>method</th><th>knee (s)</th><th>loss per second past the knee (%)</th>"
            "<th>how</th></tr>"
        )
        for name, curve in imp.abandonment.items():
            parts.append(
                f"<tr><td>{_e(name)}</td><td class=n>{_ci(*_vlh(curve.knee), 1)}</td>"
                f"<td class=n>{_ci(*_vlh(curve.slope))}</td><td>{_e(curve.note)}</td></tr>"
            )
        parts.append("</table><p class=muted>Intervals: delete-a-group jackknife over groups of viewers.</p>")
    if "early_exit.png" in images:
        parts.append(_img("early_exit.png", images["early_exit.png"], "early exit by join time"))
    parts.append("<h2>Watch time, return visits and repurchases by QoE band</h2>")
    for name, data in images.items():
        if name.startswith("watch_"):
            parts.append(_img(name, data, name))
    for b in imp.bands:
        parts.append(
            f"<h3>By {_e(b.name)}</h3><table><tr><th>band</th><th>sessions</th><th>median watch (s)</th>"
            "<th>mean watch ≤ 2 h (s)</th>"
            + "".join(f"<th>return {d} d (%)</th>" for d in (1, 7, 30))
            + "".join(f"<th>repurchase {d} d (%)</th>" for d in (1, 7, 30))
            + "</tr>"
        )
        for i, label in enumerate(b.labels):
            med, mean = b.watch_median[i], b.watch_mean_2h[i]
            row = [
                f"<td>{_e(label)}</td><td class=n>{b.sessions[i]}</td>",
                f"<td class=n>{'–' if med is None else f'{med:.0f}'}</td>",
                f"<td class=n>{'–' if mean is None else f'{mean:.0f}'}</td>",
            ]
            for what in ("return", "repurchase"):
                for d in (1, 7, 30):
                    r = b.rates[f"{what}{d}"]
                    row.append(
                        f"<td class=n>{_pct(r['share'][i])} <span class=muted>n={int(r['n'][i])}</span></td>"
                    )
            parts.append("<tr>" + "".join(row) + "</tr>")
        parts.append("</table>")
    for name in ("return.png", "repurchase.png"):
        if name in images:
            parts.append(_img(name, images[name], name))
    parts.append(_method_html())
    parts.append("</body></html>")
    return "\n".join(parts)


SEGMENT_KEYS = ("watch_per_stall_percent", "return7_stall", "return7_failed", "repurchase7_stall")


def _segments_html(imp: Impact, images: dict[str, bytes]) -> str:
    t = imp.tiers
    hv = t.get("high_value")
    out = [
        "<h2 id=segments>Segments</h2><p>Every headline effect per segment, on the segment's "
        "sessions alone, with the same controls, designs and minimum support (a small segment "
        "falls back or is not estimable). Tiers: <b>first-time</b> (the viewer's first session in "
        "the log), <b>repeat</b>, <b>high-value</b> (order value over earlier sessions at least "
        f"{'–' if hv is None else f'{hv:.2f}'}, {_e(t.get('high_value_from', ''))}), <b>lapsing</b> "
        f"(at least {t.get('lapsing_days', 0):g} days since the previous session).</p>",
        "<table class=segments><tr><th>segment</th><th>sessions</th><th>stalled (%)</th>"
        "<th>no first frame (%)</th><th>return 7 d (%)</th>"
        + "".join(f"<th>{_e(k.replace('_', ' '))}</th>" for k in SEGMENT_KEYS)
        + "</tr>",
    ]
    for g in imp.segments:
        d = g.to_dict()
        effects = {e["key"]: e for e in d["effects"]}
        cells = []
        for k in SEGMENT_KEYS:
            e = effects.get(k)
            if e is None:
                cells.append("<td>–</td>")
            elif "value" not in e:
                cells.append(f"<td>not estimable<br><span class=muted>{_e(e['reason'])}</span></td>")
            else:
                cells.append(
                    f"<td class=n>{_ci(e['value'], e['low'], e['high'])}"
                    f"<br><span class=muted>{_e(e['design'])}</span></td>"
                )
        q = d["qoe"]
        out.append(
            f"<tr><td>{_e(d['dimension'])}: <b>{_e(d['level'])}</b></td><td class=n>{d['sessions']}</td>"
            f"<td class=n>{_pct(q['stalled_share'])}</td><td class=n>{_pct(q['no_first_frame_share'])}</td>"
            f"<td class=n>{_pct(q['return7'])}</td>" + "".join(cells) + "</tr>"
        )
    out.append("</table>")
    if imp.attribution:
        out.append(
            "<h3>Dimension attribution: whose QoE explains a drop in returns</h3><p>Per level, the "
            "7-day returns its QoE lost beyond what the other levels' QoE would have cost it "
            "(excess visits ending without a first frame, stalled or in SD, times the whole log's "
            "effect of each), ranked; 95 % intervals from the effects' intervals.</p>"
            "<table class=attribution><tr><th>column</th><th>rank</th><th>level</th><th>visits</th>"
            "<th>returns lost to QoE beyond the others</th><th>per 1000 visits</th></tr>"
        )
        for a in imp.attribution:
            for r in a["levels"]:
                out.append(
                    f"<tr><td>{_e(a['dimension'])}</td><td class=n>{r['rank']}</td><td>{_e(r['level'])}</td>"
                    f"<td class=n>{r['visits']}</td>"
                    f"<td class=n>{_ci(r['returns_lost'], r['low'], r['high'], 1, 1)}</td>"
                    f"<td class=n>{r['per_1000_visits']:.1f}</td></tr>"
                )
        out.append("</table>")
    if "segments.png" in images:
        out.append(_img("segments.png", images["segments.png"], "returns lost to QoE by segment"))
    return "".join(out)


AB_FIGURES = {
    "join_seconds": ("join time (s)", 1, "s"),
    "no_first_frame": ("no first frame (%)", 100, "points"),
    "stall_ratio": ("stall ratio (%)", 100, "points"),
    "watch": ("watch time (geometric mean per viewer, s)", 100, "%"),
    "return7": ("return 7 d, first visit (%)", 100, "points"),
    "repurchase7": ("repurchase 7 d, first visit (%)", 100, "points"),
}
"""Figures of the A/B tables: label, scale, unit of a difference. QoE is per session in the test;
outcomes per viewer (``ab_test.estimands`` in ``impact.json``)."""


def _ab_html(ab: dict[str, Any], images: dict[str, bytes]) -> str:
    if "arms" not in ab:
        return f"<h2 id=abtest>A/B test</h2><p class=bad>{_e(ab.get('note', ''))}</p>"
    srm = ab["srm"]
    out = [
        "<h2 id=abtest>A/B test</h2>",
        f"<p>Arms from <code>{_e(ab['source'])}</code>; the test starts {_e(_time(ab['start']))}; "
        f"{ab['pre_period_sessions']} sessions before it form the pre-period (CUPED); "
        f"{ab['viewers_in_several_arms']} viewers appear in more than one arm (counted in their first).</p>",
        f"<p class={'bad' if srm['mismatch'] else 'ok'}>Sample ratio: viewers "
        f"{_e(', '.join(f'{a} {n}' for a, n in zip(ab['arms'], srm['observed'], strict=True)))} against "
        f"an intended {_e('/'.join(f'{100 * x:g}' for x in srm['intended']))}: chi-square "
        f"{srm['chi2']:.2f}, p = {srm['p_value']:.2g}"
        + (" — <b>sample ratio mismatch: the differences below are suspect</b>" if srm["mismatch"] else "")
        + "</p>",
        "<p>QoE is per session in the test. Outcomes are per viewer, with intervals over viewers: "
        "the 7-day return and repurchase of the viewer's first visit in the test (repurchase among "
        "viewers who ordered before the test), and watch time as each viewer's geometric mean over "
        "their joined sessions in the test. The first visit is alike in both arms, since assignment "
        "precedes it. Later visits are not: an arm that costs returns removes more later visits of "
        "the viewers who return most.</p>",
        "<table class=arms><tr><th>arm</th><th>sessions</th><th>viewers</th>"
        + "".join(f"<th>{_e(label)}</th>" for label, _, _ in AB_FIGURES.values())
        + "</tr>",
    ]
    for r in ab["per_arm"]:
        cells = []
        for key, (_, scale, _) in AB_FIGURES.items():
            v = r.get(key)
            shown = "–" if v is None else (f"{v:.1f}" if key == "watch" else f"{scale * v:.2f}")
            cells.append(f"<td class=n>{shown}</td>")
        out.append(
            f"<tr><td><b>{_e(r['arm'])}</b></td><td class=n>{r['sessions']}</td>"
            f"<td class=n>{r['viewers']}</td>" + "".join(cells) + "</tr>"
        )
    out.append("</table><table class=arms><tr><th>difference</th>")
    out.append(
        "".join(f"<th>{_e(label.split(' (')[0])}</th>" for label, _, _ in AB_FIGURES.values()) + "</tr>"
    )
    for d in ab["differences"]:
        cells = []
        for key, (_, scale, unit) in AB_FIGURES.items():
            e = d[key]
            cells.append(
                f"<td class=n>{_ci(e['value'], e['low'], e['high'], scale)} {unit}</td>"
                if "value" in e
                else f"<td>not estimable: {_e(e['reason'])}</td>"
            )
        out.append(f"<tr><td>{_e(d['arm'])} − {_e(d['against'])}</td>" + "".join(cells) + "</tr>")
    out.append("</table>")
    per_visit = {"watch": "watch time per session", "return7": "return 7 d", "repurchase7": "repurchase 7 d"}
    for d in ab["differences"]:
        figures = [
            f"{label} {_ci(e['value'], e['low'], e['high'], AB_FIGURES[key][1])} {AB_FIGURES[key][2]}"
            for key, label in per_visit.items()
            if "value" in (e := d["per_visit"][key])
        ]
        if figures:
            out.append(
                "<p>Per visit (includes the arms' changed visit mix, so not the arm's effect), "
                f"{_e(d['arm'])} − {_e(d['against'])}: {'; '.join(figures)}.</p>"
            )
    out.append(
        "<p>CUPED (Deng et al. 2013): per viewer, the outcome above adjusted by the same figure's "
        "mean over the viewer's pre-period; the headline where it reduces the variance by 1 % or "
        "more.</p>"
        "<table class=cuped><tr><th>difference</th><th>outcome</th><th>plain</th><th>CUPED</th>"
        "<th>variance reduction</th><th>viewers (with pre-period)</th><th>headline</th></tr>"
    )
    for d in ab["differences"]:
        for key, c in d["cuped"].items():
            scale = 100
            cells = [
                _ci(e["value"], e["low"], e["high"], scale) if "value" in e else "not estimable"
                for e in (c["plain"], c["cuped"])
            ]
            out.append(
                f"<tr><td>{_e(d['arm'])} − {_e(d['against'])}</td><td>{_e(key)}</td>"
                f"<td class=n>{cells[0]}</td>"
                f"<td class=n>{cells[1]}</td><td class=n>{100 * c['variance_reduction']:.1f} %</td>"
                f"<td class=n>{c['viewers']} ({c['viewers_with_pre_period']})</td>"
                f"<td>{_e(c['headline'])}</td></tr>"
            )
    out.append("</table>")
    if "arms.png" in images:
        out.append(_img("arms.png", images["arms.png"], "A/B differences with 95 % intervals"))
    return "".join(out)


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _behaviour_html(imp: Impact) -> str:
    out = [
        "<h2 id=behaviour>Behaviour by QoE</h2><p>Per session, over joined sessions: the mean in "
        "each QoE band (descriptive, 95 % intervals clustered by viewer), then the contrasts on "
        "the same controls and designs as watch time (difference in the count per session).</p>"
    ]
    for b in imp.behaviour:
        out.append(f"<h3>{_e(b.column.replace('_', ' '))}</h3>")
        for name, t in b.bands.items():
            out.append(
                f"<table class=behaviour><tr><th>{_e(name)}</th><th>sessions</th>"
                "<th>mean per session</th></tr>"
            )
            for i, label in enumerate(t["labels"]):
                lo, hi = t["low"][i], t["high"][i]
                ci = "" if lo is None or hi is None else f" <span class=muted>[{lo:.2f}, {hi:.2f}]</span>"
                out.append(
                    f"<tr><td>{_e(label)}</td><td class=n>{t['sessions'][i]}</td>"
                    f"<td class=n>{_num(t['mean'][i])}{ci}</td></tr>"
                )
            out.append("</table>")
        out.append(
            "<table class=behaviour><tr><th>treated vs control</th><th>treated / control</th>"
            "<th>change per session</th><th>design</th></tr>"
        )
        for c in b.contrasts:
            design, e, note = c.headline()
            cell = (
                f"not estimable: {_e(note)}"
                if e is None
                else _ci(*c.shown(e), scale=1) + f"<br><span class=muted>{_e(note)}</span>"
            )
            out.append(
                f"<tr><td>{_e(c.title)}</td><td class=n>{c.treated} / {c.control}</td>"
                f"<td class=n>{cell}</td><td>{_e(design)}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def _p(p: float) -> str:
    return f"{p:.2g}" if math.isfinite(p) else "–"


def _doses_html(imp: Impact) -> str:
    truth = imp.truth or {}
    out = [
        "<h3>Dose-response: watch time per unit of each continuous exposure</h3>"
        "<p>Slope of log watch time on the exposure, fixed effects for the controls, intervals "
        "clustered by viewer; every closed session with the exposure measured, so it needs no "
        "sessions without the exposure. Chat echo time is a placebo where the simulator made the "
        "log: no viewer reacts to it.</p><table><tr><th>exposure</th><th>per</th><th>sessions</th>"
        "<th>watch-time change (%)</th>" + ("<th>truth</th>" if truth else "") + "</tr>"
    ]
    for d in imp.doses:
        tr = truth.get(d.key)
        if d.estimate is None:
            cell = f"<td>–</td><td>not estimable: {_e(d.reason)}</td>"
        else:
            cell = f"<td class=n>{d.estimate.n}</td><td class=n>{_ci(*d.shown())}</td>"
        out.append(
            f"<tr><td>{_e(d.exposure)}<br><span class=muted>{_e(d.key)}</span></td><td>{_e(d.per)}</td>{cell}"
            + (f"<td class=n>{'–' if tr is None else f'{100 * tr:+.2f}'}</td>" if truth else "")
            + "</tr>"
        )
    out.append("</table>")
    return "".join(out)


def _method_html() -> str:
    return "<h2>Method</h2><ul>" + "".join(f"<li>{_e(i)}</li>" for i in METHOD) + "</ul>"


def write_report(imp: Impact, out: str | Path) -> dict[str, Path]:
    """Write report.html, the PNGs, impact.json and the rules file into ``out``; return the paths."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out}: {exc.strerror or exc}") from exc
    import matplotlib.pyplot as plt

    images = {}
    for name, fig in _figures(imp).items():
        images[name] = _png(fig)
        plt.close(fig)
    paths = {}
    for name, data in images.items():
        (out / name).write_bytes(data)
        paths[name] = out / name
    doc = clean(imp.to_dict())
    doc["figures"] = sorted(images)
    (out / "impact.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    (out / RULES_NAME).write_text(imp.rules, encoding="utf-8")
    (out / "report.html").write_text(_html(imp, images), encoding="utf-8")
    paths.update(
        {"impact.json": out / "impact.json", RULES_NAME: out / RULES_NAME, "report.html": out / "report.html"}
    )
    return paths

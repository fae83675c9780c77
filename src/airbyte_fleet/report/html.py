"""A run as one self-contained HTML file: its header, a timeline drawn in SVG, and a table.

The file fetches nothing and runs no script (its own Content-Security-Policy forbids both, so a
name that slipped past the escaping could still do nothing): it must open from an e-mail, a CI
artifact or a folder with no network. Every text that comes from a run (names, errors, ids) goes
through :func:`html.escape`.

Written by hand rather than with a template engine: the page is one loop over the bars and one
over the rows, and at 10,000 syncs the cost that matters is bytes per row, which is easiest to
keep small when each row's markup is in plain sight. Hence the lean SVG (one ``<rect>`` per
segment, colours by CSS class, coordinates rounded to a tenth) and table cells whose optional end
tags are left out, as HTML allows. The table is most of a large page's layout work, and it sits
below the timeline: it is laid out when it is first scrolled to (``content-visibility``), so the
header and the timeline are drawn at once (BENCHMARKS.md, "The HTML report").
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterator
from datetime import datetime
from html import escape

from airbyte_fleet._redact import redact
from airbyte_fleet._units import format_size
from airbyte_fleet._version import __version__
from airbyte_fleet.engine.outcome import OUTCOMES
from airbyte_fleet.engine.result import RunResult, SyncResult
from airbyte_fleet.report.timeline import Bar, Timeline

__all__ = ["CONTENT_SECURITY_POLICY", "render_report"]

# One short class per outcome (it is written once per bar and once per row).
_CLASS = {
    "succeeded": "s",
    "failed": "f",
    "cancelled": "c",
    "timed_out": "t",
    "skipped": "k",
    "triggered": "g",
    "error": "e",
}
_OPEN = "o"  # no outcome yet: the run is still going, or ended without one for this sync
_RUN_CLASS = {"succeeded": "s", "failed": "f", "interrupted": "c"}

# Geometry, in CSS pixels. Up to LABELLED syncs each row carries its name at the left; above
# that the rows are thinner and the name is in the bar's tooltip (and in the table below).
_LABELLED = 1000
_LABEL_W = 260
_PLOT_W = 900
_AXIS_H = 24
_ROW = 14
_BAR = 9
_THIN_ROW = 4
_THIN_BAR = 3
# A bar that lasted no time (a sync skipped at once) is still drawn this wide, so it is seen.
_MIN_W = 1.5
_NAME_CHARS = 40

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d1d1f}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 8px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:8px 0}
dt{color:#555}dd{margin:0}
.s{--c:#2e7d32}.f{--c:#c62828}.c{--c:#ef8f00}.t{--c:#6a1b9a}.k{--c:#9e9e9e}
.g{--c:#1565c0}.e{--c:#7f0000}.o{--c:#64b5f6}
.chip{display:inline-block;padding:1px 8px;border-radius:9px;background:var(--c);color:#fff;
font-size:12px;margin-right:6px}
.sw{display:inline-block;width:14px;height:9px;background:var(--c);margin:0 4px 0 12px;
vertical-align:middle}.sw.q{background:#d6dbe3}.sw.r{width:2px;height:14px;background:#000}
.legend{font-size:12px;color:#333}.note{color:#555;font-size:12px}
.err{color:#b00020}
.tl{overflow-x:auto;border:1px solid #e0e0e0;background:#fff}
svg{display:block}
svg rect{fill:var(--c)}svg rect.q{fill:#d6dbe3}svg rect.r{fill:#000}
svg text{font-size:11px;fill:#333}svg .n{text-anchor:end}svg .ax{stroke:#eee}
section.rows{content-visibility:auto;contain-intrinsic-size:auto 20000px}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
th{position:sticky;top:0;background:#fafafa}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td.x{max-width:480px;overflow-wrap:anywhere;color:#b00020}
"""


# The page's one style, allowed by its hash: not even an injected <style> could apply.
_STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
# What the page may load and run: its own style, nothing else. The worker sends it as a header
# too; the file carries it for wherever else it is opened.
CONTENT_SECURITY_POLICY = f"default-src 'none'; style-src '{_STYLE_HASH}'; form-action 'none'"


def render_report(
    result: RunResult, timeline: Timeline, *, written_at: datetime | None = None
) -> str:
    """The whole HTML document of a run: *result* for the header and the table, *timeline* for
    the bars (and the order of both)."""
    return "".join(_document(result, timeline, written_at))


def _document(result: RunResult, timeline: Timeline, written_at: datetime | None) -> Iterator[str]:
    run_id = escape(result.run_id)
    yield (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        # No script, no fetch: only the page's own style may apply.
        f'<meta http-equiv=Content-Security-Policy content="{CONTENT_SECURITY_POLICY}">'
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>Run {run_id}: {escape(result.outcome)}</title><style>{_CSS}</style></head><body>\n"
    )
    yield from _header(result)
    syncs = {s.connection_id: s for s in result.syncs}
    bars = _bars(timeline, result)
    yield from _timeline(bars, syncs, timeline.span_s if timeline.bars else 0.0)
    yield from _table(bars, syncs)
    stamp = f" on {escape(written_at.isoformat(timespec='seconds'))}" if written_at else ""
    yield f"<p class=note>Written by airbyte-fleet {escape(__version__)}{stamp}.</p></body></html>\n"


def _bars(timeline: Timeline, result: RunResult) -> list[Bar]:
    """The timeline's bars, and a bar for every sync of the result it did not hear of (so the
    picture never hides a sync the table shows)."""
    bars = list(timeline.bars)
    seen = {b.connection_id for b in bars}
    bars.extend(
        Bar(s.connection_id, s.connection_name, index=len(bars) + i)
        for i, s in enumerate(result.syncs)
        if s.connection_id not in seen
    )
    return bars


def _outcome_of(bar: Bar, sync: SyncResult | None) -> str | None:
    # The result's word wins: it settles syncs left open when the run ended (``error``).
    if sync is not None and sync.outcome is not None:
        return sync.outcome
    return bar.outcome


def _header(result: RunResult) -> Iterator[str]:
    outcome = escape(result.outcome)
    kind = _RUN_CLASS.get(result.outcome, _OPEN)
    yield (
        f"<header><h1>Run <code>{escape(result.run_id)}</code> "
        f'<span class="chip {kind}">{outcome}</span></h1><dl>'
    )
    rows = [
        ("Started", _when(result.started_at)),
        ("Finished", _when(result.finished_at) if result.finished_at else "not yet"),
        ("Duration", _duration(result.duration_s)),
        ("Syncs", f"{len(result.syncs):,}"),
        ("Rows", f"{result.totals.rows_synced:,}"),
        ("Bytes", format_size(result.totals.bytes_synced)),
        ("Job type", escape(result.job_type)),
    ]
    yield "".join(f"<dt>{k}<dd>{v}" for k, v in rows)
    yield "</dl><p>"
    counts = [(o, n) for o, n in result.counts.items() if n]
    if not counts:
        counts = [(o, n) for o, n in _counts(result).items() if n]
    yield "".join(
        f'<span class="chip {_CLASS.get(o, _OPEN)}">{n:,} {escape(o)}</span>' for o, n in counts
    )
    yield "</p>"
    if result.error:
        yield f"<p class=err>{escape(redact(result.error))}</p>"
    yield "</header>\n"


def _counts(result: RunResult) -> dict[str, int]:
    # An unfinished run's result may have no counts yet: count what the syncs say.
    counts: dict[str, int] = {}
    for sync in result.syncs:
        key = sync.outcome or "pending"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _timeline(bars: list[Bar], syncs: dict[str, SyncResult], span: float) -> Iterator[str]:
    labelled = len(bars) <= _LABELLED
    row, bar_h = (_ROW, _BAR) if labelled else (_THIN_ROW, _THIN_BAR)
    left = _LABEL_W if labelled else 8
    width = left + _PLOT_W + 16
    height = _AXIS_H + row * len(bars) + 4
    span = max(span, max((b.end_s or b.triggering_s or 0.0 for b in bars), default=0.0), 1.0)
    scale = _PLOT_W / span
    yield "<section><h2>Timeline</h2><p class=legend>"
    shown = {_CLASS.get(_outcome_of(b, syncs.get(b.connection_id)) or "", _OPEN) for b in bars}
    for outcome in (*OUTCOMES, None):
        kind = _CLASS[outcome] if outcome is not None else _OPEN
        if kind in shown:
            yield f'<span class="sw {kind}"></span>{escape(outcome or "open")}'
    yield (
        '<span class="sw q"></span>waiting for a concurrency slot'
        '<span class="sw r"></span>retry</p>'
        f"<p class=note>{len(bars):,} syncs in the order they were first triggered; each bar "
        "runs from the sync's first trigger to its end, the light part before it is the time "
        "the run's concurrency limit held it back."
        + ("" if labelled else " Hover a bar for its name; the table below lists every sync.")
        + "</p>"
    )
    yield (
        f'<div class=tl><svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role=img '
        f'aria-label="timeline of {len(bars)} syncs">'
    )
    yield from _axis(span, scale, left, height)
    for i, bar in enumerate(bars):
        sync = syncs.get(bar.connection_id)
        yield _row(bar, sync, i, row, bar_h, left, scale, span, labelled)
    yield "</svg></div></section>\n"


def _axis(span: float, scale: float, left: int, height: int) -> Iterator[str]:
    step = _tick_step(span)
    ticks = [i * step for i in range(int(span // step) + 1)]
    lines = "".join(f"M{_n(left + t * scale)} {_AXIS_H - 6}V{height}" for t in ticks)
    yield f'<path class=ax d="{lines}"/>'
    for t in ticks:
        yield f'<text x="{_n(left + t * scale)}" y="12">{_tick_label(t, step)}</text>'


def _tick_step(span: float) -> float:
    """A round step that puts at most about ten ticks on the axis."""
    for step in (
        0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600
    ):  # fmt: skip
        if span / step <= 10:
            return float(step)
    return float(43200 * math.ceil(span / 43200 / 10))


def _tick_label(t: float, step: float) -> str:
    if step < 60:
        return f"{round(t, 1):g} s"
    if step < 3600:
        return f"{t / 60:g} min"
    return f"{t / 3600:g} h"


def _row(
    bar: Bar,
    sync: SyncResult | None,
    i: int,
    row: int,
    bar_h: int,
    left: int,
    scale: float,
    span: float,
    labelled: bool,
) -> str:
    y = _AXIS_H + i * row
    name = bar.connection_name or (sync.connection_name if sync else "") or bar.connection_id
    outcome = _outcome_of(bar, sync)
    kind = _CLASS.get(outcome or "", _OPEN)
    out = []
    if labelled:
        shown = name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"
        out.append(f'<text class=n x="{left - 6}" y="{y + bar_h}">{escape(shown)}</text>')
    start = bar.triggering_s
    end = bar.end_s if bar.end_s is not None else span
    # Never triggered: it waited until it was skipped (or, in a run still going, until now),
    # and its bar is a sliver where the wait ended.
    begin = start if start is not None else end
    if begin - bar.ready_s > 0:
        out.append(
            f'<rect class=q x="{_n(left + bar.ready_s * scale)}" y="{y}" '
            f'width="{_n((begin - bar.ready_s) * scale)}" height="{bar_h}"/>'
        )
    tip = f"{name}: {outcome or 'open'}"
    if start is not None:
        tip += f", {_duration(end - start)}"
        queued = bar.queued_s
        if queued:
            tip += f" after {_duration(queued)} waiting for a slot"
    if bar.retries_s:
        tip += f", {len(bar.retries_s)} retr{'y' if len(bar.retries_s) == 1 else 'ies'}"
    out.append(
        f'<rect class="b {kind}" x="{_n(left + begin * scale)}" y="{y}" '
        f'width="{_n(max((end - begin) * scale, _MIN_W))}" height="{bar_h}">'
        f"<title>{escape(tip)}</title></rect>"
    )
    for at in bar.retries_s:
        out.append(
            f'<rect class=r x="{_n(left + at * scale - 1)}" y="{y - 1}" width="2" height="{bar_h + 2}"/>'
        )
    return "".join(out)


def _table(bars: list[Bar], syncs: dict[str, SyncResult]) -> Iterator[str]:
    yield (
        "<section class=rows><h2>Syncs</h2><table><thead><tr><th>Connection<th>Outcome<th>Attempts"
        "<th>Job<th>Duration<th>Rows<th>Bytes<th>Error</thead><tbody>\n"
    )
    for bar in bars:
        sync = syncs.get(bar.connection_id)
        name = bar.connection_name or (sync.connection_name if sync else "")
        outcome = _outcome_of(bar, sync)
        kind = _CLASS.get(outcome or "", _OPEN)
        shown = escape(name) if name else f"<code>{escape(bar.connection_id)}</code>"
        if sync is None:
            yield f'<tr><td>{shown}<td><span class="chip {kind}">{escape(outcome or "open")}</span>\n'
            continue
        error = escape(redact(sync.error)) if sync.error else ""
        yield (
            f'<tr><td>{shown}<td><span class="chip {kind}">{escape(outcome or "open")}</span>'
            f"<td class=n>{sync.attempts}"
            f"<td class=n>{'' if sync.job_id is None else sync.job_id}"
            f"<td class=n>{_duration(sync.duration_s) if sync.duration_s is not None else ''}"
            f"<td class=n>{'' if sync.rows_synced is None else f'{sync.rows_synced:,}'}"
            f"<td class=n>{'' if sync.bytes_synced is None else format_size(sync.bytes_synced)}"
            f"<td class=x>{error}\n"
        )
    yield "</tbody></table></section>\n"


def _n(value: float) -> str:
    """A coordinate to a tenth of a pixel, without a trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _when(moment: datetime) -> str:
    return escape(moment.isoformat(timespec="seconds"))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

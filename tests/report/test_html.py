"""The HTML report as a document: everything a run says is escaped, nothing is fetched, one bar
per sync, and its size stays bounded at 10,000 syncs."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

from airbyte_fleet.engine.events import RunStarted, SyncFailed, SyncSkipped
from airbyte_fleet.report import CONTENT_SECURITY_POLICY, render_report

from .support import BAR, made_run, result_and_timeline

HOSTILE = (
    "<script>alert(1)</script>",
    "\"quoted\" & 'single' </title><img src=x onerror=alert(2)>",
    "同期 — Ünïcødé ✓ ⟨svg⟩",
    "]]><!-- -->",
)


class _Page(HTMLParser):
    """Every tag, attribute and text of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    return parsed


def _hostile_run() -> str:
    events = made_run(len(HOSTILE), name="{i}")
    start = events[0]
    assert isinstance(start, RunStarted)
    planned = tuple(
        dataclasses.replace(p, connection_name=HOSTILE[i]) for i, p in enumerate(start.planned)
    )
    renamed = [dataclasses.replace(start, planned=planned)]
    for event in events[1:]:
        if hasattr(event, "connection_name"):
            i = int(event.connection_name)  # type: ignore[attr-defined]
            fields = {"connection_name": HOSTILE[i]}
            if isinstance(event, SyncFailed) or (i == 2 and event.kind == "sync_succeeded"):
                fields["error"] = '<b>bold</b> & "quoted"'
            event = dataclasses.replace(event, **fields)  # type: ignore[arg-type]
        renamed.append(event)
    result, bars = result_and_timeline(renamed)
    return render_report(result, bars)


def test_names_and_errors_are_text_never_markup() -> None:
    page = _hostile_run()
    parsed = _parse(page)
    assert "script" not in parsed.tags
    assert "img" not in parsed.tags
    assert not [name for name, _ in parsed.attrs if name.startswith("on")]
    text = "".join(parsed.text)
    for name in HOSTILE:
        # Shown whole in the table (the timeline's label may be cut short).
        assert name in text
    assert "&lt;script&gt;" in page
    assert "<script" not in page


def test_the_page_fetches_nothing_and_runs_nothing() -> None:
    result, bars = result_and_timeline(made_run(50))
    page = render_report(result, bars)
    parsed = _parse(page)
    # No script, no link, no image, no frame, no form: nothing loads anything.
    assert set(parsed.tags) <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "code", "span",
        "dl", "dt", "dd", "p", "section", "div", "svg", "path", "text", "rect",
        "table", "thead", "tbody", "tr", "th", "td",
    }  # fmt: skip
    urls = [v for n, v in parsed.attrs if n in ("src", "href", "action", "xlink:href")]
    assert urls == []
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]
    assert ("http-equiv", "Content-Security-Policy") in parsed.attrs
    assert ("content", CONTENT_SECURITY_POLICY) in parsed.attrs
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY


def test_one_bar_per_sync_and_every_sync_in_the_table() -> None:
    events = made_run(120)
    start = events[0]
    assert isinstance(start, RunStarted)
    # A sync skipped before any trigger still has its bar (a sliver where it ended).
    skipped = start.planned[5]
    events = [e for e in events if getattr(e, "connection_id", None) != skipped.connection_id]
    events.insert(
        1,
        SyncSkipped(
            run_id=start.run_id,
            at=start.at,
            elapsed_s=0.0,
            connection_id=skipped.connection_id,
            connection_name=skipped.connection_name,
            reason="connection is inactive",
            cause="inactive",
        ),
    )
    result, bars = result_and_timeline(events)
    page = render_report(result, bars)
    assert len(BAR.findall(page)) == 120
    assert page.count("<tr><td>") == 120
    assert page.count('<rect class="b k"') == 1
    # Retried syncs (one in fifty) carry a mark each.
    assert page.count("<rect class=r ") == len([e for e in events if e.kind == "sync_retrying"])
    # One in a hundred fails (the 7th and the 107th), the 5th was skipped.
    assert (result.counts["failed"], result.counts["skipped"]) == (2, 1)
    assert '<span class="chip f">2 failed</span>' in page
    assert '<span class="chip s">117 succeeded</span>' in page
    assert '<span class="chip k">1 skipped</span>' in page


def test_a_run_still_going_shows_its_open_syncs() -> None:
    events = made_run(30)
    # Every sync was triggered in the first seconds; none has ended at 20 s.
    cut = next(i for i, e in enumerate(events) if e.elapsed_s > 20)
    result, bars = result_and_timeline(events[:cut])
    assert not bars.finished
    page = render_report(result, bars)
    assert len(BAR.findall(page)) == 30
    assert page.count('<rect class="b o"') == 30  # open: no outcome yet
    assert "not yet" in page

    # Earlier, some had not had their turn yet: they are drawn waiting, up to the last event.
    cut = next(i for i, e in enumerate(events) if e.elapsed_s > 3)
    result, bars = result_and_timeline(events[:cut])
    waiting = [b for b in bars.bars if b.triggering_s is None]
    assert waiting
    page = render_report(result, bars)
    assert len(BAR.findall(page)) == 30
    queued = [b for b in bars.bars if b.triggering_s is None or b.triggering_s > b.ready_s]
    assert page.count("<rect class=q ") == len(queued)


def test_size_stays_bounded_at_ten_thousand_syncs() -> None:
    sizes = {}
    for count in (2_000, 10_000):
        result, bars = result_and_timeline(made_run(count))
        page = render_report(result, bars)
        sizes[count] = len(page.encode())
        assert len(BAR.findall(page)) == count
    # Each sync costs a few hundred bytes (its bar, its tooltip, its row), never more.
    assert sizes[10_000] / 10_000 < 450, sizes
    assert sizes[10_000] < 4_500_000, sizes
    print(f"report bytes: {sizes}")

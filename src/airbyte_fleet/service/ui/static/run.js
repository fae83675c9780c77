// One run, live: the run's event stream (GET /runs/{id}/events, replayed from its first event,
// then followed) becomes a row per sync and a bar on the timeline. Events only mark syncs as
// changed; the table and the timeline are brought up to date once per animation frame.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const runId = decodeURIComponent(location.pathname.split("/").pop());
  const $ = (id) => document.getElementById(id);
  const body = document.querySelector("#syncs tbody");
  const timeline = Timeline.create($("timeline"), $("timeline-canvas"), $("timeline-spacer"));
  const FINAL = {
    sync_succeeded: () => "succeeded",
    sync_failed: (e) => (e.outcome === "error" ? "error" : "failed"),
    sync_timed_out: () => "timed_out",
    sync_cancelled: () => "cancelled",
    sync_skipped: (e) => (e.outcome === "error" ? "error" : "skipped"),
  };

  const run = { state: "queued", outcome: null, total: 0, wait: true, startedMs: null, endAt: null, counts: {}, ready: 0 };
  const syncs = [];
  const byId = new Map();
  const dirty = new Set();
  let shown = syncs;
  let flushing = false;
  let filterChanged = true;
  let stream = null;

  $("run-id").textContent = runId;
  document.title = `Run ${runId} · airbyte-fleet`;
  $("report").href = `/runs/${encodeURIComponent(runId)}/report.html`;
  $("json").href = `/runs/${encodeURIComponent(runId)}`;

  function sync(event) {
    let item = byId.get(event.connection_id);
    if (!item) {
      item = {
        id: event.connection_id, name: event.connection_name || "", state: "queued", attempt: 1,
        job: null, ready: run.ready, start: null, end: null, rows: null, bytes: null, error: "",
        outcome: null, retries: [],
      };
      byId.set(item.id, item);
      syncs.push(item);
      filterChanged = true;
    }
    return item;
  }

  function nowAt() {
    if (run.endAt !== null) return run.endAt;
    return run.startedMs === null ? 0 : Math.max(0, (Date.now() - run.startedMs) / 1000);
  }

  function onEvent(e) {
    const kind = e.event;
    if (kind === "run_started") {
      run.state = "running";
      run.total = e.total;
      run.wait = e.wait !== false;
      run.ready = e.elapsed_s;
      run.startedMs = Date.parse(e.at) - e.elapsed_s * 1000;
      return;
    }
    if (kind === "syncs_planned") {
      // Syncs planned later than the run's start become ready then (the event does not list them).
      run.total = e.total || run.total;
      run.ready = e.elapsed_s;
      return;
    }
    if (kind === "run_finished") {
      run.state = "finished";
      run.outcome = e.outcome;
      run.counts = e.counts || {};
      run.endAt = e.elapsed_s;
      for (const item of syncs) {
        if (item.outcome === null) {
          // What the engine's outcome rule makes of a sync with no final event.
          item.outcome = item.job !== null && !run.wait ? "triggered" : "error";
          item.state = item.outcome;
          item.end = e.elapsed_s;
          dirty.add(item);
        }
      }
      if (stream) stream.close();
      return;
    }
    if (!e.connection_id) return;
    const item = sync(e);
    if (e.connection_name) item.name = e.connection_name;
    if (e.job_id !== undefined) item.job = e.job_id;
    if (e.attempt !== undefined) item.attempt = e.attempt;
    if (e.rows_synced !== undefined) item.rows = e.rows_synced;
    if (e.bytes_synced !== undefined) item.bytes = e.bytes_synced;
    if (e.error) item.error = e.error;
    if (kind === "sync_triggering") {
      item.state = "triggering";
      // A staged run's sync waited for its upstream groups until its group started: only the
      // time after that was the limiter's.
      if (item.start === null && e.ready_s !== undefined) item.ready = Math.max(item.ready, e.ready_s);
      if (item.start === null) item.start = e.elapsed_s;
    } else if (kind === "sync_triggered" || kind === "sync_adopted") {
      item.state = kind === "sync_adopted" ? "adopted" : "running";
      if (item.start === null) item.start = e.elapsed_s;
    } else if (kind === "sync_status_changed") {
      item.state = e.status || item.state;
    } else if (kind === "sync_retrying") {
      item.state = "retrying";
      item.retries.push(e.elapsed_s);
    } else if (kind === "sync_detached") {
      item.state = "detached";
    } else if (FINAL[kind]) {
      // An earlier attempt's error is not this one's.
      item.error = e.error || "";
      item.outcome = FINAL[kind](e);
      item.state = item.outcome;
      item.end = e.elapsed_s;
      if (item.start === null) item.start = e.elapsed_s;
    }
    dirty.add(item);
  }

  function matches(item, outcome, name) {
    if (outcome === "running" ? item.outcome !== null : outcome && item.outcome !== outcome) return false;
    return !name || (item.name || item.id).toLowerCase().includes(name);
  }

  // The table draws only the rows in view, like the timeline: a fixed row height, a spacer row
  // above and one below, and a pool of rows refilled as the box scrolls. At 10,000 syncs the page
  // lays out a few dozen rows, not 80,000 cells.
  const ROW_HEIGHT = 26;
  const wrap = $("table-wrap");
  const above = Fleet.el("tr", { class: "pad" }, Fleet.el("td", { colspan: "8" }));
  const below = Fleet.el("tr", { class: "pad" }, Fleet.el("td", { colspan: "8" }));
  const pool = [];
  body.append(above, below);

  function pooled(i) {
    while (pool.length <= i) {
      const tr = document.createElement("tr");
      tr.className = "sync";
      for (let c = 0; c < 8; c += 1) tr.append(document.createElement("td"));
      for (const c of [2, 3, 4, 5, 6]) tr.children[c].className = "num";
      tr.children[7].className = "err";
      pool.push(tr);
    }
    return pool[i];
  }

  function fill(tr, item, at) {
    const c = tr.children;
    c[0].textContent = item.name || item.id;
    c[0].title = item.name || item.id;
    c[1].textContent = item.state;
    c[1].className = "st o-" + (item.outcome || (item.state === "queued" ? "queued" : "running"));
    c[2].textContent = item.attempt;
    c[3].textContent = item.job === null ? "" : item.job;
    c[4].textContent = elapsed(item, at);
    c[5].textContent = Fleet.count(item.rows);
    c[6].textContent = Fleet.bytes(item.bytes);
    c[7].textContent = item.error;
    c[7].title = item.error;
    tr.dataset.connection = item.id;
    tr.dataset.state = item.state;
  }

  function elapsed(item, at) {
    if (item.start === null) return "";
    return Fleet.duration((item.end !== null ? item.end : at) - item.start);
  }

  function drawTable(at) {
    const top = wrap.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - 5);
    // The box grows with its rows up to its CSS height: until it has, fill the window's height.
    const height = Math.max(wrap.clientHeight, window.innerHeight);
    const last = Math.min(shown.length, first + Math.ceil(height / ROW_HEIGHT) + 10);
    above.firstChild.style.height = first * ROW_HEIGHT + "px";
    below.firstChild.style.height = (shown.length - last) * ROW_HEIGHT + "px";
    const rows = [];
    for (let i = first; i < last; i += 1) {
      const tr = pooled(i - first);
      fill(tr, shown[i], at);
      rows.push(tr);
    }
    const current = Array.from(body.children).slice(1, -1);
    if (current.length !== rows.length || current.some((tr, i) => tr !== rows[i])) {
      for (const tr of current) if (!rows.includes(tr)) tr.remove();
      below.before(...rows);
    }
  }

  function flush() {
    flushing = false;
    const at = nowAt();
    const outcome = $("outcome").value;
    const name = $("name").value.trim().toLowerCase();
    if (filterChanged || dirty.size) {
      shown = outcome || name ? syncs.filter((item) => matches(item, outcome, name)) : syncs;
    }
    dirty.clear();
    filterChanged = false;
    drawTable(at);
    timeline.update(shown, at);
    summary(shown.length);
  }

  let scrolling = false;
  wrap.addEventListener("scroll", () => {
    if (scrolling) return;
    scrolling = true;
    requestAnimationFrame(() => { scrolling = false; drawTable(nowAt()); });
  }, { passive: true });

  // At most a few flushes a second: a replay of thousands of events arrives within a moment,
  // and each flush lays the table out again.
  const FLUSH_EVERY_MS = 200;
  let lastFlush = -Infinity;
  function later() {
    if (flushing) return;
    flushing = true;
    const wait = lastFlush + FLUSH_EVERY_MS - performance.now();
    const frame = () => requestAnimationFrame((t) => { lastFlush = t; flush(); });
    if (wait > 0) setTimeout(frame, wait);
    else frame();
  }

  function summary(visible) {
    $("run-state").textContent = run.outcome || run.state;
    $("run-state").className = "badge o-" + (run.outcome || run.state);
    $("cancel").hidden = run.state === "finished";
    const counts = {};
    for (const item of syncs) {
      const key = item.outcome || "running";
      counts[key] = (counts[key] || 0) + 1;
    }
    const parts = Object.entries(counts).map(([k, n]) => Fleet.el("span", { class: "o-" + k, text: `${n} ${k}` }));
    const waiting = run.total - syncs.length;
    if (waiting > 0 && run.state !== "finished") parts.push(Fleet.el("span", { class: "muted", text: `${waiting} not started` }));
    parts.push(Fleet.el("span", { class: "muted", text: `elapsed ${Fleet.duration(nowAt())}` }));
    $("summary").replaceChildren(...parts);
    $("shown").textContent = visible === syncs.length ? "" : `${visible} of ${syncs.length} shown`;
    document.body.dataset.state = run.state;
    document.body.dataset.syncs = String(syncs.length);
    document.body.dataset.shown = String(visible);
    if (run.state === "finished" && !document.body.dataset.drawn) {
      // How long the finished run took to show, from the start of navigation (what the tests
      // measure).
      document.body.dataset.drawn = String(Math.round(performance.now()));
    }
  }

  function follow() {
    stream = new EventSource(`/runs/${encodeURIComponent(runId)}/events`);
    const kinds = ["run_started", "syncs_planned", "run_finished", "sync_triggering", "sync_triggered",
      "sync_adopted", "sync_status_changed", "sync_retrying", "sync_detached", ...Object.keys(FINAL)];
    for (const kind of kinds) {
      stream.addEventListener(kind, (message) => { onEvent(JSON.parse(message.data)); later(); });
    }
    stream.addEventListener("error", async () => {
      if (run.state === "finished") return;
      // EventSource reconnects by itself (with Last-Event-ID); a run that is gone or a session
      // that ended will not come back, so look why.
      try {
        await Fleet.api(`/runs/${encodeURIComponent(runId)}`);
      } catch (error) {
        stream.close();
        $("message").textContent = error.message;
        $("message").classList.add("bad");
      }
    });
  }

  $("outcome").addEventListener("change", () => { filterChanged = true; later(); });
  $("name").addEventListener("input", () => { filterChanged = true; later(); });

  const dialog = $("confirm");
  $("confirm-run").textContent = runId;
  $("cancel").addEventListener("click", () => dialog.showModal());
  $("confirm-no").addEventListener("click", () => dialog.close());
  $("confirm-yes").addEventListener("click", async () => {
    dialog.close();
    $("cancel").disabled = true;
    try {
      await Fleet.api(`/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" });
      $("message").textContent = "Cancelling: the run's jobs are being cancelled in Airbyte.";
    } catch (error) {
      $("message").textContent = error.message;
      $("message").classList.add("bad");
      $("cancel").disabled = false;
    }
  });

  // Running bars and elapsed times grow while the run goes on.
  setInterval(() => { if (run.state === "running" && !document.hidden) later(); }, 1000);
  follow();
  later();
});

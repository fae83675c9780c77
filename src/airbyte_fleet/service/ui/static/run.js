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
        outcome: null, retries: [], row: null,
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

  function cells(item) {
    const tr = document.createElement("tr");
    for (let i = 0; i < 8; i += 1) tr.append(document.createElement("td"));
    tr.dataset.connection = item.id;
    const c = tr.children;
    c[2].className = c[3].className = c[4].className = c[5].className = c[6].className = "num";
    c[7].className = "err";
    item.row = tr;
    return tr;
  }

  function fill(item) {
    const c = item.row.children;
    c[0].textContent = item.name || item.id;
    c[1].textContent = item.state;
    c[1].className = "st o-" + (item.outcome || (item.state === "queued" ? "queued" : "running"));
    c[2].textContent = item.attempt;
    c[3].textContent = item.job === null ? "" : item.job;
    c[5].textContent = Fleet.count(item.rows);
    c[6].textContent = Fleet.bytes(item.bytes);
    c[7].textContent = item.error;
    item.row.dataset.state = item.state;
  }

  function elapsed(item, at) {
    if (item.start === null) return "";
    return Fleet.duration((item.end !== null ? item.end : at) - item.start);
  }

  function flush() {
    flushing = false;
    const at = nowAt();
    const fresh = document.createDocumentFragment();
    for (const item of dirty) {
      if (!item.row) fresh.append(cells(item));
      fill(item);
    }
    if (fresh.childNodes.length) body.append(fresh);
    const outcome = $("outcome").value;
    const name = $("name").value.trim().toLowerCase();
    if (filterChanged || dirty.size) {
      shown = outcome || name ? syncs.filter((item) => matches(item, outcome, name)) : syncs;
      if (filterChanged) {
        for (const item of syncs) item.row.hidden = shown !== syncs && !matches(item, outcome, name);
      } else if (shown !== syncs) {
        for (const item of dirty) item.row.hidden = !matches(item, outcome, name);
      }
    }
    for (const item of run.endAt === null ? syncs : dirty) {
      item.row.children[4].textContent = elapsed(item, at);
    }
    dirty.clear();
    filterChanged = false;
    timeline.update(shown, at);
    summary(shown.length);
  }

  function later() {
    if (flushing) return;
    flushing = true;
    requestAnimationFrame(flush);
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

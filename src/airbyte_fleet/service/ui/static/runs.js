// The runs list: newest first, refreshed every few seconds while the page is visible.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const body = document.querySelector("#runs tbody");
  const message = document.getElementById("runs-message");
  const REFRESH_MS = 3000;

  function counts(run) {
    const span = Fleet.el("span", { class: "counts" });
    for (const [outcome, n] of Object.entries(run.counts || {})) {
      if (n) span.append(Fleet.el("span", { class: "o-" + outcome, text: `${n} ${outcome}` }));
    }
    if (!span.childNodes.length) span.append(Fleet.el("span", { class: "muted", text: `${run.total} planned` }));
    return span;
  }

  function row(run) {
    const link = Fleet.el("a", { href: "/ui/runs/" + encodeURIComponent(run.run_id), text: run.run_id });
    const outcome = run.outcome || "";
    const tr = Fleet.el("tr", { "data-run": run.run_id });
    tr.append(
      Fleet.el("td", {}, link),
      Fleet.el("td", { class: "st o-" + run.state, text: run.state }),
      Fleet.el("td", { class: "st o-" + outcome, text: outcome || (run.error ? "failed" : "") }),
      Fleet.el("td", {}, counts(run)),
      Fleet.el("td", { text: Fleet.when(run.started_at) }),
      Fleet.el("td", { class: "num", text: Fleet.between(run.started_at, run.finished_at) }),
      Fleet.el("td", { text: run.submitted_by ? "schedule " + run.submitted_by : "API" }),
    );
    return tr;
  }

  async function refresh() {
    try {
      const page = await Fleet.api("/runs?limit=100");
      body.replaceChildren(...page.runs.map(row));
      message.textContent = page.runs.length ? "" : "No runs yet: start one above.";
      document.body.dataset.loaded = "true";
    } catch (error) {
      message.textContent = error.message;
    }
  }

  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
});

// The config file's schedules: when each fires next, its last run and how that ended, and a
// button that runs what it runs now (POST /runs with its selection and options).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const body = document.querySelector("#schedules tbody");
  const message = document.getElementById("message");

  async function start(schedule, button) {
    button.disabled = true;
    try {
      const accepted = await Fleet.api("/runs", { method: "POST", body: schedule.request });
      location.assign("/ui/runs/" + encodeURIComponent(accepted.run_id));
    } catch (error) {
      message.textContent = error.message;
      message.classList.add("bad");
      button.disabled = false;
    }
  }

  function row(schedule) {
    const next = Fleet.el("td");
    for (const iso of schedule.next) next.append(Fleet.el("div", { text: Fleet.when(iso) }));
    if (!schedule.enabled) next.append(Fleet.el("span", { class: "muted", text: "disabled" }));
    const last = Fleet.el("td");
    if (schedule.run_id) {
      last.append(Fleet.el("a", { href: "/ui/runs/" + encodeURIComponent(schedule.run_id), text: schedule.run_id }));
    } else {
      last.append(Fleet.el("span", { class: "muted", text: "none yet" }));
    }
    const outcome = schedule.running ? "running" : schedule.outcome || "";
    const button = Fleet.el("button", { class: "primary", type: "button", text: "Run now" });
    button.addEventListener("click", () => start(schedule, button));
    const tr = Fleet.el("tr", { "data-schedule": schedule.name });
    tr.append(
      Fleet.el("td", { text: schedule.name }),
      Fleet.el("td", { text: schedule.selection }),
      Fleet.el("td", { text: `${schedule.cron} (${schedule.timezone})` }),
      next,
      last,
      Fleet.el("td", { class: "st o-" + outcome, text: outcome }),
      Fleet.el("td", {}, button),
    );
    return tr;
  }

  async function refresh() {
    try {
      const answer = await Fleet.api("/schedules");
      body.replaceChildren(...answer.schedules.map(row));
      message.textContent = answer.schedules.length ? "" : "This worker's config file has no [schedules.NAME] tables.";
      document.body.dataset.loaded = "true";
    } catch (error) {
      message.textContent = error.message;
    }
  }

  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, 15000);
});

// The form that starts a run: the worker's default selection, a configured group, or what a
// schedule runs (its selection and options), through POST /runs.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const form = document.getElementById("start");
  if (!form) return;
  const select = document.getElementById("what");
  const message = document.getElementById("start-message");
  const bodies = new Map([["", {}]]);
  try {
    const [groups, schedules] = await Promise.all([Fleet.api("/groups"), Fleet.api("/schedules")]);
    if (groups.groups.length) {
      const optgroup = Fleet.el("optgroup", { label: "Groups" });
      for (const group of groups.groups) {
        const key = "group:" + group.name;
        bodies.set(key, { selection: { groups: [group.name] } });
        optgroup.append(Fleet.el("option", { value: key, text: `${group.name} (${group.selection})` }));
      }
      select.append(optgroup);
    }
    if (schedules.schedules.length) {
      const optgroup = Fleet.el("optgroup", { label: "Schedules (now)" });
      for (const schedule of schedules.schedules) {
        const key = "schedule:" + schedule.name;
        bodies.set(key, schedule.request);
        optgroup.append(Fleet.el("option", { value: key, text: `${schedule.name} (${schedule.selection})` }));
      }
      select.append(optgroup);
    }
    form.dataset.ready = "true";
  } catch (error) {
    message.textContent = error.message;
    message.classList.add("bad");
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    message.classList.remove("bad");
    message.textContent = "Starting…";
    try {
      const accepted = await Fleet.api("/runs", { method: "POST", body: bodies.get(select.value) || {} });
      location.assign("/ui/runs/" + encodeURIComponent(accepted.run_id));
    } catch (error) {
      message.textContent = error.message;
      message.classList.add("bad");
      button.disabled = false;
    }
  });
});

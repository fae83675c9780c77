// Shared by every page of /ui: talking to the worker's API, formatting, the header's logout.
"use strict";

const Fleet = (() => {
  // A 401 means the session ended: back to the login form, which brings the user here again.
  function toLogin() {
    const next = location.pathname + location.search;
    location.assign("/ui/login?next=" + encodeURIComponent(next));
  }

  async function api(path, options = {}) {
    const init = { method: options.method || "GET", credentials: "same-origin", headers: {} };
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(path, init);
    if (response.status === 401 && !options.noRedirect) {
      toLogin();
      throw new Error("Your session has ended; log in again.");
    }
    let data = null;
    if ((response.headers.get("Content-Type") || "").startsWith("application/json")) {
      data = await response.json();
    }
    if (!response.ok) {
      const error = new Error((data && data.error) || `The worker answered ${response.status}.`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)}s`;
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(r).padStart(2, "0")}s`;
  }

  const units = ["B", "KB", "MB", "GB", "TB"];
  function bytes(n) {
    if (n === null || n === undefined) return "";
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function count(n) {
    return n === null || n === undefined ? "" : n.toLocaleString("en");
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function between(startIso, endIso) {
    if (!startIso) return "";
    const end = endIso ? Date.parse(endIso) : Date.now();
    return duration((end - Date.parse(startIso)) / 1000);
  }

  function wireHeader() {
    const out = document.getElementById("logout");
    if (!out) return;
    out.addEventListener("click", async () => {
      try { await api("/logout", { method: "POST", noRedirect: true }); } catch (_) { /* gone anyway */ }
      location.assign("/ui/login");
    });
  }

  document.addEventListener("DOMContentLoaded", wireHeader);
  return { api, el, duration, bytes, count, when, between };
})();

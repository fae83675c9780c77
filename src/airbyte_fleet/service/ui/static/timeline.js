// The run's timeline on a canvas: one bar per sync from its trigger to its final state, the time
// the limiter held it back (ready to sync_triggering) drawn apart in grey, coloured by outcome,
// a dark tick per retry. Only the rows in view are drawn, at most once per animation frame, so
// 10,000 syncs scroll as easily as 10: the canvas stays the size of the view and a spacer gives
// the box its full height.
"use strict";

const Timeline = (() => {
  const ROW = 16, BAR = 10, AXIS = 24, LABEL = 200, PAD = 12;
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue("--" + name).trim() || "#888";
  const COLOURS = {};
  for (const name of ["succeeded", "failed", "error", "cancelled", "timed_out", "skipped", "triggered", "running", "queued"]) {
    COLOURS[name] = colour(name);
  }

  function create(box, canvas, spacer) {
    let items = [];
    let now = 0;
    let pending = false;
    const ctx = canvas.getContext("2d");

    function schedule() {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; draw(); });
    }

    function niceStep(span, width) {
      const target = span / Math.max(1, width / 90);
      const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400];
      return steps.find((s) => s >= target) || 86400;
    }

    function end(item) {
      return item.end !== null ? item.end : now;
    }

    function draw() {
      const width = box.clientWidth, height = box.clientHeight;
      const ratio = window.devicePixelRatio || 1;
      if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
        canvas.style.width = width + "px";
        canvas.style.height = height + "px";
      }
      spacer.style.height = Math.max(0, AXIS + items.length * ROW + 4 - height) + "px";
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);
      let span = 1;
      for (const item of items) span = Math.max(span, end(item));
      const plot = Math.max(50, width - LABEL - PAD);
      const x = (t) => LABEL + (Math.max(0, t) / span) * plot;
      const top = box.scrollTop;
      const first = Math.max(0, Math.floor(top / ROW));
      const last = Math.min(items.length, Math.ceil((top + height - AXIS) / ROW) + 1);
      ctx.font = "12px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      for (let i = first; i < last; i += 1) {
        const item = items[i];
        const y = AXIS + i * ROW - top;
        if (i % 2) { ctx.fillStyle = "#f8f9fb"; ctx.fillRect(0, y, width, ROW); }
        ctx.fillStyle = "#1d2330";
        ctx.fillText(clip(item.name || item.id, LABEL - 10), 4, y + ROW / 2);
        const start = item.start !== null ? item.start : item.ready;
        if (item.start !== null && item.start > item.ready) {
          ctx.fillStyle = COLOURS.queued;
          ctx.fillRect(x(item.ready), y + ROW / 2 - 2, Math.max(1, x(item.start) - x(item.ready)), 4);
        }
        ctx.fillStyle = COLOURS[item.outcome || "running"] || COLOURS.running;
        const left = x(start);
        ctx.fillRect(left, y + (ROW - BAR) / 2, Math.max(2, x(end(item)) - left), BAR);
        ctx.fillStyle = "#212529";
        for (const retry of item.retries) ctx.fillRect(x(retry) - 1, y + 1, 2, ROW - 2);
      }
      // The axis last, over the rows that scroll under it.
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, width, AXIS);
      ctx.fillStyle = "#667085";
      ctx.strokeStyle = "#e3e6ec";
      const step = niceStep(span, plot);
      for (let t = 0; t <= span + 1e-9; t += step) {
        const px = Math.round(x(t)) + 0.5;
        ctx.beginPath(); ctx.moveTo(px, AXIS - 6); ctx.lineTo(px, AXIS); ctx.stroke();
        ctx.fillText(Fleet.duration(t), px + 3, AXIS / 2);
      }
      ctx.fillText(`${items.length.toLocaleString("en")} syncs`, 4, AXIS / 2);
      canvas.dataset.bars = String(items.length);
      canvas.dataset.drawn = String(Math.max(0, last - first));
      canvas.dataset.frames = String(Number(canvas.dataset.frames || 0) + 1);
    }

    const widths = new Map();
    function clip(text, max) {
      if (ctx.measureText(text).width <= max) return text;
      let cut = widths.get(text);
      if (cut === undefined) {
        cut = text.length;
        while (cut > 1 && ctx.measureText(text.slice(0, cut) + "…").width > max) cut -= 1;
        widths.set(text, cut);
      }
      return text.slice(0, cut) + "…";
    }

    function itemAt(offsetY) {
      const i = Math.floor((offsetY + box.scrollTop - AXIS) / ROW);
      return offsetY >= AXIS && i >= 0 && i < items.length ? items[i] : null;
    }

    box.addEventListener("scroll", schedule, { passive: true });
    window.addEventListener("resize", schedule);
    canvas.addEventListener("mousemove", (event) => {
      const item = itemAt(event.offsetY);
      canvas.title = item ? `${item.name || item.id}: ${item.outcome || item.state}` : "";
    });

    return {
      // *list*: the syncs shown, in order; *at*: seconds since the run started, for bars still
      // going. Called from an animation frame, so it draws at once.
      update(list, at) { items = list; now = at; draw(); },
    };
  }

  return { create };
})();

// Events dashboard: summary, compliance chart (own canvas code), events table with paging.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("filters");
  if (!form) return;
  const PAGE = 25;
  let offset = 0;
  const labels = window.maskwatch.MASK_LABELS, colors = window.maskwatch.MASK_COLORS;
  window.maskwatchDashboard = { loaded: false, total: null, stats: null };

  function query(withIdentity) {
    const q = new URLSearchParams();
    const period = form.period.value;
    if (period) q.set("since", String(Date.now() / 1000 - Number(period)));
    if (form.source.value) q.set("source", form.source.value);
    if (withIdentity) {
      const ident = form.identity.value.trim();
      if (ident) q.set("identity", ident.toLowerCase() === "unknown" ? "" : ident);
      if (form.mask_state.value) q.set("mask_state", form.mask_state.value);
    }
    return q;
  }

  function bucketSize() {
    const p = Number(form.period.value || 0);
    return p && p <= 3600 ? 300 : p && p <= 86400 ? 3600 : 86400;
  }

  function drawChart(buckets, bucket) {
    const c = $("chart"), ctx = c.getContext("2d");
    const W = c.width, H = c.height, L = 44, R = 10, T = 10, B = 30;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "12px sans-serif";
    ctx.fillStyle = "#666";
    if (!buckets.length) { ctx.fillText("no events in this period", L, H / 2); return; }
    const t0 = buckets[0].start, t1 = buckets[buckets.length - 1].start + bucket;
    const maxN = Math.max(...buckets.map((b) => b.total), 1);
    const x = (t) => L + (W - L - R) * (t - t0) / Math.max(t1 - t0, 1);
    const bw = Math.max(2, (W - L - R) * bucket / Math.max(t1 - t0, 1) - 2);
    // stacked bars: events per bucket by mask state (left axis: counts)
    for (const b of buckets) {
      let y = H - B;
      for (const k of ["with_mask", "mask_incorrect", "without_mask", "unknown"]) {
        const h = (H - T - B) * (b[k] || 0) / maxN;
        ctx.fillStyle = colors[k];
        ctx.globalAlpha = 0.45;
        ctx.fillRect(x(b.start) + 1, y - h, bw, h);
        y -= h;
      }
    }
    ctx.globalAlpha = 1;
    // compliance line (0-100%)
    ctx.strokeStyle = "#1f4fa8"; ctx.lineWidth = 2; ctx.beginPath();
    let first = true;
    for (const b of buckets) {
      if (b.compliance === null || b.compliance === undefined) continue;
      const px = x(b.start) + bw / 2, py = H - B - (H - T - B) * b.compliance;
      if (first) ctx.moveTo(px, py); else ctx.lineTo(px, py);
      first = false;
      ctx.fillStyle = "#1f4fa8"; ctx.fillRect(px - 2, py - 2, 4, 4);
    }
    ctx.stroke();
    ctx.fillStyle = "#666";
    ctx.fillText("100%", 4, T + 10); ctx.fillText("0%", 4, H - B);
    ctx.fillText(maxN + " ev.", W - 50, T + 10);
    const fmt = (t) => new Date(t * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    ctx.fillText(fmt(t0), L, H - 10);
    const last = fmt(t1);
    ctx.fillText(last, W - R - ctx.measureText(last).width, H - 10);
  }

  function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

  async function loadStats() {
    const q = query(false);
    q.set("bucket_s", String(bucketSize()));
    const r = await fetch("/api/stats?" + q);
    if (!r.ok) return;
    const s = await r.json();
    window.maskwatchDashboard.stats = s;
    $("total").textContent = s.total;
    $("compliance").textContent = s.compliance === null ? "-" : Math.round(100 * s.compliance) + "%";
    const seen = Object.entries(s.people_seen || {});
    $("people-seen").textContent = seen.length;
    $("unknown").textContent = s.unknown;
    $("cannot-judge").textContent = (s.by_mask && s.by_mask.unknown) || 0;
    $("people-list").textContent = seen.length ? "Seen: " + seen.map(([n, k]) => n + " (" + k + ")").join(", ") : "";
    const sel = form.source, cur = sel.value;
    const known = new Set(Array.from(sel.options).map((o) => o.value));
    for (const src of s.sources || []) {
      if (!known.has(src)) { const o = document.createElement("option"); o.value = src; o.textContent = src; sel.appendChild(o); }
    }
    sel.value = cur;
    drawChart(s.buckets || [], bucketSize());
  }

  async function loadEvents() {
    const q = query(true);
    q.set("limit", String(PAGE));
    q.set("offset", String(offset));
    const r = await fetch("/api/events?" + q);
    const body = await r.json();
    const tbody = document.querySelector("#events tbody");
    tbody.textContent = "";
    if (!r.ok) { tbody.appendChild(cell(body.detail || "error")); return; }
    for (const e of body.events) {
      const tr = document.createElement("tr");
      tr.appendChild(cell(new Date(e.started * 1000).toLocaleString()));
      tr.appendChild(cell((e.ended - e.started).toFixed(1) + " s"));
      tr.appendChild(cell(e.source));
      tr.appendChild(cell("#" + e.track_id));
      const life = Object.entries(e.mask_frames || {}).filter(([, n]) => n > 0)
        .map(([k, n]) => labels[k] + " " + n).join(", ");
      tr.appendChild(cell((e.mask_state ? labels[e.mask_state] : "-") + (life ? " (frames: " + life + ")" : "")));
      tr.appendChild(cell(e.identity || "unknown"));
      tr.appendChild(cell(e.best_similarity === null || e.best_similarity === undefined ? "-" : e.best_similarity.toFixed(2)));
      tbody.appendChild(tr);
    }
    window.maskwatchDashboard.total = body.total;
    $("page").textContent = body.total ? (offset + 1) + "-" + (offset + body.events.length) + " of " + body.total : "no events";
    $("prev").disabled = offset === 0;
    $("next").disabled = offset + PAGE >= body.total;
    $("csv").href = "/api/events.csv?" + query(true);
  }

  async function load() {
    await Promise.all([loadStats(), loadEvents()]);
    window.maskwatchDashboard.loaded = true;
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; load(); });
  $("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadEvents(); });
  $("next").addEventListener("click", () => { offset += PAGE; loadEvents(); });
  load();
  setInterval(loadStats, 15000);
})();

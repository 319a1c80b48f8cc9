// Live page: this browser's camera -> WebSocket -> results drawn over the video.
// At most MAX_IN_FLIGHT frames (default 1; ?inflight=2 for two) are on their way at once
// (backpressure): a slow server makes the page send fewer frames, never queue them up.
// One in flight measured better than two on 2 cores: 34/100 ms p50/p95 against 88/360 ms.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const MAX_IN_FLIGHT = Math.max(1, Math.min(4, parseInt(params.get("inflight") || "1", 10)));
  const MAX_W = 640, MAX_H = 480, JPEG_QUALITY = 0.8;
  const video = document.getElementById("video");
  const overlay = document.getElementById("overlay");
  const octx = overlay.getContext("2d");
  const grab = document.createElement("canvas");
  const gctx = grab.getContext("2d");
  const $ = (id) => document.getElementById(id);
  const labels = window.maskwatch.MASK_LABELS, colors = window.maskwatch.MASK_COLORS;

  const stats = {
    running: false, fps: 0, latencyP50: null, latencyP95: null, frames: 0, errors: 0, faces: 0,
    names: [], labels: [], lastResult: null, source: null, sent: 0,
  };
  window.maskwatchStats = stats;
  // Benchmarks: forget the warm-up, then read maskwatchStats (latencies cover the last 1000 frames).
  window.maskwatchResetStats = function () { done.length = 0; latencies.length = 0; serverMs.length = 0; stats.frames = 0; stats.errors = 0; };

  let ws = null, stream = null, seq = 0, fresh = false, encoding = false;
  const inflight = new Map(); // seq -> time the frame was grabbed (ms)
  const done = [];            // completion times (ms), last few seconds
  const latencies = [];       // round trips (ms), last 1000
  const serverMs = [];        // decode + analysis on the server (ms), last 1000

  function percentile(sorted, p) {
    if (!sorted.length) return null;
    const i = Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))));
    return sorted[i];
  }

  function updateStats() {
    const now = performance.now();
    while (done.length && done[0] < now - 3000) done.shift();
    stats.fps = done.length >= 2 ? (done.length - 1) * 1000 / (done[done.length - 1] - done[0]) : 0;
    const sorted = latencies.slice().sort((a, b) => a - b);
    stats.latencyP50 = percentile(sorted, 50);
    stats.latencyP95 = percentile(sorted, 95);
    const srv = serverMs.slice().sort((a, b) => a - b);
    stats.serverP50 = percentile(srv, 50);
    stats.serverP95 = percentile(srv, 95);
    $("fps").textContent = stats.fps.toFixed(1);
    $("lat50").textContent = stats.latencyP50 === null ? "-" : stats.latencyP50.toFixed(0);
    $("lat95").textContent = stats.latencyP95 === null ? "-" : stats.latencyP95.toFixed(0);
    $("faces").textContent = String(stats.faces);
  }
  setInterval(updateStats, 500);

  function draw(result) {
    const vw = video.videoWidth || result.width, vh = video.videoHeight || result.height;
    if (overlay.width !== vw || overlay.height !== vh) { overlay.width = vw; overlay.height = vh; }
    octx.clearRect(0, 0, vw, vh);
    const sx = vw / result.width, sy = vh / result.height;
    const font = Math.max(12, Math.round(14 * vw / 640));
    octx.font = font + "px sans-serif";
    octx.lineWidth = Math.max(2, Math.round(2 * vw / 640));
    for (const f of result.faces) {
      const [x1, y1, x2, y2] = f.box;
      const cls = f.mask;
      const color = cls ? colors[cls] : "#c8c8c8";
      const prob = cls && f.mask_probs ? f.mask_probs[cls] : undefined; // none for "unknown"
      let text = !cls ? "face " + Math.round(100 * f.score) + "%"
        : labels[cls] + (prob === undefined ? "" : " " + Math.round(100 * prob) + "%");
      if (f.identity) text = f.identity + ": " + text;
      if (f.track_id !== undefined && f.track_id >= 0) text += " #" + f.track_id;
      octx.strokeStyle = color;
      octx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
      const tw = octx.measureText(text).width + 6;
      const ty = y1 * sy - font - 4 >= 0 ? y1 * sy - font - 4 : y2 * sy;
      octx.fillStyle = color;
      octx.fillRect(x1 * sx, ty, tw, font + 4);
      octx.fillStyle = "#fff";
      octx.fillText(text, x1 * sx + 3, ty + font);
    }
  }

  function onMessage(ev) {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (msg.type === "hello") { stats.source = msg.source; return; }
    if (msg.type === "error") { $("status").textContent = msg.error; stats.errors++; return; }
    const t0 = inflight.get(msg.seq);
    inflight.delete(msg.seq);
    if (msg.error) { stats.errors++; $("status").textContent = msg.error; pump(); return; }
    draw(msg);
    const now = performance.now();
    if (t0 !== undefined) { latencies.push(now - t0); if (latencies.length > 1000) latencies.shift(); }
    done.push(now);
    if (typeof msg.server_ms === "number") { serverMs.push(msg.server_ms); if (serverMs.length > 1000) serverMs.shift(); }
    stats.frames++;
    stats.faces = msg.faces.length;
    stats.names = msg.faces.map((f) => f.identity || null);
    stats.labels = msg.faces.map((f) => f.mask || null);
    stats.lastResult = msg;
    pump();
  }

  function pump() {
    if (!stats.running || !ws || ws.readyState !== WebSocket.OPEN) return;
    if (!fresh || encoding || inflight.size >= MAX_IN_FLIGHT || !video.videoWidth) return;
    fresh = false;
    const scale = Math.min(1, MAX_W / video.videoWidth, MAX_H / video.videoHeight);
    const w = Math.round(video.videoWidth * scale), h = Math.round(video.videoHeight * scale);
    if (grab.width !== w || grab.height !== h) { grab.width = w; grab.height = h; }
    const t0 = performance.now();
    gctx.drawImage(video, 0, 0, w, h);
    const id = (seq = (seq + 1) >>> 0);
    inflight.set(id, t0);
    encoding = true;
    grab.toBlob(async (blob) => {
      encoding = false;
      if (!blob || !ws || ws.readyState !== WebSocket.OPEN) { inflight.delete(id); return; }
      const body = new Uint8Array(await blob.arrayBuffer());
      const msg = new Uint8Array(body.length + 4);
      new DataView(msg.buffer).setUint32(0, id);
      msg.set(body, 4);
      ws.send(msg);
      stats.sent++;
      pump();
    }, "image/jpeg", JPEG_QUALITY);
  }

  function watchFrames() {
    if (!stats.running) return;
    if (video.requestVideoFrameCallback) {
      video.requestVideoFrameCallback(() => { fresh = true; pump(); watchFrames(); });
    } else {
      requestAnimationFrame(() => { fresh = true; pump(); watchFrames(); });
    }
  }

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/live";
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { $("status").textContent = "connected"; inflight.clear(); pump(); };
    ws.onmessage = onMessage;
    ws.onclose = (ev) => {
      inflight.clear();
      if (ev.code === 4401) { location.href = "/login?next=/"; return; }  // private server, session over
      if (stats.running) { $("status").textContent = "connection lost; reconnecting"; setTimeout(connect, 1000); }
    };
  }

  async function start() {
    $("start").disabled = true;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (e) {
      $("status").textContent = "no camera: " + e.message;
      $("start").disabled = false;
      return;
    }
    video.srcObject = stream;
    await video.play();
    stats.running = true;
    $("stop").disabled = false;
    $("status").textContent = "connecting";
    connect();
    watchFrames();
  }

  function stop() {
    stats.running = false;
    if (ws) ws.close();
    ws = null;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    octx.clearRect(0, 0, overlay.width, overlay.height);
    $("start").disabled = false;
    $("stop").disabled = true;
    $("status").textContent = "camera off";
  }

  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  if (params.get("autostart") === "1") start();

  // Server sources: refresh their state every 2 s.
  async function refreshSources() {
    try {
      const r = await fetch("/api/sources");
      if (!r.ok) return;
      for (const s of await r.json()) {
        const st = document.querySelector('.state[data-id="' + s.id + '"]');
        const m = document.querySelector('.message[data-id="' + s.id + '"]');
        if (st) st.textContent = s.state + (s.state === "live" ? " (" + s.fps + " fps, " + s.faces + " faces)" : "")
          + (s.worker ? " on " + s.worker + (s.restarts ? ", restarted " + s.restarts + "x" : "") : "");
        if (m) m.textContent = s.message;
      }
    } catch (e) { /* server restarting */ }
  }
  if (document.querySelector(".source")) setInterval(refreshSources, 2000);
})();

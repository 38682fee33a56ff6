// llmcycle monitor: polls /stats and draws per-interval charts on canvases (no libraries, no build step).
"use strict";
const key = localStorage.getItem("llmcycle-key") || "";
const COLORS = ["#2a6fdb", "#d9822b", "#3a9b5c"];

function chart(id, title, series, rows, unit) {
  const c = document.getElementById(id), g = c.getContext("2d");
  const W = c.width, H = c.height, L = 44, B = 22, T = 22;
  g.clearRect(0, 0, W, H);
  g.fillStyle = "#1d2329"; g.font = "13px sans-serif"; g.fillText(title, L, 15);
  const values = rows.flatMap((r) => series.map((s) => r[s.key])).filter((v) => v !== null && v !== undefined);
  const max = Math.max(1e-9, ...values) * 1.1;
  g.strokeStyle = "#ccd"; g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - 8, H - B); g.stroke();
  g.fillStyle = "#666"; g.font = "11px sans-serif";
  g.fillText(max.toPrecision(2) + unit, 2, T + 8); g.fillText("0", L - 12, H - B);
  const x = (i) => L + (rows.length < 2 ? 0 : i * (W - L - 10) / (rows.length - 1));
  const y = (v) => H - B - v / max * (H - B - T);
  series.forEach((s, k) => {
    g.strokeStyle = COLORS[k]; g.beginPath();
    let started = false;
    rows.forEach((r, i) => {
      const v = r[s.key];
      if (v === null || v === undefined) return;
      if (!started) { g.moveTo(x(i), y(v)); started = true; } else g.lineTo(x(i), y(v));
    });
    g.stroke();
    g.fillStyle = COLORS[k]; g.fillText(s.label, W - 90, T + 12 * k + 4);
  });
}

function table(id, title, obj) {
  const rows = Object.entries(obj || {}).map(([k, v]) => `<tr><td>${k}</td><td>${v === null ? "–" : v}</td></tr>`);
  document.getElementById(id).innerHTML = `<tr><th colspan="2">${title}</th></tr>` +
    (rows.join("") || "<tr><td colspan=2>none yet</td></tr>");
}

const fmt = (v) => (v === null || v === undefined ? null : Math.round(v * 1000) + " ms");

async function refresh() {
  const res = await fetch("/stats", {headers: key ? {Authorization: "Bearer " + key} : {}});
  if (!res.ok) return;
  const s = await res.json();
  document.getElementById("model").textContent = s.model || "";
  const rows = s.series;
  chart("requests", "requests per " + s.bucket_seconds + " s", [{key: "requests", label: "requests"},
        {key: "errors", label: "errors"}], rows, "");
  chart("tokens", "completion tokens / s", [{key: "tokens_per_s", label: "tok/s"}], rows, "");
  chart("latency", "latency (s)", [{key: "latency_p50", label: "p50"}, {key: "latency_p95", label: "p95"}], rows, "s");
  chart("ttft", "time to first token (s)", [{key: "ttft_p50", label: "p50"}, {key: "ttft_p95", label: "p95"}], rows, "s");
  table("now", "now", {"queue depth": s.queue_depth ?? 0, "batch rows in use": s.batch_occupancy ?? 0,
        "latency p50": fmt(s.latency.p50), "latency p99": fmt(s.latency.p99), "TTFT p50": fmt(s.ttft.p50),
        "TTFT p99": fmt(s.ttft.p99), "uptime": Math.round(s.uptime_s) + " s"});
  table("moderation", "moderation (category:action)", s.moderation);
  table("feedback", "feedback", s.feedback);
  document.body.dataset.loaded = "1";
}
refresh(); setInterval(refresh, 2000);

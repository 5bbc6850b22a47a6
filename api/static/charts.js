// Live fleet charts: the last 15 minutes of GET /fleet/history, drawn with uPlot (vendored in
// /static/vendor). The history lives in Redis, so every page and API process sees the same.
"use strict";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04"];

// Each chart: its element, a title, and how to turn the history into uPlot series.
const CHART_SPECS = [
  {
    id: "chart-tokens",
    title: "Tokens/s per worker",
    series: (h) => h.workers.map((w) => ({ label: w.label, values: w.tokens_per_s })),
  },
  {
    id: "chart-busy",
    title: "Busy slots per worker",
    series: (h) => h.workers.map((w) => ({ label: w.label, values: w.running })),
  },
  {
    id: "chart-queues",
    title: "Queue depth",
    series: (h) => h.queues.map((q) => ({ label: q.queue, values: q.queued })),
  },
  {
    id: "chart-latency",
    title: "Requests/s and time to first token (p50)",
    series: (h) => [
      { label: "requests/s", values: h.requests_per_s },
      { label: "TTFT p50 (s)", values: h.ttft_p50_s, scale: "s" },
    ],
  },
];

const charts = {}; // chart id -> {plot, labels}; exposed for tests as window.mlxqCharts
window.mlxqCharts = charts;

function chartWidth(element) {
  return Math.max(200, element.clientWidth);
}

function makeChart(spec, element, times, series) {
  const hasSeconds = series.some((s) => s.scale === "s");
  const axes = [{}, { size: 40 }];
  if (hasSeconds) axes.push({ scale: "s", side: 1, size: 40, grid: { show: false } });
  const options = {
    title: spec.title,
    width: chartWidth(element),
    height: 140,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
    axes,
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        scale: s.scale ?? "y",
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        points: { show: false },
      })),
    ],
  };
  if (hasSeconds) options.scales.s = { range: (_u, _min, max) => [0, Math.max(0.1, max ?? 0)] };
  element.replaceChildren();
  return new uPlot(options, [times, ...series.map((s) => s.values)], element);
}

// Redraws every chart from one history reply; a chart is rebuilt only when its series change
// (a worker or queue came or went), else its data is swapped in place.
function drawHistory(history) {
  for (const spec of CHART_SPECS) {
    const element = document.getElementById(spec.id);
    const series = spec.series(history);
    const labels = series.map((s) => s.label).join("\n");
    const existing = charts[spec.id];
    if (existing && existing.labels === labels) {
      existing.plot.setData([history.times, ...series.map((s) => s.values)]);
    } else {
      existing?.plot.destroy();
      charts[spec.id] = { plot: makeChart(spec, element, history.times, series), labels };
    }
  }
}

function resizeCharts() {
  for (const spec of CHART_SPECS) {
    const chart = charts[spec.id];
    if (chart) chart.plot.setSize({ width: chartWidth(document.getElementById(spec.id)), height: 140 });
  }
}

// Fetches the history now and every `everyMs`; `headers` adds the API key; `onStatus` gets
// null after each drawing, or the error that stopped it.
function startFleetCharts(headers, everyMs, onStatus) {
  async function refresh() {
    try {
      const response = await fetch("/fleet/history", { headers: headers() });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      drawHistory(await response.json());
      onStatus(null);
    } catch (error) {
      onStatus(error);
    } finally {
      setTimeout(refresh, everyMs);
    }
  }
  window.addEventListener("resize", resizeCharts);
  refresh();
}

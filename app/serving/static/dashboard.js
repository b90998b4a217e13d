/* Loyalty dashboard: plain JS over the HTTP API, charts by Chart.js (vendored, MIT). */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const charts = {};
  const palette = ["#2f6fde", "#e4572e", "#29bf12", "#ffc914", "#8e44ad", "#17becf",
                   "#ff7f0e", "#7f7f7f", "#bcbd22", "#d62728", "#1f77b4", "#9467bd"];

  let token = params.get("token") || sessionStorage.getItem("loyaltyToken") || "";
  $("token").value = token;

  function status(text, error) {
    const el = $("status");
    el.textContent = text;
    el.className = error ? "error" : "";
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const resp = await fetch(path, { headers });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = new Error(body.message || resp.statusText);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  function chart(id, config) {
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart($(id), config);
  }

  function bar(id, labels, data, label) {
    chart(id, {
      type: "bar",
      data: { labels, datasets: [{ label, data, backgroundColor: labels.map((_, i) => palette[i % palette.length]) }] },
      options: { responsive: true, maintainAspectRatio: false, animation: false,
                 plugins: { legend: { display: false } } },
    });
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function isoDay(d) { return d.toISOString().slice(0, 10); }

  async function loadDimensions() {
    const seg = await api("/segments");
    const select = $("dimension");
    const current = select.value || params.get("dimension");
    select.innerHTML = "";
    for (const dim of Object.keys(seg.dimensions)) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = dim;
      select.appendChild(opt);
    }
    if (current && seg.dimensions[current]) select.value = current;
    return seg;
  }

  function renderMatrix(total) {
    const matrix = total.matrix || {};
    const froms = Object.keys(matrix).sort();
    const tos = [...new Set(froms.flatMap((f) => Object.keys(matrix[f])))].sort();
    if (!froms.length) { $("matrix").innerHTML = '<p class="muted">no transitions in the period</p>'; return; }
    let html = '<table id="matrix-table"><thead><tr><th>from \\ to</th>' +
      tos.map((t) => "<th>" + esc(t) + "</th>").join("") + "</tr></thead><tbody>";
    for (const f of froms) {
      html += "<tr><td>" + (f ? esc(f) : "<em>(new)</em>") + "</td>" + tos.map((t) => {
        const n = matrix[f][t] || 0;
        return '<td class="' + (n ? "" : "zero") + '">' + n + "</td>";
      }).join("") + "</tr>";
    }
    $("matrix").innerHTML = html + "</tbody></table><p class=\"muted\">" + total.changes + " changes</p>";
  }

  function renderDynamics(hist) {
    const days = hist.days;
    if (!days.length) { $("dynamics").innerHTML = '<p class="muted">no data</p>'; return; }
    const now = days[days.length - 1];
    const before = days.length > 1 ? days[days.length - 2].sizes : {};
    let html = '<table id="dynamics-table"><thead><tr><th>segment</th><th>' +
      esc(days.length > 1 ? days[days.length - 2].period : "before") + "</th><th>" + esc(now.period) +
      "</th><th>change</th><th>entered</th><th>left</th></tr></thead><tbody>";
    for (const s of hist.segments) {
      const a = before[s] || 0, b = now.sizes[s] || 0, d = b - a;
      html += "<tr><td>" + esc(s) + "</td><td>" + a + "</td><td>" + b + "</td><td>" +
        (d > 0 ? "+" : "") + d + "</td><td>" + (now.entries[s] || 0) + "</td><td>" + (now.exits[s] || 0) + "</td></tr>";
    }
    $("dynamics").innerHTML = html + "</tbody></table>";
  }

  async function refresh() {
    status("loading…");
    try {
      const seg = await loadDimensions();
      const dim = $("dimension").value;
      if (!dim) { status("no dimensions"); return; }
      const sizes = seg.dimensions[dim].segments;
      bar("sizes-chart", Object.keys(sizes), Object.values(sizes), "clients");
      const today = new Date();
      const yearAgo = new Date(today.getTime() - 364 * 86400e3);
      const [rev, months, tr] = await Promise.all([
        api("/reports/revenue?dimension=" + encodeURIComponent(dim)),
        api("/reports/sizes?period=month&dimension=" + encodeURIComponent(dim)),  // from the first change to the server's today
        api("/reports/transitions?period=total&dimension=" + encodeURIComponent(dim) + "&from=" + isoDay(yearAgo) + "&to=" + isoDay(today)),
      ]);
      const revSegs = rev.periods.length ? rev.periods[0].segments : {};
      bar("revenue-chart", Object.keys(revSegs), Object.values(revSegs).map((r) => Number(r.revenue)), "revenue");
      const hist = months;
      renderDynamics(hist);
      chart("history-chart", {
        type: "line",
        data: {
          labels: hist.days.map((d) => d.period),
          datasets: hist.segments.map((s, i) => ({
            label: s, data: hist.days.map((d) => d.sizes[s] || 0),
            borderColor: palette[i % palette.length], backgroundColor: palette[i % palette.length],
            pointRadius: hist.days.length > 40 ? 0 : 3, tension: 0.2,
          })),
        },
        options: { responsive: true, maintainAspectRatio: false, animation: false },
      });
      renderMatrix(tr.total);
      status("updated " + new Date().toLocaleTimeString());
      document.body.dataset.loaded = "1";
    } catch (err) {
      status(err.status === 401 ? "unauthorized: enter the API token" : "error: " + err.message, true);
    }
  }

  async function lookup(ev) {
    ev.preventDefault();
    const id = $("lookup-input").value.trim();
    const out = $("lookup-result");
    if (!id) return;
    out.textContent = "looking up…";
    try {
      const c = await api("/clients/" + encodeURIComponent(id));
      let html = "<table id=\"lookup-table\"><thead><tr><th>dimension</th><th>segment</th>" +
        "<th>since · previous · last month</th></tr></thead><tbody>";
      for (const [dim, s] of Object.entries(c.segments)) {
        html += "<tr><td>" + esc(dim) + "</td><td><b>" + esc(s.segment) + "</b></td><td>" +
          esc(s.since.slice(0, 10)) + " · " + esc(s.previous || "—") + " · " + esc(s.last_month || "—") + "</td></tr>";
      }
      html += "</tbody></table><dl>";
      for (const [k, v] of Object.entries(c.metrics)) {
        if (typeof v !== "object") html += "<dt>" + esc(k) + "</dt><dd>" + esc(v) + "</dd>";
      }
      out.className = "";
      out.innerHTML = html + "</dl><p class=\"muted\">metrics as of " + esc(c.metrics_at || "—") + "</p>";
    } catch (err) {
      out.className = "muted";
      out.textContent = err.status === 404 ? "no such client: " + id : "error: " + err.message;
    }
  }

  $("token").addEventListener("change", () => {
    token = $("token").value.trim();
    sessionStorage.setItem("loyaltyToken", token);
    refresh();
  });
  $("dimension").addEventListener("change", refresh);
  $("refresh").addEventListener("click", refresh);
  $("lookup-form").addEventListener("submit", lookup);
  refresh();
})();

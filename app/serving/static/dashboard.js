/* Loyalty dashboard: plain JS over the HTTP API (no build step), charts by Chart.js (vendored, MIT),
   labels in i18n.js (English and Russian).

   The API token is typed once, kept in sessionStorage (this browser tab) and sent as
   "Authorization: Bearer"; it never goes into an address: a ?token= in the page's address is
   removed unused, and CSV downloads are fetched with the header and saved from a Blob.
   Money arrives as decimal strings and is turned into a Number only to be drawn or formatted. */
(function () {
  "use strict";
  const DICT = window.LOYALTY_I18N;
  const $ = (id) => document.getElementById(id);
  const TOP_N = 8;                       // a segmentation with more segments shows these and "others"
  const OTHERS = "\u0000others";
  const OTHER_COLOR = "#9aa5b1";
  const PALETTE = ["#2456b8", "#e4572e", "#29a329", "#f2b705", "#8e44ad", "#17a2b8",
                   "#ff7f0e", "#6d4c41", "#bcbd22", "#d62728", "#1f77b4", "#9467bd"];
  const TREND = { week: 8, month: 6, day: 14 };  // periods in the "period by period" table
  const CHURN_IDS = ["lost", "churned", "sleeping", "lapsed"];
  const SCORE = /^[1-5][1-5][1-5]$/;     // rfm_score-like segments: the R, F and M digits
  const MONEY_METRIC = /^(lifetime_value|lifetime_revenue|lifetime_return_amount|avg_check|revenue_|min_month_revenue)/;
  const KPIS = ["revenue", "sales", "avg_check", "active", "new", "returning", "sales_per_client", "churned"];
  const MONEY_KPIS = new Set(["revenue", "avg_check"]);
  const LOWER_IS_BETTER = new Set(["churned"]);

  const charts = {};
  const missing = new Set();
  window.__dashboardMissingLabels = missing;  // labels asked for and absent (the browser test reads it)
  const state = {
    token: "", lang: "en", kind: "week", anchor: null, today: null, dim: null, attribution: "purchase",
    by: "scenario", segment: "", currency: null, seq: 0, data: null,
  };

  // -- storage (a browser may refuse it: the page still works, it just forgets) -----------------
  function load(store, key) { try { return window[store].getItem(key); } catch (e) { return null; } }
  function save(store, key, value) {
    try { if (value === null) window[store].removeItem(key); else window[store].setItem(key, value); } catch (e) { /* */ }
  }

  // -- labels and formats ------------------------------------------------------------------------
  function t(key, vars) {
    let s = DICT[state.lang][key];
    if (s === undefined) {
      missing.add(state.lang + ":" + key);
      s = DICT.en[key] !== undefined ? DICT.en[key] : key;
    }
    return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
  }
  const named = (prefix, id) => DICT[state.lang][prefix + "." + id];
  const locale = () => t("locale");
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const raw = (s) => '<span translate="no">' + esc(s) + "</span>";  // data, not a label: never translated

  function nf(opts) { return new Intl.NumberFormat(locale(), opts); }
  const fmtInt = (n) => (n === null || n === undefined ? "—" : nf().format(n));
  const fmtNum = (n, digits) => (n === null || n === undefined ? "—" : nf({ maximumFractionDigits: digits === undefined ? 2 : digits }).format(n));
  const fmtPct = (x) => (x === null || x === undefined || !isFinite(x) ? "—" : nf({ style: "percent", maximumFractionDigits: 1 }).format(x));
  function fmtMoney(value, style) {  // style: "whole" (no minor units) or "compact" (axis ticks)
    if (value === null || value === undefined || value === "") return "—";
    const n = typeof value === "number" ? value : Number(value);
    if (!isFinite(n)) return String(value);
    const digits = style ? { maximumFractionDigits: 0, minimumFractionDigits: 0 } : {};
    const compact = style === "compact" ? { notation: "compact" } : {};
    const cur = state.currency;
    if (typeof cur === "string" && /^[A-Z]{3}$/.test(cur)) {
      try {
        return nf(Object.assign({ style: "currency", currency: cur, currencyDisplay: "narrowSymbol" }, digits, compact)).format(n);
      } catch (e) { /* a code this browser does not know */ }
    }
    return nf(Object.assign(style ? digits : { minimumFractionDigits: 2, maximumFractionDigits: 2 }, compact)).format(n);
  }
  const cents = (s) => (s === null || s === undefined ? 0 : Math.round(Number(s) * 100));
  const money = (c) => (c / 100).toFixed(2);

  function dimName(id) { const n = named("dim", id); return n === undefined ? id : n; }
  function segLabel(id, group) {
    if (id === OTHERS) return t("others", { n: group ? group.restNow : 0 });
    if (id === "" || id === null || id === undefined) return t("matrix.new");
    const n = named("seg", id);
    return n === undefined ? id : n;
  }
  function segHtml(id, group) {
    if (id === OTHERS || id === "") return esc(segLabel(id, group));
    const n = named("seg", id);
    if (n === undefined && SCORE.test(id)) return '<span translate="no" title="R' + id[0] + " F" + id[1] + " M" + id[2] + '">' + esc(id) + "</span>";
    return n === undefined ? raw(id) : '<span data-id="' + esc(id) + '" title="' + esc(id) + '">' + esc(n) + "</span>";
  }
  function metricHtml(id) {
    const n = named("metric", id);
    return (n === undefined ? "" : esc(n)) + '<code class="id" translate="no">' + esc(id) + "</code>";
  }

  // -- days: "YYYY-MM-DD" strings; arithmetic in UTC, so no time zone or DST moves a day -------
  const D = (s) => new Date(s + "T00:00:00Z");
  const S = (d) => d.toISOString().slice(0, 10);
  function addDays(s, n) { const d = D(s); d.setUTCDate(d.getUTCDate() + n); return S(d); }
  function periodOf(kind, day) {  // the period [from, to) holding the day; weeks start on Monday
    if (kind === "day") return { from: day, to: addDays(day, 1) };
    if (kind === "week") {
      const from = addDays(day, -((D(day).getUTCDay() + 6) % 7));
      return { from, to: addDays(from, 7) };
    }
    const from = day.slice(0, 8) + "01";
    const next = D(from);
    next.setUTCMonth(next.getUTCMonth() + 1);
    return { from, to: S(next) };
  }
  const prevPeriod = (kind, p) => periodOf(kind, addDays(p.from, -1));
  const nextPeriod = (kind, p) => periodOf(kind, p.to);
  const lastComplete = (kind, today) => prevPeriod(kind, periodOf(kind, today));
  function fmtDay(s, opts) { return new Intl.DateTimeFormat(locale(), Object.assign({ timeZone: "UTC" }, opts)).format(D(s)); }
  function fmtPeriod(kind, p, short) {
    if (kind === "day") return fmtDay(p.from, short ? { day: "numeric", month: "short" } : { weekday: "short", day: "numeric", month: "long", year: "numeric" });
    if (kind === "month") return fmtDay(p.from, { month: short ? "short" : "long", year: "numeric" });
    const last = addDays(p.to, -1);
    return t("period.range", { from: fmtDay(p.from, { day: "numeric", month: "short" }),
                               to: fmtDay(last, short ? { day: "numeric", month: "short" } : { day: "numeric", month: "short", year: "numeric" }) });
  }
  function fmtInstant(iso) {
    if (!iso) return "—";
    return new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
  }

  // -- the API -----------------------------------------------------------------------------------
  function q(params) {
    const out = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") out.set(k, v);
    return out.toString();
  }
  function headers(accept) {
    const h = { Accept: accept };
    if (state.token) h.Authorization = "Bearer " + state.token;
    return h;
  }
  async function failure(resp) {
    const body = await resp.json().catch(() => ({}));
    const err = new Error(body.message || resp.statusText || String(resp.status));
    err.status = resp.status;
    return err;
  }
  async function api(path) {
    const resp = await fetch(path, { headers: headers("application/json"), cache: "no-store", credentials: "omit" });
    if (!resp.ok) throw await failure(resp);
    return resp.json();
  }
  async function soft(promise) {  // a panel's own data: its failure is shown in the panel
    try { return await promise; } catch (err) { if (err.status === 401) throw err; return { error: err.message }; }
  }

  async function download(path, fallback) {
    status(t("status.downloading", { name: fallback }));
    try {
      const resp = await fetch(path, { headers: headers("text/csv"), cache: "no-store", credentials: "omit" });
      if (!resp.ok) throw await failure(resp);
      const blob = await resp.blob();
      const m = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
      const filename = m ? m[1] : fallback;
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = filename;
      a.hidden = true;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
      status(t("status.downloaded", { name: filename }));
    } catch (err) {
      fail(err);
    }
  }

  // -- status, sign-in ---------------------------------------------------------------------------
  function status(text, error) {
    const el = $("status");
    el.textContent = text;
    el.className = error ? "error" : "";
  }
  function fail(err) {
    document.body.dataset.state = "error";
    if (err.status === 401) {
      state.token = "";
      save("sessionStorage", "loyaltyToken", null);
      signedIn(false);
      status(t("status.unauthorized"), true);
      $("token").focus();
    } else {
      status(t("status.error", { message: err.message }), true);
    }
  }
  function signedIn(ok) {
    document.body.classList.toggle("signed-out", !ok);
    $("token-form").hidden = ok;
    $("signed-in").hidden = !(ok && state.token);
  }

  // -- static labels -----------------------------------------------------------------------------
  function applyLabels() {
    document.documentElement.lang = state.lang;
    document.title = t("title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
    for (const el of document.querySelectorAll("[data-i18n-aria-label]")) el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
    for (const b of document.querySelectorAll("#lang button")) b.setAttribute("aria-pressed", String(b.dataset.lang === state.lang));
    if (!$("lookup-result").innerHTML.trim() || $("lookup-result").dataset.hint) {
      $("lookup-result").textContent = t("lookup.hint");
      $("lookup-result").dataset.hint = "1";
    }
  }

  // -- segments: colors and the top-N grouping ---------------------------------------------------
  function grouping(sizes, extra) {
    const ids = [...new Set([...Object.keys(sizes), ...extra])]
      .sort((a, b) => (sizes[b] || 0) - (sizes[a] || 0) || (a < b ? -1 : a > b ? 1 : 0));
    const grouped = ids.length > TOP_N + 1;
    const top = grouped ? ids.slice(0, TOP_N) : ids;
    const inTop = new Set(top);
    const rank = new Map(ids.map((id, i) => [id, i]));
    const of = (id) => (!grouped || inTop.has(id) ? id : OTHERS);
    const order = (a, b) => (rank.has(a) ? rank.get(a) : 1e9) - (rank.has(b) ? rank.get(b) : 1e9) || (a < b ? -1 : a > b ? 1 : 0);
    const rest = grouped ? ids.slice(TOP_N) : [];
    const restNow = rest.filter((id) => sizes[id] > 0).length || rest.length;  // "others (n)": the segments with members now
    return {
      ids, top, rest, restNow, grouped, of,
      keys(present) {  // the keys of the segments (or keys) present: by size now, "others" last
        const set = new Set([...present].map((id) => (id === OTHERS ? OTHERS : of(id))));
        const named = [...set].filter((k) => k !== OTHERS).sort(order);
        return set.has(OTHERS) ? [...named, OTHERS] : named;
      },
      color: (key) => (key === OTHERS ? OTHER_COLOR : PALETTE[(rank.has(key) ? rank.get(key) : ids.length) % PALETTE.length]),
    };
  }
  function sumBy(group, values, pick) {  // {segment: value} -> {key: summed}
    const out = {};
    for (const [id, v] of Object.entries(values || {})) {
      const k = group.of(id);
      out[k] = (out[k] || 0) + (pick ? pick(v) : v);
    }
    return out;
  }
  const swatch = (group, key) => '<span class="swatch" style="background:' + group.color(key) + '"></span>';

  function churnOf(seg) {  // the segments whose entries count as churned, from the first segmentation having one
    const dims = Object.keys(seg.dimensions);
    for (const dim of dims) {
      const ids = CHURN_IDS.filter((s) => s in seg.dimensions[dim].segments);
      if (ids.length) return { dim, ids, param: dim + ":" + ids.join(",") };
    }
    for (const dim of dims) {  // an RFM score: into R = 1 (no purchase for the longest)
      const segs = Object.keys(seg.dimensions[dim].segments);
      if (segs.length && segs.every((s) => SCORE.test(s))) {
        const ids = [];
        for (let f = 1; f <= 5; f++) for (let m = 1; m <= 5; m++) ids.push("1" + f + m);
        return { dim, ids, param: dim + ":" + ids.join(","), score: true };
      }
    }
    return null;
  }

  // -- charts --------------------------------------------------------------------------------------
  function chart(id, config) {
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart($(id), config);
  }
  const bandPlugin = {  // shades the selected period of a line chart
    id: "band",
    beforeDatasetsDraw(c, args, opts) {
      if (opts.index === undefined || opts.index === null || opts.index < 0) return;
      const x = c.scales.x, area = c.chartArea, n = c.data.labels.length;
      const step = n > 1 ? Math.abs(x.getPixelForValue(1) - x.getPixelForValue(0)) : area.right - area.left;
      const cx = x.getPixelForValue(opts.index);
      c.ctx.save();
      c.ctx.fillStyle = "rgba(36, 86, 184, 0.12)";
      c.ctx.fillRect(Math.max(area.left, cx - step / 2), area.top, Math.min(step, area.right - area.left), area.bottom - area.top);
      c.ctx.restore();
    },
  };
  function hbar(id, group, keys, values, label, format, full) {
    $(id).parentNode.style.height = Math.max(120, 30 * keys.length + 50) + "px";  // bars of one height
    chart(id, {
      type: "bar",
      data: { labels: keys.map((k) => segLabel(k, group)),
              datasets: [{ label, keys, data: values, backgroundColor: keys.map((k) => group.color(k)) }] },
      options: {
        indexAxis: "y", responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { display: false },
                   tooltip: { callbacks: { label: (ctx) => " " + (full || format)(ctx.parsed.x) } } },
        scales: { x: { ticks: { callback: (v) => format(v) } } },
      },
    });
  }

  // -- one refresh: every panel for the period, segmentation and language chosen --------------------
  async function refresh(opts) {
    const seq = ++state.seq;
    document.body.dataset.state = "loading";
    status(t("status.loading"));
    try {
      const seg = await api("/segments");
      if (seq !== state.seq) return;
      signedIn(true);
      const dims = Object.keys(seg.dimensions);
      fillDimensions(dims);
      if (!dims.length) { status(t("status.noDimensions")); document.body.dataset.state = "ready"; return; }
      if (!state.dim || !seg.dimensions[state.dim]) {
        const saved = load("localStorage", "loyaltyDimension");
        state.dim = saved && seg.dimensions[saved] ? saved : dims[0];
      }
      $("dimension").value = state.dim;
      if (!state.today || (opts && opts.today)) {  // the server's business day (its clock and time zone)
        const asOf = seg.as_of.slice(0, 10);
        const tr = await api("/reports/transitions?" + q({ dimension: dims[0], period: "total", from: addDays(asOf, -2) }));
        state.today = tr.to;
      }
      const kind = state.kind, dim = state.dim;
      const p = state.anchor ? periodOf(kind, state.anchor > state.today ? state.today : state.anchor)
                             : lastComplete(kind, state.today);
      state.anchor = addDays(p.to, -1) > state.today ? state.today : addDays(p.to, -1);
      const prev = prevPeriod(kind, p);
      let trendFrom = p;
      for (let i = 1; i < TREND[kind]; i++) trendFrom = prevPeriod(kind, trendFrom);
      const churn = churnOf(seg);
      const segs = seg.dimensions[dim].segments;
      if (state.segment && !(state.segment in segs)) state.segment = "";
      const [sizes, trend, revCur, tr, scen, clients] = await Promise.all([
        api("/reports/sizes?" + q({ dimension: dim, period: kind, from: kind === "day" ? addDays(p.from, -60) : null })),
        api("/reports/period?" + q({ from: trendFrom.from, to: p.to, period: kind, churn: churn && churn.param, limit: 100 })),
        state.attribution === "current"
          ? soft(api("/reports/period?" + q({ from: p.from, to: p.to, period: kind, attribution: "current" }))) : null,
        soft(api("/reports/transitions?" + q({ dimension: dim, period: "total", from: p.from, to: addDays(p.to, -1) }))),
        soft(api("/reports/scenarios?" + q({ by: state.by }))),
        soft(clientsRequest(p, dim)),
      ]);
      if (seq !== state.seq) return;
      state.currency = trend.currency === undefined ? null : trend.currency;
      state.data = { seg, sizes, trend, revCur, tr, scen, clients, p, prev, kind, dim, churn, trendFrom: trendFrom.from };
      render();
      status(t("status.updated", { time: new Date().toLocaleTimeString(locale()) }));
      document.body.dataset.state = "ready";
    } catch (err) {
      if (seq === state.seq) fail(err);
    }
  }

  function clientsRequest(p, dim) {
    return api("/reports/clients?" + q({ from: p.from, to: p.to, dimension: dim, segment: state.segment, limit: 10 }));
  }

  async function reload(part) {  // one panel's data again (scenarios, clients, revenue attribution)
    const d = state.data;
    if (!d) return;
    const seq = state.seq;
    document.body.dataset.state = "loading";
    try {
      if (part === "scenarios") d.scen = await soft(api("/reports/scenarios?" + q({ by: state.by })));
      if (part === "clients") d.clients = await soft(clientsRequest(d.p, d.dim));
      if (part === "revenue") {
        d.revCur = state.attribution === "current"
          ? await soft(api("/reports/period?" + q({ from: d.p.from, to: d.p.to, period: d.kind, attribution: "current" }))) : null;
      }
      if (seq !== state.seq) return;
      render();
      document.body.dataset.state = "ready";
    } catch (err) {
      fail(err);
    }
  }

  function fillDimensions(dims) {
    const select = $("dimension");
    select.innerHTML = "";
    for (const dim of dims) {
      const opt = document.createElement("option");
      opt.value = dim;
      opt.textContent = dimName(dim);
      opt.title = dim;
      opt.dataset.id = dim;
      select.appendChild(opt);
    }
    if (state.dim) select.value = state.dim;
  }

  function render() {
    const d = state.data;
    if (!d) return;
    const segs = d.seg.dimensions[d.dim].segments;
    const group = grouping(segs, d.sizes.segments || []);
    const sel = d.trend.periods.find((r) => r.from === d.p.from);
    document.body.dataset.period = d.p.from + "/" + d.p.to;
    fillDimensions(Object.keys(d.seg.dimensions));
    renderControls(d);
    renderKpis(d, sel);
    renderTrend(d);
    renderSizes(d, group);
    renderHistory(d, group);
    renderRevenue(d, group, sel);
    renderGrid(d);
    renderMatrix(d, group);
    renderScenarios(d);
    renderClients(d, group);
  }

  function renderControls(d) {
    $("period-kind").value = d.kind;
    const input = $("period-date");
    input.value = state.anchor;
    input.max = state.today;
    $("next-period").disabled = nextPeriod(d.kind, d.p).from > state.today;
    const open = d.p.to > state.today;
    $("period-label").textContent = fmtPeriod(d.kind, d.p) + (open ? " " + t("period.inProgress") : "");
  }

  function deltaHtml(cur, prev, lowerBetter, quiet) {  // quiet: nothing for no change
    if (cur === null || cur === undefined || prev === null || prev === undefined) return "";
    const a = Number(cur), b = Number(prev);
    if (a === b) return quiet ? "" : '<span class="delta">' + esc(fmtPct(0)) + "</span>";
    const good = lowerBetter ? a < b : a > b;
    const text = b === 0 ? t("delta.new") : nf({ style: "percent", maximumFractionDigits: 1, signDisplay: "exceptZero" }).format((a - b) / Math.abs(b));
    return '<span class="delta ' + (good ? "up" : "down") + '">' + (a > b ? "▲ " : "▼ ") + esc(text) + "</span>";
  }
  function kpiValue(key, v, card) {
    if (MONEY_KPIS.has(key)) return fmtMoney(v, card && key === "revenue" ? "whole" : undefined);
    if (key === "sales_per_client") return fmtNum(v, 2);
    return fmtInt(v);
  }

  function renderKpis(d, sel) {
    $("kpi-period").textContent = sel ? fmtPeriod(d.kind, d.p) + " " + t("period.vs", { range: fmtPeriod(d.kind, d.prev) }) : "";
    const box = $("kpis");
    if (!sel) { box.innerHTML = '<p class="muted">' + esc(t("noData")) + "</p>"; return; }
    box.dataset.from = sel.from;
    box.dataset.to = sel.to;
    box.innerHTML = KPIS.map((k) => {
      const v = sel[k], pv = sel.previous[k];
      const value = k === "churned" && !d.churn ? "—" : kpiValue(k, v, true);
      return '<div class="card" data-kpi="' + k + '" data-value="' + esc(v === null || v === undefined ? "" : v) +
        '" data-previous="' + esc(pv === null || pv === undefined ? "" : pv) + '" title="' + esc(t("kpi.help." + k)) + '">' +
        '<div class="card-label">' + esc(t("kpi." + k)) + "</div>" +
        '<div class="card-value">' + esc(value) + "</div>" +
        '<div class="card-prev">' + deltaHtml(v, pv, LOWER_IS_BETTER.has(k)) +
        esc(t("kpi.previous", { value: k === "churned" && !d.churn ? "—" : kpiValue(k, pv, true) })) + "</div></div>";
    }).join("");
    const into = d.churn && (d.churn.score ? t("kpi.rOne") : d.churn.ids.map((s) => segLabel(s)).join(", "));
    $("kpi-hint").textContent = d.churn ? t("kpi.churnHint", { segments: into, dimension: dimName(d.churn.dim) })
                                        : t("kpi.noChurn");
  }

  function renderTrend(d) {
    const rows = [...d.trend.periods].reverse();
    if (!rows.length) { $("trend").innerHTML = '<p class="muted">' + esc(t("noData")) + "</p>"; return; }
    const cols = KPIS.filter((k) => k !== "churned" || d.churn);
    let html = '<table id="trend-table"><thead><tr><th>' + esc(t("col.period")) + "</th>" +
      cols.map((k) => "<th>" + esc(t("kpi." + k)) + "</th>").join("") + "</tr></thead><tbody>";
    for (const r of rows) {
      html += '<tr data-from="' + esc(r.from) + '"' + (r.from === d.p.from ? ' class="selected"' : "") + "><td>" +
        '<button type="button" class="seg" data-pick-period="' + esc(addDays(r.to, -1)) + '">' +
        esc(fmtPeriod(d.kind, { from: r.from, to: r.to }, true)) + "</button></td>" +
        cols.map((k) => "<td>" + esc(kpiValue(k, r[k])) + "</td>").join("") + "</tr>";
    }
    $("trend").innerHTML = html + "</tbody></table>";
  }

  function pointIn(days, p) { return (days || []).find((x) => x.date >= p.from && x.date < p.to) || null; }

  function renderSizes(d, group) {
    $("sizes-dim").textContent = dimName(d.dim);
    const now = d.seg.dimensions[d.dim].segments;
    const total = d.seg.dimensions[d.dim].clients;
    const atEnd = pointIn(d.sizes.days, d.p), atPrev = pointIn(d.sizes.days, d.prev);
    const endSizes = atEnd ? atEnd.sizes : {}, prevSizes = atPrev ? atPrev.sizes : {};
    const nowK = sumBy(group, now), endK = sumBy(group, endSizes), prevK = sumBy(group, prevSizes);
    const inK = sumBy(group, atEnd ? atEnd.entries : {}), outK = sumBy(group, atEnd ? atEnd.exits : {});
    const keys = group.keys([nowK, endK, prevK, inK, outK].flatMap((o) => Object.keys(o)));
    const chartKeys = keys.filter((k) => nowK[k]);
    hbar("sizes-chart", group, chartKeys, chartKeys.map((k) => nowK[k]), t("chart.clients"), (v) => fmtInt(v));
    const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
    let html = '<table id="sizes-table"><thead><tr><th>' + esc(t("col.segment")) + "</th><th>" + esc(t("col.now")) +
      "</th><th>" + esc(t("col.share")) + "</th><th>" + esc(t("col.periodEnd")) + "</th><th>" + esc(t("col.change")) +
      "</th><th>" + esc(t("col.entered")) + "</th><th>" + esc(t("col.left")) + "</th></tr></thead><tbody>";
    const row = (key, label, n, end, before, ins, outs, cls) => {
      const change = end - before;
      return "<tr" + (cls ? ' class="' + cls + '"' : "") + (key !== null ? ' data-segment="' + esc(key === OTHERS ? "__others__" : key) + '"' : "") +
        "><td>" + label + '</td><td data-n="' + n + '">' + fmtInt(n) + "</td><td>" + esc(fmtPct(total ? n / total : null)) +
        "</td><td>" + fmtInt(end) + "</td><td>" + (change > 0 ? "+" : "") + esc(fmtInt(change)) + " " + deltaHtml(end, before, false, true) +
        "</td><td>" + fmtInt(ins) + "</td><td>" + fmtInt(outs) + "</td></tr>";
    };
    for (const k of keys) {
      const label = swatch(group, k) + (k === OTHERS ? esc(segLabel(k, group))
        : '<button type="button" class="seg" data-pick-segment="' + esc(k) + '" title="' +
          esc(t("sizes.pick", { segment: segLabel(k) })) + '">' + segHtml(k) + "</button>");
      html += row(k, label, nowK[k] || 0, endK[k] || 0, prevK[k] || 0, inK[k] || 0, outK[k] || 0, k === OTHERS ? "others" : "");
    }
    html += row(null, esc(t("total")), total, sum(endSizes), sum(prevSizes), sum(inK), sum(outK), "total");
    $("sizes").innerHTML = html + "</tbody></table>";
  }

  function pointLabel(kind, day) {
    if (kind === "month") return fmtDay(day, { month: "short", year: "numeric" });
    if (kind === "week") return fmtDay(periodOf("week", day).from, { day: "numeric", month: "short" });
    return fmtDay(day, { day: "numeric", month: "short" });
  }

  function renderHistory(d, group) {
    const days = d.sizes.days || [];
    const keys = group.keys(d.sizes.segments || []);
    const index = days.findIndex((x) => x.date >= d.p.from && x.date < d.p.to);
    chart("history-chart", {
      type: "line",
      data: {
        labels: days.map((x) => pointLabel(d.kind, x.date)),
        datasets: keys.map((k) => ({
          label: segLabel(k, group), key: k, data: days.map((x) => sumBy(group, x.sizes)[k] || 0),
          borderColor: group.color(k), backgroundColor: group.color(k),
          pointRadius: days.length > 40 ? 0 : 2, tension: 0.2, borderWidth: 2,
        })),
      },
      options: { responsive: true, maintainAspectRatio: false, animation: false,
                 interaction: { mode: "index", intersect: false },
                 plugins: { band: { index }, legend: { labels: { boxWidth: 12 } } },
                 scales: { y: { beginAtZero: true, ticks: { callback: (v) => fmtInt(v) } } } },
      plugins: [bandPlugin],
    });
    charts["history-chart"].$dates = days.map((x) => x.date);
  }

  function renderRevenue(d, group, sel) {
    for (const b of document.querySelectorAll("#attribution button")) b.setAttribute("aria-pressed", String(b.dataset.attribution === state.attribution));
    $("revenue-period").textContent = fmtPeriod(d.kind, d.p);
    let row = sel;
    if (state.attribution === "current") {
      row = d.revCur && !d.revCur.error ? d.revCur.periods.find((r) => r.from === d.p.from) : null;
      if (d.revCur && d.revCur.error) {
        $("revenue").innerHTML = '<p class="muted">' + esc(t("status.error", { message: d.revCur.error })) + "</p>";
        return;
      }
    }
    const now = row ? (row.revenue_by_segment[d.dim] || {}) : {};
    const before = row ? (row.previous.revenue_by_segment[d.dim] || {}) : {};
    const revK = sumBy(group, now, (v) => cents(v.revenue)), salesK = sumBy(group, now, (v) => v.sales);
    const prevK = sumBy(group, before, (v) => cents(v.revenue));
    const keys = group.keys([...Object.keys(now), ...Object.keys(before)]);
    const total = Object.values(revK).reduce((a, b) => a + b, 0);
    const totalPrev = Object.values(prevK).reduce((a, b) => a + b, 0);
    const totalSales = Object.values(salesK).reduce((a, b) => a + b, 0);
    const chartKeys = keys.filter((k) => revK[k]);
    hbar("revenue-chart", group, chartKeys, chartKeys.map((k) => revK[k] / 100), t("chart.revenue"), (v) => fmtMoney(v, "compact"), (v) => fmtMoney(v));
    if (!keys.length) { $("revenue").innerHTML = '<p class="muted">' + esc(t("revenue.none")) + "</p>"; return; }
    let html = '<table id="revenue-table"><thead><tr><th>' + esc(t("col.segment")) + "</th><th>" + esc(t("col.revenue")) +
      "</th><th>" + esc(t("col.share")) + "</th><th>" + esc(t("col.sales")) + "</th><th>" + esc(t("col.avgCheck")) +
      "</th><th>" + esc(t("col.previous")) + "</th><th>" + esc(t("col.change")) + "</th></tr></thead><tbody>";
    const line = (key, label, rev, sales, prev, cls) =>
      "<tr" + (cls ? ' class="' + cls + '"' : "") + (key !== null ? ' data-segment="' + esc(key === OTHERS ? "__others__" : key) + '"' : "") +
      "><td>" + label + '</td><td data-revenue="' + money(rev) + '">' + esc(fmtMoney(rev / 100)) + "</td><td>" +
      esc(fmtPct(total ? rev / total : null)) + "</td><td>" + fmtInt(sales) + "</td><td>" +
      esc(sales ? fmtMoney(rev / 100 / sales) : "—") + "</td><td>" + esc(fmtMoney(prev / 100)) + "</td><td>" +
      deltaHtml(rev, prev, false, true) + "</td></tr>";
    for (const k of keys) {
      html += line(k, swatch(group, k) + segHtml(k, group), revK[k] || 0, salesK[k] || 0, prevK[k] || 0, k === OTHERS ? "others" : "");
    }
    html += line(null, esc(t("total")), total, totalSales, totalPrev, "total");
    $("revenue").innerHTML = html + "</tbody></table>";
  }

  function renderGrid(d) {
    const dims = d.seg.dimensions;
    const scored = Object.keys(dims).filter((k) => {
      const ids = Object.keys(dims[k].segments);
      return ids.length > 0 && ids.every((s) => SCORE.test(s));
    });
    const section = $("grid-section");
    $("history-section").classList.toggle("wide", !scored.length);
    if (!scored.length) { section.hidden = true; return; }
    section.hidden = false;
    const dim = scored.includes(d.dim) ? d.dim : scored[0];
    $("grid-dim").textContent = dimName(dim);
    const cells = {};
    let max = 0, total = 0;
    for (const [s, n] of Object.entries(dims[dim].segments)) {
      const key = s[0] + s[1];
      cells[key] = (cells[key] || 0) + n;
      max = Math.max(max, cells[key]);
      total += n;
    }
    const colTotals = [0, 0, 0, 0, 0];
    let html = '<table id="grid-table" data-dimension="' + esc(dim) + '"><thead><tr><th>' + esc(t("grid.corner")) + "</th>";
    for (let f = 1; f <= 5; f++) {
      html += "<th>F" + f + (f === 1 ? "<small>" + esc(t("grid.rare")) + "</small>" : f === 5 ? "<small>" + esc(t("grid.frequent")) + "</small>" : "") + "</th>";
    }
    html += "<th>" + esc(t("total")) + "</th></tr></thead><tbody>";
    for (let r = 5; r >= 1; r--) {
      let rowTotal = 0;
      html += "<tr><th>R" + r + (r === 5 ? "<small>" + esc(t("grid.recent")) + "</small>" : r === 1 ? "<small>" + esc(t("grid.longAgo")) + "</small>" : "") + "</th>";
      for (let f = 1; f <= 5; f++) {
        const n = cells["" + r + f] || 0;
        rowTotal += n;
        colTotals[f - 1] += n;
        const alpha = max ? 0.06 + 0.84 * (n / max) : 0;
        const style = n ? ' style="background: rgba(36, 86, 184, ' + alpha.toFixed(3) + ");" + (alpha > 0.5 ? " color: #fff;" : "") + '"' : "";
        html += '<td class="cell' + (n ? "" : " zero") + '" data-r="' + r + '" data-f="' + f + '" data-n="' + n + '"' + style +
          ' title="' + esc(t("grid.cell", { r, f, n: fmtInt(n), share: fmtPct(total ? n / total : 0) })) + '">' + fmtInt(n) +
          (n ? "<small>" + esc(fmtPct(total ? n / total : 0)) + "</small>" : "") + "</td>";
      }
      html += "<td>" + fmtInt(rowTotal) + "</td></tr>";
    }
    html += '<tr class="total"><th>' + esc(t("total")) + "</th>" + colTotals.map((n) => "<td>" + fmtInt(n) + "</td>").join("") +
      "<td>" + fmtInt(total) + "</td></tr>";
    $("grid").innerHTML = html + "</tbody></table>";
  }

  function renderMatrix(d, group) {
    const out = $("matrix");
    if (!d.tr || d.tr.error) { out.innerHTML = '<p class="muted">' + esc(d.tr ? t("status.error", { message: d.tr.error }) : t("noData")) + "</p>"; return; }
    const m = {};
    const keyOf = (id) => (id === "" ? "" : group.of(id));
    for (const [from, row] of Object.entries(d.tr.total.matrix || {})) {
      for (const [to, n] of Object.entries(row)) {
        const a = keyOf(from), b = keyOf(to);
        m[a] = m[a] || {};
        m[a][b] = (m[a][b] || 0) + n;
      }
    }
    const froms = Object.keys(m);
    if (!froms.length) { out.innerHTML = '<p class="muted">' + esc(t("matrix.none")) + "</p>"; return; }
    const rowKeys = [...(froms.includes("") ? [""] : []), ...group.keys(froms.filter((k) => k !== ""))];
    const colKeys = group.keys(froms.flatMap((f) => Object.keys(m[f])));
    let html = '<table id="matrix-table"><thead><tr><th>' + esc(t("matrix.corner")) + "</th>" +
      colKeys.map((k) => "<th>" + segHtml(k, group) + "</th>").join("") + "</tr></thead><tbody>";
    for (const f of rowKeys) {
      html += "<tr><td>" + segHtml(f, group) + "</td>" + colKeys.map((k) => {
        const n = (m[f] && m[f][k]) || 0;
        return '<td class="' + (n ? "" : "zero") + '">' + fmtInt(n) + "</td>";
      }).join("") + "</tr>";
    }
    out.innerHTML = html + '</tbody></table><p class="hint">' + esc(t("matrix.changes", { n: fmtInt(d.tr.total.changes) })) + "</p>";
  }

  function renderScenarios(d) {
    for (const b of document.querySelectorAll("#scenarios-by button")) b.setAttribute("aria-pressed", String(b.dataset.by === state.by));
    const out = $("scenarios");
    if (!d.scen || d.scen.error) { out.innerHTML = '<p class="muted">' + esc(d.scen ? t("status.error", { message: d.scen.error }) : t("noData")) + "</p>"; return; }
    const ids = Object.keys(d.scen);
    if (!ids.length) { out.innerHTML = '<p class="muted">' + esc(t("scenarios.none")) + "</p>"; return; }
    const tot = { actions: 0, responses: 0, conversions: 0, revenue: 0 };
    let html = '<table id="scenarios-table"><thead><tr><th>' + esc(t(state.by === "campaign" ? "col.campaign" : "col.scenario")) +
      "</th><th>" + esc(t("col.sent")) + "</th><th>" + esc(t("col.responded")) + "</th><th>" + esc(t("col.converted")) +
      "</th><th>" + esc(t("col.conversionRate")) + "</th><th>" + esc(t("col.revenue")) + "</th></tr></thead><tbody>";
    for (const id of ids) {
      const r = d.scen[id];
      tot.actions += r.actions; tot.responses += r.responses; tot.conversions += r.conversions; tot.revenue += cents(r.revenue);
      html += '<tr data-scenario="' + esc(id) + '"><td>' + raw(id) + "</td><td>" + fmtInt(r.actions) + "</td><td>" + fmtInt(r.responses) +
        "</td><td>" + fmtInt(r.conversions) + "</td><td>" + esc(fmtPct(r.conversion_rate)) + '</td><td data-revenue="' + esc(r.revenue) + '">' +
        esc(fmtMoney(r.revenue)) + "</td></tr>";
    }
    html += '<tr class="total"><td>' + esc(t("total")) + "</td><td>" + fmtInt(tot.actions) + "</td><td>" + fmtInt(tot.responses) +
      "</td><td>" + fmtInt(tot.conversions) + "</td><td>" + esc(fmtPct(tot.actions ? tot.conversions / tot.actions : null)) +
      "</td><td>" + esc(fmtMoney(tot.revenue / 100)) + "</td></tr>";
    out.innerHTML = html + "</tbody></table>";
  }

  function renderClients(d, group) {
    const select = $("clients-segment");
    select.innerHTML = "";
    const all = document.createElement("option");
    all.value = "";
    all.textContent = t("clients.all");
    select.appendChild(all);
    for (const id of group.ids.filter((s) => s in d.seg.dimensions[d.dim].segments)) {
      const opt = document.createElement("option");
      opt.value = id;
      opt.textContent = segLabel(id);
      if (named("seg", id) === undefined) opt.setAttribute("translate", "no");
      select.appendChild(opt);
    }
    select.value = state.segment;
    const out = $("clients");
    const c = d.clients;
    if (!c || c.error) { out.innerHTML = '<p class="muted">' + esc(c ? t("status.error", { message: c.error }) : t("noData")) + "</p>"; return; }
    if (!c.rows.length) { out.innerHTML = '<p class="muted">' + esc(t("clients.none")) + "</p>"; return; }
    let html = '<table id="clients-table"><thead><tr><th>' + esc(t("col.client")) + "</th><th>" + esc(t("col.revenue")) +
      "</th><th>" + esc(t("col.visits")) + "</th><th>" + esc(t("col.segment")) + "</th><th>" + esc(t("col.since")) +
      "</th><th>" + esc(t("col.lastMonth")) + "</th></tr></thead><tbody>";
    for (const r of c.rows) {
      html += '<tr><td><button type="button" class="seg" data-lookup="' + esc(r.client_id) + '">' + raw(r.client_id) + "</button></td><td>" +
        esc(fmtMoney(r.revenue)) + "</td><td>" + fmtInt(r.visits) + "</td><td>" + (r.segment === null ? "—" : segHtml(r.segment)) +
        "</td><td>" + esc(r.since ? fmtDay(r.since.slice(0, 10), { dateStyle: "medium" }) : "—") + "</td><td>" +
        (r.last_month_segment ? segHtml(r.last_month_segment) : "—") + "</td></tr>";
    }
    out.innerHTML = html + "</tbody></table>" + (c.next ? '<p class="hint">' + esc(t("clients.more", { shown: c.rows.length })) + "</p>" : "");
  }

  // -- client lookup -------------------------------------------------------------------------------
  let lastLookup = null;
  function renderLookup() {
    const out = $("lookup-result");
    if (!lastLookup) return;
    delete out.dataset.hint;
    if (lastLookup.error) {
      out.className = "muted";
      out.textContent = lastLookup.error.status === 404 ? t("lookup.notFound", { id: lastLookup.id })
                                                        : t("status.error", { message: lastLookup.error.message });
      return;
    }
    const c = lastLookup.doc;
    let html = '<table id="lookup-table"><thead><tr><th>' + esc(t("col.dimension")) + "</th><th>" + esc(t("col.segment")) +
      "</th><th>" + esc(t("col.since")) + "</th><th>" + esc(t("col.before")) + "</th><th>" + esc(t("col.lastMonth")) +
      "</th></tr></thead><tbody>";
    for (const [dim, s] of Object.entries(c.segments)) {
      html += '<tr data-dimension="' + esc(dim) + '" data-segment="' + esc(s.segment) + '"><td>' + esc(dimName(dim)) +
        "</td><td><b>" + segHtml(s.segment) + "</b></td><td>" + esc(fmtInstant(s.since)) + "</td><td>" +
        (s.previous ? segHtml(s.previous) : "—") + "</td><td>" + (s.last_month ? segHtml(s.last_month) : "—") + "</td></tr>";
    }
    html += '</tbody></table><dl class="metrics">';
    for (const [k, v] of Object.entries(c.metrics)) {
      if (v === null || typeof v === "object") continue;
      let shown;
      if (typeof v === "boolean") shown = esc(t(v ? "yes" : "no"));
      else if (MONEY_METRIC.test(k) && isFinite(Number(v))) shown = esc(fmtMoney(v));
      else if (typeof v === "number") shown = esc(fmtNum(v, 2));
      else shown = raw(v);
      html += '<div data-metric="' + esc(k) + '"><dt>' + metricHtml(k) + "</dt><dd>" + shown + "</dd></div>";
    }
    out.className = "";
    out.innerHTML = html + '</dl><p class="hint">' + esc(t("lookup.metricsAt", { time: fmtInstant(c.metrics_at) })) + "</p>";
  }
  async function lookup(ev) {
    if (ev) ev.preventDefault();
    const id = $("lookup-input").value.trim();
    const out = $("lookup-result");
    if (!id) return;
    delete out.dataset.hint;
    out.className = "muted";
    out.textContent = t("lookup.looking");
    try {
      lastLookup = { id, doc: await api("/clients/" + encodeURIComponent(id)) };
    } catch (err) {
      if (err.status === 401) { fail(err); return; }
      lastLookup = { id, error: err };
    }
    renderLookup();
  }

  // -- events --------------------------------------------------------------------------------------
  function setLang(lang) {
    if (!DICT[lang]) return;
    state.lang = lang;
    save("localStorage", "loyaltyLang", lang);
    applyLabels();
    if (state.data) {
      render();
      status(t("status.updated", { time: new Date().toLocaleTimeString(locale()) }));
    } else if ($("status").className === "error") {
      status(t("status.unauthorized"), true);
    }
    renderLookup();
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    state.token = value;
    save("sessionStorage", "loyaltyToken", value);
    $("token").value = "";
    refresh();
  });
  $("sign-out").addEventListener("click", () => {
    state.token = "";
    state.data = null;
    save("sessionStorage", "loyaltyToken", null);
    for (const id of Object.keys(charts)) { charts[id].destroy(); delete charts[id]; }
    signedIn(false);
    status("");
    $("token").focus();
  });
  for (const b of document.querySelectorAll("#lang button")) b.addEventListener("click", () => setLang(b.dataset.lang));
  $("period-kind").addEventListener("change", () => { state.kind = $("period-kind").value; refresh(); });
  $("period-date").addEventListener("change", () => {
    const v = $("period-date").value;
    if (/^\d{4}-\d{2}-\d{2}$/.test(v)) { state.anchor = v; refresh(); }
  });
  $("prev-period").addEventListener("click", () => {
    if (!state.data) return;
    state.anchor = addDays(state.data.p.from, -1);
    refresh();
  });
  $("next-period").addEventListener("click", () => {
    if (!state.data) return;
    const n = nextPeriod(state.kind, state.data.p);
    state.anchor = addDays(n.to, -1) > state.today ? state.today : addDays(n.to, -1);
    refresh();
  });
  $("last-period").addEventListener("click", () => { state.anchor = null; refresh(); });
  $("dimension").addEventListener("change", () => {
    state.dim = $("dimension").value;
    state.segment = "";
    save("localStorage", "loyaltyDimension", state.dim);
    refresh();
  });
  $("refresh").addEventListener("click", () => refresh({ today: true }));
  for (const b of document.querySelectorAll("#attribution button")) {
    b.addEventListener("click", () => { state.attribution = b.dataset.attribution; reload("revenue"); });
  }
  for (const b of document.querySelectorAll("#scenarios-by button")) {
    b.addEventListener("click", () => { state.by = b.dataset.by; reload("scenarios"); });
  }
  $("clients-segment").addEventListener("change", () => { state.segment = $("clients-segment").value; reload("clients"); });
  document.addEventListener("click", (ev) => {
    const el = ev.target.closest("[data-pick-segment],[data-pick-period],[data-lookup]");
    if (!el) return;
    if (el.dataset.pickSegment !== undefined) {
      state.segment = el.dataset.pickSegment;
      reload("clients");
      $("clients-section").scrollIntoView({ behavior: "smooth", block: "start" });
    } else if (el.dataset.pickPeriod !== undefined) {
      state.anchor = el.dataset.pickPeriod;
      refresh();
    } else {
      $("lookup-input").value = el.dataset.lookup;
      lookup();
      $("lookup-section").scrollIntoView({ behavior: "smooth", block: "start" });
    }
  });
  $("lookup-form").addEventListener("submit", lookup);
  $("export-kpi").addEventListener("click", () => {
    const d = state.data;
    if (d) download("/reports/period?" + q({ from: d.trendFrom, to: d.p.to, period: d.kind, churn: d.churn && d.churn.param, format: "csv" }), "kpi.csv");
  });
  $("export-revenue").addEventListener("click", () => {
    const d = state.data;
    if (d) download("/reports/period?" + q({ from: d.p.from, to: d.p.to, period: d.kind, attribution: state.attribution, format: "csv", table: "segments" }), "revenue.csv");
  });
  $("export-clients").addEventListener("click", () => {
    const d = state.data;
    if (d) download("/reports/clients?" + q({ from: d.p.from, to: d.p.to, dimension: d.dim, segment: state.segment, format: "csv" }), "clients.csv");
  });

  // -- start ---------------------------------------------------------------------------------------
  const here = new URL(location.href);
  if (here.searchParams.has("token")) {  // an old link's ?token=: never used, removed from the address
    here.searchParams.delete("token");
    history.replaceState(null, "", here.pathname + (here.search ? here.search : "") + here.hash);
  }
  state.token = load("sessionStorage", "loyaltyToken") || "";
  const lang = load("localStorage", "loyaltyLang");
  state.lang = DICT[lang] ? lang : ((navigator.language || "").toLowerCase().startsWith("ru") ? "ru" : "en");
  applyLabels();
  signedIn(Boolean(state.token));
  refresh();
})();

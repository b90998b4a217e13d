"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a running
worker with simulated data (Kafka, Redis). Covers the sign-in (the token never in an address),
the period picker (KPIs equal ``GET /reports/period``), the segment tables, the R x F grid and
the top-N grouping (against replay), the exports (CSV equal to the API's JSON), both languages
(every label translated) and the client lookup. Screenshots: artifacts/dashboard-en.png and
artifacts/dashboard-ru.png (docs/images/ holds copies for docs/how-to/tour-the-dashboard.md)."""

from __future__ import annotations

import csv
import io
import re
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from rules import Engine, load_ruleset
from tests.integration.harness import ROOT, Worker, produce_lines, unique_env

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
AS_OF = "2026-06-02T00:00:00+00:00"  # a Tuesday: the last complete week, 25-31 May, is the data's last
RULES = ["boostfeel", "rfm"]
TOKEN = "dash-token-7f3a9c"
CHURN = "boostfeel:lost"  # the page's churn: the first segmentation with a "lost" segment
KPIS = ("revenue", "sales", "avg_check", "active", "new", "returning", "sales_per_client", "churned")
TOP_N = 8
LATIN_OK = {"RFM", "VIP", "ABC", "CSV", "API", "LOYALTY", "TOKEN", "Boostfeel", "Netix", "lost"}
BROWSER_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=en-GB",
                "--disable-background-networking", "--disable-extensions", "--no-first-run",
                "--disable-component-update", "--disable-sync", "--mute-audio"]


def _replay(lines: list[bytes]) -> dict[str, Any]:
    """Final segments, receipt facts and changes of replay over the same receipts."""
    facts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    rp = Replay(Engine([load_ruleset(r) for r in RULES]), datetime.fromisoformat(AS_OF), changes.append,
                lambda row: None, on_fact=facts.append)
    for n, line in enumerate(lines, 1):
        rp.receipt_line(line, n)
    rows = rp.finish()
    segments = {(r["client_id"], d): s for r in rows for d, s in r["segments"].items()}
    return {"facts": facts, "changes": changes, "segments": segments}


def _sizes(segments: dict[tuple[str, str], str], dim: str) -> dict[str, int]:
    return dict(Counter(s for (_, d), s in segments.items() if d == dim))


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return orjson.loads(resp.read())

    def period(self, start: str, end: str, period: str) -> list[dict[str, Any]]:
        return list(self.get("/reports/period", **{"from": start, "to": end, "period": period,
                                                   "churn": CHURN})["periods"])


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _shown(text: str) -> str:
    return re.sub(r"\D", "", text)


def _digits(kpi: str, value: Any) -> str:
    """The digits the page shows for an API value (revenue in whole units on its card)."""
    if value is None:
        return ""
    if kpi == "revenue":
        return str(Decimal(value).quantize(Decimal(1), ROUND_HALF_UP))
    if kpi == "sales_per_client":
        return _shown(str(Decimal(str(value)).quantize(Decimal("0.01"), ROUND_HALF_UP).normalize()))
    return _shown(str(value))


def _same(attr: str, value: Any) -> bool:
    if value is None:
        return attr == ""
    if isinstance(value, str):
        return attr == value
    return float(attr) == float(value)


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="chromium missing: run deploy/local/install-tools.sh")
def test_dashboard_in_chromium(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    lines = list(generate(SimConfig(clients=120, days=60, seed=4)))
    rp = _replay(lines)
    boostfeel, scores = _sizes(rp["segments"], "boostfeel"), _sizes(rp["segments"], "rfm_score")
    policy = tmp_path / "contact-policy.yaml"  # historic receipts: offers are not stale at the clock
    policy.write_text("max_age_hours: 0\n")
    env = unique_env(kafka_bootstrap, tmp_path / "w", LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF,
                     REDIS_URL=redis_url, LOYALTY_API_TOKEN=TOKEN, LOYALTY_SCENARIOS="all",
                     LOYALTY_CONTACT_POLICY=str(policy))
    worker = Worker(env, tmp_path / "w.log")
    produce_lines(worker.settings, lines)
    worker.start()
    base = f"http://127.0.0.1:{env['LOYALTY_WEB_PORT']}"
    api = Api(base)
    sales = sum(1 for f in rp["facts"] if f["type"] == "sale")
    lost = sum(1 for c in rp["changes"] if c["data"]["to"] == "lost")
    try:
        def projected() -> bool:
            dims = api.get("/segments")["dimensions"]
            if dims.get("boostfeel", {}).get("segments") != boostfeel or dims["rfm_score"]["segments"] != scores:
                return False
            months = api.period("2026-01-01", "2026-07-01", "month")
            return bool(sum(r["sales"] for r in months) == sales and sum(r["churned"] for r in months) == lost)

        _wait(projected, 90, "the projection of every change and receipt fact")
        seen: list[Any] = []

        def scenarios_settled() -> bool:
            seen.append(api.get("/reports/scenarios"))
            return len(seen) > 1 and bool(seen[-1]) and seen[-1] == seen[-2]

        _wait(scenarios_settled, 30, "the scenario results")
        print(f"projected after {time.monotonic() - started:.1f} s")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-GB")
                _tour(page, api, base, rp, boostfeel, scores, seen[-1])
            finally:
                browser.close()
    finally:
        worker.stop()
    print(f"dashboard test: {time.monotonic() - started:.1f} s")


def _tour(page: Any, api: Api, base: str, rp: dict[str, Any], boostfeel: dict[str, int],
          scores: dict[str, int], scenarios: dict[str, Any]) -> None:
    errors: list[str] = []
    requests: list[tuple[str, str | None]] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))

    def ready(period: str | None = None) -> None:
        cond = "document.body.dataset.state === 'ready'"
        if period:
            cond += f" && document.body.dataset.period === '{period}'"
        page.wait_for_function(cond, timeout=20_000)

    # -- signed out: an old link's ?token= is dropped from the address, unused ----------------------
    page.goto(f"{base}/dashboard?token=from-an-old-link")
    page.wait_for_function("document.getElementById('status').className === 'error'")
    assert "unauthorized" in page.inner_text("#status")
    assert "token" not in page.url and TOKEN not in page.url
    assert page.is_visible("#gate") and not page.is_visible("#kpis")
    # -- the token typed once: kept for the tab, sent in the header, never in an address ------------
    page.fill("#token", TOKEN)
    signed_in = len(requests)
    page.click("#token-save")
    ready("2026-05-25/2026-06-01")  # the default: the last complete week
    assert page.url == f"{base}/dashboard"
    assert page.evaluate("sessionStorage.getItem('loyaltyToken')") == TOKEN
    assert page.input_value("#token") == ""
    assert page.is_visible("#signed-in") and not page.is_visible("#gate")

    def kpis_equal(start: str, end: str, period: str) -> None:
        [row] = api.period(start, end, period)
        cards = dict(_rows(page, "#kpis .card", "r.dataset.kpi",
                           "[r.dataset.value, r.dataset.previous, r.querySelector('.card-value').textContent]"))
        assert set(cards) == set(KPIS)
        for k in KPIS:
            value, previous, text = cards[k]
            assert _same(value, row[k]) and _same(previous, row["previous"][k]), (period, start, k, cards[k], row[k])
            assert _shown(text) == _digits(k, row[k]), (k, text, row[k])
        assert row["sales"] > 0

    kpis_equal("2026-05-25", "2026-06-01", "week")
    assert page.input_value("#period-date") == "2026-05-31"
    assert "₽" in page.inner_text("#kpis [data-kpi=revenue] .card-value")  # RUB, formatted
    assert "Lost" in page.inner_text("#kpi-hint")
    # -- segment sizes now (boostfeel: six segments, no grouping) and the R x F grid ------------------
    assert dict(_rows(page, SIZES, "r.dataset.segment", SIZE)) == boostfeel
    grid = dict(_rows(page, "#grid-table td.cell", "r.dataset.r + r.dataset.f", "+r.dataset.n"))
    want_grid: Counter[str] = Counter()
    for seg, n in scores.items():
        want_grid[seg[:2]] += n
    assert grid == {f"{r}{f}": want_grid.get(f"{r}{f}", 0) for r in range(1, 6) for f in range(1, 6)}
    assert page.get_attribute("#grid-table", "data-dimension") == "rfm_score"
    assert sum(grid.values()) == 120
    # -- revenue by segment of the week, scenario results ------------------------------------------------
    [week] = api.period("2026-05-25", "2026-06-01", "week")
    revenue = dict(_rows(page, "#revenue-table tbody tr[data-segment]", "r.dataset.segment",
                         "r.querySelector('td[data-revenue]').dataset.revenue"))
    assert revenue == {s: v["revenue"] for s, v in week["revenue_by_segment"]["boostfeel"].items()}
    page.click("#attribution button[data-attribution='current']")  # each client's revenue to its segment now
    page.wait_for_function("document.querySelector('#attribution [aria-pressed=true]').dataset.attribution"
                           " === 'current' && document.body.dataset.state === 'ready'")
    [now] = api.get("/reports/period", **{"from": "2026-05-25", "to": "2026-06-01", "period": "week",
                                          "attribution": "current"})["periods"]
    revenue = dict(_rows(page, "#revenue-table tbody tr[data-segment]", "r.dataset.segment",
                         "r.querySelector('td[data-revenue]').dataset.revenue"))
    assert {s: v for s, v in revenue.items() if v != "0.00"} == {
        s: v["revenue"] for s, v in now["revenue_by_segment"]["boostfeel"].items()}
    page.click("#attribution button[data-attribution='purchase']")
    ready()
    table = dict(_rows(page, "#scenarios-table tbody tr[data-scenario]", "r.dataset.scenario",
                       "[...r.cells].slice(1, 4).map(c => +c.textContent.replace(/\\D/g, ''))"
                       ".concat([r.querySelector('td[data-revenue]').dataset.revenue])"))
    assert table == {k: [v["actions"], v["responses"], v["conversions"], v["revenue"]] for k, v in scenarios.items()}
    # -- the client lookup; the English screenshot -------------------------------------------------------
    client = "c-0000007"
    page.fill("#lookup-input", client)
    page.click("#lookup-button")
    page.wait_for_selector("#lookup-table")
    shown = dict(_rows(page, "#lookup-table tbody tr", "r.dataset.dimension", "r.dataset.segment"))
    assert shown == {d: s for (c, d), s in rp["segments"].items() if c == client}
    assert "lifetime_value" in page.inner_text("#lookup-result")
    _screenshot(page, "dashboard-en.png")
    # -- the period picker: previous week, then a month, a day picked in the calendar, a day ------------
    page.click("#prev-period")
    ready("2026-05-18/2026-05-25")
    kpis_equal("2026-05-18", "2026-05-25", "week")
    page.select_option("#period-kind", "month")
    ready("2026-05-01/2026-06-01")
    kpis_equal("2026-05-01", "2026-06-01", "month")
    page.fill("#period-date", "2026-04-15")
    ready("2026-04-01/2026-05-01")
    kpis_equal("2026-04-01", "2026-05-01", "month")
    page.select_option("#period-kind", "day")
    ready("2026-04-30/2026-05-01")
    kpis_equal("2026-04-30", "2026-05-01", "day")
    page.select_option("#period-kind", "week")
    ready("2026-04-27/2026-05-04")
    page.click("#last-period")
    ready("2026-05-25/2026-06-01")
    page.click("#next-period")  # this week, in progress: the last one can be picked
    ready("2026-06-01/2026-06-08")
    assert page.is_disabled("#next-period") and "in progress" in page.inner_text("#period-label")
    page.click("#last-period")
    ready("2026-05-25/2026-06-01")
    # -- exports: the CSV the browser saves equals the API's JSON ------------------------------------------
    kpi_csv, name = _download(page, "#export-kpi")
    assert name == "period-week-2026-04-06-2026-06-01.csv"  # the 8 weeks of the "period by period" table
    json_rows = api.period("2026-04-06", "2026-06-01", "week")
    assert [r["period"] for r in kpi_csv] == [r["period"] for r in json_rows]
    for got, want in zip(kpi_csv, json_rows, strict=True):
        assert {k: got[k] for k in KPIS} == {k: "" if want[k] is None else str(want[k]) for k in KPIS}
        assert got["previous_revenue"] == want["previous"]["revenue"]
    assert len(page.locator("#trend-table tbody tr").all()) == len(json_rows)
    page.click("#sizes-table button[data-pick-segment='vip']")
    page.wait_for_function("document.getElementById('clients-segment').value === 'vip'"
                           " && document.body.dataset.state === 'ready'")
    clients_csv, name = _download(page, "#export-clients")
    assert name == "clients-2026-05-25-2026-06-01-vip.csv"
    want_rows = api.get("/reports/clients", **{"from": "2026-05-25", "to": "2026-06-01", "dimension": "boostfeel",
                                               "segment": "vip", "limit": 1000})["rows"]
    assert clients_csv == [{k: "" if v is None else str(v) for k, v in r.items()} for r in want_rows]
    assert {r["client_id"] for r in clients_csv} == {c for (c, d), s in rp["segments"].items()
                                                     if d == "boostfeel" and s == "vip"}
    # -- a large segmentation: rfm_score's segments, the top 8 by size and the rest grouped --------------
    page.select_option("#dimension", "rfm_score")
    ready()
    page.wait_for_function("document.getElementById('sizes-dim').textContent === 'RFM score'")
    order = sorted(scores, key=lambda s: (-scores[s], s))
    assert len(order) > TOP_N + 1
    top = [[s, scores[s]] for s in order[:TOP_N]] + [["__others__", sum(scores[s] for s in order[TOP_N:])]]
    assert _rows(page, SIZES, "r.dataset.segment", SIZE) == top
    labels = page.evaluate("Chart.getChart('sizes-chart').data.labels")
    assert len(labels) == TOP_N + 1 and labels[-1] == f"Others ({len(order) - TOP_N})"
    assert len(page.evaluate("Chart.getChart('history-chart').data.datasets")) <= TOP_N + 1
    assert page.locator("#matrix-table thead th").count() <= TOP_N + 2
    # -- Russian: every label translated, same keys in both dictionaries ---------------------------------
    page.select_option("#dimension", "boostfeel")
    ready()
    keys = page.evaluate("[Object.keys(LOYALTY_I18N.en).sort(), Object.keys(LOYALTY_I18N.ru).sort()]")
    assert keys[0] == keys[1]
    assert page.evaluate("Object.values(LOYALTY_I18N.ru).every(v => typeof v === 'string' && v.trim() !== '')")
    page.click("#lang button[data-lang='ru']")
    page.wait_for_function("document.documentElement.lang === 'ru'")
    ready()
    assert page.inner_text("header h1") == "Программа лояльности"
    assert page.evaluate("localStorage.getItem('loyaltyLang')") == "ru"
    left = page.evaluate(_UNTRANSLATED)
    assert left["english"] == [], left["english"]
    assert sorted(set(left["latin"]) - LATIN_OK) == [], left["latin"]
    assert "₽" in page.inner_text("#kpis [data-kpi=revenue] .card-value")
    assert page.inner_text("#kpis [data-kpi=active] .card-label") == "Активные клиенты"
    assert page.evaluate("Chart.getChart('sizes-chart').data.datasets[0].label") == "Клиенты"
    kpis_equal("2026-05-25", "2026-06-01", "week")
    _screenshot(page, "dashboard-ru.png")
    page.fill("#lookup-input", "no-such-client")
    page.click("#lookup-button")
    page.wait_for_function("document.getElementById('lookup-result').textContent.includes('клиент не найден')")
    assert page.evaluate("[...window.__dashboardMissingLabels]") == []
    # -- the token went in headers only --------------------------------------------------------------------
    assert all(TOKEN not in url for url, _ in requests)
    calls = [(url, auth) for url, auth in requests[signed_in:] if url.startswith(base) and "/static/" not in url]
    assert len(calls) > 20 and all(auth == f"Bearer {TOKEN}" for _, auth in calls), calls
    assert errors == []


SIZES, SIZE = "#sizes-table tbody tr[data-segment]", "+r.querySelector('td[data-n]').dataset.n"


def _rows(page: Any, selector: str, key: str, value: str) -> list[list[Any]]:
    """[key, value] of each element (``r``) matching ``selector``, both JS expressions."""
    return list(page.evaluate(f"() => [...document.querySelectorAll({selector!r})].map(r => [{key}, {value}])"))


def _download(page: Any, button: str) -> tuple[list[dict[str, str]], str]:
    with page.expect_download() as info:
        page.click(button)
    download = info.value
    text = Path(download.path()).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text))), download.suggested_filename


def _screenshot(page: Any, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")  # the sticky period bar at the top of the picture
    page.wait_for_timeout(200)  # charts drawn
    out = ROOT / "artifacts" / name
    out.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 50_000


# Visible text left in English: text nodes, option labels and title/aria-label attributes equal to an
# English label that has a different Russian one; and Latin words outside data (translate="no").
_UNTRANSLATED = """() => {
  const en = LOYALTY_I18N.en, ru = LOYALTY_I18N.ru;
  const english = new Set(Object.keys(en).filter(k => k !== 'locale' && en[k] !== ru[k]).map(k => en[k]));
  const out = {english: [], latin: []};
  const check = (text, where) => {
    text = text.trim();
    if (!text) return;
    if (english.has(text)) out.english.push(where + ': ' + text);
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    if (!el || el.closest('script, style') || !el.checkVisibility()) continue;
    check(node.textContent, el.tagName);
    if (!el.closest('[translate=no]')) out.latin.push(...(node.textContent.match(/[A-Za-z]{2,}/g) || []));
  }
  for (const opt of document.querySelectorAll('option')) {
    check(opt.textContent, 'option');
    if (!opt.closest('[translate=no]')) out.latin.push(...(opt.textContent.match(/[A-Za-z]{2,}/g) || []));
  }
  for (const el of document.querySelectorAll('[title], [aria-label], [placeholder]')) {
    for (const a of ['title', 'aria-label', 'placeholder']) {
      const v = el.getAttribute(a);
      if (v && v !== el.dataset.id) check(v, a);  // data-id: a segment's id shown as its tooltip
    }
  }
  for (const id of ['sizes-chart', 'history-chart', 'revenue-chart']) {
    const c = Chart.getChart(id);
    for (const l of c.data.labels) check(String(l), id + ' label');
    for (const d of c.data.datasets) check(String(d.label), id + ' dataset');
  }
  check(document.title, "title");
  return out;
}"""

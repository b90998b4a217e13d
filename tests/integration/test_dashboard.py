"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a
running worker with data (Kafka, Redis). Screenshot: artifacts/dashboard.png."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from app.batch.simulate import SimConfig, generate
from app.projection.store import Projection, drop_generation, namespace
from tests.integration.harness import ROOT, Worker, produce_lines, replay, unique_env

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "rfm"]
TOKEN = "dash-token"
BROWSER_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-extensions", "--no-first-run",
                "--disable-component-update", "--disable-sync", "--mute-audio"]


async def _snapshot_written(url: str, app_id: str) -> bool:
    proj = Projection.from_url(url, namespace(app_id))
    try:
        return bool(await proj.snapshots("boostfeel", "2000-01-01", "2100-01-01"))
    finally:
        await proj.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="chromium missing: run deploy/local/install-tools.sh")
def test_dashboard_in_chromium(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    from playwright.sync_api import sync_playwright

    lines = list(generate(SimConfig(clients=120, days=60, seed=4)))
    expected = replay(lines, RULES, AS_OF)["segments"]
    env = unique_env(kafka_bootstrap, tmp_path / "w", LOYALTY_RULES=",".join(RULES),
                     LOYALTY_CLOCK=AS_OF, REDIS_URL=redis_url, LOYALTY_API_TOKEN=TOKEN)
    worker = Worker(env, tmp_path / "w.log")
    produce_lines(worker.settings, lines)
    worker.start()
    base = f"http://127.0.0.1:{env['LOYALTY_WEB_PORT']}"
    sizes = dict(Counter(s for (_, d), s in expected.items() if d == "boostfeel"))
    client_id, dim_segments = "c-0000007", {d: s for (c, d), s in expected.items() if c == "c-0000007"}
    try:
        deadline = time.monotonic() + 60  # projection complete and one daily snapshot written
        while not asyncio.run(_snapshot_written(redis_url, env["LOYALTY_APP_ID"])):
            assert time.monotonic() < deadline, "no snapshot"
            time.sleep(1.0)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                # without the token: the page says so
                page.goto(f"{base}/dashboard")
                page.wait_for_function("document.getElementById('status').className === 'error'")
                assert "unauthorized" in page.inner_text("#status")
                # with it: charts and the matrix are drawn from the API
                deadline = time.monotonic() + 60
                while True:
                    page.goto(f"{base}/dashboard?token={TOKEN}")
                    page.wait_for_selector("body[data-loaded='1']", timeout=20_000)
                    drawn = page.evaluate("""() => {
                        const c = Chart.getChart('sizes-chart');
                        return Object.fromEntries(c.data.labels.map((l, i) => [l, c.data.datasets[0].data[i]]));
                    }""")
                    if drawn == sizes or time.monotonic() > deadline:
                        break
                    time.sleep(1.0)
                assert drawn == sizes
                assert page.evaluate("Chart.getChart('revenue-chart').data.labels.length") > 0
                # sizes over event time: every month from the first receipt's to the clock's
                months = sorted({e["time"][:7] for e in replay(lines, RULES, AS_OF)["events"]
                                 if e["data"]["dimension"] == "boostfeel"})
                assert page.evaluate("Chart.getChart('history-chart').data.labels") == months
                assert page.locator("#dynamics-table tbody tr").count() >= len(set(sizes))
                assert page.locator("#matrix-table tbody tr").count() > 1
                # the client lookup
                page.fill("#lookup-input", client_id)
                page.click("#lookup-button")
                page.wait_for_selector("#lookup-table")
                rows = page.locator("#lookup-table tbody tr").all_inner_texts()
                shown = {r.split("\t")[0]: r.split("\t")[1] for r in rows}
                assert shown == dim_segments
                assert "lifetime_value" in page.inner_text("#lookup-result")
                out = ROOT / "artifacts" / "dashboard.png"
                out.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
                assert out.stat().st_size > 10_000
                page.fill("#lookup-input", "no-such-client")
                page.click("#lookup-button")
                page.wait_for_function(
                    "document.getElementById('lookup-result').textContent.includes('no such client')")
                assert errors == []
            finally:
                browser.close()
    finally:
        worker.stop()
        asyncio.run(_drop(redis_url, env["LOYALTY_APP_ID"]))


async def _drop(url: str, app_id: str) -> None:
    proj = Projection.from_url(url, namespace(app_id))
    try:
        await drop_generation(proj.redis, proj.ns + ":")
    finally:
        await proj.close()

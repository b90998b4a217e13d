"""Operations against real processes: a stalled partition is detected and reported, the
worker exits for a restart when asked to, and a real Prometheus server scrapes a worker."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest

from app.batch.simulate import SimConfig, generate
from tests.integration.harness import Worker, free_port, produce_lines, unique_env

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"


def _metrics(worker: Worker) -> str:
    url = f"http://127.0.0.1:{worker.env['LOYALTY_WEB_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()) and (labels or head == name):
            return float(value)
    return None


def test_stalled_partition_is_reported_then_worker_exits(tmp_path: Path, kafka_bootstrap: str) -> None:
    lines = list(generate(SimConfig(clients=200, days=30, seed=4)))
    env = unique_env(kafka_bootstrap, tmp_path / "w", LOYALTY_CLOCK=AS_OF, LOYALTY_STALL_TIMEOUT="4",
                     LOYALTY_FAULT_STALL_PARTITION="0")
    worker = Worker(env, tmp_path / "w.log")
    settings = worker.settings
    produce_lines(settings, lines)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        stalled = ready = None
        while time.monotonic() < deadline:
            text = _metrics(worker)
            stalled = _sample(text, "loyalty_partition_stalled", topic=settings.topic_receipts, partition="0")
            ready = _sample(text, "loyalty_ready")
            if stalled == 1.0 and ready == 0.0:
                break
            time.sleep(1)
        assert stalled == 1.0, "the blocked partition was not reported stalled"
        assert ready == 0.0
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{env['LOYALTY_WEB_PORT']}/ready", timeout=5)
            ready_status = 200
        except urllib.error.HTTPError as exc:
            ready_status = exc.code
        assert ready_status == 503
        lag = _sample(text, "loyalty_consumer_lag", topic=settings.topic_receipts, partition="0")
        assert lag is not None and lag > 0
        # the router is one actor, so every input partition waits behind partition 0; the
        # internal topic has no lag (nothing reaches it) and is not reported stalled
        internal = _sample(text, "loyalty_partition_stalled", topic=settings.topic_client_events, partition="0")
        assert internal in (None, 0.0)
    finally:
        worker.stop()
    # with LOYALTY_STALL_ACTION=exit the worker leaves for its supervisor to restart it
    env2 = dict(env, LOYALTY_STALL_ACTION="exit", LOYALTY_WEB_PORT=str(free_port()))
    worker2 = Worker(env2, tmp_path / "w2.log")
    worker2.start()
    assert worker2.proc is not None
    code = worker2.proc.wait(timeout=90)
    assert code == 70


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="prometheus not installed (deploy/local/install-tools.sh installs it)")
def test_real_prometheus_scrapes_a_worker(tmp_path: Path, kafka_bootstrap: str) -> None:
    lines = list(generate(SimConfig(clients=100, days=30, seed=8)))
    worker = Worker(unique_env(kafka_bootstrap, tmp_path / "w", LOYALTY_CLOCK=AS_OF), tmp_path / "w.log")
    produce_lines(worker.settings, lines)
    worker.start()
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: loyalty\n    static_configs: [{{targets: ['127.0.0.1:{worker.env['LOYALTY_WEB_PORT']}']}}]\n"
    )
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = urllib.parse.quote('sum(loyalty_receipts_total{outcome="applied"})')
        deadline = time.monotonic() + 60
        value = 0.0
        while time.monotonic() < deadline and value <= 0:
            time.sleep(2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}",
                                            timeout=5) as resp:
                    result = orjson.loads(resp.read())["data"]["result"]
            except OSError:
                continue
            value = float(result[0]["value"][1]) if result else 0.0
        assert value > 0, "Prometheus never saw loyalty_receipts_total"
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=5) as resp:
            targets = orjson.loads(resp.read())["data"]["activeTargets"]
        assert targets and targets[0]["health"] == "up"
    finally:
        prom.terminate()
        prom.wait(30)
        worker.stop()

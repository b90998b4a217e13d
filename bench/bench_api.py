"""Latency of the POS lookup, GET /clients/{client_id}, with N requests always in flight.

By default (``make bench-api``) the script is self-contained: it fills a fresh projection
namespace in the local Redis from a replay of simulated receipts (``--clients``), starts
``--processes`` lookup servers (``loyalty lookup``, app.lookup.server) sharing one port, warms
them up, then drives them with ``wrk`` (a C load generator: one thread, ``--connections``
keep-alive connections, each sending its next request when the previous answer arrives,
client ids drawn at random). Prints requests/s and the p50/p90/p99 latency wrk measured,
then stops the servers and drops the namespace. Exit 1 if any request failed.
``--writes N``: a second process writes N segment changes per second of random clients
meanwhile (what the projector does while POS terminals look clients up); it starts before
the warm-up so its start-up is not measured.

``--url``/``--token`` measure a server that is already running instead (a lookup server or
a worker's API); client ids then come from the API's member lists or ``--ids``. Without
``wrk`` on the PATH (``deploy/local/install-tools.sh --wrk-only``) an aiohttp client loop
is used; it is slower than the servers it measures, so its figures are the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
AS_OF = "2026-06-15T00:00:00+00:00"
TOKEN = "bench-token"


def redis_url() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    out = subprocess.run([str(ROOT / "deploy/local/redis.sh"), "start"], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


async def fill(url: str, app_id: str, clients: int) -> list[str]:
    """A projection of ``clients`` simulated clients (90 days of receipts up to AS_OF)."""
    from agents.projector import state_updates
    from app.batch.replay import Replay
    from app.batch.simulate import SimConfig, generate
    from app.projection.store import Projection, Update, namespace
    from app.wire import codecs
    from rules import Engine, load_ruleset
    from rules.record.state import dumps as dump_state

    engine = Engine([load_ruleset(r) for r in ("boostfeel", "rfm")])
    events: list[dict[str, Any]] = []
    rp = Replay(engine, datetime.fromisoformat(AS_OF), events.append, lambda _: None)
    for n, line in enumerate(generate(SimConfig(clients=clients, days=90, seed=3)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    proj = Projection.from_url(url, namespace(app_id))
    updates = [Update.from_event(e) for e in events]
    updates += [u for cid, st in rp.states.items() for u in state_updates(
        engine, cid, codecs.table_value(engine.next_due(st), dump_state(st)))]
    for i in range(0, len(updates), 2000):
        await proj.apply(updates[i:i + 2000])
    await proj.close()
    return sorted(rp.states)


async def drop(url: str, app_id: str) -> None:
    from app.projection.store import Projection, drop_generation, namespace

    proj = Projection.from_url(url, namespace(app_id))
    await drop_generation(proj.redis, namespace(app_id) + ":")
    await proj.close()


def writer(url: str, app_id: str, ids: list[str], rate: float, stop: Any, done: Any) -> None:
    """Segment changes of random clients at ``rate`` per second (run in a child process):
    what the projector writes while POS terminals look clients up."""
    from app.projection.store import Projection, Update, namespace

    async def run() -> None:
        proj = Projection.from_url(url, namespace(app_id))
        rng = random.Random(2)
        at = int(datetime.fromisoformat(AS_OF).timestamp())
        tick, n = 0.05, 0
        start = time.perf_counter()
        while not stop.is_set():
            due = int((time.perf_counter() - start) * rate) - n
            if due > 0:
                at += 1
                batch = [Update(cid, "boostfeel", rng.choice(("vip", "loyal", "at_risk")), "",
                                at, rule="boostfeel.vip") for cid in rng.sample(ids, min(due, len(ids)))]
                await proj.apply(batch)
                n += len(batch)
                done.value = n
            await asyncio.sleep(tick)
        await proj.close()

    asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_servers(args: argparse.Namespace, url: str, app_id: str, port: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "REDIS_URL": url, "LOYALTY_REDIS_URL": url, "LOYALTY_APP_ID": app_id,
           "LOYALTY_API_TOKEN": TOKEN, "LOYALTY_CLOCK": AS_OF,
           "LOYALTY_LOOKUP_CACHE": str(args.cache), "LOYALTY_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "app", "lookup", "--port", str(port)]
    if args.processes > 1:
        cmd.append("--reuse-port")
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT) for _ in range(args.processes)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(0.5 * args.processes)  # let every process bind
                return procs
        except OSError:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
    for p in procs:
        p.kill()
    raise SystemExit("the lookup server did not start")


def wrk(url: str, token: str, ids: list[str], connections: int, seconds: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("local ids = {" + ",".join(orjson.dumps(i).decode() for i in ids) + "}\n")
        f.write("math.randomseed(1)\n")
        if token:
            f.write(f'wrk.headers["Authorization"] = {orjson.dumps("Bearer " + token).decode()}\n')
        f.write('request = function()\n'
                '  return wrk.format("GET", "/clients/" .. ids[math.random(#ids)])\nend\n')
        script = f.name
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                              "--latency", "-s", script, url],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(script)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise SystemExit(f"cannot read p{label} from wrk:\n{out}")
        return round(float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]], 2)

    total = re.search(r"(\d+) requests in ([\d.]+)s", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    assert total is not None, out
    return {"tool": "wrk", "requests": int(total[1]), "seconds": float(total[2]),
            "requests_per_second": round(int(total[1]) / float(total[2])),
            "p50_ms": ms("50"), "p90_ms": ms("90"), "p99_ms": ms("99"),
            "errors": (int(non2xx[1]) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)}


async def python_loop(url: str, token: str, ids: list[str], connections: int,
                      seconds: float) -> dict[str, Any]:
    """The fallback load generator: aiohttp, closed loop (client-bound)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(limit=connections)
    lat: list[float] = []
    errors = 0
    rng = random.Random(1)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        end = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    async with session.get(f"{url}/clients/{ids[rng.randrange(len(ids))]}") as r:
                        await r.read()
                        errors += r.status != 200
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    lat.sort()

    def q(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)

    return {"tool": "python-aiohttp", "requests": len(lat), "seconds": round(elapsed, 2),
            "requests_per_second": round(len(lat) / elapsed), "p50_ms": q(0.5),
            "p90_ms": q(0.9), "p99_ms": q(0.99), "errors": errors}


async def member_ids(url: str, token: str, want: int = 5000) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(f"{url}/segments") as resp:
            resp.raise_for_status()
            dim, info = next(iter((await resp.json())["dimensions"].items()))
        ids: list[str] = []
        for seg in info["segments"]:
            cursor: str | None = "0"
            while cursor is not None and len(ids) < want:
                async with s.get(f"{url}/segments/{dim}/{seg}/members",
                                 params={"cursor": cursor, "limit": "1000"}) as resp:
                    page = await resp.json()
                ids += page["members"]
                cursor = page["next_cursor"]
    return ids


def lookup_metrics(url: str) -> dict[str, Any]:
    """Answers from memory / all answers of the lookup server (one process: its own)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    hits = re.search(r"^loyalty_lookup_memory_hits_total ([\d.e+]+)", text, re.M)
    total = sum(float(n) for n in re.findall(r"^loyalty_lookup_requests_total\{[^}]*\} ([\d.e+]+)",
                                              text, re.M))
    live = re.search(r"^loyalty_lookup_invalidation_live ([\d.]+)", text, re.M)
    buckets = [(float(le), float(n)) for le, n in re.findall(
        r'^loyalty_lookup_seconds_bucket\{le="([\d.]+)"\} ([\d.e+]+)', text, re.M)]
    p99 = next((le for le, n in buckets if total and n >= 0.99 * total), None)
    return {"memory_hit_share": round(float(hits[1]) / total, 3) if hits and total else None,
            "invalidation_live": bool(live and float(live[1])),
            "server_p99_le_ms": p99 * 1000 if p99 is not None else None}


def load(url: str, token: str, ids: list[str], args: argparse.Namespace,
         seconds: float) -> dict[str, Any]:
    if shutil.which("wrk") and not args.python_client:
        return wrk(url, token, ids, args.connections, seconds)
    return asyncio.run(python_loop(url, token, ids, args.connections, seconds))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=5000, help="simulated clients to project")
    p.add_argument("--connections", type=int, default=200, help="requests in flight")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    p.add_argument("--processes", type=int, default=1, help="lookup server processes")
    p.add_argument("--cache", type=int, default=100_000, help="LOYALTY_LOOKUP_CACHE (0: off)")
    p.add_argument("--url", help="measure this running server instead (no fill, no start)")
    p.add_argument("--token", default=os.environ.get("LOYALTY_API_TOKEN", ""))
    p.add_argument("--ids", help="comma-separated client ids (with --url; default: members)")
    p.add_argument("--python-client", action="store_true", help="aiohttp loop, not wrk")
    p.add_argument("--writes", type=float, default=0.0,
                   help="segment changes per second written meanwhile (invalidating the cache)")
    args = p.parse_args()
    if args.writes and args.url:
        p.error("--writes needs the self-contained mode (no --url)")
    procs: list[subprocess.Popen[bytes]] = []
    rurl = app_id = ""
    try:
        if args.url:
            url, token = args.url.rstrip("/"), args.token
            ids = args.ids.split(",") if args.ids else asyncio.run(member_ids(url, token))
        else:
            rurl, app_id, token = redis_url(), f"bench-api-{uuid.uuid4().hex[:8]}", TOKEN
            t0 = time.perf_counter()
            ids = asyncio.run(fill(rurl, app_id, args.clients))
            print(f"projected {len(ids)} clients in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            port = free_port()
            procs = start_servers(args, rurl, app_id, port)
            url = f"http://127.0.0.1:{port}"
        if args.writes:  # started before the warm-up: its start-up is not measured
            ctx = multiprocessing.get_context("spawn")
            stop, written = ctx.Event(), ctx.Value("l", 0)
            wproc = ctx.Process(target=writer, args=(rurl, app_id, ids, args.writes, stop, written))
            wproc.start()
            while written.value == 0 and wproc.is_alive():
                time.sleep(0.1)
        if args.warmup > 0:
            load(url, token, ids, args, args.warmup)
        before = written.value if args.writes else 0
        result = load(url, token, ids, args, args.duration)
        if procs:
            result.update(lookup_metrics(url))
        if args.writes:
            result["writes_per_second"] = round((written.value - before) / result["seconds"])
            stop.set()
            wproc.join(30)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        if app_id:
            asyncio.run(drop(rurl, app_id))
    result = {"endpoint": "GET /clients/{client_id}", "connections": args.connections,
              "server": args.url or f"loyalty lookup x{args.processes}, cache {args.cache}",
              "clients": len(ids), **result}
    print(orjson.dumps(result).decode())
    print(f"GET /clients/{{id}}, {args.connections} in flight ({result['tool']}): "
          f"{result['requests_per_second']} req/s, p50 {result['p50_ms']} ms, "
          f"p90 {result['p90_ms']} ms, p99 {result['p99_ms']} ms, {result['errors']} errors"
          + (f", {result['memory_hit_share']:.1%} from memory" if result.get("memory_hit_share")
             is not None else "")
          + (f", {result['writes_per_second']} writes/s meanwhile" if args.writes else ""),
          file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""``loyalty period-report`` and ``loyalty client-report``: the reports of ``GET /reports/period``
and ``GET /reports/clients`` (:mod:`app.serving.reports`) from the Redis projection (settings
from the environment; "now", for the current and last month's segments, is ``LOYALTY_CLOCK``),
every row of the range as JSON Lines or as the API's CSV (``--format csv``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from typing import IO, Any

import orjson

from app.projection import period_clients as pc
from app.projection import periods as pr
from app.projection.store import Projection
from app.serving import reports as rp
from app.settings import Settings


def day(text: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a date YYYY-MM-DD, got {text!r}") from None


def _span(args: argparse.Namespace) -> tuple[date, date]:
    if not args.start < args.end or (args.end - args.start).days > rp.MAX_DAYS:
        raise SystemExit(f"loyalty {args.command}: --to: after --from, at most {rp.MAX_DAYS} days")
    return args.start, args.end


async def _with_projection(settings: Settings, work: Callable[[Projection], Awaitable[None]]) -> None:
    from app.projection.connect import projection_of, wait_for_redis

    await wait_for_redis(settings.redis_url, settings.connect_timeout)
    proj = projection_of(settings)
    try:
        await work(proj)
    finally:
        await proj.close()


def _write(out: IO[bytes], csv: bool, row: dict[str, Any], line: str) -> None:
    out.write(line.encode() if csv else orjson.dumps(row) + b"\n")


def cmd_period_report(args: argparse.Namespace) -> int:
    start, end = _span(args)
    churn = None
    if args.churn:
        dim, _, segs = args.churn.partition(":")
        if not dim or not segs:
            raise SystemExit("loyalty period-report: --churn: dimension:segment[,segment...]")
        churn = (dim, tuple(s for s in segs.split(",") if s))
    csv, out = args.format == "csv", sys.stdout.buffer
    if csv:
        out.write(f"{rp.KPI_CSV if args.table == 'kpi' else rp.SEGMENT_CSV}\r\n".encode())

    async def work(proj: Projection) -> None:
        async for row in pr.iter_report(proj.redis, await proj.prefix_now(), start, end, args.period,
                                        proj.days.cal, churn, args.attribution):  # a period at a time
            if args.table == "kpi":
                _write(out, csv, row, rp.kpi_line(row))
            else:
                for seg in rp.segment_rows(row):
                    _write(out, csv, seg, rp.segment_line(seg))
            out.flush()

    asyncio.run(_with_projection(Settings.from_env(), work))
    return 0


def cmd_client_report(args: argparse.Namespace) -> int:
    start, end = _span(args)
    settings = Settings.from_env()
    csv, out = args.format == "csv", sys.stdout.buffer

    async def work(proj: Projection) -> None:
        dims = await proj.dimensions()
        if args.dimension not in dims:
            raise SystemExit(f"loyalty client-report: --dimension: no dimension {args.dimension!r} in the "
                             f"projection (known: {', '.join(dims) or 'none'})")
        now = int(settings.clock_fn()().timestamp())
        last_month = rp.last_month_of(proj.days, now)
        if csv:
            out.write(f"{rp.CLIENT_CSV}\r\n".encode())
        async for chunk in pc.iter_clients(proj.redis, await proj.prefix_now(), pr.day_labels((start, end)),
                                           args.dimension, args.segment or None):
            for row in rp.client_rows(chunk, args.dimension, last_month):
                _write(out, csv, row, rp.client_line(row))
            out.flush()

    asyncio.run(_with_projection(settings, work))
    return 0


def register(sub: Any) -> None:
    fmt = {"choices": ("jsonl", "csv"), "default": "jsonl",
           "help": "jsonl (one JSON object per line) or csv (the API's CSV, with a header row)"}
    r = sub.add_parser("period-report", help="revenue by segment and KPIs per day, week or month, with the "
                       "previous period beside each (from the Redis projection; GET /reports/period)")
    r.add_argument("--from", dest="start", type=day, required=True, help="first day, YYYY-MM-DD")
    r.add_argument("--to", dest="end", type=day, required=True, help="the day after the last, YYYY-MM-DD")
    r.add_argument("--period", choices=pr.PERIODS, default="week", help="day, week (from Monday) or month")
    r.add_argument("--churn", help="dimension:segment[,segment]: count changes into them as churned")
    r.add_argument("--attribution", choices=pr.ATTRIBUTIONS, default="purchase",
                   help="revenue by segment: purchase (each receipt to its client's segment right after it) "
                   "or current (each client's revenue to the segment it holds now)")
    r.add_argument("--format", **fmt)
    r.add_argument("--table", choices=("kpi", "segments"), default="kpi",
                   help="kpi: one row per period (jsonl: the API's period objects); segments: one row per "
                   "period, dimension and segment")
    r.set_defaults(fn=cmd_period_report, command="period-report")
    c = sub.add_parser("client-report", help="per client: revenue and visits in a period, current segment, "
                       "since when, last month's segment (from the Redis projection; GET /reports/clients)")
    c.add_argument("--from", dest="start", type=day, required=True, help="first day, YYYY-MM-DD")
    c.add_argument("--to", dest="end", type=day, required=True, help="the day after the last, YYYY-MM-DD")
    c.add_argument("--dimension", required=True, help="the dimension of segment, since and last month's segment")
    c.add_argument("--segment", help="every current member of this segment (with no purchase: revenue 0), "
                   "instead of the clients with a receipt in the period")
    c.add_argument("--format", **fmt)
    c.set_defaults(fn=cmd_client_report, command="client-report")

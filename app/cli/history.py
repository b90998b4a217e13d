"""``loyalty history was|entered|stays|cohorts``: the membership-history questions of
``GET /history/*`` from the Redis projection (settings from the environment), as JSON Lines
(one client per line; one object for ``stays``, one cohort per line) or CSV (``--csv``: the
API's CSV)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any

import orjson

from app.projection import history_queries as q
from app.projection import history_reads as reads
from app.projection.store import Projection
from app.serving.history import WAS_CSV, cell, cohort_csv, stays_csv, was_lines
from app.settings import Settings
from rules.calendar import iso


def _set(raw: str) -> frozenset[str]:
    return frozenset(s for s in raw.split(",") if s)


async def _with_projection(settings: Settings, args: argparse.Namespace,
                           work: Callable[[Projection], Awaitable[int]]) -> int:
    from app.projection.connect import projection_of, wait_for_redis

    await wait_for_redis(settings.redis_url, settings.connect_timeout)
    proj = projection_of(settings)
    try:
        dims = await proj.dimensions()
        for name in ("dimension", "now_dimension"):  # checked against the projection
            dim = getattr(args, name, None)
            if dim and dim not in dims:
                raise SystemExit(f"loyalty history: --{name.replace('_', '-')}: no dimension {dim!r} in the "
                                 f"projection (known: {', '.join(dims) or 'none'})")
        return await work(proj)
    finally:
        await proj.close()


def _window(args: argparse.Namespace, proj: Projection, required: bool = True) -> tuple[int | None, int | None]:
    out: list[int | None] = []
    for name in ("from_", "to"):
        raw = getattr(args, name)
        if not raw:
            if required:
                raise SystemExit(f"loyalty history {args.history_command}: --{name.rstrip('_')} is required")
            out.append(None)
            continue
        try:
            out.append(q.instant(raw, proj.days.cal))
        except ValueError:
            raise SystemExit(f"loyalty history: --{name.rstrip('_')}: expected YYYY-MM-DD or an RFC 3339 "
                             f"instant with an offset, got {raw!r}") from None
    if out[0] is not None and out[1] is not None and out[0] >= out[1]:
        raise SystemExit("loyalty history: --to must be after --from")
    return out[0], out[1]


def cmd_history(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    out: IO[bytes] = sys.stdout.buffer
    segs = _set(getattr(args, "segment", "") or "")
    now = int(settings.clock_fn()().timestamp())

    async def was(proj: Projection) -> int:
        start, end = _window(args, proj)
        assert start is not None and end is not None
        if args.csv:
            out.write(f"{WAS_CSV}\r\n".encode())
        async for row in reads.iter_was(proj, args.dimension, segs, start, end, args.now_dimension, _set(args.now)):
            out.write("".join(was_lines(row)).encode() if args.csv else orjson.dumps(row) + b"\n")
        return 0

    async def entered(proj: Projection) -> int:
        start, end = _window(args, proj)
        assert start is not None and end is not None
        if args.csv:
            out.write(b"client_id,entered\r\n")
        async for row in reads.iter_entered(proj, args.dimension, segs, start, end):
            out.write("".join(f"{cell(row['client_id'])},{t}\r\n" for t in row["entered"]).encode()
                      if args.csv else orjson.dumps(row) + b"\n")
        return 0

    async def stays(proj: Projection) -> int:
        start, end = _window(args, proj, required=False)
        body: dict[str, Any] = {"dimension": args.dimension, "segments": sorted(segs), "as_of": iso(now),
                                **await reads.stays(proj, args.dimension, segs, now, start, end)}
        out.write(stays_csv(body).encode() if args.csv else orjson.dumps(body) + b"\n")
        return 0

    async def cohorts(proj: Projection) -> int:
        try:
            last = q.month_number(args.to) if args.to else proj.days.cal.month(now)
            first = q.month_number(args.from_) if args.from_ else last - 11
        except ValueError as exc:
            raise SystemExit(f"loyalty history cohorts: --from/--to: expected YYYY-MM, got {exc}") from None
        if first > last:
            raise SystemExit("loyalty history cohorts: --from is after --to")
        rows = await reads.cohorts(proj, args.dimension, _set(args.active), first, last, args.months, now)
        out.write(cohort_csv(rows, args.months).encode() if args.csv
                  else b"".join(orjson.dumps(r) + b"\n" for r in rows))
        return 0

    work = {"was": was, "entered": entered, "stays": stays, "cohorts": cohorts}[args.history_command]
    code = asyncio.run(_with_projection(settings, args, work))
    sys.stdout.flush()
    return code


def register(sub: Any) -> None:
    h = sub.add_parser("history", help="who was where: membership history questions over the Redis projection")
    hs = h.add_subparsers(dest="history_command", required=True)
    instant = "YYYY-MM-DD (business time zone) or an RFC 3339 instant with an offset"

    def common(p: argparse.ArgumentParser, segment: bool = True) -> None:
        p.add_argument("--dimension", required=True, help="dimension id")
        if segment:
            p.add_argument("--segment", required=True, help="segment ids, comma-separated (a set)")
        p.add_argument("--csv", action="store_true", help="CSV (as the HTTP API's format=csv), not JSON Lines")
        p.set_defaults(fn=cmd_history)

    w = hs.add_parser("was", help="clients in a segment at some time of [--from, --to), optionally in --now now")
    common(w)
    w.add_argument("--from", dest="from_", metavar="FROM", required=True, help=f"window start: {instant}")
    w.add_argument("--to", required=True, help="window end (excluded)")
    w.add_argument("--now", default="", help="segments the client holds now, comma-separated (default: any)")
    w.add_argument("--now-dimension", help="the dimension of --now (default: --dimension)")
    e = hs.add_parser("entered", help="clients who entered a segment in [--from, --to), with the instants")
    common(e)
    e.add_argument("--from", dest="from_", metavar="FROM", required=True, help=f"window start: {instant}")
    e.add_argument("--to", required=True, help="window end (excluded)")
    s = hs.add_parser("stays", help="how long stays in a segment last: completed and ongoing (days)")
    common(s)
    s.add_argument("--from", dest="from_", metavar="FROM", help=f"only stays begun from: {instant}")
    s.add_argument("--to", help="only stays begun before")
    c = hs.add_parser("cohorts", help="clients by month of first segmentation, active 0..12 months later")
    common(c, segment=False)
    c.add_argument("--active", required=True, help="the active segments, comma-separated")
    c.add_argument("--from", dest="from_", metavar="FROM",
                   help="first cohort month YYYY-MM (default: 11 months before --to)")
    c.add_argument("--to", help="last cohort month YYYY-MM (default: this month)")
    c.add_argument("--months", type=int, choices=range(13), default=12, metavar="0..12",
                   help="months after the cohort month (default 12)")

"""HTTP API handlers over the Redis projection (aiohttp; mounted on the Faust web server).

Every handler reads Redis only (no table, no Kafka), so any worker answers for every
client. Errors are JSON: ``{"error": code, "message": text, "parameter": name}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from app.projection.store import Days, Projection, money
from app.serving.dynamics import label as period_label
from app.serving.dynamics import sizes_over_time
from rules import Engine
from rules.calendar import iso

MAX_CLIENT_ID = 256
MAX_DAYS = 3660
PERIODS = ("day", "week", "month", "total")
EPOCH_DAY = "1970-01-01"  # business days are stored from 1970 (rules.calendar)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.parameter = status, code, message, parameter

    def response(self) -> web.Response:
        return json_response(error_body(self.code, self.message, self.parameter), self.status)


def error_body(code: str, message: str, parameter: str | None = None) -> dict[str, Any]:
    """The JSON error of the API and the lookup server."""
    body: dict[str, Any] = {"error": code, "message": message}
    if parameter is not None:
        body["parameter"] = parameter
    return body


def bad(parameter: str, message: str) -> ApiError:
    return ApiError(400, "bad_request", f"{parameter}: {message}", parameter)


def wants_csv(request: web.Request) -> bool:
    """``format=csv`` (or ``Accept: text/csv`` without ``format``); ``format`` must be json or csv."""
    fmt = request.query.get("format") or ("csv" if "text/csv" in request.headers.get("Accept", "") else "json")
    if fmt not in ("json", "csv"):
        raise bad("format", f"json or csv, got {fmt!r}")
    return fmt == "csv"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@dataclass
class Api:
    projection: Projection
    engine: Engine
    clock: Callable[[], datetime]

    def __post_init__(self) -> None:
        self.dims = [d.id for _, d in self.engine.dims]
        self.segments_of = {d.id: [s.id for s in d.segments] + ([d.default] if d.default else [])
                            for _, d in self.engine.dims}
        self.days: Days = self.projection.days

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/clients/{client_id}", self.client),
            web.get("/segments", self.segments),
            web.get("/segments/{dimension}/{segment}/members", self.members),
            web.get("/reports/transitions", self.transitions),
            web.get("/reports/sizes", self.sizes),
            web.get("/reports/revenue", self.revenue),
        ]

    # -- parameters -------------------------------------------------------------------------

    def _today(self) -> date:
        return date.fromisoformat(self.days.day(int(self.clock().timestamp())))

    def _dimension(self, request: web.Request) -> str:
        dim = request.query.get("dimension")
        if not dim:
            raise bad("dimension", "required")
        if dim not in self.dims:
            raise bad("dimension", f"unknown dimension {dim!r} (known: {', '.join(self.dims)})")
        return dim

    @staticmethod
    def _date(request: web.Request, name: str, default: date) -> date:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            if len(raw) != 10 or raw[4] != "-":
                raise ValueError(raw)
            return date.fromisoformat(raw)
        except ValueError:
            raise bad(name, f"expected a date YYYY-MM-DD, got {raw!r}") from None

    def _range(self, request: web.Request, back: int) -> tuple[date, date]:
        end = self._date(request, "to", self._today())
        start = self._date(request, "from", end - timedelta(days=back))
        if start > end:
            raise bad("from", "must not be after 'to'")
        if (end - start).days > MAX_DAYS:
            raise bad("from", f"the range is limited to {MAX_DAYS} days")
        return start, end

    @staticmethod
    def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
        raw = request.query.get(name, default)
        if raw not in choices:
            raise bad(name, f"one of {', '.join(choices)}, got {raw!r}")
        return raw

    @staticmethod
    def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise bad(name, f"expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise bad(name, f"must be between {lo} and {hi}")
        return value

    # -- clients ----------------------------------------------------------------------------

    async def client(self, request: web.Request) -> web.Response:
        cid = request.match_info["client_id"]
        check_client_id(cid)
        raw = await self.projection.client(cid)
        if not raw:
            raise not_found(cid)
        return json_response(client_document(cid, raw, self.dims, self.days,
                                             int(self.clock().timestamp())))

    # -- segments ---------------------------------------------------------------------------

    async def segments(self, request: web.Request) -> web.Response:
        sizes = await self.projection.sizes(self.dims)
        out = {dim: {"clients": sum(segs.values()), "segments": segs} for dim, segs in sizes.items()}
        return json_response({"dimensions": out, "as_of": iso(int(self.clock().timestamp()))})

    async def members(self, request: web.Request) -> web.StreamResponse:
        dim, seg = request.match_info["dimension"], request.match_info["segment"]
        if dim not in self.dims:
            raise ApiError(404, "not_found", f"unknown dimension {dim!r}", "dimension")
        fmt = request.query.get("format")
        if fmt is None:
            fmt = "csv" if "text/csv" in request.headers.get("Accept", "") else "json"
        if fmt not in ("json", "csv", "audience"):
            raise bad("format", f"json, csv or audience, got {fmt!r}")
        if fmt == "csv":
            return await self._members_csv(request, dim, seg)
        if fmt == "audience":  # hashed contacts for ad platforms (app.serving.audience)
            from app.serving.audience import TARGETS, audience_csv

            target = self._choice(request, "target", TARGETS, "generic")
            return await audience_csv(request, self.projection, dim, seg, target,
                                      f"{_safe(dim)}-{_safe(seg)}-audience.csv")
        limit = self._int(request, "limit", 100, 1, 1000)
        cursor, skip = _cursor(request.query.get("cursor") or "0")
        members, nxt = await self.projection.members_page(dim, seg, cursor, skip, limit)
        total = (await self.projection.sizes([dim]))[dim].get(seg, 0)
        return json_response({"dimension": dim, "segment": seg, "total": total,
                              "members": members, "next_cursor": nxt})

    async def _members_csv(self, request: web.Request, dim: str, seg: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{_safe(dim)}-{_safe(seg)}.csv"'})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"client_id,dimension,segment,since\r\n")
        tail = f",{_csv(dim)},{_csv(seg)},"
        async for chunk in self.projection.iter_members(dim, seg):
            lines = [f"{_csv(cid)}{tail}{iso(since) if since else ''}\r\n" for cid, since in chunk]
            await resp.write("".join(lines).encode())
        await resp.write_eof()
        return resp

    # -- reports ----------------------------------------------------------------------------

    async def transitions(self, request: web.Request) -> web.Response:
        dim = self._dimension(request)
        period = self._choice(request, "period", PERIODS, "month")
        start, end = self._range(request, 364)
        rows = await self.projection.transitions(dim, start.isoformat(), end.isoformat())
        periods: dict[str, dict[str, dict[str, int]]] = {}
        total: dict[str, dict[str, int]] = {}
        for day, row in rows:
            label = period_label(day, period)
            matrix = periods.setdefault(label, {})
            for key, n in row.items():
                frm, _, to = key.rpartition(">")
                for m in (matrix, total):
                    m.setdefault(frm, {})[to] = m.get(frm, {}).get(to, 0) + n
        return json_response({
            "dimension": dim, "from": start.isoformat(), "to": end.isoformat(), "period": period,
            "periods": [{"period": label, "matrix": m, "changes": _sum(m)}
                        for label, m in sorted(periods.items())],
            "total": {"matrix": total, "changes": _sum(total)},
        })

    async def sizes(self, request: web.Request) -> web.Response:
        dim = self._dimension(request)
        basis = self._choice(request, "basis", ("event", "snapshot"), "event")
        if basis == "snapshot":
            start, end = self._range(request, 89)
            snaps = await self.projection.snapshots(dim, start.isoformat(), end.isoformat())
            return json_response({
                "dimension": dim, "from": start.isoformat(), "to": end.isoformat(), "basis": basis,
                "segments": sorted({s for _, segs in snaps for s in segs}),
                "days": [{"date": day, "sizes": {s: n for s, (n, _) in segs.items()}}
                         for day, segs in snaps],
            })
        period = self._choice(request, "period", ("day", "week", "month"), "month")
        start, end = self._range(request, MAX_DAYS)
        rows = await self.projection.transitions(dim, EPOCH_DAY, end.isoformat())
        if "from" not in request.query:  # from the first change on (the whole loaded history)
            start = max(start, min((date.fromisoformat(d) for d, _ in rows), default=end))
        points = sizes_over_time(rows, start, end, period)
        return json_response({
            "dimension": dim, "from": start.isoformat(), "to": end.isoformat(), "basis": basis,
            "period": period, "segments": sorted({s for p in points for s in (*p["sizes"], *p["entries"],
                                                                              *p["exits"])}),
            "days": points,
        })

    async def revenue(self, request: web.Request) -> web.Response:
        dim = self._dimension(request)
        period = self._choice(request, "period", ("current", "day", "month"), "current")
        start, end = self._range(request, 364)
        rows: list[dict[str, Any]] = []
        if period == "current":
            sizes = (await self.projection.sizes([dim]))[dim]
            rev = await self.projection.revenue(dim)
            rows.append(_revenue_row("current", iso(int(self.clock().timestamp())),
                                     {s: (n, rev.get(s, 0)) for s, n in sizes.items()}))
        else:
            last: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {}
            for day, segs in await self.projection.snapshots(dim, start.isoformat(), end.isoformat()):
                last[day if period == "day" else day[:7]] = (day, segs)
            rows = [_revenue_row(label, day, segs) for label, (day, segs) in sorted(last.items())]
        return json_response({"dimension": dim, "period": period, "revenue_metric": "lifetime_value",
                              "from": start.isoformat(), "to": end.isoformat(), "periods": rows})


def _cursor(raw: str) -> tuple[int, int]:
    """``next_cursor`` text: ``<scan cursor>`` or ``<scan cursor>:<skip>``."""
    try:
        parts = [int(x) for x in raw.split(":")]
    except ValueError:
        raise bad("cursor", f"pass next_cursor of the previous page, got {raw!r}") from None
    if len(parts) > 2 or min(parts) < 0 or parts[0] >= 2**64 or (len(parts) == 2 and parts[1] > 10**6):
        raise bad("cursor", f"pass next_cursor of the previous page, got {raw!r}")
    return parts[0], parts[1] if len(parts) == 2 else 0


def check_client_id(cid: str) -> None:
    if not cid or len(cid) > MAX_CLIENT_ID:
        raise bad("client_id", f"1 to {MAX_CLIENT_ID} characters")


def not_found(cid: str) -> ApiError:
    return ApiError(404, "not_found", f"no segments for client {cid!r}")


def client_document(cid: str, h: dict[str, str], dims: Sequence[str], days: Days,
                    now: int) -> dict[str, Any]:
    """GET /clients/{client_id}: the client's projection hash ``h`` as the API's JSON.

    Dimensions in name order. ``metrics``: the client's summary metrics as of ``metrics_at``
    (before its first summary is projected: the metrics of its segment changes, as of the
    latest change). The lookup server serves the same document pre-rendered in Redis by
    the projection (app.projection.scripts); the two are held equal by the tests."""
    last_month = Days.prev_month(days.month(now))
    present = [d for d in dims if d in h]
    segments = {dim: {
        "segment": h[dim],
        "since": iso(int(h[f"{dim}:since"])),
        "previous": h.get(f"{dim}:prev") or None,
        "rule": h.get(f"{dim}:rule") or None,
        "last_month": _last_month(h, dim, last_month),
    } for dim in sorted(present)}
    merged: dict[str, Any] = {}
    if "metrics" in h:
        merged = orjson.loads(h["metrics"])
        at = int(h.get("metrics_at", "0"))
    else:  # the metrics of its changes, the latest last
        at = 0
        for dim in sorted(present, key=lambda d: int(h[f"{d}:since"])):
            merged.update(orjson.loads(h.get(f"{dim}:m", "{}")))
            at = max(at, int(h[f"{dim}:since"]))
    return {"client_id": cid, "segments": segments, "metrics": merged,
            "metrics_at": iso(at) if at else None, "as_of": iso(now)}


def _last_month(h: dict[str, str], dim: str, last_month: str) -> str | None:
    """The segment held at the end of ``last_month`` (see app.projection.store)."""
    if h.get(f"{dim}:sm", "9999") <= last_month:
        return h[dim]
    if h.get(f"{dim}:lm") == last_month:
        return h.get(f"{dim}:lmseg") or None
    return None


def _sum(matrix: dict[str, dict[str, int]]) -> int:
    return sum(n for row in matrix.values() for n in row.values())


def _revenue_row(label: str, at: str, segs: dict[str, tuple[int, int]]) -> dict[str, Any]:
    out = {s: {"clients": n, "revenue": money(r),
               "revenue_per_client": money(r // n) if n else "0.00"}
           for s, (n, r) in sorted(segs.items()) if n > 0}
    clients = sum(n for n, _ in segs.values())
    revenue = sum(r for n, r in segs.values() if n > 0)
    return {"period": label, "as_of": at, "segments": out,
            "total": {"clients": clients, "revenue": money(revenue)}}


def _csv(value: str) -> str:
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _safe(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in value)[:64]

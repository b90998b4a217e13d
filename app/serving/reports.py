"""``GET /reports/period`` and ``GET /reports/clients``: the period reports of the receipt facts
(:mod:`app.projection.periods`, :mod:`app.projection.period_clients`), JSON pages or CSV.

* ``/reports/period``: KPIs and revenue by segment per day, week or month with the previous
  period beside each; ``attribution=purchase|current``; JSON paged by period (``limit``,
  ``cursor``/``next``), or CSV of every period of the range (``format=csv``: one row per
  period, ``table=segments``: one row per period, dimension and segment);
* ``/reports/clients``: per client, revenue and visits in the period, current segment in a
  dimension, since when, last month's segment; every client with a receipt in the period,
  or every current member of ``segment``; JSON paged by client id, or CSV of every row.

Cursors are opaque (base64 of the position); the CSV writers here serve ``loyalty
period-report`` and ``loyalty client-report`` too (:mod:`app.cli.reports`). Guide:
docs/how-to/read-the-reports.md.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Iterable
from datetime import date
from typing import Any

from aiohttp import web

from app.projection import period_clients as pc
from app.projection import periods as pr
from app.projection.store import Days, money
from app.serving.api import Api, _last_month, bad, json_response, wants_csv
from app.serving.history import cell
from app.serving.oas import get_json_or_csv, query
from rules.calendar import iso

MAX_DAYS = 800
MAX_PERIODS = 366
KPIS = ("period", "from", "to", "revenue", "sales", "returns", "active", "new", "returning", "avg_check",
        "sales_per_client", "churned")
KPI_CSV = ",".join([*KPIS, *(f"previous_{k}" for k in KPIS)])
SEGMENT_CSV = "period,dimension,segment,revenue,sales,previous_revenue,previous_sales"
CLIENT_COLUMNS = ("client_id", "revenue", "visits", "segment", "since", "last_month_segment")
CLIENT_CSV = ",".join(CLIENT_COLUMNS)


# -- rows (shared with the CLI) ---------------------------------------------------------------

def kpi_line(row: dict[str, Any]) -> str:
    """One period of the report as a CSV line (KPI_CSV)."""
    prev = row["previous"]
    before = {"period": prev["from"], **prev}
    return ",".join([*(cell(row[k]) for k in KPIS), *(cell(before.get(k)) for k in KPIS)]) + "\r\n"


def segment_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One period's revenue by segment, one row per dimension and segment seen in the period
    or the previous one (SEGMENT_CSV)."""
    now, prev = row["revenue_by_segment"], row["previous"]["revenue_by_segment"]
    out = []
    for dim in sorted({*now, *prev}):
        for seg in sorted({*now.get(dim, {}), *prev.get(dim, {})}):
            a = now.get(dim, {}).get(seg, {"revenue": "0.00", "sales": 0})
            b = prev.get(dim, {}).get(seg, {"revenue": "0.00", "sales": 0})
            out.append({"period": row["period"], "dimension": dim, "segment": seg, "revenue": a["revenue"],
                        "sales": a["sales"], "previous_revenue": b["revenue"], "previous_sales": b["sales"]})
    return out


def segment_line(seg: dict[str, Any]) -> str:
    """One row of :func:`segment_rows` as a CSV line (SEGMENT_CSV)."""
    return ",".join(cell(v) for v in seg.values()) + "\r\n"


def client_rows(rows: Iterable[pc.ClientRow], dim: str, last_month: str) -> list[dict[str, Any]]:
    """Per-client rows as the API's JSON (``last_month``: YYYY-MM of the month before now)."""
    out = []
    for r in rows:
        since = r.fields.get(f"{dim}:since")
        out.append({"client_id": r.client_id, "revenue": money(r.cents), "visits": r.visits,
                    "segment": r.fields.get(dim), "since": iso(int(since)) if since else None,
                    "last_month_segment": _last_month(r.fields, dim, last_month)})
    return out


def client_line(row: dict[str, Any]) -> str:
    return ",".join(cell(row[k]) for k in CLIENT_COLUMNS) + "\r\n"


def currency(codes: list[str]) -> str | list[str] | None:
    """The currency of the facts: one code, several (a list), or None (no fact yet)."""
    return codes[0] if len(codes) == 1 else (codes or None)


def last_month_of(days: Days, now: int) -> str:
    """YYYY-MM of the business month before the one of ``now`` (the lookup's ``last_month``)."""
    return Days.prev_month(days.month(now))


def encode_cursor(kind: str, position: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(raw: str, kind: str) -> str:
    """The position in an opaque cursor of ``kind`` ("" when none is given)."""
    if not raw:
        return ""
    try:
        if len(raw) > 400:
            raise ValueError(raw)
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad("cursor", "pass `next` of the previous page") from None
    head, sep, position = text.partition(":")
    if head != kind or not sep or not position:
        raise bad("cursor", "pass `next` of the previous page")
    return position


# -- HTTP -------------------------------------------------------------------------------------

def routes(api: Api) -> list[web.RouteDef]:
    h = _Handlers(api)
    return [web.get("/reports/period", h.period), web.get("/reports/clients", h.clients)]


class _Handlers:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.proj = api.projection

    @staticmethod
    def _span(request: web.Request) -> tuple[date, date]:
        q = request.query
        for name in ("from", "to"):
            if not q.get(name):
                raise bad(name, "required, YYYY-MM-DD")
        try:
            start, end = date.fromisoformat(q["from"]), date.fromisoformat(q["to"])
        except ValueError:
            raise bad("from", "from and to are dates, YYYY-MM-DD") from None
        if not start < end or (end - start).days > MAX_DAYS:
            raise bad("to", f"after from, at most {MAX_DAYS} days")
        return start, end

    async def period(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        period = Api._choice(request, "period", pr.PERIODS, "week")
        start, end = self._span(request)
        churn = None
        if q.get("churn"):
            dim, _, segs = q["churn"].partition(":")
            if not dim or not segs:
                raise bad("churn", "dimension:segment[,segment...]")
            churn = (dim, tuple(s for s in segs.split(",") if s))
        attribution = Api._choice(request, "attribution", pr.ATTRIBUTIONS, "purchase")
        table = Api._choice(request, "table", ("kpi", "segments"), "kpi")
        csv = wants_csv(request)
        limit = Api._int(request, "limit", 100, 1, MAX_PERIODS)
        spans = pr.periods(start, end, period)
        at = decode_cursor(q.get("cursor", ""), "p")
        first = 0
        if at:
            starts = [s.isoformat() for s, _ in spans]
            if at not in starts:
                raise bad("cursor", "pass `next` of the previous page (with the same from, to and period)")
            first = starts.index(at)
        p = await self.proj.prefix_now()
        redis, cal = self.proj.redis, self.proj.days.cal

        if csv:
            async def lines() -> AsyncIterator[str]:
                async for row in pr.iter_report(redis, p, start, end, period, cal, churn, attribution):
                    yield kpi_line(row) if table == "kpi" else "".join(map(segment_line, segment_rows(row)))
            return await stream(request, KPI_CSV if table == "kpi" else SEGMENT_CSV, lines(),
                                f"period-{period}-{start}-{end}.csv")
        page = spans[first:first + limit]
        nxt = encode_cursor("p", spans[first + limit][0].isoformat()) if first + limit < len(spans) else None
        return json_response({"period": period, "from": start.isoformat(), "to": end.isoformat(),
                              "attribution": attribution, "currency": currency(await pc.currencies(redis, p)),
                              "periods": await pr.report(redis, p, start, end, period, cal, churn, attribution,
                                                         page), "next": nxt})

    async def clients(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        start, end = self._span(request)
        dim = self.api._dimension(request)
        segment = q.get("segment") or None
        if segment is not None and len(segment) > 256:
            raise bad("segment", "a segment id (at most 256 characters)")
        csv = wants_csv(request)
        limit = Api._int(request, "limit", 100, 1, 1000)
        after = decode_cursor(q.get("cursor", ""), "c")
        now = int(self.api.clock().timestamp())
        last_month = last_month_of(self.proj.days, now)
        p = await self.proj.prefix_now()
        redis, days = self.proj.redis, pr.day_labels((start, end))
        if csv:
            async def lines() -> AsyncIterator[str]:
                async for chunk in pc.iter_clients(redis, p, days, dim, segment):
                    yield "".join(client_line(r) for r in client_rows(chunk, dim, last_month))
            name = f"clients-{start}-{end}" + (f"-{_safe(segment)}" if segment else "")
            return await stream(request, CLIENT_CSV, lines(), f"{name}.csv")
        rows, last = await pc.client_page(redis, p, days, dim, segment, after, limit)
        return json_response({"dimension": dim, "segment": segment, "from": start.isoformat(),
                              "to": end.isoformat(), "as_of": iso(now),
                              "currency": currency(await pc.currencies(redis, p)),
                              "rows": client_rows(rows, dim, last_month),
                              "next": encode_cursor("c", last) if last is not None else None})


def _safe(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in value)[:64]


async def stream(request: web.Request, header: str, parts: AsyncIterator[str], name: str) -> web.StreamResponse:
    """A CSV response written part by part (a period, or a chunk of clients, at a time)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                       "Content-Disposition": f'attachment; filename="{name}"'})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(f"{header}\r\n".encode())
    async for part in parts:
        await resp.write(part.encode())
    await resp.write_eof()
    return resp


# -- OpenAPI (merged into app.serving.openapi's document) -------------------------------------

def openapi_paths() -> dict[str, Any]:
    s, day = {"type": "string"}, {"type": "string", "format": "date"}

    p, op = query, get_json_or_csv

    span = [p("from", "first day, YYYY-MM-DD (business time zone)", day, True),
            p("to", f"the day after the last, YYYY-MM-DD (at most {MAX_DAYS} days after from)", day, True)]
    fmt = p("format", "json (default, paged) or csv (every row of the range, streamed)",
            {"type": "string", "enum": ["json", "csv"]})
    cur = {"type": ["string", "array", "null"], "items": s,
           "description": "the currency of the facts counted (a list when several: amounts are added as they are)"}
    nxt = {"type": ["string", "null"], "description": "pass as cursor for the next page; null: last page"}
    money_t = {"type": "string", "examples": ["1234.50"]}
    guide = " See [read the reports](../how-to/read-the-reports.md)."
    return {
        "/reports/period": op(
            "Revenue by segment and KPIs per day, week or month, with the previous period beside each",
            "From the receipt facts: revenue (net of returns), sales, returns, active, new and returning "
            "clients, average check, sales per client, churned (with `churn`), and revenue by segment: each "
            "receipt attributed to its client's segment right after it (`attribution=purchase`) or each "
            "client's revenue to the segment it holds now (`attribution=current`)." + guide,
            {"type": "object", "properties": {
                "period": s, "from": s, "to": s, "attribution": s, "currency": cur,
                "periods": {"type": "array", "items": {"type": "object"}}, "next": nxt}},
            [*span,
             p("period", "day, week (from Monday) or month", {"type": "string", "enum": list(pr.PERIODS),
                                                               "default": "week"}),
             p("churn", "dimension:segment[,segment]: count the changes into these segments as churned", s),
             p("attribution", "purchase: each receipt to the segment at the purchase; current: each client's "
               "revenue to its segment now", {"type": "string", "enum": list(pr.ATTRIBUTIONS),
                                              "default": "purchase"}),
             p("limit", "periods per page", {"type": "integer", "minimum": 1, "maximum": MAX_PERIODS,
                                             "default": 100}),
             p("cursor", "`next` of the previous page (default: first page)", s), fmt,
             p("table", "format=csv: kpi (one row per period) or segments (per period, dimension and segment)",
               {"type": "string", "enum": ["kpi", "segments"], "default": "kpi"})],
            f"table=kpi: {KPI_CSV}; table=segments: {SEGMENT_CSV}"),
        "/reports/clients": op(
            "Per client: revenue and visits in a period, current segment, since when, last month's segment",
            "Every client with a receipt dated in [from, to) (a return counts: revenue is net, visits are "
            "sale receipts), or, with `segment`, every current member of it (those without a receipt in the "
            "period with revenue 0 and visits 0). `segment`, `since`: now, in `dimension`; "
            "`last_month_segment`: held at the end of the previous calendar month (business time, as of "
            "now). In client-id order." + guide,
            {"type": "object", "properties": {
                "dimension": s, "segment": {"type": ["string", "null"]}, "from": s, "to": s, "as_of": s,
                "currency": cur, "next": nxt, "rows": {"type": "array", "items": {"type": "object", "properties": {
                    "client_id": s, "revenue": money_t, "visits": {"type": "integer"},
                    "segment": {"type": ["string", "null"]}, "since": {"type": ["string", "null"]},
                    "last_month_segment": {"type": ["string", "null"]}}}}}},
            [*span, p("dimension", "dimension id (see GET /segments)", s, True),
             p("segment", "only the current members of this segment of `dimension` (all of them)", s),
             p("limit", "rows per page", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
             p("cursor", "`next` of the previous page (default: first page)", s), fmt],
            CLIENT_CSV),
    }

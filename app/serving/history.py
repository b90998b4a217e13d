"""``GET /history/*``: who was where, from the membership history in the projection
(:mod:`app.projection.history_reads`). Behind the API token like every data endpoint; lists
are paged like the members endpoint (``cursor``/``limit``, ``next_cursor``) or streamed as CSV
(``format=csv`` or ``Accept: text/csv``). Instants: ``YYYY-MM-DD`` (the business day's first
instant, ``LOYALTY_TIMEZONE``) or RFC 3339 with an offset; windows are ``[from, to)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from app.projection import history_queries as q
from app.projection import history_reads as reads
from app.serving.api import Api, bad, json_response, wants_csv
from app.serving.oas import get_json_or_csv, query
from rules.calendar import iso

MAX_MONTHS = 120  # cohort months per request
WAS_CSV = "client_id,segment,entered,left,now_dimension,now_segment,now_since"


def routes(api: Api) -> list[web.RouteDef]:
    h = _Handlers(api)
    return [web.get("/history/was", h.was), web.get("/history/entered", h.entered),
            web.get("/history/stays", h.stays), web.get("/history/cohorts", h.cohorts)]


def cell(value: Any) -> str:
    """A CSV field (RFC 4180 quoting); None: empty."""
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def was_lines(row: dict[str, Any]) -> list[str]:
    """CSV lines (WAS_CSV) of one client of ``was``: one per interval."""
    now = row["now"]
    tail = f"{cell(now['dimension'])},{cell(now['segment'])},{cell(now['since'])}"
    return [f"{cell(row['client_id'])},{cell(iv['segment'])},{iv['entered']},{cell(iv['left'])},{tail}\r\n"
            for iv in row["intervals"]]


def cohort_csv(rows: list[dict[str, Any]], horizon: int) -> str:
    """The cohort table, one line per cohort: its clients, then the active ones per month."""
    head = "cohort,clients," + ",".join(f"m{n}" for n in range(horizon + 1)) + "\r\n"
    return head + "".join(
        f"{r['cohort']},{r['clients']}," + ",".join("" if c is None else str(c["active"]) for c in r["months"])
        + "\r\n" for r in rows)


def stays_csv(body: dict[str, Any]) -> str:
    out = "stays,count,mean_days,median_days,p90_days\r\n"
    for kind in ("completed", "ongoing"):
        s = body[kind]
        out += f"{kind},{s['count']},{cell(s['mean_days'])},{cell(s['median_days'])},{cell(s['p90_days'])}\r\n"
    return out


class _Handlers:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.proj = api.projection
        self.cal = api.projection.days.cal

    # -- parameters -------------------------------------------------------------------------

    def _dim(self, request: web.Request, name: str = "dimension", default: str | None = None) -> str:
        dim = request.query.get(name) or default
        if not dim:
            raise bad(name, "required")
        if dim not in self.api.dims:
            raise bad(name, f"unknown dimension {dim!r} (known: {', '.join(self.api.dims)})")
        return dim

    @staticmethod
    def _segments(request: web.Request, name: str, required: bool = True) -> frozenset[str]:
        segs = frozenset(s for s in request.query.get(name, "").split(",") if s)
        if required and not segs:
            raise bad(name, "one or more segment ids, comma-separated")
        return segs

    def _instant(self, request: web.Request, name: str, required: bool = True) -> int | None:
        raw = request.query.get(name)
        if not raw:
            if required:
                raise bad(name, "required: YYYY-MM-DD or an RFC 3339 instant with an offset")
            return None
        try:
            return q.instant(raw, self.cal)
        except ValueError:
            raise bad(name, f"expected YYYY-MM-DD or an RFC 3339 instant with an offset, got {raw!r}") from None

    def _window(self, request: web.Request, required: bool = True) -> tuple[int | None, int | None]:
        start, end = self._instant(request, "from", required), self._instant(request, "to", required)
        if start is not None and end is not None and start >= end:
            raise bad("to", "must be after 'from'")
        return start, end

    def _page(self, request: web.Request) -> tuple[str, int]:
        after = request.query.get("cursor", "")
        if len(after) > 256:
            raise bad("cursor", "pass next_cursor of the previous page")
        return after, Api._int(request, "limit", 100, 1, 1000)

    def _now(self) -> int:
        return int(self.api.clock().timestamp())

    # -- handlers ---------------------------------------------------------------------------

    async def was(self, request: web.Request) -> web.StreamResponse:
        dim, segs = self._dim(request), self._segments(request, "segment")
        start, end = self._window(request)
        assert start is not None and end is not None
        now_segs = self._segments(request, "now", required=False)
        now_dim = self._dim(request, "now_dimension", dim)
        if wants_csv(request):
            async def lines() -> AsyncIterator[str]:
                async for row in reads.iter_was(self.proj, dim, segs, start, end, now_dim, now_segs):
                    for line in was_lines(row):
                        yield line
            return await _stream(request, WAS_CSV, lines(), f"was-{dim}.csv")
        after, limit = self._page(request)
        rows, nxt = await reads.was_page(self.proj, dim, segs, start, end, now_dim, now_segs, after, limit)
        return json_response({"dimension": dim, "segments": sorted(segs), "from": iso(start), "to": iso(end),
                              "now": {"dimension": now_dim, "segments": sorted(now_segs)} if now_segs else None,
                              "clients": rows, "next_cursor": nxt})

    async def entered(self, request: web.Request) -> web.StreamResponse:
        dim, segs = self._dim(request), self._segments(request, "segment")
        start, end = self._window(request)
        assert start is not None and end is not None
        if wants_csv(request):
            async def lines() -> AsyncIterator[str]:
                async for row in reads.iter_entered(self.proj, dim, segs, start, end):
                    for t in row["entered"]:
                        yield f"{cell(row['client_id'])},{t}\r\n"
            return await _stream(request, "client_id,entered", lines(), f"entered-{dim}.csv")
        after, limit = self._page(request)
        rows, nxt = await reads.entered_page(self.proj, dim, segs, start, end, after, limit)
        return json_response({"dimension": dim, "segments": sorted(segs), "from": iso(start), "to": iso(end),
                              "clients": rows, "next_cursor": nxt})

    async def stays(self, request: web.Request) -> web.Response:
        dim, segs = self._dim(request), self._segments(request, "segment")
        start, end = self._window(request, required=False)
        now = self._now()
        body = {"dimension": dim, "segments": sorted(segs), "from": None if start is None else iso(start),
                "to": None if end is None else iso(end), "as_of": iso(now),
                **await reads.stays(self.proj, dim, segs, now, start, end)}
        if wants_csv(request):
            return web.Response(text=stays_csv(body), content_type="text/csv", charset="utf-8")
        return json_response(body)

    async def cohorts(self, request: web.Request) -> web.Response:
        dim, active = self._dim(request), self._segments(request, "active")
        now = self._now()
        last = self._month(request, "to", self.cal.month(now))
        first = self._month(request, "from", last - 11)
        if first > last or last - first >= MAX_MONTHS:
            raise bad("from", f"not after 'to', at most {MAX_MONTHS} months")
        horizon = Api._int(request, "months", 12, 0, 12)
        rows = await reads.cohorts(self.proj, dim, active, first, last, horizon, now)
        if wants_csv(request):
            return web.Response(text=cohort_csv(rows, horizon), content_type="text/csv", charset="utf-8")
        return json_response({"dimension": dim, "active": sorted(active), "from": q.month_label(first),
                              "to": q.month_label(last), "months": horizon, "as_of": iso(now), "cohorts": rows})

    @staticmethod
    def _month(request: web.Request, name: str, default: int) -> int:
        raw = request.query.get(name)
        if not raw:
            return default
        try:
            return q.month_number(raw)
        except ValueError:
            raise bad(name, f"expected a month YYYY-MM, got {raw!r}") from None


async def _stream(request: web.Request, header: str, lines: AsyncIterator[str], name: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                       "Content-Disposition": f'attachment; filename="{name}"'})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(f"{header}\r\n".encode())
    buf: list[str] = []
    async for line in lines:
        buf.append(line)
        if len(buf) >= 500:
            await resp.write("".join(buf).encode())
            buf.clear()
    await resp.write("".join(buf).encode())
    await resp.write_eof()
    return resp


# -- OpenAPI (merged into app.serving.openapi's document) -----------------------------------

def openapi_paths() -> dict[str, Any]:
    s, date_or_instant = {"type": "string"}, {"type": "string", "examples": ["2026-04-01", "2026-04-01T00:00:00Z"]}

    p, op = query, get_json_or_csv

    dim = p("dimension", "dimension id", s, True)
    segs = p("segment", "segment ids of the dimension, comma-separated (a set: moving within it is no entry)", s, True)
    window = [p("from", "window start: YYYY-MM-DD (business time zone) or RFC 3339 with an offset", date_or_instant,
                True), p("to", "window end, excluded", date_or_instant, True)]
    paging = [p("cursor", "next_cursor of the previous page (default: first page)", s),
              p("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
              p("format", "json (default) or csv (every row, streamed)", {"type": "string", "enum": ["json", "csv"]})]
    page = {"clients": {"type": "array", "items": {"type": "object"}},
            "next_cursor": {"type": ["string", "null"], "description": "pass as cursor; null: last page"}}
    stat = {"type": "object", "properties": {"count": {"type": "integer"}, **{
        k: {"type": ["number", "null"]} for k in ("mean_days", "median_days", "p90_days")}}}
    guide = " See [ask who was where](../how-to/ask-who-was-where.md)."
    return {
        "/history/was": op(
            "Clients who were in a segment at some time of a window, and (optionally) are in given segments now",
            "Each client's intervals in `segment` overlapping [from, to) and its current segment in `now_dimension`; "
            "'lapsed VIPs': dimension=boostfeel&segment=vip&from=2026-04-01&to=2026-07-01&now=at_risk,lost." + guide,
            {"type": "object", "properties": {"dimension": s, "segments": {"type": "array", "items": s}, "from": s,
                                              "to": s, "now": {"type": ["object", "null"]}, **page}},
            [dim, segs, *window, p("now", "segments the client must hold now, comma-separated (default: any)", s),
             p("now_dimension", "the dimension of `now` (default: `dimension`)", s), *paging], WAS_CSV),
        "/history/entered": op(
            "Clients who entered a segment during a window, with the instants",
            "A stay in `segment` (a set) begun in [from, to); one client may enter several times." + guide,
            {"type": "object", "properties": {"dimension": s, "segments": {"type": "array", "items": s}, "from": s,
                                              "to": s, **page}},
            [dim, segs, *window, *paging], "client_id,entered (one line per entry)"),
        "/history/stays": op(
            "How long clients stay in a segment: completed and ongoing stays (count, mean, median, p90 in days)",
            "Optionally only the stays begun in [from, to). Ongoing stays are measured up to now." + guide,
            {"type": "object", "properties": {"dimension": s, "segments": {"type": "array", "items": s},
                                              "as_of": s, "clients": {"type": "integer"},
                                              "completed": stat, "ongoing": stat}},
            [dim, segs, p("from", "only stays begun from this instant", date_or_instant),
             p("to", "only stays begun before this instant", date_or_instant),
             p("format", "json or csv", {"type": "string", "enum": ["json", "csv"]})],
            "stays,count,mean_days,median_days,p90_days (completed, ongoing)"),
        "/history/cohorts": op(
            "Cohorts by month of first segmentation: how many are in the active segments 0..12 months later",
            "Clients by the business month of their first change in `dimension` (their first segmentation: the "
            "first purchase for purchase-driven rule sets); for n = 0..months, the clients holding an `active` "
            "segment at the end of month M+n (null: after now)." + guide,
            {"type": "object", "properties": {"dimension": s, "active": {"type": "array", "items": s},
                                              "from": s, "to": s, "months": {"type": "integer"}, "as_of": s,
                                              "cohorts": {"type": "array", "items": {"type": "object"}}}},
            [dim, p("active", "the active segments, comma-separated", s, True),
             p("from", "first cohort month, YYYY-MM (default: 11 months before `to`)", s),
             p("to", "last cohort month, YYYY-MM (default: this month)", s),
             p("months", "months after the cohort month", {"type": "integer", "minimum": 0, "maximum": 12,
                                                           "default": 12}),
             p("format", "json or csv", {"type": "string", "enum": ["json", "csv"]})],
            "cohort,clients,m0..m<months> (active clients; empty: after now)"),
    }

"""The Redis projection of segment changes: what the HTTP API and a POS read.

Written by the ``projector`` agent (:mod:`agents.projector`) from the segment-changes
topic, one Lua call per change, so every write is atomic, idempotent and ordered.

Keyspace (``NS`` = ``loyalty:<app id>``; ``P`` = ``NS:<generation>:``; standalone Redis)::

    NS:gen                     current generation (absent: "0"); a rebuild fills a new one
                               and switches this key, so readers never see a half-built one
    P c:<client>               hash per client, for every dimension <d>:
                                 <d> segment, <d>:since (epoch s), <d>:prev (segment before,
                                 "" none), <d>:v (version: event time, epoch s), <d>:sm
                                 (YYYY-MM of since), <d>:vk (changes applied at second
                                 <d>:v), <d>:lm + <d>:lmseg (a month and the segment held
                                 at its end), <d>:rule, <d>:m (metrics JSON of the change),
                                 <d>:rev (revenue in rev:<d>), <d>:h (app.projection.history)
                               and metrics (JSON: every summary metric, from the clients
                               table), metrics_at (epoch s), revenue (cents of lifetime_value),
                               metrics_ati (metrics_at, RFC 3339), <d>:j and doc (the
                               pre-rendered lookup document, see app.projection.scripts),
                               email_sha256 and phone_sha256 (hex digests of the client's
                               contacts, the only profile data: app.projection.audience)
    P dims                     set of dimensions seen
    P seg:<d>:<segment>        set of client ids currently in the segment
    P cnt:<d>                  hash segment -> clients
    P rev:<d>                  hash segment -> revenue (cents, sum of members' `revenue`)
    P tr:<d>:<YYYY-MM-DD>      hash "<from>><to>" -> changes that day ("" from: first segment)
    P trdays:<d>               zset of days having transitions (score YYYYMMDD)
    P snap:<d>:<YYYY-MM-DD>    hash n:<segment> -> clients, r:<segment> -> revenue cents
    P snapdays:<d>             zset of snapshot days (score YYYYMMDD)

Ordering: an update carries the change's instant ``t``. It is applied when ``t`` is newer
than the stored ``<d>:v``; at the same second only when it continues the chain (its
``from`` is the stored segment, its ``to`` differs) and its ``from>to`` was not applied at
that second yet (``<d>:vk`` lists those). So a redelivered or stale change is a no-op and,
since counters move only when an update is applied, nothing is counted twice. (Limit: the
same ``from>to`` twice in one second for one client and dimension counts once.)

Last month's segment: the segment held at the end of the previous calendar month (business
time zone, relative to the service clock). When a change lands in a later month than the
stored ``since``, the stored segment is recorded as the one held at the end of the month
before the change (``<d>:lm``/``<d>:lmseg``).

Days and months are business days/months (``LOYALTY_TIMEZONE``). Revenue is ``lifetime_value``
(net revenue to date) of each client as of its latest projected change, in cents of the major
unit. History (tr:, snap:) is never expired (the membership history is: LOYALTY_HISTORY_DAYS);
it lasts as long as Redis keeps its data (persistence: ``appendonly yes`` in production).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import redis.asyncio as aioredis

from app.projection import scripts
from rules.calendar import BusinessCalendar, iso

_EPOCH_ORD = date(1970, 1, 1).toordinal()
REVENUE_METRIC = "lifetime_value"
# the client hash's non-dimension fields (doc*: see app.projection.scripts; the digests:
# app.projection.audience)
CLIENT_FIELDS = ("metrics", "metrics_at", "metrics_ati", "revenue", "doc", "email_sha256", "phone_sha256")


def text(value: Any) -> str:
    """A Redis reply (bytes; str when decoding is on) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def namespace(app_id: str) -> str:
    """Key namespace of one service instance (its Faust app id)."""
    return f"loyalty:{app_id}"


def cents(value: Any) -> int | None:
    """A money metric (decimal string in major units) as integer hundredths, or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int((Decimal(str(value)) * 100).to_integral_value())
    except (InvalidOperation, ValueError):
        return None


def money(c: int) -> str:
    return str((Decimal(c) / 100).quantize(Decimal("0.01")))


class Days:
    """Business day and month labels of epoch seconds."""

    def __init__(self, tz: str) -> None:
        self.cal = BusinessCalendar(tz)

    def day(self, t: int) -> str:
        return date.fromordinal(self.cal.day(t) + _EPOCH_ORD).isoformat()

    def month(self, t: int) -> str:
        return self.day(t)[:7]

    @staticmethod
    def prev_month(month: str) -> str:
        y, m = int(month[:4]), int(month[5:7])
        return f"{y - 1}-12" if m == 1 else f"{y}-{m - 1:02d}"

    @staticmethod
    def score(day: str) -> int:
        return int(day.replace("-", ""))


@dataclass(frozen=True, slots=True)
class Update:
    """One change to project (or, with ``count=False``, a state to make sure of)."""

    client_id: str
    dimension: str
    to: str
    from_: str  # "" when the client had no segment in the dimension
    at: int  # epoch s of the change: the version
    rule: str = ""
    event_metrics: bytes = b"{}"
    count: bool = True  # count the transition (False: rebuild from current state)
    metrics: bytes | None = None  # all summary metrics (JSON) as of metrics_at
    metrics_at: int = 0
    revenue: int | None = None  # cents

    @classmethod
    def metrics_only(cls, client_id: str, metrics: dict[str, Any], at: int) -> Update:
        """The client's current summary metrics (and revenue) as of ``at``, segments untouched."""
        return cls(client_id, "", "", "", at, count=False, metrics=orjson.dumps(metrics),
                   metrics_at=at, revenue=cents(metrics.get(REVENUE_METRIC)))

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Update:
        """A change event's segment move; its summary metrics and revenue come from the
        clients changelog (:meth:`metrics_only`), not from the event."""
        data = event["data"]
        return cls(
            client_id=str(data["client_id"]), dimension=str(data["dimension"]),
            to=str(data["to"]), from_=str(data.get("from") or ""),
            at=int(datetime.fromisoformat(event["time"]).timestamp()),
            rule=str(data.get("rule") or ""), event_metrics=orjson.dumps(data.get("metrics") or {}),
        )


class StaleGeneration(Exception):
    """The projection was switched to a new generation (a rebuild) while writing."""


class Projection:
    """Reads and writes one service's projection (``namespace`` = ``loyalty:<app id>``)."""
    history_days = 730  # membership history kept (LOYALTY_HISTORY_DAYS; app.projection.history)

    def __init__(self, redis: aioredis.Redis, namespace: str, tz: str = "UTC") -> None:
        self.redis = redis
        self.ns = namespace
        self.gen_key = f"{namespace}:gen"
        self.days = Days(tz)
        self._apply = redis.register_script(scripts.APPLY)
        self._snapshot = redis.register_script(scripts.SNAPSHOT)
        self._render = redis.register_script(scripts.RENDER)
        self._metrics = redis.register_script(scripts.METRICS)
        self._gen: tuple[str, float] | None = None
        self._lookups = _Coalescer(redis)

    @classmethod
    def from_url(cls, url: str, namespace: str, tz: str = "UTC", **kwargs: Any) -> Projection:
        """A client with a bounded pool: callers wait for a free connection (up to 5 s)."""
        opts: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0,
                                "max_connections": 32, "timeout": 5.0}
        opts.update(kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(url, **opts)
        return cls(aioredis.Redis(connection_pool=pool), namespace, tz)

    async def close(self) -> None:
        await self.redis.aclose()

    # -- generations ----------------------------------------------------------------------

    async def generation(self, max_age: float = 1.0) -> str:
        now = time.monotonic()
        if self._gen is None or now - self._gen[1] > max_age:
            raw = await self.redis.get(self.gen_key)
            self._gen = (text(raw) if raw else "0", now)
        return self._gen[0]

    def prefix(self, gen: str) -> str:
        return f"{self.ns}:{gen}:"

    async def _p(self) -> str:
        return self.prefix(await self.generation())

    async def prefix_now(self) -> str:
        """The key prefix of the current generation (cached up to a second)."""
        return await self._p()

    # -- writes ---------------------------------------------------------------------------

    async def apply(self, updates: Sequence[Update], gen: str | None = None) -> list[int]:
        """Apply updates in order in one round trip; 1 applied, 0 stale/duplicate. Then
        re-render the lookup document of each client touched (same round trip).

        Without ``gen``, writes the current generation and retries on a switch; with it,
        writes that generation whatever is current (a rebuild).
        """
        if not updates:
            return []
        for _ in range(5):
            g = gen if gen is not None else await self.generation(0.0 if self._gen is None else 1.0)
            pipe = self.redis.pipeline(transaction=False)
            for u in updates:
                await self._apply(keys=[self.gen_key], args=self._args(u, g, gen is None),
                                  client=pipe)
            for cid in dict.fromkeys(u.client_id for u in updates):
                await self._render(args=[self.prefix(g), cid], client=pipe)
            results = [int(r) for r in (await pipe.execute())[:len(updates)]]
            if -1 not in results:
                return results
            self._gen = None  # switched: re-read and write the new generation
        raise StaleGeneration(self.gen_key)

    async def apply_metrics(self, updates: Sequence[Update]) -> list[int]:
        """Metrics-only updates (:meth:`Update.metrics_only`) in one round trip, cheaper than
        :meth:`apply` (no segment part, the document's tail patched instead of re-rendered)."""
        if not updates:
            return []
        for _ in range(5):
            g = await self.generation(0.0 if self._gen is None else 1.0)
            pipe = self.redis.pipeline(transaction=False)
            p = self.prefix(g)
            for u in updates:
                await self._metrics(keys=[self.gen_key], args=[
                    g, p, u.client_id, u.metrics or b"{}", u.metrics_at, iso(u.metrics_at),
                    "" if u.revenue is None else u.revenue], client=pipe)
            results = [int(r) for r in await pipe.execute()]
            if -1 not in results:
                return results
            self._gen = None
        raise StaleGeneration(self.gen_key)

    def _args(self, u: Update, gen: str, check: bool) -> list[Any]:
        month = self.days.month(u.at)
        day = self.days.day(u.at)
        return [gen if check else "", self.prefix(gen), u.client_id, u.dimension, u.to, u.from_,
                u.at, month, Days.prev_month(month), day, u.rule, u.event_metrics,
                "1" if u.count else "0", u.metrics or b"", u.metrics_at,
                "" if u.revenue is None else u.revenue, Days.score(day), iso(u.at),
                iso(u.metrics_at), self.history_days * 86_400]

    async def snapshot(self, day: str, gen: str | None = None) -> int:
        """Write today's sizes and revenue per segment (``snap:``) for every dimension."""
        p = self.prefix(gen) if gen is not None else await self._p()
        return int(await self._snapshot(args=[p, day, Days.score(day)]))

    # -- reads ------------------------------------------------------------------------------

    async def client(self, client_id: str) -> dict[str, str]:
        """One client's hash. Concurrent lookups share one pipelined round trip."""
        p = await self._p()
        row = await self._lookups.hgetall(f"{p}c:{client_id}")
        return {text(k): text(v) for k, v in row.items()}

    async def dimensions(self) -> list[str]:
        p = await self._p()
        return sorted(text(m) for m in await self.redis.smembers(f"{p}dims"))

    async def sizes(self, dims: Iterable[str]) -> dict[str, dict[str, int]]:
        p = await self._p()
        dims = list(dims)
        pipe = self.redis.pipeline(transaction=False)
        for d in dims:
            pipe.hgetall(f"{p}cnt:{d}")
        rows = await pipe.execute()
        return {d: {text(k): int(v) for k, v in sorted(row.items()) if int(v) > 0}
                for d, row in zip(dims, rows, strict=True)}

    async def revenue(self, dim: str) -> dict[str, int]:
        p = await self._p()
        row = await self.redis.hgetall(f"{p}rev:{dim}")
        return {text(k): int(v) for k, v in row.items()}

    async def members_page(self, dim: str, segment: str, cursor: int, skip: int,
                           limit: int) -> tuple[list[str], str | None]:
        """Up to ``limit`` members from an SSCAN position (``cursor``, members of that
        scan step already returned: ``skip``); returns them and the next position."""
        p = await self._p()
        key = f"{p}seg:{dim}:{segment}"
        out: list[str] = []
        while True:
            nxt, raw = await self.redis.sscan(key, cursor=cursor, count=limit)
            batch = sorted(text(m) for m in raw)[skip:]
            need = limit - len(out)
            if len(batch) > need:
                return out + batch[:need], f"{cursor}:{skip + need}"
            out += batch
            cursor, skip = int(nxt), 0
            if cursor == 0:
                return out, None
            if len(out) == limit:
                return out, str(cursor)

    async def iter_members(self, dim: str, segment: str,
                           chunk: int = 1000) -> AsyncIterator[list[tuple[str, int | None]]]:
        """All members with their ``since``, in chunks (SSCAN: a set being changed may yield
        a member twice; every member present throughout is yielded)."""
        p = await self._p()
        key = f"{p}seg:{dim}:{segment}"
        cursor = 0
        while True:
            cursor, raw = await self.redis.sscan(key, cursor=cursor, count=chunk)
            ids = sorted(text(m) for m in raw)
            if ids:
                pipe = self.redis.pipeline(transaction=False)
                for cid in ids:
                    pipe.hget(f"{p}c:{cid}", f"{dim}:since")
                since = await pipe.execute()
                yield [(cid, int(s) if s else None) for cid, s in zip(ids, since, strict=True)]
            if cursor == 0:
                return

    async def _by_days(self, kind: str, dim: str, start: str,
                       end: str) -> list[tuple[str, dict[str, str]]]:
        p = await self._p()
        days = await self.redis.zrangebyscore(f"{p}{kind}days:{dim}", Days.score(start),
                                              Days.score(end))
        pipe = self.redis.pipeline(transaction=False)
        for d in days:
            pipe.hgetall(f"{p}{kind}:{dim}:{text(d)}")
        rows = await pipe.execute()
        return [(text(d), {text(k): text(v) for k, v in row.items()})
                for d, row in zip(days, rows, strict=True)]

    async def transitions(self, dim: str, start: str, end: str) -> list[tuple[str, dict[str, int]]]:
        """Per day in [start, end]: "from>to" -> changes."""
        return [(d, {k: int(v) for k, v in row.items()})
                for d, row in await self._by_days("tr", dim, start, end)]

    async def snapshots(self, dim: str, start: str,
                        end: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
        """Per snapshot day in [start, end]: segment -> (clients, revenue cents)."""
        out = []
        for day, row in await self._by_days("snap", dim, start, end):
            segs: dict[str, tuple[int, int]] = {}
            for k, v in row.items():
                if k.startswith("n:"):
                    seg = k[2:]
                    segs[seg] = (int(v), int(row.get(f"r:{seg}", "0")))
            out.append((day, dict(sorted(segs.items()))))
        return out

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


class _Coalescer:
    """Collects the HGETALLs asked for in one event-loop turn and sends them as one
    pipeline: under many concurrent requests, one round trip and one pooled connection
    serve a whole batch."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.pending: list[tuple[str, asyncio.Future[dict[Any, Any]]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def hgetall(self, key: str) -> dict[Any, Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[Any, Any]] = loop.create_future()
        if not self.pending:
            loop.call_soon(self._flush)
        self.pending.append((key, fut))
        return await fut

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.ensure_future(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, batch: list[tuple[str, asyncio.Future[dict[Any, Any]]]]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, _ in batch:
                pipe.hgetall(key)
            rows = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), row in zip(batch, rows, strict=True):
            if not fut.done():
                if isinstance(row, Exception):
                    fut.set_exception(row)
                else:
                    fut.set_result(row)


async def drop_generation(redis: aioredis.Redis, prefix: str, batch: int = 1000) -> int:
    """Delete every key of one generation (SCAN + UNLINK)."""
    n = 0
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=batch):
        keys.append(key)
        if len(keys) >= batch:
            n += await redis.unlink(*keys)
            keys.clear()
    if keys:
        n += await redis.unlink(*keys)
    return n

"""HTTP on the Faust web server: health, readiness, the API, the dashboard.

* ``/health``, ``/ready``, ``/metrics`` (Prometheus), ``/openapi.json``, ``/dashboard`` and
  ``/static/*`` are public: the dashboard page and its scripts hold no data; the page calls
  the API with the token typed into its input box, sent in the ``Authorization`` header
  only (never in an address).
* Everything else needs ``Authorization: Bearer <LOYALTY_API_TOKEN>`` when that setting is
  not empty (401 JSON otherwise). The API is in :mod:`app.serving.api`; routes are added to the
  worker's aiohttp application directly (no Faust view wrapper on the POS lookup path).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from aiohttp import web
from faust.web import Request, Response, View
from redis.exceptions import RedisError

from app.projection.store import Projection, namespace
from app.serving.api import Api, ApiError, bad, json_response
from app.serving.cluster import Peers, gather, local_partitions, merge_preview
from app.serving.history import routes as history_routes
from app.serving.openapi import document
from app.settings import Settings
from app.wire import codecs
from rules import Engine, LoyaltyError
from rules.calendar import iso, to_epoch
from rules.population import Snapshot
from rules.record.state import loads as load_state
from rules.ruleset import loads as load_ruleset_text

log = logging.getLogger("loyalty.web")
STATIC = Path(__file__).resolve().parent / "static"
PUBLIC = ("/health", "/ready", "/metrics", "/openapi.json", "/dashboard", "/static/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TableItems = Callable[[], Iterable[tuple[bytes, bytes]]]


def register_web(app: faust.App, pipeline: Any, settings: Settings) -> None:
    @app.page("/health")
    async def health(self: View, request: Request) -> Response:
        return self.json({"status": "ok"})

    @app.page("/ready")
    async def ready(self: View, request: Request) -> Response:
        detector = pipeline.detector
        stalled = sorted(f"{tp.topic}[{tp.partition}]" for tp in detector.stalled) if detector else []
        blocked = dict(pipeline.guard.blocked) if pipeline.guard is not None else {}
        problems = dict(pipeline.problems)  # kafka, redis, disk: checked by agents.monitor
        ok = not app.rebalancing and app.consumer is not None and not stalled and not blocked and not problems
        pipeline.metrics.ready.set(1 if ok else 0)
        return self.json({"ready": ok, "stalled": stalled, "blocked": blocked, "problems": problems},
                         status=200 if ok else 503)

    projection = Projection.from_url(settings.redis_url, namespace(settings.app_id),
                                     settings.timezone)
    api = Api(projection, pipeline.engine, pipeline.clock)
    web_app: web.Application = app.web.web_app  # type: ignore[attr-defined]
    table_topic = settings.clients_changelog
    peers = Peers.of(app, table_topic, settings.canonical_url, settings.partitions, settings.api_token)
    mount(web_app, api, settings.api_token, lambda: pipeline.clients.data.items(),
          Cluster(peers, lambda: local_partitions(app, table_topic)))
    mount_scenario_report(web_app, projection)
    mount_campaigns(web_app, settings, pipeline.scenarios)
    mount_period_report(web_app, api)


def mount_period_report(web_app: web.Application, api: Api) -> None:
    """GET /reports/period (KPIs and revenue by segment per day, week or month, each with the
    previous period beside it) and GET /reports/clients (per-client revenue and visits in a
    period): app.serving.reports."""
    from app.serving.reports import routes as report_routes

    web_app.add_routes(report_routes(api))


def mount_campaigns(web_app: web.Application, settings: Any, runner: Any) -> None:
    """POST /campaigns: send a one-off campaign (a loaded scenario with ``trigger: {manual:
    true}``) to the current members of a segment (app.batch.campaign). Body: JSON
    ``{"scenario", "dimension", "segment", "id"?}``; answers 202 with the campaign id and how
    many members it was sent to (each worker decides for its clients, through the contact
    policy)."""

    async def campaigns(request: web.Request) -> web.Response:
        from app.batch.campaign import CampaignError, send

        try:
            body = await request.json()
        except ValueError:
            raise bad("body", "a JSON object") from None
        if not isinstance(body, dict):
            raise bad("body", "a JSON object")
        for key in ("scenario", "dimension", "segment"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise bad(key, "required, a string")
        cid = body.get("id")
        if cid is not None and (not isinstance(cid, str) or not cid):
            raise bad("id", "a string")
        scenario = runner.by_id.get(body["scenario"]) if runner is not None else None
        if scenario is None or not scenario.trigger.manual:
            raise bad("scenario", f"no loaded campaign scenario {body['scenario']!r} (trigger: {{manual: true}})")
        try:
            sent = await send(settings, body["scenario"], body["dimension"], body["segment"], cid)
        except CampaignError as exc:
            raise bad("dimension", str(exc)) from None
        return json_response(sent.as_dict(), 202)

    web_app.add_routes([web.post("/campaigns", campaigns)])


def mount_scenario_report(web_app: web.Application, projection: Projection) -> None:
    """GET /reports/scenarios: actions, responses, conversions, revenue and the rates per
    scenario (``?by=campaign``: per campaign), for the whole cluster (counted once per event
    id in the projection: app.projection.scenarios)."""

    async def scenarios(request: web.Request) -> web.Response:
        from app.projection.scenarios import report

        by = request.query.get("by", "scenario")
        if by not in ("scenario", "campaign"):
            raise bad("by", "scenario or campaign")
        return json_response(await report(projection.redis, await projection.prefix_now(), by))

    web_app.add_routes([web.get("/reports/scenarios", scenarios)])


@dataclass(frozen=True)
class Cluster:
    """The other workers (cluster-wide answers) and this worker's partitions of the table."""

    peers: Peers
    partitions: Callable[[], list[int]]


def mount(web_app: web.Application, api: Api, token: str, table_items: TableItems,
          cluster: Cluster | None = None) -> None:
    """Add the API, OpenAPI document, dashboard and middlewares to an aiohttp app."""
    web_app.middlewares.append(errors_middleware)
    web_app.middlewares.append(auth_middleware(token))
    web_app.add_routes(api.routes())
    web_app.add_routes(history_routes(api))  # GET /history/*: who was where (app.serving.history)
    spec = document()

    async def openapi(request: web.Request) -> web.Response:
        return json_response(spec)

    async def dashboard(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "dashboard.html")

    async def preview(request: web.Request) -> web.Response:
        return await rules_preview(request, api, table_items, cluster)

    async def close(_: web.Application) -> None:
        await api.projection.close()

    web_app.add_routes([web.get("/openapi.json", openapi), web.get("/dashboard", dashboard),
                        web.post("/rules/preview", preview),
                        web.static("/static/", STATIC)])
    web_app.on_cleanup.append(close)


def _public(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)


def auth_middleware(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and not _public(request.path):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise ApiError(401, "unauthorized", "missing or invalid bearer token")
        return await handler(request)

    return auth


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors, never a stack trace."""
    try:
        return await handler(request)
    except ApiError as exc:
        resp = exc.response()
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="loyalty"'
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error")
        return json_response({"error": code, "message": exc.reason}, exc.status)
    except (RedisError, OSError) as exc:
        log.warning("projection unavailable for %r: %s: %s", request.path, type(exc).__name__, exc)
        return json_response({"error": "unavailable",
                              "message": "the projection store (Redis) is unavailable"}, 503)
    except Exception:
        log.exception("error handling %s %r", request.method, request.path)
        return json_response({"error": "internal", "message": "internal error"}, 500)


# -- rule preview -------------------------------------------------------------------------------

async def rules_preview(request: web.Request, api: Api, table_items: TableItems,
                        cluster: Cluster | None = None) -> web.Response:
    """Rule set YAML in the body -> per segment: clients before/after, entering, leaving.

    Evaluated now (the service clock, or ``as_of`` in epoch seconds) with a new engine over
    every client of the cluster: each worker evaluates its active partitions
    (``scope=worker``) and the worker asked merges the parts (:mod:`app.serving.cluster`).
    Nothing is written or published."""
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise bad("body", "the rule set must be UTF-8 text") from None
    if not text.strip():
        raise bad("body", "send a rule set (YAML) as the request body")
    try:
        engine = Engine([load_ruleset_text(text, "<request body>")], tz=api.engine.cal.name)
    except LoyaltyError as exc:
        raise bad("body", str(exc)) from None
    now = to_epoch(api.clock())
    if "as_of" in request.query:
        try:
            now = int(request.query["as_of"])
        except ValueError:
            raise bad("as_of", "epoch seconds") from None
    rs = engine.rulesets[0]
    population = _preview_population(engine, api.engine)

    async def local() -> dict[str, Any]:
        parts = cluster.partitions() if cluster is not None else []
        result = await preview_counts(engine, table_items(), now)
        return {"ruleset": rs.name, "version": rs.version, "as_of": iso(now), **result, "partitions": parts,
                **population}

    if cluster is None or request.query.get("scope") == "worker":
        return json_response({**await local(), "scope": "worker"})
    parts = await gather(cluster.peers, "/rules/preview", {"as_of": str(now)}, text.encode(), local)
    return json_response({**merge_preview(parts), "scope": "cluster"})


def _preview_population(engine: Engine, worker: Engine) -> dict[str, Any]:
    """A previewed rule set that reads the population reads the worker's current snapshot:
    every statistic it reads must be one the loaded rules define the same way. Otherwise its
    population dimensions are left out (``population`` says why)."""
    if not engine.spec.stats:
        return {}
    snap = worker.population
    if snap is None:
        return {"population": "no snapshot yet: dimensions that read population.* are left out"}
    missing = sorted(n for n, st in engine.spec.stats.items() if worker.spec.stats.get(n) != st)
    if missing:
        return {"population": "not in the current snapshot: " + ", ".join(missing)
                + "; dimensions that read them are left out"}
    engine.set_population(Snapshot(snap.instant, {n: snap.values[n] for n in engine.spec.stats}, snap.clients))
    return {"population": f"snapshot of {iso(snap.instant)} ({snap.version})"}


async def preview_counts(engine: Engine, items: Iterable[tuple[bytes, bytes]],
                         now: int) -> dict[str, Any]:
    dims = [d.id for _, d in engine.dims]
    stats: dict[str, dict[str, dict[str, int]]] = {d: {} for d in dims}
    changed = dict.fromkeys(dims, 0)
    clients = 0

    def bump(dim: str, seg: str, field: str) -> None:
        row = stats[dim].setdefault(seg, {"before": 0, "after": 0, "enter": 0, "leave": 0})
        row[field] += 1

    for n, (_key, value) in enumerate(items):
        if n % 500 == 499:
            await asyncio.sleep(0)  # let the worker breathe
        try:
            state = load_state(codecs.split_table_value(value)[1])
        except Exception:
            continue
        clients += 1
        before = {d: str(state.segments[d][0]) for d in dims if d in state.segments}
        state.segments = {d: v for d, v in state.segments.items() if d in dims}
        if state.has_purchase:
            at = max(now, state.clock)
            engine.advance(state, at)
            engine._evaluate(state, at, "preview", None)
        after = {d: str(state.segments[d][0]) for d in dims if d in state.segments}
        for dim in dims:
            b, a = before.get(dim), after.get(dim)
            if b is not None:
                bump(dim, b, "before")
            if a is not None:
                bump(dim, a, "after")
            if a != b:
                changed[dim] += 1
                if b is not None:
                    bump(dim, b, "leave")
                if a is not None:
                    bump(dim, a, "enter")
    return {"clients": clients,
            "dimensions": {d: {"changed": changed[d], "segments": dict(sorted(stats[d].items()))}
                           for d in dims}}

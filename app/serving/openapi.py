"""The OpenAPI 3.1 document served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from app.serving.history import openapi_paths as history_paths
from app.serving.reports import openapi_paths as report_paths

VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _q(name: str, description: str, schema: dict[str, Any], required: bool = False,
       where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": schema}


_ERR = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "404": {"$ref": "#/components/responses/NotFound"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}
_STR = {"type": "string"}
_DATE = {"type": "string", "format": "date"}
_DIM = _q("dimension", "dimension id (see GET /segments)", _STR, required=True)
_RANGE = [_q("from", "first day, YYYY-MM-DD (business time zone)", _DATE),
          _q("to", "last day, YYYY-MM-DD (default: today)", _DATE)]
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
_MATRIX = {"type": "object", "description": "from segment ('' = none: first segment) -> to "
           "segment -> changes",
           "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}}
_SEGROW = {"type": "object", "properties": {
    "clients": {"type": "integer"}, "revenue": {"type": "string", "examples": ["1234.50"]},
    "revenue_per_client": {"type": "string"}}}


def _op(summary: str, ok: dict[str, Any], params: list[dict[str, Any]] | None = None,
        errors: tuple[str, ...] = ("400", "401", "503"), **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": {"200": ok, **{c: _ERR[c] for c in errors}}}
    op.update(extra)
    return op


def _public(summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": {"200": ok}}


def document() -> dict[str, Any]:
    client = {"type": "object", "required": ["client_id", "segments", "metrics", "as_of"],
              "properties": {
                  "client_id": _STR,
                  "segments": {"type": "object", "additionalProperties": _ref("ClientSegment")},
                  "metrics": {"type": "object", "description": "key metrics (money as decimal "
                              "strings) as of metrics_at"},
                  "metrics_at": {"type": ["string", "null"], "format": "date-time"},
                  "as_of": {"type": "string", "format": "date-time"}}}
    segment = {"type": "object", "required": ["segment", "since"], "properties": {
        "segment": _STR, "since": {"type": "string", "format": "date-time"},
        "previous": {"type": ["string", "null"]},
        "last_month": {"type": ["string", "null"],
                       "description": "segment held at the end of the previous calendar month"},
        "rule": {"type": ["string", "null"]}}}
    error = {"type": "object", "required": ["error", "message"], "properties": {
        "error": _STR, "message": _STR, "parameter": _STR}}
    paths: dict[str, Any] = {
        "/clients/{client_id}": {"get": _op(
            "A client's segments (since, previous, last month's) and key metrics",
            _json(_ref("Client"), "the client"),
            [_q("client_id", "client id", _STR, where="path")],
            errors=("400", "401", "404", "503"),
            description="The POS lookup at checkout: one Redis read. The lookup server "
                        "(`loyalty lookup`, port LOYALTY_LOOKUP_PORT) answers this path with "
                        "the same responses, apart from the worker.")},
        "/segments": {"get": _op("Clients per segment in every dimension", _json(
            {"type": "object", "properties": {"as_of": _STR, "dimensions": {
                "type": "object", "additionalProperties": {"type": "object", "properties": {
                    "clients": {"type": "integer"}, "segments": {
                        "type": "object", "additionalProperties": {"type": "integer"}}}}}}},
            "sizes"), errors=("401", "503"))},
        "/segments/{dimension}/{segment}/members": {"get": _op(
            "Members of a segment: JSON pages (cursor/limit), a streamed CSV export, or the hashed "
            "audience list for ad platforms (format=audience)",
            {"description": "a page, or CSV with ?format=csv / Accept: text/csv, or the audience CSV "
                            "with ?format=audience", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "dimension": _STR, "segment": _STR, "total": {"type": "integer"},
                    "members": {"type": "array", "items": _STR},
                    "next_cursor": {"type": ["string", "null"],
                                    "description": "pass as cursor; null: last page"}}}},
                "text/csv": {"schema": {"type": "string",
                                        "description": "client_id,dimension,segment,since; "
                                        "format=audience: email_sha256,phone_sha256 (columns per "
                                        "target), one member per row"}}}},
            [_q("dimension", "dimension id", _STR, where="path"),
             _q("segment", "segment id", _STR, where="path"),
             _q("cursor", "from next_cursor (default 0: first page)", {"type": "string"}),
             _q("limit", "page size",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
             _q("format", "json, csv, or audience: hex SHA-256 of each member's normalized e-mail "
                "and phone (members with neither left out), streamed CSV for Google Customer Match / "
                "Meta custom audiences", {"type": "string", "enum": ["json", "csv", "audience"]}),
             _q("target", "format=audience: the CSV columns, generic (email_sha256,phone_sha256), meta "
                "(email,phone) or google (Email only: Google hashes phones with their +, the stored phone "
                "digest has none)",
                {"type": "string", "enum": ["generic", "google", "meta"], "default": "generic"})],
            errors=("400", "401", "404", "503"),
            description="`format=audience`: the members' hashed contacts as a customer list for ad "
                        "platforms, streamed CSV (`Cache-Control: no-store`), one row per member with a "
                        "digest, the others left out and counted in the worker's log (`loyalty audience` "
                        "writes the same file and prints the counts). What is hashed, how, and what Google "
                        "Customer Match and Meta custom audiences expect: "
                        "[personal data](../explanation/personal-data.md).")},
        "/reports/transitions": {"get": _op(
            "Segment changes from -> to, per period", _json({"type": "object", "properties": {
                "dimension": _STR, "from": _DATE, "to": _DATE, "period": _STR,
                "periods": {"type": "array", "items": {"type": "object", "properties": {
                    "period": _STR, "matrix": _MATRIX, "changes": {"type": "integer"}}}},
                "total": {"type": "object", "properties": {
                    "matrix": _MATRIX, "changes": {"type": "integer"}}}}}, "the matrix"),
            [_DIM, *_RANGE, _q("period", "grouping", {"type": "string", "default": "month",
                                                     "enum": ["day", "week", "month", "total"]})])},
        "/reports/sizes": {"get": _op(
            "Segment sizes over event time (basis event: from every change's event time, so a "
            "loaded history has its past; basis snapshot: the daily snapshots taken at wall-clock "
            "time)", _json({"type": "object", "properties": {
                "dimension": _STR, "from": _DATE, "to": _DATE, "basis": _STR, "period": _STR,
                "segments": {"type": "array", "items": _STR},
                "days": {"type": "array", "items": {"type": "object", "properties": {
                    "period": _STR, "date": _DATE,
                    "sizes": _COUNTS, "entries": _COUNTS, "exits": _COUNTS}}}}},
                "sizes per period (basis event: at the end of the period's last day in the range, with "
                "the entries into and exits from each segment during it) or per snapshot day"),
            [_DIM, *_RANGE,
             _q("basis", "event (default) or snapshot", {"type": "string", "enum": ["event", "snapshot"],
                                                          "default": "event"}),
             _q("period", "grouping of basis event (its default from: the first change's day)",
                {"type": "string", "enum": ["day", "week", "month"], "default": "month"})])},
        "/reports/revenue": {"get": _op(
            "Clients and revenue (lifetime value) per segment: now, or per day/month from the "
            "snapshots", _json({"type": "object", "properties": {
                "dimension": _STR, "period": _STR, "revenue_metric": _STR,
                "periods": {"type": "array", "items": {"type": "object", "properties": {
                    "period": _STR, "as_of": _STR,
                    "segments": {"type": "object", "additionalProperties": _SEGROW},
                    "total": _SEGROW}}}}}, "revenue per segment"),
            [_DIM, *_RANGE, _q("period", "current (live), day or month (last snapshot of each)",
                               {"type": "string", "enum": ["current", "day", "month"],
                                "default": "current"})])},
        "/reports/scenarios": {"get": _op(
            "Scenario actions (offers sent), responses, conversions, revenue within the response "
            "windows and the rates per scenario or per campaign (the whole cluster, each event "
            "counted once)",
            _json({"type": "object", "additionalProperties": {"type": "object", "properties": {
                "actions": {"type": "integer"}, "responses": {"type": "integer"},
                "conversions": {"type": "integer"}, "revenue": _STR,
                "response_rate": {"type": ["number", "null"]},
                "conversion_rate": {"type": ["number", "null"]}}}}, "per-scenario or per-campaign figures"),
            [_q("by", "group by scenario (default) or campaign",
                {"type": "string", "enum": ["scenario", "campaign"], "default": "scenario"})])},
        "/campaigns": {"post": {
            "summary": "Send a one-off campaign (a loaded scenario with trigger {manual: true}) to the "
                       "current members of a segment, through the contact policy",
            "parameters": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["scenario", "dimension", "segment"],
                "properties": {"scenario": _STR, "dimension": _STR, "segment": _STR,
                               "id": {"type": "string", "description": "campaign id: sent again with "
                                      "the same id, it reaches nobody twice"}}}}}},
            "responses": {"202": _json({"type": "object", "properties": {
                "campaign": _STR, "members": {"type": "integer"}, "at": {"type": "integer"}}},
                "sent to the members the projection lists; each worker decides for its clients"),
                **{c: _ERR[c] for c in ("400", "401", "503")}}}},
        "/rules/preview": {"post": _op(
            "How many clients would enter and leave each segment under a rule set, now",
            _json({"type": "object", "properties": {
                "ruleset": _STR, "version": _STR, "as_of": _STR,
                "scope": {"type": "string", "enum": ["cluster", "worker"]},
                "clients": {"type": "integer"}, "workers": {"type": "integer"},
                "partitions": {"type": "array", "items": {"type": "integer"}},
                "dimensions": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {
                        "changed": {"type": "integer"},
                        "segments": {"type": "object", "additionalProperties": {
                            "type": "object", "properties": {
                                k: {"type": "integer"} for k in ("before", "after", "enter",
                                                                 "leave")}}}}}}}},
                "counts; nothing is published"),
            requestBody={"required": True, "description": "a rule set (YAML text)", "content": {
                mt: {"schema": {"type": "string"}}
                for mt in ("application/yaml", "text/yaml", "text/plain")}},
            parameters=[_q("scope", "`cluster` (default: every worker's part, merged) or `worker` "
                           "(this worker's active partitions only)",
                           {"type": "string", "enum": ["cluster", "worker"], "default": "cluster"}),
                        _q("as_of", "evaluation instant, epoch seconds (default: now)",
                           {"type": "integer"})],
            description="Evaluated over every client of the cluster: the worker asked gathers "
                        "each worker's part (503 `rebalancing` while partitions move, 503 "
                        "`unavailable` if a worker does not answer).")},
        **report_paths(),  # GET /reports/period, /reports/clients: app.serving.reports
        **history_paths(),  # GET /history/*: app.serving.history
        "/health": {"get": _public("Liveness", _json({"type": "object"}, "alive"))},
        "/ready": {"get": _public("Readiness", _json({"type": "object"}, "ready")) | {
            "responses": {"200": _json({"type": "object"}, "ready"),
                          "503": _json({"type": "object"}, "not ready")}}},
        "/metrics": {"get": _public("Prometheus metrics", {
            "description": "text exposition format",
            "content": {"text/plain": {"schema": _STR}}})},
        "/openapi.json": {"get": _public("This document", _json({"type": "object"}, "OpenAPI"))},
        "/dashboard": {"get": _public("Dashboard page (the page asks for the token)", {
            "description": "HTML", "content": {"text/html": {"schema": _STR}}})},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Loyalty segmentation API", "version": VERSION,
                 "description": "Segments served from the Redis projection of segment changes."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "LOYALTY_API_TOKEN (auth is off when "
                                                          "it is empty)"}},
            "schemas": {"Client": client, "ClientSegment": segment, "Error": error},
            "responses": {
                name: _json(_ref("Error"), text) for name, text in (
                    ("BadRequest", "bad parameter (named in 'parameter')"),
                    ("Unauthorized", "missing or invalid bearer token"),
                    ("NotFound", "unknown client or dimension"),
                    ("Unavailable", "Redis unavailable"))},
        },
    }

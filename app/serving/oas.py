"""Builders of OpenAPI fragments shared by the routes that describe themselves
(:mod:`app.serving.history`, :mod:`app.serving.reports`)."""

from __future__ import annotations

from typing import Any


def query(name: str, text: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    """A query parameter."""
    return {"name": name, "in": "query", "required": required, "description": text, "schema": schema}


def get_json_or_csv(summary: str, description: str, ok: dict[str, Any], params: list[dict[str, Any]],
                    csv: str) -> dict[str, Any]:
    """A GET answering JSON (schema ``ok``) or CSV (``format=csv``), with the API's errors."""
    return {"get": {"summary": summary, "description": description, "parameters": params, "responses": {
        "200": {"description": "JSON, or CSV with format=csv / Accept: text/csv", "content": {
            "application/json": {"schema": ok}, "text/csv": {"schema": {"type": "string", "description": csv}}}},
        **{c: {"$ref": f"#/components/responses/{n}"}
           for c, n in (("400", "BadRequest"), ("401", "Unauthorized"), ("503", "Unavailable"))}}}}

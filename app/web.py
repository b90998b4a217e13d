"""HTTP views on the Faust web server: health, readiness."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from app.settings import Settings


def register_web(app: faust.App, pipeline: Any, settings: Settings) -> None:
    @app.page("/health")
    async def health(self: View, request: Request) -> Response:
        return self.json({"status": "ok"})

    @app.page("/ready")
    async def ready(self: View, request: Request) -> Response:
        ok = not app.rebalancing and app.consumer is not None
        pipeline.metrics.ready.set(1 if ok else 0)
        return self.json({"ready": ok}, status=200 if ok else 503)

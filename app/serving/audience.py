"""``GET /segments/{dimension}/{segment}/members?format=audience``: a segment's current
members as a hashed customer list (:mod:`app.projection.audience`), streamed as CSV.

``target`` names the columns: ``generic`` (default) ``email_sha256,phone_sha256``;
``meta`` ``email,phone`` (Meta's customer-list column names); ``google`` ``Email`` alone
(Google Ads' column name for Customer Match uploads: Google hashes a phone with its ``+``,
the record's phone digest has none, so a phone column would never match). The members left
out (no digest in the target's columns) are counted in the log line of the export (counts
only: the CSV stays a file the platforms accept as it is).
"""

from __future__ import annotations

import logging

from aiohttp import web

from app.projection.audience import HEADERS, AudienceCount, csv_header, csv_rows, iter_audience, target_fields
from app.projection.store import Projection

log = logging.getLogger("loyalty.audience")
TARGETS = tuple(HEADERS)


async def audience_csv(request: web.Request, projection: Projection, dim: str, segment: str,
                       target: str, filename: str) -> web.StreamResponse:
    """The export of one segment for ``target`` (validated by the caller) as ``filename``."""
    resp = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store"})
    resp.enable_chunked_encoding()
    count = AudienceCount()
    rows = iter_audience(projection, dim, segment, count, target_fields(target))
    first = await anext(rows, None)  # Redis answers before the 200 goes out (else a JSON 503)
    await resp.prepare(request)
    await resp.write(csv_header(target))
    if first is not None:
        await resp.write(csv_rows(first))
        async for chunk in rows:
            await resp.write(csv_rows(chunk))
    await resp.write_eof()
    log.info("audience export %s/%s: %d members, %d rows, %d left out (no hashed contact)",
             dim, segment, count.members, count.rows, count.left_out)
    return resp

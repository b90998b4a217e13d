"""``loyalty audience``: a segment's current members as the hashed customer list ad
platforms take, read from the Redis projection (the same CSV as
``GET /segments/{dimension}/{segment}/members?format=audience``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import IO, Any

import orjson

from app.projection.audience import HEADERS, AudienceCount, csv_header, csv_rows, iter_audience, target_fields
from app.settings import Settings


async def export(settings: Settings, dim: str, segment: str, target: str,
                 out: IO[bytes]) -> AudienceCount:
    from app.projection.connect import projection_of, wait_for_redis

    await wait_for_redis(settings.redis_url, settings.connect_timeout)
    proj = projection_of(settings)
    try:
        dims = await proj.dimensions()
        if dim not in dims:
            raise SystemExit(f"loyalty audience: --dimension: no dimension {dim!r} in the projection "
                             f"(known: {', '.join(dims) or 'none'})")
        count = AudienceCount()
        out.write(csv_header(target))
        async for chunk in iter_audience(proj, dim, segment, count, target_fields(target)):
            out.write(csv_rows(chunk))
        return count
    finally:
        await proj.close()


def cmd_audience(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.out in (None, "-"):
        count = asyncio.run(export(settings, args.dimension, args.segment, args.target, sys.stdout.buffer))
        sys.stdout.flush()
    else:  # written aside, then renamed: a failed export leaves no partial list to upload
        part = f"{args.out}.part"
        try:
            with open(part, "wb") as fh:
                count = asyncio.run(export(settings, args.dimension, args.segment, args.target, fh))
            os.replace(part, args.out)
        finally:
            if os.path.exists(part):
                os.unlink(part)
    summary = {"dimension": args.dimension, "segment": args.segment, **count.as_dict()}
    print(orjson.dumps(summary).decode(), file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    a = sub.add_parser("audience", help="a segment's members as hashed e-mails and phones for ad "
                                        "platforms (CSV, from the Redis projection)")
    a.add_argument("--dimension", required=True, help="dimension id")
    a.add_argument("--segment", required=True, help="segment id")
    a.add_argument("--target", choices=tuple(HEADERS), default="generic",
                   help="CSV columns: generic (email_sha256,phone_sha256), meta (email,phone) or google "
                   "(Email only: Google hashes phones with their '+', the record's phone digest has none)")
    a.add_argument("--out", default="-", help="CSV file ('-': stdout); a summary (members, rows, "
                   "left_out: members with no hash in the target's columns) goes to stderr")
    a.set_defaults(fn=cmd_audience)

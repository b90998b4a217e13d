"""``loyalty campaign``: a one-off offer to the current members of a segment.

The campaign is a scenario the workers load (``LOYALTY_SCENARIOS``) whose trigger is
``{manual: true}``: its action (offer, channel, template, reward, ``when``) is decided per
client like any scenario's, through the same contact policy (caps, black list, consent)
and remembered in the client's scenario state, so responses and purchases convert it and
the report counts it under its ``campaign``.

The command reads the segment's members from the Redis projection and sends one message
per member (``K`` + JSON, :mod:`app.wire.codecs`) to the clients' partitions of
``loyalty.client-events``; the worker that owns the client decides against the segments it
holds at that moment (a client who left the segment meanwhile is skipped as
``not_member``). Sent twice with the same campaign id, a client gets the action once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import AppError
from app.settings import Settings
from app.wire import codecs


class CampaignError(AppError):
    """A campaign that cannot be sent (unknown dimension, no such scenario)."""


@dataclass
class Sent:
    campaign: str
    members: int
    at: int

    def as_dict(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "members": self.members, "at": self.at}


def message(scenario: str, campaign: str, dimension: str, segment: str, at: int) -> bytes:
    return codecs.CAMPAIGN + orjson.dumps({"scenario": scenario, "campaign": campaign,
                                           "dimension": dimension, "segment": segment, "at": at})


async def send(settings: Settings, scenario: str, dimension: str, segment: str,
               campaign: str | None = None, at: int | None = None) -> Sent:
    """Send the campaign to every current member; returns how many were sent to."""
    from aiokafka import AIOKafkaProducer

    from app.projection.connect import projection_of, wait_for_redis
    from app.wire.kafka_conn import options

    at = int(time.time()) if at is None else at
    campaign = campaign or f"{scenario}-{at}"
    value = message(scenario, campaign, dimension, segment, at)
    await wait_for_redis(settings.redis_url, settings.connect_timeout)
    proj = projection_of(settings)
    producer = AIOKafkaProducer(**options(settings), linger_ms=5, acks="all", enable_idempotence=True)
    n = 0
    try:
        dims = await proj.dimensions()
        if dimension not in dims:
            raise CampaignError(f"no dimension {dimension!r} in the projection (known: {', '.join(dims) or 'none'})")
        await producer.start()
        async for chunk in proj.iter_members(dimension, segment):
            for cid, _since in chunk:
                await producer.send(settings.topic_client_events, key=cid.encode(), value=value)
                n += 1
        await producer.flush()
    finally:
        await producer.stop()
        await proj.close()
    return Sent(campaign, n, at)


def cmd_campaign(args: Any) -> int:
    import asyncio
    import sys

    try:
        sent = asyncio.run(send(Settings.from_env(), args.scenario, args.dimension, args.segment,
                                args.id, args.at))
    except CampaignError as exc:
        raise SystemExit(f"loyalty campaign: {exc}") from None
    print(orjson.dumps({"scenario": args.scenario, "dimension": args.dimension, "segment": args.segment,
                        **sent.as_dict()}).decode(), file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    c = sub.add_parser("campaign", help="send a one-off offer (a scenario with trigger {manual: true}) "
                       "to the current members of a segment, through the contact policy")
    c.add_argument("--scenario", required=True, help="id of the campaign's scenario, loaded by the workers")
    c.add_argument("--dimension", required=True, help="the dimension of the audience segment")
    c.add_argument("--segment", required=True, help="the segment whose current members get the offer")
    c.add_argument("--id", help="campaign id: sending the same id again reaches nobody twice "
                   "(default: SCENARIO-EPOCH)")
    c.add_argument("--at", type=int, help="the campaign instant, epoch seconds (default: now)")
    c.set_defaults(fn=cmd_campaign)

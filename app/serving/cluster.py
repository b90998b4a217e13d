"""Cluster-wide answers from per-worker parts: whichever worker a request reaches, it asks
every worker for its part and merges them, so the answer is the cluster's.

Used where the data lives only in the workers' tables (``POST /rules/preview`` evaluates a
rule set over every client's full state, which Redis does not hold). The workers and their
active partitions come from Faust's partition assignor (``tables_metadata``: the URL each
worker advertises, ``LOYALTY_ADVERTISED_URL``); a part is asked for with ``?scope=worker``
and carries the partitions it covers. The merged answer covers every partition exactly once,
or the request fails with 503 (``rebalancing`` or ``unavailable``): never a partial answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from app.serving.api import ApiError

LocalPart = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Peers:
    """The workers of the cluster, as this worker's assignor sees them."""

    own_url: str
    partitions: int  # of the clients table
    distribution: Callable[[], Mapping[str, list[int]]]  # worker URL -> its active partitions
    token: str = ""
    timeout: float = 60.0

    @classmethod
    def of(cls, app: Any, table_topic: str, own_url: str, partitions: int, token: str) -> Peers:
        def distribution() -> dict[str, list[int]]:
            out: dict[str, list[int]] = {}
            for url, topics in app.assignor.tables_metadata().items():
                parts = sorted(topics.get(table_topic, ()))
                if parts:
                    out[str(url).rstrip("/")] = parts
            return out

        return cls(own_url.rstrip("/"), partitions, distribution, token)


def local_partitions(app: Any, table_topic: str) -> list[int]:
    """This worker's active partitions of the clients table."""
    return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == table_topic)


async def gather(peers: Peers, path: str, query: Mapping[str, str], body: bytes,
                 local: LocalPart) -> list[dict[str, Any]]:
    """Every worker's part of ``path`` (this worker's from ``local()``), checked to cover
    each partition once. Raises :class:`ApiError` 503 otherwise."""
    dist = peers.distribution()
    _check_cover(peers, dist.values())
    headers = {"Authorization": f"Bearer {peers.token}"} if peers.token else {}
    timeout = aiohttp.ClientTimeout(total=peers.timeout)

    async def part(url: str, session: aiohttp.ClientSession) -> dict[str, Any]:
        if url == peers.own_url:
            return await local()
        try:
            async with session.post(f"{url}{path}", params={**query, "scope": "worker"}, data=body,
                                    headers=headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise ApiError(503, "unavailable", f"worker {url} answered {resp.status}: "
                                   f"{raw[:200].decode('utf-8', 'replace')}")
                doc: dict[str, Any] = orjson.loads(raw)
                return doc
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise ApiError(503, "unavailable", f"worker {url} did not answer ({type(exc).__name__})") from None

    async with aiohttp.ClientSession(timeout=timeout) as session:
        parts = await asyncio.gather(*(part(url, session) for url in sorted(dist)))
    _check_cover(peers, [doc.get("partitions", []) for doc in parts])  # reassigned while we asked?
    return list(parts)


def _check_cover(peers: Peers, parts: Iterable[Iterable[int]]) -> None:
    """Every partition exactly once, or 503 ``rebalancing``."""
    if sorted(p for part in parts for p in part) != list(range(peers.partitions)):
        raise ApiError(503, "rebalancing", "the workers are being reassigned partitions; retry shortly")


def merge_preview(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the per-worker preview counts (clients, changed, before/after/enter/leave)."""
    first = parts[0]
    out: dict[str, Any] = {k: first[k] for k in ("ruleset", "version", "as_of") if k in first}
    out["clients"] = sum(int(p["clients"]) for p in parts)
    dims: dict[str, dict[str, Any]] = {}
    for p in parts:
        for dim, row in p["dimensions"].items():
            acc = dims.setdefault(dim, {"changed": 0, "segments": {}})
            acc["changed"] += int(row["changed"])
            for seg, counts in row["segments"].items():
                into = acc["segments"].setdefault(seg, dict.fromkeys(counts, 0))
                for field, n in counts.items():
                    into[field] = into.get(field, 0) + int(n)
    out["dimensions"] = {d: {"changed": v["changed"], "segments": dict(sorted(v["segments"].items()))}
                         for d, v in dims.items()}
    out["partitions"] = sorted(p for part in parts for p in part.get("partitions", []))
    out["workers"] = len(parts)
    return out

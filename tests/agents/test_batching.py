"""agents.batching.ClientTable's bookkeeping of changelog acks (no broker: the acks are
plain futures, the store records the persisted offsets it is given)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from agents.batching import ClientTable


@dataclass
class _Db:
    data: dict[bytes, bytes] = field(default_factory=dict)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value


@dataclass
class _Store:
    dbs: dict[int, _Db] = field(default_factory=dict)
    persisted: dict[Any, int] = field(default_factory=dict)

    @property
    def _dbs(self) -> dict[int, _Db]:
        return self.dbs

    def _db_for_partition(self, partition: int) -> _Db:
        return self.dbs.setdefault(partition, _Db())

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[(tp.topic, tp.partition)] = offset


@dataclass
class _Meta:
    offset: int


class _Producer:
    def __init__(self) -> None:
        self.acks: list[asyncio.Future[_Meta]] = []
        self.sent: list[tuple[str, bytes, bytes, int]] = []

    async def send(self, topic: str, key: bytes, value: bytes, partition: int, *_: Any) -> Any:
        self.sent.append((topic, key, value, partition))
        ack: asyncio.Future[_Meta] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


class _Changelog:
    def get_topic_name(self) -> str:
        return "app-clients-changelog"


@dataclass
class _Table:
    data: _Store = field(default_factory=_Store)
    changelog_topic: _Changelog = field(default_factory=_Changelog)


@dataclass
class _App:
    producer: _Producer = field(default_factory=_Producer)


@dataclass
class _Message:
    partition: int


@dataclass
class _Event:
    message: _Message


def _table() -> tuple[ClientTable, _App, _Store]:
    app, table = _App(), _Table()
    return ClientTable(app, table, direct=True), app, table.data


async def test_writes_go_to_the_partition_database_and_the_changelog() -> None:
    ct, app, _ = _table()
    await ct.set(_Event(_Message(2)), b"c-1", b"v1")
    assert ct.get(_Event(_Message(2)), b"c-1") == b"v1"
    assert ct.get(_Event(_Message(1)), b"c-1") is None  # another partition's database
    assert app.producer.sent == [("app-clients-changelog", b"c-1", b"v1", 2)]


async def test_settle_persists_the_highest_acked_offset_per_partition() -> None:
    ct, app, store = _table()
    for partition, key in ((0, b"a"), (0, b"b"), (1, b"c"), (1, b"d")):
        await ct.set(_Event(_Message(partition)), key, b"v")
    acks = app.producer.acks
    acks[0].set_result(_Meta(10))
    acks[1].set_result(_Meta(11))
    acks[2].set_result(_Meta(7))  # acks[3] still in flight
    await ct.settle()
    assert store.persisted == {("app-clients-changelog", 0): 11, ("app-clients-changelog", 1): 7}
    acks[3].set_result(_Meta(8))
    await ct.settle()
    assert store.persisted[("app-clients-changelog", 1)] == 8
    await ct.settle()  # nothing left: nothing changes
    assert store.persisted[("app-clients-changelog", 1)] == 8


async def test_settle_skips_a_partition_revoked_meanwhile() -> None:
    ct, app, store = _table()
    await ct.set(_Event(_Message(0)), b"a", b"v")
    await ct.set(_Event(_Message(1)), b"b", b"v")
    for n, ack in enumerate(app.producer.acks):
        ack.set_result(_Meta(n))
    del store.dbs[1]  # Faust dropped partition 1's database on a rebalance
    await ct.settle()
    assert store.persisted == {("app-clients-changelog", 0): 0}
    assert 1 not in store.dbs  # not reopened


async def test_a_failed_changelog_send_is_sent_again() -> None:
    # was: the agent stopped (and Faust acked its batch); the database already holds the value
    ct, app, store = _table()
    await ct.set(_Event(_Message(0)), b"a", b"v")
    app.producer.acks[0].set_exception(RuntimeError("broker gone"))
    await ct.settle()
    assert app.producer.sent == [("app-clients-changelog", b"a", b"v", 0)] * 2
    app.producer.acks[1].set_result(_Meta(3))
    await ct.settle()
    assert store.persisted == {("app-clients-changelog", 0): 3}


def test_not_direct_without_partition_databases() -> None:
    class _Memory:
        pass

    table = _Table()
    table.data = _Memory()  # type: ignore[assignment]
    assert not ClientTable(_App(), table, direct=True).direct

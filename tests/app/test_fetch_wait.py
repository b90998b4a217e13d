"""The worker consumer's fetch wait (app.stream.faust_patches.with_fetch_max_wait), no broker."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from app.settings import Settings
from app.stream.faust_patches import with_fetch_max_wait


async def test_the_fetch_wait_is_the_attribute_aiokafka_starts_its_fetcher_with() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")  # never started
    assert consumer._fetch_max_wait_ms == 500  # aiokafka's default: the attribute exists
    assert with_fetch_max_wait(consumer, 100)._fetch_max_wait_ms == 100


def test_the_fetch_wait_setting() -> None:
    assert Settings.from_env({}).fetch_max_wait_ms == 100
    assert Settings.from_env({"LOYALTY_FETCH_MAX_WAIT_MS": "250"}).fetch_max_wait_ms == 250

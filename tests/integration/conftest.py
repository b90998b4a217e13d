"""Integration tests leave nothing behind: the topics and Redis keys of every test service
instance (harness.unique_env) are deleted when the session ends, so a developer's local
broker and Redis do not grow with each run."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.conftest import _script
from tests.integration import harness


@pytest.fixture(scope="session", autouse=True)
def _drop_test_data() -> Iterator[None]:
    yield
    if not harness.CREATED:
        return
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _script("kafka.sh")
        redis_url = os.environ.get("REDIS_URL") or _script("redis.sh")
        asyncio.run(harness.drop_test_data(bootstrap, redis_url, harness.CREATED))
    except Exception as exc:  # cleanup only: never fail the session for it
        print(f"integration cleanup failed: {type(exc).__name__}: {exc}")

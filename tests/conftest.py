"""Shared fixtures. Integration fixtures start the real local Kafka broker and Redis server
through the project's scripts (or use KAFKA_BOOTSTRAP_SERVERS / REDIS_URL when set)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str) -> str:
    out = subprocess.run([str(ROOT / "deploy" / "local" / name), "start"], check=True,
                         capture_output=True, text=True, timeout=600)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _script("kafka.sh")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL") or _script("redis.sh")

"""The CLI as an operator meets it: every option documented, every mistake one line and a
non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.main import parser

ROOT = Path(__file__).resolve().parents[2]


def _parsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [p]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _parsers(sub)
    return out


def test_every_option_and_command_has_help() -> None:
    missing = [f"{p.prog} {'/'.join(a.option_strings) or a.dest}"
               for p in _parsers(parser()) for a in p._actions
               if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and not a.help]
    assert missing == []


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "LOYALTY_CONNECT_TIMEOUT": "2"}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "env", "words"), [
    (["replay", "--rules", "rfm", "--input", "x.jsonl", "--as-of", "yesterday"], {},
     "--as-of: 'yesterday' is not an instant"),
    (["replay", "--rules", "rfm", "--input", "/dev/null", "--as-of", "now"], {"LOYALTY_TIMEZONE": "Mars/Base"},
     "unknown time zone 'Mars/Base'"),
    (["replay", "--rules", "rfm", "--input", "/no/such.jsonl", "--as-of", "now"], {}, "/no/such.jsonl"),
    (["replay", "--rules", "rfm", "--input", "x", "--as-of", "now", "--jobs", "two"], {}, "a whole number"),
    (["frobnicate"], {}, "invalid choice: 'frobnicate'"),
    (["topics"], {"LOYALTY_PARTITIONS": "abc"}, "LOYALTY_PARTITIONS: "),
    (["worker"], {"LOYALTY_TIMEZONE": "Mars/Base"}, "LOYALTY_TIMEZONE: unknown time zone"),
    (["config"], {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME: required"),
    (["topics"], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "did not answer within 2 s (LOYALTY_CONNECT_TIMEOUT)"),
    (["worker"], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "REDIS_URL": "redis://127.0.0.1:1/0"},
     "Redis at redis://127.0.0.1:1/0 did not answer within 2 s"),
    (["lookup"], {"REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}, "Redis at redis://:***@127.0.0.1:1/0"),
])
def test_mistakes_give_one_line_and_a_nonzero_exit(args: list[str], env: dict[str, str], words: str) -> None:
    done = _run(args, **env)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    assert words in lines[-1], done.stderr
    assert len([line for line in lines if not line.startswith("waiting for")
                and "WARNING" not in line]) == 1, done.stderr


def test_config_prints_every_setting_with_secrets_masked() -> None:
    done = _run(["config"], KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_USERNAME="loyalty",
                KAFKA_SASL_PASSWORD="hunter2-secret", LOYALTY_PARTITIONS="12")
    assert done.returncode == 0, done.stderr
    values = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert values["KAFKA_SASL_PASSWORD"] == "***" and values["LOYALTY_PARTITIONS"] == "12"
    assert "hunter2" not in done.stdout

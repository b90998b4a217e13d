"""The demo script: every topic it uses is prefixed with its run, it needs no directory the
broker script would have made, it can keep its processes and clean up after itself."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "local" / "demo.sh"


def test_the_script_parses_and_passes_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(DEMO)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed: syntax checked only")
    subprocess.run(["shellcheck", "-S", "warning", str(DEMO)], check=True)


def test_every_topic_setting_is_prefixed_with_the_run() -> None:
    settings = (ROOT / "app" / "settings.py").read_text()
    topics = set(re.findall(r'"(LOYALTY_TOPIC_[A-Z_]+)"', settings))
    assert len(topics) >= 7
    text = DEMO.read_text()
    for name in topics:
        assert re.search(rf'\b{name}="\$RUN\.', text), f"{name} is not prefixed with the run"


def test_fresh_clone_needs_no_local_dir_and_clean_is_wired() -> None:
    text = DEMO.read_text()
    assert 'mkdir -p "$STATE"' in text and 'STATE="$ROOT/.local/demo"' in text
    assert "DEMO_KEEP" in text and '"${1:-}" == "clean"' in text
    assert "/dashboard" in text and "LOYALTY_LOOKUP_PORT" in text
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo-clean: .*\n\tdeploy/local/demo\.sh clean$", makefile, re.MULTILINE)
    assert re.search(r"^\.PHONY: .*\bdemo-clean\b", makefile, re.MULTILINE)


def test_keep_records_the_run_and_pids_and_clean_checks_them() -> None:
    text = DEMO.read_text()
    assert "RUN=%s\\nPIDS=%s %s" in text and '"$STATE/$RUN.env"' in text
    assert "/proc/$1/cmdline" in text  # a recorded pid is killed only while it is still ours
    assert "nothing to clean" in text and "delete_topics" in text and "unlink" in text


def test_a_busy_port_stops_the_demo_before_anything_starts() -> None:
    """One line naming the variable, non-zero exit; no broker needed (the check comes first)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "REDIS_URL": "redis://127.0.0.1:1/0",
               "LOYALTY_WEB_PORT": str(port), "LOYALTY_LOOKUP_PORT": str(port)}
        env.pop("DEMO_KEEP", None)
        out = subprocess.run([str(DEMO)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert out.stdout == ""  # nothing started, not even the banner
    assert out.stderr.strip().count("\n") == 0 and "LOYALTY_WEB_PORT" in out.stderr

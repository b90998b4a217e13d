"""The generated reference pages are current, and the docs' links resolve."""

from __future__ import annotations

import re
from pathlib import Path

from app.reference import DOCS, main, render

ROOT = Path(__file__).resolve().parents[2]


def test_generated_pages_on_disk_are_current() -> None:
    assert main(["--check"]) == 0, "run: python -m app.reference (or make docs)"


def test_every_metric_name_in_the_source_is_documented() -> None:
    page = render()["prometheus-metrics.md"]
    names = set()
    for path in [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("agents").rglob("*.py")]:
        names |= set(re.findall(r"\"(loyalty_[a-z_]+?)(?:_total)?\"", path.read_text()))
    assert len(names) >= 25
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing


def test_every_command_and_endpoint_is_documented() -> None:
    from app.cli.main import parser
    from app.serving.openapi import document

    pages = render()
    for action in parser()._actions:
        for name in getattr(action, "choices", None) or {}:
            assert f"## `loyalty {name}" in pages["cli.md"], name
    assert "## `loyalty rules check`" in pages["cli.md"]
    for path, ops in document()["paths"].items():
        for method in ops:
            assert f"## `{method.upper()} {path}`" in pages["http-api.md"]


def test_relative_links_in_the_readme_and_docs_resolve() -> None:
    files = [ROOT / "README.md", *sorted(ROOT.joinpath("docs").rglob("*.md"))]
    assert DOCS.joinpath("settings.md") in files
    broken = []
    for md in files:
        for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (md.parent / target.split("#")[0]).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not broken

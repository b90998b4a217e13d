"""The rule engine of a batch run: rule set specs plus ``--param`` overrides."""

from __future__ import annotations

from typing import Any

import orjson

from rules import Engine, load_ruleset


def _params(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """--param boostfeel.vip_visits=30 -> {"boostfeel": {"vip_visits": 30}}"""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        ruleset, _, name = key.partition(".")
        if not name or not value:
            raise SystemExit(f"--param wants RULESET.NAME=VALUE, got {pair!r}")
        out.setdefault(ruleset, {})[name] = orjson.loads(value) if value[0] in "0123456789-[{\"tf" else value
    return out


def build_engine(specs: list[str], params: list[str], tz: str) -> Engine:
    overrides = _params(params)
    rulesets = []
    for spec in specs:
        rs = load_ruleset(spec)
        if rs.name in overrides:
            rs = load_ruleset(spec, overrides.pop(rs.name))
        rulesets.append(rs)
    if overrides:
        raise SystemExit(f"--param names rule sets not loaded: {', '.join(overrides)}")
    return Engine(rulesets, tz=tz)

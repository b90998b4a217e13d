"""Rule sets: YAML files of dimensions with ordered segments, compiled once to CEL.

Shape (see ``rules/presets/*.yaml`` and the README)::

    ruleset: boostfeel
    description: ...
    clients: buyers                  # or all: clients known only from a profile or
                                     # communications are evaluated too (default buyers)
    params: {lost_days: 40}          # the "client matrix" a business tunes
    let: {r: "days_since_last_purchase <= 30 ? 5 : 1"}   # derived values, optional
    dimensions:
      - id: boostfeel
        default: other
        min_days: 0                  # hysteresis: minimum days in a segment (optional)
        segments:
          - {id: lost, when: "days_since_last_purchase >= lost_days"}
      - id: rfm_score
        value: "string(r) + string(f) + string(m)"   # computed segment id

Loading validates names, syntax and types and raises :class:`RuleSetError` naming the file,
line and rule. The version is a content hash of the file and the parameter overrides.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cel

from rules import population as pop
from rules import yamlines
from rules.celtext import (
    POPULATION,
    LexError,
    Threshold,
    Token,
    free_identifiers,
    join_population,
    substitute,
    thresholds,
    tokenize,
)
from rules.errors import RuleSetError
from rules.metrics import CATALOGUE, SAMPLES
from rules.metrics.profile import typecheck_contexts

PRESETS_DIR = Path(__file__).parent / "presets"
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TIMED_KINDS = ("days", "years", "countdown", "model")
CLIENTS = ("buyers", "all")


@dataclass(slots=True)
class Expr:
    """One compiled CEL expression with what it reads."""

    source: str
    text: str  # CEL source after parameter substitution
    program: Any
    names: tuple[str, ...]  # free variables: metrics and let names
    line: int
    thresholds: tuple[tuple[Threshold, Any, tuple[str, ...]], ...] = ()  # (th, rhs program, rhs names)
    map_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)  # category_share['x'] keys
    population: tuple[str, ...] = ()  # population statistics read (``population.<name>``)


@dataclass(slots=True)
class Segment:
    id: str
    when: Expr | None  # None: always matches
    min_days: int
    line: int
    description: str = ""


@dataclass(slots=True)
class Dimension:
    id: str
    ruleset: str
    version: str
    segments: list[Segment]
    default: str | None
    value: Expr | None
    min_days: int
    line: int
    description: str = ""
    # time sensitivity, filled by finalize()
    metrics: tuple[str, ...] = ()  # every catalogue metric read, through lets too
    thresholds: tuple[tuple[Threshold, Any, tuple[str, ...]], ...] = ()
    daily_windows: tuple[int, ...] = ()
    monthly_window: int = 0
    population: tuple[str, ...] = ()  # population statistics read, through lets too

    def exprs(self) -> list[Expr]:
        out = [s.when for s in self.segments if s.when is not None]
        return out + ([self.value] if self.value is not None else [])


@dataclass(slots=True)
class RuleSet:
    name: str
    version: str
    path: str
    description: str
    params: dict[str, Any]
    lets: dict[str, Expr]
    dimensions: list[Dimension]
    map_keys: dict[str, tuple[str, ...]]
    # population statistics the rule set reads, and how to compile it again with a
    # snapshot's values (:func:`bind`); ``bound``: compiled with real values
    population: dict[str, pop.Stat] = field(default_factory=dict)
    text: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    bound: bool = False
    doc: Any = field(default=None, repr=False, compare=False)  # the parsed YAML (bind reuses it)
    # who is evaluated: "buyers" (a client with a sale) or "all" (also a client known only
    # from a profile or communications: a welcome chain before the first purchase)
    clients: str = "buyers"


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.yaml"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve(spec: str) -> Path:
    """A preset name or a path to a YAML file."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    preset = preset_path(spec)
    if not preset.exists():
        raise RuleSetError(f"no preset {spec!r}; presets: {', '.join(preset_names())}", spec)
    return preset


def load(spec: str, overrides: dict[str, Any] | None = None) -> RuleSet:
    path = resolve(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleSetError(f"cannot read: {exc.strerror}", str(path)) from None
    return loads(text, str(path), overrides)


def loads(text: str, file: str = "<string>", overrides: dict[str, Any] | None = None,
          values: dict[str, Any] | None = None) -> RuleSet:
    """``values``: a population snapshot's values to compile ``population.<name>`` with."""
    doc = yamlines.load_mapping(text, file, "rule set")
    return _Compiler(file, doc, text, overrides or {}, values).build()


def bind(rs: RuleSet, values: dict[str, Any]) -> RuleSet:
    """The rule set compiled with a population snapshot's values (same version)."""
    if not rs.population:
        return rs
    doc = rs.doc if rs.doc is not None else yamlines.load_mapping(rs.text, rs.path, "rule set")
    return _Compiler(rs.path, doc, rs.text, rs.overrides,
                     {n: values.get(n, 0) for n in rs.population}).build()


class _Compiler:
    def __init__(self, file: str, doc: yamlines.LineDict, text: str, overrides: dict[str, Any],
                 values: dict[str, Any] | None = None):
        self.file, self.doc, self.text = file, doc, text
        self.values = values
        self.declared: dict[str, pop.Stat] = {}
        self.fixed: dict[str, Any] = {}  # statistics a parameter fixes (``fixed:``)
        self.read: dict[str, pop.Stat] = {}  # statistics the expressions read
        digest = hashlib.sha256(text.encode())
        for key in sorted(overrides):
            digest.update(f"\0{key}={overrides[key]!r}".encode())
        self.version = digest.hexdigest()[:12]
        self.overrides = overrides
        self.let_types: dict[str, Any] = {}
        self.let_metrics: dict[str, set[str]] = {}
        self.lets: dict[str, Expr] = {}

    def fail(self, message: str, line: int | None, rule: str | None = None) -> RuleSetError:
        return RuleSetError(message, self.file, line, rule)

    def build(self) -> RuleSet:
        doc = self.doc
        unknown = set(doc) - {"ruleset", "description", "source", "params", "let", "dimensions", POPULATION,
                              "clients"}
        if unknown:
            key = sorted(unknown)[0]
            raise self.fail(f"unknown key {key!r}", doc.line_of(key))
        name = doc.get("ruleset")
        if not isinstance(name, str) or not _ID.match(name):
            raise self.fail("'ruleset' must be an id like my_rules", doc.line_of("ruleset"))
        clients = doc.get("clients", "buyers")
        if clients not in CLIENTS:
            raise self.fail(f"'clients' must be one of {CLIENTS}", doc.line_of("clients"))
        params = self._params(doc.get("params"), doc.line_of("params"), None)
        local_names: set[str] = set()
        for dim in doc.get("dimensions") or []:
            if isinstance(dim, dict) and isinstance(dim.get("params"), dict):
                local_names.update(dim["params"])
        for key, value in self.overrides.items():
            if key in params:
                params[key] = _coerce(key, params[key], value, self.fail)
            elif key not in local_names:
                raise self.fail(f"override of unknown parameter {key!r}", None)
        self._declare(doc.get(POPULATION), doc.line_of(POPULATION), params)
        lets = doc.get("let") or {}
        if not isinstance(lets, dict):
            raise self.fail("'let' must be a mapping of name: expression", doc.line_of("let"))
        for let_name, source in lets.items():
            line = lets.line_of(let_name) if isinstance(lets, yamlines.LineDict) else None
            if not _ID.match(let_name) or let_name in CATALOGUE or let_name in params:
                raise self.fail(f"let name {let_name!r} is invalid or shadows a metric/parameter", line, let_name)
            expr, sample = self._compile(source, params, line, let_name, want=None)
            self.lets[let_name] = expr
            self.let_types[let_name] = sample
            self.let_metrics[let_name] = self._metrics_of(expr)
        dims_doc = doc.get("dimensions")
        if not isinstance(dims_doc, list) or not dims_doc:
            raise self.fail("'dimensions' must be a non-empty list", doc.line_of("dimensions"))
        dims: list[Dimension] = []
        for raw in dims_doc:
            dim = self._dimension(raw, params, name)
            if any(d.id == dim.id for d in dims):
                raise self.fail(f"duplicate dimension id {dim.id!r}", dim.line, dim.id)
            dims.append(dim)
        map_keys: dict[str, set[str]] = {}
        for expr in [*self.lets.values(), *(e for d in dims for e in d.exprs())]:
            for metric, keys in expr.map_keys.items():
                map_keys.setdefault(metric, set()).update(keys)
        return RuleSet(name, self.version, self.file, str(doc.get("description", "")), params,
                       self.lets, dims, {k: tuple(sorted(v)) for k, v in map_keys.items()},
                       dict(sorted(self.read.items())), self.text, self.overrides,
                       self.values is not None, doc if self.read else None, clients)

    def _declare(self, raw: Any, line: int, params: dict[str, Any]) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            raise self.fail("'population' must be a mapping of name: statistic", line)
        for name, spec in raw.items():
            key_line = raw.line_of(name) if isinstance(raw, yamlines.LineDict) else line
            if not _ID.match(name) or name in pop.BUILTINS:
                raise self.fail(f"population statistic name {name!r} is invalid or built in", key_line)
            try:
                self.declared[name] = pop.declare(name, spec, params)
            except pop.PopulationError as exc:
                raise self.fail(str(exc), key_line, f"population.{name}") from None
            fixed = spec.get("fixed")
            if fixed is not None:
                value = params.get(fixed) if isinstance(fixed, str) else None
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise self.fail(f"'fixed' must name a number parameter, got {fixed!r}", key_line,
                                    f"population.{name}")
                if value > 0:  # a positive parameter replaces the statistic
                    self.fixed[name] = value

    def _population_values(self, tokens: list[Token], line: int | None, rule: str) -> dict[str, Any]:
        """``population.<name>`` identifiers -> the values they compile with."""
        out: dict[str, Any] = {}
        for _, tok in free_identifiers(tokens):
            if not tok.text.startswith(POPULATION + "."):
                continue
            name = tok.text[len(POPULATION) + 1:]
            stat = self.declared.get(name) or pop.BUILTINS.get(name)
            if stat is None:
                known = sorted({*self.declared, *pop.BUILTINS})
                raise self.fail(f"unknown population statistic {name!r} (declare it under "
                                f"'population:'; known: {', '.join(known)})", line, rule)
            if name in self.fixed:
                value = self.fixed[name]
            else:
                self.read[name] = stat
                value = pop.sample(stat) if self.values is None else self.values.get(name, 0)
            out[tok.text] = float(value) if stat.cel_type == "double" else int(value)
        return out

    def _params(self, raw: Any, line: int, rule: str | None) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.fail("'params' must be a mapping", line, rule)
        for key, value in raw.items():
            key_line = raw.line_of(key) if isinstance(raw, yamlines.LineDict) else line
            if not _ID.match(key) or key in CATALOGUE:
                raise self.fail(f"parameter name {key!r} is invalid or shadows a metric", key_line, rule)
            if not isinstance(value, (bool, int, float, str)):
                raise self.fail(f"parameter {key!r} must be a number, string or boolean", key_line, rule)
        return dict(raw)

    def _lets_used(self, expr: Expr) -> list[str]:
        """Let names an expression reads, directly or through other lets."""
        found: list[str] = []
        todo = [n for n in expr.names if n in self.lets]
        while todo:
            name = todo.pop()
            if name not in found:
                found.append(name)
                todo.extend(n for n in self.lets[name].names if n in self.lets)
        return found

    def _metrics_of(self, expr: Expr) -> set[str]:
        out: set[str] = set()
        for n in expr.names:
            out |= self.let_metrics[n] if n in self.lets else {n}
        return out

    def _compile(
        self, source: Any, params: dict[str, Any], line: int | None, rule: str, want: str | None
    ) -> tuple[Expr, Any]:
        if not isinstance(source, str) or not source.strip():
            raise self.fail("an expression must be a non-empty string", line, rule)
        try:
            tokens = join_population(tokenize(source))
        except LexError as exc:
            raise self.fail(f"syntax error: {exc}", line, rule) from None
        reads = self._population_values(tokens, line, rule)
        params = {**params, **reads} if reads else params
        names: list[str] = []
        for _, tok in free_identifiers(tokens):
            if tok.text in params:
                continue
            if tok.text not in CATALOGUE and tok.text not in self.lets:
                raise self.fail(f"unknown metric {tok.text!r} (see the metric catalogue)", line, rule)
            if tok.text not in names:
                names.append(tok.text)
        text = substitute(tokens, params)
        try:
            program = cel.compile(text)
        except ValueError as exc:
            message = str(exc).split("\n")[0]
            raise self.fail(f"syntax error: {message}", line, rule) from None
        timed = {n for n in CATALOGUE if CATALOGUE[n].kind in TIMED_KINDS}
        try:
            found = thresholds(tokens, timed)
        except LexError as exc:
            raise self.fail(str(exc), line, rule) from None
        compiled_th = []
        for th in found:
            rhs_tokens = join_population(tokenize(th.rhs))
            rhs_names = tuple(dict.fromkeys(
                t.text for _, t in free_identifiers(rhs_tokens) if t.text not in params
            ))
            for n in rhs_names:
                kind = CATALOGUE[n].kind if n in CATALOGUE else ("let" if self._let_is_static(n) else "timed let")
                if kind not in ("static", "let"):
                    raise self.fail(
                        f"{th.metric} is compared with {th.rhs!r}, which changes with time; "
                        "compare with values that change only with receipts", line, rule)
            try:
                rhs_program = cel.compile(substitute(rhs_tokens, params))
            except ValueError as exc:
                raise self.fail(f"syntax error: {exc}", line, rule) from None
            if not rhs_names:  # constant once parameters are substituted
                try:
                    rhs_program = rhs_program.execute({})
                except Exception as exc:
                    raise self.fail(f"error in {th.rhs!r}: {exc}", line, rule) from None
            compiled_th.append((th, rhs_program, rhs_names))
        read = tuple(n for n in (r[len(POPULATION) + 1:] for r in reads) if n not in self.fixed)
        expr = Expr(source, text, program, tuple(names), line or 0, tuple(compiled_th), _map_keys(tokens), read)
        sample = self._typecheck(expr, line, rule, want)
        return expr, sample

    def _let_is_static(self, name: str) -> bool:
        return name in self.lets and all(CATALOGUE[m].kind == "static" for m in self.let_metrics[name])

    def _typecheck(self, expr: Expr, line: int | None, rule: str, want: str | None) -> Any:
        ctx: dict[str, Any] = {}
        for n in expr.names:
            if n in self.lets:
                ctx[n] = self.let_types[n]
            else:
                sample = SAMPLES[CATALOGUE[n].type]
                if CATALOGUE[n].type == "map":
                    sample = dict(sample)
                    for key in expr.map_keys.get(n, ()):
                        sample[key] = 0.5
                ctx[n] = sample
        failure: RuleSetError | None = None
        for variant in typecheck_contexts(tokenize(expr.text), ctx):  # several if it reads attributes
            try:
                result = expr.program.execute(variant)
            except Exception as exc:
                message = str(exc).split("\n")[0]
                failure = failure or self.fail(f"type error: {message}", line, rule)
                continue
            if want == "bool" and not isinstance(result, bool):
                failure = failure or self.fail(f"a condition must be boolean, got {type(result).__name__}", line, rule)
            elif want == "scalar" and not isinstance(result, (str, int, float, bool)):
                failure = failure or self.fail("a value must be a string or number", line, rule)
            else:
                ctx = variant
                break
        else:
            assert failure is not None
            raise failure
        for th, rhs_program, rhs_names in expr.thresholds:
            value = rhs_program
            if rhs_names:
                rhs_ctx = {n: ctx[n] if n in ctx else self._sample(n) for n in rhs_names}
                try:
                    value = rhs_program.execute(rhs_ctx)
                except Exception as exc:
                    raise self.fail(f"type error in {th.rhs!r}: {exc}", line, rule) from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(f"{th.metric} must be compared with a number", line, rule)
        return result

    def _sample(self, name: str) -> Any:
        return self.let_types[name] if name in self.lets else SAMPLES[CATALOGUE[name].type]

    def _dimension(self, raw: Any, params: dict[str, Any], ruleset: str) -> Dimension:
        if not isinstance(raw, yamlines.LineDict):
            raise self.fail("a dimension is a mapping", None)
        allowed = {"id", "description", "params", "default", "min_days", "segments", "value"}
        for key in raw:
            if key not in allowed:
                raise self.fail(f"unknown key {key!r} in dimension", raw.line_of(key), raw.get("id"))
        dim_id = raw.get("id")
        if not isinstance(dim_id, str) or not _ID.match(dim_id):
            raise self.fail("dimension 'id' must be an id like my_dimension", raw.line_of("id"))
        merged = dict(params)
        local = self._params(raw.get("params"), raw.line_of("params"), dim_id)
        merged.update(local)
        for key, value in self.overrides.items():
            if key in local:
                merged[key] = _coerce(key, local[key], value, self.fail)
        min_days = _nonneg_int(raw.get("min_days", 0), lambda m: self.fail(m, raw.line_of("min_days"), dim_id))
        value_expr = None
        segments: list[Segment] = []
        if "value" in raw:
            if "segments" in raw:
                raise self.fail("a dimension has either 'segments' or 'value'", raw.line, dim_id)
            value_expr, _ = self._compile(raw["value"], merged, raw.line_of("value"), dim_id, "scalar")
        else:
            segs = raw.get("segments")
            if not isinstance(segs, list) or not segs:
                raise self.fail("'segments' must be a non-empty list", raw.line_of("segments"), dim_id)
            for seg_raw in segs:
                segments.append(self._segment(seg_raw, merged, dim_id, min_days, segments))
        default = raw.get("default")
        if default is not None:
            if not isinstance(default, str) or not _ID.match(default):
                raise self.fail("'default' must be a segment id", raw.line_of("default"), dim_id)
        elif value_expr is None and segments[-1].when is not None:
            raise self.fail("a dimension needs a 'default' segment or a last segment without 'when'",
                            raw.line_of("segments"), dim_id)
        dim = Dimension(dim_id, ruleset, self.version, segments, default, value_expr, min_days,
                        raw.line, str(raw.get("description", "")))
        self._finalize(dim)
        return dim

    def _segment(self, raw: Any, params: dict[str, Any], dim_id: str, dim_min: int,
                 seen: list[Segment]) -> Segment:
        if not isinstance(raw, yamlines.LineDict):
            raise self.fail("a segment is a mapping with 'id' and 'when'", None, dim_id)
        seg_id = raw.get("id")
        if not isinstance(seg_id, str) or not _ID.match(seg_id):
            raise self.fail("segment 'id' must be an id like at_risk", raw.line_of("id"), dim_id)
        rule = f"{dim_id}.{seg_id}"
        for key in raw:
            if key not in ("id", "when", "min_days", "description"):
                raise self.fail(f"unknown key {key!r} in segment", raw.line_of(key), rule)
        if any(s.id == seg_id for s in seen):
            raise self.fail(f"duplicate segment id {seg_id!r}", raw.line_of("id"), rule)
        when = None
        if raw.get("when") is not None:
            when, _ = self._compile(raw["when"], params, raw.line_of("when"), rule, "bool")
        min_days = _nonneg_int(raw.get("min_days", dim_min), lambda m: self.fail(m, raw.line_of("min_days"), rule))
        return Segment(seg_id, when, min_days, raw.line, str(raw.get("description", "")))

    def _finalize(self, dim: Dimension) -> None:
        metrics: set[str] = set()
        reads: set[str] = set()
        ths: list[tuple[Threshold, Any, tuple[str, ...]]] = []
        for expr in dim.exprs():
            metrics |= self._metrics_of(expr)
            reads.update(expr.population)
            ths.extend(expr.thresholds)
            for n in self._lets_used(expr):
                ths.extend(self.lets[n].thresholds)
                reads.update(self.lets[n].population)
        if any(CATALOGUE[m].kind == "model" for m in metrics):  # p_alive...: the fitted models
            reads.add(pop.PREDICTIVE.name)
            self.read[pop.PREDICTIVE.name] = pop.PREDICTIVE
        dim.population = tuple(sorted(reads))
        dim.metrics = tuple(sorted(metrics))
        dim.thresholds = tuple(dict.fromkeys(ths))
        dim.daily_windows = tuple(sorted({CATALOGUE[m].window for m in metrics if CATALOGUE[m].kind == "daily"}))
        dim.monthly_window = max((CATALOGUE[m].window for m in metrics if CATALOGUE[m].kind == "monthly"), default=0)


def _coerce(name: str, default: Any, value: Any, fail: Any) -> Any:
    """An override takes the type of the parameter's default."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return value.lower() == "true"
            return bool(value)
        if isinstance(default, (int, float)) and isinstance(value, bool):
            raise ValueError(value)
        return type(default)(value)
    except (TypeError, ValueError):
        raise fail(f"override {name}={value!r} is not a {type(default).__name__}", None) from None


def _nonneg_int(value: Any, fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail("min_days must be a whole number >= 0")
    return value


def _map_keys(tokens: list[Token]) -> dict[str, tuple[str, ...]]:
    """String keys used as ``metric['key']`` for map metrics (missing keys read as 0.0)."""
    found: dict[str, list[str]] = {}
    for i, tok in free_identifiers(tokens):
        metric = CATALOGUE.get(tok.text)
        if metric is None or metric.type != "map" or metric.dynamic:  # attributes: no default
            continue
        if i + 3 < len(tokens) and tokens[i + 1].text == "[" and tokens[i + 2].kind == "str":
            key = tokens[i + 2].text.lstrip("rRbB")[1:-1]
            found.setdefault(tok.text, []).append(key)
    return {k: tuple(v) for k, v in found.items()}

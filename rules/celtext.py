"""Lexical work on CEL source: parameter substitution and time-threshold extraction.

The ``common-expression-language`` package compiles and runs CEL but exposes no syntax
tree. Two things need one: replacing parameter names by their values before compiling,
and finding, for every time-dependent metric (``days_since_*``, ``age``), the comparison it
appears in so ``next_due`` can compute the exact step at which the comparison flips.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/%?:.,()\[\]{}])
    """,
    re.VERBOSE,
)
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_STOP = ("&&", "||", "?", ":", ",")
KEYWORDS = frozenset({"true", "false", "null", "in", "int", "uint", "double", "string", "bool",
                      "bytes", "size", "has", "all", "exists", "exists_one", "map", "filter",
                      "matches", "startsWith", "endsWith", "contains", "duration", "timestamp",
                      "type", "dyn", "list"})


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    pos: int


class LexError(ValueError):
    def __init__(self, pos: int, message: str) -> None:
        self.pos = pos
        super().__init__(message)


def tokenize(source: str) -> list[Token]:
    return list(_tokens(source))


@functools.lru_cache(maxsize=4096)
def _tokens(source: str) -> tuple[Token, ...]:
    """Tokens of a source text (memoized: a population snapshot recompiles the same rules)."""
    out: list[Token] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise LexError(pos, f"unexpected character {source[pos]!r} at column {pos + 1}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append(Token(kind, m.group(), pos))
        pos = m.end()
    return tuple(out)


POPULATION = "population"


def join_population(tokens: list[Token]) -> list[Token]:
    """``population . name`` as one identifier token ``population.name`` (a value of the
    population snapshot, substituted like a parameter)."""
    if not any(t.text == POPULATION for t in tokens):
        return tokens
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if (tok.kind == "ident" and tok.text == POPULATION and i + 2 < len(tokens)
                and tokens[i + 1].text == "." and tokens[i + 2].kind == "ident"
                and (i == 0 or tokens[i - 1].text != ".")):
            out.append(Token("ident", f"{POPULATION}.{tokens[i + 2].text}", tok.pos))
            i += 3
            continue
        out.append(tok)
        i += 1
    return out


def free_identifiers(tokens: list[Token]) -> list[tuple[int, Token]]:
    """Identifiers that name variables: not after '.', not called as functions."""
    found = []
    for i, tok in enumerate(tokens):
        if tok.kind != "ident" or tok.text in KEYWORDS:
            continue
        if i > 0 and tokens[i - 1].text == ".":
            continue
        if i + 1 < len(tokens) and tokens[i + 1].text == "(":
            continue
        found.append((i, tok))
    return found


def literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if ("." in text or "e" in text or "n" in text) else text + ".0"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise TypeError(f"parameter value of unsupported type {type(value).__name__}")


def substitute(tokens: list[Token], params: dict[str, Any]) -> str:
    """Source text with parameter names replaced by their literal values."""
    replace = {i: literal(params[t.text]) for i, t in free_identifiers(tokens) if t.text in params}
    return " ".join(replace.get(i, t.text) for i, t in enumerate(tokens))


@dataclass(frozen=True, slots=True)
class Threshold:
    """``metric <op> <rhs>``, normalised so that the metric is on the left."""

    metric: str
    op: str
    rhs: str  # CEL source over time-invariant names


def _span(tokens: list[Token], start: int, step: int) -> int:
    """Walk from ``start`` in direction ``step`` to the end of one comparison operand."""
    depth, i = 0, start
    while 0 <= i < len(tokens):
        text = tokens[i].text
        opening, closing = ("(", "[", "{"), (")", "]", "}")
        if text in (opening if step > 0 else closing):
            depth += 1
        elif text in (closing if step > 0 else opening):
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and (text in _STOP or text in COMPARISONS):
            break
        i += step
    return i


def thresholds(tokens: list[Token], timed: set[str]) -> list[Threshold]:
    """Every comparison of a time-dependent metric. Raises LexError for other uses."""
    found = []
    for i, tok in free_identifiers(tokens):
        if tok.text not in timed:
            continue
        nxt = tokens[i + 1].text if i + 1 < len(tokens) else ""
        prv = tokens[i - 1].text if i > 0 else ""
        if nxt in COMPARISONS and prv not in ("+", "-", "*", "/", "%", "!") and prv not in COMPARISONS:
            end = _span(tokens, i + 2, 1)
            rhs = tokens[i + 2 : end]
            op = nxt
        elif prv in COMPARISONS and nxt not in ("+", "-", "*", "/", "%", ".", "["):
            begin = _span(tokens, i - 2, -1)
            rhs = tokens[begin + 1 : i - 1]
            op = _MIRROR[prv]
        else:
            raise LexError(
                tok.pos,
                f"time-dependent metric {tok.text} must be compared directly "
                f"({tok.text} >= <expression>) so its due time can be computed",
            )
        if not rhs:
            raise LexError(tok.pos, f"comparison of {tok.text} has no other side")
        found.append(Threshold(tok.text, op, " ".join(t.text for t in rhs)))
    return found

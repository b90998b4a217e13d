"""Which inputs of a CEL program can change its result: a cache key for evaluations.

Most conditions compare a metric with a constant (``visits_30d >= 25``). If every use of a
variable in the program is such a comparison, the result depends only on where the value
falls among those constants, not on the value itself: 26 and 31 visits give the same
answer. :class:`ResultKey` turns the inputs of one evaluation into that coarse key
(interval index for such variables, the exact value for every other variable), so equal
keys have equal results and one CEL call serves all of them.

A use counts as a comparison with a constant only when nothing around it binds tighter:
``IDENT op NUMBER`` or ``NUMBER op IDENT`` with a separator (``(``, ``)``, ``&&``, ``||``,
``?``, ``:``, ``,``, ``[``, ``]`` or the ends) on both sides. Anything else, such as
``visits_30d + 1 >= 10``, ``x >= y`` or ``category_share['tea']``, keys on the exact value.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from rules.celtext import COMPARISONS, Token, free_identifiers, tokenize

_BEFORE = frozenset({"(", "&&", "||", "?", ":", ",", "["})
_AFTER = frozenset({")", "&&", "||", "?", ":", ",", "]"})
_NUMBER = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?\Z")

_SCALARS = frozenset({int, float, str, bool, type(None)})
Spec = tuple[tuple[float, ...], frozenset[float]] | None


def _number_at(tokens: list[Token], i: int, step: int) -> tuple[float, int] | None:
    """A numeric literal starting at ``i`` (``-`` allowed in front): (value, index past it)."""
    if step > 0:
        if i < len(tokens) and tokens[i].text == "-" and i + 1 < len(tokens):
            text, end = "-" + tokens[i + 1].text, i + 2
        else:
            text, end = (tokens[i].text if i < len(tokens) else ""), i + 1
    else:
        text, end = (tokens[i].text if i >= 0 else ""), i - 1
        if end >= 0 and tokens[end].text == "-" and (end == 0 or tokens[end - 1].text in _BEFORE):
            text, end = "-" + text, end - 1
    if not _NUMBER.match(text):
        return None
    return float(text), end


def _comparison_constant(tokens: list[Token], i: int) -> float | None:
    """The constant ``tokens[i]`` is compared with, if that is all that happens to it."""
    def sep(j: int, allowed: frozenset[str]) -> bool:
        return j < 0 or j >= len(tokens) or tokens[j].text in allowed

    if i + 2 <= len(tokens) and i + 1 < len(tokens) and tokens[i + 1].text in COMPARISONS:
        found = _number_at(tokens, i + 2, 1)
        if found is not None and sep(i - 1, _BEFORE) and sep(found[1], _AFTER):
            return found[0]
    if i >= 2 and tokens[i - 1].text in COMPARISONS:
        found = _number_at(tokens, i - 2, -1)
        if found is not None and sep(i + 1, _AFTER) and sep(found[1], _BEFORE):
            return found[0]
    return None


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class ResultKey:
    """Builds the cache key of one evaluation from the variable values, in ``names`` order."""

    __slots__ = ("names", "specs")

    def __init__(self, source: str, names: Sequence[str]) -> None:
        tokens = tokenize(source)
        cuts: dict[str, set[float] | None] = {n: set() for n in names}
        for i, tok in free_identifiers(tokens):
            current = cuts.get(tok.text)
            if tok.text not in cuts or current is None:
                continue
            constant = _comparison_constant(tokens, i)
            if constant is None:
                cuts[tok.text] = None  # used some other way: key on the exact value
            else:
                current.add(constant)
        self.names = tuple(names)
        self.specs: tuple[Spec, ...] = tuple(
            None if c is None else (tuple(sorted(c)), frozenset(c)) for c in (cuts[n] for n in names)
        )

    def abstracted(self) -> list[str]:
        """Names keyed by interval rather than by value (for tests and docs)."""
        return [n for n, s in zip(self.names, self.specs, strict=True) if s is not None]

    def key(self, values: Sequence[Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        append = out.append
        for value, spec in zip(values, self.specs, strict=True):
            if spec is None:
                append(value if value.__class__ in _SCALARS else _frozen(value))
            elif value.__class__ is int or value.__class__ is float:
                if value != value:  # NaN compares false with everything
                    append("nan")
                else:
                    append(bisect_left(spec[0], value) * 2 + (value in spec[1]))
            else:
                append(("value", _frozen(value)))
        return tuple(out)

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
``visits_30d + 1 >= 10`` or ``x >= y``, keys on the exact value.

Four more shapes are keyed coarsely, as preset rule sets write them:

* a constant may be a product or quotient of literals (``x >= 3.0 * 2000.0`` once the
  parameters are substituted);
* ``m['key'] <op> NUMBER`` for a map variable: the interval of each named key's value
  (a missing key is keyed apart: ``category_share`` reads it as 0.0, but ``attributes``
  leaves it missing, and reading it is an error);
* ``int(x) / N`` with an integer ``N > 0``: the truncated quotient, so the value bands of
  ``check_bands`` cost one CEL call per band, not per distinct average check;
* ``a <op> b`` for two variables, either optionally times a literal (netix's
  ``days_since_last_purchase > 1.5 * mean_interval_days``, ``<``, ``<=``, ``>``, ``>=``):
  the comparison's truth value (an extra key component), computed as CEL does (an int
  compared with a double as doubles, NaN an error, int times double an error).

A variable used in several of these ways is keyed on all of them together; one use of any
other shape makes it exact.
"""

from __future__ import annotations

import operator
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from rules.celtext import COMPARISONS, Token, free_identifiers, tokenize

_BEFORE = frozenset({"(", "&&", "||", "?", ":", ",", "["})
_AFTER = frozenset({")", "&&", "||", "?", ":", ",", "]"})
_NUMBER = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?\Z")

_SCALARS = frozenset({int, float, str, bool, type(None)})
_INT64 = 2**63
Cuts = tuple[tuple[float, ...], frozenset[float]]


class Facets:
    """Coarse key of a variable used in more than plain comparisons with constants."""

    __slots__ = ("bands", "cuts", "items")

    def __init__(self, cuts: set[float], items: dict[str, set[float]], bands: set[int]) -> None:
        self.cuts: Cuts | None = (tuple(sorted(cuts)), frozenset(cuts)) if cuts else None
        self.items = tuple((k, (tuple(sorted(c)), frozenset(c))) for k, c in sorted(items.items()))
        self.bands = tuple(sorted(bands))

    def key(self, value: Any) -> Any:
        out: list[Any] = []
        if self.items:
            if not isinstance(value, dict):
                return ("value", _frozen(value))
            for k, cuts in self.items:
                out.append(_interval(value[k], cuts) if k in value else "missing")
        if self.cuts is not None:
            out.append(_interval(value, self.cuts))
        for n in self.bands:
            out.append(_band(value, n))
        return tuple(out)


Spec = Cuts | Facets | None


def _interval(value: Any, cuts: Cuts) -> Any:
    if value.__class__ is int or value.__class__ is float:
        if value != value:  # NaN compares false with everything
            return "nan"
        return bisect_left(cuts[0], value) * 2 + (value in cuts[1])
    return ("value", _frozen(value))


def _band(value: Any, n: int) -> Any:
    """``int(value) / n`` as CEL computes it (truncation), or a marker where int() fails."""
    if value.__class__ is float:
        if value != value or abs(value) >= _INT64:
            return ("fail", value != value)
        whole = int(value)
    elif value.__class__ is int:
        whole = value
    else:
        return ("value", _frozen(value))
    q = abs(whole) // n
    return -q if whole < 0 else q


def _literal(tokens: list[Token], i: int) -> float | None:
    if 0 <= i < len(tokens) and _NUMBER.match(tokens[i].text):
        text = tokens[i].text
        return int(text) if text.lstrip("-").isdigit() else float(text)
    return None


def _fold(values: list[float], ops: list[str]) -> float | None:
    """Left-to-right ``*`` and ``/`` of literals as CEL computes them (None: not foldable)."""
    acc = values[0]
    for op, v in zip(ops, values[1:], strict=True):
        if type(acc) is not type(v):
            return None  # int * double does not type-check in CEL
        if op == "*":
            acc = acc * v
        elif v == 0:
            return None
        elif isinstance(acc, int):
            q = abs(acc) // abs(int(v))
            acc = q if (acc < 0) == (v < 0) else -q
        else:
            acc = acc / v
    return acc


def _number_at(tokens: list[Token], i: int, step: int) -> tuple[float, int] | None:
    """A constant starting at ``i`` and read in direction ``step``: a literal (``-`` allowed
    in front) or a product/quotient of literals. Returns (value, index past it)."""
    values: list[float] = []
    ops: list[str] = []
    j = i
    while True:
        neg = False
        if step > 0 and j < len(tokens) and tokens[j].text == "-" and j + 1 < len(tokens):
            neg, j = True, j + 1
        v = _literal(tokens, j)
        if v is None:
            return None
        j += step
        if step < 0 and j >= 0 and tokens[j].text == "-" and (j == 0 or tokens[j - 1].text in _BEFORE):
            neg, j = True, j - 1
        values.append(-v if neg else v)
        if 0 <= j < len(tokens) and 0 <= j + step < len(tokens) and tokens[j].text in ("*", "/"):
            ops.append(tokens[j].text)
            j += step
            continue
        break
    if step < 0:
        values.reverse()
        ops.reverse()
    value = _fold(values, ops)
    if value is None:
        return None
    return float(value), j


def _comparison_constant(tokens: list[Token], i: int, end: int | None = None) -> float | None:
    """The constant ``tokens[i:end+1]`` (a variable, or ``m['k']``) is compared with, if
    that is all that happens to it."""
    end = i if end is None else end

    def sep(j: int, allowed: frozenset[str]) -> bool:
        return j < 0 or j >= len(tokens) or tokens[j].text in allowed

    if end + 1 < len(tokens) and tokens[end + 1].text in COMPARISONS:
        found = _number_at(tokens, end + 2, 1)
        if found is not None and sep(i - 1, _BEFORE) and sep(found[1], _AFTER):
            return found[0]
    if i >= 2 and tokens[i - 1].text in COMPARISONS:
        found = _number_at(tokens, i - 2, -1)
        if found is not None and sep(end + 1, _AFTER) and sep(found[1], _BEFORE):
            return found[0]
    return None


def _map_item(tokens: list[Token], i: int) -> str | None:
    """``'key'`` if ``tokens[i]`` is indexed by a plain string literal: ``m['key']``."""
    if i + 3 < len(tokens) and tokens[i + 1].text == "[" and tokens[i + 3].text == "]":
        tok = tokens[i + 2]
        if tok.kind == "str" and tok.text[:1] in "'\"" and "\\" not in tok.text \
                and not tok.text.startswith(("'''", '"""')):
            return tok.text[1:-1]
    return None


def _band_divisor(tokens: list[Token], i: int) -> int | None:
    """N if ``tokens[i]`` appears as ``int(x) / N`` with an integer literal N > 0."""
    if i >= 2 and tokens[i - 1].text == "(" and tokens[i - 2].text == "int" \
            and (i < 3 or tokens[i - 3].text != ".") \
            and i + 3 < len(tokens) and tokens[i + 1].text == ")" and tokens[i + 2].text == "/" \
            and tokens[i + 3].text.isdigit() and int(tokens[i + 3].text) > 0 \
            and not (i + 4 < len(tokens) and tokens[i + 4].text in (".", "[")):
        return int(tokens[i + 3].text)
    return None


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
Side = tuple[int, float | None, int, int]  # (identifier position, factor, first, last token)
Atom = tuple[int, float | None, Callable[[Any, Any], bool], int, float | None]


def _side(tokens: list[Token], p: int, step: int, names: Sequence[str]) -> Side | None:
    """A variable, optionally times a literal (``x``, ``1.5 * x``, ``x * 2``), read from
    ``p`` in direction ``step``."""
    def ident(j: int) -> bool:
        return 0 <= j < len(tokens) and tokens[j].kind == "ident" and tokens[j].text in names

    def star(j: int) -> bool:
        return 0 <= j < len(tokens) and tokens[j].text == "*"

    if ident(p):
        k = _literal(tokens, p + 2 * step) if star(p + step) else None
        if k is not None:
            return (p, k, min(p, p + 2 * step), max(p, p + 2 * step))
        return (p, None, p, p)
    k = _literal(tokens, p)
    if k is not None and star(p + step) and ident(p + 2 * step):
        q = p + 2 * step
        return (q, k, min(p, q), max(p, q))
    return None


def _atoms(tokens: list[Token], names: Sequence[str]) -> tuple[list[Atom], set[int]]:
    """Order comparisons of two (scaled) variables, ``a > 1.5 * b``: keyed by their truth
    value. Returns the atoms and the identifier positions they account for."""
    atoms: list[Atom] = []
    used: set[int] = set()
    for c, tok in enumerate(tokens):
        if tok.text not in _ORDER:
            continue
        left, right = _side(tokens, c - 1, -1, names), _side(tokens, c + 1, 1, names)
        if left is None or right is None or left[3] != c - 1 or right[2] != c + 1:
            continue
        before, after = left[2] - 1, right[3] + 1
        if (before >= 0 and tokens[before].text not in _BEFORE) or \
                (after < len(tokens) and tokens[after].text not in _AFTER):
            continue
        a, b = tokens[left[0]].text, tokens[right[0]].text
        atoms.append((list(names).index(a), left[1], _ORDER[tok.text], list(names).index(b), right[1]))
        used.update((left[0], right[0]))
    return atoms, used


def _scaled(value: Any, factor: float | None) -> Any:
    """``factor * value`` as CEL computes it; None where CEL would fail or it is no number."""
    if value.__class__ is not int and value.__class__ is not float:
        return None
    if factor is None:
        return value
    if factor.__class__ is not value.__class__:
        return None  # int * double does not exist in CEL
    out = factor * value
    return None if out.__class__ is int and abs(out) >= _INT64 else out


def _truth(values: Sequence[Any], atom: Atom) -> Any:
    i, fi, op, j, fj = atom
    a, b = _scaled(values[i], fi), _scaled(values[j], fj)
    if a is None or b is None:
        return ("x", _frozen(values[i]), _frozen(values[j]))
    if a != a or b != b:  # CEL's ordering of NaN is an error
        return "nan"
    if a.__class__ is not b.__class__:  # CEL compares int with double as doubles
        a, b = float(a), float(b)
    return op(a, b)


class ResultKey:
    """Builds the cache key of one evaluation from the variable values, in ``names`` order."""

    __slots__ = ("atoms", "names", "specs")

    def __init__(self, source: str, names: Sequence[str]) -> None:
        tokens = tokenize(source)
        uses: dict[str, tuple[set[float], dict[str, set[float]], set[int]] | None] = {
            n: (set(), {}, set()) for n in names}
        self.atoms, in_atoms = _atoms(tokens, names)
        for i, tok in free_identifiers(tokens):
            current = uses.get(tok.text)
            if current is None or i in in_atoms:
                continue
            cuts, items, bands = current
            item = _map_item(tokens, i)
            constant = _comparison_constant(tokens, i, i + 3 if item is not None else i)
            divisor = _band_divisor(tokens, i) if item is None else None
            if constant is not None and item is not None:
                items.setdefault(item, set()).add(constant)
            elif constant is not None:
                cuts.add(constant)
            elif divisor is not None:
                bands.add(divisor)
            else:
                uses[tok.text] = None  # used some other way: key on the exact value
        self.names = tuple(names)
        specs: list[Spec] = []
        for n in names:
            use = uses[n]
            if use is None:
                specs.append(None)
            elif use[1] or use[2]:
                specs.append(Facets(*use))
            else:
                specs.append((tuple(sorted(use[0])), frozenset(use[0])))
        self.specs: tuple[Spec, ...] = tuple(specs)

    def abstracted(self) -> list[str]:
        """Names keyed by interval rather than by value (for tests and docs)."""
        return [n for n, s in zip(self.names, self.specs, strict=True) if s is not None]

    def key(self, values: Sequence[Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        append = out.append
        for value, spec in zip(values, self.specs, strict=True):
            if spec is None:
                append(value if value.__class__ in _SCALARS else _frozen(value))
            elif spec.__class__ is Facets:
                append(spec.key(value))
            elif value.__class__ is int or value.__class__ is float:
                if value != value:  # NaN compares false with everything
                    append("nan")
                else:
                    append(bisect_left(spec[0], value) * 2 + (value in spec[1]))  # type: ignore[index]
            else:
                append(("value", _frozen(value)))
        for atom in self.atoms:
            append(_truth(values, atom))
        return tuple(out)

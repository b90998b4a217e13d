"""YAML loading that remembers the line of every mapping value (for error messages)."""

from __future__ import annotations

from typing import Any

import yaml


class LineDict(dict[str, Any]):
    """A mapping from YAML with ``line`` (its own) and ``lines`` (per key, 1-based)."""

    line: int = 0
    lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        if key in out:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = value_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_mapping(text: str, file: str, what: str) -> LineDict:
    """A YAML document that must be a mapping; errors are RuleSetError with file and line."""
    from rules.errors import RuleSetError

    try:
        doc = load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise RuleSetError(f"YAML: {exc.problem}", file, line) from None
    except yaml.YAMLError as exc:
        raise RuleSetError(f"YAML: {exc}", file) from None
    if not isinstance(doc, LineDict):
        raise RuleSetError(f"a {what} is a YAML mapping", file, 1)
    return doc

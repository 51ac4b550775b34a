"""JSON objects with a repeated key are an error, not "the last one wins".

`json.loads` silently keeps the last of two equal keys, so a workflow with two nodes of the same
id, or an input set twice, would lose one without a word. `loads_unique` parses with a pairs hook
that refuses repeats; only then (the rare error path) a small tokenizer finds the line of the
repeated key, so the message can name it.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]')


class DuplicateKeyError(ValueError):
    """A key that appears twice in one JSON object; `line` is where the second one is (1-based)."""

    def __init__(self, key: str, line: int | None) -> None:
        self.key, self.line = key, line
        where = f" at line {line}" if line else ""
        super().__init__(f"duplicate key {key!r}{where}: each key (node id, input name) may appear once")


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Repeated(key)
        result[key] = value
    return result


def loads_unique(text: str | bytes) -> Any:
    """`json.loads` that raises DuplicateKeyError for a key repeated within one object."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except _Repeated as err:
        source = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        raise DuplicateKeyError(err.key, duplicate_line(source, err.key)) from None


def duplicate_line(text: str, key: str) -> int | None:
    """Line of the first repeat of `key` within one object of `text` (already known to be valid JSON)."""
    stack: list[set[str] | None] = []  # a key set per open object, None per open array
    expect_key = False
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == "{":
            stack.append(set())
            expect_key = True
        elif token == "[":
            stack.append(None)
        elif token in "}]":
            stack.pop()
        elif token == ",":
            expect_key = bool(stack) and stack[-1] is not None
        elif token != ":" and expect_key:
            expect_key = False
            name = json.loads(token)
            keys = stack[-1]
            if keys is not None:
                if name == key and name in keys:
                    return text.count("\n", 0, match.start()) + 1
                keys.add(name)
    return None

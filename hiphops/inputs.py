"""Task input templates (DESIGN §4): literals, `(path)`, `(query)`, `(expr)`, `$` and `${...}`.

A template is compiled once, with every problem reported at validation time, and rendered against
a run's context when the task becomes ready.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jmespath
import jmespath.exceptions

from hiphops import js
from hiphops.context import Context
from hiphops.paths import MISSING, Path, PathError, parse_path, resolve, task_reference_problem
from hiphops.problems import Problems, join_path

DECORATORS = ("path", "query", "expr")


class InputError(Exception):
    """Rendering an input failed at run time (a JavaScript error, a `$` that is not an object)."""


class Node(Protocol):
    def render(self, context: Context) -> Any:
        """The value, or MISSING when the key should be left out."""


def interpolation_text(value: Any) -> str:
    """How a value renders inside `${...}`: strings as they are, lists of scalars joined with ','
    (as JavaScript's Array.join does, null elements empty), objects and other lists as JSON, a
    missing path or null as the empty string."""
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return ",".join(interpolation_text(v) for v in value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Literal:
    value: Any

    def render(self, context: Context) -> Any:
        return self.value


@dataclass(frozen=True)
class Interpolated:
    parts: tuple[str | Path, ...]

    def render(self, context: Context) -> Any:
        return "".join(
            part if isinstance(part, str) else interpolation_text(resolve(context.data, part))
            for part in self.parts
        )


@dataclass(frozen=True)
class PathValue:
    path: Path

    def render(self, context: Context) -> Any:
        return resolve(context.data, self.path)


@dataclass(frozen=True)
class QueryValue:
    where: str
    query: jmespath.parser.ParsedResult

    def render(self, context: Context) -> Any:
        try:
            value = self.query.search(context.data)
        except jmespath.exceptions.JMESPathError as exc:
            raise InputError(f"{self.where}: JMESPath failed: {exc}") from None
        return MISSING if value is None else value


@dataclass(frozen=True)
class ExprValue:
    where: str
    expression: js.Expression

    def render(self, context: Context) -> Any:
        try:
            value = self.expression.evaluate(context.encoded)
        except js.JSError as exc:
            raise InputError(f"{self.where}: {exc}") from None
        return MISSING if value is js.UNDEFINED else value


@dataclass(frozen=True)
class MapNode:
    where: str
    entries: tuple[tuple[str, Node], ...]
    merge: js.Expression | None

    def render(self, context: Context) -> Any:
        out: dict[str, Any] = {}
        for key, node in self.entries:
            value = node.render(context)
            if value is not MISSING:
                out[key] = value
        if self.merge is not None:
            where = join_path(self.where, "$")
            try:
                merged = self.merge.evaluate(context.encoded)
            except js.JSError as exc:
                raise InputError(f"{where}: {exc}") from None
            if isinstance(merged, dict):
                out.update(merged)
            elif merged is not None and merged is not js.UNDEFINED:
                kind = "an array" if isinstance(merged, list) else type(merged).__name__
                raise InputError(f"{where}: must return an object to merge, got {kind}")
        return out


@dataclass(frozen=True)
class ListNode:
    items: tuple[Node, ...]

    def render(self, context: Context) -> Any:
        # Decorated keys live in maps only, so no list item renders as MISSING.
        return [item.render(context) for item in self.items]


@dataclass(frozen=True)
class InputTemplate:
    """A compiled task input; `render` gives the JSON object the task handler receives."""

    root: MapNode

    def render(self, context: Context) -> dict[str, Any]:
        """Render against the context. Raises InputError with the failing key's location."""
        result: dict[str, Any] = self.root.render(context)
        return result


class _Compiler:
    def __init__(self, problems: Problems, task_ids: Sequence[str], limits: js.JSLimits | None):
        self.problems = problems
        self.task_ids = task_ids
        self.limits = limits

    def path(self, text: str, where: str) -> Path | None:
        try:
            path = parse_path(text)
        except PathError as exc:
            self.problems.error(where, str(exc))
            return None
        reason = task_reference_problem(path, self.task_ids)
        if reason:
            self.problems.error(where, reason)
            return None
        return path

    def expression(self, source: Any, where: str) -> js.Expression | None:
        if not isinstance(source, str) or not source.strip():
            self.problems.error(where, "must be a JavaScript expression string")
            return None
        try:
            return js.compile_expression(source, self.limits)
        except js.JSCompileError as exc:
            self.problems.error(where, f"JavaScript does not compile: {exc}")
            return None

    def string(self, text: str, where: str) -> Node:
        parts: list[str | Path] = []
        buffer: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if text.startswith("$${", i):
                buffer.append("${")
                i += 3
            elif text.startswith("${", i):
                end = text.find("}", i + 2)
                if end == -1:
                    self.problems.error(
                        where, f"unclosed '${{' in {text!r} (write '$${{' for a literal)"
                    )
                    return Literal(text)
                path = self.path(text[i + 2 : end], where)
                if buffer:
                    parts.append("".join(buffer))
                    buffer = []
                if path is not None:
                    parts.append(path)
                i = end + 1
            else:
                buffer.append(text[i])
                i += 1
        if buffer:
            parts.append("".join(buffer))
        if all(isinstance(p, str) for p in parts):
            return Literal("".join(p for p in parts if isinstance(p, str)))
        return Interpolated(tuple(parts))

    def value(self, raw: Any, where: str) -> Node:
        if isinstance(raw, Mapping):
            return self.mapping(raw, where)
        if isinstance(raw, list):
            return ListNode(tuple(self.value(v, join_path(where, i)) for i, v in enumerate(raw)))
        if isinstance(raw, str):
            return self.string(raw, where)
        return Literal(raw)

    def mapping(self, raw: Mapping[Any, Any], where: str) -> MapNode:
        entries: list[tuple[str, Node]] = []
        merge: js.Expression | None = None
        for raw_key, raw_value in raw.items():
            key = str(raw_key)
            key_where = join_path(where, key)
            if key == "$":
                merge = self.expression(raw_value, key_where)
                continue
            if not key.startswith("("):
                entries.append((key, self.value(raw_value, key_where)))
                continue
            decorator, _, name = key[1:].partition(")")
            if decorator not in DECORATORS or not name:
                known = ", ".join(f"({d})" for d in DECORATORS)
                reason = (
                    f"unknown decorator ({decorator}) (known: {known}, and the `$` key)"
                    if name
                    else f"malformed key {key!r}: expected (decorator)name"
                )
                self.problems.error(key_where, reason)
                continue
            node = self.decorated(decorator, raw_value, key_where)
            if node is not None:
                entries.append((name, node))
        return MapNode(where=where, entries=tuple(entries), merge=merge)

    def decorated(self, decorator: str, raw: Any, where: str) -> Node | None:
        if decorator == "expr":
            expression = self.expression(raw, where)
            return None if expression is None else ExprValue(where, expression)
        if not isinstance(raw, str) or not raw.strip():
            self.problems.error(where, f"({decorator}) needs a string value")
            return None
        if decorator == "path":
            path = self.path(raw, where)
            return None if path is None else PathValue(path)
        try:
            return QueryValue(where, jmespath.compile(raw))
        except jmespath.exceptions.JMESPathError as exc:
            self.problems.error(where, f"JMESPath does not compile: {exc}")
            return None


def compile_input(
    raw: Any,
    where: str,
    problems: Problems,
    task_ids: Sequence[str] = (),
    limits: js.JSLimits | None = None,
) -> InputTemplate:
    """Compile a task's `input` map, recording every problem found."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.error(where, "must be a map of input keys")
        raw = {}
    return InputTemplate(_Compiler(problems, task_ids, limits).mapping(raw, where))

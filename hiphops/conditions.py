"""Conditions: the `when` and `depends` blocks of sensors and tasks (DESIGN §4).

A block is a map of clauses that must all hold. A clause is keyed by a dot path, by `$` (a
JavaScript expression, JS truthiness), or by either prefixed with `(not)`. A path clause's value is
a pattern or a list of patterns read top-down into a bucket of matching values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hiphops import js
from hiphops.context import Context
from hiphops.globs import GlobError, compile_glob, is_literal, literal_text
from hiphops.paths import (
    MISSING,
    Path,
    PathError,
    parse_path,
    resolve,
    task_id_of,
    task_reference_problem,
)
from hiphops.problems import Problems, join_path

NOT = "(not)"
EXPR_KEY = "$"


def value_text(value: Any) -> str:
    """How a scalar is compared with patterns: strings as they are, anything else as JSON text."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def value_texts(value: Any) -> list[str]:
    """The values a field contributes to a bucket: each element of a list, or the one scalar."""
    if isinstance(value, str):
        return [value]
    if value is MISSING:
        return []
    if isinstance(value, list):
        return [value_text(v) for v in value]
    return [value_text(value)]


@dataclass(frozen=True)
class Pattern:
    text: str
    negated: bool
    matches: Callable[[str], bool]


@dataclass(frozen=True)
class PathClause:
    """`path: patterns` — holds when the bucket of matching values ends non-empty."""

    key: str
    path: Path
    patterns: tuple[Pattern, ...]
    negate: bool
    # Precomputed fast paths: most clauses are one pattern or a list of exact values.
    _exact: frozenset[str] | None = field(init=False, repr=False, compare=False)
    _positive: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = None
        if not any(p.negated or not is_literal(p.text) for p in self.patterns):
            exact = frozenset(literal_text(p.text) for p in self.patterns)
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_positive", all(not p.negated for p in self.patterns))

    def holds(self, context: Context) -> bool:
        value = resolve(context.data, self.path)
        exact = self._exact
        if exact is not None:
            if isinstance(value, str):
                return (value in exact) != self.negate
            return (not exact.isdisjoint(value_texts(value))) != self.negate
        return self._bucket_nonempty(value_texts(value)) != self.negate

    def _bucket_nonempty(self, values: list[str]) -> bool:
        if self._positive:
            return any(p.matches(v) for p in self.patterns for v in values)
        bucket: set[int] = set()
        for pattern in self.patterns:
            if pattern.negated:
                bucket = {i for i in bucket if not pattern.matches(values[i])}
            else:
                bucket.update(i for i, v in enumerate(values) if pattern.matches(v))
        return bool(bucket)

    def literals(self) -> frozenset[str] | None:
        """The exact values this clause accepts, if it accepts only exact values (for indexing)."""
        return None if self.negate else self._exact

    def explain(self, context: Context) -> str:
        value = resolve(context.data, self.path)
        shown = "missing" if value is MISSING else json.dumps(value, ensure_ascii=False)[:120]
        wanted = ", ".join(("!" if p.negated else "") + p.text.lstrip("!") for p in self.patterns)
        relation = "matches" if self.negate else "does not match"
        return f"{self.key}: {shown} {relation} [{wanted}]"


@dataclass(frozen=True)
class ExprClause:
    """`$: <js>` — holds when the expression's value is truthy (JS rules)."""

    key: str
    expression: js.Expression
    negate: bool

    def holds(self, context: Context) -> bool:
        return self.expression.truthy(context.encoded) != self.negate

    def explain(self, context: Context) -> str:
        state = "truthy" if self.negate else "falsy"
        return f"{self.key}: {self.expression.source.strip()!r} is {state}"


Clause = PathClause | ExprClause


@dataclass(frozen=True)
class Condition:
    """All clauses must hold. Clauses are ordered cheapest first, so JavaScript runs last."""

    clauses: tuple[Clause, ...]

    def holds(self, context: Context) -> bool:
        """True when every clause holds. A JavaScript failure raises js.JSError."""
        return all(clause.holds(context) for clause in self.clauses)

    def first_failure(self, context: Context) -> str | None:
        """A readable reason for the first clause that does not hold, or None when all hold.
        A JavaScript failure raises js.JSError, as `holds` does."""
        for clause in self.clauses:
            if not clause.holds(context):
                return clause.explain(context)
        return None

    def literal_clauses(self) -> dict[Path, PathClause]:
        """The first clause pinning each path to exact values (what an index can use)."""
        out: dict[Path, PathClause] = {}
        for clause in self.clauses:
            if isinstance(clause, PathClause) and clause.literals() is not None:
                out.setdefault(clause.path, clause)
        return out

    def without(self, proven: Sequence[Clause]) -> Condition | None:
        """This condition minus clauses already proven (by an index); None when none is left."""
        rest = tuple(c for c in self.clauses if not any(c is p for p in proven))
        return Condition(rest) if rest else None

    def task_references(self, task_ids: Sequence[str]) -> set[str]:
        """Ids of the tasks whose state this condition reads through paths."""
        refs = set()
        for clause in self.clauses:
            if isinstance(clause, PathClause):
                ref = task_id_of(clause.path, task_ids)
                if ref is not None:
                    refs.add(ref)
        return refs


def _compile_patterns(value: Any, where: str, problems: Problems) -> tuple[Pattern, ...] | None:
    raw = value if isinstance(value, list) else [value]
    if not raw:
        problems.error(where, "an empty list of patterns never matches")
        return None
    patterns: list[Pattern] = []
    for index, item in enumerate(raw):
        item_where = join_path(where, index) if isinstance(value, list) else where
        if isinstance(item, bool | int | float | str):
            text = item if isinstance(item, str) else value_text(item)
        elif item is None:
            problems.error(
                item_where, "null is not a pattern (write 'null' in quotes to match null)"
            )
            continue
        else:
            kind = "a map" if isinstance(item, Mapping) else "a list"
            problems.error(
                item_where, f"{kind} is not a pattern: expected a string or a list of strings"
            )
            continue
        negated = text.startswith("!")
        body = text[1:] if negated else text
        try:
            matches = compile_glob(body)
        except GlobError as exc:
            problems.error(item_where, str(exc))
            continue
        patterns.append(Pattern(text=text, negated=negated, matches=matches))
    if len(patterns) != len(raw):
        return None
    if all(p.negated for p in patterns):
        problems.warning(
            where,
            "only '!' patterns: the bucket starts empty, so this clause never holds "
            "(put '**' first to mean 'anything except', or use a (not) key)",
        )
    return tuple(patterns)


def compile_condition(
    block: Any,
    where: str,
    problems: Problems,
    task_ids: Sequence[str] | None = (),
    limits: js.JSLimits | None = None,
) -> Condition | None:
    """Compile a `when`/`depends` block, recording every problem. None when it has errors.

    `task_ids` are the sensor's task ids in order; None where no task can have run yet (a
    sensor's own `when`), so any `tasks.` path is an error there.
    """
    if not isinstance(block, Mapping):
        problems.error(where, "must be a map of clauses (path: pattern)")
        return None
    before = len(problems.errors)
    path_clauses: list[Clause] = []
    expr_clauses: list[Clause] = []
    for raw_key, value in block.items():
        key = str(raw_key)
        clause_where = join_path(where, key)
        negate = key.startswith(NOT)
        body = key[len(NOT) :] if negate else key
        if body == EXPR_KEY:
            if not isinstance(value, str) or not value.strip():
                problems.error(clause_where, "a `$` clause must be a JavaScript expression string")
                continue
            try:
                expression = js.compile_expression(value, limits)
            except js.JSCompileError as exc:
                problems.error(clause_where, f"JavaScript does not compile: {exc}")
                continue
            expr_clauses.append(ExprClause(key=key, expression=expression, negate=negate))
            continue
        if body.startswith("("):
            problems.error(clause_where, f"unknown decorator {body.split(')')[0]})")
            continue
        try:
            path = parse_path(body)
        except PathError as exc:
            problems.error(clause_where, str(exc))
            continue
        if task_ids is None and path[0] == "tasks":
            reason: str | None = (
                "a sensor's `when` is checked before any task runs: it cannot read tasks"
            )
        else:
            reason = task_reference_problem(path, task_ids or ())
        if reason:
            problems.error(clause_where, reason)
            continue
        patterns = _compile_patterns(value, clause_where, problems)
        if patterns is not None:
            path_clauses.append(PathClause(key=key, path=path, patterns=patterns, negate=negate))
    if len(problems.errors) > before:
        return None
    # Exact clauses first (cheapest, most selective), then globs, then JavaScript.
    path_clauses.sort(key=lambda c: isinstance(c, PathClause) and c.literals() is None)
    return Condition(clauses=tuple(path_clauses + expr_clauses))

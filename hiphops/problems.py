"""Validation problems: what is wrong with a sensor, where, and how badly."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a sensor; `path` is its location inside the sensor (`tasks[0].when`)."""

    path: str
    reason: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{prefix}{self.path}: {self.reason}" if self.path else f"{prefix}{self.reason}"


@dataclass
class Problems:
    """Every problem of one sensor, so that validation reports all of them, not only the first."""

    items: list[Problem] = field(default_factory=list)

    def error(self, path: str, reason: str) -> None:
        self.items.append(Problem(path, reason))

    def warning(self, path: str, reason: str) -> None:
        self.items.append(Problem(path, reason, Severity.WARNING))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity is Severity.WARNING]


class SensorInvalid(Exception):
    """A sensor failed validation; `problems` holds every error (and warning) found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems if p.severity is Severity.ERROR))


def join_path(base: str, key: str | int) -> str:
    """Location of a child: `tasks` + 0 -> `tasks[0]`, `when` + `event.x` -> `when.event.x`."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key

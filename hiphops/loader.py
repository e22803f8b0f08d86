"""Reading sensors (and other manifests) from files, in both forms, with located problems.

A file holds YAML documents separated by `---`. A document is a Hiphops sensor
(`resource: sensor`), a `hiphops.io/v1alpha1` manifest (Sensor, Integration, ...), or a plain
Kubernetes manifest (a Secret, for local mode). Problems name the file, the document and the
path inside the sensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from hiphops import js
from hiphops.integrations import IntegrationInvalid, parse_integration
from hiphops.problems import Problem, SensorInvalid, Severity
from hiphops.sensor import Sensor, compile_sensor, name_from_id

API_GROUP: Final = "hiphops.io"
API_VERSION: Final = f"{API_GROUP}/v1alpha1"
YAML_SUFFIXES: Final = (".yaml", ".yml")
DEFAULT_PROJECT: Final = "default"
KINDS: Final = ("Sensor", "Integration", "SensorRun")


@dataclass(frozen=True)
class Location:
    """Where a document came from: a file and the document's 1-based position in it."""

    file: str
    document: int

    def __str__(self) -> str:
        return f"{self.file}: document {self.document}"


@dataclass(frozen=True)
class LocatedProblem:
    location: Location
    sensor: str | None
    problem: Problem

    @property
    def is_error(self) -> bool:
        return self.problem.severity is Severity.ERROR

    def __str__(self) -> str:
        who = ""
        if self.sensor:  # a sensor's display id, or "integration <name>"
            integration = self.sensor.startswith("integration ")
            who = f" ({self.sensor})" if integration else f' (sensor "{self.sensor}")'

        return f"{self.location}{who}: {self.problem}"


@dataclass(frozen=True)
class Manifest:
    """A non-sensor Kubernetes-style document (Integration, Secret, ...), kept for later stages."""

    location: Location
    body: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))


@dataclass
class LoadResult:
    sensors: list[tuple[Location, Sensor]] = field(default_factory=list)
    manifests: list[Manifest] = field(default_factory=list)
    problems: list[LocatedProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[LocatedProblem]:
        return [p for p in self.problems if p.is_error]


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that rejects duplicate keys: a repeated `when` clause is a bug, not an override."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def iter_files(paths: Iterable[str]) -> Iterator[Path]:
    """YAML files named directly, and those found (recursively, sorted) in named folders."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file()
            )
        else:
            yield path


def parse_documents(text: str) -> Iterator[Any]:
    """The YAML documents of a text, rejecting duplicate keys. Raises yaml.YAMLError."""
    return iter(yaml.load_all(text, Loader=_StrictLoader))


class Loader:
    """Accumulates sensors, manifests and problems from any number of files."""

    def __init__(
        self, *, default_project: str = DEFAULT_PROJECT, limits: js.JSLimits | None = None
    ):
        self.default_project = default_project
        self.limits = limits
        self.result = LoadResult()
        self._seen: dict[tuple[str, str], Location] = {}

    def load_paths(self, paths: Iterable[str]) -> LoadResult:
        for path in iter_files(paths):
            self.load_file(path)
        return self.result

    def load_file(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            self._problem(Location(str(path), 0), None, f"cannot read: {exc.strerror or exc}")
            return
        self.load_text(text, str(path))

    def load_text(self, text: str, file: str) -> None:
        number = 0
        try:
            for number, document in enumerate(parse_documents(text), start=1):
                if document is not None:
                    self.load_document(document, Location(file, number))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            self._problem(Location(file, number + 1), None, f"invalid YAML: {where}{problem}")

    def load_document(self, document: Any, location: Location) -> None:
        if not isinstance(document, Mapping):
            self._problem(location, None, "a document must be a map")
            return
        if "resource" in document:
            self._load_hiphops_form(document, location)
        elif "apiVersion" in document or "kind" in document:
            self._load_manifest(document, location)
        else:
            self._problem(
                location,
                None,
                "not a sensor: expected `resource: sensor` (Hiphops form) or "
                f"`apiVersion: {API_VERSION}` with `kind: Sensor`",
            )

    def _load_hiphops_form(self, document: Mapping[str, Any], location: Location) -> None:
        if document["resource"] != "sensor":
            self._problem(location, None, f"resource: unknown resource {document['resource']!r}")
            return
        display_id = document.get("id")
        if not isinstance(display_id, str) or not name_from_id(display_id):
            self._problem(location, None, "id: required: the sensor's name (letters or digits)")
            return
        spec = {k: v for k, v in document.items() if k != "resource"}
        self._compile(spec, name_from_id(display_id), self.default_project, location, display_id)

    def _load_manifest(self, document: Mapping[str, Any], location: Location) -> None:
        api_version = document.get("apiVersion")
        kind = document.get("kind")
        if not str(api_version).startswith(f"{API_GROUP}/"):
            self.result.manifests.append(Manifest(location, document))  # Secrets, for local mode
            return
        if api_version != API_VERSION:
            self._problem(location, None, f"apiVersion: {api_version!r} (expected {API_VERSION})")
            return
        if kind not in KINDS:
            self._problem(location, None, f"kind: {kind!r} (known: {', '.join(KINDS)})")
            return
        if kind == "Integration":
            self._check_integration(document, location)
        if kind != "Sensor":
            self.result.manifests.append(Manifest(location, document))
            return
        metadata = document.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if not isinstance(name, str) or not name:
            self._problem(location, None, "metadata.name: required")
            return
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
        spec = document.get("spec")
        if not isinstance(spec, Mapping):
            self._problem(location, name, "spec: required: a map with `tasks`")
            return
        self._compile(spec, name, str(namespace or self.default_project), location, name)

    def _check_integration(self, document: Mapping[str, Any], location: Location) -> None:
        try:
            parse_integration(document, default_project=self.default_project)
        except IntegrationInvalid as invalid:
            metadata = document.get("metadata")
            name = metadata.get("name") if isinstance(metadata, Mapping) else None
            label = f"integration {name}" if isinstance(name, str) else None
            for problem in invalid.problems:
                self.result.problems.append(LocatedProblem(location, label, problem))

    def _compile(
        self, spec: Mapping[str, Any], name: str, project: str, location: Location, label: str
    ) -> None:
        try:
            sensor = compile_sensor(spec, name=name, project=project, limits=self.limits)
        except SensorInvalid as invalid:
            for problem in invalid.problems:
                self.result.problems.append(LocatedProblem(location, label, problem))
            return
        for warning in sensor.warnings:
            self.result.problems.append(LocatedProblem(location, label, warning))
        previous = self._seen.get(sensor.key)
        if previous is not None:
            self._problem(
                location,
                label,
                f"duplicate sensor name {name!r} in project {project!r} (first at {previous})",
            )
            return
        self._seen[sensor.key] = location
        self.result.sensors.append((location, sensor))

    def _problem(self, location: Location, sensor: str | None, reason: str) -> None:
        self.result.problems.append(LocatedProblem(location, sensor, Problem("", reason)))


def load(
    paths: Sequence[str],
    *,
    default_project: str = DEFAULT_PROJECT,
    limits: js.JSLimits | None = None,
) -> LoadResult:
    """Load every sensor and manifest under `paths`; problems are collected, never raised."""
    return Loader(default_project=default_project, limits=limits).load_paths(paths)

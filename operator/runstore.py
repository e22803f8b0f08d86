"""The run store of the operator: every run is a SensorRun object (DESIGN §2 "SensorRun").

A SensorRun is named by `hiphops.runs.run_name` (delivery + sensor), so creating it is the
deduplication: 409 AlreadyExists means the delivery was seen before, and the run is not started
again. Its `spec` is written once at creation: the event, the snapshot of the sensor spec the run
was started from, the start time. Its `status` is the run record's state, tasks and results,
written through the status subresource after every change the executor saves.

    spec:   {sensor, sensorID, delivery, started, event, sensorSnapshot, eventOmitted?}
    status: {state, started, finished?, duration?, error?, tasks: [{id, name, index, state,
             times, input?, result?, error?, reason?, attempts}]}

A SensorRun without a status yet (created, not saved since) reads as the run's first state: every
task PENDING, started at `spec.started` (else at its creationTimestamp).

Size: Kubernetes refuses objects above ~1.5 MiB. An event whose SensorRun would exceed
`max_bytes` is not recorded in full and is never silently cut: the SensorRun is created with the
event omitted (`spec.eventOmitted` and the `hiphops.io/event-omitted` annotation say how large it
was) and is FAILURE from the start, with an error saying so; the delivery is acknowledged (a
webhook sender retrying would only fail again) and `hiphops_operator_events_too_large_total`
counts it. The same holds for results: a status that would exceed the limit is written with the
largest task results omitted and the run marked FAILURE, with an error naming them.

All methods block (they make API calls) and may be called from several threads at once.
"""

from __future__ import annotations

import builtins  # `builtins.list` where the class's own `list` method shadows it
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

from hiphops.loader import API_VERSION
from hiphops.runs import RunRecord, RunState, TaskRecord, TaskState, timestamp
from hiphops.store import StoredRun

from .kube import SENSORRUNS, ApiError, Kube
from .metrics import OperatorMetrics

logger = logging.getLogger("hiphops.operator.runstore")

SENSOR_LABEL: Final = "hiphops.io/sensor"
#: On a SensorRun whose event was too large to keep: "<bytes>/<limit>".
OMITTED_ANNOTATION: Final = "hiphops.io/event-omitted"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CREATE_THREADS: Final = 8


class RunStoreUnavailable(RuntimeError):
    """Runs could not be recorded (the API refused or could not be reached)."""


class RunListener(Protocol):
    """Told about every write, from the store's calling thread, after the write succeeded."""

    def created(self, record: RunRecord, uid: str | None) -> None:
        """A SensorRun was created for `record` (possibly FAILURE already: event too large)."""

    def saved(self, record: RunRecord, uid: str | None) -> None:
        """`record` (as stored) was written to the SensorRun's status."""

    def loaded(self, record: RunRecord, uid: str | None) -> None:
        """An unfinished run was read (to be resumed): its record is the state already told."""


@dataclass
class _Known:
    """What the store remembers of a run it wrote or read: enough to skip a write that would
    change nothing and to check sizes without reading the object again."""

    namespace: str
    uid: str | None
    spec_bytes: int
    status: dict[str, Any] | None


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    # Absent rather than null: a merge patch reads null as "delete", and the schema prunes it.
    return {key: value for key, value in values.items() if value is not None}


def duration_text(started: str, finished: str) -> str | None:
    """`finished - started` as kubectl shows durations (`1h2m3s`, `4.5s`); None if unreadable."""
    try:
        seconds = (
            datetime.fromisoformat(finished.replace("Z", "+00:00"))
            - datetime.fromisoformat(started.replace("Z", "+00:00"))
        ).total_seconds()
    except ValueError:
        return None
    if seconds < 60:
        return f"{max(seconds, 0):.3g}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


def status_of(record: RunRecord) -> dict[str, Any]:
    """The SensorRun status for a run record."""
    finished = record.finished
    return _clean(
        {
            "state": record.state.value,
            "started": record.started,
            "finished": finished,
            "duration": duration_text(record.started, finished) if finished else None,
            "error": record.error,
            "tasks": [
                _clean(
                    {
                        "id": t.id,
                        "name": t.name,
                        "index": t.index,
                        "state": t.state.value,
                        "times": dict(t.times),
                        "input": t.input,
                        "result": t.result,
                        "error": t.error,
                        "reason": t.reason,
                        "attempts": t.attempts,
                    }
                )
                for t in record.tasks
            ],
        }
    )


def _initial_tasks(sensor_spec: Mapping[str, Any], started: str) -> list[TaskRecord]:
    # The task ids as compile_sensor assigns them: `id` if given, else the index.
    tasks = []
    for index, raw in enumerate(sensor_spec.get("tasks") or []):
        task = raw if isinstance(raw, Mapping) else {}
        task_id = task.get("id")
        tasks.append(
            TaskRecord(
                id=str(task_id) if task_id is not None else str(index),
                name=str(task.get("name", "")),
                index=index,
                times={TaskState.PENDING.value: started},
            )
        )
    return tasks


def _task_from(data: Mapping[str, Any]) -> TaskRecord:
    return TaskRecord(
        id=str(data["id"]),
        name=str(data.get("name", "")),
        index=int(data.get("index", 0)),
        state=TaskState(data.get("state", TaskState.PENDING.value)),
        times={str(k): str(v) for k, v in (data.get("times") or {}).items()},
        input=data.get("input"),
        result=data.get("result"),
        error=data.get("error"),
        reason=data.get("reason"),
        attempts=int(data.get("attempts", 0)),
    )


def record_from_object(body: Mapping[str, Any]) -> RunRecord:
    """The run record a SensorRun holds. Raises ValueError (with KeyError/TypeError wrapped) for
    an object that is not a SensorRun this operator wrote."""
    try:
        metadata = body["metadata"]
        spec = body["spec"]
        status = body.get("status") or {}
        started = str(spec.get("started") or status.get("started") or metadata["creationTimestamp"])
        omitted = spec.get("eventOmitted") or _omitted_mark(metadata)
        if status.get("state") and status.get("tasks") is not None:
            tasks = [_task_from(t) for t in status["tasks"]]
            state = RunState(status["state"])
        else:
            tasks = _initial_tasks(spec.get("sensorSnapshot") or {}, started)
            state = RunState.FAILURE if omitted else RunState.RUNNING
        error = status.get("error")
        if omitted and not error:
            error = _omitted_error(omitted)
        return RunRecord(
            name=str(metadata["name"]),
            project=str(metadata["namespace"]),
            sensor=str(spec["sensor"]),
            sensor_id=str(spec.get("sensorID") or spec["sensor"]),
            event=dict(spec.get("event") or {}),
            started=started,
            tasks=tasks,
            state=state,
            finished=status.get("finished") or (started if omitted else None),
            error=error,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not a readable SensorRun: {type(error).__name__}: {error}") from None


def _omitted_mark(metadata: Mapping[str, Any]) -> dict[str, str] | None:
    mark = (metadata.get("annotations") or {}).get(OMITTED_ANNOTATION)
    if not mark:
        return None
    size, _, limit = str(mark).partition("/")
    return {"bytes": size, "limit": limit}


def _omitted_error(omitted: Mapping[str, Any]) -> str:
    return (
        f"event too large to record: {omitted.get('bytes')} bytes serialized with the run "
        f"(limit {omitted.get('limit')}); the event was omitted and no task ran"
    )


class KubeRunStore:
    """A `hiphops.store.RunStore` of SensorRun objects in the namespaces the operator serves."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespaces: Sequence[str] = (),
        max_bytes: int = 1_000_000,
        metrics: OperatorMetrics | None = None,
        listener: RunListener | None = None,
    ) -> None:
        """`namespaces` empty = every namespace. `max_bytes` bounds a SensorRun's serialized
        size (see the module's notes on size)."""
        self._kube = kube
        self._namespaces = tuple(namespaces)
        self._max_bytes = max_bytes
        self._metrics = metrics
        self.listener = listener
        self._lock = threading.Lock()
        self._known: dict[str, _Known] = {}
        self._pool = ThreadPoolExecutor(_CREATE_THREADS, thread_name_prefix="hiphops-runs-create")
        self.writes = 0  # API writes made (creates and status patches), for tests and logs

    # --- creating ---------------------------------------------------------------------------

    def create_many(self, runs: Sequence[StoredRun]) -> list[bool]:
        """Create one SensorRun per run, concurrently; True for each created, False for each that
        already existed. Returns once every SensorRun exists. If any creation fails, the ones this
        call created are deleted again and RunStoreUnavailable is raised: the sender retries the
        whole delivery, and no run is left behind that nobody would start."""
        if not runs:
            return []
        prepared = [self._prepare(stored) for stored in runs]
        futures = [self._pool.submit(self._create, body) for body, _ in prepared]
        outcomes: list[dict[str, Any] | BaseException | None] = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as error:
                outcomes.append(error)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            for (body, _), outcome in zip(prepared, outcomes, strict=True):
                if isinstance(outcome, dict):
                    self._rollback(body)
            raise RunStoreUnavailable(f"could not create SensorRuns: {failures[0]}")
        created = []
        for stored, (body, omitted), outcome in zip(runs, prepared, outcomes, strict=True):
            if not isinstance(outcome, dict):
                created.append(False)
                continue
            created.append(True)
            self._created(stored.record, body, outcome, omitted)
        return created

    def _prepare(self, stored: StoredRun) -> tuple[bytes, bool]:
        """The serialized SensorRun for a new run; True when its event had to be omitted (the
        record is then marked FAILURE, so that the executor does not start it)."""
        record = stored.record
        body = self._object(record, stored.sensor_spec)
        serialized = _dumps(body)
        if len(serialized) <= self._max_bytes:
            return serialized, False
        size = len(serialized)
        hiphops = record.event.get("hiphops")
        stub = {"project_id": record.event.get("project_id"), "hiphops": hiphops}
        body["spec"]["event"] = stub
        body["spec"]["eventOmitted"] = {"bytes": size, "limit": self._max_bytes}
        # Annotations are never pruned by a schema: the mark survives any CRD version.
        body["metadata"]["annotations"] = {OMITTED_ANNOTATION: f"{size}/{self._max_bytes}"}
        serialized = _dumps(body)
        if len(serialized) > self._max_bytes:
            raise RunStoreUnavailable(
                f"run {record.name}: the sensor spec alone makes a SensorRun of "
                f"{len(serialized)} bytes (limit {self._max_bytes})"
            )
        # The intake hands this same record to the executor, which starts nothing finished.
        record.event = stub
        record.state = RunState.FAILURE
        record.error = _omitted_error(body["spec"]["eventOmitted"])
        record.finished = record.started
        if self._metrics is not None:
            self._metrics.events_too_large.inc()
        logger.error("run %s/%s: %s", record.project, record.name, record.error)
        return serialized, True

    @staticmethod
    def _object(record: RunRecord, sensor_spec: Mapping[str, Any]) -> dict[str, Any]:
        hiphops = record.event.get("hiphops")
        delivery = hiphops.get("delivery") if isinstance(hiphops, Mapping) else None
        labels = {}
        if len(record.sensor) <= 63 and _LABEL_VALUE.match(record.sensor):
            labels[SENSOR_LABEL] = record.sensor
        return {
            "apiVersion": API_VERSION,
            "kind": "SensorRun",
            "metadata": {"name": record.name, "namespace": record.project, "labels": labels},
            "spec": _clean(
                {
                    "sensor": record.sensor,
                    "sensorID": record.sensor_id,
                    "delivery": None if delivery is None else str(delivery),
                    "started": record.started,
                    "event": record.event,
                    "sensorSnapshot": dict(sensor_spec),
                }
            ),
        }

    def _create(self, body: bytes) -> dict[str, Any] | None:
        """The created object, or None when it already existed."""
        namespace = orjson.loads(body)["metadata"]["namespace"]
        try:
            created = self._kube.create(SENSORRUNS, namespace, body)
        except ApiError as error:
            if error.status == 409:
                return None
            raise
        with self._lock:
            self.writes += 1
        return created

    def _rollback(self, body: bytes) -> None:
        metadata = orjson.loads(body)["metadata"]
        try:
            self._kube.delete(SENSORRUNS, metadata["namespace"], metadata["name"])
        except ApiError as error:
            # Left RUNNING: the next start or leadership change resumes it.
            logger.error("could not roll back SensorRun %s: %s", metadata["name"], error)

    def _created(
        self, record: RunRecord, body: bytes, created: dict[str, Any], omitted: bool
    ) -> None:
        uid = (created.get("metadata") or {}).get("uid")
        with self._lock:
            self._known[record.name] = _Known(record.project, uid, len(body), None)
        if omitted:
            try:
                self._write_status(record, status_of(record))
            except (ApiError, KeyError) as error:
                # The object says eventOmitted, which reads as FAILURE even without a status.
                logger.warning("run %s: could not write its FAILURE status: %s", record.name, error)
        if self.listener is not None:
            self.listener.created(record, uid)

    # --- saving -----------------------------------------------------------------------------

    def save(self, record: RunRecord) -> None:
        """Write the run's status. Skips the write when the status is what was last written (or
        read). Raises KeyError if the SensorRun does not exist."""
        status = status_of(record)
        with self._lock:
            known = self._known.get(record.name)
        if known is not None and known.status == status:
            return
        spec_bytes = known.spec_bytes if known is not None else len(_dumps(record.event))
        stored = record
        if spec_bytes + len(_dumps(status)) > self._max_bytes:
            stored = self._shrink(record, spec_bytes)
            status = status_of(stored)
            if known is not None and known.status == status:
                return
        self._write_status(stored, status)
        if self.listener is not None:
            self.listener.saved(stored, None if known is None else known.uid)

    def _write_status(self, record: RunRecord, status: dict[str, Any]) -> None:
        try:
            written = self._kube.patch(
                SENSORRUNS,
                record.project,
                record.name,
                _dumps({"status": status}),
                subresource="status",
            )
        except ApiError as error:
            if error.status == 404:
                raise KeyError(f"no SensorRun {record.project}/{record.name} to save") from None
            raise
        uid = (written.get("metadata") or {}).get("uid")
        with self._lock:
            self.writes += 1
            known = self._known.get(record.name)
            if record.state is not RunState.RUNNING:
                # Finished: nothing writes it again; forget it so memory follows in-flight runs.
                self._known.pop(record.name, None)
            elif known is None:
                spec_bytes = len(_dumps(record.event))
                self._known[record.name] = _Known(record.project, uid, spec_bytes, status)
            else:
                known.status = status

    def _shrink(self, record: RunRecord, spec_bytes: int) -> RunRecord:
        """The record with the largest task results (then inputs) left out until its status fits,
        marked FAILURE with an error that names what was left out."""
        if self._metrics is not None:
            self._metrics.status_too_large.inc()
        tasks = [replace(t, times=dict(t.times)) for t in record.tasks]
        shrunk = replace(record, tasks=tasks, state=RunState.FAILURE)
        dropped: list[str] = []
        by_size = sorted(
            ((len(_dumps(t.result)), "result", t) for t in tasks if t.result is not None),
            key=lambda item: -item[0],
        ) + sorted(
            ((len(_dumps(t.input)), "input", t) for t in tasks if t.input is not None),
            key=lambda item: -item[0],
        )
        for size, what, task in by_size:
            if spec_bytes + len(_dumps(status_of(shrunk))) <= self._max_bytes:
                break
            setattr(task, what, None)
            dropped.append(f"{task.id} {what} ({size} bytes)")
        shrunk.error = (
            f"run status too large to record (limit {self._max_bytes} bytes with the event); "
            f"left out: {', '.join(dropped) or 'nothing could be left out'}"
        )
        shrunk.finished = shrunk.finished or timestamp(datetime.now(UTC))
        logger.error("run %s/%s: %s", record.project, record.name, shrunk.error)
        return shrunk

    # --- reading ----------------------------------------------------------------------------

    def _objects(self, project: str | None = None) -> builtins.list[dict[str, Any]]:
        if project is not None:
            if self._namespaces and project not in self._namespaces:
                return []
            return self._kube.list(SENSORRUNS, project)
        if not self._namespaces:
            return self._kube.list(SENSORRUNS)
        return [obj for ns in self._namespaces for obj in self._kube.list(SENSORRUNS, ns)]

    def _readable(
        self, objects: builtins.list[dict[str, Any]]
    ) -> builtins.list[tuple[dict[str, Any], RunRecord]]:
        readable = []
        for body in objects:
            try:
                readable.append((body, record_from_object(body)))
            except ValueError as error:
                name = (body.get("metadata") or {}).get("name")
                logger.warning("SensorRun %s skipped: %s", name, error)
        return readable

    def get(self, name: str) -> StoredRun | None:
        """The run with this name, or None."""
        with self._lock:
            known = self._known.get(name)
        candidates = (
            [self._kube.get(SENSORRUNS, known.namespace, name)]
            if known is not None
            else [o for o in self._objects() if (o.get("metadata") or {}).get("name") == name]
        )
        for body, record in self._readable([c for c in candidates if c is not None]):
            return StoredRun(record=record, sensor_spec=body["spec"].get("sensorSnapshot") or {})
        return None

    def list(self, *, limit: int = 50, project: str | None = None) -> list[RunRecord]:
        """The most recently started runs first (ties broken by name), at most `limit`."""
        records = [record for _, record in self._readable(self._objects(project))]
        records.sort(key=lambda r: (r.started, r.name), reverse=True)
        return records[:limit]

    def unfinished(self) -> builtins.list[StoredRun]:
        """Every RUNNING run, oldest first; remembered so that its next save needs no read."""
        found = []
        for body, record in self._readable(self._objects()):
            if record.state is not RunState.RUNNING:
                continue
            spec_bytes = len(_dumps({k: v for k, v in body.items() if k != "status"}))
            status = body.get("status") or None
            uid = (body.get("metadata") or {}).get("uid")
            with self._lock:
                self._known[record.name] = _Known(record.project, uid, spec_bytes, status)
            if self.listener is not None:
                self.listener.loaded(record, uid)
            found.append(
                StoredRun(record=record, sensor_spec=body["spec"].get("sensorSnapshot") or {})
            )
        found.sort(key=lambda s: (s.record.started, s.record.name))
        return found

    def delete_finished_before(self, moment: datetime) -> int:
        """Delete SensorRuns that finished before `moment`; returns how many."""
        cutoff = timestamp(moment)
        deleted = 0
        for _, record in self._readable(self._objects()):
            old = record.finished is not None and record.finished < cutoff
            if old and self._kube.delete(SENSORRUNS, record.project, record.name):
                deleted += 1
        return deleted

    def uid(self, name: str) -> str | None:
        """The uid of a run this store created or read, if it remembers it."""
        with self._lock:
            known = self._known.get(name)
        return None if known is None else known.uid

    def close(self) -> None:
        """Stop the creation threads (the Kube client is the caller's to close)."""
        self._pool.shutdown(wait=True)

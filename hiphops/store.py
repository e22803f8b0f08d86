"""The durable run store: every run recorded before its webhook is acknowledged (DESIGN §1).

`RunStore` is the small protocol the executor and the intake use; `SQLiteRunStore` implements it
for local mode (`hiphops serve`), and the Kubernetes operator implements it with SensorRun
objects. A record is the durable truth about a run: the executor saves it after every state change
and resumes unfinished runs from it at start-up.
"""

from __future__ import annotations

import builtins  # `builtins.list` where the classes' own `list` method shadows it
import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from hiphops.runs import RunRecord, RunState, timestamp


@dataclass(frozen=True)
class StoredRun:
    """A run record plus the snapshot of the sensor spec it was created from, so the run can be
    resumed exactly as it started even if the sensor has changed or gone since."""

    record: RunRecord
    sensor_spec: Mapping[str, Any]


class RunStore(Protocol):
    """Where runs are kept. Implementations are safe to call from several threads."""

    def create_many(self, runs: Sequence[StoredRun]) -> list[bool]:
        """Durably record new runs in one transaction; True for each created, False for each whose
        name already existed (a duplicate delivery: not an error, nothing overwritten)."""
        ...

    def save(self, record: RunRecord) -> None:
        """Persist the record's current state. Raises KeyError if the run was never created."""
        ...

    def get(self, name: str) -> StoredRun | None:
        """The run with this name, or None."""
        ...

    def list(self, *, limit: int = 50, project: str | None = None) -> list[RunRecord]:
        """The most recently started runs first, optionally of one project only."""
        ...

    def unfinished(self) -> builtins.list[StoredRun]:
        """Every run still RUNNING (to resume at start-up), oldest first."""
        ...

    def delete_finished_before(self, moment: datetime) -> int:
        """Delete runs that finished before `moment` (retention); returns how many."""
        ...

    def close(self) -> None:
        """Release the store's resources; the store is unusable afterwards."""
        ...


#: Schema migrations: entry i brings the database from version i to version i + 1. Append only.
_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE runs (
        name     TEXT PRIMARY KEY,
        project  TEXT NOT NULL,
        sensor   TEXT NOT NULL,
        state    TEXT NOT NULL,
        started  TEXT NOT NULL,
        finished TEXT,
        record   TEXT NOT NULL,
        spec     TEXT NOT NULL
    );
    CREATE INDEX runs_project_started ON runs (project, started);
    CREATE INDEX runs_sensor ON runs (project, sensor);
    CREATE INDEX runs_state ON runs (state);
    CREATE INDEX runs_started ON runs (started);
    CREATE INDEX runs_finished ON runs (finished);
    """,
)

SCHEMA_VERSION: Final = len(_MIGRATIONS)


class StoreError(RuntimeError):
    """The store cannot be used (for example, a database written by a newer version)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_INSERT: Final = (
    "INSERT OR IGNORE INTO runs (name, project, sensor, state, started, finished, record, spec) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE: Final = (
    "UPDATE runs SET project = ?, sensor = ?, state = ?, started = ?, finished = ?, record = ? "
    "WHERE name = ?"
)


class _Write(ABC):
    """One caller's write, queued for the next group commit.

    Its statements are ready to execute: what can be checked without the database (that the
    caller's input serializes) was done before it joined the queue. What only the database can
    refuse (text that is not valid UTF-8, for one) fails the group's transaction, whose writes are
    then retried one by one. `wake` is set either when the outcome is known (`done`) or when the
    caller is to lead the next group.
    """

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.done = False
        self.outcome: Any = None
        self.error: BaseException | None = None

    @abstractmethod
    def apply(self, db: sqlite3.Connection) -> Any:
        """Execute this write's statements inside the open transaction; returns its outcome."""

    def settle(self, outcome: Any = None, error: BaseException | None = None) -> None:
        self.outcome, self.error, self.done = outcome, error, True


class _Create(_Write):
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self.rows = rows

    @property
    def names(self) -> list[str]:
        return [row[0] for row in self.rows]

    def apply(self, db: sqlite3.Connection) -> list[bool]:
        # One statement at a time in queue order: a name created earlier in the same transaction
        # (by this batch or another caller's) makes this one a duplicate, exactly as if the
        # callers' transactions had been committed one after the other.
        return [db.execute(_INSERT, row).rowcount == 1 for row in self.rows]


class _Save(_Write):
    def __init__(self, name: str, params: tuple[Any, ...]) -> None:
        super().__init__()
        self.name = name
        self.params = params
        # A later save of the same run in the same group whose state is written instead.
        self.superseded_by: _Save | None = None

    def apply(self, db: sqlite3.Connection) -> bool:
        return db.execute(_UPDATE, self.params).rowcount == 1


class SQLiteRunStore:
    """Runs kept in one SQLite file (local mode).

    Commits are synchronous (WAL, `synchronous=FULL`): once `create_many` or `save` returns, the
    write survives a crash of the process or of the machine, so the webhook can be acknowledged.

    Writes are group-committed. Concurrent callers queue their writes; the first caller to find
    no commit in progress leads: it takes every write queued by then, applies them in queue order
    in one transaction, commits once (one fsync) and releases each caller with its own outcome.
    Callers that queued meanwhile wait, and the first of them leads the next group. A lone
    caller commits alone at once, as without grouping. Saves of the same run in one group are
    coalesced (the last one queued is written). If a group's transaction fails, its writes are
    retried one transaction each, so that one caller's bad write fails only that caller.

    One connection guarded by a lock serves every thread. `commits` and `writes` count the
    transactions and the `create_many`/`save` calls they committed (writes per commit is the
    grouping achieved).
    """

    def __init__(self, path: str | Path) -> None:
        """Open the store at `path`, creating the folder, the file and the schema as needed."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.commits = 0
        self.writes = 0
        self._lock = threading.Lock()  # the connection; held by the leader through a commit
        self._queue = threading.Lock()  # `_pending` and `_leading`; never waits for the disk
        self._pending: builtins.list[_Write] = []
        self._leading = False  # a leader is committing, or has been chosen to
        # Autocommit mode: transactions are begun explicitly where several statements must be
        # atomic, so nothing is ever left implicitly open.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                )
                row = self._db.execute("SELECT version FROM schema_version").fetchone()
                version = 0 if row is None else int(row[0])
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has run store schema version {version}; this version of "
                        f"hiphops understands up to {SCHEMA_VERSION}"
                    )
                for script in _MIGRATIONS[version:]:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                if row is None:
                    self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                else:
                    self._db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def create_many(self, runs: Sequence[StoredRun]) -> list[bool]:
        """Record new runs atomically; False for each name already present (not overwritten)."""
        rows = [(*_record_columns(r.record), _dumps(dict(r.sensor_spec))) for r in runs]
        if not rows:
            return []
        created: list[bool] = self._commit(_Create(rows))
        return created

    def save(self, record: RunRecord) -> None:
        """Persist the record's current state; KeyError if the run was never created."""
        name, project, sensor, state, started, finished, data = _record_columns(record)
        params = (project, sensor, state, started, finished, data, name)
        if not self._commit(_Save(name, params)):
            raise KeyError(f"no run named {name!r} to save")

    def _commit(self, write: _Write) -> Any:
        """Queue `write`, see it committed (leading the group if it falls to this caller), and
        return its outcome or raise its error."""
        with self._queue:
            self._pending.append(write)
            lead = not self._leading
            self._leading = True
        try:
            if not lead:
                write.wake.wait()
            if not write.done:
                self._lead()
        except BaseException:
            # Interrupted (KeyboardInterrupt) while waiting: a write no group has taken yet is
            # withdrawn, and the lead passed on if it was this caller's, or every later caller
            # would wait forever.
            with self._queue:
                if write in self._pending:
                    self._pending.remove(write)
                    if lead or write.wake.is_set():
                        self._hand_on()
            raise
        if write.error is not None:
            raise write.error
        return write.outcome

    def _lead(self) -> None:
        group: builtins.list[_Write] = []
        try:
            with self._lock:
                # Taken only now that the connection is free: everything queued while the
                # previous group was committing joins this one.
                with self._queue:
                    group, self._pending = self._pending, []
                self._commit_group(group)
        finally:
            with self._queue:
                for write in group:
                    if not write.done:  # only when the leader itself was interrupted
                        write.settle(error=StoreError("the write was interrupted; retry it"))
                    write.wake.set()
                self._hand_on()

    def _hand_on(self) -> None:
        """Make the first queued caller the next leader (the caller holds `_queue`)."""
        if self._pending:
            self._pending[0].wake.set()  # not done, so that caller leads
        else:
            self._leading = False

    def _commit_group(self, group: builtins.list[_Write]) -> None:
        latest: dict[str, _Save] = {}  # the last save of each run not followed by its creation
        for write in group:
            if isinstance(write, _Save):
                earlier = latest.get(write.name)
                if earlier is not None:
                    earlier.superseded_by = write
                latest[write.name] = write
            elif isinstance(write, _Create):
                # A save queued before the run's creation must still find it missing.
                for name in write.names:
                    latest.pop(name, None)
        applied = [w for w in group if not (isinstance(w, _Save) and w.superseded_by)]
        try:
            outcomes = self._transaction(applied)
        except Exception as error:
            if len(group) == 1:
                group[0].settle(error=error)
                return
            for write in group:
                try:
                    write.settle(self._transaction([write])[0])
                except Exception as alone:
                    write.settle(error=alone)
            return
        for write, outcome in zip(applied, outcomes, strict=True):
            write.settle(outcome)
        # A superseded save has the outcome of the save written in its place: the run existed
        # for both, since nothing in between created it.
        for write in reversed(group):
            if isinstance(write, _Save) and write.superseded_by is not None:
                write.settle(write.superseded_by.outcome)
        self.writes += len(group) - len(applied)

    def _transaction(self, writes: builtins.list[_Write]) -> builtins.list[Any]:
        """Apply `writes` in one committed transaction (the caller holds `_lock`)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            outcomes = [write.apply(self._db) for write in writes]
            self._db.execute("COMMIT")
        except BaseException:
            # Some failures (a full disk, for one) have already rolled the transaction back.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self.commits += 1
        self.writes += len(writes)
        return outcomes

    def get(self, name: str) -> StoredRun | None:
        """The run with this name, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT record, spec FROM runs WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else _stored(row)

    def list(self, *, limit: int = 50, project: str | None = None) -> list[RunRecord]:
        """The most recently started runs first (ties broken by name), at most `limit`."""
        query = "SELECT record FROM runs"
        params: tuple[Any, ...] = ()
        if project is not None:
            query += " WHERE project = ?"
            params = (project,)
        query += " ORDER BY started DESC, name DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [RunRecord.from_dict(json.loads(row[0])) for row in rows]

    def unfinished(self) -> builtins.list[StoredRun]:
        """Every RUNNING run, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record, spec FROM runs WHERE state = ? ORDER BY started, name",
                (RunState.RUNNING.value,),
            ).fetchall()
        return [_stored(row) for row in rows]

    def delete_finished_before(self, moment: datetime) -> int:
        """Delete runs that finished strictly before `moment`; returns how many were deleted."""
        # Every stored time has the same fixed-width UTC form, so text order is time order.
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM runs WHERE finished IS NOT NULL AND finished < ?",
                (timestamp(moment),),
            )
        return cursor.rowcount

    def close(self) -> None:
        """Close the connection (a checkpoint folds the WAL back into the database file)."""
        with self._lock:
            self._db.close()


def _record_columns(record: RunRecord) -> tuple[str, str, str, str, str, str | None, str]:
    return (
        record.name,
        record.project,
        record.sensor,
        record.state.value,
        record.started,
        record.finished,
        _dumps(_plain(record)),
    )


def _plain(record: RunRecord) -> dict[str, Any]:
    """`record.to_dict()` without its deep copy: the same JSON, for a fraction of the time (the
    copy of a 25 KB event costs ~10x its serialization, and a record is written at every step).
    The nested event, inputs and results are only read, by the serializer, never kept."""
    data = {f.name: getattr(record, f.name) for f in fields(record)}
    data["tasks"] = [{f.name: getattr(t, f.name) for f in fields(t)} for t in record.tasks]
    return data


def _stored(row: tuple[str, str]) -> StoredRun:
    return StoredRun(record=RunRecord.from_dict(json.loads(row[0])), sensor_spec=json.loads(row[1]))

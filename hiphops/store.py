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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


class SQLiteRunStore:
    """Runs kept in one SQLite file (local mode).

    Commits are synchronous (WAL, `synchronous=FULL`): once `create_many` returns, the runs survive
    a crash of the process or of the machine, so the webhook can be acknowledged. One connection
    guarded by a lock serves every thread.
    """

    def __init__(self, path: str | Path) -> None:
        """Open the store at `path`, creating the folder, the file and the schema as needed."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
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
        rows = [(_record_columns(r.record), _dumps(dict(r.sensor_spec))) for r in runs]
        created: list[bool] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for columns, spec in rows:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO runs "
                        "(name, project, sensor, state, started, finished, record, spec) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (*columns, spec),
                    )
                    created.append(cursor.rowcount == 1)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return created

    def save(self, record: RunRecord) -> None:
        """Persist the record's current state; KeyError if the run was never created."""
        name, project, sensor, state, started, finished, data = _record_columns(record)
        with self._lock:
            cursor = self._db.execute(
                "UPDATE runs SET project = ?, sensor = ?, state = ?, started = ?, finished = ?, "
                "record = ? WHERE name = ?",
                (project, sensor, state, started, finished, data, name),
            )
        if cursor.rowcount != 1:
            raise KeyError(f"no run named {name!r} to save")

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
        _dumps(record.to_dict()),
    )


def _stored(row: tuple[str, str]) -> StoredRun:
    return StoredRun(record=RunRecord.from_dict(json.loads(row[0])), sensor_spec=json.loads(row[1]))

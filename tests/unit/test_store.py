import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hiphops.runs import Run, RunRecord, RunState, TaskState
from hiphops.sensor import compile_sensor
from hiphops.store import SCHEMA_VERSION, SQLiteRunStore, StoredRun, StoreError

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "id": "say hello",
    "tasks": [
        {"name": "log.message", "id": "a", "input": {"(path)n": "event.number"}},
        {"name": "log.message", "id": "b", "depends": {"tasks.a.COMPLETE": "*"}},
    ],
}


def stored(name: str, *, project: str = "p", seconds: int = 0, number: int = 1) -> StoredRun:
    sensor = compile_sensor(SPEC, name="hello", project=project)
    event = {"project_id": project, "hiphops": {"source": "github"}, "number": number}
    run = Run.start(sensor, event, name=name, now=T0 + timedelta(seconds=seconds))
    return StoredRun(record=run.record, sensor_spec=sensor.spec)


def finish(record: RunRecord, seconds: int) -> Run:
    """Drive a stored record to COMPLETE, finishing at T0 + seconds."""
    run = Run(compile_sensor(SPEC, name="hello", project=record.project), record)
    now = T0 + timedelta(seconds=seconds)
    for task_id in ("a", "b"):
        run.advance(now)
        run.mark_running(task_id, now)
        run.complete(task_id, {"done": task_id}, now)
    assert run.record.state is RunState.COMPLETE
    return run


def number(store: SQLiteRunStore, name: str) -> Any:
    got = store.get(name)
    assert got is not None, name
    return got.record.event["number"]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = SQLiteRunStore(tmp_path / "runs.db")
    yield opened
    opened.close()


def test_create_then_get_returns_the_record_and_the_spec_snapshot(store: SQLiteRunStore) -> None:
    run = stored("r1", number=7)
    assert store.create_many([run]) == [True]
    got = store.get("r1")
    assert got is not None
    assert got.record == run.record
    assert got.record.event["number"] == 7
    assert got.sensor_spec == SPEC
    assert store.get("missing") is None


def test_a_duplicate_delivery_is_reported_and_overwrites_nothing(store: SQLiteRunStore) -> None:
    assert store.create_many([stored("r1", number=1)]) == [True]
    assert store.create_many([stored("r1", number=2)]) == [False]
    assert number(store, "r1") == 1


def test_a_batch_with_one_duplicate_creates_the_others(store: SQLiteRunStore) -> None:
    store.create_many([stored("r1", number=1)])
    batch = [stored("r0", number=5), stored("r1", number=5), stored("r2", number=5)]
    assert store.create_many(batch) == [True, False, True]
    assert {name: number(store, name) for name in ("r0", "r1", "r2")} == {"r0": 5, "r1": 1, "r2": 5}
    # The same name twice in one batch: the first wins.
    assert store.create_many([stored("r3", number=1), stored("r3", number=2)]) == [True, False]
    assert number(store, "r3") == 1


def test_a_batch_that_cannot_be_written_creates_nothing(store: SQLiteRunStore) -> None:
    bad = StoredRun(record=stored("r2").record, sensor_spec={"not json": {1, 2}})
    with pytest.raises(TypeError):
        store.create_many([stored("r1"), bad])
    assert store.get("r1") is None
    assert store.list() == []


def test_save_persists_every_change(store: SQLiteRunStore) -> None:
    run = stored("r1")
    store.create_many([run])
    live = Run(compile_sensor(SPEC, name="hello", project="p"), run.record)
    live.advance(T0)
    live.mark_running("a", T0)
    store.save(live.record)
    got = store.get("r1")
    assert got is not None
    assert got.record.task("a").state is TaskState.RUNNING
    assert got.record.task("a").attempts == 1
    live.complete("a", {"sha": "abc"}, T0)
    store.save(live.record)
    got = store.get("r1")
    assert got is not None
    assert got.record.task("a").result == {"sha": "abc"}
    assert got.record.task("b").state is TaskState.READY
    assert got.record == live.record


def test_saving_a_run_never_created_is_an_error(store: SQLiteRunStore) -> None:
    with pytest.raises(KeyError, match="r9"):
        store.save(stored("r9").record)


def test_list_is_newest_first_with_limit_and_project(store: SQLiteRunStore) -> None:
    store.create_many(
        [
            stored("old", seconds=1),
            stored("new", seconds=3),
            stored("mid", seconds=2),
            stored("other", project="q", seconds=4),
        ]
    )
    assert [r.name for r in store.list()] == ["other", "new", "mid", "old"]
    assert [r.name for r in store.list(limit=2)] == ["other", "new"]
    assert [r.name for r in store.list(project="p")] == ["new", "mid", "old"]
    assert [r.name for r in store.list(project="q")] == ["other"]
    assert store.list(project="none") == []


def test_unfinished_lists_only_running_runs_with_their_specs(store: SQLiteRunStore) -> None:
    store.create_many([stored("r1", seconds=2), stored("r2", seconds=1), stored("r3")])
    done = store.get("r3")
    assert done is not None
    store.save(finish(done.record, 5).record)
    unfinished = store.unfinished()
    assert [s.record.name for s in unfinished] == ["r2", "r1"]
    assert all(s.sensor_spec == SPEC for s in unfinished)
    assert all(s.record.state is RunState.RUNNING for s in unfinished)


def test_retention_deletes_only_runs_finished_before_the_moment(store: SQLiteRunStore) -> None:
    store.create_many([stored("early"), stored("late"), stored("running")])
    for name, finished_at in (("early", 10), ("late", 20)):
        got = store.get(name)
        assert got is not None
        store.save(finish(got.record, finished_at).record)
    assert store.delete_finished_before(T0 + timedelta(seconds=20)) == 1
    assert store.get("early") is None
    assert store.get("late") is not None
    assert store.get("running") is not None
    # A run still RUNNING is kept however old it is.
    assert store.delete_finished_before(T0 + timedelta(days=365)) == 1
    assert [r.name for r in store.list()] == ["running"]


def test_reopening_reads_back_the_same_data(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state" / "runs.db"
    first = SQLiteRunStore(path)
    run = stored("r1")
    first.create_many([run, stored("r2", seconds=1)])
    live = Run(compile_sensor(SPEC, name="hello", project="p"), run.record)
    live.advance(T0)
    first.save(live.record)
    first.close()

    second = SQLiteRunStore(path)
    try:
        got = second.get("r1")
        assert got is not None
        assert got.record == live.record
        assert got.sensor_spec == SPEC
        assert [r.name for r in second.list()] == ["r2", "r1"]
        assert [s.record.name for s in second.unfinished()] == ["r1", "r2"]
        assert second.create_many([stored("r1")]) == [False]
    finally:
        second.close()


def test_the_database_is_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SQLiteRunStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SQLiteRunStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="schema version"):
        SQLiteRunStore(path)


def test_the_store_is_usable_from_several_threads(store: SQLiteRunStore) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(20):
                run = stored(f"w{worker}-{i}", seconds=i)
                assert store.create_many([run]) == [True]
                store.save(run.record)
                store.list(limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.list(limit=1000)) == 120

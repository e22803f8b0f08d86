import json
import sqlite3
import threading
import time
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


# --- group commit ---------------------------------------------------------------------------


def progressed(run: StoredRun, steps: int) -> RunRecord:
    """A copy of the run's record moved `steps` steps further (READY, RUNNING, COMPLETE, ...)."""
    sensor = compile_sensor(SPEC, name="hello", project=run.record.project)
    live = Run(sensor, RunRecord.from_dict(run.record.to_dict()))
    moves = [
        lambda: live.advance(T0),
        lambda: live.mark_running("a", T0),
        lambda: live.complete("a", {"step": 3}, T0),
        lambda: live.mark_running("b", T0),
        lambda: live.complete("b", {"step": 5}, T0),
    ]
    for move in moves[:steps]:
        move()
    return live.record


def wait_until(condition: Any) -> None:
    """Wait for another thread to get somewhere; the bound only turns a hang into a failure."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the other threads never got there"
        time.sleep(0.001)


class Caller(threading.Thread):
    """Calls one store method in a thread of its own and keeps the result or the exception."""

    def __init__(self, call: Any) -> None:
        super().__init__()
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:
            self.error = exc


def queued_as_one_group(store: SQLiteRunStore, calls: list[Any]) -> list[Caller]:
    """Run the calls in threads while the connection is held, each queued before the next
    starts, then let them go: the first caller leads, finds all the others queued, and commits
    them together in this order."""
    callers = [Caller(call) for call in calls]
    with store._lock:
        for queued, caller in enumerate(callers, start=1):
            caller.start()
            wait_until(lambda n=queued: len(store._pending) == n)
    for caller in callers:
        caller.join()
    return callers


def test_concurrent_writes_from_many_threads_are_all_durable(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteRunStore(path)
    errors: list[BaseException] = []
    expected: dict[str, RunRecord] = {}
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(0, 12, 2):
                pair = [stored(f"w{worker}-{i}", seconds=i), stored(f"w{worker}-{i + 1}")]
                assert store.create_many(pair) == [True, True]
                for run in pair:
                    for steps in range(1, 6):
                        store.save(progressed(run, steps))
                    expected[run.record.name] = progressed(run, 5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.writes == 8 * 6 * (1 + 2 * 5)
    assert 0 < store.commits <= store.writes
    store.close()

    reopened = SQLiteRunStore(path)
    try:
        assert len(reopened.list(limit=1000)) == len(expected) == 96
        for name, record in expected.items():
            got = reopened.get(name)
            assert got is not None, name
            assert got.record == record
            assert got.record.state is RunState.COMPLETE
        assert reopened.unfinished() == []
    finally:
        reopened.close()


def test_concurrent_writes_share_one_commit(store: SQLiteRunStore) -> None:
    created = stored("r0")
    store.create_many([created])
    before = (store.commits, store.writes)
    first, second = stored("r1", number=1), stored("r1", number=2)
    callers = queued_as_one_group(
        store,
        [
            lambda: store.create_many([first]),
            lambda: store.save(progressed(created, 1)),
            lambda: store.create_many([second, stored("r2")]),
            lambda: store.save(progressed(created, 2)),
            lambda: store.save(progressed(created, 3)),
        ],
    )
    assert [c.error for c in callers] == [None] * 5
    assert [c.result for c in callers] == [[True], None, [False, True], None, None]
    assert (store.commits - before[0], store.writes - before[1]) == (1, 5)
    # The first of two batches with the same run name wins, inside one group as across two.
    assert number(store, "r1") == 1
    assert store.get("r2") is not None
    # Saves of one run in one group: the last one queued is the state kept.
    got = store.get("r0")
    assert got is not None
    assert got.record == progressed(created, 3)


def test_saves_of_one_run_in_one_group_are_written_once(
    store: SQLiteRunStore, tmp_path: Path
) -> None:
    run = stored("r0")
    store.create_many([run])
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute("CREATE TABLE updates (name TEXT)")
        db.execute(
            "CREATE TRIGGER count_updates AFTER UPDATE ON runs "
            "BEGIN INSERT INTO updates VALUES (NEW.name); END"
        )
    callers = queued_as_one_group(
        store, [lambda n=n: store.save(progressed(run, n)) for n in (1, 2, 3)]
    )
    assert [c.error for c in callers] == [None] * 3
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT name FROM updates").fetchall() == [("r0",)]
    got = store.get("r0")
    assert got is not None
    assert got.record == progressed(run, 3)


def test_in_a_group_with_a_duplicate_and_bad_records_each_caller_gets_its_own_answer(
    store: SQLiteRunStore,
) -> None:
    existing = stored("r0")
    store.create_many([existing])
    unstorable = stored("bad", number=3)
    # Valid in Python and in JSON, but not UTF-8: SQLite refuses it only inside the transaction.
    unstorable.record.event["title"] = "lone surrogate \ud800"
    unserializable = StoredRun(record=stored("r3").record, sensor_spec={"set": {1, 2}})
    callers = queued_as_one_group(
        store,
        [
            lambda: store.create_many([stored("r1", number=1)]),
            lambda: store.create_many([unstorable]),
            lambda: store.create_many([stored("r1", number=2), stored("r2")]),
            lambda: store.save(progressed(existing, 2)),
            lambda: store.save(stored("r9").record),
        ],
    )
    # A batch that cannot even be serialized fails in its caller, before joining any group.
    with pytest.raises(TypeError):
        store.create_many([unserializable])
    assert [c.result for c in callers] == [[True], None, [False, True], None, None]
    assert callers[0].error is None and callers[2].error is None and callers[3].error is None
    assert isinstance(callers[1].error, UnicodeEncodeError)
    assert isinstance(callers[4].error, KeyError) and "r9" in str(callers[4].error)
    assert number(store, "r1") == 1
    assert store.get("r2") is not None
    assert store.get("bad") is None and store.get("r3") is None and store.get("r9") is None
    got = store.get("r0")
    assert got is not None
    assert got.record == progressed(existing, 2)


def test_a_save_queued_before_the_runs_creation_still_fails(store: SQLiteRunStore) -> None:
    run = stored("r1")
    callers = queued_as_one_group(
        store,
        [
            lambda: store.save(progressed(run, 1)),
            lambda: store.create_many([run]),
            lambda: store.save(progressed(run, 2)),
        ],
    )
    assert isinstance(callers[0].error, KeyError)
    assert [callers[1].result, callers[2].error] == [[True], None]
    got = store.get("r1")
    assert got is not None
    assert got.record == progressed(run, 2)


def test_the_record_column_holds_the_records_json(store: SQLiteRunStore, tmp_path: Path) -> None:
    run = stored("r1", number=4)
    store.create_many([run])
    record = progressed(run, 3)
    store.save(record)
    with sqlite3.connect(tmp_path / "runs.db") as db:
        (text,) = db.execute("SELECT record FROM runs WHERE name = 'r1'").fetchone()
    assert json.loads(text) == json.loads(json.dumps(record.to_dict()))

import asyncio
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hiphops.executor import Executor
from hiphops.runs import Run, RunRecord, RunState, TaskState
from hiphops.sensor import Sensor, compile_sensor
from hiphops.store import SQLiteRunStore, StoredRun
from hiphops.tasks import Registry, TaskCall, TaskError, default_registry
from hiphops.tasks.log import message

REPO = Path(__file__).resolve().parents[2]
Handler = Callable[[TaskCall], Awaitable[Any]]

# `a` completes, then `b` runs with a's result: the sensor of the crash-resume tests.
CHAIN: dict[str, Any] = {
    "tasks": [
        {"name": "t.first", "id": "a", "input": {"(path)n": "event.number"}},
        {
            "name": "t.second",
            "id": "b",
            "depends": {"tasks.a.COMPLETE": "*"},
            "input": {"(path)v": "tasks.a.result.v", "label": "old"},
        },
    ]
}


def arun(work: Awaitable[Any]) -> Any:
    """Run a scenario; the generous timeout turns a hang into a failure, it times nothing."""
    return asyncio.run(asyncio.wait_for(work, 60))


def registry(handlers: Mapping[str, Handler]) -> Registry:
    reg = Registry()
    for name, handler in handlers.items():
        reg.register(name, handler)
    return reg


def start(
    store: SQLiteRunStore, spec: Mapping[str, Any], *, name: str = "r1", number: int = 1
) -> Run:
    """Record a new run of sensor `s` in project `p` (what the intake does) and return it."""
    sensor = compile_sensor(spec, name="s", project="p")
    event = {"project_id": "p", "hiphops": {"source": "github"}, "number": number}
    run = Run.start(sensor, event, name=name, now=datetime.now(UTC))
    assert store.create_many([StoredRun(record=run.record, sensor_spec=sensor.spec)]) == [True]
    return run


def record(store: SQLiteRunStore, name: str = "r1") -> RunRecord:
    got = store.get(name)
    assert got is not None, name
    return got.record


def states(rec: RunRecord) -> dict[str, str]:
    return {t.id: t.state.value for t in rec.tasks}


async def until(condition: Callable[[], bool]) -> None:
    """Poll the loop until `condition` holds (bounded by `arun`'s timeout)."""
    while not condition():
        await asyncio.sleep(0.01)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteRunStore]:
    opened = SQLiteRunStore(tmp_path / "runs.db")
    yield opened
    opened.close()


def test_independent_tasks_really_run_at_the_same_time(store: SQLiteRunStore) -> None:
    async def scenario() -> None:
        started = {"a": asyncio.Event(), "b": asyncio.Event()}

        async def meet(call: TaskCall) -> Any:
            started[call.input["me"]].set()
            # Deadlocks unless the other task's handler is running at the same time.
            await started[call.input["other"]].wait()
            return {"me": call.input["me"]}

        executor = Executor(store, registry({"t.meet": meet}))
        run = start(
            store,
            {
                "tasks": [
                    {"name": "t.meet", "id": "a", "input": {"me": "a", "other": "b"}},
                    {"name": "t.meet", "id": "b", "input": {"me": "b", "other": "a"}},
                ]
            },
        )
        await executor.start_runs([run])
        await executor.wait_idle(timeout=30)
        await executor.close()

    arun(scenario())
    rec = record(store)
    assert rec.state is RunState.COMPLETE
    assert [t.result for t in rec.tasks] == [{"me": "a"}, {"me": "b"}]


def test_the_concurrency_bound_holds_across_runs(store: SQLiteRunStore) -> None:
    started: list[str] = []
    peak = 0

    async def scenario() -> None:
        nonlocal peak
        gate = asyncio.Event()
        two_running = asyncio.Event()
        running = 0

        async def hold(call: TaskCall) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            started.append(f"{call.run}/{call.task_id}")
            if running == 2:
                two_running.set()
            try:
                await gate.wait()
            finally:
                running -= 1

        executor = Executor(store, registry({"t.hold": hold}), concurrency=2)
        runs = [
            start(
                store,
                {"tasks": [{"name": "t.hold", "id": f"t{i}"} for i in range(count)]},
                name=name,
            )
            for name, count in (("r1", 3), ("r2", 2))
        ]
        await executor.start_runs(runs)
        await two_running.wait()
        # Grace for a wrongly unbounded executor to start more; a correct one never will, so
        # this cannot make the test flaky.
        await asyncio.sleep(0.2)
        assert len(started) == 2
        recorded = [t.state for name in ("r1", "r2") for t in record(store, name).tasks]
        assert recorded.count(TaskState.RUNNING) == 2
        assert recorded.count(TaskState.READY) == 3
        gate.set()
        await executor.wait_idle(timeout=30)
        await executor.close()

    arun(scenario())
    assert peak == 2
    assert len(started) == 5
    assert record(store, "r1").state is record(store, "r2").state is RunState.COMPLETE


def test_depends_chains_pass_results_along(store: SQLiteRunStore) -> None:
    calls: list[TaskCall] = []
    hook: list[tuple[str, str, float]] = []

    async def build(call: TaskCall) -> Any:
        calls.append(call)
        return {"y": 42, "sha": "abc"}

    async def use(call: TaskCall) -> Any:
        calls.append(call)
        return {"got": call.input["x"]}

    spec = {
        "tasks": [
            {"name": "t.build", "id": "a", "input": {"(path)n": "event.number"}},
            {
                "name": "t.use",
                "id": "b",
                "depends": {"tasks.a.COMPLETE": "*"},
                "input": {"(path)x": "tasks.a.result.y"},
            },
            {
                "name": "t.use",
                "id": "c",
                "depends": {"tasks.b.COMPLETE": "*"},
                "input": {"(path)x": "tasks.b.result.got", "msg": "built ${tasks.a.result.sha}"},
            },
        ]
    }

    async def scenario() -> None:
        executor = Executor(
            store,
            registry({"t.build": build, "t.use": use}),
            on_task_start=lambda run, task, at: hook.append((run, task, at)),
        )
        await executor.start_runs([start(store, spec, number=7)])
        await executor.wait_idle(timeout=30)
        assert executor.in_flight == []
        await executor.close()

    arun(scenario())
    assert [(c.task_id, dict(c.input)) for c in calls] == [
        ("a", {"n": 7}),
        ("b", {"x": 42}),
        ("c", {"x": 42, "msg": "built abc"}),
    ]
    first = calls[0]
    assert (first.run, first.name, first.project, first.attempt) == ("r1", "t.build", "p", 1)
    assert first.event["number"] == 7
    assert [(run, task) for run, task, _ in hook] == [("r1", "a"), ("r1", "b"), ("r1", "c")]
    assert all(isinstance(at, float) for _, _, at in hook)
    rec = record(store)
    assert rec.state is RunState.COMPLETE
    assert [t.result for t in rec.tasks] == [{"y": 42, "sha": "abc"}, {"got": 42}, {"got": 42}]
    assert all(t.attempts == 1 for t in rec.tasks)


def test_failures_are_recorded_and_failure_handlers_run(
    store: SQLiteRunStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def refuse(call: TaskCall) -> Any:
        raise TaskError("branch is protected")

    async def crash(call: TaskCall) -> Any:
        raise ValueError("bad value")

    async def silent(call: TaskCall) -> Any:
        raise TimeoutError

    async def echo(call: TaskCall) -> Any:
        return dict(call.input)

    spec = {
        "tasks": [
            {"name": "t.refuse", "id": "a"},
            {"name": "t.crash", "id": "b"},
            {"name": "t.silent", "id": "c"},
            {
                "name": "t.echo",
                "id": "alert",
                "depends": {"tasks.a.FAILURE": "*"},
                "input": {"(path)why": "tasks.a.error"},
            },
            {"name": "t.echo", "id": "deploy", "depends": {"tasks.b.COMPLETE": "*"}},
        ]
    }

    async def scenario() -> None:
        handlers = {"t.refuse": refuse, "t.crash": crash, "t.silent": silent, "t.echo": echo}
        executor = Executor(store, registry(handlers))
        await executor.start_runs([start(store, spec)])
        await executor.wait_idle(timeout=30)
        await executor.close()

    with caplog.at_level(logging.ERROR, logger="hiphops.executor"):
        arun(scenario())
    rec = record(store)
    assert rec.state is RunState.FAILURE
    assert states(rec) == {
        "a": "FAILURE",
        "b": "FAILURE",
        "c": "FAILURE",
        "alert": "COMPLETE",
        "deploy": "PENDING",
    }
    assert rec.task("a").error == "branch is protected"
    assert rec.task("b").error == "ValueError: bad value"
    assert rec.task("c").error == "TimeoutError"
    assert rec.task("alert").result == {"why": "branch is protected"}
    assert rec.error is not None and "task a, b, c failed" in rec.error
    # The traceback of the unexpected exception goes to the log only.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert sorted(type(r.exc_info[1]).__name__ for r in tracebacks if r.exc_info) == [
        "TimeoutError",
        "ValueError",
    ]


def test_an_unknown_task_name_fails_that_task(store: SQLiteRunStore) -> None:
    async def ok(call: TaskCall) -> Any:
        return "fine"

    async def scenario() -> None:
        executor = Executor(store, registry({"t.ok": ok, "log.message": message}))
        spec = {"tasks": [{"name": "nope.task", "id": "x"}, {"name": "t.ok", "id": "y"}]}
        await executor.start_runs([start(store, spec)])
        await executor.wait_idle(timeout=30)
        await executor.close()

    arun(scenario())
    rec = record(store)
    assert states(rec) == {"x": "FAILURE", "y": "COMPLETE"}
    assert rec.task("x").error == "no handler for task 'nope.task' (known: log.message, t.ok)"
    assert rec.task("x").attempts == 0
    assert rec.state is RunState.FAILURE


def test_a_result_that_is_not_json_fails_the_task(store: SQLiteRunStore) -> None:
    results: dict[str, Any] = {"set": {"s": {1, 2}}, "nan": float("nan"), "tuple": (1, "x")}
    runs: list[Run] = []

    async def give(call: TaskCall) -> Any:
        return results[call.task_id]

    async def scenario() -> None:
        executor = Executor(store, registry({"t.give": give}))
        spec = {"tasks": [{"name": "t.give", "id": key} for key in results]}
        runs.append(start(store, spec))
        await executor.start_runs(runs)
        await executor.wait_idle(timeout=30)
        await executor.close()

    arun(scenario())
    rec = record(store)
    assert states(rec) == {"set": "FAILURE", "nan": "FAILURE", "tuple": "COMPLETE"}
    assert rec.task("set").error == (
        "t.give returned a result that is not JSON: Object of type set is not JSON serializable"
    )
    assert (rec.task("nan").error or "").startswith("t.give returned a result that is not JSON")
    # Results are kept as plain JSON, the same in memory as after a reload.
    assert rec.task("tuple").result == [1, "x"]
    assert runs[0].record.task("tuple").result == [1, "x"]


def test_dry_run_calls_no_handler_and_completes_with_the_input(store: SQLiteRunStore) -> None:
    called: list[str] = []

    async def real(call: TaskCall) -> Any:
        called.append(call.task_id)
        return "acted"

    spec = {
        "tasks": [
            {"name": "t.real", "id": "a", "input": {"(path)n": "event.number"}},
            {
                "name": "github.merge_pr",
                "id": "b",
                "depends": {"tasks.a.COMPLETE": "*"},
                "input": {"(path)prev": "tasks.a.result.input.n"},
            },
        ]
    }

    async def scenario() -> None:
        executor = Executor(store, registry({"t.real": real}), dry_run=True)
        await executor.start_runs([start(store, spec, number=7)])
        await executor.wait_idle(timeout=30)
        await executor.close()

    arun(scenario())
    assert called == []
    rec = record(store)
    assert rec.state is RunState.COMPLETE
    assert rec.task("a").result == {"dry_run": True, "input": {"n": 7}}
    assert rec.task("b").result == {"dry_run": True, "input": {"prev": 7}}


def test_a_slow_or_failing_run_does_not_hold_up_others(store: SQLiteRunStore) -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(call: TaskCall) -> Any:
            await release.wait()
            return "late"

        async def quick(call: TaskCall) -> Any:
            return "soon"

        async def boom(call: TaskCall) -> Any:
            raise RuntimeError("kaput")

        reg = registry({"t.slow": slow, "t.quick": quick, "t.boom": boom})
        executor = Executor(store, reg)
        runs = [
            start(store, {"tasks": [{"name": f"t.{kind}"}]}, name=f"r-{kind}")
            for kind in ("slow", "boom", "quick")
        ]
        await executor.start_runs(runs)
        await until(lambda: executor.in_flight == ["r-slow"])
        assert record(store, "r-quick").state is RunState.COMPLETE
        assert record(store, "r-boom").state is RunState.FAILURE
        assert record(store, "r-slow").state is RunState.RUNNING
        release.set()
        await executor.wait_idle(timeout=30)
        await executor.close()

    arun(scenario())
    assert record(store, "r-slow").state is RunState.COMPLETE


def test_a_run_already_in_flight_is_not_started_twice(store: SQLiteRunStore) -> None:
    calls: list[int] = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def once(call: TaskCall) -> Any:
            calls.append(call.attempt)
            await release.wait()

        executor = Executor(store, registry({"t.once": once}))
        run = start(store, {"tasks": [{"name": "t.once"}]})
        await executor.start_runs([run, run])
        await until(lambda: len(calls) == 1)
        again = Run(run.sensor, RunRecord.from_dict(record(store).to_dict()))
        await executor.start_runs([again])
        release.set()
        await executor.wait_idle(timeout=30)
        await executor.close()

    arun(scenario())
    assert calls == [1]
    assert record(store).state is RunState.COMPLETE


def test_a_closed_executor_accepts_no_work(store: SQLiteRunStore) -> None:
    async def scenario() -> None:
        executor = Executor(store, default_registry())
        await executor.close()
        with pytest.raises(RuntimeError, match="closed"):
            await executor.start_runs([start(store, CHAIN)])
        with pytest.raises(RuntimeError, match="closed"):
            await executor.resume()

    arun(scenario())


class Counters:
    """Handlers for CHAIN that count their calls; `second` can be made to block forever."""

    def __init__(self, *, block_second: bool) -> None:
        self.first: list[int] = []
        self.second: list[int] = []
        self.second_inputs: list[dict[str, Any]] = []
        self.block_second = block_second
        self.second_started = asyncio.Event()

    def registry(self) -> Registry:
        return registry({"t.first": self.run_first, "t.second": self.run_second})

    async def run_first(self, call: TaskCall) -> Any:
        self.first.append(call.attempt)
        return {"v": call.input["n"] * 10}

    async def run_second(self, call: TaskCall) -> Any:
        self.second.append(call.attempt)
        self.second_inputs.append(dict(call.input))
        self.second_started.set()
        if self.block_second:
            await asyncio.Event().wait()
        return {"v": call.input["v"]}


def resume_and_finish(path: Path, counters: Counters, **options: Any) -> int:
    """A new process: open the store at `path`, resume, run to the end. Returns resume's count."""

    async def scenario() -> int:
        store = SQLiteRunStore(path)
        try:
            executor = Executor(store, counters.registry(), **options)
            resumed = await executor.resume()
            await executor.wait_idle(timeout=30)
            await executor.close()
            return resumed
        finally:
            store.close()

    result: int = arun(scenario())
    return result


def assert_resumed_and_complete(path: Path) -> None:
    store = SQLiteRunStore(path)
    try:
        rec = record(store)
    finally:
        store.close()
    assert rec.state is RunState.COMPLETE
    assert rec.task("a").attempts == 1
    assert rec.task("b").attempts == 2
    assert rec.task("b").result == {"v": 30}


def test_a_closed_executor_leaves_runs_that_a_new_one_resumes(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    before = Counters(block_second=True)

    async def first_process() -> None:
        store = SQLiteRunStore(path)
        executor = Executor(store, before.registry())
        await executor.start_runs([start(store, CHAIN, number=3)])
        await before.second_started.wait()
        await executor.close()
        assert executor.in_flight == []
        rec = record(store)
        assert rec.state is RunState.RUNNING
        assert states(rec) == {"a": "COMPLETE", "b": "RUNNING"}
        store.close()

    arun(first_process())
    after = Counters(block_second=False)
    assert resume_and_finish(path, after) == 1
    assert before.first == [1] and after.first == []
    assert before.second == [1] and after.second == [2]
    assert after.second_inputs == [{"v": 30, "label": "old"}]
    assert_resumed_and_complete(path)
    assert resume_and_finish(path, Counters(block_second=False)) == 0


def test_a_copy_of_the_database_taken_mid_run_resumes(tmp_path: Path) -> None:
    # Copying the files while the handler hangs captures what a crash would leave on disk:
    # nothing was closed or checkpointed.
    path = tmp_path / "live" / "runs.db"
    crashed = tmp_path / "crashed" / "runs.db"
    before = Counters(block_second=True)

    async def first_process() -> None:
        store = SQLiteRunStore(path)
        executor = Executor(store, before.registry())
        await executor.start_runs([start(store, CHAIN, number=3)])
        await before.second_started.wait()
        crashed.parent.mkdir()
        for suffix in ("", "-wal"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                shutil.copyfile(source, crashed.with_name(crashed.name + suffix))
        await executor.close()
        store.close()

    arun(first_process())
    after = Counters(block_second=False)
    assert resume_and_finish(crashed, after) == 1
    assert (before.first, after.first) == ([1], [])
    assert (before.second, after.second) == ([1], [2])
    assert_resumed_and_complete(crashed)


async def crash_child(path: str, log: str) -> None:
    """The process the kill test kills: runs CHAIN, `b` hangs after logging that it started."""

    def note(line: str) -> None:
        with open(log, "a") as out:
            out.write(line + "\n")

    async def first(call: TaskCall) -> Any:
        note("first")
        return {"v": call.input["n"] * 10}

    async def second(call: TaskCall) -> Any:
        note("second")
        await asyncio.Event().wait()

    store = SQLiteRunStore(path)
    executor = Executor(store, registry({"t.first": first, "t.second": second}))
    await executor.start_runs([start(store, CHAIN, number=3)])
    await executor.wait_idle()


def test_a_killed_process_loses_nothing_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    log = tmp_path / "calls.log"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys; from tests.unit.test_executor import crash_child; "
            "asyncio.run(crash_child(sys.argv[1], sys.argv[2]))",
            str(path),
            str(log),
        ],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while "second" not in (log.read_text() if log.exists() else ""):
            assert child.poll() is None, "the child process ended early"
            assert time.monotonic() < deadline, "the child never started task b"
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
    assert log.read_text().split() == ["first", "second"]

    after = Counters(block_second=False)
    assert resume_and_finish(path, after) == 1
    assert after.first == []
    assert after.second == [2]
    assert_resumed_and_complete(path)


def test_resume_follows_the_snapshot_not_the_current_sensor(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    blocked = asyncio.Event()

    async def first_blocks(call: TaskCall) -> Any:
        blocked.set()
        await asyncio.Event().wait()

    async def first_process() -> None:
        store = SQLiteRunStore(path)
        executor = Executor(store, registry({"t.first": first_blocks}))
        await executor.start_runs([start(store, CHAIN, number=3)])
        await blocked.wait()
        await executor.close()
        assert states(record(store)) == {"a": "RUNNING", "b": "PENDING"}
        store.close()

    arun(first_process())
    changed = {"tasks": [dict(CHAIN["tasks"][0]), dict(CHAIN["tasks"][1], input={"label": "new"})]}
    current = compile_sensor(changed, name="s", project="p")
    asked: list[tuple[str, str]] = []

    def sensors(key: tuple[str, str]) -> Sensor | None:
        asked.append(key)
        return current

    after = Counters(block_second=False)
    assert resume_and_finish(path, after, sensors=sensors) == 1
    assert asked == [("p", "s")]
    assert after.first == [2]
    assert after.second_inputs == [{"v": 30, "label": "old"}]


def test_a_run_whose_snapshot_no_longer_fits_is_failed_not_retried(
    store: SQLiteRunStore,
) -> None:
    sensor = compile_sensor(CHAIN, name="s", project="p")
    other = {"tasks": [{"name": "t.first", "id": "z"}]}
    for name, spec in (("mismatch", other), ("invalid", {"tasks": []})):
        run = Run.start(sensor, {"project_id": "p"}, name=name, now=datetime.now(UTC))
        store.create_many([StoredRun(record=run.record, sensor_spec=spec)])

    async def scenario() -> int:
        executor = Executor(store, default_registry())
        resumed = await executor.resume()
        await executor.close()
        return resumed

    assert arun(scenario()) == 0
    mismatch, invalid = record(store, "mismatch"), record(store, "invalid")
    assert mismatch.state is invalid.state is RunState.FAILURE
    assert (
        mismatch.error
        == "cannot resume: run mismatch does not belong to this version of the sensor"
    )
    assert (invalid.error or "").startswith("cannot resume: tasks: required")
    assert mismatch.finished is not None
    assert store.unfinished() == []


class FailingSaves(SQLiteRunStore):
    """A store whose disk fills up after the run was created."""

    def save(self, record: RunRecord) -> None:
        raise OSError("disk full")


def test_a_run_whose_record_cannot_be_saved_stops_and_resumes_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "runs.db"
    called: list[str] = []

    async def act(call: TaskCall) -> Any:
        called.append(call.task_id)
        return "done"

    async def first_process() -> None:
        store = FailingSaves(path)
        executor = Executor(store, registry({"t.act": act}))
        await executor.start_runs([start(store, {"tasks": [{"name": "t.act"}]})])
        await executor.wait_idle(timeout=30)
        assert executor.in_flight == []
        await executor.close()
        store.close()

    with caplog.at_level(logging.ERROR, logger="hiphops.executor"):
        arun(first_process())
    assert called == []
    assert any("resumes from its record" in r.getMessage() for r in caplog.records)

    async def second_process() -> None:
        store = SQLiteRunStore(path)
        executor = Executor(store, registry({"t.act": act}))
        assert await executor.resume() == 1
        await executor.wait_idle(timeout=30)
        await executor.close()
        assert record(store).state is RunState.COMPLETE
        store.close()

    arun(second_process())
    assert called == ["0"]


def test_registry_names_and_checks() -> None:
    async def handler(call: TaskCall) -> Any:
        return None

    reg = Registry()
    reg.register("github.merge_pr", handler)
    reg.register("slack.post_message", handler)
    assert reg.names() == ["github.merge_pr", "slack.post_message"]
    assert reg.get("github.merge_pr") is handler
    assert reg.get("github.nope") is None
    with pytest.raises(ValueError, match="already registered"):
        reg.register("github.merge_pr", handler)
    with pytest.raises(ValueError, match="not a task name"):
        reg.register("merge", handler)


def test_log_message_logs_and_returns_its_input(caplog: pytest.LogCaptureFixture) -> None:
    handler = default_registry().get("log.message")
    assert handler is not None
    call = TaskCall(
        run="r1",
        task_id="0",
        name="log.message",
        input={"text": "hi"},
        event={},
        project="p",
        attempt=1,
    )
    with caplog.at_level(logging.INFO, logger="hiphops.tasks.log"):
        assert arun(handler(call)) == {"logged": {"text": "hi"}}
    assert [r.getMessage() for r in caplog.records] == ['run r1 task 0: {"text": "hi"}']

"""The run executor: drives each run's state machine and calls the task handlers (DESIGN §1, §4).

Every READY task starts at once in its own asyncio task, bounded by one global semaphore. The
run record is saved before a handler is called and after every result, so the store always holds
the truth a restarted process resumes from: tasks interrupted while RUNNING are started again
(handlers are safe to retry), READY tasks start, finished tasks are never repeated.

Blocking store calls run on a small pool of dedicated threads, off the event loop. Saves of
different runs are handed over concurrently, so that a store that commits concurrent writes
together (SQLiteRunStore's group commit) writes them with one fsync instead of one after another;
saves of one run stay ordered because each run waits for its previous save.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from hiphops.problems import SensorInvalid
from hiphops.runs import Run, RunRecord, RunState, TaskRecord, timestamp
from hiphops.sensor import Sensor, compile_sensor
from hiphops.store import RunStore, StoredRun
from hiphops.tasks.registry import Registry, TaskCall, TaskError, TaskHandler

logger = logging.getLogger("hiphops.executor")

#: Called with (run name, task id, `time.monotonic()`) just before a handler is called (in a dry
#: run, where the handler would have been called).
TaskStartHook = Callable[[str, str, float], None]
#: The current compiled sensor for a (project, name) key, or None.
SensorLookup = Callable[[tuple[str, str]], Sensor | None]

_T = TypeVar("_T")


def utc_now() -> datetime:
    """The current time in UTC (the executor's default clock)."""
    return datetime.now(UTC)


class _Active:
    """A run in flight in this executor and the bookkeeping that keeps its saves ordered."""

    def __init__(self, run: Run) -> None:
        self.run = run
        # Transitions evaluate the sensor's JavaScript, so they run on a worker thread; this
        # lock keeps one run's transitions (and the snapshots its saves take) one at a time.
        self.state_lock = asyncio.Lock()
        self.save_lock = asyncio.Lock()
        self.changes = 0  # save requests made so far
        self.saved = 0  # the save requests covered by the last write
        self.scheduled: set[str] = set()  # task ids given a job; none is ever given two
        self.jobs: set[asyncio.Task[None]] = set()
        self.broken = False  # a save failed: stop here and leave the run to a later resume

    @property
    def name(self) -> str:
        return self.run.record.name

    async def transition(self, change: Callable[[], _T]) -> _T:
        """Apply a change to the run off the event loop, one change of this run at a time."""
        async with self.state_lock:
            return await asyncio.to_thread(change)


class Executor:
    """Runs tasks of many runs concurrently; each run proceeds independently of the others."""

    def __init__(
        self,
        store: RunStore,
        registry: Registry,
        *,
        concurrency: int = 16,
        dry_run: bool = False,
        clock: Callable[[], datetime] = utc_now,
        sensors: SensorLookup | None = None,
        on_task_start: TaskStartHook | None = None,
        store_threads: int = 4,
    ) -> None:
        """`concurrency` bounds the handlers running at once across all runs. With `dry_run`, no
        handler is called: every task that would start completes with its rendered input.
        `sensors` lets `resume` reuse an already compiled sensor whose spec equals a run's
        snapshot instead of compiling the snapshot again. `on_task_start` must be cheap and must
        not raise. `store_threads` bounds the store calls in progress at once (the saves a group
        commit can gather from this executor)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if store_threads < 1:
            raise ValueError("store_threads must be at least 1")
        self._store = store
        self._registry = registry
        self._dry_run = dry_run
        self._clock = clock
        self._sensors = sensors
        self.on_task_start = on_task_start
        self._slots = asyncio.Semaphore(concurrency)
        self._io = ThreadPoolExecutor(max_workers=store_threads, thread_name_prefix="hiphops-store")
        self._runs: dict[str, _Active] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    @property
    def in_flight(self) -> list[str]:
        """Names of the runs this executor is driving now."""
        return list(self._runs)

    async def start_runs(self, runs: Sequence[Run]) -> None:
        """Begin executing runs already recorded in the store. Returns at once; the work goes on
        in background tasks. A run already in flight here, or already finished, is ignored."""
        self._check_open()
        for run in runs:
            if run.finished or run.record.name in self._runs:
                continue
            self._adopt(run)

    async def resume(self) -> int:
        """Continue every unfinished run of the store (at start-up); returns how many resumed.

        Each run is rebuilt from its sensor snapshot. A run whose snapshot no longer compiles, or
        no longer fits its record, is recorded as FAILURE with the reason rather than retried at
        every start.
        """
        self._check_open()
        resumed = 0
        for stored in await self._in_thread(self._store.unfinished):
            record = stored.record
            if record.name in self._runs:
                continue
            try:
                run = Run(self._sensor_for(stored), record)
            except (SensorInvalid, ValueError) as exc:
                logger.error("run %s cannot resume: %s", record.name, exc)
                await self._abandon(record, f"cannot resume: {exc}")
                continue
            logger.info("resuming run %s", record.name)
            self._adopt(run)
            resumed += 1
        return resumed

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no run is in flight; raises TimeoutError after `timeout` seconds."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self) -> None:
        """Stop accepting work and cancel in-flight tasks. Records stay resumable: an interrupted
        task was saved as RUNNING before its handler started, a waiting one as READY."""
        if self._closed:
            return
        self._closed = True
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        self._runs.clear()
        # Lets a write already handed to the store thread finish before the store is closed.
        await asyncio.to_thread(self._io.shutdown, True)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the executor is closed")

    def _sensor_for(self, stored: StoredRun) -> Sensor:
        record = stored.record
        if self._sensors is not None:
            current = self._sensors((record.project, record.sensor))
            if current is not None and dict(current.spec) == dict(stored.sensor_spec):
                return current
        return compile_sensor(stored.sensor_spec, name=record.sensor, project=record.project)

    async def _abandon(self, record: RunRecord, error: str) -> None:
        record.state = RunState.FAILURE
        record.error = error
        record.finished = timestamp(self._clock())
        await self._in_thread(self._store.save, record)

    def _adopt(self, run: Run) -> None:
        active = _Active(run)
        self._runs[active.name] = active
        self._spawn(active, self._begin(active))

    def _spawn(self, active: _Active, work: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            # A handler that swallowed its cancellation may still report; what it would start
            # now stays READY in the record for the next resume.
            work.close()
            return
        job = asyncio.get_running_loop().create_task(self._guarded(active, work))
        self._jobs.add(job)
        active.jobs.add(job)
        self._idle.clear()
        job.add_done_callback(lambda done: self._finished_job(active, done))

    def _finished_job(self, active: _Active, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        active.jobs.discard(job)
        if not active.jobs and self._runs.get(active.name) is active:
            del self._runs[active.name]
        if not self._jobs:
            self._idle.set()

    async def _guarded(self, active: _Active, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            # Only the store or a bug gets here; the durable record still says what was done.
            active.broken = True
            logger.exception("run %s stopped; it resumes from its record at start", active.name)

    async def _begin(self, active: _Active) -> None:
        """Settle what can be settled, then start READY tasks and restart interrupted ones."""
        run = active.run
        interrupted = run.running()
        now = self._clock()
        ready = await active.transition(lambda: run.advance(now))
        await self._save(active)
        self._after_save(active, [*interrupted, *ready])

    def _after_save(self, active: _Active, startable: list[TaskRecord]) -> None:
        if active.run.finished:
            record = active.run.record
            logger.info("run %s %s%s", record.name, record.state.value, _suffix(record.error))
            return
        for task in startable:
            if task.id not in active.scheduled:
                active.scheduled.add(task.id)
                self._spawn(active, self._execute(active, task.id))

    async def _execute(self, active: _Active, task_id: str) -> None:
        run = active.run
        task = run.record.task(task_id)
        handler: TaskHandler | None = None
        outcome: Any  # the result when ok, else the error
        if not self._dry_run:
            handler = self._registry.get(task.name)
            if handler is None:
                known = ", ".join(self._registry.names()) or "none"
                error = f"no handler for task {task.name!r} (known: {known})"
                now = self._clock()
                ready = await active.transition(lambda: run.fail(task_id, error, now))
                await self._save(active)
                self._after_save(active, ready)
                return
        async with self._slots:
            if active.broken:
                return
            async with active.state_lock:  # no JavaScript here: the loop is fine
                task = run.mark_running(task_id, self._clock())
            await self._save(active)
            call = TaskCall(
                run=run.record.name,
                task_id=task.id,
                name=task.name,
                input=task.input if task.input is not None else {},
                event=run.record.event,
                project=run.record.project,
                attempt=task.attempts,
            )
            if self.on_task_start is not None:
                self.on_task_start(call.run, call.task_id, time.monotonic())
            if handler is None:
                ok, outcome = True, {"dry_run": True, "input": dict(call.input)}
            else:
                ok, outcome = await _call(handler, call)
        if active.broken:
            return
        now = self._clock()
        if ok:
            ready = await active.transition(lambda: run.complete(task_id, outcome, now))
        else:
            ready = await active.transition(lambda: run.fail(task_id, outcome, now))
        await self._save(active)
        self._after_save(active, ready)

    async def _save(self, active: _Active) -> None:
        """Write the run's record. Saves of one run never overlap, and a request already covered
        by a write that started after it was made is not written again."""
        active.changes += 1
        wanted = active.changes
        async with active.save_lock:
            if active.saved >= wanted:
                return
            covered = active.changes
            # Snapshot between transitions: the record changes while the store thread writes.
            async with active.state_lock:
                snapshot = _snapshot(active.run.record)
            await self._in_thread(self._store.save, snapshot)
            active.saved = covered

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._io, function, *args)


async def _call(handler: TaskHandler, call: TaskCall) -> tuple[bool, Any]:
    """Call a handler: (True, its result as plain JSON) or (False, the task's error)."""
    try:
        result = await handler(call)
    except TaskError as exc:
        return False, str(exc) or "TaskError"
    except Exception as exc:
        logger.exception("run %s task %s (%s) raised", call.run, call.task_id, call.name)
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        # The record holds exactly what JSON holds, in memory as after a reload.
        return True, json.loads(json.dumps(result, allow_nan=False))
    except (TypeError, ValueError) as exc:
        return False, f"{call.name} returned a result that is not JSON: {exc}"


def _snapshot(record: RunRecord) -> RunRecord:
    """A copy of the record that later state changes do not reach.

    The run changes a record only by assigning its fields and its tasks' fields and by adding to
    each task's `times`: those are copied. The event, inputs and results are shared, never
    copied: they are only ever replaced, and handlers must not modify them (`TaskCall`). A deep
    copy of a 25 KB event would cost more than the write itself, at every save.
    """
    return replace(record, tasks=[replace(task, times=dict(task.times)) for task in record.tasks])


def _suffix(error: str | None) -> str:
    return f": {error}" if error else ""

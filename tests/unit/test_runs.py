import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hiphops.runs import Run, RunRecord, RunState, TaskState, TransitionError
from hiphops.sensor import Sensor, compile_sensor

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
EVENT = {"project_id": "p", "hiphops": {"source": "github"}, "number": 7, "repo": "hiphops"}


def sensor(tasks: list[dict[str, Any]], **extra: Any) -> Sensor:
    return compile_sensor({"tasks": tasks, **extra}, name="s", project="p")


def states(run: Run) -> dict[str, str]:
    return {t.id: t.state.value for t in run.record.tasks}


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_independent_tasks_start_at_once_and_complete_the_run() -> None:
    run = Run.start(
        sensor([{"name": "a.x", "id": "a"}, {"name": "a.y", "id": "b"}]), EVENT, name="r", now=T0
    )
    assert states(run) == {"a": "PENDING", "b": "PENDING"}
    ready = run.advance(T0)
    assert [t.id for t in ready] == ["a", "b"]
    run.mark_running("a", at(1))
    run.mark_running("b", at(1))
    assert run.complete("a", {"ok": 1}, at(2)) == []
    assert not run.finished
    run.complete("b", None, at(3))
    assert run.finished
    assert run.record.state is RunState.COMPLETE
    assert run.record.finished == "2026-12-03T12:00:03.000Z"
    assert run.record.task("a").times == {
        "PENDING": "2026-12-03T12:00:00.000Z",
        "READY": "2026-12-03T12:00:00.000Z",
        "RUNNING": "2026-12-03T12:00:01.000Z",
        "COMPLETE": "2026-12-03T12:00:02.000Z",
    }


def test_depends_is_rechecked_after_each_result_and_sees_results() -> None:
    run = Run.start(
        sensor(
            [
                {"name": "a.build", "id": "build"},
                {
                    "name": "a.notify",
                    "id": "notify",
                    "depends": {"tasks.build.COMPLETE": "*"},
                    "input": {
                        "(path)sha": "tasks.build.result.sha",
                        "msg": "built ${tasks.0.result.sha}",
                    },
                },
            ]
        ),
        EVENT,
        name="r",
        now=T0,
    )
    assert [t.id for t in run.advance(T0)] == ["build"]
    assert run.waiting_reason(run.record.task("notify")) == (
        "tasks.build.COMPLETE: missing does not match [*]"
    )
    run.mark_running("build", T0)
    ready = run.complete("build", {"sha": "abc"}, at(1))
    assert [t.id for t in ready] == ["notify"]
    assert ready[0].input == {"sha": "abc", "msg": "built abc"}


def test_when_false_skips_and_skipped_counts_as_done() -> None:
    run = Run.start(
        sensor(
            [{"name": "a.x", "id": "a", "when": {"event.number": "8"}}, {"name": "a.y", "id": "b"}]
        ),
        EVENT,
        name="r",
        now=T0,
    )
    assert [t.id for t in run.advance(T0)] == ["b"]
    skipped = run.record.task("a")
    assert skipped.state is TaskState.SKIPPED
    assert skipped.reason == "when did not hold: event.number: 7 does not match [8]"
    run.mark_running("b", T0)
    run.complete("b", None, T0)
    assert run.record.state is RunState.COMPLETE


def test_a_failure_fails_the_run_but_failure_handlers_still_run() -> None:
    run = Run.start(
        sensor(
            [
                {"name": "a.build", "id": "build"},
                {"name": "a.ok", "id": "deploy", "depends": {"tasks.build.COMPLETE": "*"}},
                {
                    "name": "a.alert",
                    "id": "alert",
                    "depends": {"tasks.build.FAILURE": "*"},
                    "input": {"(path)why": "tasks.build.error"},
                },
            ]
        ),
        EVENT,
        name="r",
        now=T0,
    )
    run.advance(T0)
    run.mark_running("build", T0)
    ready = run.fail("build", "boom", at(1))
    assert [t.id for t in ready] == ["alert"]
    assert ready[0].input == {"why": "boom"}
    run.mark_running("alert", at(1))
    run.complete("alert", None, at(2))
    assert run.finished
    assert run.record.state is RunState.FAILURE
    assert run.record.error is not None and "task build failed" in run.record.error
    assert "deploy" in run.record.error
    assert run.record.task("deploy").state is TaskState.PENDING
    assert run.record.task("deploy").reason == (
        "can never start: tasks.build.COMPLETE: missing does not match [*]"
    )


def test_no_pending_task_can_ever_start_fails_the_run() -> None:
    # `b` waits for `a` to complete, but `a` is skipped: nothing can move any more.
    run = Run.start(
        sensor(
            [
                {"name": "a.x", "id": "a", "when": {"event.number": "0"}},
                {"name": "a.y", "id": "b", "depends": {"tasks.a.COMPLETE": "*"}},
            ]
        ),
        EVENT,
        name="r",
        now=T0,
    )
    assert run.advance(T0) == []
    assert run.finished
    assert run.record.state is RunState.FAILURE
    assert "tasks that can never start: b" in (run.record.error or "")


def test_cyclic_depends_through_javascript_cannot_start() -> None:
    # Static checks cannot see references inside JavaScript; the run still ends, as FAILURE.
    run = Run.start(
        sensor(
            [
                {"name": "a.x", "id": "a", "depends": {"$": "tasks.b.COMPLETE"}},
                {"name": "a.y", "id": "b", "depends": {"$": "tasks.a.COMPLETE"}},
            ]
        ),
        EVENT,
        name="r",
        now=T0,
    )
    assert run.advance(T0) == []
    assert run.record.state is RunState.FAILURE
    assert states(run) == {"a": "PENDING", "b": "PENDING"}


def test_input_render_error_fails_the_task_not_the_process() -> None:
    run = Run.start(sensor([{"name": "a.x", "input": {"$": "42"}}]), EVENT, name="r", now=T0)
    assert run.advance(T0) == []
    task = run.record.tasks[0]
    assert task.state is TaskState.FAILURE
    assert task.error == "input: tasks[0].input.$: must return an object to merge, got int"
    assert run.record.state is RunState.FAILURE


def test_javascript_error_in_when_fails_the_task() -> None:
    run = Run.start(
        sensor([{"name": "a.x", "when": {"$": "event.no.such"}}]), EVENT, name="r", now=T0
    )
    run.advance(T0)
    assert run.record.tasks[0].state is TaskState.FAILURE
    assert (run.record.tasks[0].error or "").startswith("when: ")


def test_context_has_tasks_by_id_and_index_vars_and_run() -> None:
    s = sensor([{"name": "a.x", "id": "a"}], vars={"team": "core"})
    run = Run.start(s, EVENT, name="r1", now=T0)
    data = run.context().data
    assert data["tasks"]["a"] is data["tasks"]["0"]
    assert data["vars"] == {"team": "core"}
    assert data["run"] == {
        "name": "r1",
        "sensor": "s",
        "sensor_name": "s",
        "project": "p",
        "started": "2026-12-03T12:00:00.000Z",
    }


def test_illegal_transitions_raise() -> None:
    run = Run.start(sensor([{"name": "a.x", "id": "a"}]), EVENT, name="r", now=T0)
    with pytest.raises(TransitionError):
        run.mark_running("a", T0)  # still PENDING
    run.advance(T0)
    with pytest.raises(TransitionError):
        run.complete("a", None, T0)  # not RUNNING
    run.mark_running("a", T0)
    run.complete("a", None, T0)
    with pytest.raises(TransitionError):
        run.fail("a", "late", T0)


def test_resume_from_a_serialized_record() -> None:
    s = sensor(
        [
            {"name": "a.x", "id": "a"},
            {"name": "a.y", "id": "b", "depends": {"tasks.a.COMPLETE": "*"}},
        ]
    )
    run = Run.start(s, EVENT, name="r", now=T0)
    run.advance(T0)
    run.mark_running("a", T0)
    stored = json.dumps(run.record.to_dict())  # the process dies here

    resumed = Run(s, RunRecord.from_dict(json.loads(stored)))
    assert [t.id for t in resumed.running()] == ["a"]
    task = resumed.mark_running("a", at(5))  # the executor restarts the interrupted task
    assert task.attempts == 2
    ready = resumed.complete("a", {"v": 1}, at(6))
    assert [t.id for t in ready] == ["b"]
    resumed.mark_running("b", at(6))
    resumed.complete("b", None, at(7))
    assert resumed.record.state is RunState.COMPLETE
    assert RunRecord.from_dict(resumed.record.to_dict()) == resumed.record


def test_record_for_another_sensor_version_is_refused() -> None:
    run = Run.start(sensor([{"name": "a.x", "id": "a"}]), EVENT, name="r", now=T0)
    with pytest.raises(ValueError, match="does not belong"):
        Run(sensor([{"name": "a.x", "id": "z"}]), run.record)

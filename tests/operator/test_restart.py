"""An operator stopped in the middle of a run, and started again: the run completes, and no
task runs twice (the Job a task started is found again, not created anew)."""

from __future__ import annotations

from typing import Any

import pytest

from hiphops.runs import run_name
from hiphops_operator.jobs import job_name
from hiphops_operator.kube import JOBS, PODS, SENSORRUNS, SENSORS
from hiphops_operator.settings import Settings
from webhook_gateway.intake_client import HTTPIntake

from .conftest import (
    NAMESPACE,
    TOKEN,
    AsyncApi,
    Emulator,
    condition_of,
    github_event,
    sensor_manifest,
    wait_for,
)

pytestmark = pytest.mark.asyncio

SENSOR = {
    "tasks": [
        {"name": "log.message", "id": "first", "input": {"text": "before the job"}},
        {
            "name": "k8s.run_job",
            "id": "build",
            "depends": {"tasks.first.COMPLETE": "*"},
            "input": {"image": "busybox:1.36", "args": ["echo", '{"built": true}']},
        },
        {
            "name": "log.message",
            "id": "last",
            "depends": {"tasks.build.COMPLETE": "*"},
            "input": {"(path)built": "tasks.build.result.built"},
        },
    ]
}


async def _tasks(api: AsyncApi, name: str) -> dict[str, dict[str, Any]]:
    body = await api.get(SENSORRUNS, NAMESPACE, name)
    return {t["id"]: t for t in ((body or {}).get("status") or {}).get("tasks") or []}


async def test_a_run_interrupted_by_a_restart_completes_with_each_task_once(
    api: AsyncApi, emulator: Emulator, settings: Settings, start_operator: Any
) -> None:
    operator = await start_operator(settings)
    await api.create(SENSORS, NAMESPACE, sensor_manifest("build", SENSOR))

    async def ready() -> bool:
        condition = condition_of(await api.get(SENSORS, NAMESPACE, "build"), "Ready")
        return condition is not None and condition["status"] == "True"

    await wait_for(ready)
    intake = HTTPIntake(operator.intake_url + "/intake", TOKEN)
    try:
        result = await intake.accept([github_event("restart-1")])
    finally:
        await intake.close()
    name = run_name("restart-1", NAMESPACE, "build")
    assert result.runs == [name]
    job = job_name(name, "build")

    async def job_running() -> dict[str, dict[str, Any]] | None:
        tasks = await _tasks(api, name)
        running = tasks.get("build", {}).get("state") == "RUNNING"
        return tasks if running and await api.get(JOBS, NAMESPACE, job) else None

    before = await wait_for(job_running)
    assert before["first"]["state"] == "COMPLETE" and before["first"]["attempts"] == 1
    assert before["last"]["state"] == "PENDING"

    await operator.stop()
    stopped = await _tasks(api, name)
    assert stopped["build"]["state"] == "RUNNING"  # the record says where to resume

    again = await start_operator(settings)
    await wait_for(lambda: _attempts(api, name, "build", 2))
    # The Job finishes while the restarted operator waits for it.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job}-abcde", "namespace": NAMESPACE, "labels": {"job-name": job}},
        "status": {
            "containerStatuses": [
                {
                    "name": "task",
                    "state": {"terminated": {"exitCode": 0, "message": '{"built": true}'}},
                }
            ]
        },
    }
    await api.create(PODS, NAMESPACE, pod)
    status = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
    await api.patch(JOBS, NAMESPACE, job, {"status": status}, subresource="status")

    async def finished() -> dict[str, Any] | None:
        body = await api.get(SENSORRUNS, NAMESPACE, name)
        run_status = (body or {}).get("status") or {}
        return run_status if run_status.get("state") in ("COMPLETE", "FAILURE") else None

    final = await wait_for(finished)
    assert final["state"] == "COMPLETE", final
    tasks = {t["id"]: t for t in final["tasks"]}
    # `first` ran once, before the restart: same attempt, same completion time.
    assert tasks["first"]["attempts"] == 1
    assert tasks["first"]["times"] == before["first"]["times"]
    # `build` was started again after the restart, but its Job was created once.
    assert tasks["build"]["attempts"] == 2
    assert tasks["build"]["result"] == {"built": True}
    assert tasks["last"]["attempts"] == 1
    assert tasks["last"]["result"] == {"logged": {"built": True}}
    jobs = [j for j in await api.list(JOBS, NAMESPACE) if j["metadata"]["name"] == job]
    assert len(jobs) == 1
    job_posts = [r for r in emulator if r.method == "POST" and r.url.path.endswith("/jobs")]
    assert len(job_posts) == 2  # created once; the second attempt found it (409)
    assert again.runtime.executor is not None


async def _attempts(api: AsyncApi, name: str, task: str, attempts: int) -> bool:
    return (await _tasks(api, name)).get(task, {}).get("attempts") == attempts

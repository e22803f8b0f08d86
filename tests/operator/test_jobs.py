"""`k8s.run_job`: the Job it creates, field by field, and the result read from the pod status."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from hiphops.loader import API_VERSION
from hiphops.tasks.registry import TaskCall, TaskError
from hiphops_operator.jobs import JobRunner, job_name, parse_input
from hiphops_operator.kube import JOBS, PODS, SECRETS, SENSORRUNS
from hiphops_operator.settings import Settings

from .conftest import NAMESPACE, AsyncApi, wait_for

pytestmark = pytest.mark.asyncio

RUN = "build-0123456789abcdef"
EVENT = {"project_id": NAMESPACE, "hiphops": {"source": "github", "delivery": "d1"}}


def _settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "task_service_account": "hiphops-task",
        "image_allow": ("ghcr.io/acme/**", "busybox:*"),
        "job_ttl": 600,
        "job_poll_interval": 0.02,
    }
    values.update(changes)
    return Settings(**values)


def _call(task_input: dict[str, Any], task_id: str = "build") -> TaskCall:
    return TaskCall(
        run=RUN,
        task_id=task_id,
        name="k8s.run_job",
        input=task_input,
        event=EVENT,
        project=NAMESPACE,
        attempt=1,
    )


async def _sensorrun(api: AsyncApi) -> dict[str, Any]:
    body = {
        "apiVersion": API_VERSION,
        "kind": "SensorRun",
        "metadata": {"name": RUN, "namespace": NAMESPACE},
        "spec": {"sensor": "build", "event": EVENT},
    }
    created: dict[str, Any] = await api.create(SENSORRUNS, NAMESPACE, body)
    return created


async def _finish(
    api: AsyncApi, name: str, *, succeeded: bool, terminated: dict[str, Any], job: Any = None
) -> None:
    """What the cluster would do: a pod of the Job terminates, the Job reports its outcome."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-x1y2z", "namespace": NAMESPACE, "labels": {"job-name": name}},
        "spec": {"containers": [{"name": "task", "image": "busybox:1.36"}]},
        "status": {
            "phase": "Succeeded" if succeeded else "Failed",
            "containerStatuses": [{"name": "task", "state": {"terminated": terminated}}],
        },
    }
    await api.create(PODS, NAMESPACE, pod)
    condition = job or {
        "type": "Complete" if succeeded else "Failed",
        "status": "True",
        "reason": None if succeeded else "BackoffLimitExceeded",
    }
    status = {"conditions": [{k: v for k, v in condition.items() if v is not None}]}
    status["succeeded" if succeeded else "failed"] = 1
    await api.patch(JOBS, NAMESPACE, name, {"status": status}, subresource="status")


async def test_the_job_is_restricted_and_its_termination_message_is_the_result(
    api: AsyncApi,
) -> None:
    owner = await _sensorrun(api)
    runner = JobRunner(api.kube, _settings())
    task_input = {
        "image": "ghcr.io/acme/tools/build:1.2",
        "command": ["/bin/build"],
        "args": ["--fast", "x y"],
        "env": {"MODE": "release", "RETRIES": 3},
        "timeout": "5m",
    }
    handler = asyncio.ensure_future(runner(_call(task_input)))
    name = job_name(RUN, "build")
    job = await wait_for(lambda: api.get(JOBS, NAMESPACE, name))
    assert len(name) <= 63

    owner_ref = {
        "apiVersion": API_VERSION,
        "kind": "SensorRun",
        "name": RUN,
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }
    assert job["metadata"]["ownerReferences"] == [owner_ref]
    assert job["metadata"]["labels"] == {"hiphops.io/run": RUN, "hiphops.io/task": "build"}
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 300
    assert spec["ttlSecondsAfterFinished"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "hiphops-task"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["name"] == "task"
    assert container["image"] == "ghcr.io/acme/tools/build:1.2"
    assert container["command"] == ["/bin/build"]
    assert container["args"] == ["--fast", "x y"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["env"] == [
        {"name": "HIPHOPS_INPUT", "value": "/hiphops/input.json"},
        {"name": "HIPHOPS_EVENT", "value": "/hiphops/event.json"},
        {"name": "HIPHOPS_RUN", "value": RUN},
        {"name": "HIPHOPS_TASK", "value": "build"},
        {"name": "MODE", "value": "release"},
        {"name": "RETRIES", "value": "3"},
    ]
    assert container["volumeMounts"] == [
        {"name": "hiphops", "mountPath": "/hiphops", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert pod["volumes"] == [
        {"name": "hiphops", "secret": {"secretName": name, "defaultMode": 0o440}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    assert "resources" not in container and "hostNetwork" not in pod and "volumes" in pod

    secret = await api.get(SECRETS, NAMESPACE, name)
    assert secret is not None and secret["metadata"]["ownerReferences"] == [owner_ref]
    files = {k: json.loads(base64.b64decode(v)) for k, v in secret["data"].items()}
    assert files == {"input.json": task_input, "event.json": EVENT}

    assert not handler.done()  # waits for the Job
    await _finish(
        api,
        name,
        succeeded=True,
        terminated={"exitCode": 0, "reason": "Completed", "message": '{"artifact": "a.tgz"}\n'},
    )
    assert await handler == {"artifact": "a.tgz"}
    # The input and event are not kept once read; the Job stays for its TTL (logs).
    assert await api.get(SECRETS, NAMESPACE, name) is None
    assert await api.get(JOBS, NAMESPACE, name) is not None


async def test_a_failed_container_fails_the_task_with_its_reason(api: AsyncApi) -> None:
    await _sensorrun(api)
    runner = JobRunner(api.kube, _settings())
    handler = asyncio.ensure_future(runner(_call({"image": "busybox:1.36"})))
    name = job_name(RUN, "build")
    await wait_for(lambda: api.get(JOBS, NAMESPACE, name))
    await _finish(
        api,
        name,
        succeeded=False,
        terminated={"exitCode": 2, "reason": "Error", "message": "build failed: no space left"},
    )
    with pytest.raises(TaskError) as failed:
        await handler
    assert str(failed.value) == (
        "k8s.run_job: container Error (exit code 2): build failed: no space left"
    )


async def test_a_job_past_its_deadline_is_a_timeout(api: AsyncApi) -> None:
    await _sensorrun(api)
    runner = JobRunner(api.kube, _settings())
    handler = asyncio.ensure_future(runner(_call({"image": "busybox:1.36", "timeout": 30})))
    name = job_name(RUN, "build")
    job = await wait_for(lambda: api.get(JOBS, NAMESPACE, name))
    assert job["spec"]["activeDeadlineSeconds"] == 30
    condition = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}
    status = {"conditions": [condition], "failed": 1}
    await api.patch(JOBS, NAMESPACE, name, {"status": status}, subresource="status")
    with pytest.raises(TaskError, match=r"timed out after 30s \(DeadlineExceeded\)"):
        await handler


async def test_a_result_that_is_not_json_fails_the_task(api: AsyncApi) -> None:
    await _sensorrun(api)
    runner = JobRunner(api.kube, _settings())
    handler = asyncio.ensure_future(runner(_call({"image": "busybox:1.36"})))
    name = job_name(RUN, "build")
    await wait_for(lambda: api.get(JOBS, NAMESPACE, name))
    await _finish(api, name, succeeded=True, terminated={"exitCode": 0, "message": "done!"})
    with pytest.raises(TaskError, match="termination message is not JSON: 'done!'"):
        await handler


async def test_a_task_started_again_waits_for_its_existing_job(api: AsyncApi) -> None:
    await _sensorrun(api)
    settings = _settings()
    first = asyncio.ensure_future(JobRunner(api.kube, settings)(_call({"image": "busybox:1"})))
    name = job_name(RUN, "build")
    await wait_for(lambda: api.get(JOBS, NAMESPACE, name))
    first.cancel()  # the operator stopped while the Job ran
    with pytest.raises(asyncio.CancelledError):
        await first
    again = asyncio.ensure_future(JobRunner(api.kube, settings)(_call({"image": "busybox:1"})))
    await asyncio.sleep(0.1)
    assert not again.done()
    jobs = [j for j in await api.list(JOBS, NAMESPACE) if j["metadata"]["name"] == name]
    assert len(jobs) == 1
    await _finish(api, name, succeeded=True, terminated={"exitCode": 0, "message": "[1, 2]"})
    assert await again == [1, 2]


async def test_images_outside_the_allow_list_are_refused_before_any_job(api: AsyncApi) -> None:
    await _sensorrun(api)
    runner = JobRunner(api.kube, _settings())
    with pytest.raises(TaskError, match=r"image 'ghcr.io/evil/miner:1' is not allowed"):
        await runner(_call({"image": "ghcr.io/evil/miner:1"}))
    # `*` does not cross `/`: busybox:* allows tags of busybox, not other repositories.
    with pytest.raises(TaskError, match="not allowed"):
        await runner(_call({"image": "busybox:1/../../x"}))
    assert await api.list(JOBS, NAMESPACE) == []
    assert await api.list(SECRETS, NAMESPACE) == []


@pytest.mark.parametrize(
    ("task_input", "message"),
    [
        ({}, "`image` is required"),
        ({"image": "busybox:1", "pod": {}}, "unknown input pod"),
        ({"image": "busybox:1", "command": "sh -c x"}, "`command` must be a list of strings"),
        ({"image": "busybox:1", "env": {"1BAD": "x"}}, "env name '1BAD' is not valid"),
        ({"image": "busybox:1", "env": {"HIPHOPS_INPUT": "x"}}, "HIPHOPS_\\* names are reserved"),
        ({"image": "busybox:1", "timeout": 7200}, "between 1s and 3600s"),
        ({"image": "busybox:1", "timeout": "soon"}, "seconds or a duration"),
        ({"image": "busybox:1", "timeout": True}, "seconds or a duration"),
    ],
)
async def test_inputs_are_validated(task_input: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskError, match=message):
        parse_input(task_input, _settings())


async def test_an_empty_allow_list_allows_any_image() -> None:
    spec = parse_input({"image": "docker.io/library/alpine:3"}, _settings(image_allow=()))
    assert spec.image == "docker.io/library/alpine:3"
    assert spec.timeout == 600

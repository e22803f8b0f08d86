"""`k8s.run_job`: run a container as a Kubernetes Job in the sensor's namespace (DESIGN §5).

Input: `image` (required), `command` and `args` (lists of strings), `env` (a map of names to
values), `timeout` (seconds, or a duration like `10m`). Sensor authors never supply pod specs:

* the pod runs as the installation's task service account (`task_service_account`), without
  its token unless `job_automount_token`, under the "restricted" Pod Security Standard
  (runAsNonRoot with a fixed non-root user, no privilege escalation, every capability dropped,
  the RuntimeDefault seccomp profile, a read-only root filesystem with an emptyDir at /tmp);
* the image must match the installation's allow-list (`image_allow`, glob patterns where `**`
  crosses `/`; an empty list allows any image);
* the task input and the event are files, `/hiphops/input.json` and `/hiphops/event.json`, from
  a Secret (an event may hold private data), named by `HIPHOPS_INPUT` and `HIPHOPS_EVENT`;
* `activeDeadlineSeconds` is the timeout, `backoffLimit` 0 (retries are the run's business),
  `ttlSecondsAfterFinished` lets Kubernetes clean up;
* the Job and the Secret are owned by the SensorRun, so deleting the run deletes them.

The container's termination message (`/dev/termination-log`) is the task's result, parsed as
JSON (empty = null). A failed container or a timeout fails the task with the container's reason,
exit code and message. The Job's name is derived from the run and the task, so a task started
again after an operator restart finds its Job and waits for it instead of running it twice.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from hiphops.globs import compile_glob
from hiphops.tasks.registry import TaskCall, TaskError

from .kube import JOBS, PODS, SECRETS, SENSORRUNS, ApiError, Kube, owner_reference
from .settings import Settings, parse_duration

logger = logging.getLogger("hiphops.operator.jobs")

TASK_NAME: Final = "k8s.run_job"
CONTAINER: Final = "task"
MOUNT: Final = "/hiphops"
INPUT_FILE: Final = f"{MOUNT}/input.json"
EVENT_FILE: Final = f"{MOUNT}/event.json"
RUN_LABEL: Final = "hiphops.io/run"
TASK_LABEL: Final = "hiphops.io/task"
# A Secret holds at most 1 MiB; leave room for its metadata.
_MAX_FILES_BYTES: Final = 1_000_000
# How long past its deadline a Job may take to report failure before the task gives up on it.
_GRACE_S: Final = 120.0
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_INPUT_KEYS: Final = ("image", "command", "args", "env", "timeout")
_MESSAGE_LIMIT: Final = 500


@dataclass(frozen=True)
class JobInput:
    """A validated `k8s.run_job` input."""

    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    env: tuple[tuple[str, str], ...]
    timeout: int


def _strings(value: Any, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskError(f"{TASK_NAME}: `{key}` must be a list of strings")
    return tuple(value)


def parse_input(data: Mapping[str, Any], settings: Settings) -> JobInput:
    """Validate a task input against the installation's settings. Raises TaskError."""
    unknown = sorted(set(data) - set(_INPUT_KEYS))
    if unknown:
        raise TaskError(
            f"{TASK_NAME}: unknown input {', '.join(unknown)} (known: {', '.join(_INPUT_KEYS)})"
        )
    image = data.get("image")
    if not isinstance(image, str) or not image.strip():
        raise TaskError(f"{TASK_NAME}: `image` is required: the container image to run")
    if settings.image_allow and not any(compile_glob(p)(image) for p in settings.image_allow):
        raise TaskError(
            f"{TASK_NAME}: image {image!r} is not allowed here "
            f"(allowed: {', '.join(settings.image_allow)})"
        )
    env: list[tuple[str, str]] = []
    raw_env = data.get("env") or {}
    if not isinstance(raw_env, Mapping):
        raise TaskError(f"{TASK_NAME}: `env` must be a map of names to values")
    for name, value in raw_env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise TaskError(f"{TASK_NAME}: env name {name!r} is not valid")
        if name.startswith("HIPHOPS_"):
            raise TaskError(f"{TASK_NAME}: env name {name!r}: HIPHOPS_* names are reserved")
        env.append((name, value if isinstance(value, str) else json.dumps(value)))
    raw_timeout = data.get("timeout", settings.job_default_timeout)
    try:
        if isinstance(raw_timeout, bool):
            raise ValueError("not a number")
        if isinstance(raw_timeout, int | float):
            timeout = float(raw_timeout)
        elif isinstance(raw_timeout, str):
            timeout = parse_duration(raw_timeout)
        else:
            raise ValueError("not a number")
    except ValueError:
        raise TaskError(f"{TASK_NAME}: `timeout` must be seconds or a duration like 10m") from None
    if not 1 <= timeout <= settings.job_max_timeout:
        raise TaskError(
            f"{TASK_NAME}: `timeout` must be between 1s and {settings.job_max_timeout:g}s"
        )
    return JobInput(
        image=image.strip(),
        command=_strings(data.get("command"), "command"),
        args=_strings(data.get("args"), "args"),
        env=tuple(env),
        timeout=int(timeout),
    )


def job_name(run: str, task_id: str) -> str:
    """The Job's (and its Secret's) name: the run's name and a digest of the task id, within
    the 63 characters a label value (job-name) allows."""
    digest = hashlib.sha256(f"{run}\x00{task_id}".encode()).hexdigest()[:10]
    return f"{run[:52].rstrip('-')}-{digest}"


def build_secret(name: str, call: TaskCall, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The Secret holding the input and the event files. Raises TaskError when too large."""
    files = {
        "input.json": json.dumps(dict(call.input), ensure_ascii=False).encode(),
        "event.json": json.dumps(dict(call.event), ensure_ascii=False).encode(),
    }
    size = sum(len(v) for v in files.values())
    if size > _MAX_FILES_BYTES:
        raise TaskError(
            f"{TASK_NAME}: input and event are {size} bytes; a Secret holds at most "
            f"{_MAX_FILES_BYTES}"
        )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": call.project,
            "labels": {RUN_LABEL: call.run, TASK_LABEL: _label(call.task_id)},
            "ownerReferences": [owner_reference(owner)],
        },
        "data": {key: base64.b64encode(value).decode() for key, value in files.items()},
    }


def _label(value: str) -> str:
    # Task ids allow characters a label value does not end with; the digest keeps it unique.
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:52].strip("-_.")
    if clean == value:
        return value
    return f"{clean}-{hashlib.sha256(value.encode()).hexdigest()[:8]}".lstrip("-")


def build_job(
    name: str, call: TaskCall, spec: JobInput, settings: Settings, owner: Mapping[str, Any]
) -> dict[str, Any]:
    """The Job for a task: restricted pod, the task service account, files from the Secret."""
    labels = {RUN_LABEL: call.run, TASK_LABEL: _label(call.task_id)}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "env": [
            {"name": "HIPHOPS_INPUT", "value": INPUT_FILE},
            {"name": "HIPHOPS_EVENT", "value": EVENT_FILE},
            {"name": "HIPHOPS_RUN", "value": call.run},
            {"name": "HIPHOPS_TASK", "value": call.task_id},
            *({"name": k, "value": v} for k, v in spec.env),
        ],
        "volumeMounts": [
            {"name": "hiphops", "mountPath": MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.command is not None:
        container["command"] = list(spec.command)
    if spec.args is not None:
        container["args"] = list(spec.args)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": call.project,
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.timeout,
            "ttlSecondsAfterFinished": int(settings.job_ttl),
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.task_service_account,
                    "automountServiceAccountToken": settings.job_automount_token,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": settings.job_run_as_user,
                        "runAsGroup": settings.job_run_as_user,
                        "fsGroup": settings.job_run_as_user,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "hiphops", "secret": {"secretName": name, "defaultMode": 0o440}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def _condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    conditions: list[Mapping[str, Any]] = (job.get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def _outcome(job: Mapping[str, Any]) -> bool | None:
    """True succeeded, False failed, None still running."""
    status = job.get("status") or {}
    if _condition(job, "Complete") is not None or _condition(job, "SuccessCriteriaMet"):
        return True
    if _condition(job, "Failed") is not None or _condition(job, "FailureTarget"):
        return False
    if int(status.get("succeeded") or 0) >= 1:
        return True
    if int(status.get("failed") or 0) >= 1:
        return False
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == CONTAINER:
            state = container.get("state") or {}
            terminated: Mapping[str, Any] | None = state.get("terminated")
            if terminated is None:
                terminated = (container.get("lastState") or {}).get("terminated")
            return terminated
    return None


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "…"


class JobRunner:
    """The `k8s.run_job` handler, bound to the cluster and the installation's settings."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._kube = kube
        self._settings = settings
        self._sleep = sleep

    async def __call__(self, call: TaskCall) -> Any:
        spec = parse_input(call.input, self._settings)
        name = job_name(call.run, call.task_id)
        run = await self._api(self._kube.get, SENSORRUNS, call.project, call.run)
        if run is None:
            raise TaskError(f"{TASK_NAME}: SensorRun {call.project}/{call.run} not found")
        await self._create(SECRETS, call.project, build_secret(name, call, run))
        created = await self._create(
            JOBS, call.project, build_job(name, call, spec, self._settings, run)
        )
        if not created:
            logger.info(
                "run %s task %s: Job %s already exists; waiting", call.run, call.task_id, name
            )
        # Cancelled while waiting (the operator stops): the Job runs on, and the task started
        # again finds it. Otherwise the Secret goes; the Job stays until its TTL, for its logs.
        job = await self._wait(call.project, name, spec.timeout)
        try:
            return await self._result(call.project, name, job, spec.timeout)
        finally:
            await self._delete_quietly(SECRETS, call.project, name)

    async def _api(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args)
        except ApiError as error:
            raise TaskError(f"{TASK_NAME}: Kubernetes API: {error}") from None

    async def _create(self, resource: Any, namespace: str, body: dict[str, Any]) -> bool:
        """Create the object; False when it already exists (the task was started before)."""
        try:
            await asyncio.to_thread(self._kube.create, resource, namespace, body)
        except ApiError as error:
            if error.status == 409:
                return False
            raise TaskError(
                f"{TASK_NAME}: could not create {resource.kind} {body['metadata']['name']}: {error}"
            ) from None
        return True

    async def _wait(self, namespace: str, name: str, timeout: int) -> dict[str, Any]:
        deadline = time.monotonic() + timeout + _GRACE_S
        while True:
            job = await self._api(self._kube.get, JOBS, namespace, name)
            if job is None:
                raise TaskError(f"{TASK_NAME}: Job {name} was deleted before it finished")
            if _outcome(job) is not None:
                return dict(job)
            if time.monotonic() > deadline:
                await self._delete_quietly(JOBS, namespace, name)
                raise TaskError(
                    f"{TASK_NAME}: Job {name} did not finish within its {timeout}s timeout"
                )
            await self._sleep(self._settings.job_poll_interval)

    async def _result(self, namespace: str, name: str, job: Mapping[str, Any], timeout: int) -> Any:
        pods = await self._api(
            functools.partial(self._kube.list, label_selector=f"job-name={name}"), PODS, namespace
        )
        ours = [
            p
            for p in pods
            if ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == name
            or ((p.get("metadata") or {}).get("labels") or {}).get("batch.kubernetes.io/job-name")
            == name
        ]
        ours.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        terminated = _terminated(ours[-1]) if ours else None
        if _outcome(job):
            message = str((terminated or {}).get("message") or "").strip()
            if not message:
                return None
            try:
                return json.loads(message)
            except ValueError:
                raise TaskError(
                    f"{TASK_NAME}: the container's termination message is not JSON: "
                    f"{_short(message)!r}"
                ) from None
        failed = _condition(job, "Failed") or {}
        if failed.get("reason") == "DeadlineExceeded":
            raise TaskError(
                f"{TASK_NAME}: Job {name} timed out after {timeout}s (DeadlineExceeded)"
            )
        if terminated is not None:
            detail = str(terminated.get("message") or "").strip()
            raise TaskError(
                f"{TASK_NAME}: container {terminated.get('reason') or 'failed'} "
                f"(exit code {terminated.get('exitCode')})"
                + (f": {_short(detail)}" if detail else "")
            )
        reason = failed.get("reason") or "Failed"
        detail = str(failed.get("message") or "").strip()
        raise TaskError(
            f"{TASK_NAME}: Job {name} failed: {reason}" + (f": {_short(detail)}" if detail else "")
        )

    async def _delete_quietly(self, resource: Any, namespace: str, name: str) -> None:
        try:
            await asyncio.to_thread(self._kube.delete, resource, namespace, name)
        except ApiError as error:
            logger.warning("could not delete %s %s/%s: %s", resource.kind, namespace, name, error)

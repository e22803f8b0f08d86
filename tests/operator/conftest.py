"""The operator against a Kubernetes API emulator (kmock) over real HTTP on loopback.

The emulator is kmock's KubernetesEmulator with what TESTING.md lists as missing: every write
stamps `resourceVersion` (monotonic), `uid`, `creationTimestamp`, `metadata.namespace` and
`generation` (bumped when `spec` changes), a create names the object from `generateName` as the
API server does, and creates answer 201. The operator runs as it does
in production (`hiphops_operator.main.run`, kopf cluster-wide) in its own thread and event loop,
while the emulator serves from the test's loop; stopping joins the thread via `asyncio.to_thread`
so that the emulator keeps answering kopf while it shuts down.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import attrs
import kmock
import kopf
import pytest
import pytest_asyncio
from kmock._internal import enums

from hiphops.loader import API_VERSION
from hiphops_operator.kube import Kube, Resource
from hiphops_operator.main import run
from hiphops_operator.runtime import MEMO_RUNTIME, OperatorRuntime
from hiphops_operator.settings import Settings

TOKEN = "intake-token-for-tests"
NAMESPACE = "team-a"
_T = TypeVar("_T")

RESOURCES = {
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", namespaced=True),
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"status"}),
    "batch/v1/jobs": kmock.ResourceInfo(kind="Job", namespaced=True, subresources={"status"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False
    ),
    "hiphops.io/v1alpha1/sensors": kmock.ResourceInfo(
        kind="Sensor", namespaced=True, subresources={"status"}
    ),
    "hiphops.io/v1alpha1/integrations": kmock.ResourceInfo(
        kind="Integration", namespaced=True, subresources={"status"}
    ),
    "hiphops.io/v1alpha1/sensorruns": kmock.ResourceInfo(
        kind="SensorRun", namespaced=True, subresources={"status"}
    ),
}
VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata a real API server keeps (see the module docstring)."""

    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None:
            self._stamp(request)
        response = await super()._handle(request)
        if request.action == enums.action.CREATE and response.status == 200:
            response.set_status(201)
        return response

    def _current(self, request: Any) -> Any:
        try:
            return self.objects[request.resource, request.namespace, request.name]
        except KeyError:
            return None

    def _stamp(self, request: Any) -> None:
        version = str(next(self._versions))
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            if metadata.get("generateName") and not metadata.get("name"):
                metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
            metadata["resourceVersion"] = version
            metadata["uid"] = str(uuid.uuid4())
            metadata["generation"] = 1
            metadata["creationTimestamp"] = now_text()
            if request.namespace and not metadata.get("namespace"):
                metadata["namespace"] = request.namespace
        elif request.action == enums.action.UPDATE and request.name is not None:
            current = self._current(request)
            generation = 1
            if current is not None and not current.deleted:
                generation = int((current.get("metadata") or {}).get("generation") or 1)
            if isinstance(request.data, dict):
                changes_spec = "spec" in request.data and request.subresource is None
                request.data.setdefault("metadata", {})["resourceVersion"] = version
                if changes_spec:
                    request.data["metadata"]["generation"] = generation + 1
            elif isinstance(request.data, list):
                request.data.append(
                    {"op": "replace", "path": "/metadata/resourceVersion", "value": version}
                )


def now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """The Kubernetes API emulator, serving on loopback."""
    async with Emulator() as emulator, kmock.Server(emulator):
        for name, info in RESOURCES.items():
            emulator.resources[name] = info
            emulator.resources[name].verbs = set(VERBS)
        yield emulator


class AsyncApi:
    """The operator's own API client, called off the loop (the emulator serves on the loop)."""

    def __init__(self, url: str) -> None:
        self.kube = Kube(lambda: kopf.ConnectionInfo(server=url))

    async def call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return await asyncio.to_thread(function, *args, **kwargs)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.call(self.kube.get, resource, namespace, name)

    async def list(self, resource: Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        return await self.call(self.kube.list, resource, namespace)

    async def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> Any:
        return await self.call(self.kube.create, resource, namespace, body)

    async def patch(
        self, resource: Resource, namespace: str, name: str, patch: Any, **kw: Any
    ) -> Any:
        return await self.call(self.kube.patch, resource, namespace, name, patch, **kw)

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        return await self.call(self.kube.delete, resource, namespace, name)


@pytest_asyncio.fixture
async def api(emulator: Emulator) -> AsyncIterator[AsyncApi]:
    client = AsyncApi(str(emulator.url))
    yield client
    await asyncio.to_thread(client.kube.close)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "intake-token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def settings(emulator: Emulator, token_file: Path) -> Settings:
    """Settings for an operator against the emulator, with short intervals."""
    return Settings(
        kube_api=str(emulator.url),
        intake_host="127.0.0.1",
        intake_port=free_port(),
        intake_token_file=token_file,
        metrics_port=free_port(),
        job_poll_interval=0.05,
        leadership_interval=0.2,
        secret_refresh_interval=0.3,
        status_flush_interval=0.2,
        identity="test-operator",
    )


class OperatorThread:
    """The operator (`main.run`) in its own thread and event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.memo = kopf.Memo()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._target, name="operator", daemon=True)
        self.error: BaseException | None = None

    def _target(self) -> None:
        try:
            run(self.settings, stop_flag=self._stop, ready_flag=self._ready, memo=self.memo)
        except BaseException as error:  # reported by stop()
            self.error = error

    @property
    def runtime(self) -> OperatorRuntime:
        runtime = self.memo[MEMO_RUNTIME]
        assert isinstance(runtime, OperatorRuntime)
        return runtime

    @property
    def intake_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.intake_port}"

    async def start(self, *, active: bool = True) -> OperatorThread:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait, 30)
        assert self._ready.is_set(), "the operator did not start"
        if active:
            # Ready to take events: active, sensors listed, runs resumed.
            await wait_for(lambda: self.runtime.intake() is not None)
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 60)
        assert not self._thread.is_alive(), "the operator did not stop"
        if self.error is not None:
            raise self.error


@pytest_asyncio.fixture
async def start_operator(
    emulator: Emulator,
) -> AsyncIterator[Callable[..., Awaitable[OperatorThread]]]:
    """Start operators (`await start_operator(settings)`); each is stopped at the end, while
    the emulator still serves."""
    started: list[OperatorThread] = []

    async def start(settings: Settings, *, active: bool = True, **changes: Any) -> OperatorThread:
        operator = OperatorThread(replace(settings, **changes))
        started.append(operator)
        return await operator.start(active=active)

    yield start
    for operator in started:
        if operator._thread.is_alive():
            await operator.stop()


async def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll `condition` (a function or a coroutine function) until it returns something truthy;
    that value. Fails after `timeout` seconds: a bound on waiting, not a timing assertion."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        await asyncio.sleep(interval)


def sensor_manifest(name: str, spec: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Sensor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def condition_of(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for condition in ((body or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def github_event(delivery: str, *, namespace: str = NAMESPACE, **extra: Any) -> dict[str, Any]:
    """A normalized GitHub pull_request event, as the gateway hands it over."""
    return {
        "project_id": namespace,
        "hiphops": {
            "source": "github",
            "event": "pull_request",
            "action": "opened",
            "delivery": delivery,
            "integration": "github",
        },
        "action": "opened",
        "pull_request": {"number": 7, "title": "Bump deps", "labels": [{"name": "deps"}]},
        "repository": {"name": "app", "full_name": "acme/app"},
        **extra,
    }

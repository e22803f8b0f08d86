"""End to end on a real cluster: kind, the CRDs, the operator, a Sensor, a signed webhook.

It creates a throwaway kind cluster, applies `crds/`, runs the operator (this process, against the
cluster through the kind kubeconfig, with the webhook gateway served in-process), applies an
Integration, its Secret and two Sensors, sends a signed GitHub webhook, and waits for the
SensorRuns: one completes with the `log.message` result, the other runs a real Job
(`k8s.run_job` with busybox writing its termination message) and completes with its result.

Skipped, with the reason, where `kind`, `kubectl` or a Docker daemon is missing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hiphops.runs import run_name
from hiphops_operator.main import run
from hiphops_operator.settings import Settings

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "hiphops-e2e"
WEBHOOK_SECRET = "e2e-webhook-secret"


def _missing() -> str | None:
    for tool in ("kind", "kubectl", "docker"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    try:
        subprocess.run(["docker", "info"], capture_output=True, check=True, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "no Docker daemon is reachable (`docker info` failed)"
    return None


_MISSING = _missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"kind e2e: {_MISSING}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


def _apply(kubeconfig: Path, manifest: dict[str, Any]) -> None:
    _kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps(manifest))


def _get(kubeconfig: Path, kind: str, name: str) -> dict[str, Any] | None:
    try:
        out = _kubectl(kubeconfig, "get", kind, name, "-n", NAMESPACE, "-o", "json")
    except subprocess.CalledProcessError:
        return None
    found: dict[str, Any] = json.loads(out)
    return found


def _wait(what: str, check: Any, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    name = f"hiphops-e2e-{uuid.uuid4().hex[:6]}"
    subprocess.run(
        ["kind", "create", "cluster", "--name", name, "--wait", "180s"], check=True, timeout=600
    )
    try:
        path = tmp_path_factory.mktemp("kind") / "kubeconfig"
        config = subprocess.run(
            ["kind", "get", "kubeconfig", "--name", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        path.write_text(config)
        _kubectl(path, "apply", "-f", str(REPO / "crds"))
        for crd in ("sensors", "integrations", "sensorruns"):
            _kubectl(path, "wait", "--for=condition=Established", f"crd/{crd}.hiphops.io")
        _kubectl(path, "create", "namespace", NAMESPACE)
        _kubectl(path, "create", "serviceaccount", "hiphops-task", "-n", NAMESPACE)
        yield path
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", name], check=False, timeout=300)


def test_a_signed_webhook_runs_sensors_on_a_kind_cluster(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    token = tmp_path / "intake-token"
    token.write_text(uuid.uuid4().hex)
    gateway_port = _free_port()
    settings = Settings(
        namespaces=(NAMESPACE,),
        intake_host="127.0.0.1",
        intake_port=_free_port(),
        intake_token_file=token,
        metrics_port=0,
        gateway_port=gateway_port,
        image_allow=("busybox:*",),
        job_poll_interval=1.0,
        identity="e2e",
    )
    _apply(
        kubeconfig,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "github", "namespace": NAMESPACE},
            "stringData": {"webhook": WEBHOOK_SECRET},
        },
    )
    _apply(
        kubeconfig,
        {
            "apiVersion": "hiphops.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": "github", "namespace": NAMESPACE},
            "spec": {
                "type": "github",
                "github": {"webhookSecretRefs": [{"name": "github", "key": "webhook"}]},
            },
        },
    )
    when = {"event.hiphops.event": "pull_request", "event.hiphops.action": "opened"}
    sensors = {
        "log-pr": [{"name": "log.message", "input": {"(path)pr": "event.pull_request.number"}}],
        "job-pr": [
            {
                "name": "k8s.run_job",
                "input": {
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", "echo '{\"ok\": true}' > /dev/termination-log"],
                    "timeout": 300,
                },
            }
        ],
    }
    for name, tasks in sensors.items():
        _apply(
            kubeconfig,
            {
                "apiVersion": "hiphops.io/v1alpha1",
                "kind": "Sensor",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"when": when, "tasks": tasks},
            },
        )

    stop = threading.Event()
    operator = threading.Thread(target=run, args=(settings,), kwargs={"stop_flag": stop})
    operator.start()
    try:
        for name in sensors:
            _wait(f"sensor {name} Ready", lambda n=name: _ready(_get(kubeconfig, "sensor", n)))
        _wait("integration Ready", lambda: _ready(_get(kubeconfig, "integration", "github")))

        fixtures = REPO / "tests" / "fixtures" / "github" / "pull_request.payloads.json"
        payload = next(p for p in json.loads(fixtures.read_text()) if p["action"] == "opened")
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"http://127.0.0.1:{gateway_port}/hooks/github/{NAMESPACE}/github",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "pull_request",
                "X-GitHub-Delivery": "e2e-delivery-1",
                "X-Hub-Signature-256": signature,
            },
        )
        response = _wait("the gateway to accept", lambda: _send(request))
        assert response["delivery"] == "e2e-delivery-1"

        for name in sensors:
            run_object = run_name("e2e-delivery-1", NAMESPACE, name)
            assert run_object in response["runs"]
            status = _wait(
                f"SensorRun of {name}",
                lambda r=run_object: _finished(_get(kubeconfig, "sensorrun", r)),
            )
            assert status["state"] == "COMPLETE", status
        job_run = _get(kubeconfig, "sensorrun", run_name("e2e-delivery-1", NAMESPACE, "job-pr"))
        assert job_run is not None and job_run["status"]["tasks"][0]["result"] == {"ok": True}
    finally:
        stop.set()
        operator.join(timeout=120)


def _ready(body: dict[str, Any] | None) -> bool:
    for condition in ((body or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _finished(body: dict[str, Any] | None) -> dict[str, Any] | None:
    status = (body or {}).get("status") or {}
    return status if status.get("state") in ("COMPLETE", "FAILURE") else None


def _send(request: urllib.request.Request) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            if answer.status == 202:
                accepted: dict[str, Any] = json.loads(answer.read())
                return accepted
    except OSError:
        return None  # not serving yet, or 503 until the operator is active
    return None

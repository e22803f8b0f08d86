"""The intake token stays the same across upgrades: the chart reads the existing Secret back with
`lookup`. `helm template --dry-run=server` renders with lookups against a Kubernetes API; here
that API is a small stand-in on loopback serving discovery and the one Secret, so the real Helm
engine runs the chart's `lookup` for real.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests.chart.conftest import CHART, NAMESPACE, RELEASE, Helm, one

SECRET = "hiphops-intake-token"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering", "Namespace"}


def plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    if lower.endswith("s"):
        return lower + "es"
    return lower + "s"


@dataclass
class FakeAPI:
    """Discovery for the kinds the chart renders, and Secrets from `secrets`; 404 for the rest."""

    kinds: set[tuple[str, str]]  # (apiVersion, kind)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def _resources(self, group_version: str) -> dict[str, Any]:
        resources = [
            {
                "name": plural(kind),
                "singularName": kind.lower(),
                "namespaced": kind not in CLUSTER_SCOPED,
                "kind": kind,
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
            for api_version, kind in sorted(self.kinds)
            if api_version == group_version
        ]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.requests.append(f"{request.method} {path}")
        groups = sorted({v for v, _ in self.kinds if "/" in v})
        if path == "/version":
            return web.json_response({"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if path == "/api/v1":
            return web.json_response(self._resources("v1"))
        if path == "/apis":
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": gv.split("/")[0],
                            "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                            "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
                        }
                        for gv in groups
                    ],
                }
            )
        if path.startswith("/apis/") and path.count("/") == 3:
            return web.json_response(self._resources(path.removeprefix("/apis/")))
        prefix = f"/api/v1/namespaces/{NAMESPACE}/secrets/"
        if request.method == "GET" and path.startswith(prefix):
            secret = self.secrets.get(path.removeprefix(prefix))
            if secret is not None:
                return web.json_response(secret)
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404},
            status=404,
        )


@pytest.fixture
def api(helm: Helm) -> Iterator[FakeAPI]:
    rendered = helm.template()
    fake = FakeAPI({(o["apiVersion"], o["kind"]) for o in rendered})
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def render_against(helm: Helm, api: FakeAPI, tmp_path: Path) -> list[dict[str, Any]]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    output = helm.run(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=server",
        "--disable-openapi-validation",
        "--kubeconfig",
        str(kubeconfig),
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def helm_owned_secret(data: dict[str, str]) -> dict[str, Any]:
    """The Secret as a previous release of the chart left it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": RELEASE,
                "meta.helm.sh/release-namespace": NAMESPACE,
            },
        },
        "type": "Opaque",
        "data": data,
    }


def test_an_upgrade_keeps_the_existing_token(helm: Helm, api: FakeAPI, tmp_path: Path) -> None:
    existing = base64.b64encode(b"the-token-of-the-first-install").decode()
    api.secrets[SECRET] = helm_owned_secret({"token": existing})
    objects = render_against(helm, api, tmp_path)
    assert one(objects, "Secret", SECRET)["data"]["token"] == existing
    assert f"GET /api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}" in api.requests


def test_a_first_install_generates_a_token(helm: Helm, api: FakeAPI, tmp_path: Path) -> None:
    objects = render_against(helm, api, tmp_path)
    token = base64.b64decode(one(objects, "Secret", SECRET)["data"]["token"])
    assert len(token) == 48 and token.isalnum()
    assert f"GET /api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}" in api.requests


def test_a_secret_without_a_token_gets_one(helm: Helm, api: FakeAPI, tmp_path: Path) -> None:
    api.secrets[SECRET] = helm_owned_secret({})
    objects = render_against(helm, api, tmp_path)
    assert len(base64.b64decode(one(objects, "Secret", SECRET)["data"]["token"])) == 48

"""Fixtures of the chart tests: a Helm binary (tests/chart/helm.py) and rendering helpers.

The documented install modes are rendered here once per session; tests look at the objects.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import HelmUnavailable, find_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hiphops"
RELEASE = "hiphops"
NAMESPACE = "hiphops-system"

#: The modes README.md documents, as values files' contents.
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "ha": {
        "operator": {"replicas": 3, "podDisruptionBudget": {"enabled": True}},
        "gateway": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}},
    },
    "namespaced": {
        "watchNamespaces": ["team-a", "team-b"],
        "tasks": {"imageAllow": ["ghcr.io/acme/**", "alpine:3.*"]},
    },
    "ingress": {
        "gateway": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": ["hooks.example.com"],
                "tls": [{"secretName": "hooks-tls", "hosts": ["hooks.example.com"]}],
            }
        }
    },
    "metrics": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "mon"}}}]},
    },
}


class HelmError(AssertionError):
    """helm exited non-zero; the message holds its stderr."""


@dataclass
class Helm:
    """Runs the Helm binary against the chart."""

    binary: Path
    workdir: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm ARGS`; raises HelmError on failure when `check`."""
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise HelmError(result.stderr.strip() or result.stdout.strip())
        return result

    def values_file(self, values: Mapping[str, Any]) -> Path:
        """A values file holding `values` (JSON is YAML)."""
        path = self.workdir / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        path.write_text(json.dumps(values), encoding="utf-8")
        return path

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        sets: Sequence[str] = (),
        release: str = RELEASE,
        include_crds: bool = False,
    ) -> list[dict[str, Any]]:
        """The objects `helm template` renders."""
        args = ["template", release, str(CHART), "--namespace", NAMESPACE]
        if values:
            args += ["--values", str(self.values_file(values))]
        for item in sets:
            args += ["--set", item]
        if include_crds:
            args.append("--include-crds")
        output = self.run(*args).stdout
        return [doc for doc in yaml.safe_load_all(output) if doc]

    def notes(self, values: Mapping[str, Any] | None = None) -> str:
        """NOTES.txt as `helm install --dry-run=client` prints it (no cluster needed)."""
        args = ["install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
        if values:
            args += ["--values", str(self.values_file(values))]
        output = self.run(*args).stdout
        return output.split("NOTES:", 1)[1] if "NOTES:" in output else ""


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """A Helm binary, or the chart tests are skipped with the reason."""
    try:
        binary = find_helm()
    except HelmUnavailable as error:
        pytest.skip(f"chart tests need helm: {error}")
    return Helm(binary, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, list[dict[str, Any]]]:
    """Every documented mode, rendered."""
    return {mode: helm.template(values) for mode, values in MODES.items()}


def find(
    objects: Sequence[Mapping[str, Any]], kind: str, name: str | None = None
) -> list[dict[str, Any]]:
    """The objects of that kind (and name)."""
    return [
        dict(o)
        for o in objects
        if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: Sequence[Mapping[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The single object of that kind and name."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def pod_specs(objects: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload that runs pods."""
    for item in objects:
        spec = item.get("spec") or {}
        if item.get("kind") == "Pod":
            yield item["metadata"]["name"], spec
        elif "template" in spec and "spec" in spec["template"]:
            yield item["metadata"]["name"], spec["template"]["spec"]
        elif item.get("kind") == "CronJob":
            yield item["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]


def container(objects: Sequence[Mapping[str, Any]], deployment: str) -> dict[str, Any]:
    """The single container of a Deployment."""
    spec = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


def env_of(item: Mapping[str, Any]) -> dict[str, str]:
    """A container's plain `value` environment variables."""
    return {e["name"]: e["value"] for e in item.get("env") or () if "value" in e}

"""values.schema.json: wrong values fail at `helm install`/`template`, documented ones pass."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.conftest import CHART, MODES, Helm, HelmError

SCHEMA = json.loads((CHART / "values.schema.json").read_text())

#: (values, a fragment of Helm's complaint).
BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"operator": {"replicas": "two"}}, "/operator/replicas"),
    ({"operator": {"replicas": 0}}, "/operator/replicas"),
    ({"operator": {"replicaz": 2}}, "replicaz"),
    ({"gateway": {"port": 70000}}, "/gateway/port"),
    ({"operator": {"intakePort": "8081"}}, "/operator/intakePort"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"tasks": {"imageAllow": ["ghcr.io/a/*,alpine"]}}, "/tasks/imageAllow/0"),
    ({"tasks": {"defaultTimeout": "ten minutes"}}, "/tasks/defaultTimeout"),
    ({"tasks": {"serviceAccount": {"name": ""}}}, "/tasks/serviceAccount/name"),
    ({"operator": {"settings": {"runRetention": "1 week"}}}, "/operator/settings/runRetention"),
    ({"operator": {"settings": {"concurrency": 0}}}, "/operator/settings/concurrency"),
    ({"operator": {"settings": {"batchSize": 10}}}, "batchSize"),
    ({"gateway": {"service": {"type": "ExternalName"}}}, "/gateway/service/type"),
    ({"gateway": {"publicURL": "hooks.example.com"}}, "/gateway/publicURL"),
    ({"gateway": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}}, "targetCPU"),
    ({"securityContext": {"runAsUser": -1}}, "/securityContext/runAsUser"),
    ({"securityContext": {"privileged": True}}, "privileged"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ({"gateway": {"podDisruptionBudget": {"maxUnavailable": "half"}}}, "maxUnavailable"),
]


@pytest.mark.parametrize(("values", "complaint"), BAD_VALUES, ids=[c for _, c in BAD_VALUES])
def test_helm_rejects_wrong_values(helm: Helm, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(HelmError) as raised:
        helm.template(values)
    message = str(raised.value)
    assert "schema" in message
    assert complaint in message


def test_set_on_the_command_line_is_checked_too(helm: Helm) -> None:
    with pytest.raises(HelmError, match="/operator/replicas"):
        helm.template(sets=["operator.replicas=two"])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_documented_modes_satisfy_the_schema(mode: str) -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(merge(defaults, MODES[mode]), SCHEMA)


def test_good_values_of_every_kind_are_accepted(helm: Helm) -> None:
    objects = helm.template(
        {
            "operator": {"settings": {"runRetention": "36h", "statusFlushInterval": 10}},
            "gateway": {"podDisruptionBudget": {"maxUnavailable": "50%"}},
            "tasks": {"defaultTimeout": 300, "imageAllow": ["registry.example/**"]},
            "securityContext": {"runAsUser": None},
            "image": {"digest": "sha256:" + "0" * 64},
        }
    )
    assert objects


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged

"""The chart renders valid Kubernetes objects in every documented mode, and they fit together:
the operator's environment is a valid operator Settings, the gateway reaches the intake Service,
the intake Service reaches only operator pods, the NetworkPolicy lets only the gateway in, every
pod runs restricted.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import sys
import tarfile
import tomllib
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    MODES,
    NAMESPACE,
    ROOT,
    Helm,
    container,
    env_of,
    find,
    one,
    pod_specs,
)

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema shipped.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
#: Kinds kubernetes-validate has no schema for, checked below against their own definitions.
CUSTOM_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}
TOKEN_FILE = "/var/run/hiphops/intake/token"


def load_settings_module() -> ModuleType:
    """operator/settings.py, loaded from its file (the import name depends on packaging)."""
    spec = importlib.util.spec_from_file_location(
        "chart_test_operator_settings", ROOT / "operator" / "settings.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


SETTINGS = load_settings_module()


def operator_settings(objects: list[dict[str, Any]]) -> Any:
    """The operator Settings the rendered Deployment's environment gives."""
    env = env_of(container(objects, "hiphops-operator"))
    return SETTINGS.Settings.from_env({k: v for k, v in env.items() if k.startswith("HIPHOPS_")})


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment", deployment)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


# --- lint and validity -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_helm_lint_is_clean(helm: Helm, mode: str) -> None:
    args = ["lint", str(CHART), "--strict", "--namespace", NAMESPACE]
    if MODES[mode]:
        args += ["--values", str(helm.values_file(MODES[mode]))]
    result = helm.run(*args)
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_rendered_object_is_valid_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], mode: str, version: str
) -> None:
    objects = rendered[mode]
    assert objects
    for item in objects:
        if item["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(item, version, strict=True)


def test_chart_crds_are_valid_kubernetes(helm: Helm) -> None:
    crds = [o for o in helm.template(include_crds=True) if o["kind"] == "CustomResourceDefinition"]
    names = {c["metadata"]["name"] for c in crds}
    assert names == {
        "sensors.hiphops.io",
        "integrations.hiphops.io",
        "sensorruns.hiphops.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for crd in crds:
        kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)


def test_peering_objects_match_the_chart_peering_crds(
    helm: Helm, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    crds = {
        c["spec"]["names"]["kind"]: c
        for c in helm.template(include_crds=True)
        if c["kind"] == "CustomResourceDefinition"
    }
    for mode, kind, namespaced in (
        ("default", "ClusterKopfPeering", False),
        ("namespaced", "KopfPeering", True),
    ):
        peerings = find(rendered[mode], kind)
        assert peerings, mode
        crd = crds[kind]
        assert crd["spec"]["scope"] == ("Namespaced" if namespaced else "Cluster")
        for peering in peerings:
            group, version = peering["apiVersion"].split("/")
            assert group == crd["spec"]["group"]
            assert version in [v["name"] for v in crd["spec"]["versions"] if v["served"]]
            assert ("namespace" in peering["metadata"]) == namespaced


def test_service_monitors_point_at_metrics_services(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["metrics"]
    monitors = find(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"hiphops-operator", "hiphops-gateway"}
    services = find(objects, "Service")
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        selected = [
            s
            for s in services
            if labels_match(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports
            assert endpoint["path"] == "/metrics"
    # Standby operator replicas are not Ready; their metrics are scraped all the same.
    assert one(objects, "Service", "hiphops-operator-metrics")["spec"]["publishNotReadyAddresses"]


def test_no_service_monitor_unless_asked(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for mode in ("default", "ha", "namespaced", "ingress"):
        assert not find(rendered[mode], "ServiceMonitor")


def test_names_fit_kubernetes_limits_with_a_long_release_name(helm: Helm) -> None:
    objects = helm.template(release="a-very-long-release-name-for-a-platform-team-install")
    for item in objects:
        name = item["metadata"]["name"]
        assert len(name) <= 63, name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name


def test_app_version_is_the_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


def test_image_defaults_to_app_version_and_digest_wins(helm: Helm) -> None:
    default = container(helm.template(), "hiphops-operator")["image"]
    assert default == "hiphops/hiphops-k8s:0.1.0"
    digest = "sha256:" + "a" * 64
    pinned = helm.template({"image": {"repository": "registry.example/hiphops", "digest": digest}})
    for name in ("hiphops-operator", "hiphops-gateway"):
        assert container(pinned, name)["image"] == f"registry.example/hiphops@{digest}"


# --- restricted pods -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_pod_is_restricted_with_resources_and_probes(
    rendered: dict[str, list[dict[str, Any]]], mode: str
) -> None:
    pods = list(pod_specs(rendered[mode]))
    assert {name for name, _ in pods} == {"hiphops-operator", "hiphops-gateway"}
    for name, spec in pods:
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod_security.get("runAsUser", 1) != 0, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        volumes = {v["name"]: v for v in spec["volumes"]}
        for item in spec["containers"] + spec.get("initContainers", []):
            security = item["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert security.get("privileged", False) is False, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(item["resources"][kind]), (name, kind)
            assert item["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            # Every operator replica is Ready; the gateway's readiness is its directory.
            ready = "/healthz" if name == "hiphops-operator" else "/readyz"
            assert item["readinessProbe"]["httpGet"]["path"] == ready, name
            ports = {p["name"] for p in item["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                assert item[probe]["httpGet"]["port"] in ports, (name, probe)
            # The root filesystem is read-only: /tmp is an emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in item["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_security_ids_can_be_left_to_the_platform(helm: Helm) -> None:
    objects = helm.template(
        {"securityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}
    )
    for _, spec in pod_specs(objects):
        assert "runAsUser" not in spec["securityContext"]
        assert spec["securityContext"]["runAsNonRoot"] is True


# --- operator settings ---------------------------------------------------------------------------


def test_default_operator_environment_is_valid_settings(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["default"]
    settings = operator_settings(objects)
    operator = container(objects, "hiphops-operator")
    assert operator["args"] == ["operator"]
    assert settings.clusterwide
    assert str(settings.intake_token_file) == TOKEN_FILE
    assert settings.task_service_account == "hiphops-task"
    assert settings.image_allow == ()
    assert settings.job_automount_token is False
    assert (
        settings.peering_name == one(objects, "ClusterKopfPeering", "hiphops")["metadata"]["name"]
    )
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"intake": settings.intake_port, "metrics": settings.metrics_port}
    assert settings.gateway_port == 0  # the gateway is its own Deployment
    # The pod name is the operator's identity for kopf peering and Events.
    pod_id = next(e for e in operator["env"] if e["name"] == "POD_ID")
    assert pod_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_namespaced_operator_settings(rendered: dict[str, list[dict[str, Any]]]) -> None:
    settings = operator_settings(rendered["namespaced"])
    assert settings.namespaces == ("team-a", "team-b")
    assert not settings.clusterwide
    assert settings.image_allow == ("ghcr.io/acme/**", "alpine:3.*")


def test_operator_settings_values_reach_the_operator(helm: Helm) -> None:
    objects = helm.template(
        {
            "operator": {
                "settings": {
                    "concurrency": 32,
                    "maxRunBytes": 2000000,
                    "runRetention": "3d",
                    "credentialCheckInterval": "15m",
                    "jobPollInterval": 5,
                }
            },
            "tasks": {"defaultTimeout": "5m", "maxTimeout": "2h", "ttl": "30m", "runAsUser": 1001},
            "metrics": {"enabled": False},
        }
    )
    settings = operator_settings(objects)
    assert settings.concurrency == 32
    assert settings.max_run_bytes == 2_000_000
    assert settings.run_retention == timedelta(days=3)
    assert settings.credential_check_interval == 900
    assert settings.job_poll_interval == 5
    assert (settings.job_default_timeout, settings.job_max_timeout) == (300, 7200)
    assert (settings.job_ttl, settings.job_run_as_user) == (1800, 1001)
    assert settings.metrics_port == 0
    assert not find(objects, "Service", "hiphops-operator-metrics")


def test_every_settings_value_names_an_operator_setting() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    fields = {f.name for f in SETTINGS.fields(SETTINGS.Settings)}
    for key in values["operator"]["settings"]:
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        assert snake in fields, f"operator.settings.{key} is not an operator setting"


def test_more_replicas_need_peering(helm: Helm) -> None:
    with pytest.raises(AssertionError, match=r"needs operator\.peering\.enabled"):
        helm.template({"operator": {"replicas": 2, "peering": {"enabled": False}}})
    standalone = helm.template({"operator": {"peering": {"enabled": False}}})
    assert operator_settings(standalone).standalone
    assert not find(standalone, "ClusterKopfPeering")


def test_ha_mode(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["ha"]
    operator = one(objects, "Deployment", "hiphops-operator")
    assert operator["spec"]["replicas"] == 3
    # Peering replicas roll one at a time; the intake Service is headless (the gateway finds
    # the active replica among its addresses).
    assert operator["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    intake = one(objects, "Service", "hiphops-intake")
    assert intake["spec"]["clusterIP"] == "None"
    assert find(objects, "ClusterKopfPeering")
    budget = one(objects, "PodDisruptionBudget", "hiphops-operator")
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    gateway = one(objects, "Deployment", "hiphops-gateway")
    assert "replicas" not in gateway["spec"]  # the HorizontalPodAutoscaler owns it
    hpa = one(objects, "HorizontalPodAutoscaler", "hiphops-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "hiphops-gateway"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)


def test_operator_budget_is_off_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not find(rendered["default"], "PodDisruptionBudget", "hiphops-operator")
    gateway_budget = one(rendered["default"], "PodDisruptionBudget", "hiphops-gateway")
    assert labels_match(
        gateway_budget["spec"]["selector"]["matchLabels"],
        pod_labels(rendered["default"], "hiphops-gateway"),
    )


# --- gateway, intake, network policy -------------------------------------------------------------


def gateway_args(objects: list[dict[str, Any]]) -> dict[str, str]:
    args = container(objects, "hiphops-gateway")["args"]
    assert args[0] == "gateway"
    return dict(zip(args[1::2], args[2::2], strict=True))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_gateway_reaches_the_intake_service_of_operator_pods(
    rendered: dict[str, list[dict[str, Any]]], mode: str
) -> None:
    objects = rendered[mode]
    args = gateway_args(objects)
    match = re.fullmatch(
        r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)/intake", args["--intake-url"]
    )
    assert match, args["--intake-url"]
    service = one(objects, "Service", match.group(1))
    assert match.group(2) == NAMESPACE
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == int(match.group(3))]
    selector = service["spec"]["selector"]
    assert labels_match(selector, pod_labels(objects, "hiphops-operator"))
    assert not labels_match(selector, pod_labels(objects, "hiphops-gateway"))
    operator = container(objects, "hiphops-operator")
    assert port["targetPort"] in {p["name"] for p in operator["ports"]}
    # Both ends read the same token, from the same Secret.
    assert (
        args["--intake-token-file"]
        == TOKEN_FILE
        == str(operator_settings(objects).intake_token_file)
    )
    secrets = set()
    for name in ("hiphops-operator", "hiphops-gateway"):
        spec = one(objects, "Deployment", name)["spec"]["template"]["spec"]
        secrets |= {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == {"hiphops-intake-token"}
    gateway_container = container(objects, "hiphops-gateway")
    assert args["--port"] == str(gateway_container["ports"][0]["containerPort"])


def test_gateway_has_no_kubernetes_api_access(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for mode, objects in rendered.items():
        spec = one(objects, "Deployment", "hiphops-gateway")["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, mode
        account = one(objects, "ServiceAccount", spec["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False
        for binding in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding"):
            assert all(s["name"] != spec["serviceAccountName"] for s in binding["subjects"])


def test_intake_token_is_generated_unless_an_existing_secret_is_named(helm: Helm) -> None:
    generated = helm.template()
    token = base64.b64decode(one(generated, "Secret", "hiphops-intake-token")["data"]["token"])
    assert len(token) == 48 and token.isalnum()
    # A second rendering without a cluster to look it up in draws a new one.
    again = helm.template()
    assert one(again, "Secret", "hiphops-intake-token")["data"]["token"] != base64.b64encode(token)
    existing = helm.template({"intake": {"existingSecret": "my-intake"}})
    assert not find(existing, "Secret")
    for name in ("hiphops-operator", "hiphops-gateway"):
        spec = one(existing, "Deployment", name)["spec"]["template"]["spec"]
        assert [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v] == [
            "my-intake"
        ]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_only_gateway_pods_reach_the_intake_port(
    rendered: dict[str, list[dict[str, Any]]], mode: str
) -> None:
    objects = rendered[mode]
    (policy,) = find(objects, "NetworkPolicy")
    operator_labels = pod_labels(objects, "hiphops-operator")
    gateway_labels = pod_labels(objects, "hiphops-gateway")
    assert labels_match(policy["spec"]["podSelector"]["matchLabels"], operator_labels)
    assert not labels_match(policy["spec"]["podSelector"]["matchLabels"], gateway_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    intake_rules = [
        rule
        for rule in policy["spec"]["ingress"]
        if any(p["port"] == "intake" for p in rule.get("ports") or [])
    ]
    assert len(intake_rules) == 1
    (peer,) = intake_rules[0]["from"]
    assert set(peer) == {"podSelector"}  # same namespace, by pod labels only
    assert peer["podSelector"]["matchLabels"] == {
        k: v for k, v in gateway_labels.items() if k.startswith("app.kubernetes.io/")
    }
    other_rules = [r for r in policy["spec"]["ingress"] if r not in intake_rules]
    for rule in other_rules:
        assert [p["port"] for p in rule["ports"]] == ["metrics"]
    if mode == "metrics":
        assert other_rules[0]["from"] == MODES["metrics"]["networkPolicy"]["metricsFrom"]


def test_ingress_exposes_only_the_webhook_paths(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["ingress"]
    ingress = one(objects, "Ingress", "hiphops-gateway")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/hooks", "Prefix")
    backend = path["backend"]["service"]
    service = one(objects, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert labels_match(service["spec"]["selector"], pod_labels(objects, "hiphops-gateway"))
    for mode in ("default", "ha", "namespaced", "metrics"):
        assert not find(rendered[mode], "Ingress")


def test_ingress_without_hosts_fails(helm: Helm) -> None:
    with pytest.raises(AssertionError, match=r"needs gateway\.ingress\.hosts"):
        helm.template({"gateway": {"ingress": {"enabled": True}}})


def test_gateway_can_be_disabled(helm: Helm) -> None:
    objects = helm.template({"gateway": {"enabled": False}})
    assert [d["metadata"]["name"] for d in find(objects, "Deployment")] == ["hiphops-operator"]
    assert not find(objects, "Ingress") and not find(objects, "PodDisruptionBudget")


# --- task service account ------------------------------------------------------------------------


def test_task_service_account_in_every_watched_namespace(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["namespaced"]
    accounts = [
        a for a in find(objects, "ServiceAccount") if a["metadata"]["name"] == "hiphops-task"
    ]
    assert sorted(a["metadata"]["namespace"] for a in accounts) == ["team-a", "team-b"]
    for account in accounts:
        assert account["automountServiceAccountToken"] is False
    for binding in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding"):
        assert all(s["name"] != "hiphops-task" for s in binding["subjects"])


def test_task_service_account_namespaces_of_a_cluster_wide_install(helm: Helm) -> None:
    assert not find(helm.template(), "ServiceAccount", "hiphops-task")
    objects = helm.template({"tasks": {"serviceAccount": {"namespaces": ["ci", "deploys"]}}})
    accounts = find(objects, "ServiceAccount", "hiphops-task")
    assert sorted(a["metadata"]["namespace"] for a in accounts) == ["ci", "deploys"]
    renamed = helm.template({"tasks": {"serviceAccount": {"name": "runner", "namespaces": ["ci"]}}})
    assert find(renamed, "ServiceAccount", "runner")
    assert operator_settings(renamed).task_service_account == "runner"


# --- NOTES ---------------------------------------------------------------------------------------


def test_notes_print_the_webhook_url_to_configure(helm: Helm) -> None:
    notes = helm.notes(MODES["ingress"])
    assert "https://hooks.example.com/hooks/<type>/<namespace>/<name>" in notes
    assert "https://hooks.example.com/hooks/github/demo/github" in notes
    public = helm.notes({"gateway": {"publicURL": "https://hiphops.example.org/"}})
    assert "https://hiphops.example.org/hooks/<type>/<namespace>/<name>" in public


def test_notes_without_a_public_address_say_how_to_reach_the_gateway(helm: Helm) -> None:
    notes = helm.notes()
    assert "/hooks/<type>/<namespace>/<name>" in notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/hiphops-gateway" in notes
    # A cluster-wide install created no task service account: the notes say so.
    assert "hiphops-task" in notes


#: Values the README documents as a whole rather than key by key.
WHOLE = {"operator.settings", "operator.resources", "gateway.resources"}


def test_values_file_documents_every_key() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(prefix: str, node: Any) -> list[str]:
        if not isinstance(node, dict) or not node:
            return [prefix]
        found = []
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if path in WHOLE or key in ("livenessProbe", "readinessProbe"):
                found.append(path)
            else:
                found += keys(path, value)
        return found

    missing = [k for k in keys("", values) if f"`{k}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_readme_lists_the_modes_the_tests_render() -> None:
    readme = (CHART / "README.md").read_text()
    for mode in MODES:
        assert f"`{mode}`" in readme, mode


def test_chart_files_are_what_the_package_ships(helm: Helm, tmp_path: Path) -> None:
    helm.run("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("hiphops-*.tgz")
    with tarfile.open(package) as archive:
        names = {Path(n).relative_to("hiphops").as_posix() for n in archive.getnames()}
    assert "sync_crds.py" not in names
    assert {"values.schema.json", "README.md", "templates/NOTES.txt"} <= names
    assert {f"crds/{p.name}" for p in (CHART / "crds").glob("*.yaml")} <= names


def test_a_single_standalone_operator_is_replaced_not_rolled(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    # Two standalone operators at once would both execute runs.
    operator = one(rendered["default"], "Deployment", "hiphops-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}

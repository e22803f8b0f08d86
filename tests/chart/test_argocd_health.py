"""The Argo CD health checks (gitops/argocd/health/hiphops.io/<Kind>/health.lua) give the health
their health_test.yaml tables say, run in Lua 5.1 (what Argo CD's gopher-lua speaks) through
lupa, with only the libraries Argo CD opens. docs/gitops.md carries the same scripts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import ROOT

lua51 = pytest.importorskip("lupa.lua51", reason="the Argo CD health tests need lupa (PyPI)")

HEALTH = ROOT / "gitops" / "argocd" / "health" / "hiphops.io"
KINDS = ("Sensor", "Integration", "SensorRun")
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def to_lua(runtime: Any, value: Any) -> Any:
    """A JSON-like value as Argo CD hands it to Lua: objects and arrays become tables (arrays
    1-based), numbers become Lua numbers."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run the kind's health.lua on obj; its `hs` table as a dict."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    sandbox = runtime.eval(
        "function(obj) local env = {obj = obj, ipairs = ipairs, pairs = pairs, type = type,"
        " tostring = tostring, tonumber = tonumber, next = next, string = string,"
        " table = table, math = math} return env end"
    )
    env = sandbox(to_lua(runtime, obj))
    chunk = runtime.execute(
        "return function(source, env) local f = assert(loadstring(source)) setfenv(f, env)"
        " return f() end"
    )
    result = chunk((HEALTH / kind / "health.lua").read_text(), env)
    return {key: result[key] for key in ("status", "message") if result[key] is not None}


def cases() -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for kind in KINDS:
        table = yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())
        for test in table["tests"]:
            found.append((kind, test["inputPath"], test["healthStatus"]))
    return found


@pytest.mark.parametrize(
    ("kind", "input_path", "expected"), cases(), ids=[f"{k}-{Path(p).stem}" for k, p, _ in cases()]
)
def test_health_table(kind: str, input_path: str, expected: dict[str, str]) -> None:
    obj = yaml.safe_load((HEALTH / kind / input_path).read_text())
    assert obj["kind"] == kind
    assert health(kind, obj) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_status_a_script_returns_is_an_argo_cd_health(kind: str) -> None:
    source = (HEALTH / kind / "health.lua").read_text()
    assert set(re.findall(r'hs\.status = "(\w+)"', source)) <= STATUSES


@pytest.mark.parametrize(
    ("kind", "must_cover"),
    [
        ("Sensor", {"Progressing", "Healthy", "Degraded", "Suspended"}),
        ("Integration", {"Progressing", "Healthy", "Degraded"}),
        ("SensorRun", {"Progressing", "Healthy", "Degraded", "Unknown"}),
    ],
)
def test_tables_cover_every_health_of_the_kind(kind: str, must_cover: set[str]) -> None:
    covered = {expected["status"] for k, _, expected in cases() if k == kind}
    assert covered == must_cover


def test_generation_behind_is_progressing_whatever_the_conditions_say() -> None:
    for kind in ("Sensor", "Integration"):
        obj = yaml.safe_load((HEALTH / kind / "testdata" / "generation_behind.yaml").read_text())
        assert obj["metadata"]["generation"] > obj["status"]["observedGeneration"]
        ready = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
        assert health(kind, obj)["status"] == "Progressing"


def argocd_cm_data(text: str) -> dict[str, str]:
    """The `data` of every argocd-cm ConfigMap in a YAML file or in a page's ```yaml blocks."""
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S) if "```" in text else [text]
    data: dict[str, str] = {}
    for block in blocks:
        for document in yaml.safe_load_all(block):
            if (
                isinstance(document, dict)
                and document.get("metadata", {}).get("name") == "argocd-cm"
            ):
                data.update(document["data"])
    return data


def test_the_argocd_cm_patch_carries_the_same_scripts() -> None:
    data = argocd_cm_data((ROOT / "gitops" / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert set(data) == {f"resource.customizations.health.hiphops.io_{kind}" for kind in KINDS}
    for kind in KINDS:
        script = data[f"resource.customizations.health.hiphops.io_{kind}"]
        assert script.strip() == (HEALTH / kind / "health.lua").read_text().strip()


def test_the_docs_snippet_carries_the_same_scripts() -> None:
    data = argocd_cm_data((ROOT / "docs" / "gitops.md").read_text())
    assert data, "docs/gitops.md shows no argocd-cm snippet"
    for key, script in data.items():
        kind = key.rsplit("_", 1)[1]
        assert key == f"resource.customizations.health.hiphops.io_{kind}"
        assert script.strip() == (HEALTH / kind / "health.lua").read_text().strip()


def test_paths_the_gitops_page_names_exist() -> None:
    docs = (ROOT / "docs" / "gitops.md").read_text()
    paths = set(re.findall(r"\b((?:examples|charts|gitops|crds)/[\w./<>-]*[\w/])", docs))
    assert "examples/manifests/auto-merge.yaml" in paths
    for path in paths:
        if "<" in path:
            continue  # a pattern such as gitops/argocd/health/hiphops.io/<Kind>/health.lua
        assert (ROOT / path).exists(), path

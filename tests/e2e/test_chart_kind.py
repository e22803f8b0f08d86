"""The chart end to end on kind: runs tests/e2e/kind_e2e.sh (image, chart, stand-in GitHub,
Integration, merge sensor, signed webhook, SensorRun COMPLETE, pull request merged).

Skipped, with the reason, where kind, kubectl, a Docker daemon or a Helm binary is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.chart.helm import HelmUnavailable, find_helm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "e2e" / "kind_e2e.sh"


def missing() -> str | None:
    """Why the kind e2e cannot run here, or None."""
    for tool in ("kind", "kubectl", "docker"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    try:
        subprocess.run(["docker", "info"], capture_output=True, check=True, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "no Docker daemon is reachable (`docker info` failed)"
    try:
        find_helm()
    except HelmUnavailable as error:
        return str(error)
    return None


MISSING = missing()


@pytest.mark.skipif(MISSING is not None, reason=f"chart e2e on kind: {MISSING}")
def test_chart_on_kind_merges_the_pull_request() -> None:
    cluster = "hiphops-chart-e2e"
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env={**os.environ, "KIND_CLUSTER": cluster},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "kind e2e passed" in result.stdout

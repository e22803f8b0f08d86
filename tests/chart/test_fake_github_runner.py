"""The kind e2e's stand-in GitHub (tests/e2e/fake_github_runner.py), run here as its own process
on loopback: the routes the e2e relies on answer, and its webhook payload is one the merge sensor
matches, at the head the fake holds, so the e2e can only fail on the cluster's side."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hiphops.cli import main as hiphops_main
from hiphops.events import Origin, normalize_github
from tests.chart.conftest import ROOT
from tests.e2e.fake_github_runner import NUMBER, OWNER, REPO, payload

TOKEN = "ghp_runner_test"


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The repository root goes last on sys.path: its operator/ folder must not shadow the
    # standard library's `operator` (as in the Makefile and tests/e2e/kind_e2e.sh).
    process = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "-c",
            "import runpy, sys; sys.path.append('.'); "
            "runpy.run_module('tests.e2e.fake_github_runner', run_name='__main__', alter_sys=True)",
            "serve",
            "--port",
            str(port),
            "--public-url",
            f"http://127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env={**os.environ, "FAKE_GITHUB_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{url}/rate_limit", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read() if process.stderr else "") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_rate_limit_checks_the_token(fake_url: str) -> None:
    assert httpx.get(f"{fake_url}/rate_limit").status_code == 401
    wrong = httpx.get(f"{fake_url}/rate_limit", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.get(f"{fake_url}/rate_limit", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert right.json()["resources"]["core"]["remaining"] > 0


def test_the_payload_names_the_head_the_fake_holds_and_a_merge_lands(fake_url: str) -> None:
    state_url = f"{fake_url}/_e2e/pulls/{OWNER}/{REPO}/{NUMBER}"
    before = httpx.get(state_url).json()
    head = payload()["pull_request"]["head"]["sha"]
    assert before == {"state": "open", "merged": False, "head_sha": head}
    merged = httpx.put(
        f"{fake_url}/repos/{OWNER}/{REPO}/pulls/{NUMBER}/merge",
        json={"sha": head, "merge_method": "squash"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert merged.status_code == 200, merged.text
    assert httpx.get(state_url).json()["merged"] is True
    assert httpx.get(f"{fake_url}/_e2e/pulls/{OWNER}/{REPO}/999").status_code == 404


def test_the_merge_sensor_matches_the_payload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = normalize_github("pull_request", payload(), Origin("demo", "github", "kind-e2e-1"))
    change = next(e for e in events if e["hiphops"]["source"] == "hiphops")
    path = tmp_path / "change.json"
    path.write_text(json.dumps(change))
    code = hiphops_main(
        [
            "test",
            "--sensors",
            str(ROOT / "examples/manifests/auto-merge.yaml"),
            "--event",
            str(path),
            "--output",
            "json",
        ]
    )
    assert code == 0
    (matched,) = json.loads(capsys.readouterr().out)["matched"]
    (task,) = matched["tasks"]
    assert task["name"] == "github.merge_pr"
    assert task["input"]["repo"] == REPO
    assert task["input"]["pr_number"] == NUMBER
    assert task["input"]["head_sha"] == payload()["pull_request"]["head"]["sha"]


def test_the_kind_script_parses_and_copies_files_that_exist() -> None:
    script = ROOT / "tests" / "e2e" / "kind_e2e.sh"
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    copied = []
    for line in script.read_text().splitlines():
        words = line.split()
        if words[:1] == ["cp"]:
            copied += [w for w in words[1:-1] if not w.startswith("-")]
    assert "tests/fakes/github_server.py" in copied
    for path in copied:
        assert (ROOT / path).is_file(), path
    # The manifests it applies are the documented example.
    assert "examples/manifests/auto-merge.yaml" in script.read_text()
    assert (ROOT / "examples/manifests/auto-merge.yaml").is_file()

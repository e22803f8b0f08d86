"""Local mode end to end: a signed pull_request webhook merges the PR through the documented
"auto merge dependabot" sensor (examples/sensors/auto-merge.yaml).

The gateway derives the release manager's `change` event from the webhook; the sensor matches it
and `github.merge_pr` calls a stateful fake GitHub on loopback (tests/fakes/github_server.py),
which checks every request against GitHub's OpenAPI description. The product wiring is used as it
is: `serve` builds the handlers from the same Integration and Secret manifests it serves.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import yaml

from hiphops.runs import RunRecord, RunState
from hiphops.store import SQLiteRunStore
from tests.fakes.github_server import FakeGitHub
from tests.integration.conftest import ROOT, free_port
from webhook_gateway.local import ServeOptions, load_local, serve

TOKEN = "ghp_local_e2e_token"
WEBHOOK_SECRET = "local-e2e-webhook-secret"
PAYLOAD = ROOT / "tests/fixtures/github/pull_request.opened.large.json"


def manifests(api_url: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "hiphops.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": "github", "namespace": "demo"},
            "spec": {
                "type": "github",
                "github": {
                    "apiURL": api_url,
                    "tokenSecretRef": {"name": "gh", "key": "token"},
                    "webhookSecretRefs": [{"name": "gh", "key": "webhook"}],
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gh", "namespace": "demo"},
            "stringData": {"token": TOKEN, "webhook": WEBHOOK_SECRET},
        },
    ]


def dependabot_pull_request(head_sha: str) -> dict[str, Any]:
    """A real pull_request `opened` payload, turned into a Dependabot PR on demo-org/backend."""
    payload = copy.deepcopy(json.loads(PAYLOAD.read_text()))
    payload["number"] = 55
    pr = payload["pull_request"]
    pr.update(number=55, title="Bump lodash from 4.17.20 to 4.17.21", labels=[])
    pr["user"] = {**pr["user"], "login": "dependabot[bot]"}
    pr["head"] = {**pr["head"], "ref": "dependabot/npm_and_yarn/lodash-4.17.21", "sha": head_sha}
    pr["base"] = {**pr["base"], "ref": "main"}
    repository = {**payload["repository"], "name": "backend", "full_name": "demo-org/backend"}
    repository["owner"] = {**repository["owner"], "login": "demo-org"}
    payload["repository"] = repository
    payload.pop("installation", None)
    return payload


def finished_runs(state_dir: Path) -> list[RunRecord]:
    store = SQLiteRunStore(state_dir / "runs.db")
    try:
        return [r for r in store.list() if r.state is not RunState.RUNNING]
    finally:
        store.close()


def test_signed_pull_request_webhook_merges_the_pr(tmp_path: Path) -> None:
    asyncio.run(_merge_scenario(tmp_path))


async def _merge_scenario(tmp_path: Path) -> None:
    async with FakeGitHub(tokens=[TOKEN]) as github:
        repo = github.add_repo("demo-org", "backend")
        pull = github.add_pull(
            repo, 55, head_ref="dependabot/npm_and_yarn/lodash-4.17.21", title="Bump lodash"
        )
        config = tmp_path / "integrations.yaml"
        config.write_text(yaml.safe_dump_all(manifests(github.url)))
        setup = load_local(
            [str(ROOT / "examples/sensors/auto-merge.yaml"), str(config)],
            project="demo",
            environ={},
        )
        assert not setup.errors, setup.errors
        port, state_dir = free_port(), tmp_path / "state"
        started, stop = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(
            serve(setup, ServeOptions(port=port, state_dir=state_dir), started=started, stop=stop)
        )
        try:
            await asyncio.wait_for(started.wait(), 30)
            body = json.dumps(dependabot_pull_request(pull.head_sha)).encode()
            signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"http://127.0.0.1:{port}/hooks/github/demo/github",
                    content=body,
                    headers={
                        "X-GitHub-Event": "pull_request",
                        "X-GitHub-Delivery": "e2e-merge-1",
                        "X-Hub-Signature-256": f"sha256={signature}",
                        "Content-Type": "application/json",
                    },
                )
            assert response.status_code == 202, response.text
            assert len(response.json()["runs"]) == 1  # the change event matched the sensor
            for _ in range(300):
                runs = await asyncio.to_thread(finished_runs, state_dir)
                if runs:
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await server

    [run] = runs
    assert run.state is RunState.COMPLETE, run.error
    [merge] = run.tasks
    assert merge.input == {
        "repo": "backend",
        "pr_number": 55,
        "merge_comment_title": "Bump lodash from 4.17.20 to 4.17.21",
        "head_sha": pull.head_sha,
        "merge_method": "squash",
    }
    [request] = github.received("PUT", r"/repos/demo-org/backend/pulls/55/merge")
    assert request.body["sha"] == pull.head_sha
    assert request.body["merge_method"] == "squash"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert pull.merged
    assert merge.result["sha"] == pull.merge_commit_sha
    assert github.schema_errors == []

"""The `github.*` handlers against a stateful fake GitHub on loopback (tests/fakes/github_server).

Handlers are called through a Registry with TaskCalls built as the executor builds them, with
credentials resolved by StaticConnections from an Integration and a Secret manifest. Every request
the fake receives is checked against the operation's schema in GitHub's OpenAPI description; a
fixture fails any test that sent one the description does not allow. Retries sleep through an
injected function that records the delays instead of waiting. Another fixture checks that no
token, JWT or key appears in any task error or log line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hiphops.events import Origin, normalize_github
from hiphops.integrations import Integration, ManifestSecrets, SecretRef
from hiphops.tasks.connections import StaticConnections
from hiphops.tasks.github import GitHubClients, GitHubTasks, register
from hiphops.tasks.registry import Registry, TaskCall, TaskError
from hiphops.tasks.retry import RetryPolicy
from tests.fakes.github_server import App, FakeGitHub, PullRequest, Reply, Repo

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "github"
PROJECT = "team-a"
TOKEN = "ghp_plain_token_5b2e9c0d71a4"
APP_ID = "4242"
OWNER, NAME = "Codertocat", "Hello-World"
EVENT_INSTALLATION = 1  # the installation id in the fixture payloads


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


APP_KEY = _key()
PRIVATE_PEM = _pem(APP_KEY)
PUBLIC_PEM = APP_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
OTHER_PEM = _pem(_key())


def _payload(action: str) -> dict[str, Any]:
    payloads = json.loads((FIXTURES / "pull_request.payloads.json").read_text(encoding="utf-8"))
    return next(p for p in payloads if p["action"] == action)


ORIGIN = Origin(project=PROJECT, integration="github", delivery="d-1")
# A real pull_request webhook (with an App installation) and the change event it yields.
LABELED_EVENT, CHANGE_EVENT = normalize_github("pull_request", _payload("labeled"), ORIGIN)
OPENED_EVENT = normalize_github("pull_request", _payload("opened"), ORIGIN)[0]  # no installation
EVENT_HEAD = LABELED_EVENT["pull_request"]["head"]["sha"]
EVENT_PR = LABELED_EVENT["number"]

# Texts that must never appear in a task error or a log line; tests add what they mint.
SECRETS: list[str] = [TOKEN, *PRIVATE_PEM.decode().splitlines()[1:-1]]


class Sleeps:
    """The injected sleep: records each delay, waits for none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    server: FakeGitHub
    registry: Registry
    sleeps: Sleeps
    tasks: GitHubTasks
    errors: list[str] = field(default_factory=list)

    @property
    def repo(self) -> Repo:
        return self.server.repos[(OWNER.lower(), NAME.lower())]

    def call(self, name: str, inputs: dict[str, Any], event: dict[str, Any]) -> TaskCall:
        # As the executor builds it (hiphops/executor.py).
        return TaskCall(
            run="run-1",
            task_id="0",
            name=name,
            input=inputs,
            event=event,
            project=PROJECT,
            attempt=1,
        )

    async def run(
        self, name: str, inputs: dict[str, Any], event: dict[str, Any] | None = None
    ) -> Any:
        handler = self.registry.get(name)
        assert handler is not None, name
        result = await handler(self.call(name, inputs, LABELED_EVENT if event is None else event))
        assert json.loads(json.dumps(result, allow_nan=False)) == result  # plain JSON
        return result

    async def fails(
        self, name: str, inputs: dict[str, Any], event: dict[str, Any] | None = None
    ) -> str:
        with pytest.raises(TaskError) as caught:
            await self.run(name, inputs, event)
        self.errors.append(str(caught.value))
        return str(caught.value)


@asynccontextmanager
async def github(
    *,
    app: bool = False,
    prefix: str = "",
    clock: Clock | None = None,
    timeout: httpx.Timeout | None = None,
    private_key: bytes = PRIVATE_PEM,
    attempts: int = 5,
) -> AsyncIterator[Env]:
    """A fake GitHub with Codertocat/Hello-World, and the handlers wired to it."""
    wall = clock if clock is not None else Clock(1_700_000_000.0)
    fake_app = App(APP_ID, PUBLIC_PEM, {EVENT_INSTALLATION: OWNER, 2: "other-org"}) if app else None
    server = FakeGitHub(tokens=[] if app else [TOKEN], app=fake_app, prefix=prefix, clock=wall)
    url = await server.start()
    server.add_repo(OWNER, NAME)
    secrets = ManifestSecrets()
    secrets.add_manifest(
        {
            "metadata": {"name": "gh", "namespace": PROJECT},
            "stringData": {"token": TOKEN, "key.pem": private_key.decode()},
        },
        default_project=PROJECT,
    )
    if app:
        integration = Integration(
            "github", PROJECT, "github", url, app_id=APP_ID, private_key=SecretRef("gh", "key.pem")
        )
    else:
        integration = Integration("github", PROJECT, "github", url, token=SecretRef("gh", "token"))
    sleeps = Sleeps()
    clients = GitHubClients(
        policy=RetryPolicy(attempts=attempts, sleep=sleeps, random=lambda: 0.5),
        clock=wall,
        **({"timeout": timeout} if timeout is not None else {}),
    )
    tasks = GitHubTasks(StaticConnections([integration], secrets), clients)
    registry = Registry()
    tasks.register(registry)
    env = Env(server, registry, sleeps, tasks)
    try:
        yield env
    finally:
        await tasks.aclose()
        await server.close()
    assert server.schema_errors == [], server.schema_errors
    leaks = [
        r.headers["Authorization"].partition(" ")[2]
        for r in server.requests
        if "Authorization" in r.headers
    ]
    SECRETS.extend(leaks)
    for text in env.errors:
        for secret in [*SECRETS, *leaks]:
            assert secret not in text


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no asyncio pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for secret in SECRETS:
        assert secret not in caplog.text


def add_pull(env: Env, **options: Any) -> PullRequest:
    """PR #2 of the event, at the event's head SHA."""
    return env.server.add_pull(env.repo, EVENT_PR, head_sha=EVENT_HEAD, **options)


# -- registration and inputs ----------------------------------------------------------------------


def test_register_adds_every_github_task_of_the_design() -> None:
    registry = Registry()
    register(registry, StaticConnections([], ManifestSecrets()))
    assert registry.names() == sorted(
        f"github.{name}"
        for name in (
            "merge_pr",
            "merge_pr_when_ready",
            "create_pr",
            "create_or_update_pr_comment",
            "create_or_update_pr_review",
            "apply_pr_labels",
            "fetch_pr_files",
            "fetch_pr_commits",
            "fetch_repo_prs",
            "create_release",
            "create_tag",
            "create_branch",
            "dispatch_workflow",
            "rest",
        )
    )


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"pr_number": 2}, "input `repo` is required"),
        ({"repo": NAME}, "input `pr_number` is required"),
        ({"repo": NAME, "pr_number": "two"}, "input `pr_number` must be an integer"),
        ({"repo": NAME, "pr_number": 0}, "must be at least 1"),
        ({"repo": NAME, "pr_number": 2, "merge_method": "octopus"}, "must be one of merge"),
        ({"repo": NAME, "pr_number": 2, "head_sha": "abc123"}, "full commit SHA"),
        ({"repo": NAME, "pr_number": 2, "merge_comment_titel": "x"}, "unknown input"),
        ({"repo": "a/b/c", "pr_number": 2}, "not a repository name"),
        ({"repo": "../etc", "pr_number": 2}, "not a repository name"),
    ],
)
@async_test
async def test_invalid_input_fails_before_any_request(
    inputs: dict[str, Any], fragment: str
) -> None:
    async with github() as env:
        assert fragment in await env.fails("github.merge_pr", inputs)
        assert env.server.requests == []


@async_test
async def test_repo_without_owner_needs_an_event_that_names_one() -> None:
    async with github() as env:
        event = {"hiphops": {"source": "slack", "event": "command"}, "project_id": PROJECT}
        error = await env.fails("github.fetch_pr_files", {"repo": NAME, "pr_number": 2}, event)
        assert f"write it as `owner/{NAME}`" in error


@async_test
async def test_owner_comes_from_the_change_event_or_the_input() -> None:
    async with github() as env:
        add_pull(env, files=[{"filename": "a.txt"}])
        from_change = await env.run(
            "github.fetch_pr_files", {"repo": NAME, "pr_number": 2}, CHANGE_EVENT
        )
        explicit = await env.run(
            "github.fetch_pr_files", {"repo": f"{OWNER}/{NAME}", "pr_number": "2"}, OPENED_EVENT
        )
        assert from_change["pr_files"] == explicit["pr_files"] == [{"filename": "a.txt"}]


@async_test
async def test_requests_carry_the_token_and_the_api_version() -> None:
    async with github() as env:
        add_pull(env)
        await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        (request,) = env.server.received("GET")
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
        assert request.headers["Accept"] == "application/vnd.github+json"


# -- merge_pr -------------------------------------------------------------------------------------


@async_test
async def test_merge_pr_merges_at_head_sha_with_the_pr_title_by_default() -> None:
    async with github() as env:
        pull = add_pull(env, title="Add a feature")
        result = await env.run(
            "github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR, "head_sha": EVENT_HEAD}
        )
        (merge,) = env.server.received("PUT")
        assert merge.path == f"/repos/{OWNER}/{NAME}/pulls/{EVENT_PR}/merge"
        assert merge.body == {
            "merge_method": "merge",
            "commit_title": "Add a feature",
            "sha": EVENT_HEAD,
        }
        assert pull.merged and result["merged"] is True and result["already_merged"] is False
        assert result["merge_commit_sha"] == pull.merge_commit_sha == result["sha"]
        assert result["pr_number"] == EVENT_PR and result["repo"] == f"{OWNER}/{NAME}"


@async_test
async def test_merge_pr_squash_with_title_and_body() -> None:
    async with github() as env:
        add_pull(env)
        await env.run(
            "github.merge_pr",
            {
                "repo": NAME,
                "pr_number": EVENT_PR,
                "merge_method": "squash",
                "merge_comment_title": "Auto-merged this PR!",
                "merge_comment_body": "by hiphops",
            },
        )
        (merge,) = env.server.received("PUT")
        assert merge.body == {
            "merge_method": "squash",
            "commit_title": "Auto-merged this PR!",
            "commit_message": "by hiphops",
        }


@async_test
async def test_merge_pr_run_again_after_success_reports_already_merged() -> None:
    async with github() as env:
        pull = add_pull(env)
        inputs = {"repo": NAME, "pr_number": EVENT_PR, "head_sha": EVENT_HEAD}
        first = await env.run("github.merge_pr", inputs)
        again = await env.run("github.merge_pr", inputs)
        assert again["already_merged"] is True and again["merged"] is True
        assert again["merge_commit_sha"] == first["merge_commit_sha"] == pull.merge_commit_sha
        assert len(env.server.received("PUT")) == 1  # no second merge attempted


@async_test
async def test_merge_pr_whose_answer_was_lost_is_recognised_as_merged() -> None:
    async with github() as env:
        pull = add_pull(env)
        # GitHub merges, but the answer is a 502: the retried PUT is refused (405) and the
        # handler finds the PR merged at its head.
        env.server.inject("PUT", r".*/merge", Reply(502, {"message": "Bad Gateway"}, handled=True))
        result = await env.run(
            "github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR, "head_sha": EVENT_HEAD}
        )
        assert result["already_merged"] is True
        assert result["merge_commit_sha"] == pull.merge_commit_sha
        assert len(env.server.received("PUT")) == 2


@async_test
async def test_merge_pr_fails_when_the_head_moved_before_the_merge() -> None:
    async with github() as env:
        pull = add_pull(env)
        moved = env.server.push(env.repo, pull)
        error = await env.fails(
            "github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR, "head_sha": EVENT_HEAD}
        )
        assert "moved" in error and moved in error and EVENT_HEAD in error
        assert env.server.received("PUT") == [] and not pull.merged


@async_test
async def test_merge_pr_fails_when_github_refuses_a_moved_head() -> None:
    async with github() as env:
        pull = add_pull(env)
        # The head moves between the handler's look and its merge: GitHub answers 409.
        env.server.inject(
            "PUT",
            r".*/merge",
            Reply(409, {"message": "Head branch was modified. Review and try the merge again."}),
        )
        error = await env.fails(
            "github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR, "head_sha": EVENT_HEAD}
        )
        assert "moved" in error and "Head branch was modified" in error
        assert not pull.merged


@async_test
async def test_merge_pr_fails_on_a_conflict() -> None:
    async with github() as env:
        add_pull(env, mergeable=False, mergeable_state="dirty")
        error = await env.fails("github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR})
        assert "conflicts" in error and "Pull Request is not mergeable" in error


@async_test
async def test_merge_pr_fails_on_failing_checks_with_githubs_reason() -> None:
    async with github() as env:
        reason = 'Required status check "ci" is failing.'
        add_pull(env, mergeable_state="blocked", blocked_reason=reason)
        error = await env.fails("github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR})
        assert "merge requirement" in error and reason in error
        assert len(env.server.received("PUT")) == 1  # 405 is not retried


@async_test
async def test_merge_pr_merged_at_another_head_is_a_failure() -> None:
    async with github() as env:
        pull = add_pull(env)
        await env.run("github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR})
        pull.head_sha = "f" * 40
        error = await env.fails(
            "github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR, "head_sha": EVENT_HEAD}
        )
        assert "was merged at head" in error


@async_test
async def test_merge_pr_of_a_closed_pr_fails_and_a_missing_pr_is_named() -> None:
    async with github() as env:
        add_pull(env, state="closed")
        assert "closed without merging" in await env.fails(
            "github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR}
        )
        assert "#99 not found" in await env.fails(
            "github.merge_pr", {"repo": NAME, "pr_number": 99}
        )


@async_test
async def test_merge_pr_with_a_disallowed_method_fails_with_githubs_message() -> None:
    async with github() as env:
        env.repo.merge_methods = {"squash"}
        add_pull(env)
        error = await env.fails("github.merge_pr", {"repo": NAME, "pr_number": EVENT_PR})
        assert "Merge merges are not allowed on this repository." in error


# -- merge_pr_when_ready --------------------------------------------------------------------------


@async_test
async def test_merge_when_ready_enables_auto_merge_on_a_blocked_pr() -> None:
    async with github() as env:
        pull = add_pull(env, mergeable_state="blocked", title="Bump deps")
        result = await env.run(
            "github.merge_pr_when_ready",
            {
                "repo": NAME,
                "pr_number": EVENT_PR,
                "head_sha": EVENT_HEAD,
                "merge_method": "squash",
            },
        )
        assert result["auto_merge_enabled"] is True and result["merged"] is False
        (mutation,) = env.server.received("POST", r"/graphql")
        assert mutation.body["variables"] == {
            "pullRequestId": pull.node_id,
            "mergeMethod": "SQUASH",
            "commitHeadline": "Bump deps",
            "expectedHeadOid": EVENT_HEAD,
        }
        assert pull.auto_merge is not None and pull.auto_merge["merge_method"] == "squash"
        assert env.server.received("PUT") == [] and not pull.merged


@async_test
async def test_merge_when_ready_merges_at_once_when_mergeable() -> None:
    async with github() as env:
        pull = add_pull(env, mergeable_state="clean")
        result = await env.run("github.merge_pr_when_ready", {"repo": NAME, "pr_number": 2})
        assert result["merged"] is True and result["auto_merge_enabled"] is False
        assert pull.merged and env.server.received("POST", r"/graphql") == []


@async_test
async def test_merge_when_ready_merges_when_github_says_the_pr_is_clean() -> None:
    async with github() as env:
        # Mergeability was still being computed when the handler looked; by the time of the
        # mutation GitHub finds the PR clean and refuses auto-merge, as it does.
        pull = add_pull(env, mergeable_state="unknown")
        clean = {"type": "UNPROCESSABLE", "message": "Pull request Pull request is in clean status"}
        env.server.inject("POST", r"/graphql", Reply(200, {"data": None, "errors": [clean]}))
        result = await env.run("github.merge_pr_when_ready", {"repo": NAME, "pr_number": 2})
        assert result["merged"] is True and result["auto_merge_enabled"] is False
        assert pull.merged and len(env.server.received("PUT")) == 1


@async_test
async def test_merge_when_ready_without_auto_merge_behaves_as_merge_pr() -> None:
    async with github() as env:
        env.repo.allow_auto_merge = False
        pull = add_pull(env, mergeable_state="behind")
        result = await env.run("github.merge_pr_when_ready", {"repo": NAME, "pr_number": 2})
        assert len(env.server.received("POST", r"/graphql")) == 1
        assert result["merged"] is True and pull.merged


@async_test
async def test_merge_when_ready_with_a_moved_head_fails_before_asking_github() -> None:
    async with github() as env:
        add_pull(env, mergeable_state="blocked")
        error = await env.fails(
            "github.merge_pr_when_ready",
            {"repo": NAME, "pr_number": 2, "head_sha": "e" * 40},
        )
        assert "moved" in error  # checked before asking GitHub
        assert env.server.received("POST", r"/graphql") == []


@async_test
async def test_merge_when_ready_that_github_refuses_fails_with_the_reason() -> None:
    async with github() as env:
        pull = add_pull(env, mergeable_state="blocked")
        refusal = {"type": "UNPROCESSABLE", "message": "Pull request is in draft state"}
        env.server.inject("POST", r"/graphql", Reply(200, {"data": None, "errors": [refusal]}))
        error = await env.fails("github.merge_pr_when_ready", {"repo": NAME, "pr_number": 2})
        assert "could not enable auto-merge" in error and "draft state" in error
        assert env.server.received("PUT") == [] and not pull.merged


@async_test
async def test_merge_when_ready_on_ghes_uses_the_enterprise_graphql_path() -> None:
    async with github(prefix="/api/v3") as env:
        add_pull(env, mergeable_state="blocked")
        await env.run("github.merge_pr_when_ready", {"repo": NAME, "pr_number": 2})
        assert [r.path for r in env.server.received("POST")] == ["/api/graphql"]
        assert env.server.received("GET")[0].path == f"/repos/{OWNER}/{NAME}/pulls/2"


# -- create_pr ------------------------------------------------------------------------------------


@async_test
async def test_create_pr_creates_a_missing_branch_with_an_empty_commit() -> None:
    async with github() as env:
        main = env.repo.refs["refs/heads/main"]
        inputs = {"repo": NAME, "title": "Release 1.2", "source_branch": "release/1.2"}
        result = await env.run("github.create_pr", inputs)
        assert result["created"] is True and result["branch_created"] is True
        pull = env.repo.pulls[result["pr_number"]]
        assert (pull.head_ref, pull.base_ref, pull.title) == ("release/1.2", "main", "Release 1.2")
        assert env.repo.commits[pull.head_sha]["parents"] == [main]  # one empty commit
        assert result["url"].endswith(f"/pull/{pull.number}")
        assert result["message"] == f"Successfully created PR {pull.number}"
        (create,) = env.server.received("POST", r".*/pulls")
        assert create.body == {
            "title": "Release 1.2",
            "head": "release/1.2",
            "base": "main",
            "draft": False,
        }
        again = await env.run("github.create_pr", inputs)
        assert again["created"] is False and again["pr_number"] == pull.number
        assert len(env.repo.pulls) == 1


@async_test
async def test_create_pr_from_an_existing_branch_into_a_named_target() -> None:
    async with github() as env:
        base = env.repo.branch("develop")
        env.repo.branch("feature", env.repo.commit("work", [base]))
        result = await env.run(
            "github.create_pr",
            {
                "repo": NAME,
                "title": "Feature",
                "source_branch": "feature",
                "target_branch": "develop",
                "body": "Describes it",
                "draft": True,
            },
        )
        pull = env.repo.pulls[result["pr_number"]]
        assert (pull.base_ref, pull.body, pull.draft) == ("develop", "Describes it", True)
        assert result["branch_created"] is False
        assert env.server.received("GET", rf"/repos/{OWNER}/{NAME}") == []  # target was given


@async_test
async def test_create_pr_adds_an_empty_commit_when_the_branch_has_none() -> None:
    async with github() as env:
        env.repo.branch("same", env.repo.refs["refs/heads/main"])
        result = await env.run(
            "github.create_pr", {"repo": NAME, "title": "T", "source_branch": "same"}
        )
        assert result["created"] is True
        assert len(env.server.received("POST", r".*/pulls")) == 2  # refused, then accepted


@async_test
async def test_create_pr_into_a_missing_target_fails() -> None:
    async with github() as env:
        error = await env.fails(
            "github.create_pr",
            {"repo": NAME, "title": "T", "source_branch": "x", "target_branch": "nope"},
        )
        assert "target branch 'nope' not found" in error


# -- comments -------------------------------------------------------------------------------------


@async_test
async def test_comment_is_created_then_updated_in_place() -> None:
    async with github() as env:
        add_pull(env)
        first = await env.run(
            "github.create_or_update_pr_comment",
            {"repo": NAME, "pr_number": 2, "comment_body": "Build started"},
        )
        assert first["created"] is True
        (comment,) = env.repo.comments
        assert comment["body"] == "Build started\n\n<!-- hiphops:default -->"
        second = await env.run(
            "github.create_or_update_pr_comment",
            {"repo": NAME, "pr_number": 2, "comment_body": "Build passed"},
        )
        assert second["created"] is False and second["updated"] is True
        assert second["comment_id"] == first["comment_id"] == comment["id"]
        assert second["url"].endswith(f"#issuecomment-{comment['id']}")
        assert [c["body"] for c in env.repo.comments] == [
            "Build passed\n\n<!-- hiphops:default -->"
        ]
        (patch,) = env.server.received("PATCH")
        assert patch.path == f"/repos/{OWNER}/{NAME}/issues/comments/{comment['id']}"


@async_test
async def test_comments_with_different_identifiers_are_distinct_and_unchanged_text_is_kept() -> (
    None
):
    async with github() as env:
        add_pull(env)
        for identifier in ("build", "deploy", "build"):
            await env.run(
                "github.create_or_update_pr_comment",
                {
                    "repo": NAME,
                    "pr_number": 2,
                    "comment_body": "same text",
                    "comment_identifier": identifier,
                },
            )
        assert [c["body"].rsplit("\n", 1)[1] for c in env.repo.comments] == [
            "<!-- hiphops:build -->",
            "<!-- hiphops:deploy -->",
        ]
        assert env.server.received("PATCH") == []  # the third run found it identical


@async_test
async def test_comment_upsert_finds_its_comment_on_a_later_page() -> None:
    async with github() as env:
        add_pull(env)
        for index in range(150):
            env.repo.comments.append({"id": index + 1, "issue_number": 2, "body": f"human {index}"})
        env.repo.comments.append(
            {"id": 999, "issue_number": 2, "body": "old\n\n<!-- hiphops:default -->"}
        )
        result = await env.run(
            "github.create_or_update_pr_comment",
            {"repo": NAME, "pr_number": 2, "comment_body": "new"},
        )
        assert result["comment_id"] == 999 and result["created"] is False
        pages = env.server.received("GET", r".*/issues/2/comments")
        assert [r.query.get("page") for r in pages] == [None, "2"]
        assert pages[0].query["per_page"] == "100"


@async_test
async def test_comment_whose_creation_answer_was_lost_is_not_duplicated() -> None:
    async with github() as env:
        add_pull(env)
        env.server.inject(
            "POST", r".*/issues/2/comments", Reply(502, {"message": "Bad Gateway"}, handled=True)
        )
        result = await env.run(
            "github.create_or_update_pr_comment",
            {"repo": NAME, "pr_number": 2, "comment_body": "hello"},
        )
        assert len(env.repo.comments) == 1
        assert result["comment_id"] == env.repo.comments[0]["id"]
        assert len(env.server.received("POST")) == 1  # looked again instead of posting again


@async_test
async def test_comment_identifier_cannot_close_the_marker() -> None:
    async with github() as env:
        error = await env.fails(
            "github.create_or_update_pr_comment",
            {"repo": NAME, "pr_number": 2, "comment_body": "x", "comment_identifier": "a-->b"},
        )
        assert "comment_identifier" in error and env.server.requests == []


# -- reviews --------------------------------------------------------------------------------------


@async_test
async def test_review_is_approved_updated_then_superseded_by_a_change_request() -> None:
    async with github() as env:
        add_pull(env)
        base = {"repo": NAME, "pr_number": 2, "review_identifier": "auto"}
        first = await env.run(
            "github.create_or_update_pr_review", {**base, "approved": True, "review_body": "LGTM"}
        )
        assert first["created"] is True and first["state"] == "APPROVED"
        (create,) = env.server.received("POST", r".*/reviews")
        assert create.body == {"body": "LGTM\n\n<!-- hiphops:auto -->", "event": "APPROVE"}
        second = await env.run(
            "github.create_or_update_pr_review",
            {**base, "approved": "true", "review_body": "Still good"},
        )
        assert second["review_id"] == first["review_id"] and second["updated"] is True
        assert env.server.received("PUT")[0].body == {"body": "Still good\n\n<!-- hiphops:auto -->"}
        third = await env.run(
            "github.create_or_update_pr_review",
            {**base, "approved": False, "review_body": "Tests fail", "head_sha": EVENT_HEAD},
        )
        assert third["created"] is True and third["state"] == "CHANGES_REQUESTED"
        assert third["supersedes"] == first["review_id"]
        assert env.server.received("POST", r".*/reviews")[-1].body == {
            "body": "Tests fail\n\n<!-- hiphops:auto -->",
            "event": "REQUEST_CHANGES",
            "commit_id": EVENT_HEAD,
        }
        assert len(env.repo.reviews) == 2


@async_test
async def test_review_needs_approved_and_a_body_to_request_changes() -> None:
    async with github() as env:
        assert "`approved` is required" in await env.fails(
            "github.create_or_update_pr_review", {"repo": NAME, "pr_number": 2, "review_body": "x"}
        )
        assert "`review_body` must not be empty" in await env.fails(
            "github.create_or_update_pr_review",
            {"repo": NAME, "pr_number": 2, "approved": False, "review_body": ""},
        )


# -- labels ---------------------------------------------------------------------------------------


@async_test
async def test_labels_update_replaces_only_the_matching_ones() -> None:
    async with github() as env:
        pull = add_pull(env, labels=["kind/fix", "size/small", "thingy"])
        result = await env.run(
            "github.apply_pr_labels",
            {
                "repo": NAME,
                "pr_number": 2,
                "labels": ["kind/fix", "size/medium", "health/good"],
                "matching": ["kind/*", "size/*"],
                "update": True,
            },
        )
        assert result["removed"] == ["size/small"] and result["added"] == ["size/medium"]
        assert (
            sorted(pull.labels)
            == sorted(result["labels"])
            == [
                "kind/fix",
                "size/medium",
                "thingy",
            ]
        )
        (delete,) = env.server.received("DELETE")
        assert delete.path == f"/repos/{OWNER}/{NAME}/issues/2/labels/size%2Fsmall"
        (add,) = env.server.received("POST")
        assert add.body == {"labels": ["size/medium"]}


@async_test
async def test_labels_without_update_only_add_and_without_matching_add_all() -> None:
    async with github() as env:
        pull = add_pull(env, labels=["size/small"])
        await env.run(
            "github.apply_pr_labels",
            {"repo": NAME, "pr_number": 2, "labels": ["size/medium"], "matching": ["size/*"]},
        )
        assert pull.labels == ["size/small", "size/medium"]
        result = await env.run(
            "github.apply_pr_labels", {"repo": NAME, "pr_number": 2, "labels": ["a", "SIZE/SMALL"]}
        )
        assert result["added"] == ["a"] and result["removed"] == []
        assert env.server.received("DELETE") == []


@async_test
async def test_labels_bad_glob_is_an_input_error() -> None:
    async with github() as env:
        error = await env.fails(
            "github.apply_pr_labels",
            {"repo": NAME, "pr_number": 2, "labels": ["a"], "matching": ["[a-"]},
        )
        assert "`matching` has an invalid pattern" in error


# -- fetches --------------------------------------------------------------------------------------


@async_test
async def test_fetch_pr_files_follows_link_pages_and_bounds_the_result() -> None:
    async with github() as env:
        add_pull(env, files=[{"filename": f"f{i}.py", "status": "added"} for i in range(250)])
        result = await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        assert [f["filename"] for f in result["pr_files"]] == [f"f{i}.py" for i in range(250)]
        assert result["truncated"] is False and result["count"] == 250
        assert len(env.server.received("GET", r".*/files")) == 3
        bounded = await env.run(
            "github.fetch_pr_files", {"repo": NAME, "pr_number": 2, "limit": 120}
        )
        assert bounded["count"] == 120 and bounded["truncated"] is True


@async_test
async def test_fetch_pr_commits() -> None:
    async with github() as env:
        add_pull(env, commits=[{"sha": "a" * 40}, {"sha": "b" * 40}])
        result = await env.run("github.fetch_pr_commits", {"repo": NAME, "pr_number": 2})
        assert [c["sha"] for c in result["pr_commits"]] == ["a" * 40, "b" * 40]
        assert result["message"] == "Github PR commit data retrieved"


@async_test
async def test_fetch_repo_prs_all_states_by_default_or_one_page() -> None:
    async with github() as env:
        for number in range(1, 6):
            env.server.add_pull(env.repo, number, state="closed" if number % 2 else "open")
        everything = await env.run("github.fetch_repo_prs", {"repo": NAME})
        assert [p["number"] for p in everything["repo_prs"]] == [5, 4, 3, 2, 1]
        assert env.server.received("GET")[0].query == {"state": "all", "per_page": "100"}
        page = await env.run(
            "github.fetch_repo_prs",
            {"repo": NAME, "state": "open", "per_page": 1, "page": 2, "sort": "updated"},
        )
        assert [p["number"] for p in page["repo_prs"]] == [2] and page["truncated"] is False
        assert env.server.received("GET")[-1].query == {
            "state": "open",
            "sort": "updated",
            "per_page": "1",
            "page": "2",
        }


# -- releases, tags, branches, workflows ----------------------------------------------------------


@async_test
async def test_create_release_then_again_is_the_same_release() -> None:
    async with github() as env:
        inputs = {
            "repo": NAME,
            "tag_name": "v1.0.0",
            "release_name": "First",
            "release_body": "Fixes",
            "target": "main",
            "make_latest": True,
        }
        first = await env.run("github.create_release", inputs)
        assert first["created"] is True and first["url"].endswith("/releases/tag/v1.0.0")
        (create,) = env.server.received("POST")
        assert create.body == {
            "tag_name": "v1.0.0",
            "draft": False,
            "prerelease": False,
            "name": "First",
            "target_commitish": "main",
            "body": "Fixes",
            "make_latest": "true",
        }
        again = await env.run("github.create_release", inputs)
        assert again["created"] is False and again["release_id"] == first["release_id"]
        error = await env.fails("github.create_release", {**inputs, "release_name": "Other"})
        assert "already exists" in error and "'First'" in error


@async_test
async def test_create_tag_annotated_and_idempotent() -> None:
    async with github() as env:
        sha = env.repo.refs["refs/heads/main"]
        inputs = {"repo": NAME, "tag": "v23.01.05", "sha": sha, "tag_message": "Final"}
        result = await env.run("github.create_tag", inputs)
        tag = result["created_tag"]
        assert tag["tag_ref"] == "refs/tags/v23.01.05" and tag["tagged_sha"] == sha
        assert env.repo.refs["refs/tags/v23.01.05"] == tag["tag_sha"]
        assert env.repo.tag_objects[tag["tag_sha"]]["message"] == "Final"
        again = await env.run("github.create_tag", inputs)
        assert again["created"] is False and again["created_tag"]["tag_sha"] == tag["tag_sha"]
        assert len(env.repo.tag_objects) == 1
        other = env.repo.commit("other", [sha])
        error = await env.fails("github.create_tag", {**inputs, "sha": other})
        assert "already exists" in error and sha in error


@async_test
async def test_create_tag_lightweight() -> None:
    async with github() as env:
        sha = env.repo.refs["refs/heads/main"]
        result = await env.run(
            "github.create_tag", {"repo": NAME, "tag": "v2", "sha": sha, "lightweight": True}
        )
        assert env.repo.refs["refs/tags/v2"] == sha and result["created_tag"]["tag_sha"] is None
        assert env.server.received("POST", r".*/git/tags") == []


@async_test
async def test_create_branch_from_sha_or_branch_and_idempotent() -> None:
    async with github() as env:
        main = env.repo.refs["refs/heads/main"]
        result = await env.run("github.create_branch", {"repo": NAME, "branch": "b1", "sha": main})
        assert result["created_branch"] == {
            "branch": "b1",
            "branch_ref": "refs/heads/b1",
            "sha": main,
        }
        again = await env.run(
            "github.create_branch", {"repo": NAME, "branch": "b1", "branch_from": "main"}
        )
        assert again["created"] is False
        env.repo.branch("other")
        error = await env.fails(
            "github.create_branch", {"repo": NAME, "branch": "b1", "branch_from": "other"}
        )
        assert "already exists" in error
        assert "give `sha` or `branch_from`" in await env.fails(
            "github.create_branch", {"repo": NAME, "branch": "b2"}
        )


@async_test
async def test_dispatch_workflow_with_and_without_run_details() -> None:
    async with github() as env:
        plain = await env.run(
            "github.dispatch_workflow",
            {"repo": NAME, "workflow": "ci.yml", "branch_or_tag": "main", "inputs": {"a": "b"}},
        )
        assert plain["dispatched"] is True and "workflow_run_id" not in plain
        detailed = await env.run(
            "github.dispatch_workflow",
            {"repo": NAME, "workflow": 42, "branch_or_tag": "main", "return_run_details": True},
        )
        assert detailed["workflow_run_id"] == env.repo.dispatches[1]["run_id"]
        assert [d["workflow"] for d in env.repo.dispatches] == ["ci.yml", "42"]
        assert env.server.received("POST")[0].body == {"ref": "main", "inputs": {"a": "b"}}
        error = await env.fails(
            "github.dispatch_workflow",
            {"repo": NAME, "workflow": "nope.yml", "branch_or_tag": "main"},
        )
        assert "404 Not Found" in error


# -- rest -----------------------------------------------------------------------------------------


@async_test
async def test_rest_fills_placeholders_and_sends_options_as_query() -> None:
    async with github() as env:
        env.repo.issues.extend({"number": n, "title": f"i{n}", "state": "open"} for n in (1, 2, 3))
        result = await env.run(
            "github.rest",
            {"route": "GET /repos/{owner}/{repo}/issues", "options": {"repo": NAME, "per_page": 2}},
        )
        assert result["status"] == 200 and [i["number"] for i in result["data"]] == [1, 2]
        (request,) = env.server.received("GET")
        assert request.path == f"/repos/{OWNER}/{NAME}/issues" and request.query == {
            "per_page": "2"
        }


@async_test
async def test_rest_post_with_body_and_accept_header() -> None:
    async with github() as env:
        result = await env.run(
            "github.rest",
            {
                "route": "POST /repos/{owner}/{repo}/issues",
                "repo": f"{OWNER}/{NAME}",
                "body": {"title": "Broken"},
                "options": {"labels": ["bug"]},
                "headers": {"Accept": "application/vnd.github.raw+json"},
            },
        )
        assert result["status"] == 201 and env.repo.issues[0]["title"] == "Broken"
        (request,) = env.server.received("POST")
        assert request.body == {"labels": ["bug"], "title": "Broken"}
        assert request.headers["Accept"] == "application/vnd.github.raw+json"


@async_test
async def test_rest_refuses_auth_headers_missing_placeholders_and_bad_routes() -> None:
    async with github() as env:
        assert "may only set" in await env.fails(
            "github.rest",
            {"route": "GET /repos/{owner}/{repo}", "repo": NAME, "headers": {"Authorization": "x"}},
        )
        assert "{issue_number}" in await env.fails(
            "github.rest",
            {"route": "GET /repos/{owner}/{repo}/issues/{issue_number}", "repo": NAME},
        )
        assert "route" in await env.fails("github.rest", {"route": "https://evil.example/x"})
        assert env.server.requests == []


@async_test
async def test_the_schema_check_catches_a_field_the_description_does_not_declare() -> None:
    async with github() as env:
        error = await env.fails(
            "github.rest",
            {"route": "POST /repos/{owner}/{repo}/issues", "repo": NAME, "body": {"titel": "x"}},
        )
        assert "422" in error
        assert any("'titel' was unexpected" in e for e in env.server.schema_errors)
        assert any("'title' is a required property" in e for e in env.server.schema_errors)
        env.server.schema_errors.clear()  # seen: the fixture's own check must not fail


# -- retries --------------------------------------------------------------------------------------


@async_test
async def test_a_burst_of_5xx_is_retried_with_jittered_exponential_backoff() -> None:
    async with github() as env:
        add_pull(env)
        env.server.inject(
            "GET", r".*/pulls/2", Reply(503, {"message": "busy"}), Reply(500), Reply(502)
        )
        result = await env.run("github.merge_pr", {"repo": NAME, "pr_number": 2})
        assert result["merged"] is True
        # random() is 0.5: half of 1, 2 and 4 seconds.
        assert env.sleeps.delays == [0.5, 1.0, 2.0]
        assert len(env.server.received("GET", r".*/pulls/2")) == 4


@async_test
async def test_429_retry_after_is_honoured() -> None:
    async with github() as env:
        add_pull(env)
        env.server.inject(
            "GET", r".*/pulls/2", Reply(429, {"message": "Too many"}, {"Retry-After": "7"})
        )
        await env.run("github.merge_pr", {"repo": NAME, "pr_number": 2})
        assert env.sleeps.delays == [7.0]


@async_test
async def test_403_with_retry_after_is_a_rate_limit() -> None:
    async with github() as env:
        add_pull(env)
        env.server.inject(
            "PUT", r".*/merge", Reply(403, {"message": "slow down"}, {"Retry-After": "3"})
        )
        result = await env.run("github.merge_pr", {"repo": NAME, "pr_number": 2})
        assert result["merged"] is True and env.sleeps.delays == [3.0]


@async_test
async def test_secondary_rate_limit_without_headers_waits_at_least_a_minute() -> None:
    async with github() as env:
        add_pull(env)
        message = "You have exceeded a secondary rate limit. Please wait a few minutes."
        env.server.inject("GET", r".*/pulls/2", Reply(403, {"message": message}))
        await env.run("github.merge_pr", {"repo": NAME, "pr_number": 2})
        assert env.sleeps.delays == [60.0]


@async_test
async def test_primary_rate_limit_waits_until_the_reset() -> None:
    clock = Clock(1_700_000_000.0)
    async with github(clock=clock) as env:
        add_pull(env)
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000030"}
        env.server.inject(
            "GET", r".*/pulls/2", Reply(403, {"message": "API rate limit exceeded"}, headers)
        )
        await env.run("github.merge_pr", {"repo": NAME, "pr_number": 2})
        assert env.sleeps.delays == [31.0]  # to the reset, plus a second of slack


@async_test
async def test_a_wait_beyond_the_budget_fails_at_once() -> None:
    async with github() as env:
        add_pull(env)
        env.server.inject(
            "GET", r".*/pulls/2", Reply(429, {"message": "later"}, {"Retry-After": "3600"})
        )
        error = await env.fails("github.merge_pr", {"repo": NAME, "pr_number": 2})
        assert "retry budget" in error and "429" in error
        assert env.sleeps.delays == [] and len(env.server.requests) == 1


@async_test
async def test_attempts_are_bounded() -> None:
    async with github(attempts=4) as env:
        add_pull(env)
        env.server.inject("GET", r".*/pulls/2", *[Reply(502, {"message": "Bad Gateway"})] * 10)
        error = await env.fails("github.merge_pr", {"repo": NAME, "pr_number": 2})
        assert "gave up after 4 attempts" in error and "Bad Gateway" in error
        assert len(env.server.requests) == 4 and len(env.sleeps.delays) == 3


@async_test
async def test_a_rejected_token_fails_at_once() -> None:
    async with github() as env:
        env.server.tokens = {"somebody-elses-token"}
        error = await env.fails("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        assert "401 Bad credentials" in error
        assert len(env.server.requests) == 1 and env.sleeps.delays == []


@async_test
async def test_non_transient_422_fails_at_once_with_githubs_message() -> None:
    async with github() as env:
        error = await env.fails(
            "github.create_branch", {"repo": NAME, "branch": "b", "sha": "c" * 40}
        )
        assert "422 Object does not exist" in error
        assert len(env.server.received("POST")) == 1 and env.sleeps.delays == []


@async_test
async def test_a_timeout_is_retried_for_a_safe_request() -> None:
    async with github(timeout=httpx.Timeout(0.3)) as env:
        add_pull(env)
        env.server.inject("GET", r".*/pulls/2", Reply(200, {}, delay=1.5))
        result = await env.run("github.merge_pr", {"repo": NAME, "pr_number": 2})
        assert result["merged"] is True and len(env.sleeps.delays) == 1


@async_test
async def test_a_timeout_of_an_unsafe_request_is_not_repeated() -> None:
    async with github(timeout=httpx.Timeout(0.3)) as env:
        env.server.inject("POST", r".*/dispatches", Reply(204, delay=1.5, handled=True))
        error = await env.fails(
            "github.dispatch_workflow",
            {"repo": NAME, "workflow": "ci.yml", "branch_or_tag": "main"},
        )
        assert "may or may not have taken effect" in error and "not dispatched again" in error
        assert len(env.server.received("POST")) == 1 and len(env.repo.dispatches) == 1


# -- GitHub App auth ------------------------------------------------------------------------------


@async_test
async def test_app_mints_a_token_for_the_event_installation_and_caches_it() -> None:
    async with github(app=True) as env:
        add_pull(env)
        await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        await env.run("github.fetch_pr_commits", {"repo": NAME, "pr_number": 2})
        assert env.server.mints == [EVENT_INSTALLATION]
        assert env.server.received("GET", r".*/installation") == []  # the event named it
        (mint,) = env.server.received("POST", r"/app/installations/1/access_tokens")
        assert mint.body is None
        token = next(iter(env.server.installation_tokens))
        assert {r.headers["Authorization"] for r in env.server.received("GET")} == {
            f"Bearer {token}"
        }


@async_test
async def test_app_looks_up_the_installation_when_the_event_has_none() -> None:
    async with github(app=True) as env:
        add_pull(env)
        for _ in range(2):
            await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2}, OPENED_EVENT)
        assert len(env.server.received("GET", rf"/repos/{OWNER}/{NAME}/installation")) == 1
        assert env.server.mints == [EVENT_INSTALLATION]


@async_test
async def test_app_uses_the_installation_of_the_repository_owner() -> None:
    async with github(app=True) as env:
        other = env.server.add_repo("other-org", "tools")
        env.server.add_pull(other, 7, files=[{"filename": "x"}])
        result = await env.run("github.fetch_pr_files", {"repo": "other-org/tools", "pr_number": 7})
        assert result["pr_files"] == [{"filename": "x"}]
        assert env.server.mints == [2]  # not the event's installation (another account)


@async_test
async def test_app_token_is_refreshed_before_it_expires() -> None:
    clock = Clock(1_700_000_000.0)
    async with github(app=True, clock=clock) as env:
        add_pull(env)
        await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        clock.now += 3400  # 200 s left of its hour: within the 5-minute refresh margin
        await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        assert env.server.mints == [EVENT_INSTALLATION, EVENT_INSTALLATION]
        clock.now += 10
        await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        assert len(env.server.mints) == 2


@async_test
async def test_app_token_revoked_early_is_replaced_once() -> None:
    async with github(app=True) as env:
        add_pull(env)
        await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        env.server.revoke_tokens()
        await env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        assert len(env.server.mints) == 2
        assert [r.path.endswith("/files") for r in env.server.received("GET")] == [True] * 3


@async_test
async def test_concurrent_tasks_share_one_mint() -> None:
    async with github(app=True) as env:
        add_pull(env)
        await asyncio.gather(
            *(env.run("github.fetch_pr_files", {"repo": NAME, "pr_number": 2}) for _ in range(5))
        )
        assert env.server.mints == [EVENT_INSTALLATION]


@async_test
async def test_app_with_the_wrong_key_fails_clearly_without_the_key() -> None:
    async with github(app=True, private_key=OTHER_PEM) as env:
        SECRETS.extend(OTHER_PEM.decode().splitlines()[1:-1])
        error = await env.fails("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        assert "rejected the App credentials" in error and "PRIVATE KEY" not in error
        assert env.server.mints == []


@async_test
async def test_app_with_a_malformed_key_fails_before_any_request() -> None:
    async with github(app=True, private_key=b"not a key") as env:
        error = await env.fails("github.fetch_pr_files", {"repo": NAME, "pr_number": 2})
        assert "not a valid PEM-encoded RSA private key" in error and "not a key" not in error
        assert env.server.requests == []


@async_test
async def test_app_not_installed_on_the_repository_is_named() -> None:
    async with github(app=True) as env:
        env.server.add_repo("stranger", "repo")
        error = await env.fails("github.fetch_pr_files", {"repo": "stranger/repo", "pr_number": 1})
        assert "not installed on stranger/repo" in error

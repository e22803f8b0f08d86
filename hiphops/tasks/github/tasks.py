"""The `github.*` task handlers (DESIGN §5), with the inputs and defaults of the Hiphops docs.

Every handler validates its input before touching GitHub (unknown keys included, so a misspelt
input is an error rather than silently ignored), acts through the task's GitHub integration, and
returns a JSON result later tasks can use. Each is safe to run again after a crash or a retry:
creations look for what an earlier attempt made (a comment with the same identifier, a branch at
the same SHA, an already merged pull request) and report it instead of failing or duplicating.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

from hiphops.globs import GlobError, compile_glob
from hiphops.tasks.connections import Connections
from hiphops.tasks.github.client import (
    AmbiguousRequest,
    GitHubAPIError,
    GitHubClient,
    GitHubClients,
    GitHubUnavailable,
    GraphQLError,
    path_part,
    repo_path,
    response_json,
)
from hiphops.tasks.registry import Registry, TaskCall, TaskError, TaskHandler
from hiphops.tasks.retry import RetriesExhausted, RetryLater

logger = logging.getLogger("hiphops.tasks.github")

_SHA: Final = re.compile(r"[0-9a-fA-F]{40}(?:[0-9a-fA-F]{24})?")
_OWNER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_REPO: Final = re.compile(r"[A-Za-z0-9_.-]+")
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,100}")
_ROUTE: Final = re.compile(r"(GET|POST|PUT|PATCH|DELETE|HEAD)\s+(/\S*)")
_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_IDENTIFIER: Final = "default"
MERGE_METHODS: Final = ("merge", "squash", "rebase")
#: The headers a `github.rest` task may set; Authorization and the like stay ours.
REST_HEADERS: Final = frozenset({"accept", "x-github-api-version"})
#: GitHub's own caps: a PR lists at most 3000 files and 250 commits.
MAX_PR_FILES: Final = 3000
MAX_PR_COMMITS: Final = 250
MAX_LISTED: Final = 10_000
#: How many comments or reviews an upsert reads looking for its marker.
MAX_SCANNED: Final = 5000

ENABLE_AUTO_MERGE: Final = """\
mutation($pullRequestId: ID!, $mergeMethod: PullRequestMergeMethod!, $commitHeadline: String,
         $commitBody: String, $expectedHeadOid: GitObjectID) {
  enablePullRequestAutoMerge(input: {pullRequestId: $pullRequestId, mergeMethod: $mergeMethod,
      commitHeadline: $commitHeadline, commitBody: $commitBody,
      expectedHeadOid: $expectedHeadOid}) {
    pullRequest { number autoMergeRequest { enabledAt mergeMethod } }
  }
}"""

# GraphQL refusals that mean "merge it yourself now": the PR is already mergeable, or the
# repository does not allow auto-merge (then the task behaves as merge_pr, as documented).
_MERGE_NOW_HINTS: Final = ("clean status", "unstable status", "auto merge is not allowed")


def marker(identifier: str) -> str:
    """The hidden HTML comment that identifies what an upsert task wrote."""
    return f"<!-- hiphops:{identifier} -->"


class _Input:
    """A task's input with typed, validated access; errors name the task and the key."""

    def __init__(self, call: TaskCall, known: Sequence[str]) -> None:
        self._values = call.input
        self._task = call.name
        allowed = {"repo", "integration", *known}
        unknown = sorted(str(key) for key in self._values if key not in allowed)
        if unknown:
            raise TaskError(
                f"{self._task}: unknown input {', '.join(f'`{k}`' for k in unknown)} "
                f"(known: {', '.join(sorted(allowed))})"
            )

    def error(self, key: str, problem: str) -> TaskError:
        return TaskError(f"{self._task}: input `{key}` {problem}")

    def present(self, key: str) -> bool:
        return self._values.get(key) is not None

    def raw(self, key: str) -> Any:
        return self._values.get(key)

    def text(self, key: str, *, required: bool = False, empty: bool = False) -> str | None:
        value = self._values.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(key, f"must be a string, not {_kind(value)}")
        text = str(value)
        if not text and not empty:
            raise self.error(key, "must not be empty")
        return text

    def required_text(self, key: str, *, empty: bool = False) -> str:
        text = self.text(key, required=True, empty=empty)
        assert text is not None
        return text

    def integer(self, key: str, *, required: bool = False, minimum: int = 1) -> int | None:
        value = self._values.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        # Rendered inputs are often strings (`${event.number}`): digits are accepted.
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {value!r}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, not {value}")
        return value

    def number(self, key: str) -> int:
        value = self.integer(key, required=True)
        assert value is not None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._values.get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    def choice(self, key: str, options: Sequence[str], default: str | None) -> str | None:
        value = self.text(key)
        if value is None:
            return default
        if value not in options:
            raise self.error(key, f"must be one of {', '.join(options)}, not {value!r}")
        return value

    def sha(self, key: str, *, required: bool = False) -> str | None:
        value = self.text(key, required=required)
        if value is not None and not _SHA.fullmatch(value):
            raise self.error(key, f"must be a full commit SHA (40 hex digits), not {value!r}")
        return None if value is None else value.lower()

    def texts(self, key: str, *, required: bool = False) -> list[str] | None:
        value = self._values.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(key, "must be a list of strings")
        return list(value)

    def mapping(self, key: str) -> dict[str, Any] | None:
        value = self._values.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be an object, not {_kind(value)}")
        return {str(k): v for k, v in value.items()}

    def identifier(self, key: str) -> str:
        value = self.text(key) or DEFAULT_IDENTIFIER
        if not _IDENTIFIER.fullmatch(value) or "--" in value:
            raise self.error(
                key,
                "must be 1-100 letters, digits or . _ : / @ + = - characters, without '--'",
            )
        return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def event_owner(event: Mapping[str, Any]) -> str | None:
    """The account that owns the event's repository: `repository.owner.login`, else the change
    event's `full_repo_name`, else `organization.login`."""
    repository = event.get("repository")
    if isinstance(repository, Mapping):
        owner = repository.get("owner")
        if isinstance(owner, Mapping) and isinstance(owner.get("login"), str):
            return str(owner["login"])
    full = event.get("full_repo_name")
    if isinstance(full, str) and "/" in full:
        return full.split("/", 1)[0]
    organization = event.get("organization")
    if isinstance(organization, Mapping) and isinstance(organization.get("login"), str):
        return str(organization["login"])
    return None


def resolve_repo(value: str, event: Mapping[str, Any], task: str = "github") -> tuple[str, str]:
    """(owner, name) from `owner/name`, or from `name` with the owner taken from the event."""
    if "/" in value:
        owner, _, name = value.partition("/")
    else:
        found = event_owner(event)
        if found is None:
            raise TaskError(
                f"{task}: input `repo` is {value!r} without an owner and the event names none: "
                f"write it as `owner/{value}`"
            )
        owner, name = found, value
    if not _OWNER.fullmatch(owner) or not _REPO.fullmatch(name) or name in (".", ".."):
        raise TaskError(f"{task}: input `repo` {value!r} is not a repository name (owner/name)")
    return owner, name


@dataclass(frozen=True)
class _Repo:
    """A repository and the client acting on it."""

    client: GitHubClient
    owner: str
    name: str

    @property
    def path(self) -> str:
        return repo_path(self.owner, self.name)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    async def pull(self, number: int) -> dict[str, Any]:
        try:
            pull = await self.client.json("GET", f"{self.path}/pulls/{number}")
        except GitHubAPIError as exc:
            if exc.status == 404:
                raise TaskError(f"pull request #{number} not found in {self.full_name}") from None
            raise
        if not isinstance(pull, dict):
            raise TaskError(f"GitHub gave no pull request #{number} of {self.full_name}")
        return pull

    async def ref(self, ref: str) -> dict[str, Any] | None:
        """A git ref (`heads/main`, `tags/v1`), or None when there is none."""
        try:
            found = await self.client.json("GET", f"{self.path}/git/ref/{quote(ref, safe='/')}")
        except GitHubAPIError as exc:
            if exc.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    async def ref_sha(self, ref: str) -> str | None:
        found = await self.ref(ref)
        target = found.get("object") if found else None
        return str(target["sha"]) if isinstance(target, Mapping) and "sha" in target else None


def _head_sha(pull: Mapping[str, Any]) -> str:
    head = pull.get("head")
    return str(head.get("sha") or "").lower() if isinstance(head, Mapping) else ""


async def _retrying(repo: _Repo, what: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
    """Run a look-then-act operation under the retry policy: an AmbiguousRequest inside it (a
    creation that may or may not have happened) makes it look again before acting again."""

    async def guarded() -> Any:
        try:
            return await attempt()
        except AmbiguousRequest as exc:
            raise RetryLater(str(exc)) from None

    try:
        return await repo.client.policy.run(guarded, what=what)
    except RetriesExhausted as exc:
        raise GitHubUnavailable(f"{what}: {exc}") from None


class GitHubTasks:
    """The `github.*` handlers over a set of connections and a pool of GitHub clients."""

    def __init__(self, connections: Connections, clients: GitHubClients | None = None) -> None:
        self._connections = connections
        self.clients = clients if clients is not None else GitHubClients()

    def handlers(self) -> dict[str, TaskHandler]:
        """Every handler by its task name."""
        return {
            "github.merge_pr": self.merge_pr,
            "github.merge_pr_when_ready": self.merge_pr_when_ready,
            "github.create_pr": self.create_pr,
            "github.create_or_update_pr_comment": self.create_or_update_pr_comment,
            "github.create_or_update_pr_review": self.create_or_update_pr_review,
            "github.apply_pr_labels": self.apply_pr_labels,
            "github.fetch_pr_files": self.fetch_pr_files,
            "github.fetch_pr_commits": self.fetch_pr_commits,
            "github.fetch_repo_prs": self.fetch_repo_prs,
            "github.create_release": self.create_release,
            "github.create_tag": self.create_tag,
            "github.create_branch": self.create_branch,
            "github.dispatch_workflow": self.dispatch_workflow,
            "github.rest": self.rest,
        }

    def register(self, registry: Registry) -> None:
        """Register every handler in `registry`."""
        for name, handler in self.handlers().items():
            registry.register(name, handler)

    async def aclose(self) -> None:
        """Close the HTTP connections this event loop opened."""
        await self.clients.aclose()

    async def _repo(self, call: TaskCall, inputs: _Input) -> _Repo:
        owner, name = resolve_repo(inputs.required_text("repo"), call.event, call.name)
        credentials = self._connections.github(call.project, call.event, inputs.text("integration"))
        client = await self.clients.for_repo(credentials, call.event, owner, name)
        return _Repo(client, owner, name)

    # -- merging ---------------------------------------------------------------------------

    async def merge_pr(self, call: TaskCall) -> dict[str, Any]:
        """`github.merge_pr`: merge a pull request, only at `head_sha` when given.

        The commit title defaults to the PR title (as Hiphops documents; a rebase has none).
        Already merged (at `head_sha`, when given) is success with `already_merged: true`. A head
        that moved, a conflict, or an unmet requirement (checks, reviews) fails, saying which.
        """
        inputs, options = _merge_inputs(call)
        repo = await self._repo(call, inputs)
        return await _merge(repo, options, await repo.pull(options.number))

    async def merge_pr_when_ready(self, call: TaskCall) -> dict[str, Any]:
        """`github.merge_pr_when_ready`: enable auto-merge, or merge at once when the pull
        request can already be merged (or the repository does not allow auto-merge)."""
        inputs, options = _merge_inputs(call)
        repo = await self._repo(call, inputs)
        pull = await repo.pull(options.number)
        if _finished(repo, options, pull) is not None or pull.get("mergeable_state") in (
            "clean",
            "unstable",
            "has_hooks",
        ):
            return {**await _merge(repo, options, pull), "auto_merge_enabled": False}
        _check_head(repo, options, pull)
        variables: dict[str, Any] = {
            "pullRequestId": pull.get("node_id"),
            "mergeMethod": options.method.upper(),
        }
        if options.method != "rebase":
            variables["commitHeadline"] = options.title or str(pull.get("title") or "")
            if options.body is not None:
                variables["commitBody"] = options.body
        if options.head_sha is not None:
            variables["expectedHeadOid"] = options.head_sha
        try:
            await repo.client.graphql(ENABLE_AUTO_MERGE, variables)
        except GraphQLError as exc:
            text = " ".join(exc.messages).lower()
            if any(hint in text for hint in _MERGE_NOW_HINTS):
                fresh = await repo.pull(options.number)
                return {**await _merge(repo, options, fresh), "auto_merge_enabled": False}
            raise TaskError(
                f"could not enable auto-merge on pull request #{options.number} of "
                f"{repo.full_name}: {'; '.join(exc.messages)}"
            ) from None
        logger.info("auto-merge enabled on %s#%d", repo.full_name, options.number)
        return {
            "merged": False,
            "already_merged": False,
            "auto_merge_enabled": True,
            "pr_number": options.number,
            "repo": repo.full_name,
            "url": pull.get("html_url"),
            "head_sha": _head_sha(pull),
            "merge_method": options.method,
            "message": f"Auto-merge enabled: GitHub merges PR {options.number} when it is ready",
        }

    # -- pull requests -----------------------------------------------------------------------

    async def create_pr(self, call: TaskCall) -> dict[str, Any]:
        """`github.create_pr`: open a pull request from `source_branch` (created from the target
        when missing, with an empty commit when it has none) into `target_branch` (default: the
        repository's default branch). An open PR for the same branches is returned as is."""
        inputs = _Input(call, ("title", "source_branch", "target_branch", "body", "draft"))
        title = inputs.required_text("title")
        source = inputs.required_text("source_branch")
        target = inputs.text("target_branch")
        body = inputs.text("body", empty=True)
        draft = inputs.boolean("draft", False)
        repo = await self._repo(call, inputs)
        if target is None:
            details = await repo.client.json("GET", repo.path)
            target = str(details.get("default_branch") or "") if isinstance(details, dict) else ""
            if not target:
                raise TaskError(f"GitHub gave no default branch for {repo.full_name}")
        branch_created = False
        if await repo.ref_sha(f"heads/{source}") is None:
            base_sha = await repo.ref_sha(f"heads/{target}")
            if base_sha is None:
                raise TaskError(f"target branch {target!r} not found in {repo.full_name}")
            branch_created = await _create_ref(repo, f"refs/heads/{source}", base_sha)
            if branch_created:  # at the target's head: no commit for a pull request yet
                await _empty_commit(repo, source, title)
        payload: dict[str, Any] = {"title": title, "head": source, "base": target, "draft": draft}
        if body is not None:
            payload["body"] = body
        created = True
        try:
            pull = await _open_pull(repo, payload)
        except GitHubAPIError as exc:
            text = f"{exc.message} {' '.join(exc.errors)}".lower()
            if "no commits between" in text:
                await _empty_commit(repo, source, title)
                pull = await _open_pull(repo, payload)
            elif "already exists" in text:
                pull = await _existing_pull(repo, source, target)
                created = False
            else:
                raise
        number = pull.get("number")
        if created:
            logger.info("created %s#%s from %s into %s", repo.full_name, number, source, target)
        return {
            "pr_number": number,
            "url": pull.get("html_url"),
            "node_id": pull.get("node_id"),
            "head_sha": _head_sha(pull),
            "source_branch": source,
            "target_branch": target,
            "created": created,
            "branch_created": branch_created,
            "message": f"Successfully created PR {number}"
            if created
            else f"PR {number} already exists for {source} into {target}",
        }

    async def create_or_update_pr_comment(self, call: TaskCall) -> dict[str, Any]:
        """`github.create_or_update_pr_comment`: the comment carrying the identifier's hidden
        marker is updated, or created when the pull request has none."""
        inputs = _Input(call, ("pr_number", "comment_body", "comment_identifier"))
        number = inputs.number("pr_number")
        body = inputs.required_text("comment_body", empty=True)
        identifier = inputs.identifier("comment_identifier")
        repo = await self._repo(call, inputs)
        tag = marker(identifier)
        text = f"{body}\n\n{tag}"

        async def upsert() -> dict[str, Any]:
            comments, _ = await repo.client.paginate(
                f"{repo.path}/issues/{number}/comments", limit=MAX_SCANNED
            )
            existing = next(
                (c for c in comments if isinstance(c, dict) and tag in str(c.get("body") or "")),
                None,
            )
            if existing is not None:
                if existing.get("body") == text:
                    return _comment_result(existing, identifier, created=False, updated=False)
                changed = await repo.client.json(
                    "PATCH", f"{repo.path}/issues/comments/{existing['id']}", json={"body": text}
                )
                return _comment_result(changed, identifier, created=False, updated=True)
            made = await repo.client.json(
                "POST", f"{repo.path}/issues/{number}/comments", json={"body": text}
            )
            logger.info("commented on %s#%d (%s)", repo.full_name, number, identifier)
            return _comment_result(made, identifier, created=True, updated=True)

        result: dict[str, Any] = await _retrying(
            repo, f"comment on {repo.full_name}#{number}", upsert
        )
        return result

    async def create_or_update_pr_review(self, call: TaskCall) -> dict[str, Any]:
        """`github.create_or_update_pr_review`: approve (`approved: true`) or request changes.
        The latest review carrying the identifier's marker is updated when it has the same
        verdict; otherwise a new review is submitted (GitHub cannot change a review's verdict;
        the newest review of a reviewer is the one that counts)."""
        inputs = _Input(
            call, ("pr_number", "approved", "review_body", "review_identifier", "head_sha")
        )
        number = inputs.number("pr_number")
        if not inputs.present("approved"):
            raise inputs.error("approved", "is required (true approves, false requests changes)")
        approved = inputs.boolean("approved", True)
        body = inputs.required_text("review_body", empty=approved)
        identifier = inputs.identifier("review_identifier")
        commit = inputs.sha("head_sha")
        repo = await self._repo(call, inputs)
        tag = marker(identifier)
        text = f"{body}\n\n{tag}"
        wanted = "APPROVED" if approved else "CHANGES_REQUESTED"

        async def upsert() -> dict[str, Any]:
            reviews, _ = await repo.client.paginate(
                f"{repo.path}/pulls/{number}/reviews", limit=MAX_SCANNED
            )
            ours = [
                r
                for r in reviews
                if isinstance(r, dict)
                and tag in str(r.get("body") or "")
                and r.get("state") in ("APPROVED", "CHANGES_REQUESTED", "COMMENTED")
            ]
            latest = ours[-1] if ours else None
            if latest is not None and latest.get("state") == wanted:
                if latest.get("body") == text:
                    return _review_result(latest, identifier, created=False, updated=False)
                changed = await repo.client.json(
                    "PUT",
                    f"{repo.path}/pulls/{number}/reviews/{latest['id']}",
                    json={"body": text},
                )
                return _review_result(changed, identifier, created=False, updated=True)
            payload: dict[str, Any] = {
                "body": text,
                "event": "APPROVE" if approved else "REQUEST_CHANGES",
            }
            if commit is not None:
                payload["commit_id"] = commit
            made = await repo.client.json(
                "POST", f"{repo.path}/pulls/{number}/reviews", json=payload
            )
            logger.info("reviewed %s#%d: %s (%s)", repo.full_name, number, wanted, identifier)
            result = _review_result(made, identifier, created=True, updated=True)
            if latest is not None:
                result["supersedes"] = latest.get("id")
            return result

        result: dict[str, Any] = await _retrying(
            repo, f"review of {repo.full_name}#{number}", upsert
        )
        return result

    async def apply_pr_labels(self, call: TaskCall) -> dict[str, Any]:
        """`github.apply_pr_labels`: add `labels` (those matching a `matching` glob, when given);
        with `update`, first remove the PR's labels that match `matching` (every label when
        `matching` is absent) and are not in `labels`."""
        inputs = _Input(call, ("pr_number", "labels", "matching", "update"))
        number = inputs.number("pr_number")
        labels = inputs.texts("labels", required=True) or []
        patterns = inputs.texts("matching")
        update = inputs.boolean("update", False)
        try:
            matchers = [compile_glob(p) for p in patterns or []]
        except GlobError as exc:
            raise inputs.error("matching", f"has an invalid pattern: {exc}") from None

        def managed(label: str) -> bool:
            return not matchers or any(match(label) for match in matchers)

        wanted: dict[str, str] = {}
        for label in labels:
            if label and managed(label):
                wanted.setdefault(label.casefold(), label)
        repo = await self._repo(call, inputs)
        labels_path = f"{repo.path}/issues/{number}/labels"
        listed, _ = await repo.client.paginate(labels_path, limit=MAX_LISTED)
        current = [str(item.get("name")) for item in listed if isinstance(item, Mapping)]
        have = {name.casefold() for name in current}
        removed = [
            name for name in current if update and managed(name) and name.casefold() not in wanted
        ]
        added = [label for key, label in wanted.items() if key not in have]
        for name in removed:
            try:
                await repo.client.request("DELETE", f"{labels_path}/{path_part(name)}")
            except GitHubAPIError as exc:
                if exc.status != 404:  # already gone: what this task wanted
                    raise
        final = [name for name in current if name not in removed]
        if added:
            # Adding labels a PR already has changes nothing: safe to send again.
            answer = await repo.client.json(
                "POST", labels_path, json={"labels": added}, idempotent=True
            )
            if isinstance(answer, list):
                final = [str(item.get("name")) for item in answer if isinstance(item, Mapping)]
            else:
                final += added
        if added or removed:
            logger.info(
                "labels of %s#%d: added %s, removed %s", repo.full_name, number, added, removed
            )
        return {"labels": final, "added": added, "removed": removed}

    async def fetch_pr_files(self, call: TaskCall) -> dict[str, Any]:
        """`github.fetch_pr_files`: the files a pull request changes, as GitHub lists them."""
        return await self._fetch_pr_list(call, "files", MAX_PR_FILES)

    async def fetch_pr_commits(self, call: TaskCall) -> dict[str, Any]:
        """`github.fetch_pr_commits`: the commits of a pull request, as GitHub lists them."""
        return await self._fetch_pr_list(call, "commits", MAX_PR_COMMITS)

    async def _fetch_pr_list(self, call: TaskCall, kind: str, cap: int) -> dict[str, Any]:
        """A pull request's `files` or `commits`, every page up to `limit` (at most `cap`)."""
        inputs = _Input(call, ("pr_number", "limit"))
        number = inputs.number("pr_number")
        limit = min(inputs.integer("limit") or cap, cap)
        repo = await self._repo(call, inputs)
        items, truncated = await repo.client.paginate(
            f"{repo.path}/pulls/{number}/{kind}", limit=limit
        )
        return {
            f"pr_{kind}": items,
            "count": len(items),
            "truncated": truncated,
            "message": f"Github PR {kind[:-1]} data retrieved",
        }

    async def fetch_repo_prs(self, call: TaskCall) -> dict[str, Any]:
        """`github.fetch_repo_prs`: a repository's pull requests (default state `all`). With
        `page`, that one page of `per_page`; otherwise every page, at most `limit` PRs."""
        inputs = _Input(
            call, ("state", "head", "base", "sort", "direction", "per_page", "page", "limit")
        )
        params: dict[str, Any] = {
            "state": inputs.choice("state", ("open", "closed", "all"), "all"),
        }
        for key in ("head", "base"):
            value = inputs.text(key)
            if value is not None:
                params[key] = value
        sort = inputs.choice("sort", ("created", "updated", "popularity", "long-running"), None)
        direction = inputs.choice("direction", ("asc", "desc"), None)
        params.update({k: v for k, v in (("sort", sort), ("direction", direction)) if v})
        per_page = inputs.integer("per_page") or 100
        if per_page > 100:
            raise inputs.error("per_page", f"must be at most 100, not {per_page}")
        page = inputs.integer("page")
        limit = min(inputs.integer("limit") or 1000, MAX_LISTED)
        repo = await self._repo(call, inputs)
        if page is not None:
            response = await repo.client.request(
                "GET", f"{repo.path}/pulls", params={**params, "per_page": per_page, "page": page}
            )
            pulls = response_json(response)
            if not isinstance(pulls, list):
                raise TaskError(f"GitHub listed no pull requests for {repo.full_name}")
            truncated = "next" in response.links
        else:
            pulls, truncated = await repo.client.paginate(f"{repo.path}/pulls", params, limit=limit)
        return {
            "repo_prs": pulls,
            "count": len(pulls),
            "truncated": truncated,
            "message": "Github repo PR data retrieved",
        }

    # -- releases, tags, branches, workflows --------------------------------------------------

    async def create_release(self, call: TaskCall) -> dict[str, Any]:
        """`github.create_release`: a release for `tag_name` (GitHub creates the tag at `target`
        when it does not exist). An existing release of that tag and name is returned."""
        inputs = _Input(
            call,
            (
                "tag_name",
                "release_name",
                "release_body",
                "draft",
                "prerelease",
                "make_latest",
                "target",
                "generate_release_notes",
            ),
        )
        tag = inputs.required_text("tag_name")
        name = inputs.text("release_name")
        payload: dict[str, Any] = {
            "tag_name": tag,
            "draft": inputs.boolean("draft", False),
            "prerelease": inputs.boolean("prerelease", False),
        }
        for key, field in (("release_name", "name"), ("target", "target_commitish")):
            value = inputs.text(key)
            if value is not None:
                payload[field] = value
        body = inputs.text("release_body", empty=True)
        if body is not None:
            payload["body"] = body
        if inputs.boolean("generate_release_notes", False):
            payload["generate_release_notes"] = True
        latest = _make_latest(inputs)
        if latest is not None:
            payload["make_latest"] = latest
        repo = await self._repo(call, inputs)
        created = True
        try:
            # A second POST is refused (422 already_exists) rather than duplicated.
            release = await repo.client.json(
                "POST", f"{repo.path}/releases", json=payload, idempotent=True
            )
        except GitHubAPIError as exc:
            if exc.status != 422 or "already_exists" not in " ".join(exc.errors).replace(" ", "_"):
                raise
            release = await _existing_release(repo, tag, name)
            created = False
        if not isinstance(release, dict):
            raise TaskError(f"GitHub gave no release for tag {tag!r} of {repo.full_name}")
        if created:
            logger.info("created release %s of %s", tag, repo.full_name)
        return {
            "release_id": release.get("id"),
            "url": release.get("html_url"),
            "upload_url": release.get("upload_url"),
            "tag_name": release.get("tag_name", tag),
            "name": release.get("name"),
            "draft": release.get("draft"),
            "prerelease": release.get("prerelease"),
            "created": created,
            "message": f"Successfully created release {tag}"
            if created
            else f"Release {tag} already exists",
        }

    async def create_tag(self, call: TaskCall) -> dict[str, Any]:
        """`github.create_tag`: tag `sha` as `tag`: an annotated tag (a tag object with
        `tag_message`, default the tag name, plus its ref), or with `lightweight: true` just the
        ref. A tag already pointing at `sha` is success; at another commit, a failure."""
        inputs = _Input(call, ("tag", "sha", "tag_message", "lightweight"))
        tag = inputs.required_text("tag")
        sha = inputs.sha("sha", required=True)
        assert sha is not None
        message = inputs.text("tag_message", empty=True)
        message = tag if message is None else message
        lightweight = inputs.boolean("lightweight", False)
        repo = await self._repo(call, inputs)
        ref = f"refs/tags/{tag}"

        async def existing() -> dict[str, Any] | None:
            found = await repo.ref(f"tags/{tag}")
            if found is None:
                return None
            tagged, tag_sha, text = await _tagged_commit(repo, found)
            if tagged != sha:
                raise TaskError(
                    f"tag {tag!r} already exists in {repo.full_name} at {tagged}, not at {sha}"
                )
            return _tag_result(tag, ref, sha, tag_sha, text, created=False)

        found = await existing()
        if found is not None:
            return found
        tag_sha: str | None = None
        if not lightweight:
            # A spare tag object, if this is ever sent twice, is harmless: only the ref counts.
            made = await repo.client.json(
                "POST",
                f"{repo.path}/git/tags",
                json={"tag": tag, "message": message, "object": sha, "type": "commit"},
                idempotent=True,
            )
            tag_sha = str(made.get("sha")) if isinstance(made, dict) else None
            if not tag_sha:
                raise TaskError(f"GitHub gave no tag object for {tag!r}")
        if not await _create_ref(repo, ref, tag_sha or sha):
            found = await existing()
            if found is not None:
                return found
        logger.info("tagged %s of %s as %s", sha, repo.full_name, tag)
        return _tag_result(tag, ref, sha, tag_sha, None if lightweight else message, created=True)

    async def create_branch(self, call: TaskCall) -> dict[str, Any]:
        """`github.create_branch`: `branch` at `sha`, or at the head of `branch_from` (which
        wins when both are given). A branch already at that commit is success."""
        inputs = _Input(call, ("branch", "sha", "branch_from"))
        branch = inputs.required_text("branch")
        sha = inputs.sha("sha")
        source = inputs.text("branch_from")
        if sha is None and source is None:
            raise TaskError(f"{call.name}: give `sha` or `branch_from`")
        repo = await self._repo(call, inputs)
        if source is not None:
            sha = await repo.ref_sha(f"heads/{source}")
            if sha is None:
                raise TaskError(f"branch {source!r} not found in {repo.full_name}")
        assert sha is not None
        ref = f"refs/heads/{branch}"
        current = await repo.ref_sha(f"heads/{branch}")
        created = False
        if current is None:
            created = await _create_ref(repo, ref, sha)
            current = sha if created else await repo.ref_sha(f"heads/{branch}")
        if current is None or current.lower() != sha.lower():
            raise TaskError(
                f"branch {branch!r} already exists in {repo.full_name} at {current}, not at {sha}"
            )
        if created:
            logger.info("created branch %s of %s at %s", branch, repo.full_name, sha)
        return {
            "created_branch": {"branch": branch, "branch_ref": ref, "sha": sha},
            "created": created,
            "message": f"Successfully created branch {ref}"
            if created
            else f"Branch {ref} already exists at {sha}",
        }

    async def dispatch_workflow(self, call: TaskCall) -> dict[str, Any]:
        """`github.dispatch_workflow`: start a `workflow_dispatch` workflow (file name or id) on
        `branch_or_tag` with `inputs`. With `return_run_details` (default on github.com) the
        result carries the run's id and URLs."""
        inputs = _Input(call, ("workflow", "branch_or_tag", "inputs", "return_run_details"))
        workflow = inputs.required_text("workflow")
        ref = inputs.required_text("branch_or_tag")
        workflow_inputs = inputs.mapping("inputs")
        for key, value in (workflow_inputs or {}).items():
            if not isinstance(value, str | int | float | bool):
                raise inputs.error(
                    "inputs", f"must map names to strings, numbers or booleans ({key!r})"
                )
        if workflow_inputs is not None and len(workflow_inputs) > 25:
            raise inputs.error("inputs", "may hold at most 25 entries")
        repo = await self._repo(call, inputs)
        details = inputs.boolean(
            "return_run_details", repo.client.api_url == "https://api.github.com"
        )
        payload: dict[str, Any] = {"ref": ref}
        if workflow_inputs:
            payload["inputs"] = workflow_inputs
        if details:
            payload["return_run_details"] = True
        path = f"{repo.path}/actions/workflows/{path_part(workflow)}/dispatches"
        try:
            answer = await repo.client.json("POST", path, json=payload)
        except AmbiguousRequest as exc:
            raise TaskError(
                f"{exc}: not dispatched again, to avoid running workflow {workflow!r} twice"
            ) from None
        logger.info("dispatched workflow %s of %s on %s", workflow, repo.full_name, ref)
        result: dict[str, Any] = {
            "dispatched": True,
            "workflow": workflow,
            "ref": ref,
            "message": f"Dispatched workflow {workflow} on {ref}",
        }
        if isinstance(answer, dict):
            for key in ("workflow_run_id", "run_url", "html_url"):
                if key in answer:
                    result[key] = answer[key]
        return result

    async def rest(self, call: TaskCall) -> dict[str, Any]:
        """`github.rest`: any REST route, e.g. `route: "GET /repos/{owner}/{repo}/issues"`.

        Placeholders are filled from `options`, then from the other input keys; `repo` may be
        `owner/name`, and `owner` defaults to the event's. Keys of `options` no placeholder
        uses become query parameters (GET, HEAD, DELETE) or body fields (others), as Octokit
        does; `params` and `body` give them explicitly. `headers` may set Accept and
        X-GitHub-Api-Version. Returns `{status, data}`.
        """
        values = call.input
        route = values.get("route")
        if not isinstance(route, str) or not (match := _ROUTE.fullmatch(route.strip())):
            raise TaskError(
                f'{call.name}: input `route` must look like "GET /repos/{{owner}}/{{repo}}/issues"'
            )
        method, template = match.group(1), match.group(2)
        if "?" in template or "#" in template:
            raise TaskError(f"{call.name}: put query parameters in `params`, not in `route`")
        reserved = {"route", "options", "params", "body", "headers", "integration"}
        # Any key may fill a placeholder, so none is unknown here.
        inputs = _Input(call, [str(k) for k in values])
        options = inputs.mapping("options") or {}
        params = inputs.mapping("params")
        headers = _rest_headers(inputs)
        body: Any = values.get("body")
        sources = {**{k: v for k, v in values.items() if k not in reserved}, **options}
        names = _PLACEHOLDER.findall(template)
        filled = _fill_placeholders(call, names, sources)
        path = _PLACEHOLDER.sub(lambda m: path_part(filled[m.group(1)]), template)
        leftovers = {k: v for k, v in options.items() if k not in names}
        if method in ("GET", "HEAD", "DELETE"):
            query = {**leftovers, **(params or {})}
        else:
            query = dict(params or {})
            if leftovers:
                if body is not None and not isinstance(body, Mapping):
                    raise inputs.error("body", "must be an object when `options` adds body fields")
                body = {**leftovers, **(body or {})}
        credentials = self._connections.github(call.project, call.event, inputs.text("integration"))
        owner = filled.get("owner")
        repo_name = filled.get("repo")
        client = await self.clients.for_repo(
            credentials,
            call.event,
            None if owner is None else str(owner),
            None if repo_name is None else str(repo_name),
        )
        response = await client.request(
            method,
            path,
            params={k: _query_value(v) for k, v in query.items()} or None,
            json=body,
            headers=headers,
        )
        return {"status": response.status_code, "data": _body(response)}


@dataclass(frozen=True)
class _MergeOptions:
    number: int
    title: str | None
    body: str | None
    head_sha: str | None
    method: str


def _merge_inputs(call: TaskCall) -> tuple[_Input, _MergeOptions]:
    inputs = _Input(
        call, ("pr_number", "merge_comment_title", "merge_comment_body", "head_sha", "merge_method")
    )
    method = inputs.choice("merge_method", MERGE_METHODS, "merge")
    assert method is not None
    return inputs, _MergeOptions(
        number=inputs.number("pr_number"),
        title=inputs.text("merge_comment_title"),
        body=inputs.text("merge_comment_body", empty=True),
        head_sha=inputs.sha("head_sha"),
        method=method,
    )


def _merge_result(
    repo: _Repo, options: _MergeOptions, pull: Mapping[str, Any], sha: Any, *, already: bool
) -> dict[str, Any]:
    return {
        "merged": True,
        "already_merged": already,
        "pr_number": options.number,
        "repo": repo.full_name,
        "url": pull.get("html_url"),
        "sha": sha,
        "merge_commit_sha": sha,
        "head_sha": _head_sha(pull),
        "merge_method": options.method,
        "message": f"PR {options.number} was already merged"
        if already
        else f"Merged PR {options.number}",
    }


def _finished(
    repo: _Repo, options: _MergeOptions, pull: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The result for a pull request that is already merged (at `head_sha`, when given);
    None for an open one. A merge at another head, or a closed PR, fails."""
    number, head = options.number, _head_sha(pull)
    if pull.get("merged") is True or pull.get("merged_at"):
        if options.head_sha is not None and head != options.head_sha:
            raise TaskError(
                f"pull request #{number} of {repo.full_name} was merged at head {head}, "
                f"not at head_sha {options.head_sha}"
            )
        return _merge_result(repo, options, pull, pull.get("merge_commit_sha"), already=True)
    if pull.get("state") == "closed":
        raise TaskError(f"pull request #{number} of {repo.full_name} is closed without merging")
    return None


def _check_head(repo: _Repo, options: _MergeOptions, pull: Mapping[str, Any]) -> None:
    head = _head_sha(pull)
    if options.head_sha is not None and head != options.head_sha:
        raise TaskError(
            f"not merged: the head of pull request #{options.number} of {repo.full_name} moved "
            f"to {head}; head_sha is {options.head_sha}"
        )


async def _merge(repo: _Repo, options: _MergeOptions, pull: Mapping[str, Any]) -> dict[str, Any]:
    """Merge an open pull request (or report it merged); see `GitHubTasks.merge_pr`."""
    done = _finished(repo, options, pull)
    if done is not None:
        return done
    _check_head(repo, options, pull)
    payload: dict[str, Any] = {"merge_method": options.method}
    if options.method != "rebase":  # a rebase makes no merge commit to title
        payload["commit_title"] = options.title or str(pull.get("title") or "")
        if options.body is not None:
            payload["commit_message"] = options.body
    if options.head_sha is not None:
        payload["sha"] = options.head_sha
    number = options.number
    try:
        answer = await repo.client.json("PUT", f"{repo.path}/pulls/{number}/merge", json=payload)
    except GitHubAPIError as exc:
        if exc.status not in (405, 409, 422):
            raise
        # Look again: an earlier attempt (or someone else) may have merged it meanwhile.
        now = await repo.pull(number)
        done = _finished(repo, options, now)
        if done is not None:
            return done
        if exc.status == 409 or (
            options.head_sha is not None and _head_sha(now) != options.head_sha
        ):
            raise TaskError(
                f"not merged: the head of pull request #{number} of {repo.full_name} moved "
                f"(now {_head_sha(now)}; head_sha {options.head_sha or 'not given'}): {exc.message}"
            ) from None
        if now.get("mergeable") is False or now.get("mergeable_state") == "dirty":
            raise TaskError(
                f"not merged: pull request #{number} of {repo.full_name} has conflicts with "
                f"its base branch: {exc.message}"
            ) from None
        raise TaskError(
            f"not merged: pull request #{number} of {repo.full_name} does not meet a merge "
            f"requirement: {exc.message}" + (f" ({'; '.join(exc.errors)})" if exc.errors else "")
        ) from None
    sha = answer.get("sha") if isinstance(answer, dict) else None
    logger.info("merged %s#%d (%s) as %s", repo.full_name, number, options.method, sha)
    return _merge_result(repo, options, pull, sha, already=False)


async def _open_pull(repo: _Repo, payload: Mapping[str, Any]) -> dict[str, Any]:
    # Sent twice, the second is refused ("already exists") and resolved by looking it up.
    pull = await repo.client.json("POST", f"{repo.path}/pulls", json=payload, idempotent=True)
    if not isinstance(pull, dict):
        raise TaskError(f"GitHub gave no pull request for {payload.get('head')}")
    return pull


async def _existing_pull(repo: _Repo, source: str, target: str) -> dict[str, Any]:
    pulls, _ = await repo.client.paginate(
        f"{repo.path}/pulls",
        {"state": "open", "head": f"{repo.owner}:{source}", "base": target},
        limit=10,
    )
    if not pulls or not isinstance(pulls[0], dict):
        raise TaskError(
            f"GitHub says a pull request from {source} into {target} exists in "
            f"{repo.full_name}, but lists none"
        )
    return pulls[0]


async def _create_ref(repo: _Repo, ref: str, sha: str) -> bool:
    """Create a git ref; False when it already exists (it may be at another commit)."""
    try:
        # Sent twice, the second is refused as "Reference already exists": safe to retry.
        await repo.client.json(
            "POST", f"{repo.path}/git/refs", json={"ref": ref, "sha": sha}, idempotent=True
        )
    except GitHubAPIError as exc:
        if exc.status == 422 and "already exists" in exc.message.lower():
            return False
        raise
    return True


async def _empty_commit(repo: _Repo, branch: str, title: str) -> None:
    """Put an empty commit on `branch`, so that a pull request from it has a commit."""
    head = await repo.ref_sha(f"heads/{branch}")
    if head is None:
        raise TaskError(f"branch {branch!r} not found in {repo.full_name}")
    parent = await repo.client.json("GET", f"{repo.path}/git/commits/{path_part(head)}")
    tree = parent.get("tree") if isinstance(parent, dict) else None
    if not isinstance(tree, Mapping) or not tree.get("sha"):
        raise TaskError(f"GitHub gave no tree for commit {head} of {repo.full_name}")
    commit = await repo.client.json(
        "POST",
        f"{repo.path}/git/commits",
        json={"message": f"Start {title}", "tree": tree["sha"], "parents": [head]},
        idempotent=True,  # a spare commit object that no ref points to is harmless
    )
    if not isinstance(commit, dict) or not commit.get("sha"):
        raise TaskError(f"GitHub created no commit on {branch!r}")
    await repo.client.json(
        "PATCH",
        f"{repo.path}/git/refs/{quote(f'heads/{branch}', safe='/')}",
        json={"sha": commit["sha"], "force": False},
    )


async def _existing_release(repo: _Repo, tag: str, name: str | None) -> dict[str, Any]:
    try:
        release = await repo.client.json("GET", f"{repo.path}/releases/tags/{path_part(tag)}")
    except GitHubAPIError as exc:
        if exc.status == 404:
            raise TaskError(
                f"a release of tag {tag!r} already exists in {repo.full_name} but cannot be "
                "read (a draft?)"
            ) from None
        raise
    if not isinstance(release, dict):
        raise TaskError(f"GitHub gave no release for tag {tag!r}")
    if name is not None and release.get("name") != name:
        raise TaskError(
            f"a release of tag {tag!r} already exists in {repo.full_name} with another name "
            f"({release.get('name')!r}, id {release.get('id')})"
        )
    return release


async def _tagged_commit(repo: _Repo, ref: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """(the commit a tag ref points at, its tag object's sha, its message) for an annotated
    or a lightweight tag."""
    target = ref.get("object")
    if not isinstance(target, Mapping):
        raise TaskError("GitHub gave a ref without an object")
    if target.get("type") != "tag":
        return str(target.get("sha") or "").lower(), None, None
    tag_sha = str(target.get("sha"))
    tag = await repo.client.json("GET", f"{repo.path}/git/tags/{path_part(tag_sha)}")
    tagged = tag.get("object") if isinstance(tag, dict) else None
    if not isinstance(tagged, Mapping):
        raise TaskError(f"GitHub gave no object for tag {tag_sha}")
    message = tag.get("message") if isinstance(tag, dict) else None
    return str(tagged.get("sha") or "").lower(), tag_sha, None if message is None else str(message)


def _tag_result(
    tag: str,
    ref: str,
    sha: str,
    tag_sha: str | None,
    message: str | None,
    *,
    created: bool,
) -> dict[str, Any]:
    return {
        "created_tag": {
            "tag": tag,
            "tag_ref": ref,
            "tagged_sha": sha,
            "tag_sha": tag_sha,
            "tag_message": message,
        },
        "created": created,
        "message": f"Successfully created tag {tag}" if created else f"Tag {tag} already exists",
    }


def _comment_result(
    comment: Any, identifier: str, *, created: bool, updated: bool
) -> dict[str, Any]:
    if not isinstance(comment, Mapping):
        raise TaskError("GitHub gave no comment")
    return {
        "comment_id": comment.get("id"),
        "url": comment.get("html_url"),
        "identifier": identifier,
        "created": created,
        "updated": updated,
    }


def _review_result(review: Any, identifier: str, *, created: bool, updated: bool) -> dict[str, Any]:
    if not isinstance(review, Mapping):
        raise TaskError("GitHub gave no review")
    return {
        "review_id": review.get("id"),
        "url": review.get("html_url"),
        "state": review.get("state"),
        "identifier": identifier,
        "created": created,
        "updated": updated,
    }


def _make_latest(inputs: _Input) -> str | None:
    if not inputs.present("make_latest"):
        return None
    if inputs.raw("make_latest") == "legacy":
        return "legacy"
    return "true" if inputs.boolean("make_latest", True) else "false"


def _rest_headers(inputs: _Input) -> dict[str, str] | None:
    headers = inputs.mapping("headers")
    if headers is None:
        return None
    refused = sorted(k for k in headers if k.lower() not in REST_HEADERS)
    if refused:
        raise inputs.error(
            "headers",
            f"may only set {', '.join(sorted(REST_HEADERS))} (not {', '.join(refused)})",
        )
    if not all(isinstance(v, str) for v in headers.values()):
        raise inputs.error("headers", "values must be strings")
    return {str(k): str(v) for k, v in headers.items()}


def _fill_placeholders(
    call: TaskCall, names: Sequence[str], sources: Mapping[str, Any]
) -> dict[str, Any]:
    """A value for each placeholder of a `github.rest` route, from `sources` (an `owner/name`
    repo splits in two) or, for `owner`, the event."""
    filled: dict[str, Any] = {}
    repo = sources.get("repo")
    if isinstance(repo, str) and "/" in repo:
        owner, name = resolve_repo(repo, call.event, call.name)
        filled["repo"] = name
        if "owner" not in sources:
            filled["owner"] = owner
    for name in names:
        if name in filled:
            continue
        value = sources.get(name)
        if value is None and name == "owner":
            value = event_owner(call.event)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TaskError(f"{call.name}: `{name}` must be a string or an integer")
        filled[name] = value
    missing = [name for name in names if name not in filled]
    if missing:
        raise TaskError(
            f"{call.name}: no value for {', '.join(f'{{{n}}}' for n in missing)} in the route: "
            "give it as an input key or in `options`"
        )
    return filled


def _query_value(value: Any) -> Any:
    # Query strings have no booleans: GitHub reads "true"/"false".
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(_query_value(v)) for v in value)
    return value


def _body(response: httpx.Response) -> Any:
    data = response_json(response)
    if data is None and response.content:
        return response.text
    return data

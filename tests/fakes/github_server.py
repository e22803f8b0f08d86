"""A stateful fake of the parts of the GitHub REST and GraphQL APIs the `github.*` tasks use.

It serves real HTTP (aiohttp on 127.0.0.1) so that handlers are tested on the wire:

* routes are the operations of ``tests/fixtures/github-openapi/operations.json`` (GitHub's own
  OpenAPI description), matched by their path templates, plus the GraphQL endpoint;
* every request is recorded (method, path, query, headers, JSON body) and checked against the
  operation's parameter and request body schemas, strictly: a field the description does not
  declare is an error too, because GitHub silently ignores it. Violations are answered with 422
  and collected in ``schema_errors``;
* state: repositories with refs, commits, tag objects, pull requests (merge state, mergeability,
  failing requirements, auto-merge), comments, reviews, labels, releases, issues and workflow
  dispatches; lists are paginated with ``Link`` headers;
* auth: plain tokens, or GitHub App installation tokens minted from a JWT the fake verifies with
  the App's public key (counted in ``mints``; they expire and can be revoked);
* failure injection: queued replies per method and path (5xx bursts, 429/403 with
  ``Retry-After``, secondary limits, ``X-RateLimit-Reset``, slow replies for timeouts).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import jsonschema
import jwt
from aiohttp import web
from yarl import URL

OPERATIONS_FILE = (
    Path(__file__).resolve().parent.parent / "fixtures" / "github-openapi" / "operations.json"
)
HTML = "https://github.example"


Params = dict[str, str]
Answer = tuple[int, Any, dict[str, str]]


def load_operations() -> dict[str, Any]:
    """The committed OpenAPI slices, by operation id."""
    document = json.loads(OPERATIONS_FILE.read_text(encoding="utf-8"))
    operations: dict[str, Any] = document["operations"]
    return operations


def strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever an object lists its properties
    and says nothing about others: GitHub ignores unknown fields, so a misspelt one would pass."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        out["additionalProperties"] = False
    return out


def sha_of(*parts: Any) -> str:
    """A deterministic 40-hex object id."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def now_iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str  # without the API prefix, percent-decoding left to the reader
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    operation: str | None
    url: URL = field(repr=False, default_factory=URL)
    errors: list[str] = field(default_factory=list)


@dataclass
class Reply:
    """An injected response; `delay` seconds pass before it is sent. With `handled`, the
    request takes effect first, as if GitHub did the work but the answer was lost."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    handled: bool = False  # handle the request normally first: the answer "got lost"


@dataclass
class PullRequest:
    number: int
    title: str
    head_ref: str
    head_sha: str
    base_ref: str
    body: str | None = None
    state: str = "open"
    merged: bool = False
    merge_commit_sha: str | None = None
    mergeable: bool | None = True
    mergeable_state: str = "clean"
    blocked_reason: str | None = None  # a failing requirement: merging answers 405 with it
    draft: bool = False
    labels: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    commits: list[dict[str, Any]] = field(default_factory=list)
    auto_merge: dict[str, Any] | None = None

    @property
    def node_id(self) -> str:
        return f"PR_node_{self.number}"


@dataclass
class Repo:
    owner: str
    name: str
    default_branch: str = "main"
    allow_auto_merge: bool = True
    merge_methods: set[str] = field(default_factory=lambda: {"merge", "squash", "rebase"})
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/main" -> sha
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)
    tag_objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    pulls: dict[int, PullRequest] = field(default_factory=dict)
    comments: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)
    workflows: set[str] = field(default_factory=lambda: {"ci.yml", "42"})
    dispatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def commit(self, message: str, parents: Iterable[str] = ()) -> str:
        """Add a commit object; returns its sha."""
        parents = list(parents)
        sha = sha_of(self.full_name, message, parents)
        self.commits[sha] = {"tree": sha_of("tree", sha), "parents": parents, "message": message}
        return sha

    def branch(self, name: str, sha: str | None = None) -> str:
        """Point `refs/heads/name` at `sha` (a new commit when None); returns the sha."""
        sha = sha or self.commit(f"head of {name}")
        self.refs[f"refs/heads/{name}"] = sha
        return sha

    def ancestors(self, sha: str) -> set[str]:
        seen: set[str] = set()
        todo = [sha]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(self.commits.get(current, {}).get("parents", []))
        return seen


@dataclass
class App:
    """A GitHub App: its id, public key, and the accounts it is installed on."""

    app_id: str
    public_key: bytes
    installations: dict[int, str]  # installation id -> account login
    token_lifetime: float = 3600.0


class _Problem(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _not_found() -> _Problem:
    return _Problem(404, {"message": "Not Found"})


def _validation(summary: str, **error: Any) -> _Problem:
    errors = [error] if error else []
    return _Problem(422, {"message": summary, "errors": errors})


class FakeGitHub:
    """The fake API. `await start()` returns its base URL (`prefix` included, e.g. "/api/v3"
    to look like GitHub Enterprise Server, whose GraphQL endpoint is then "/api/graphql")."""

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (),
        app: App | None = None,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = set(tokens)
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.graphql_path = "/api/graphql" if self.prefix == "/api/v3" else "/graphql"
        self.clock = clock
        self.operations = load_operations()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Recorded] = []
        self.schema_errors: list[str] = []
        self.mints: list[int] = []
        self.installation_tokens: dict[str, tuple[int, float]] = {}
        self._injected: list[tuple[str, re.Pattern[str], deque[Reply]]] = []
        self._ids = itertools.count(1001)
        self._routes = self._compile_routes()
        self._validators = {
            name: jsonschema.Draft202012Validator(strict(op["requestBody"]["schema"]))
            for name, op in self.operations.items()
            if op["requestBody"] is not None
        }
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- set-up ---------------------------------------------------------------------------------

    def add_repo(self, owner: str, name: str, **options: Any) -> Repo:
        repo = Repo(owner, name, **options)
        repo.branch(repo.default_branch)
        self.repos[(owner.lower(), name.lower())] = repo
        return repo

    def add_pull(
        self, repo: Repo, number: int, *, head_ref: str = "", head_sha: str = "", **options: Any
    ) -> PullRequest:
        """A pull request from a new branch with one commit (`head_sha`, when given)."""
        head_ref = head_ref or f"feature-{number}"
        base_sha = repo.refs[f"refs/heads/{repo.default_branch}"]
        if head_sha:
            repo.commits[head_sha] = {
                "tree": sha_of("tree", head_sha),
                "parents": [base_sha],
                "message": "work",
            }
        else:
            head_sha = repo.commit(f"work on #{number}", [base_sha])
        repo.refs[f"refs/heads/{head_ref}"] = head_sha
        options.setdefault("title", f"Pull request {number}")
        pull = PullRequest(
            number=number,
            head_ref=head_ref,
            head_sha=head_sha,
            base_ref=repo.default_branch,
            **options,
        )
        repo.pulls[number] = pull
        return pull

    def push(self, repo: Repo, pull: PullRequest) -> str:
        """A new commit on the pull request's head (the head moves)."""
        pull.head_sha = repo.commit(f"more on #{pull.number}", [pull.head_sha])
        repo.refs[f"refs/heads/{pull.head_ref}"] = pull.head_sha
        return pull.head_sha

    def inject(self, method: str, path: str, *replies: Reply) -> None:
        """Answer the next requests matching `method` and the regex `path` (full match, on the
        path without prefix) with `replies`, in order, before any normal handling."""
        self._injected.append((method.upper(), re.compile(path), deque(replies)))

    def revoke_tokens(self) -> None:
        """Invalidate every installation token minted so far (GitHub answers 401)."""
        self.installation_tokens.clear()

    def received(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """The recorded requests with this method and matching this path regex."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path is None or re.fullmatch(path, r.path))
        ]

    # -- serving ----------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}{self.prefix}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeGitHub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _compile_routes(self) -> list[tuple[str, str, list[str]]]:
        routes = [
            (name, op["method"], op["path"].strip("/").split("/"))
            for name, op in self.operations.items()
        ]
        # Literal segments win over placeholders (".../issues/comments/{id}").
        routes.sort(key=lambda r: -sum(not s.startswith("{") for s in r[2]))
        return routes

    def _match(self, method: str, raw_path: str) -> tuple[str, dict[str, str]] | None:
        segments = raw_path.strip("/").split("/")
        for name, op_method, template in self._routes:
            if op_method != method:
                continue
            greedy = template[-1] == "{ref}"  # git refs span segments: heads/feature/x
            if len(segments) != len(template) and not (greedy and len(segments) > len(template)):
                continue
            values: dict[str, str] = {}
            for index, part in enumerate(template):
                if part.startswith("{"):
                    last = greedy and index == len(template) - 1
                    raw = "/".join(segments[index:]) if last else segments[index]
                    values[part[1:-1]] = unquote(raw)
                elif part != segments[index]:
                    break
            else:
                return name, values
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        text = await request.text()
        body: Any = None
        body_error = None
        if text:
            try:
                body = json.loads(text)
            except ValueError:
                body, body_error = text, "Problems parsing JSON"
        is_graphql = raw_path == self.graphql_path and request.method == "POST"
        path = raw_path[len(self.prefix) :] if raw_path.startswith(self.prefix) else raw_path
        matched = None if is_graphql else self._match(request.method, path)
        operation = "graphql" if is_graphql else (matched[0] if matched else None)
        record = Recorded(
            method=request.method,
            path=path if not is_graphql else raw_path,
            query=dict(parse_qsl(request.query_string, keep_blank_values=True)),
            headers=dict(request.headers),
            body=body,
            operation=operation,
            url=request.url,
        )
        self.requests.append(record)
        if matched is not None:
            record.errors = self._check(matched[0], matched[1], record)
        elif is_graphql:
            record.errors = _check_graphql(body)
        else:
            record.errors = [f"{request.method} {path} is not an operation of the description"]
        self.schema_errors.extend(f"{operation}: {e}" for e in record.errors)

        for method, pattern, replies in self._injected:
            if replies and method == request.method and pattern.fullmatch(record.path):
                reply = replies.popleft()
                if reply.handled:
                    await self._answer(request, matched, record, body_error)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                return _respond(reply.status, reply.body, reply.headers)
        return await self._answer(request, matched, record, body_error)

    async def _answer(
        self,
        request: web.Request,
        matched: tuple[str, dict[str, str]] | None,
        record: Recorded,
        body_error: str | None,
    ) -> web.Response:
        is_graphql = record.operation == "graphql"
        body = record.body
        try:
            if body_error is not None:
                raise _Problem(400, {"message": body_error})
            if matched is None and not is_graphql:
                raise _not_found()
            if record.errors:
                raise _Problem(422, {"message": "Invalid request.\n\n" + "\n".join(record.errors)})
            if is_graphql:
                installation = self._authorize(request, None)
                return _respond(200, self._graphql(body, installation), {})
            name, params = matched  # type: ignore[misc]
            if name.startswith("apps/"):
                self._authorize_app(request)
            else:
                self._authorize(request, params.get("owner"))
            handler = getattr(self, "_op_" + re.sub(r"[/-]", "_", name))
            status, answer, headers = handler(params, record)
            return _respond(status, answer, headers)
        except _Problem as problem:
            return _respond(problem.status, problem.body, problem.headers)

    def _check(self, name: str, params: dict[str, str], record: Recorded) -> list[str]:
        """Schema violations of a request (path and query parameters, JSON body)."""
        operation = self.operations[name]
        errors: list[str] = []
        declared = {p["name"]: p for p in operation["parameters"]}
        for parameter in operation["parameters"]:
            where = parameter["in"]
            source = params if where == "path" else record.query
            if parameter["name"] not in source:
                if parameter["required"]:
                    errors.append(f"{where} parameter {parameter['name']!r} missing")
                continue
            value = _coerce(source[parameter["name"]], parameter["schema"])
            for error in jsonschema.Draft202012Validator(parameter["schema"]).iter_errors(value):
                errors.append(f"{where} parameter {parameter['name']!r}: {error.message}")
        for key in record.query:
            if key not in declared or declared[key]["in"] != "query":
                errors.append(f"query parameter {key!r} is not declared")
        body = operation["requestBody"]
        if body is None:
            if record.body is not None:
                errors.append("the operation takes no request body")
        elif record.body is None:
            if body["required"]:
                errors.append("request body missing")
        else:
            for error in self._validators[name].iter_errors(record.body):
                location = "/".join(str(p) for p in error.absolute_path) or "body"
                errors.append(f"{location}: {error.message}")
        return errors

    # -- auth -------------------------------------------------------------------------------------

    def _bearer(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token:
            raise _Problem(401, {"message": "Requires authentication"})
        return token

    def _authorize(self, request: web.Request, owner: str | None) -> int | None:
        """The installation a token acts for (None for a plain token); 401/404 otherwise."""
        token = self._bearer(request)
        if token in self.tokens:
            return None
        minted = self.installation_tokens.get(token)
        if minted is None or minted[1] <= self.clock():
            raise _Problem(401, {"message": "Bad credentials"})
        installation = minted[0]
        assert self.app is not None
        account = self.app.installations.get(installation, "")
        if owner is not None and owner.lower() != account.lower():
            raise _not_found()  # what GitHub answers for a repository the token cannot see
        return installation

    def _authorize_app(self, request: web.Request) -> None:
        token = self._bearer(request)
        if self.app is None:
            raise _Problem(401, {"message": "A JSON web token could not be decoded"})
        try:
            claims = jwt.decode(
                token,
                self.app.public_key,
                algorithms=["RS256"],
                # Times are checked below against the fake's clock, not the machine's.
                options={
                    "require": ["iat", "exp", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError:
            raise _Problem(401, {"message": "A JSON web token could not be decoded"}) from None
        now = self.clock()
        if not claims["iat"] <= now < claims["exp"] or claims["exp"] - claims["iat"] > 600:
            raise _Problem(401, {"message": "'Expiration time' claim ('exp') is invalid"})
        if str(claims["iss"]) != self.app.app_id:
            raise _Problem(401, {"message": "'Issuer' claim ('iss') must be the app id"})

    # -- repositories, pull requests --------------------------------------------------------------

    def _repo(self, params: dict[str, str]) -> Repo:
        repo = self.repos.get((params["owner"].lower(), params["repo"].lower()))
        if repo is None:
            raise _not_found()
        return repo

    def _pull(self, repo: Repo, number: str) -> PullRequest:
        pull = repo.pulls.get(int(number))
        if pull is None:
            raise _not_found()
        return pull

    def _pull_json(self, repo: Repo, pull: PullRequest) -> dict[str, Any]:
        return {
            "url": f"{self.url}/repos/{repo.full_name}/pulls/{pull.number}",
            "id": 5000 + pull.number,
            "node_id": pull.node_id,
            "html_url": f"{HTML}/{repo.full_name}/pull/{pull.number}",
            "number": pull.number,
            "state": pull.state,
            "title": pull.title,
            "body": pull.body,
            "draft": pull.draft,
            "merged": pull.merged,
            "merged_at": now_iso(self.clock()) if pull.merged else None,
            "merge_commit_sha": pull.merge_commit_sha,
            "mergeable": pull.mergeable,
            "mergeable_state": pull.mergeable_state,
            "auto_merge": pull.auto_merge,
            "labels": [{"name": name} for name in pull.labels],
            "user": {"login": "octocat"},
            "head": {
                "ref": pull.head_ref,
                "sha": pull.head_sha,
                "label": f"{repo.owner}:{pull.head_ref}",
            },
            "base": {
                "ref": pull.base_ref,
                "sha": repo.refs.get(f"refs/heads/{pull.base_ref}"),
                "label": f"{repo.owner}:{pull.base_ref}",
            },
        }

    def _op_repos_get(self, params: Params, _: Recorded) -> Answer:
        repo = self._repo(params)
        return (
            200,
            {
                "name": repo.name,
                "full_name": repo.full_name,
                "owner": {"login": repo.owner},
                "default_branch": repo.default_branch,
                "allow_auto_merge": repo.allow_auto_merge,
            },
            {},
        )

    def _op_pulls_get(self, params: Params, _: Recorded) -> Answer:
        repo = self._repo(params)
        return 200, self._pull_json(repo, self._pull(repo, params["pull_number"])), {}

    def _op_pulls_list(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        state = rec.query.get("state", "open")
        pulls = [
            self._pull_json(repo, p)
            for p in sorted(repo.pulls.values(), key=lambda p: -p.number)
            if (state == "all" or p.state == state)
            and ("head" not in rec.query or rec.query["head"] == f"{repo.owner}:{p.head_ref}")
            and ("base" not in rec.query or rec.query["base"] == p.base_ref)
        ]
        return self._page(rec, pulls)

    def _op_pulls_create(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        head, base = rec.body["head"], rec.body["base"]
        head_sha = repo.refs.get(f"refs/heads/{head}")
        base_sha = repo.refs.get(f"refs/heads/{base}")
        if head_sha is None:
            raise _validation(
                "Validation Failed", resource="PullRequest", field="head", code="invalid"
            )
        if base_sha is None:
            raise _validation(
                "Validation Failed", resource="PullRequest", field="base", code="invalid"
            )
        for pull in repo.pulls.values():
            if pull.state == "open" and pull.head_ref == head and pull.base_ref == base:
                raise _validation(
                    "Validation Failed",
                    resource="PullRequest",
                    code="custom",
                    message=f"A pull request already exists for {repo.owner}:{head}.",
                )
        if head_sha in repo.ancestors(base_sha):
            raise _validation(
                "Validation Failed",
                resource="PullRequest",
                code="custom",
                message=f"No commits between {base} and {head}",
            )
        number = max(repo.pulls, default=0) + 1
        pull = PullRequest(
            number=number,
            title=rec.body.get("title", ""),
            body=rec.body.get("body"),
            head_ref=head,
            head_sha=head_sha,
            base_ref=base,
            draft=bool(rec.body.get("draft", False)),
        )
        repo.pulls[number] = pull
        return 201, self._pull_json(repo, pull), {}

    def _op_pulls_merge(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        pull = self._pull(repo, params["pull_number"])
        body = rec.body or {}
        if pull.merged or pull.state != "open":
            raise _Problem(405, {"message": "Pull Request is not mergeable"})
        if "sha" in body and body["sha"] != pull.head_sha:
            raise _Problem(
                409, {"message": "Head branch was modified. Review and try the merge again."}
            )
        method = body.get("merge_method", "merge")
        if method not in repo.merge_methods:
            raise _Problem(
                405,
                {"message": f"{method.capitalize()} merges are not allowed on this repository."},
            )
        if pull.mergeable is False:
            raise _Problem(405, {"message": "Pull Request is not mergeable"})
        if pull.blocked_reason:
            raise _Problem(405, {"message": pull.blocked_reason})
        base_sha = repo.refs[f"refs/heads/{pull.base_ref}"]
        merge_sha = repo.commit(body.get("commit_title", "merge"), [base_sha, pull.head_sha])
        repo.refs[f"refs/heads/{pull.base_ref}"] = merge_sha
        pull.merged, pull.state, pull.merge_commit_sha = True, "closed", merge_sha
        pull.mergeable_state = "unknown"
        return (
            200,
            {"sha": merge_sha, "merged": True, "message": "Pull Request successfully merged"},
            {},
        )

    def _op_pulls_list_files(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        return self._page(rec, self._pull(repo, params["pull_number"]).files)

    def _op_pulls_list_commits(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        return self._page(rec, self._pull(repo, params["pull_number"]).commits)

    # -- reviews, comments, labels ----------------------------------------------------------------

    def _review_json(self, repo: Repo, review: dict[str, Any]) -> dict[str, Any]:
        return {
            **review,
            "html_url": f"{HTML}/{repo.full_name}/pull/{review['pull_number']}"
            f"#pullrequestreview-{review['id']}",
        }

    def _op_pulls_list_reviews(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        number = self._pull(repo, params["pull_number"]).number
        reviews = [self._review_json(repo, r) for r in repo.reviews if r["pull_number"] == number]
        return self._page(rec, reviews)

    def _op_pulls_create_review(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        pull = self._pull(repo, params["pull_number"])
        event = rec.body.get("event")
        if event in ("REQUEST_CHANGES", "COMMENT") and not rec.body.get("body"):
            raise _validation(
                "Unprocessable Entity", message=f"Review Can not {event.lower()} without a body"
            )
        state = {
            "APPROVE": "APPROVED",
            "REQUEST_CHANGES": "CHANGES_REQUESTED",
            "COMMENT": "COMMENTED",
        }
        review = {
            "id": next(self._ids),
            "pull_number": pull.number,
            "body": rec.body.get("body", ""),
            "state": state.get(event or "", "PENDING"),
            "commit_id": rec.body.get("commit_id", pull.head_sha),
            "user": {"login": "hiphops[bot]"},
        }
        repo.reviews.append(review)
        return 200, self._review_json(repo, review), {}

    def _op_pulls_update_review(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        for review in repo.reviews:
            if review["id"] == int(params["review_id"]):
                review["body"] = rec.body["body"]
                return 200, self._review_json(repo, review), {}
        raise _not_found()

    def _comment_json(self, repo: Repo, comment: dict[str, Any]) -> dict[str, Any]:
        return {
            **comment,
            "html_url": f"{HTML}/{repo.full_name}/pull/{comment['issue_number']}"
            f"#issuecomment-{comment['id']}",
        }

    def _op_issues_list_comments(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        number = int(params["issue_number"])
        comments = [
            self._comment_json(repo, c) for c in repo.comments if c["issue_number"] == number
        ]
        return self._page(rec, comments)

    def _op_issues_create_comment(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        self._pull(repo, params["issue_number"])
        comment = {
            "id": next(self._ids),
            "issue_number": int(params["issue_number"]),
            "body": rec.body["body"],
            "user": {"login": "hiphops[bot]"},
        }
        repo.comments.append(comment)
        return 201, self._comment_json(repo, comment), {}

    def _op_issues_update_comment(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        for comment in repo.comments:
            if comment["id"] == int(params["comment_id"]):
                comment["body"] = rec.body["body"]
                return 200, self._comment_json(repo, comment), {}
        raise _not_found()

    def _labels(self, pull: PullRequest) -> list[dict[str, Any]]:
        return [{"name": name, "color": "ededed"} for name in pull.labels]

    def _op_issues_list_labels_on_issue(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        return self._page(rec, self._labels(self._pull(repo, params["issue_number"])))

    def _op_issues_add_labels(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        pull = self._pull(repo, params["issue_number"])
        for label in rec.body["labels"]:
            name = label if isinstance(label, str) else label["name"]
            if name.casefold() not in {n.casefold() for n in pull.labels}:
                pull.labels.append(name)
        return 200, self._labels(pull), {}

    def _op_issues_remove_label(self, params: Params, _: Recorded) -> Answer:
        repo = self._repo(params)
        pull = self._pull(repo, params["issue_number"])
        if params["name"] not in pull.labels:
            raise _Problem(404, {"message": "Label does not exist"})
        pull.labels.remove(params["name"])
        return 200, self._labels(pull), {}

    # -- git data ---------------------------------------------------------------------------------

    def _ref_json(self, repo: Repo, ref: str) -> dict[str, Any]:
        sha = repo.refs[ref]
        kind = "tag" if sha in repo.tag_objects else "commit"
        return {
            "ref": ref,
            "url": f"{self.url}/repos/{repo.full_name}/git/{ref}",
            "object": {"sha": sha, "type": kind},
        }

    def _op_git_get_ref(self, params: Params, _: Recorded) -> Answer:
        repo = self._repo(params)
        ref = "refs/" + params["ref"]
        if ref not in repo.refs:
            raise _not_found()
        return 200, self._ref_json(repo, ref), {}

    def _op_git_create_ref(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        ref, sha = rec.body["ref"], rec.body["sha"]
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise _validation(
                "Reference name must start with 'refs/' and have at least two slashes."
            )
        if ref in repo.refs:
            raise _validation("Reference already exists")
        if sha not in repo.commits and sha not in repo.tag_objects:
            raise _validation("Object does not exist")
        repo.refs[ref] = sha
        return 201, self._ref_json(repo, ref), {}

    def _op_git_update_ref(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        ref = "refs/" + params["ref"]
        if ref not in repo.refs:
            raise _validation("Reference does not exist")
        sha = rec.body["sha"]
        if sha not in repo.commits:
            raise _validation("Object does not exist")
        if not rec.body.get("force") and repo.refs[ref] not in repo.ancestors(sha):
            raise _validation("Update is not a fast forward")
        repo.refs[ref] = sha
        return 200, self._ref_json(repo, ref), {}

    def _op_git_get_commit(self, params: Params, _: Recorded) -> Answer:
        repo = self._repo(params)
        commit = repo.commits.get(params["commit_sha"])
        if commit is None:
            raise _not_found()
        return (
            200,
            {
                "sha": params["commit_sha"],
                "message": commit["message"],
                "tree": {"sha": commit["tree"]},
                "parents": [{"sha": p} for p in commit["parents"]],
            },
            {},
        )

    def _op_git_create_commit(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        parents = rec.body.get("parents", [])
        if any(p not in repo.commits for p in parents):
            raise _validation("Parent SHA does not exist or is not a commit object")
        sha = sha_of(repo.full_name, rec.body["message"], rec.body["tree"], parents)
        repo.commits[sha] = {
            "tree": rec.body["tree"],
            "parents": parents,
            "message": rec.body["message"],
        }
        return (
            201,
            {
                "sha": sha,
                "tree": {"sha": rec.body["tree"]},
                "parents": [{"sha": p} for p in parents],
                "message": rec.body["message"],
            },
            {},
        )

    def _op_git_create_tag(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        if rec.body["object"] not in repo.commits:
            raise _validation("Object does not exist")
        sha = sha_of("tag", repo.full_name, rec.body, next(self._ids))
        tag = {
            "sha": sha,
            "tag": rec.body["tag"],
            "message": rec.body["message"],
            "object": {"sha": rec.body["object"], "type": rec.body["type"]},
        }
        repo.tag_objects[sha] = tag
        return 201, tag, {}

    def _op_git_get_tag(self, params: Params, _: Recorded) -> Answer:
        repo = self._repo(params)
        tag = repo.tag_objects.get(params["tag_sha"])
        if tag is None:
            raise _not_found()
        return 200, tag, {}

    # -- releases, workflows, issues --------------------------------------------------------------

    def _release_json(self, repo: Repo, release: dict[str, Any]) -> dict[str, Any]:
        return {
            **release,
            "html_url": f"{HTML}/{repo.full_name}/releases/tag/{release['tag_name']}",
            "upload_url": f"https://uploads.github.example/repos/{repo.full_name}"
            f"/releases/{release['id']}/assets{{?name,label}}",
        }

    def _op_repos_create_release(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        tag = rec.body["tag_name"]
        if any(r["tag_name"] == tag for r in repo.releases):
            raise _validation(
                "Validation Failed", resource="Release", code="already_exists", field="tag_name"
            )
        if f"refs/tags/{tag}" not in repo.refs:
            target = rec.body.get("target_commitish", repo.default_branch)
            sha = repo.refs.get(f"refs/heads/{target}", target)
            if sha not in repo.commits:
                raise _validation(
                    "Validation Failed",
                    resource="Release",
                    code="invalid",
                    field="target_commitish",
                )
            repo.refs[f"refs/tags/{tag}"] = sha
        release = {
            "id": next(self._ids),
            "tag_name": tag,
            "name": rec.body.get("name", tag),
            "body": rec.body.get("body"),
            "draft": rec.body.get("draft", False),
            "prerelease": rec.body.get("prerelease", False),
            "target_commitish": rec.body.get("target_commitish", repo.default_branch),
        }
        repo.releases.append(release)
        return 201, self._release_json(repo, release), {}

    def _op_repos_get_release_by_tag(self, params: Params, _: Recorded) -> Answer:
        repo = self._repo(params)
        for release in repo.releases:
            if release["tag_name"] == params["tag"] and not release["draft"]:
                return 200, self._release_json(repo, release), {}
        raise _not_found()

    def _op_actions_create_workflow_dispatch(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        if params["workflow_id"] not in repo.workflows:
            raise _not_found()
        ref = rec.body["ref"]
        if not any(f"refs/{kind}/{ref}" in repo.refs for kind in ("heads", "tags")):
            raise _validation(f"No ref found for: {ref}")
        run_id = next(self._ids)
        repo.dispatches.append({"workflow": params["workflow_id"], **rec.body, "run_id": run_id})
        if rec.body.get("return_run_details"):
            return (
                200,
                {
                    "workflow_run_id": run_id,
                    "run_url": f"{self.url}/repos/{repo.full_name}/actions/runs/{run_id}",
                    "html_url": f"{HTML}/{repo.full_name}/actions/runs/{run_id}",
                },
                {},
            )
        return 204, None, {}

    def _op_issues_list_for_repo(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        state = rec.query.get("state", "open")
        issues = [i for i in repo.issues if state == "all" or i["state"] == state]
        return self._page(rec, issues)

    def _op_issues_create(self, params: Params, rec: Recorded) -> Answer:
        repo = self._repo(params)
        issue = {
            "number": len(repo.issues) + 1,
            "title": rec.body["title"],
            "body": rec.body.get("body"),
            "state": "open",
        }
        repo.issues.append(issue)
        return 201, issue, {}

    # -- GitHub App -------------------------------------------------------------------------------

    def _op_apps_get_repo_installation(self, params: Params, _: Recorded) -> Answer:
        assert self.app is not None
        self._repo(params)
        for installation, account in self.app.installations.items():
            if account.lower() == params["owner"].lower():
                return (
                    200,
                    {
                        "id": installation,
                        "account": {"login": account},
                        "app_id": int(self.app.app_id),
                    },
                    {},
                )
        raise _not_found()

    def _op_apps_create_installation_access_token(self, params: Params, _: Recorded) -> Answer:
        assert self.app is not None
        installation = int(params["installation_id"])
        if installation not in self.app.installations:
            raise _not_found()
        self.mints.append(installation)
        token = "ghs_" + secrets.token_hex(16)
        expires = self.clock() + self.app.token_lifetime
        self.installation_tokens[token] = (installation, expires)
        return (
            201,
            {
                "token": token,
                "expires_at": now_iso(expires),
                "permissions": {"pull_requests": "write"},
            },
            {},
        )

    # -- GraphQL ----------------------------------------------------------------------------------

    def _graphql(self, body: dict[str, Any], installation: int | None) -> dict[str, Any]:
        variables = body["variables"]
        for repo in self.repos.values():
            for pull in repo.pulls.values():
                if pull.node_id != variables["pullRequestId"]:
                    continue
                if installation is not None:
                    assert self.app is not None
                    if self.app.installations[installation].lower() != repo.owner.lower():
                        break
                problem = None
                if not repo.allow_auto_merge:
                    problem = "Pull request Auto merge is not allowed for this repository"
                elif pull.mergeable_state == "clean":
                    problem = "Pull request Pull request is in clean status"
                elif variables.get("expectedHeadOid", pull.head_sha) != pull.head_sha:
                    problem = "Pull request head sha doesn't match expectedHeadOid"
                if problem is not None:
                    return {
                        "data": {"enablePullRequestAutoMerge": None},
                        "errors": [{"type": "UNPROCESSABLE", "message": problem}],
                    }
                pull.auto_merge = {
                    "merge_method": variables["mergeMethod"].lower(),
                    "commit_title": variables.get("commitHeadline"),
                    "commit_message": variables.get("commitBody"),
                }
                return {
                    "data": {
                        "enablePullRequestAutoMerge": {
                            "pullRequest": {
                                "number": pull.number,
                                "autoMergeRequest": {
                                    "enabledAt": now_iso(self.clock()),
                                    "mergeMethod": variables["mergeMethod"],
                                },
                            }
                        }
                    }
                }
        return {
            "data": None,
            "errors": [
                {"type": "NOT_FOUND", "message": "Could not resolve to a node with the global id"}
            ],
        }

    # -- pagination -------------------------------------------------------------------------------

    def _page(self, rec: Recorded, items: list[Any]) -> Answer:
        per_page = int(rec.query.get("per_page", "30"))
        page = int(rec.query.get("page", "1"))
        start = (page - 1) * per_page
        chunk = items[start : start + per_page]
        links = []
        last = max(1, -(-len(items) // per_page))
        if page < last:
            links.append(f'<{rec.url.update_query(page=page + 1)}>; rel="next"')
            links.append(f'<{rec.url.update_query(page=last)}>; rel="last"')
        if page > 1:
            links.append(f'<{rec.url.update_query(page=page - 1)}>; rel="prev"')
        return 200, chunk, {"Link": ", ".join(links)} if links else {}


_GRAPHQL_VARIABLES = {
    "pullRequestId": {"type": "string"},
    "mergeMethod": {"enum": ["MERGE", "SQUASH", "REBASE"]},
    "commitHeadline": {"type": "string"},
    "commitBody": {"type": "string"},
    "expectedHeadOid": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
}
_GRAPHQL_SCHEMA = {
    "type": "object",
    "required": ["query", "variables"],
    "additionalProperties": False,
    "properties": {
        "query": {"type": "string", "pattern": "enablePullRequestAutoMerge"},
        "variables": {
            "type": "object",
            "required": ["pullRequestId", "mergeMethod"],
            "additionalProperties": False,
            "properties": _GRAPHQL_VARIABLES,
        },
    },
}


def _check_graphql(body: Any) -> list[str]:
    """The auto-merge mutation is the only GraphQL the handlers send; its input types
    (PullRequestMergeMethod, GitObjectID) are checked as GitHub's schema declares them."""
    validator = jsonschema.Draft202012Validator(_GRAPHQL_SCHEMA)
    errors = [e.message for e in validator.iter_errors(body)]
    if not errors:
        # Every variable the mutation declares must be one it uses, and the reverse.
        for name in _GRAPHQL_VARIABLES:
            if f"${name}" not in body["query"]:
                errors.append(f"the mutation does not declare ${name}")
    return errors


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    """A path or query string as the type its schema wants, when it reads as one."""
    kinds = {schema.get("type")} | {s.get("type") for s in schema.get("oneOf", [])}
    if "integer" in kinds and re.fullmatch(r"-?\d+", value):
        return int(value)
    if "boolean" in kinds and value in ("true", "false"):
        return value == "true"
    return value


def _respond(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    if status == 204 or body is None:
        return web.Response(status=status, headers=headers)
    return web.json_response(body, status=status, headers=headers)

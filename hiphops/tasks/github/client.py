"""GitHub API access for the `github.*` handlers.

`GitHubClients` hands out a `GitHubClient` for a repository: authenticated with a plain token, or
as a GitHub App installation (app id + private key -> RS256 JWT -> installation access token,
minted per installation and cached until shortly before it expires). Each set of credentials
shares one `httpx.AsyncClient` (per event loop). Every request goes through the retry policy
(`hiphops.tasks.retry`): transient failures are retried, others become a `TaskError` carrying
GitHub's message. No token, JWT or key ever appears in an error or a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx
import jwt

from hiphops.tasks.connections import GitHubCredentials
from hiphops.tasks.registry import TaskError
from hiphops.tasks.retry import RetriesExhausted, RetryLater, RetryPolicy, classify_http

logger = logging.getLogger("hiphops.tasks.github")

API_VERSION: Final = "2022-11-28"
USER_AGENT: Final = "hiphops-k8s"
DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)
#: An installation token is replaced this long before GitHub says it expires (tokens live an
#: hour), so that a request never starts with a token about to lapse.
TOKEN_REFRESH_MARGIN: Final = 300.0
#: Methods whose repetition has the effect of doing them once: safe to retry after a timeout.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
# Transport failures that happen before the request can have reached GitHub.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Clock = Callable[[], float]


def path_part(value: str | int) -> str:
    """One path segment, percent-encoded (a label called `kind/fix` stays one segment)."""
    return quote(str(value), safe="")


def repo_path(owner: str, repo: str) -> str:
    """`/repos/{owner}/{repo}` with both parts encoded."""
    return f"/repos/{path_part(owner)}/{path_part(repo)}"


class GitHubAPIError(TaskError):
    """GitHub answered with a non-transient error status; the text carries GitHub's message."""

    def __init__(
        self, method: str, path: str, status: int, message: str, errors: list[str]
    ) -> None:
        detail = f" ({'; '.join(errors)})" if errors else ""
        super().__init__(f"GitHub {method} {path}: {status} {message}{detail}".rstrip())
        self.status = status
        self.message = message
        self.errors = errors


class GitHubUnavailable(TaskError):
    """Every attempt failed transiently (5xx, rate limits, network), or the next wait would
    take longer than the retry budget."""


class AmbiguousRequest(TaskError):
    """A request that is not safe to repeat failed after it may have reached GitHub: it may or
    may not have taken effect. Callers that can check which (an upsert) look and try again."""


class GraphQLError(TaskError):
    """The GraphQL API answered with errors; `messages` holds each error's message."""

    def __init__(self, messages: list[str], types: list[str]) -> None:
        super().__init__("GitHub GraphQL: " + "; ".join(messages))
        self.messages = messages
        self.types = types


def _describe_errors(body: Any) -> tuple[str, list[str]]:
    """GitHub's `message` and the details of its `errors` list, from an error response body."""
    if not isinstance(body, Mapping):
        return "", []
    message = str(body.get("message") or "")
    details: list[str] = []
    errors = body.get("errors")
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, Mapping):
            text = error.get("message") or " ".join(
                str(error[key]) for key in ("resource", "field", "code") if error.get(key)
            )
            details.append(str(text))
        elif isinstance(error, str):
            details.append(error)
    return message, details


def response_json(response: httpx.Response) -> Any:
    """The response body as JSON; None when it is empty or not JSON."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def graphql_url(api_url: str) -> str:
    """The GraphQL endpoint next to a REST base URL: `{api_url}/graphql` on github.com (and
    test servers), `https://HOST/api/graphql` for GitHub Enterprise Server's `.../api/v3`."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


TokenSource = Callable[[str | None], Awaitable[str]]


class GitHubClient:
    """Requests to one GitHub API as one identity (a token, an App, or an App installation)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_url: str,
        token: TokenSource,
        policy: RetryPolicy,
        *,
        clock: Clock = time.time,
        renewable: bool = False,
    ) -> None:
        """`token(rejected)` gives the bearer token; `rejected` is None, or the token GitHub just
        answered 401 to: with `renewable`, that happens once per request (an installation
        token revoked or expired early) and the source replaces it."""
        self.api_url = api_url.rstrip("/")
        self.graphql_url = graphql_url(self.api_url)
        self.policy = policy
        self._http = http
        self._token = token
        self._clock = clock
        self._renewable = renewable

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send a request to `path` (relative to the API URL, or an absolute URL on the same
        host, as in pagination links) and return the 2xx/3xx response.

        Retries transient failures per the policy. `idempotent` (default: by method) says
        whether a request that may have reached GitHub can be sent again; when it cannot,
        such a failure raises AmbiguousRequest. Raises GitHubAPIError for other error statuses
        and GitHubUnavailable when the retries are used up.
        """
        method = method.upper()
        url = self._url(path)
        shown = urlsplit(url).path
        repeatable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        rejected: str | None = None  # a token GitHub answered 401 to, to be replaced once
        renewed = False

        async def attempt() -> httpx.Response:
            nonlocal rejected, renewed
            token = await self._token(rejected)
            rejected = None
            sent_headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
            try:
                response = await self._http.request(
                    method, url, params=params, json=json, headers=sent_headers
                )
            except _NOT_SENT as exc:
                raise RetryLater(f"cannot reach GitHub ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                reason = f"no complete answer from GitHub ({type(exc).__name__})"
                if not repeatable:
                    raise AmbiguousRequest(
                        f"GitHub {method} {shown}: {reason}; it may or may not have taken effect"
                    ) from None
                raise RetryLater(reason) from None
            logger.debug("GitHub %s %s -> %d", method, shown, response.status_code)
            if response.status_code < 400:
                return response
            message, details = _describe_errors(response_json(response))
            if response.status_code == 401 and self._renewable and not renewed:
                renewed, rejected = True, token
                raise RetryLater("401 from GitHub: minting a new installation token", 0.0)
            retry = classify_http(
                response.status_code, response.headers, message, now=self._clock()
            )
            if retry is None:
                raise GitHubAPIError(method, shown, response.status_code, message, details)
            if response.status_code >= 500 and not repeatable:
                raise AmbiguousRequest(
                    f"GitHub {method} {shown}: {retry.reason}; it may or may not have taken effect"
                )
            raise retry

        try:
            return await self.policy.run(attempt, what=f"GitHub {method} {shown}")
        except RetriesExhausted as exc:
            raise GitHubUnavailable(f"GitHub {method} {shown}: {exc}") from None

    async def json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """`request`, returning the JSON body (None for an empty one)."""
        response = await self.request(method, path, params=params, json=json, idempotent=idempotent)
        return response_json(response)

    async def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, limit: int
    ) -> tuple[list[Any], bool]:
        """Every item of a list endpoint, following `Link: rel="next"`, at most `limit` items.
        Returns (items, truncated): truncated when more items were left on GitHub."""
        items: list[Any] = []
        query: Mapping[str, Any] | None = {**(params or {}), "per_page": min(100, max(1, limit))}
        url: str | None = path
        while url is not None:
            response = await self.request("GET", url, params=query)
            page = response_json(response)
            if not isinstance(page, list):
                raise TaskError(f"GitHub GET {urlsplit(url).path}: expected a JSON list")
            items.extend(page)
            next_link = response.links.get("next", {}).get("url")
            if len(items) >= limit:
                return items[:limit], len(items) > limit or next_link is not None
            url = next_link
            query = None  # the next link carries the query
        return items, False

    async def graphql(self, query: str, variables: Mapping[str, Any]) -> Any:
        """Run a GraphQL query or mutation; returns `data`. Raises GraphQLError listing the
        errors GitHub returned; a RATE_LIMITED error is retried like a REST rate limit."""

        async def attempt() -> Any:
            response = await self.request(
                "POST",
                self.graphql_url,
                json={"query": query, "variables": dict(variables)},
                idempotent=True,
            )
            body = response_json(response)
            if not isinstance(body, Mapping):
                raise TaskError("GitHub GraphQL: the answer is not a JSON object")
            errors = body.get("errors")
            if errors:
                listed = (
                    [e for e in errors if isinstance(e, Mapping)]
                    if isinstance(errors, list)
                    else []
                )
                types = [str(e.get("type") or "") for e in listed]
                messages = [str(e.get("message") or "") for e in listed] or [str(errors)]
                if "RATE_LIMITED" in types:
                    raise RetryLater("GraphQL rate limit", minimum=60.0)
                raise GraphQLError(messages, types)
            return body.get("data")

        try:
            return await self.policy.run(attempt, what="GitHub GraphQL")
        except RetriesExhausted as exc:
            raise GitHubUnavailable(f"GitHub GraphQL: {exc}") from None

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            # Pagination links are absolute; the token must never travel to another host.
            if _origin(path) != _origin(self.api_url):
                raise TaskError(f"refusing to send the GitHub token to {_origin(path)[1]!r}")
            return path
        if not path.startswith("/"):
            raise TaskError(f"GitHub API path {path!r} must start with '/'")
        return self.api_url + path


@dataclass
class _CachedToken:
    token: str
    expires_at: float


@dataclass
class _LoopState:
    """What cannot be shared between event loops: HTTP connections and asyncio locks."""

    http: dict[tuple[str, ...], httpx.AsyncClient] = field(default_factory=dict)
    locks: dict[tuple[str, ...], asyncio.Lock] = field(default_factory=dict)


def _credentials_key(credentials: GitHubCredentials) -> tuple[str, ...]:
    # A digest, not the secret itself, identifies the credentials (a rotated secret is new).
    secret = credentials.private_key if credentials.app_id else (credentials.token or "").encode()
    digest = hashlib.sha256(secret or b"").hexdigest()
    return (
        credentials.integration,
        credentials.api_url.rstrip("/"),
        credentials.app_id or "",
        digest,
    )


def app_jwt(app_id: str, private_key: bytes, now: float) -> str:
    """The JWT a GitHub App signs to act as itself: RS256, issued a minute in the past (clock
    drift), valid nine minutes (GitHub accepts at most ten). Raises TaskError for a bad key."""
    payload = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": app_id}
    try:
        return jwt.encode(payload, private_key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError):
        raise TaskError(
            "the GitHub App private key is not a valid PEM-encoded RSA private key"
        ) from None


def event_installation(event: Mapping[str, Any], integration: str, owner: str | None) -> int | None:
    """The App installation id an event carries, when the event came through `integration` and
    concerns `owner` (an installation covers one account)."""
    origin = event.get("hiphops")
    if not isinstance(origin, Mapping):
        return None
    if origin.get("source") != "github" or origin.get("integration") != integration:
        return None
    installation = event.get("installation")
    installation_id = installation.get("id") if isinstance(installation, Mapping) else None
    if not isinstance(installation_id, int) or isinstance(installation_id, bool):
        return None
    account = None
    repository = event.get("repository")
    if isinstance(repository, Mapping) and isinstance(repository.get("owner"), Mapping):
        account = repository["owner"].get("login")
    if account is None and isinstance(event.get("organization"), Mapping):
        account = event["organization"].get("login")
    if owner is not None and isinstance(account, str) and account.lower() != owner.lower():
        return None
    return installation_id


class GitHubClients:
    """Clients for the GitHub integrations: pooled connections and cached installation tokens.

    Safe to share between tasks and threads: the token cache is guarded by a lock, and each
    event loop gets its own connection pools and mint locks, so that concurrent tasks needing
    the same installation mint its token once.
    """

    def __init__(
        self,
        *,
        policy: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Clock = time.time,
    ) -> None:
        self.policy = policy if policy is not None else RetryPolicy()
        self._timeout = timeout
        self._clock = clock
        self._guard = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._tokens: dict[tuple[str, ...], _CachedToken] = {}
        self._installations: dict[tuple[str, ...], int] = {}

    async def for_repo(
        self,
        credentials: GitHubCredentials,
        event: Mapping[str, Any],
        owner: str | None,
        repo: str | None,
    ) -> GitHubClient:
        """A client acting on `owner/repo` with the credentials. For an App, the installation
        is the event's (when it fits) or the one installed on the repository."""
        http = self._http(credentials)
        if credentials.token is not None and not credentials.app_id:
            token = credentials.token

            async def static(_rejected: str | None) -> str:
                return token

            return GitHubClient(http, credentials.api_url, static, self.policy, clock=self._clock)
        installation = event_installation(event, credentials.integration, owner)
        if installation is None:
            if owner is None or repo is None:
                raise TaskError(
                    "cannot tell which installation of the GitHub App to act through: "
                    "the task names no repository and the event carries no installation"
                )
            installation = await self._lookup_installation(credentials, owner, repo)
        return self._installation_client(credentials, installation)

    def app_client(self, credentials: GitHubCredentials) -> GitHubClient:
        """A client authenticated as the App itself (JWT): installation lookups and minting."""
        if not credentials.app_id or credentials.private_key is None:
            raise TaskError(f"integration {credentials.integration!r} is not a GitHub App")
        app_id, key = credentials.app_id, credentials.private_key

        async def signed(_rejected: str | None) -> str:
            return app_jwt(app_id, key, self._clock())

        return GitHubClient(
            self._http(credentials), credentials.api_url, signed, self.policy, clock=self._clock
        )

    async def aclose(self) -> None:
        """Close the connection pools of the current event loop."""
        loop = asyncio.get_running_loop()
        with self._guard:
            state = self._loops.pop(loop, None)
        if state is not None:
            await asyncio.gather(*(client.aclose() for client in state.http.values()))

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._guard:
            state = self._loops.get(loop)
            if state is None:
                state = self._loops[loop] = _LoopState()
            return state

    def _http(self, credentials: GitHubCredentials) -> httpx.AsyncClient:
        state = self._state()
        key = _credentials_key(credentials)
        client = state.http.get(key)
        if client is None:
            client = state.http[key] = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=True,  # renamed repositories answer 301; httpx drops
                # the Authorization header on a redirect to another host
                headers={
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": API_VERSION,
                    "User-Agent": USER_AGENT,
                },
            )
        return client

    async def _lookup_installation(
        self, credentials: GitHubCredentials, owner: str, repo: str
    ) -> int:
        key = (*_credentials_key(credentials), owner.lower(), repo.lower())
        with self._guard:
            known = self._installations.get(key)
        if known is not None:
            return known
        try:
            body = await self.app_client(credentials).json(
                "GET", f"{repo_path(owner, repo)}/installation"
            )
        except GitHubAPIError as exc:
            if exc.status == 404:
                raise TaskError(
                    f"the GitHub App of integration {credentials.integration!r} is not "
                    f"installed on {owner}/{repo}"
                ) from None
            raise
        installation = body.get("id") if isinstance(body, Mapping) else None
        if not isinstance(installation, int):
            raise TaskError(f"GitHub gave no installation id for {owner}/{repo}")
        with self._guard:
            self._installations[key] = installation
        return installation

    def _installation_client(
        self, credentials: GitHubCredentials, installation: int
    ) -> GitHubClient:
        key = (*_credentials_key(credentials), str(installation))

        async def token(rejected: str | None) -> str:
            return await self._installation_token(credentials, installation, key, rejected)

        return GitHubClient(
            self._http(credentials),
            credentials.api_url,
            token,
            self.policy,
            clock=self._clock,
            renewable=True,
        )

    def _cached(self, key: tuple[str, ...], rejected: str | None) -> str | None:
        with self._guard:
            cached = self._tokens.get(key)
        if (
            cached is not None
            and cached.token != rejected
            and self._clock() < cached.expires_at - TOKEN_REFRESH_MARGIN
        ):
            return cached.token
        return None

    async def _installation_token(
        self,
        credentials: GitHubCredentials,
        installation: int,
        key: tuple[str, ...],
        rejected: str | None,
    ) -> str:
        token = self._cached(key, rejected)
        if token is not None:
            return token
        lock = self._state().locks.setdefault(key, asyncio.Lock())
        async with lock:
            # Another task may have minted (or replaced the rejected token) meanwhile.
            token = self._cached(key, rejected)
            if token is not None:
                return token
            return await self._mint(credentials, installation, key)

    async def _mint(
        self, credentials: GitHubCredentials, installation: int, key: tuple[str, ...]
    ) -> str:
        try:
            body = await self.app_client(credentials).json(
                "POST",
                f"/app/installations/{installation}/access_tokens",
                idempotent=True,  # minting twice only leaves a spare token
            )
        except GitHubAPIError as exc:
            if exc.status == 401:
                raise TaskError(
                    f"GitHub rejected the App credentials of integration "
                    f"{credentials.integration!r} (401 {exc.message}): check appID and the "
                    "private key"
                ) from None
            if exc.status == 404:
                # Uninstalled or reinstalled: look the installation up again next time.
                with self._guard:
                    stale = [k for k, v in self._installations.items() if v == installation]
                    for cached_key in stale:
                        del self._installations[cached_key]
            raise
        token = body.get("token") if isinstance(body, Mapping) else None
        expires = body.get("expires_at") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise TaskError("GitHub minted no installation token")
        try:
            expires_at = datetime.fromisoformat(str(expires)).timestamp()
        except ValueError:
            # An unreadable expiry: use the token for this call only.
            expires_at = self._clock()
        with self._guard:
            self._tokens[key] = _CachedToken(token, expires_at)
        logger.info(
            "minted an installation token for integration %s, installation %d",
            credentials.integration,
            installation,
        )
        return token

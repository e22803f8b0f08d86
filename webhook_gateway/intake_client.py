"""The intake as an authenticated HTTP call to the operator (DESIGN §8).

``POST <url>`` with ``{"events": [...]}`` and ``Authorization: Bearer <token>``; the operator
answers 2xx ``{"runs": [...], "duplicates": [...]}`` once every run is recorded. Anything else
(connection errors, timeouts, non-2xx, a 2xx the gateway cannot read) is IntakeUnavailable: the
gateway then answers 503 and the sender redelivers, which the operator deduplicates by delivery id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import aiohttp
import orjson
from yarl import URL

from hiphops.intake import IntakeResult, IntakeUnavailable
from webhook_gateway.peers import ActivePeer, Resolver, resolve_all

log = logging.getLogger(__name__)


class HTTPIntake:
    """An :class:`hiphops.intake.Intake` that POSTs events to the operator's intake URL."""

    def __init__(
        self,
        url: str,
        token: str | Callable[[], str],
        *,
        timeout_s: float = 10,
        resolver: Resolver = resolve_all,
    ) -> None:
        """`token` is the bearer token, or a function giving the current one (`TokenFile`)."""
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("intake URL must be an absolute http(s) URL")
        if parsed.user is not None or parsed.password is not None:
            raise ValueError("intake URL must not hold credentials: the token authenticates")
        self._token = token if callable(token) else (lambda: token)
        if not self._token():
            raise ValueError("intake token is empty")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._url = parsed
        self._peer = ActivePeer(parsed, resolver)
        # For messages: a query in the configured URL might carry something private.
        self._display_url = str(parsed.with_query(None).with_fragment(None))

        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HTTPIntake({self._display_url!r})"

    async def accept(self, events: Sequence[Mapping[str, Any]]) -> IntakeResult:
        """POST the events; the runs and duplicates the operator recorded.

        Raises IntakeUnavailable (with a message free of the token) when the operator cannot be
        reached, does not answer within the timeout, or answers anything but a readable 2xx.
        """
        # orjson serializes dicts, not other mappings: events are dicts at every level below.
        body = orjson.dumps({"events": [dict(event) for event in events]})
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        reason = "no address"
        # Several replicas: only the active one takes events; the others answer 503.
        for target in await self._peer.candidates():
            try:
                status, content = await self._post(target, body)
            except IntakeUnavailable as unavailable:
                reason = str(unavailable)
                continue
            if status in (401, 403):
                message = (
                    f"intake {self._display_url} refused the gateway's token (HTTP {status}); "
                    "check that the gateway and the operator share the same intake token"
                )
                log.error("%s", message)
                raise IntakeUnavailable(message)
            if status == 503:
                reason = f"intake {self._display_url} answered HTTP 503"
                continue
            if not 200 <= status < 300:
                raise IntakeUnavailable(f"intake {self._display_url} answered HTTP {status}")
            self._peer.worked(target)
            return self._result(content, status)
        raise IntakeUnavailable(reason)

    async def _post(self, target: URL, body: bytes) -> tuple[int, bytes]:
        assert self._session is not None
        try:
            # No redirects: following one would send the bearer token to another address.
            async with self._session.post(
                target,
                data=body,
                headers={
                    "Authorization": f"Bearer {self._token()}",
                    "Content-Type": "application/json",
                },
                allow_redirects=False,
            ) as response:
                return response.status, await response.read()
        except TimeoutError:
            raise IntakeUnavailable(f"intake {self._display_url} timed out") from None
        except aiohttp.ClientError as error:
            raise IntakeUnavailable(
                f"intake {self._display_url} unreachable: {type(error).__name__}"
            ) from None

    def _result(self, content: bytes, status: int) -> IntakeResult:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            runs, duplicates = data.get("runs"), data.get("duplicates")
            if _is_str_list(runs) and _is_str_list(duplicates):
                return IntakeResult(runs=list(runs), duplicates=list(duplicates))
        # Recording is idempotent per delivery, so trying again is safe and may get a clean answer.
        raise IntakeUnavailable(
            f"intake {self._display_url} answered HTTP {status} without runs and duplicates lists"
        )

    async def close(self) -> None:
        """Close the connection pool; a later ``accept`` opens a new one."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _is_str_list(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class TokenFile:
    """The intake token from a mounted Secret file, read again whenever the file changes, so a
    rotated Secret takes effect without restarting the gateway."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""
        if not self():
            raise ValueError(f"{path} is empty: the operator would refuse every event")

    def __call__(self) -> str:
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                token = self._path.read_text(encoding="utf-8").strip()
                if token:
                    self._token, self._stamp = token, stamp
        except OSError:
            pass  # keep the last token: a Secret volume is swapped by renaming a symlink
        return self._token

    def __repr__(self) -> str:
        return f"TokenFile({str(self._path)!r})"

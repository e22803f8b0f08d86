"""Retrying transient failures: exponential backoff with full jitter, bounded in attempts and time.

An attempt that failed transiently raises `RetryLater`, optionally with the delay the other side
asked for (`Retry-After`, a rate-limit reset); `RetryPolicy.run` sleeps and calls it again until it
succeeds, raises something else, or the attempts or the total wait budget are used up
(`RetriesExhausted`). `classify_http` decides which HTTP responses are transient, including
GitHub's rate limits. The sleep function and the clocks are injectable, so tests never wait.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

logger = logging.getLogger("hiphops.tasks.retry")

_T = TypeVar("_T")

Sleep = Callable[[float], Awaitable[None]]

#: GitHub asks clients that hit a secondary rate limit without a Retry-After header to wait at
#: least a minute (docs: "Best practices for using the REST API").
SECONDARY_LIMIT_MIN_WAIT = 60.0


class RetryLater(Exception):
    """An attempt failed transiently. `delay` is the wait the server asked for, if it did;
    otherwise the policy backs off, waiting at least `minimum` seconds."""

    def __init__(self, reason: str, delay: float | None = None, *, minimum: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.minimum = minimum


class RetriesExhausted(Exception):
    """Every attempt failed transiently, or the next wait would overrun the budget.
    `str()` says why, ending with the last attempt's reason."""

    def __init__(self, message: str, last: RetryLater) -> None:
        super().__init__(message)
        self.last = last


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    `attempts` bounds the calls (the first one included); `max_total_wait` bounds the sum of the
    sleeps; a backoff sleep is uniform in [0, min(max_backoff, base_delay * 2**(n-1))] after the
    n-th failure ("full jitter"). A delay the server asked for is honoured as is, unless it would
    overrun the budget, in which case the policy gives up at once rather than sleep in vain.
    """

    attempts: int = 5
    base_delay: float = 1.0
    max_backoff: float = 30.0
    max_total_wait: float = 180.0
    sleep: Sleep = field(default=asyncio.sleep, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_backoff < 0 or self.max_total_wait < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, failures: int) -> float:
        """The jittered wait after the `failures`-th consecutive failure (counting from 1)."""
        ceiling = min(self.max_backoff, self.base_delay * 2 ** (failures - 1))
        return float(self.random() * ceiling)

    def delay_for(self, failure: RetryLater, failures: int) -> float:
        """How long to wait after `failure`, the `failures`-th failure in a row."""
        if failure.delay is not None:
            return max(0.0, failure.delay)
        return max(failure.minimum, self.backoff(failures))

    async def run(self, attempt: Callable[[], Awaitable[_T]], *, what: str = "request") -> _T:
        """Call `attempt` until it returns; retry while it raises RetryLater (see the class)."""
        waited = 0.0
        for number in range(1, self.attempts + 1):
            try:
                return await attempt()
            except RetryLater as failure:
                if number == self.attempts:
                    raise RetriesExhausted(
                        f"gave up after {number} attempts: {failure.reason}", failure
                    ) from None
                delay = self.delay_for(failure, number)
                if waited + delay > self.max_total_wait:
                    raise RetriesExhausted(
                        f"gave up after {number} attempt{'s' if number > 1 else ''}: the next "
                        f"wait ({delay:.0f}s) would exceed the retry budget "
                        f"({self.max_total_wait:.0f}s): {failure.reason}",
                        failure,
                    ) from None
                logger.warning(
                    "%s failed (%s); retrying in %.1fs (attempt %d of %d)",
                    what,
                    failure.reason,
                    delay,
                    number + 1,
                    self.attempts,
                )
                await self.sleep(delay)
                waited += delay
        raise AssertionError("unreachable: the loop returns or raises")


def retry_after_seconds(value: str, now: float) -> float | None:
    """A `Retry-After` header as seconds from `now` (a Unix time): delta-seconds or an HTTP date.
    None when it is neither."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; an offset-less parse means "-0000"
        return None
    return max(0.0, when.timestamp() - now)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # httpx and aiohttp header maps are case-insensitive; a plain dict may not be.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until the rate limit resets when `X-RateLimit-Remaining` is 0, else None."""
    if (_header(headers, "X-RateLimit-Remaining") or "").strip() != "0":
        return None
    reset = (_header(headers, "X-RateLimit-Reset") or "").strip()
    if not reset.isdigit():
        return None
    # One second of slack: the reset time is whole seconds and clocks drift.
    return max(0.0, float(reset) - now) + 1.0


def classify_http(
    status: int, headers: Mapping[str, str], message: str, *, now: float | None = None
) -> RetryLater | None:
    """The retry to make after an HTTP response, or None when it is not transient.

    Transient: 5xx; 429; a 403 that is a rate limit (a `Retry-After` header, `X-RateLimit-
    Remaining: 0`, or a message about a rate limit, GitHub's secondary limits included).
    Waits: `Retry-After` first, then the `X-RateLimit-Reset` time, else a backoff of at least a
    minute for a secondary limit and a plain backoff otherwise.
    """
    now = time.time() if now is None else now
    lowered = message.lower()
    retry_after_header = _header(headers, "Retry-After")
    asked = None if retry_after_header is None else retry_after_seconds(retry_after_header, now)
    reset = rate_limit_wait(headers, now)
    secondary = "secondary rate limit" in lowered or "abuse" in lowered
    limited = status == 429 or (
        status == 403
        and (asked is not None or reset is not None or secondary or "rate limit" in lowered)
    )
    described = f"{status}{': ' + message if message else ''}"
    if limited:
        kind = "secondary rate limit" if secondary else "rate limited"
        if asked is not None:
            return RetryLater(f"{kind} ({described})", asked)
        if reset is not None:
            return RetryLater(f"{kind} ({described})", reset)
        minimum = SECONDARY_LIMIT_MIN_WAIT if secondary else 0.0
        return RetryLater(f"{kind} ({described})", minimum=minimum)
    if status >= 500:
        return RetryLater(f"server error ({described})", asked)
    return None

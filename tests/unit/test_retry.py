"""The retry policy and the classification of HTTP responses (hiphops/tasks/retry.py)."""

from __future__ import annotations

import asyncio
import email.utils
from typing import Any

import pytest

from hiphops.tasks.retry import (
    RetriesExhausted,
    RetryLater,
    RetryPolicy,
    classify_http,
    rate_limit_wait,
    retry_after_seconds,
)

NOW = 1_700_000_000.0


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def policy(sleeps: Sleeps, jitter: float = 1.0, **options: Any) -> RetryPolicy:
    return RetryPolicy(sleep=sleeps, random=lambda: jitter, **options)


def run(policy: RetryPolicy, failures: list[RetryLater], result: str = "ok") -> Any:
    """Run an attempt that raises each failure in turn, then returns `result`."""
    pending = list(failures)
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if pending:
            raise pending.pop(0)
        return result

    outcome = asyncio.run(policy.run(attempt))
    return outcome, calls


def test_success_at_once_does_not_sleep() -> None:
    sleeps = Sleeps()
    assert run(policy(sleeps), []) == ("ok", 1)
    assert sleeps.delays == []


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    sleeps = Sleeps()
    failures = [RetryLater("boom") for _ in range(6)]
    run(policy(sleeps, attempts=7, base_delay=1.0, max_backoff=10.0, max_total_wait=1e6), failures)
    # random() = 1.0: the ceilings themselves.
    assert sleeps.delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    low = Sleeps()
    run(policy(low, jitter=0.0), [RetryLater("boom")] * 2)
    assert low.delays == [0.0, 0.0]  # full jitter reaches down to zero


def test_the_delay_the_server_asked_for_is_used_as_is() -> None:
    sleeps = Sleeps()
    run(policy(sleeps), [RetryLater("limited", 12.5), RetryLater("limited", 0.0)])
    assert sleeps.delays == [12.5, 0.0]


def test_a_minimum_raises_a_short_backoff() -> None:
    sleeps = Sleeps()
    run(policy(sleeps, jitter=0.1), [RetryLater("secondary", minimum=60.0)])
    assert sleeps.delays == [60.0]


def test_attempts_are_bounded_and_the_last_reason_is_kept() -> None:
    sleeps = Sleeps()
    with pytest.raises(RetriesExhausted) as caught:
        run(policy(sleeps, attempts=3), [RetryLater(f"failure {n}") for n in range(5)])
    assert str(caught.value) == "gave up after 3 attempts: failure 2"
    assert caught.value.last.reason == "failure 2"
    assert len(sleeps.delays) == 2


def test_a_wait_beyond_the_budget_gives_up_without_sleeping() -> None:
    sleeps = Sleeps()
    with pytest.raises(RetriesExhausted) as caught:
        run(policy(sleeps, max_total_wait=100.0), [RetryLater("a", 60.0), RetryLater("b", 60.0)])
    assert sleeps.delays == [60.0]
    assert "retry budget (100s)" in str(caught.value) and str(caught.value).endswith(": b")


def test_other_exceptions_are_not_retried() -> None:
    sleeps = Sleeps()

    async def attempt() -> None:
        raise ValueError("not transient")

    with pytest.raises(ValueError):
        asyncio.run(policy(sleeps).run(attempt))
    assert sleeps.delays == []


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_total_wait=-1)


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_seconds("120", NOW) == 120.0
    date = email.utils.formatdate(NOW + 45, usegmt=True)
    assert retry_after_seconds(date, NOW) == 45.0
    assert retry_after_seconds(email.utils.formatdate(NOW - 10, usegmt=True), NOW) == 0.0
    assert retry_after_seconds("soon", NOW) is None
    assert retry_after_seconds("-5", NOW) is None


def test_rate_limit_wait_only_when_the_limit_is_used_up() -> None:
    reset = str(int(NOW) + 30)
    assert rate_limit_wait({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, NOW) == 31
    assert rate_limit_wait({"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}, NOW) == 31
    assert rate_limit_wait({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": reset}, NOW) is None
    assert rate_limit_wait({"X-RateLimit-Remaining": "0"}, NOW) is None


@pytest.mark.parametrize(
    ("status", "headers", "message", "delay", "minimum"),
    [
        (500, {}, "", None, 0.0),
        (502, {}, "Bad Gateway", None, 0.0),
        (503, {"Retry-After": "4"}, "", 4.0, 0.0),
        (429, {}, "", None, 0.0),
        (429, {"Retry-After": "9"}, "", 9.0, 0.0),
        (403, {"Retry-After": "5"}, "whatever", 5.0, 0.0),
        (403, {}, "You have exceeded a secondary rate limit.", None, 60.0),
        (403, {}, "You have triggered an abuse detection mechanism.", None, 60.0),
        (
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 100)},
            "API rate limit exceeded",
            101.0,
            0.0,
        ),
        (
            403,
            {"Retry-After": "2", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9999999999"},
            "secondary rate limit",
            2.0,  # Retry-After comes first
            0.0,
        ),
    ],
)
def test_transient_responses(
    status: int, headers: dict[str, str], message: str, delay: float | None, minimum: float
) -> None:
    retry = classify_http(status, headers, message, now=NOW)
    assert retry is not None
    assert (retry.delay, retry.minimum) == (delay, minimum)
    assert str(status) in retry.reason


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Problems parsing JSON"),
        (401, "Bad credentials"),
        (403, "Resource not accessible by integration"),
        (404, "Not Found"),
        (405, "Pull Request is not mergeable"),
        (409, "Head branch was modified"),
        (422, "Validation Failed"),
    ],
)
def test_other_client_errors_are_not_transient(status: int, message: str) -> None:
    assert classify_http(status, {"X-RateLimit-Remaining": "12"}, message, now=NOW) is None

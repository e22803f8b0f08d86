"""Webhook signature verification: GitHub X-Hub-Signature-256 and Slack v0 (DESIGN §8).

Both fail closed: without a usable secret every request is rejected. Secrets are lists so that
they can be rotated without downtime; a request signed with any of them is accepted. Empty
secrets are ignored, because an HMAC under an empty key is one anybody can compute.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

_HEX_DIGEST: Final = re.compile(r"[0-9a-fA-F]{64}")
# Slack sends whole seconds; the length bound keeps int() cheap on hostile input.
_SLACK_TIMESTAMP: Final = re.compile(r"[0-9]{1,15}")


class VerificationError(Exception):
    """A request that failed verification; ``reason`` is safe to show the sender.

    Reasons never include a secret, nor anything computed from one.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _usable(secrets: Sequence[bytes]) -> list[bytes]:
    usable = [secret for secret in secrets if secret]
    if not usable:
        raise VerificationError("no signing secret is configured for this integration")
    return usable


def _parse_digest(header: str | None, prefix: str, name: str) -> bytes:
    if not header:
        raise VerificationError(f"missing {name} header")
    if not header.startswith(prefix) or not _HEX_DIGEST.fullmatch(header, len(prefix)):
        raise VerificationError(f"malformed {name} header")
    return bytes.fromhex(header[len(prefix) :])


def _matches_any(message: bytes, digest: bytes, secrets: Sequence[bytes]) -> bool:
    # Every secret is tried, so the time taken does not tell which one (if any) matched.
    matched = False
    for secret in secrets:
        expected = hmac.new(secret, message, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, digest)
    return matched


def verify_github_signature(
    body: bytes, signature_header: str | None, secrets: Sequence[bytes]
) -> None:
    """Check X-Hub-Signature-256 (``sha256=<hex>``) against any of the secrets (rotation).

    Constant-time comparison (hmac.compare_digest). No secrets configured -> rejected (fail
    closed). Raises VerificationError; returns None when the body is authentic.
    """
    usable = _usable(secrets)
    digest = _parse_digest(signature_header, "sha256=", "X-Hub-Signature-256")
    if not _matches_any(body, digest, usable):
        raise VerificationError("X-Hub-Signature-256 does not match the body")


class _ReplayCache:
    """Signatures seen recently, each kept until its request's timestamp leaves the window.

    Memory is bounded by ``max_size``: when it is full of live entries, the one closest to
    expiring is dropped first, which is the entry whose replay window is shortest. Size it above
    the peak request rate times the window. Guarded by a lock so threads may share it; under
    asyncio every call runs to completion without yielding anyway.
    """

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def check_and_add(self, key: bytes, expires_at: float, now: float) -> bool:
        """Record ``key``; False if it was already recorded and has not expired."""
        with self._lock:
            self._purge(now)
            if key in self._expiry:
                return False
            while len(self._expiry) >= self._max_size:
                _, oldest = heapq.heappop(self._heap)
                del self._expiry[oldest]
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, key = heapq.heappop(self._heap)
            del self._expiry[key]


class SlackVerifier:
    """Slack v0 request signatures with a timestamp window and a replay cache.

    One instance per process, shared by every Slack integration: a signature covers the
    timestamp and body under one secret, so one cache serves them all.
    """

    def __init__(
        self,
        *,
        window_s: int = 300,
        clock: Callable[[], float] = time.time,
        replay_cache_size: int = 100_000,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        if replay_cache_size <= 0:
            raise ValueError("replay_cache_size must be positive")
        self._window_s = window_s
        self._clock = clock
        self._seen = _ReplayCache(replay_cache_size)

    @property
    def replay_cache_len(self) -> int:
        """How many signatures the replay cache holds now (for metrics)."""
        return len(self._seen)

    def verify(
        self,
        body: bytes,
        timestamp_header: str | None,
        signature_header: str | None,
        secrets: Sequence[bytes],
    ) -> None:
        """Check a Slack request (X-Slack-Request-Timestamp, X-Slack-Signature).

        Slack v0: HMAC-SHA256 over ``v0:{timestamp}:{body}``, sent as ``v0=<hex>``; the timestamp
        must lie within the window of now (both directions, the bound included); a signature
        already accepted within the window is a replay and rejected. Without secrets every request
        is rejected (fail closed). A signature is recorded only once it verified, so forged
        requests cannot fill the cache or pre-empt a genuine one. Raises VerificationError.
        """
        usable = _usable(secrets)
        if not timestamp_header:
            raise VerificationError("missing X-Slack-Request-Timestamp header")
        if not _SLACK_TIMESTAMP.fullmatch(timestamp_header):
            raise VerificationError("malformed X-Slack-Request-Timestamp header")
        digest = _parse_digest(signature_header, "v0=", "X-Slack-Signature")
        timestamp = int(timestamp_header)
        now = self._clock()
        if abs(now - timestamp) > self._window_s:
            raise VerificationError("X-Slack-Request-Timestamp is outside the allowed window")
        # The header text itself is signed, not a re-formatted number.
        message = b"v0:" + timestamp_header.encode("ascii") + b":" + body
        if not _matches_any(message, digest, usable):
            raise VerificationError("X-Slack-Signature does not match the body")
        # The timestamp check rejects this request anyway once now > timestamp + window.
        if not self._seen.check_and_add(digest, timestamp + self._window_s, now):
            raise VerificationError("request was already received (replay)")

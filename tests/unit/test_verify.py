"""Webhook signature verification, with signatures computed independently in the tests."""

from __future__ import annotations

import hashlib
import hmac
import threading
from pathlib import Path

import pytest
from slack_sdk.signature import SignatureVerifier

from webhook_gateway.verify import SlackVerifier, VerificationError, verify_github_signature

BODY = (
    Path(__file__).resolve().parent.parent
    / "fixtures"
    / "github"
    / "pull_request.opened.large.json"
).read_bytes()
SECRET = b"It's a Secret to Everybody"
OTHER = b"the-rotated-out-secret"


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


# --- GitHub ------------------------------------------------------------------------------


def test_github_documented_example() -> None:
    # The example from GitHub's "Validating webhook deliveries" documentation.
    verify_github_signature(
        b"Hello, World!",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        [SECRET],
    )


def test_github_valid_signature() -> None:
    verify_github_signature(BODY, github_signature(SECRET, BODY), [SECRET])


def test_github_wrong_secret() -> None:
    with pytest.raises(VerificationError, match="does not match"):
        verify_github_signature(BODY, github_signature(OTHER, BODY), [SECRET])


def test_github_rotation_accepts_any_configured_secret() -> None:
    verify_github_signature(BODY, github_signature(SECRET, BODY), [OTHER, SECRET])
    verify_github_signature(BODY, github_signature(OTHER, BODY), [OTHER, SECRET])


@pytest.mark.parametrize("header", [None, ""])
def test_github_missing_header(header: str | None) -> None:
    with pytest.raises(VerificationError, match="missing X-Hub-Signature-256") as caught:
        verify_github_signature(BODY, header, [SECRET])
    assert caught.value.reason == "missing X-Hub-Signature-256 header"


@pytest.mark.parametrize(
    "header",
    [
        "sha256=",
        "sha256=xyz",
        "sha256=" + "a" * 63,
        "sha256=" + "a" * 65,
        "sha1=" + hmac.new(SECRET, BODY, hashlib.sha1).hexdigest(),
        "SHA256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(),
        " " + github_signature(SECRET, BODY),
        github_signature(SECRET, BODY) + "\n",
        hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(),
    ],
)
def test_github_malformed_header(header: str) -> None:
    with pytest.raises(VerificationError, match="malformed X-Hub-Signature-256"):
        verify_github_signature(BODY, header, [SECRET])


@pytest.mark.parametrize("secrets", [[], [b""], [b"", b""]])
def test_github_without_secrets_fails_closed(secrets: list[bytes]) -> None:
    # Even a request "signed" with the empty key is rejected: anybody can compute that.
    with pytest.raises(VerificationError, match="no signing secret"):
        verify_github_signature(BODY, github_signature(b"", BODY), secrets)


def test_github_empty_secret_next_to_a_real_one_is_ignored() -> None:
    verify_github_signature(BODY, github_signature(SECRET, BODY), [b"", SECRET])
    with pytest.raises(VerificationError, match="does not match"):
        verify_github_signature(BODY, github_signature(b"", BODY), [b"", SECRET])


def test_github_tampered_body() -> None:
    signature = github_signature(SECRET, BODY)
    tampered = BODY.replace(b'"action": "opened"', b'"action": "closed"', 1)
    assert tampered != BODY
    with pytest.raises(VerificationError, match="does not match"):
        verify_github_signature(tampered, signature, [SECRET])
    with pytest.raises(VerificationError, match="does not match"):
        verify_github_signature(BODY + b" ", signature, [SECRET])


def test_github_reason_reveals_no_secret() -> None:
    expected = github_signature(SECRET, BODY)
    with pytest.raises(VerificationError) as caught:
        verify_github_signature(BODY + b"x", expected, [SECRET])
    text = str(caught.value) + repr(caught.value) + caught.value.reason
    assert SECRET.decode() not in text
    assert github_signature(SECRET, BODY + b"x")[7:] not in text


# --- Slack -------------------------------------------------------------------------------

NOW = 1_700_000_000
SLACK_BODY = (
    b"token=xyz&team_id=T0001&team_domain=example&channel_id=C2147483705&channel_name=test"
    b"&user_id=U2147483697&user_name=Steve&command=%2Fhiphops&text=deploy+%22my+app%22"
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1234%2F5678"
    b"&trigger_id=13345224609.738474920.8088930838d88f008e0"
)
SIGNING = b"8f742231b10e8888abcd99yyyzzz85a5"


class Clock:
    """A settable clock, for both our verifier and slack-sdk's."""

    def __init__(self, now: float) -> None:
        self.value = now

    def __call__(self) -> float:
        return self.value

    def now(self) -> float:
        return self.value


def slack_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def make_verifier(now: float = NOW, **kwargs: int) -> tuple[SlackVerifier, Clock]:
    clock = Clock(now)
    return SlackVerifier(clock=clock, **kwargs), clock


def test_slack_hand_signature_matches_slack_sdk() -> None:
    sdk = SignatureVerifier(SIGNING.decode(), clock=Clock(NOW))  # type: ignore[arg-type]
    ts = str(NOW)
    assert sdk.generate_signature(timestamp=ts, body=SLACK_BODY) == slack_signature(
        SIGNING, ts, SLACK_BODY
    )


def test_slack_accepts_what_slack_sdk_signs_and_both_agree() -> None:
    clock = Clock(NOW)
    sdk = SignatureVerifier(SIGNING.decode(), clock=clock)  # type: ignore[arg-type]
    ours = SlackVerifier(clock=clock)
    ts = str(NOW - 120)
    signature = sdk.generate_signature(timestamp=ts, body=SLACK_BODY)
    assert signature is not None
    assert sdk.is_valid(SLACK_BODY, ts, signature)
    ours.verify(SLACK_BODY, ts, signature, [SIGNING])
    bad = slack_signature(OTHER, ts, SLACK_BODY)
    assert not sdk.is_valid(SLACK_BODY, ts, bad)
    with pytest.raises(VerificationError):
        ours.verify(SLACK_BODY, ts, bad, [SIGNING])


@pytest.mark.parametrize("offset", [-301, -300, 0, 300, 301])
def test_slack_window_agrees_with_slack_sdk(offset: int) -> None:
    # Fresh verifiers each time: this compares the window only, not the replay cache.
    clock = Clock(NOW)
    sdk = SignatureVerifier(SIGNING.decode(), clock=clock)  # type: ignore[arg-type]
    ts = str(NOW + offset)
    signature = slack_signature(SIGNING, ts, SLACK_BODY)
    try:
        SlackVerifier(clock=clock).verify(SLACK_BODY, ts, signature, [SIGNING])
        accepted = True
    except VerificationError:
        accepted = False
    assert accepted == sdk.is_valid(SLACK_BODY, ts, signature) == (abs(offset) <= 300)


def test_slack_valid() -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    verifier.verify(SLACK_BODY, ts, slack_signature(SIGNING, ts, SLACK_BODY), [SIGNING])


def test_slack_wrong_secret() -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    with pytest.raises(VerificationError, match="does not match"):
        verifier.verify(SLACK_BODY, ts, slack_signature(OTHER, ts, SLACK_BODY), [SIGNING])


def test_slack_rotation_accepts_second_secret() -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    verifier.verify(SLACK_BODY, ts, slack_signature(OTHER, ts, SLACK_BODY), [SIGNING, OTHER])


@pytest.mark.parametrize("secrets", [[], [b""]])
def test_slack_without_secrets_fails_closed(secrets: list[bytes]) -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    with pytest.raises(VerificationError, match="no signing secret"):
        verifier.verify(SLACK_BODY, ts, slack_signature(b"", ts, SLACK_BODY), secrets)


@pytest.mark.parametrize("timestamp", [None, ""])
def test_slack_missing_timestamp(timestamp: str | None) -> None:
    verifier, _ = make_verifier()
    signature = slack_signature(SIGNING, str(NOW), SLACK_BODY)
    with pytest.raises(VerificationError, match="missing X-Slack-Request-Timestamp"):
        verifier.verify(SLACK_BODY, timestamp, signature, [SIGNING])


@pytest.mark.parametrize("timestamp", ["abc", "-5", f"{NOW}.5", f" {NOW}", "1e9", "9" * 40, "١٢٣"])
def test_slack_malformed_timestamp(timestamp: str) -> None:
    verifier, _ = make_verifier()
    signature = slack_signature(SIGNING, timestamp, SLACK_BODY)
    with pytest.raises(VerificationError, match="malformed X-Slack-Request-Timestamp"):
        verifier.verify(SLACK_BODY, timestamp, signature, [SIGNING])


@pytest.mark.parametrize("signature", [None, ""])
def test_slack_missing_signature(signature: str | None) -> None:
    verifier, _ = make_verifier()
    with pytest.raises(VerificationError, match="missing X-Slack-Signature"):
        verifier.verify(SLACK_BODY, str(NOW), signature, [SIGNING])


@pytest.mark.parametrize(
    "signature",
    [
        "v0=",
        "v1=" + "a" * 64,
        "v0=" + "g" * 64,
        "v0=" + "a" * 63,
        "sha256=" + "a" * 64,
        "a" * 64,
    ],
)
def test_slack_malformed_signature(signature: str) -> None:
    verifier, _ = make_verifier()
    with pytest.raises(VerificationError, match="malformed X-Slack-Signature"):
        verifier.verify(SLACK_BODY, str(NOW), signature, [SIGNING])


def test_slack_tampered_body_and_timestamp() -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    signature = slack_signature(SIGNING, ts, SLACK_BODY)
    with pytest.raises(VerificationError, match="does not match"):
        verifier.verify(SLACK_BODY.replace(b"deploy", b"destroy"), ts, signature, [SIGNING])
    # Moving the timestamp (still inside the window) breaks the signature too.
    with pytest.raises(VerificationError, match="does not match"):
        verifier.verify(SLACK_BODY, str(NOW - 1), signature, [SIGNING])


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
def test_slack_stale_and_future_timestamps(offset: int) -> None:
    verifier, _ = make_verifier()
    ts = str(NOW + offset)
    with pytest.raises(VerificationError, match="outside the allowed window"):
        verifier.verify(SLACK_BODY, ts, slack_signature(SIGNING, ts, SLACK_BODY), [SIGNING])


def test_slack_custom_window() -> None:
    verifier, _ = make_verifier(window_s=60)
    ts = str(NOW - 61)
    with pytest.raises(VerificationError, match="outside the allowed window"):
        verifier.verify(SLACK_BODY, ts, slack_signature(SIGNING, ts, SLACK_BODY), [SIGNING])


def test_slack_replay_rejected() -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    signature = slack_signature(SIGNING, ts, SLACK_BODY)
    verifier.verify(SLACK_BODY, ts, signature, [SIGNING])
    with pytest.raises(VerificationError, match="replay"):
        verifier.verify(SLACK_BODY, ts, signature, [SIGNING])
    # A different request in the same second is not a replay.
    other = SLACK_BODY + b"&x=1"
    verifier.verify(other, ts, slack_signature(SIGNING, ts, other), [SIGNING])


def test_slack_failed_requests_do_not_poison_the_cache() -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    genuine = slack_signature(SIGNING, ts, SLACK_BODY)
    # An attacker who saw the signature sends it first with another body: rejected ...
    with pytest.raises(VerificationError, match="does not match"):
        verifier.verify(b"forged", ts, genuine, [SIGNING])
    assert verifier.replay_cache_len == 0
    # ... and the genuine request still goes through.
    verifier.verify(SLACK_BODY, ts, genuine, [SIGNING])
    assert verifier.replay_cache_len == 1


def test_slack_replay_cache_expires_with_the_window() -> None:
    verifier, clock = make_verifier()
    ts = str(NOW)
    signature = slack_signature(SIGNING, ts, SLACK_BODY)
    verifier.verify(SLACK_BODY, ts, signature, [SIGNING])
    clock.value = NOW + 300  # last second the timestamp is accepted: still a replay
    with pytest.raises(VerificationError, match="replay"):
        verifier.verify(SLACK_BODY, ts, signature, [SIGNING])
    clock.value = NOW + 301  # now the timestamp check refuses it on its own
    with pytest.raises(VerificationError, match="outside the allowed window"):
        verifier.verify(SLACK_BODY, ts, signature, [SIGNING])
    assert verifier.replay_cache_len == 1
    fresh_ts = str(NOW + 301)
    verifier.verify(SLACK_BODY, fresh_ts, slack_signature(SIGNING, fresh_ts, SLACK_BODY), [SIGNING])
    assert verifier.replay_cache_len == 1  # the expired entry was dropped


def test_slack_replay_cache_is_bounded() -> None:
    verifier, _ = make_verifier(replay_cache_size=3)
    requests = []
    for i in range(5):
        ts = str(NOW - 100 + i)  # distinct timestamps: a known expiry order
        requests.append((ts, slack_signature(SIGNING, ts, SLACK_BODY)))
        verifier.verify(SLACK_BODY, ts, requests[-1][1], [SIGNING])
        assert verifier.replay_cache_len == min(i + 1, 3)
    # The newest entries are kept ...
    for ts, signature in requests[2:]:
        with pytest.raises(VerificationError, match="replay"):
            verifier.verify(SLACK_BODY, ts, signature, [SIGNING])
    # ... and the one closest to expiry was the one dropped.
    verifier.verify(SLACK_BODY, *requests[0], [SIGNING])
    assert verifier.replay_cache_len == 3


def test_slack_concurrent_duplicates_accept_exactly_one() -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    signature = slack_signature(SIGNING, ts, SLACK_BODY)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def deliver() -> None:
        barrier.wait()
        try:
            verifier.verify(SLACK_BODY, ts, signature, [SIGNING])
            result = "accepted"
        except VerificationError as error:
            result = error.reason
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["accepted"] + ["request was already received (replay)"] * 7


def test_slack_reason_reveals_no_secret() -> None:
    verifier, _ = make_verifier()
    ts = str(NOW)
    with pytest.raises(VerificationError) as caught:
        verifier.verify(b"x", ts, slack_signature(SIGNING, ts, SLACK_BODY), [SIGNING])
    assert SIGNING.decode() not in str(caught.value)
    assert slack_signature(SIGNING, ts, b"x")[3:] not in str(caught.value)


@pytest.mark.parametrize("kwargs", [{"window_s": 0}, {"replay_cache_size": 0}])
def test_slack_verifier_rejects_nonsense_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SlackVerifier(**kwargs)  # type: ignore[arg-type]

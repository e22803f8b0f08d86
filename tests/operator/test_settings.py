"""Operator settings from the environment and flags."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hiphops_operator.settings import Settings, SettingsError, parse_args, parse_duration


def test_environment_values_are_typed() -> None:
    settings = Settings.from_env(
        {
            "HIPHOPS_NAMESPACES": "team-a, team-b",
            "HIPHOPS_INTAKE_PORT": "9000",
            "HIPHOPS_INTAKE_TOKEN_FILE": "/var/run/hiphops/token",
            "HIPHOPS_IMAGE_ALLOW": "ghcr.io/acme/** busybox:*",
            "HIPHOPS_RUN_RETENTION": "3d",
            "HIPHOPS_JOB_DEFAULT_TIMEOUT": "10m",
            "HIPHOPS_JOB_AUTOMOUNT_TOKEN": "true",
            "HIPHOPS_PEERING_NAME": "hiphops",
            "HIPHOPS_PRIORITY": "7",
        }
    )
    assert settings.namespaces == ("team-a", "team-b") and not settings.clusterwide
    assert settings.intake_port == 9000
    assert settings.intake_token_file == Path("/var/run/hiphops/token")
    assert settings.image_allow == ("ghcr.io/acme/**", "busybox:*")
    assert settings.run_retention == timedelta(days=3)
    assert settings.job_default_timeout == 600.0
    assert settings.job_automount_token is True
    assert (settings.peering_name, settings.priority, settings.standalone) == ("hiphops", 7, False)


def test_defaults_are_cluster_wide_standalone_and_fail_closed() -> None:
    settings = Settings.from_env({})
    assert settings.clusterwide and settings.standalone
    assert settings.intake_token_file is None
    assert settings.image_allow == ()


def test_flags_win_over_the_environment() -> None:
    environ = {"HIPHOPS_INTAKE_PORT": "9000", "HIPHOPS_NAMESPACES": "x"}
    settings = parse_args(
        ["--intake-port", "9100", "--namespaces", "a,b", "--namespaces", "c"], environ
    )
    assert settings.intake_port == 9100
    assert settings.namespaces == ("a", "b", "c")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HIPHOPS_INTAKE_PORT": "http"}, "intake_port"),
        ({"HIPHOPS_INTAKE_PORT": "70000"}, "intake_port: 70000 is not a port number"),
        ({"HIPHOPS_RUN_RETENTION": "a week"}, "run_retention"),
        ({"HIPHOPS_JOB_AUTOMOUNT_TOKEN": "maybe"}, "job_automount_token"),
        ({"HIPHOPS_IMAGE_ALLOW": "ghcr.io/[acme"}, "image_allow"),
        ({"HIPHOPS_JOB_DEFAULT_TIMEOUT": "2h"}, "must not exceed job_max_timeout"),
        ({"HIPHOPS_CONCURRENCY": "0"}, "concurrency"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("250ms", 0.25),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds

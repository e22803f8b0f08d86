"""The operator's settings: one typed record, from flags and `HIPHOPS_*` environment variables.

Flags win over the environment, the environment over the defaults. The same record drives both
ways of starting the operator: `hiphops operator` (which calls `main.run(settings)`) and
`kopf run -m hiphops_operator.handlers` (where the startup handler reads the environment).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from hiphops.globs import GlobError, compile_glob

ENV_PREFIX: Final = "HIPHOPS_"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class SettingsError(ValueError):
    """A setting has a value the operator cannot use; the message names the setting."""


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `12h`, `7d` or `250ms`. Raises ValueError."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 15m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _words(text: str) -> tuple[str, ...]:
    return tuple(word for word in re.split(r"[\s,]+", text) if word)


@dataclass(frozen=True)
class Settings:
    """Everything the operator can be told. Durations are seconds unless typed as timedelta."""

    # Scope: the namespaces whose Sensors, Integrations and SensorRuns the operator serves;
    # empty = every namespace (cluster-wide).
    namespaces: tuple[str, ...] = ()
    # The Kubernetes API server URL; None = in-cluster service account, else kubeconfig.
    kube_api: str | None = None
    # A bearer token file for `kube_api` (ignored without it).
    kube_token_file: Path | None = None
    # The intake the webhook gateway calls: POST /intake, plus /readyz and /healthz.
    intake_host: str = "0.0.0.0"
    intake_port: int = 8081
    # The shared secret the gateway presents (a mounted Secret key). Without it every intake
    # request is refused: the intake fails closed.
    intake_token_file: Path | None = None
    # Prometheus metrics on their own port (0 = not served).
    metrics_port: int = 9090
    # Also serve the webhook gateway's routes in this process (0 = not served): a one-process
    # installation, and the e2e test's way in.
    gateway_port: int = 0
    # k8s.run_job: the service account task pods run as, the images they may use (glob patterns
    # with GitHub Actions semantics, `**` crossing `/`; empty = any image), and the Job limits.
    task_service_account: str = "hiphops-task"
    image_allow: tuple[str, ...] = ()
    job_default_timeout: float = 600.0
    job_max_timeout: float = 3600.0
    job_ttl: float = 3600.0
    job_poll_interval: float = 2.0
    job_run_as_user: int = 65532
    job_automount_token: bool = False
    # Finished SensorRuns are deleted this long after they finished.
    run_retention: timedelta = timedelta(days=7)
    retention_interval: float = 3600.0
    # kopf peering: None = standalone (one replica). With a name, the replica with the highest
    # priority executes and serves; `priority` None = a random one, so that replicas differ.
    peering_name: str | None = None
    priority: int | None = None
    leadership_interval: float = 5.0
    # How often referenced Secrets are read again, and credentials checked against the tool.
    secret_refresh_interval: float = 60.0
    credential_check_interval: float = 600.0
    # Handlers running at once across all runs.
    concurrency: int = 16
    # The largest SensorRun written (event + sensor snapshot + status), in serialized bytes;
    # etcd refuses objects above ~1.5 MiB.
    max_run_bytes: int = 1_000_000
    # Sensor statistics (lastMatched, lastRun, counters) are written at most this often.
    status_flush_interval: float = 5.0
    # Who this replica is in Kubernetes Events (the pod name in a cluster).
    identity: str = field(default_factory=lambda: os.environ.get("POD_ID") or socket.gethostname())

    def __post_init__(self) -> None:
        for name in ("intake_port", "metrics_port", "gateway_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"{name}: {port} is not a port number")
        for name in (
            "job_default_timeout",
            "job_max_timeout",
            "job_poll_interval",
            "retention_interval",
            "leadership_interval",
            "secret_refresh_interval",
            "credential_check_interval",
            "status_flush_interval",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.job_default_timeout > self.job_max_timeout:
            raise SettingsError("job_default_timeout must not exceed job_max_timeout")
        if self.job_ttl < 0:
            raise SettingsError("job_ttl must not be negative")
        if self.concurrency < 1:
            raise SettingsError("concurrency must be at least 1")
        if self.max_run_bytes < 10_000:
            raise SettingsError("max_run_bytes is too small to hold a run")
        for pattern in self.image_allow:
            try:
                compile_glob(pattern)
            except GlobError as error:
                raise SettingsError(f"image_allow: {error}") from None

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return self.peering_name is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `HIPHOPS_<FIELD>` variables (e.g. HIPHOPS_INTAKE_PORT); lists are
        comma- or space-separated, durations like `30s` or `7d`."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _convert(item.name, raw)
        return cls(**values)


_TYPES: Final[dict[str, str]] = {
    "namespaces": "words",
    "image_allow": "words",
    "kube_token_file": "path",
    "intake_token_file": "path",
    "intake_port": "int",
    "metrics_port": "int",
    "gateway_port": "int",
    "job_run_as_user": "int",
    "concurrency": "int",
    "max_run_bytes": "int",
    "priority": "int",
    "job_automount_token": "bool",
    "run_retention": "timedelta",
    "job_default_timeout": "duration",
    "job_max_timeout": "duration",
    "job_ttl": "duration",
    "job_poll_interval": "duration",
    "retention_interval": "duration",
    "leadership_interval": "duration",
    "secret_refresh_interval": "duration",
    "credential_check_interval": "duration",
    "status_flush_interval": "duration",
}


def _convert(name: str, raw: str) -> Any:
    kind = _TYPES.get(name, "str")
    try:
        if kind == "words":
            return _words(raw)
        if kind == "path":
            return Path(raw) if raw else None
        if kind == "int":
            return int(raw)
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"{raw!r} is not true or false")
            return raw.lower() in ("1", "true", "yes")
        if kind == "timedelta":
            return timedelta(seconds=parse_duration(raw))
        if kind == "duration":
            return parse_duration(raw)
    except ValueError as error:
        raise SettingsError(f"{name}: {error}") from None
    if name in ("kube_api", "peering_name"):
        return raw or None  # set but empty: as if unset
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--<field>` flag per setting (e.g. `--intake-port`); unset flags keep the value
    from the environment. Use `from_args` to build the Settings."""
    for item in fields(Settings):
        flag = "--" + item.name.replace("_", "-")
        kind = _TYPES.get(item.name, "str")
        help_text = f"(env {ENV_PREFIX}{item.name.upper()})"
        if kind == "words":
            parser.add_argument(flag, action="append", metavar="VALUE", help=help_text)
        else:
            parser.add_argument(flag, metavar=kind.upper(), help=help_text)


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from parsed `add_arguments` flags over the environment."""
    environ = dict(os.environ if environ is None else environ)
    for item in fields(Settings):
        value = getattr(args, item.name, None)
        if value is None:
            continue
        if isinstance(value, list):  # repeated flags, each possibly a comma-separated list
            value = ",".join(value)
        environ[ENV_PREFIX + item.name.upper()] = str(value)
    return Settings.from_env(environ)


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from a command line (flags only) over the environment."""
    parser = argparse.ArgumentParser(prog="hiphops operator")
    add_arguments(parser)
    return from_args(parser.parse_args(list(argv)), environ)

"""The `hiphops` command line (DESIGN §6)."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from hiphops import __version__
from hiphops.loader import API_VERSION, LoadResult, load, parse_documents
from hiphops.preview import Preview, SensorPreview, preview
from hiphops.runs import RunRecord, TaskState
from hiphops.sensor import name_from_id

DEFAULT_STATE_DIR = ".hiphops"
#: Tasks only the Kubernetes operator runs; validation knows them all the same.
CLUSTER_ONLY_TASKS = frozenset({"k8s.run_job"})
DEFAULT_SECRET_ENV = "HIPHOPS_WEBHOOK_SECRET"


def _report_problems(result: LoadResult, out: TextIO) -> None:
    for problem in result.problems:
        print(problem, file=out)


def _read_event(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    event = json.loads(text)
    if not isinstance(event, dict):
        raise ValueError("the event must be a JSON object")
    return event


def _unknown_tasks(result: LoadResult) -> list[str]:
    """Warnings for task names no built-in handler serves (a typo shows here, not at run time)."""
    from hiphops.tasks import default_registry

    known = set(default_registry().names()) | CLUSTER_ONLY_TASKS
    warnings = []
    for location, sensor in result.sensors:
        for task in sensor.tasks:
            if task.name in known:
                continue
            close = difflib.get_close_matches(task.name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "`hiphops tasks` lists them"
            warnings.append(
                f'{location} (sensor "{sensor.id}"): warning: tasks[{task.index}].name: '
                f"no built-in handler for {task.name!r} ({hint})"
            )
    return warnings


def cmd_operator(args: argparse.Namespace) -> int:
    from hiphops_operator.main import run
    from hiphops_operator.settings import SettingsError, from_args

    try:
        settings = from_args(args)
    except SettingsError as exc:
        print(f"hiphops operator: {exc}", file=sys.stderr)
        return 2
    run(settings)
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from webhook_gateway.app import GatewaySettings
    from webhook_gateway.remote import GatewayOptions, run_gateway

    options = GatewayOptions(
        intake_url=args.intake_url,
        token_file=Path(args.intake_token_file),
        host=args.host,
        port=args.port,
        refresh_s=args.directory_refresh,
        settings=GatewaySettings(max_body_bytes=args.max_body_bytes),
    )
    try:
        asyncio.run(run_gateway(options))
    except (OSError, ValueError) as exc:
        print(f"hiphops gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from hiphops.tasks import default_registry

    for name in sorted(set(default_registry().names()) | CLUSTER_ONLY_TASKS):
        suffix = "  (on a cluster only)" if name in CLUSTER_ONLY_TASKS else ""
        print(name + suffix)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    result = load(args.paths)
    _report_problems(result, sys.stdout)
    for line in _unknown_tasks(result):
        print(line)
    if not result.sensors and not result.manifests and not result.problems:
        print("no sensor files found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    if result.errors:
        print(f"{len(result.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(result.sensors)} sensor(s) valid", file=sys.stderr)
    return 0


def _render_task_lines(item: SensorPreview) -> list[str]:
    lines = []
    for task in item.tasks:
        lines.append(f"    task {task.id} ({task.name}): {task.state.value}")
        if task.input is not None:
            rendered = json.dumps(task.input, indent=2, ensure_ascii=False)
            lines.extend("      " + line for line in f"input: {rendered}".splitlines())
        if task.reason:
            waiting = task.state is TaskState.PENDING and not task.reason.startswith("can never")
            lines.append(f"      {'waits on: ' if waiting else ''}{task.reason}")
        if task.error:
            lines.append(f"      error: {task.error}")
    return lines


def _render_text(result: Preview) -> str:
    hiphops = result.event.get("hiphops") if isinstance(result.event.get("hiphops"), dict) else {}
    assert isinstance(hiphops, dict)
    what = " ".join(str(hiphops[k]) for k in ("source", "event", "action") if hiphops.get(k))
    lines = [f"event: {what or '(no hiphops block)'} in project {result.event.get('project_id')!r}"]
    for item in result.matched:
        lines.append(
            f'MATCH    sensor "{item.sensor.id}" ({item.sensor.project}/{item.sensor.name})'
        )
        lines.extend(_render_task_lines(item))
    for item in result.not_matched:
        lines.append(
            f'no match sensor "{item.sensor.id}" ({item.sensor.project}/{item.sensor.name}): '
            f"{item.reason}"
        )
    total = len(result.matched) + len(result.not_matched)
    lines.append(f"{len(result.matched)} of {total} sensor(s) matched; no task was executed")
    return "\n".join(lines)


def _events_to_test(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The event file as normalized events: as it is, or normalized from a raw GitHub payload
    (`--github-event`), which yields the release manager's change event too."""
    event = _read_event(args.event)
    if args.github_event:
        from hiphops.events import Origin, normalize_github

        origin = Origin(args.project or "default", args.integration, "hiphops-test")
        return normalize_github(args.github_event, event, origin)
    if "hiphops" not in event or "project_id" not in event:
        print(
            f"{args.event}: warning: no `project_id`/`hiphops` block: this does not look like a "
            "normalized event (DESIGN §3), so sensors keyed on event.hiphops will not match; "
            "for a raw GitHub payload pass --github-event TYPE",
            file=sys.stderr,
        )
    event.setdefault("project_id", args.project or "default")
    return [event]


def cmd_test(args: argparse.Namespace) -> int:
    try:
        events = _events_to_test(args)
    except (OSError, ValueError) as exc:
        print(f"{args.event}: cannot read the event: {exc}", file=sys.stderr)
        return 2
    project = args.project or str(events[0]["project_id"])
    result = load(args.sensors, default_project=project)
    _report_problems(result, sys.stderr)
    sensors = [s for _, s in result.sensors]
    now = datetime.now(UTC)
    outcomes = [preview(sensors, event, now) for event in events]
    if args.output == "json":
        # One event: DESIGN §6's object. Several (a GitHub pull_request and its change event):
        # the same keys, matches of every event, each naming its event.
        data = outcomes[0].to_dict()
        if len(outcomes) > 1:
            data = {
                "events": [o.to_dict()["event"] for o in outcomes],
                "matched": [],
                "not_matched": [],
            }
            for outcome in outcomes:
                part = outcome.to_dict()
                for key in ("matched", "not_matched"):
                    data[key].extend({**item, "event": part["event"]} for item in part[key])
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(_render_text(outcome) for outcome in outcomes))
    return 1 if result.errors else 0


def cmd_convert(args: argparse.Namespace) -> int:
    result = load(args.paths)
    if result.errors:
        _report_problems(result, sys.stderr)
        return 1
    manifests: list[dict[str, Any]] = []
    for path in sorted({location.file for location, _ in result.sensors}):
        for document in parse_documents(Path(path).read_text(encoding="utf-8")):
            if isinstance(document, dict) and document.get("resource") == "sensor":
                manifests.append(_to_manifest(document, args.namespace))
    if not manifests:
        print("no Hiphops-form sensors (`resource: sensor`) found", file=sys.stderr)
        return 1
    yaml.safe_dump_all(
        manifests, sys.stdout, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return 0


def _to_manifest(document: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name_from_id(document["id"])}
    if namespace:
        metadata["namespace"] = namespace
    spec = {k: v for k, v in document.items() if k != "resource"}
    return {"apiVersion": API_VERSION, "kind": "Sensor", "metadata": metadata, "spec": spec}


def cmd_serve(args: argparse.Namespace) -> int:
    # The gateway is imported here, not at the top: the engine does not depend on it, and the
    # other commands stay quick to start.
    from webhook_gateway.local import ServeOptions, load_local, serve

    setup = load_local(args.paths, project=args.project)
    for line in setup.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if setup.errors:
        for line in setup.errors:
            print(line, file=sys.stderr)
        print(f"{len(setup.errors)} error(s): not serving", file=sys.stderr)
        return 1
    if not setup.sensors:
        print("warning: no sensors loaded: every event will match nothing", file=sys.stderr)
    options = ServeOptions(
        host=args.host,
        port=args.port,
        state_dir=Path(args.state_dir),
        dry_run=args.dry_run,
        concurrency=args.concurrency,
    )
    asyncio.run(serve(setup, options))
    return 0


def _open_store(state_dir: str) -> Any:
    from hiphops.store import SQLiteRunStore

    path = Path(state_dir) / "runs.db"
    if not path.exists():
        raise FileNotFoundError(f"no runs recorded in {state_dir} (start `hiphops serve` first)")
    return SQLiteRunStore(path)


def _run_json(record: RunRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "sensor": record.sensor_id,
        "sensor_name": record.sensor,
        "project": record.project,
        "state": record.state.value,
        "started": record.started,
        "finished": record.finished,
        "error": record.error,
        "delivery": (record.event.get("hiphops") or {}).get("delivery"),
        "tasks": [
            {
                "id": t.id,
                "name": t.name,
                "state": t.state.value,
                "input": t.input,
                "result": t.result,
                "error": t.error,
                "reason": t.reason,
                "attempts": t.attempts,
                "times": t.times,
            }
            for t in record.tasks
        ],
    }


def _run_text(record: RunRecord) -> str:
    lines = [
        f"run {record.name}: {record.state.value}",
        f'  sensor "{record.sensor_id}" ({record.project}/{record.sensor})',
        f"  started {record.started}"
        + (f", finished {record.finished}" if record.finished else ""),
    ]
    if record.error:
        lines.append(f"  error: {record.error}")
    for task in record.tasks:
        lines.append(f"  task {task.id} ({task.name}): {task.state.value}")
        for label, value in (("input", task.input), ("result", task.result)):
            if value is not None:
                rendered = json.dumps(value, indent=2, ensure_ascii=False)
                lines.extend("    " + line for line in f"{label}: {rendered}".splitlines())
        if task.error:
            lines.append(f"    error: {task.error}")
        if task.reason:
            lines.append(f"    {task.reason}")
    return "\n".join(lines)


def cmd_runs(args: argparse.Namespace) -> int:
    try:
        store = _open_store(args.state_dir)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        if args.runs_command == "show":
            stored = store.get(args.name)
            if stored is None:
                print(f"no run named {args.name!r} in {args.state_dir}", file=sys.stderr)
                return 1
            record = stored.record
            if args.output == "json":
                print(json.dumps(_run_json(record), indent=2, ensure_ascii=False))
            else:
                print(_run_text(record))
            return 0
        records = store.list(limit=args.limit)
    finally:
        store.close()
    if args.output == "json":
        print(json.dumps([_run_json(r) for r in records], indent=2, ensure_ascii=False))
        return 0
    if not records:
        print("no runs yet")
    for r in records:
        tasks = " ".join(f"{t.id}:{t.state.value}" for t in r.tasks)
        print(f"{r.name}  {r.state.value:<8}  {r.started}  {r.sensor_id!r}  {tasks}")
    return 0


def _read_secret(args: argparse.Namespace) -> bytes:
    if args.secret_file:
        return Path(args.secret_file).read_bytes().strip()
    value = os.environ.get(args.secret_env)
    if not value:
        raise ValueError(
            f"no secret: set {args.secret_env} (or --secret-env NAME / --secret-file PATH)"
        )
    return value.encode()


def cmd_send(args: argparse.Namespace) -> int:
    import httpx

    from hiphops.send import SendError, github_webhook, slack_webhook, source_of

    try:
        event = _read_event(args.event)
        secret = _read_secret(args)
        if source_of(args.to) == "github":
            hook = github_webhook(event, secret, event_type=args.event_type, delivery=args.delivery)
        else:
            hook = slack_webhook(event, secret, delivery=args.delivery)
    except (OSError, ValueError, SendError) as exc:
        print(f"cannot send: {exc}", file=sys.stderr)
        return 2
    try:
        response = httpx.post(args.to, content=hook.body, headers=hook.headers, timeout=30)
    except httpx.HTTPError as exc:
        print(f"cannot send to {args.to}: {exc}", file=sys.stderr)
        return 1
    print(f"{response.status_code} {response.reason_phrase}")
    if response.content:
        print(response.text)
    return 0 if response.is_success else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiphops", description="Event-driven automation for software delivery."
    )
    parser.add_argument("--version", action="version", version=f"hiphops {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check sensors and manifests; exit 1 on errors")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    validate.set_defaults(func=cmd_validate)

    test = commands.add_parser(
        "test", help="show what sensors would do with an event; executes nothing"
    )
    test.add_argument("--sensors", nargs="+", required=True, metavar="PATH")
    test.add_argument("--event", required=True, metavar="EVENT.json", help="a JSON file, or -")
    test.add_argument("--output", choices=("text", "json"), default="text")
    test.add_argument(
        "--project", help="project of sensors without a namespace (default: the event's project_id)"
    )
    test.add_argument(
        "--github-event",
        metavar="TYPE",
        help="the file is a raw GitHub payload of this X-GitHub-Event type (e.g. pull_request)",
    )
    test.add_argument(
        "--integration", default="github", help="with --github-event: the integration's name"
    )
    test.set_defaults(func=cmd_test)

    convert = commands.add_parser("convert", help="Hiphops sensor files to Sensor manifests")
    convert.add_argument("paths", nargs="+", metavar="PATH")
    convert.add_argument("--namespace", help="metadata.namespace for the manifests")
    convert.set_defaults(func=cmd_convert)

    operator = commands.add_parser("operator", help="run the Kubernetes operator")
    from hiphops_operator.settings import add_arguments

    add_arguments(operator)
    operator.set_defaults(func=cmd_operator)

    gateway = commands.add_parser(
        "gateway", help="run the webhook gateway alone, in front of the operator's intake"
    )
    gateway.add_argument("--host", default="0.0.0.0")
    gateway.add_argument("--port", type=int, default=8080)
    gateway.add_argument(
        "--intake-url", required=True, metavar="URL", help="the operator's intake, .../intake"
    )
    gateway.add_argument(
        "--intake-token-file", required=True, metavar="PATH", help="the shared intake token"
    )
    gateway.add_argument(
        "--directory-refresh",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often to fetch the integrations from the operator",
    )
    gateway.add_argument(
        "--max-body-bytes", type=int, default=25 * 1024 * 1024, help="larger webhooks get 413"
    )
    gateway.set_defaults(func=cmd_gateway)

    tasks = commands.add_parser("tasks", help="list the built-in task handlers")
    tasks.set_defaults(func=cmd_tasks)

    serve = commands.add_parser("serve", help="the whole product in one process, no cluster")
    serve.add_argument(
        "paths", nargs="+", metavar="PATH", help="sensors, Integrations and Secrets (files/folders)"
    )
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: loopback)"
    )
    serve.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR")
    serve.add_argument(
        "--dry-run", action="store_true", help="record what each task would do; call nothing"
    )
    serve.add_argument(
        "--project",
        default="default",
        help="project of sensors and integrations without a namespace",
    )
    serve.add_argument("--concurrency", type=int, default=16, help="tasks running at once")
    serve.set_defaults(func=cmd_serve)

    runs = commands.add_parser("runs", help="the run records of local mode")
    runs.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR")
    runs.add_argument("--output", choices=("text", "json"), default="text")
    runs.add_argument("--limit", type=int, default=50)
    runs.set_defaults(func=cmd_runs, runs_command=None)
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="show NAME")
    show = runs_commands.add_parser("show", help="one run, whole")
    show.add_argument("name")
    show.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR")
    show.add_argument("--output", choices=("text", "json"), default="text")

    send = commands.add_parser("send", help="sign and post a sample webhook")
    send.add_argument("event", metavar="EVENT.json")
    send.add_argument(
        "--to", required=True, metavar="URL", help=".../hooks/<github|slack>/<ns>/<name>"
    )
    send.add_argument(
        "--secret-env",
        default=DEFAULT_SECRET_ENV,
        metavar="NAME",
        help=f"environment variable holding the secret (default {DEFAULT_SECRET_ENV})",
    )
    send.add_argument("--secret-file", metavar="PATH", help="file holding the secret")
    send.add_argument("--event-type", help="X-GitHub-Event for a raw payload")
    send.add_argument("--delivery", help="delivery id (default: a new one each time)")
    send.set_defaults(func=cmd_send)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hiphops` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # `send` prints the response itself
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The `hiphops` command line (DESIGN §6)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from hiphops import __version__
from hiphops.loader import API_VERSION, LoadResult, load, parse_documents
from hiphops.preview import Preview, SensorPreview, preview
from hiphops.sensor import name_from_id


def _report_problems(result: LoadResult, out: TextIO) -> None:
    for problem in result.problems:
        print(problem, file=out)


def _read_event(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    event = json.loads(text)
    if not isinstance(event, dict):
        raise ValueError("the event must be a JSON object")
    return event


def cmd_validate(args: argparse.Namespace) -> int:
    result = load(args.paths)
    _report_problems(result, sys.stdout)
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
            lines.append(f"      {task.reason}")
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


def cmd_test(args: argparse.Namespace) -> int:
    try:
        event = _read_event(args.event)
    except (OSError, ValueError) as exc:
        print(f"{args.event}: cannot read the event: {exc}", file=sys.stderr)
        return 2
    if "hiphops" not in event or "project_id" not in event:
        print(
            f"{args.event}: warning: no `project_id`/`hiphops` block: this does not look like a "
            "normalized event (DESIGN §3), so sensors keyed on event.hiphops will not match",
            file=sys.stderr,
        )
    project = args.project or str(event.get("project_id") or "default")
    event.setdefault("project_id", project)
    result = load(args.sensors, default_project=project)
    _report_problems(result, sys.stderr)
    outcome = preview([s for _, s in result.sensors], event, datetime.now(UTC))
    if args.output == "json":
        print(json.dumps(outcome.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(_render_text(outcome))
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
    test.set_defaults(func=cmd_test)

    convert = commands.add_parser("convert", help="Hiphops sensor files to Sensor manifests")
    convert.add_argument("paths", nargs="+", metavar="PATH")
    convert.add_argument("--namespace", help="metadata.namespace for the manifests")
    convert.set_defaults(func=cmd_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hiphops` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

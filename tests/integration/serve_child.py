"""`hiphops serve` with two test task handlers, run as a child process by test_serve.py.

`test.record` appends "<task> <attempt>" to $CALLS and returns; `test.hang` does the same and
then, while $HANG is set, never returns — so the test can kill the process mid-task.
Usage: python tests/integration/serve_child.py PORT STATE_DIR PATH...
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from hiphops.tasks import TaskCall, default_registry
from webhook_gateway.local import ServeOptions, load_local, serve


def _record(call: TaskCall) -> None:
    with open(os.environ["CALLS"], "a", encoding="utf-8") as calls:
        calls.write(f"{call.task_id} {call.attempt}\n")


async def record(call: TaskCall) -> dict[str, str]:
    _record(call)
    return {"task": call.task_id}


async def hang(call: TaskCall) -> dict[str, str]:
    _record(call)
    if os.environ.get("HANG"):
        await asyncio.Event().wait()
    return {"task": call.task_id}


def main() -> None:
    port, state_dir, *paths = sys.argv[1:]
    registry = default_registry()
    registry.register("test.record", record)
    registry.register("test.hang", hang)
    setup = load_local(paths, project="demo")
    assert not setup.errors, setup.errors
    options = ServeOptions(port=int(port), state_dir=Path(state_dir))
    asyncio.run(serve(setup, options, registry=registry))


if __name__ == "__main__":
    main()

"""The `log.*` integration: a demo task that needs no credentials and touches no tool."""

from __future__ import annotations

import json
import logging
from typing import Any

from hiphops.tasks.registry import TaskCall

logger = logging.getLogger("hiphops.tasks.log")


async def message(call: TaskCall) -> dict[str, Any]:
    """`log.message`: log the task's input and return it as `{"logged": input}`."""
    logger.info(
        "run %s task %s: %s",
        call.run,
        call.task_id,
        json.dumps(call.input, ensure_ascii=False, sort_keys=True, default=str),
    )
    return {"logged": dict(call.input)}

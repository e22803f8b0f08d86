"""Running the operator: `run(settings)` (what `hiphops operator` calls) and `main(argv)`.

`run` starts kopf with the handlers of `hiphops_operator.handlers` and the scope and peering of
the settings; the startup handler then starts the intake, the executor (resuming unfinished
runs) and the rest (see `runtime`). It returns when the operator stops (SIGINT/SIGTERM in the
main thread, or `stop_flag`).
"""

from __future__ import annotations

import logging
import random
import sys
import threading
from collections.abc import Sequence

import kopf

from .runtime import MEMO_SETTINGS
from .settings import Settings, SettingsError, parse_args


def run(
    settings: Settings,
    *,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    memo: kopf.Memo | None = None,
) -> None:
    """Run the operator until it is stopped. `stop_flag` stops it from another thread;
    `ready_flag` is set once kopf has started (startup handlers done); `memo` is the memo the
    handlers share (the startup handler puts the runtime into it under `MEMO_RUNTIME`)."""
    from . import handlers  # noqa: F401 - registers the handlers with kopf

    # With peering, replicas need different priorities: kopf pauses every replica that ties.
    memo = memo if memo is not None else kopf.Memo()
    memo[MEMO_SETTINGS] = settings
    priority = settings.priority
    if priority is None:
        priority = random.randint(1, 1_000_000)
    kopf.run(
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        standalone=settings.standalone,
        peering_name=settings.peering_name,
        priority=priority,
        memo=memo,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`hiphops operator [--flag value ...]`: settings from flags over `HIPHOPS_*` variables."""
    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv)
    except SettingsError as error:
        print(f"hiphops operator: {error}", file=sys.stderr)
        return 2
    kopf.configure(log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("hiphops").setLevel(logging.INFO)
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every benchmark, one after the other: `python -m bench` (or `make bench`)."""

from __future__ import annotations

import sys

from bench import gateway, js_eval, matcher


def main() -> int:
    print("== matcher ==")
    matcher.main()
    print("\n== JavaScript sandbox ==")
    js_eval.main()
    print("\n== gateway ==")
    return gateway.main([])


if __name__ == "__main__":
    sys.exit(main())

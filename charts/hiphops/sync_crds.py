"""Generate the chart's CRDs from the top-level crds/: `python charts/hiphops/sync_crds.py`.

The top-level crds/*.yaml are the source; charts/hiphops/crds/ holds byte-identical copies (Helm
installs a chart's crds/ before its templates) plus kopf-peering.yaml, which is maintained in the
chart itself. Copies whose source is gone are removed. `--check` changes nothing and exits 1
when the chart's CRDs differ from what this script would write (tests/chart runs the same check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

CHART: Final = Path(__file__).resolve().parent
SOURCE: Final = CHART.parent.parent / "crds"
TARGET: Final = CHART / "crds"
#: Files of the chart's crds/ that are not copies of the top-level crds/.
OWN: Final = frozenset({"kopf-peering.yaml"})


def expected(source: Path = SOURCE) -> dict[str, bytes]:
    """The copies the chart's crds/ must hold, by file name."""
    return {path.name: path.read_bytes() for path in sorted(source.glob("*.yaml"))}


def differences(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """What differs between the chart's CRDs and the source, one line each; empty when in sync."""
    wanted = expected(source)
    found = {path.name: path.read_bytes() for path in target.glob("*.yaml") if path.name not in OWN}
    problems = [f"missing copy: {name}" for name in sorted(wanted.keys() - found.keys())]
    problems += [f"no source for: {name}" for name in sorted(found.keys() - wanted.keys())]
    problems += [
        f"differs from crds/{name}"
        for name in sorted(wanted.keys() & found.keys())
        if wanted[name] != found[name]
    ]
    return problems


def sync(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """Write the copies and remove stale ones; the files changed."""
    changed = []
    wanted = expected(source)
    target.mkdir(parents=True, exist_ok=True)
    for name, content in wanted.items():
        path = target / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            changed.append(name)
    for path in sorted(target.glob("*.yaml")):
        if path.name not in wanted and path.name not in OWN:
            path.unlink()
            changed.append(path.name)
    return changed


def main(argv: list[str] | None = None) -> int:
    """Entry point: sync, or with `--check` only report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences; change nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for line in problems:
            print(f"charts/hiphops/crds: {line}", file=sys.stderr)
        if problems:
            print("run: python charts/hiphops/sync_crds.py", file=sys.stderr)
        return 1 if problems else 0
    for name in sync():
        print(f"charts/hiphops/crds/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

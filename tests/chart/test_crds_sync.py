"""The chart's CRDs are generated from the top-level crds/ (charts/hiphops/sync_crds.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.chart.conftest import CHART, ROOT


def load_sync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_sync_crds", CHART / "sync_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNC = load_sync()


def test_chart_crds_are_identical_to_the_top_level_crds() -> None:
    assert SYNC.differences() == [], "run: python charts/hiphops/sync_crds.py"
    sources = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sources, "no CRDs in crds/"
    for name in sources:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes()
    extra = {p.name for p in (CHART / "crds").glob("*")} - set(sources)
    assert extra == set(SYNC.OWN)


def test_check_command_exits_zero_when_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, str(CHART / "sync_crds.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def make_tree(tmp_path: Path) -> tuple[Path, Path]:
    source, target = tmp_path / "crds", tmp_path / "chart-crds"
    source.mkdir()
    (source / "a.hiphops.io.yaml").write_text("kind: CustomResourceDefinition  # a\n")
    (source / "b.hiphops.io.yaml").write_text("kind: CustomResourceDefinition  # b\n")
    target.mkdir()
    (target / "kopf-peering.yaml").write_text("kept\n")
    (target / "stale.hiphops.io.yaml").write_text("gone upstream\n")
    return source, target


def test_differences_name_missing_stale_and_edited_copies(tmp_path: Path) -> None:
    source, target = make_tree(tmp_path)
    (target / "b.hiphops.io.yaml").write_text("edited by hand\n")
    assert SYNC.differences(source, target) == [
        "missing copy: a.hiphops.io.yaml",
        "no source for: stale.hiphops.io.yaml",
        "differs from crds/b.hiphops.io.yaml",
    ]


def test_sync_writes_copies_removes_stale_ones_and_keeps_its_own(tmp_path: Path) -> None:
    source, target = make_tree(tmp_path)
    changed = SYNC.sync(source, target)
    assert sorted(changed) == ["a.hiphops.io.yaml", "b.hiphops.io.yaml", "stale.hiphops.io.yaml"]
    assert SYNC.differences(source, target) == []
    assert (target / "kopf-peering.yaml").read_text() == "kept\n"
    assert not (target / "stale.hiphops.io.yaml").exists()
    assert SYNC.sync(source, target) == []  # idempotent

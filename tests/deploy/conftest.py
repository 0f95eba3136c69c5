"""Fixtures of the deployment tests: the validators installed once per session, and the
manifest sources (k8s/ and the Helm chart rendered with default and CI values) on disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from deploy_support import ROOT, Source, k8s_files, run, write_rendered

SOURCES = ["k8s", "helm-default", "helm-ci"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "container: builds and runs the image with podman (`make test-container`, not `make pytest`)",
    )


@pytest.fixture(scope="session", autouse=True)
def deploy_tools() -> None:
    """Make sure the validators are there (a no-op taking well under a second once installed)."""
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:  # install into the venv running the tests
        env["VENV"] = sys.prefix
    proc = run(["bash", str(ROOT / "scripts" / "install_deploy_tools.sh")], env=env, timeout=900)
    assert proc.returncode == 0, f"install_deploy_tools.sh failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rendered")


@pytest.fixture(scope="session")
def sources(rendered_dir: Path) -> dict[str, Source]:
    out = {"k8s": Source("k8s", k8s_files())}
    for name in ("helm-default", "helm-ci"):
        out[name] = write_rendered(name, rendered_dir / name)
    return out


@pytest.fixture(params=SOURCES)
def source(request: pytest.FixtureRequest, sources: dict[str, Source]) -> Source:
    return sources[request.param]

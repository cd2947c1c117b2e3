"""Where the master key comes from: `$TIERGATE_MASTER_KEY` over the config's `master_key`, said at start-up
without the key; a config with neither starts with a warning. Driven through `tiergate serve`."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from tests.support import free_port, running

KEY = "sk-admin-from-the-environment-0123456789"


def serve(tmp_path: Path, config: str, env: dict[str, str]) -> tuple[int, str]:
    """Start `tiergate serve` on `config`; (status of GET /admin/tenants with KEY, the start-up log)."""
    path = tmp_path / "tiergate.yaml"
    path.write_text(f"database_url: sqlite:///{tmp_path}/t.db\n{config}")
    port, log = free_port(), tmp_path / "serve.log"
    args = [sys.executable, "-m", "tiergate", "serve", "--config", str(path), "--port", str(port)]
    with running(args, url=f"http://127.0.0.1:{port}/healthz", env=env, cwd=tmp_path, output=log):
        status = httpx.get(
            f"http://127.0.0.1:{port}/admin/tenants", headers={"authorization": f"Bearer {KEY}"}
        ).status_code
    return status, log.read_text()


def test_a_config_without_master_key_takes_the_exported_one_and_says_so(tmp_path: Path) -> None:
    status, log = serve(tmp_path, "", {"TIERGATE_MASTER_KEY": KEY})
    assert status == 200, log
    assert "master key from $TIERGATE_MASTER_KEY (sk-admin-from...)" in log
    assert KEY not in log


def test_the_environment_overrides_the_config_and_the_log_says_it_does(tmp_path: Path) -> None:
    status, log = serve(
        tmp_path, "master_key: sk-written-in-the-file-000000000\n", {"TIERGATE_MASTER_KEY": KEY}
    )
    assert status == 200, log
    assert (
        f"master key from $TIERGATE_MASTER_KEY (it overrides the master_key of {tmp_path}/tiergate.yaml)"
        in log
    )
    assert "sk-written-in-the-file-000000000" not in log and KEY not in log


def test_the_config_key_names_its_source_and_no_key_at_all_is_a_warning(tmp_path: Path) -> None:
    status, log = serve(
        tmp_path, "master_key: env:ADMIN_KEY\n", {"ADMIN_KEY": KEY, "TIERGATE_MASTER_KEY": ""}
    )
    assert status == 200, log
    assert (
        f"master key from the master_key of {tmp_path}/tiergate.yaml (env:ADMIN_KEY) (sk-admin-from...)"
        in log
    )
    status, log = serve(tmp_path, "", {"TIERGATE_MASTER_KEY": ""})
    assert status == 401
    assert "WARNING" in log and "no master key: /admin and every master-key call answer 401" in log

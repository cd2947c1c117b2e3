"""The whole harness once, briefly: it must run, measure real answers and leave no process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
RUN = ROOT / "bench" / "run.py"


def test_missing_tools_are_named_with_how_to_install_them(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick"],
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "apt-get install -y wrk" in done.stderr


def test_unknown_scenarios_are_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--only", "nope"], capture_output=True, text=True, timeout=60
    )
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        pytest.skip("nginx and wrk are needed to get past the tool check")
    assert done.returncode == 2 and "unknown scenario(s) nope" in done.stderr


@pytest.mark.e2e
@pytest.mark.skipif(
    shutil.which("wrk") is None or shutil.which("nginx") is None,
    reason="needs nginx and wrk (apt-get install -y nginx wrk)",
)
def test_a_short_run_measures_the_gateway_and_the_floor(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    args = [
        sys.executable, str(RUN), "--quick", "--only", "gateway", "--duration", "1", "--warmup", "0",
        "--ttft-requests", "8", "--ttft-concurrency", "1", "--no-pin", "--output", str(out),
    ]  # fmt: skip
    # Temporary files (nginx prefix, gateway config) under tmp_path, so leftovers are found by their paths.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = {(r["scenario"], r["workload"]): r for r in doc["throughput"]}
    assert set(rows) == {("direct", "chat"), ("direct", "stream"), ("gateway", "chat"), ("gateway", "stream")}
    assert all(r["errors"] == 0 and r["rps"] > 0 for r in rows.values())
    assert rows["gateway", "chat"]["cpu_us_per_request"] > 0
    gateway = next(p for p in doc["processes"] if p["scenario"] == "gateway")
    assert gateway["startup_s"] > 0 and gateway["rss_mb"] > 0
    assert [t["scenario"] for t in doc["ttft"]] == ["gateway"]
    assert "| gateway | chat | 8 |" in doc["markdown"]["headline"]
    leftovers = subprocess.run(
        ["pgrep", "-af", str(tmp_path) + "/tiergate-bench-"], capture_output=True, text=True
    )
    assert leftovers.stdout == ""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench.harness.procs import (
    StartupFailed,
    busy_cores,
    cpu_seconds,
    descendants,
    free_port,
    rss_bytes,
    start,
)


def test_a_server_is_timed_to_its_first_healthy_answer_measured_and_stopped(tmp_path: Path) -> None:
    port = free_port()
    server = start(
        "http.server",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        health_url=f"http://127.0.0.1:{port}/",
        log=tmp_path / "server.log",
        timeout=20,
    )
    try:
        assert 0 < server.startup_s < 20
        assert server.pid in descendants(server.pid)
        assert rss_bytes(server.pid) > 1_000_000
        assert cpu_seconds(server.pid) >= 0
    finally:
        server.stop()
    assert server.proc.poll() is not None


def test_cpu_time_counts_child_processes() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert os.getpid() in descendants(os.getppid())


def test_a_process_that_exits_early_fails_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(StartupFailed, match="no config here"):
        start(
            "broken",
            [sys.executable, "-c", "import sys; print('no config here'); sys.exit(3)"],
            health_url=f"http://127.0.0.1:{free_port()}/",
            log=tmp_path / "broken.log",
            timeout=20,
        )


def test_busy_cores_is_a_share_of_the_machine() -> None:
    assert 0.0 <= busy_cores(0.2) <= (os.cpu_count() or 1)

from __future__ import annotations

import asyncio
import shutil

import pytest

from bench.inprocess import measure

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="needs nginx (apt-get install -y nginx)"
)


def test_the_in_process_benchmark_drives_a_virtual_key_scenario_and_reports_cpu_per_request() -> None:
    result = asyncio.run(measure("gateway-keys-sqlite", "stream", 16, 2, calls=False))
    assert result["cpu_us_best"] <= result["cpu_us_median"]
    assert result["cpu_us_best"] > 0


def test_the_call_count_mode_reports_python_calls_per_request() -> None:
    result = asyncio.run(measure("gateway", "chat", 16, 1, calls=True))
    assert result["calls_per_request"] > 100  # a request through the whole app, not an early refusal

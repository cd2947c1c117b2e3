from __future__ import annotations

import asyncio
from pathlib import Path

from bench.micro import gateway_settings, steps


def test_the_micro_benchmark_runs_every_step_on_the_gateway_scenarios_config(tmp_path: Path) -> None:
    assert gateway_settings().deployments
    loop = asyncio.new_event_loop()
    try:
        for name, step in steps(loop, tmp_path).items():
            assert step() is not None, name
    finally:
        loop.close()
    (segment,) = tmp_path.glob("tiergate-ledger-wal-*.jsonl")  # the append step wrote one row ahead
    assert len(segment.read_bytes().splitlines()) == 1

from __future__ import annotations

import asyncio

from bench.micro import gateway_settings, steps


def test_the_micro_benchmark_runs_every_step_on_the_gateway_scenarios_config() -> None:
    assert gateway_settings().deployments
    loop = asyncio.new_event_loop()
    try:
        for name, step in steps(loop).items():
            assert step() is not None, name
    finally:
        loop.close()

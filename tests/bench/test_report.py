from __future__ import annotations

from pathlib import Path

from bench.harness.profile import module_of, report, summarise
from bench.harness.report import aggregate, check_targets, headline, markdown_table
from bench.harness.runner import Measurement, ScenarioRun
from bench.harness.scenario import parse_scenario
from bench.harness.ttft import TTFT


def _run(rps: float, cpu: float, startup: float, ttft_added: float) -> ScenarioRun:
    run = ScenarioRun("gw", startup_s=startup, rss_mb=100.0)
    run.measurements = [Measurement("chat", 8, rps, 5.0, 9.0, cpu, int(rps * 10), 0)]
    run.ttft = {"stream": [TTFT(1, 100, 0.3, 0.3 + ttft_added, 0)]}
    return run


def test_repeats_are_reduced_to_medians_with_their_spread() -> None:
    rows, ttfts, processes = aggregate(
        [_run(1000, 300, 1.0, 1.0), _run(1600, 250, 0.8, 3.0), _run(1500, 260, 0.9, 1.5)]
    )
    (row,) = rows
    assert (row.rps, row.rps_min, row.rps_max, row.cpu_us_per_request, row.runs) == (1500, 1000, 1600, 260, 3)
    assert ttfts[0].added_ms == 1.5 and processes[0].startup_s == 0.9


def test_a_skipped_scenario_is_listed_with_its_reason() -> None:
    rows, ttfts, processes = aggregate([ScenarioRun("litellm", skipped="check failed: no fastapi")])
    table = headline(rows, ttfts, processes, 8, 1)
    assert table == [["litellm", "skipped: check failed: no fastapi", *[""] * 11]]
    assert "no fastapi" in markdown_table(["a", "b", *"cdefghijklm"], table)


def test_targets_are_checked_against_the_medians() -> None:
    text = (
        "bench: {workloads: [{name: chat}],"
        " targets: {min_rps: {chat: 1500}, max_startup_s: 0.85, max_ttft_added_ms: 2}}\n"
    )
    scenario = parse_scenario(text, Path("gw.yaml"))
    rows, ttfts, processes = aggregate(
        [_run(1000, 300, 1.0, 1.0), _run(1600, 250, 0.8, 3.0), _run(1500, 260, 0.9, 1.5)]
    )
    checks = {
        what.split(":")[0]: ok for _, what, ok in check_targets([scenario], rows, ttfts, processes, 8, 1)
    }
    assert checks == {
        "chat >= 1,500 req/s at 8 conns": True,
        "stream TTFT <= +2 ms at 1 client(s)": True,
        "startup <= 0.85 s": False,
    }


COLLAPSED = """process 1:"python";run (uvicorn/main.py:10);handle (tiergate/gateway/app.py:5);\
loads (tiergate/gateway/http/bodies.py:9) 6
process 1:"python";run (uvicorn/main.py:10);handle (tiergate/gateway/app.py:7) 2
process 1:"python";run (uvicorn/main.py:10) 2
"""


def test_profile_shares_count_self_at_the_leaf_and_inclusive_once_per_stack() -> None:
    total, shares = summarise(COLLAPSED)
    by_name = {s.function: s for s in shares}
    assert total == 10
    assert by_name["handle (tiergate/gateway/app.py)"].self_pct == 20
    assert by_name["handle (tiergate/gateway/app.py)"].inclusive_pct == 80
    assert by_name["run (uvicorn/main.py)"].inclusive_pct == 100
    assert module_of("loads (tiergate/gateway/http/bodies.py)") == "tiergate.gateway.http.bodies"
    text = report(COLLAPSED, cpu_us_per_request=500)
    assert "300.0" in text  # 60 % of 500 µs self time in loads

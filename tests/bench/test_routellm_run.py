"""The RouteLLM benchmark's report reads the numbers it tabulates, whatever else a replay's metrics hold."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from bench.routellm.run import markdown
from tiergate.admin.jobs.replay import ReplayResult


def _result(saved: float, first_promotion: int | None) -> ReplayResult:
    metrics: dict[str, Any] = {
        "requests": 100, "cost_saved_fraction": saved, "quality_ratio": 0.97, "steady_saved_fraction": saved,
        "steady_quality_ratio": 0.96, "evaluation_cost": 1.0, "teacher_cost": 50.0, "promotions": 2,
        "false_promotions": 0, "first_promotion_request": first_promotion,
        "evaluation_spend": {"shadow": {"student": 0.5}, "judge": {"teacher": 0.5}},
    }  # fmt: skip
    return cast(ReplayResult, SimpleNamespace(metrics=metrics))


def test_the_mean_row_averages_the_tabulated_figures_beside_nested_and_missing_metrics() -> None:
    text = markdown({"mmlu": [_result(0.2, 300), _result(0.4, None)]}, {"mmlu": {"oracle": 0.6}})
    mean = next(line for line in text.splitlines() if line.startswith("| **mean**"))
    assert mean == "| **mean** | 30.0% | 97.0% | 30.0% | 96.0% | 2.0% | 4 (0, 0.0%) |"

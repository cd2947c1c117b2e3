"""Settings of `tiergate replay` and the shadow shares they give, importable without numpy (the CLI reads
the defaults at start-up)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tiergate.policies.exploration import EVALUATION_SHARE, ExplorationConfig, sampling
from tiergate.policies.promotion import DomainEvidence, Plan, PromotionConfig
from tiergate.policies.route_table import Sampling


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    seed: int = 0
    shuffle: bool = False  # replay in a seeded random order instead of the file's
    interval: int = 500  # requests between promotion runs
    explore: float | None = None  # a fixed shadow share of unpromoted traffic instead of value of information
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    calibrate: float = 0.1  # share of evaluated agreements judged anyway, to estimate the incumbent's quality
    calibration_target: int = 300  # stop calibrating once this many agreements are judged
    evaluation_budget: float | None = EVALUATION_SHARE  # cap on evaluation spend; None: no cap
    clusters: int | None = None  # domains to discover (default: grows with the traces seen)
    floor: float = 0.25  # similarity below which a query is `general`
    promotion: PromotionConfig = field(default_factory=PromotionConfig)


def shares(
    evidence: Sequence[DomainEvidence],
    result: Plan,
    ladder: Sequence[str],
    config: ReplayConfig,
    *,
    judge_cost: float,
    next_run: float,
    unpriced: Sequence[str],
) -> dict[str, Sampling]:
    """The shadow shares replay follows after a promotion run: `exploration.sampling` on the run's evidence
    with the replay's settings (the live job's `promote.shadow_sampling` must give the same)."""
    return sampling(
        evidence,
        result,
        ladder,
        config.promotion,
        judge_cost=judge_cost,
        next_run=next_run,
        quality_budget=config.promotion.quality_budget,
        unpriced=unpriced,
        config=config.exploration,
    )

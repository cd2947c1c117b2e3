"""Settings of `tiergate replay`, importable without numpy (the CLI reads the defaults at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tiergate.policies.promotion import ENOUGH, EXPLORE, MONITOR, PromotionConfig


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    seed: int = 0
    shuffle: bool = False  # replay in a seeded random order instead of the file's
    interval: int = 500  # requests between promotion runs
    explore: float = EXPLORE  # shadow share of an unpromoted domain's requests while its evidence is short
    monitor: float = MONITOR  # shadow share once it has `enough`, and of promoted traffic
    enough: int = ENOUGH  # verdicts per (domain, candidate) before exploration slows to the monitoring share
    calibrate: float = 0.1  # share of evaluated agreements judged anyway, to estimate the incumbent's quality
    calibration_target: int = 300  # stop calibrating once this many agreements are judged
    evaluation_budget: float | None = None  # cap: evaluation spend at most this share of serving spend so far
    clusters: int | None = None  # domains to discover (default: grows with the traces seen)
    floor: float = 0.25  # similarity below which a query is `general`
    promotion: PromotionConfig = field(default_factory=PromotionConfig)

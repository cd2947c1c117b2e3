"""Settings of `tiergate replay`, importable without numpy (the CLI reads the defaults at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tiergate.policies.exploration import EVALUATION_SHARE, ExplorationConfig
from tiergate.policies.promotion import PromotionConfig


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

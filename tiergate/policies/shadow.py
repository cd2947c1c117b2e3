"""Shadow evaluation's two decisions: which candidates a served answer is compared with, and whether this
request is one of the sampled ones.

The candidate tier is the next cheaper tier than the one that served (or a tier the tenant names, when it
is cheaper), among the tiers that have serving deployments or registered candidate models. Registered
candidate models (`tiergate models register`) are compared on their tier's traffic: on requests their tier
served (could the new model replace the incumbent?) and on requests their tier is the candidate for (could
traffic move down to it?).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tiergate.policies.tiers import is_tier, tier_rank

CANDIDATE_MODES = ("next_cheaper", "none")


@dataclass(frozen=True, slots=True)
class Candidate:
    tier: str
    deployment_id: str | None = None  # None: the tier's serving deployments; else one registered model

    @property
    def key(self) -> str:
        return f"{self.tier}/{self.deployment_id or ''}"


def candidate_tier(served: str, tiers: Iterable[str], mode: str) -> str | None:
    """The tier a request served at `served` is compared with, among `tiers`; None: no comparison."""
    if mode == "none" or not is_tier(served):
        return None
    cheaper = sorted(
        (t for t in set(tiers) if is_tier(t) and tier_rank(t) < tier_rank(served)), key=tier_rank
    )
    if mode == "next_cheaper":
        return cheaper[-1] if cheaper else None
    return mode if mode in cheaper else None


def candidates(
    served: str,
    serving_tiers: Iterable[str],
    registered: Mapping[str, str],
    mode: str,
    include_registered: bool,
) -> tuple[Candidate, ...]:
    """Every candidate for one served answer. `registered` maps registered model ids to their tiers."""
    serving = set(serving_tiers)
    pool = serving | set(registered.values()) if include_registered else serving
    tier = candidate_tier(served, pool, mode)
    out = [Candidate(tier)] if tier is not None and tier in serving else []
    if include_registered:
        out += [
            Candidate(t, deployment_id)
            for deployment_id, t in sorted(registered.items())
            if t == served or (tier is not None and t == tier)
        ]
    return tuple(out)


def drawn(seed: int, request_id: str, key: str, fraction: float) -> bool:
    """A seeded, reproducible draw per (request id, key): the same request is drawn on every replica, and
    draws under different keys are independent."""
    if fraction <= 0:
        return False
    if fraction >= 1:
        return True
    digest = hashlib.blake2b(f"{seed}:{request_id}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def sampled(seed: int, request_id: str, candidate: Candidate, fraction: float) -> bool:
    """Whether a request is shadowed by `candidate`: a `drawn` per (request id, candidate)."""
    return drawn(seed, request_id, candidate.key, fraction)

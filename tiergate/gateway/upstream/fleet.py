"""The deployments that exist: the configured ones plus the models registered at run time, in one place.

`Fleet` is their only owner. It holds one immutable `FleetSnapshot` and replaces it whole when the
registered models change (`learning.registry`), so a reader sees either the old set or the new one, never
a mix. The router, the upstream client, admission, the cascade and shadow evaluation read the snapshot in
force; the configured `Settings` are never rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tiergate.gateway.config.settings import Deployment
from tiergate.policies.routing import Catalog


def build_catalog(deployments: Iterable[Deployment]) -> Catalog:
    """What can be asked for: the serving deployments (candidates serve nothing until promoted)."""
    tiers: dict[str, list[str]] = {}
    names: dict[str, list[str]] = {}
    deployment_tier: dict[str, str | None] = {}
    for d in deployments:
        if d.candidate:
            continue
        if d.tier is not None:
            tiers.setdefault(d.tier, []).append(d.id)
        names.setdefault(d.name, []).append(d.id)
        deployment_tier[d.id] = d.tier
    return Catalog(
        tiers={t: tuple(ids) for t, ids in tiers.items()},
        names={n: tuple(ids) for n, ids in names.items()},
        deployment_tier=deployment_tier,
    )


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """One version of the set of deployments, with what is derived from it. Never changed once built (plain
    dicts, not read-only proxies: `by_id` is read on every upstream call)."""

    deployments: tuple[Deployment, ...]  # configured first, then registered, in registration order
    catalog: Catalog
    # Every deployment by id, including registered ones since removed: a call already planned on one may
    # still be in flight, and its id must stay callable.
    by_id: Mapping[str, Deployment]
    candidates: Mapping[str, Deployment]  # registered candidates by id: evaluated, never served
    candidate_tiers: Mapping[str, str]  # registered candidate id -> its tier (what shadow draws from)

    def deployment(self, deployment_id: str) -> Deployment:
        return self.by_id[deployment_id]


def snapshot_of(
    configured: tuple[Deployment, ...],
    registered: tuple[Deployment, ...] = (),
    previous: Mapping[str, Deployment] | None = None,
) -> FleetSnapshot:
    deployments = (*configured, *registered)
    by_id = {**(previous or {}), **{d.id: d for d in deployments}}
    candidates = {d.id: d for d in registered if d.candidate}
    return FleetSnapshot(
        deployments=deployments,
        catalog=build_catalog(deployments),
        by_id=by_id,
        candidates=candidates,
        candidate_tiers={i: d.tier for i, d in candidates.items() if d.tier is not None},
    )


class Fleet:
    """The owner of the deployments that exist; `snapshot` is the version in force."""

    def __init__(self, configured: tuple[Deployment, ...]) -> None:
        self._configured = configured
        self.snapshot = snapshot_of(configured)

    @property
    def configured(self) -> tuple[Deployment, ...]:
        return self._configured

    def register(self, registered: tuple[Deployment, ...]) -> FleetSnapshot:
        """Replace the registered deployments (all of them) by `registered`; returns the new snapshot."""
        self.snapshot = snapshot_of(self._configured, registered, self.snapshot.by_id)
        return self.snapshot

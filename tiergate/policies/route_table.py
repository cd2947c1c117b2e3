"""The route-table document: what the admin API accepts and a store keeps, validated.

{"routes": {"billing": "student", "code": "ta"},        domain -> cheapest tier proven good enough
 "centroids": {"billing": [0.01, ...]},                  optional: unit vectors naming the domains
 "names": {"d3": "invoice / refund / card"},             optional: readable names of domain ids
 "sampling": {"billing": {"monitor": 0.03, "incumbent": "teacher"},    optional: shadow shares per domain
              "code": {"explore": 0.3}},
 "note": "promote billing after replay #12"}             optional

`names` is kept by `tiergate promote` for every domain id it has ever issued, retired ones included, so
that names survive re-clustering and an id is never handed out twice.

`sampling` is what `tiergate promote` computed with `policies.exploration.sampling`: for a promoted
domain, the share of its requests the incumbent (a tier above its route) serves while the routed tier is
shadowed against it (`monitor`); for an unpromoted one, the share shadowed at the next cheaper tier
(`explore`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiergate.policies.tiers import TIERS, is_tier, tier_rank

MAX_DOMAINS = 10_000
MAX_NAME = 200
MAX_NOTE = 20_000  # a promote run's changelog: a line per decision, up to a few hundred


class RouteTableError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Sampling:
    """A domain's shadow share: monitoring when `incumbent` is set (that tier serves `share` of the promoted
    domain's requests, the routed tier shadowed), else exploring (`share` shadowed at the next cheaper tier)."""

    share: float
    incumbent: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.incumbent is None:
            return {"explore": self.share}
        return {"monitor": self.share, "incumbent": self.incumbent}


@dataclass(frozen=True, slots=True)
class RouteTableDoc:
    routes: Mapping[str, str]
    centroids: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    note: str = ""
    names: Mapping[str, str] = field(default_factory=dict)
    sampling: Mapping[str, Sampling] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "routes": dict(self.routes),
            "centroids": {k: list(v) for k, v in self.centroids.items()},
            "note": self.note,
            "names": dict(self.names),
            "sampling": {k: v.as_json() for k, v in self.sampling.items()},
        }


_SAMPLING_SHAPE = '{} must be {{"explore": share}} or {{"monitor": share, "incumbent": tier}}'


def _share(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise RouteTableError(f"{where} must be a number between 0 and 1", where)
    return float(value)


def parse_sampling(raw: Any, routes: Mapping[str, str]) -> dict[str, Sampling]:
    """Validate the `sampling` field against the table's `routes`; raises RouteTableError naming the field.

    A monitoring entry needs its domain routed, and its incumbent more capable than the route: otherwise
    there is nothing to compare the routed tier with.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_DOMAINS:
        raise RouteTableError(
            f"'sampling' must be an object of at most {MAX_DOMAINS} domains' shares", "sampling"
        )
    out: dict[str, Sampling] = {}
    for name, entry in raw.items():
        where = f"sampling.{name}"
        if not name or not isinstance(entry, dict):
            raise RouteTableError(_SAMPLING_SHAPE.format(where), where)
        if set(entry) == {"explore"}:
            out[name] = Sampling(_share(entry["explore"], f"{where}.explore"))
            continue
        if set(entry) != {"monitor", "incumbent"}:
            raise RouteTableError(_SAMPLING_SHAPE.format(where), where)
        share = _share(entry["monitor"], f"{where}.monitor")
        incumbent, routed = entry["incumbent"], routes.get(name)
        if not isinstance(incumbent, str) or not is_tier(incumbent):
            raise RouteTableError(
                f"{where}.incumbent must be one of {', '.join(TIERS)}", f"{where}.incumbent"
            )
        if routed is None or tier_rank(incumbent) <= tier_rank(routed):
            raise RouteTableError(
                f"{where}.incumbent must be a tier above the domain's route ({routed or 'not routed'})",
                f"{where}.incumbent",
            )
        out[name] = Sampling(share, incumbent)
    return out


def parse_route_table(doc: Any, dimensions: int) -> RouteTableDoc:
    """Validate a document; raises RouteTableError naming the offending field."""
    if not isinstance(doc, dict):
        raise RouteTableError("the route table must be a JSON object", "body")
    unknown = set(doc) - {"routes", "centroids", "names", "sampling", "note", "base_version"}
    if unknown:
        raise RouteTableError(f"unknown field(s) {', '.join(sorted(unknown))}", sorted(unknown)[0])
    routes = doc.get("routes")
    if not isinstance(routes, dict):
        raise RouteTableError("'routes' must be an object mapping domain names to tiers", "routes")
    if len(routes) > MAX_DOMAINS:
        raise RouteTableError(f"'routes' may name at most {MAX_DOMAINS} domains", "routes")
    for name, tier in routes.items():
        if not name or not isinstance(tier, str) or not is_tier(tier):
            raise RouteTableError(f"routes.{name}: must be one of {', '.join(TIERS)}", f"routes.{name}")
    # null is "none"; any other falsy value ([], "", 0) is the wrong type, not an empty table.
    centroids_raw = {} if doc.get("centroids") is None else doc["centroids"]
    if not isinstance(centroids_raw, dict):
        raise RouteTableError("'centroids' must be an object mapping domain names to vectors", "centroids")
    centroids: dict[str, tuple[float, ...]] = {}
    for name, vector in centroids_raw.items():
        where = f"centroids.{name}"
        if (
            not isinstance(vector, list)
            or len(vector) != dimensions
            or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in vector
            )
        ):
            raise RouteTableError(f"{where} must be a list of {dimensions} finite numbers", where)
        if not any(vector):
            raise RouteTableError(f"{where} must not be the zero vector", where)
        centroids[name] = tuple(float(x) for x in vector)
    names = {} if doc.get("names") is None else doc["names"]
    if not isinstance(names, dict) or len(names) > MAX_DOMAINS:
        raise RouteTableError(f"'names' must be an object of at most {MAX_DOMAINS} domain names", "names")
    for name, readable in names.items():
        if not isinstance(readable, str) or not 0 < len(readable) <= MAX_NAME:
            raise RouteTableError(
                f"names.{name} must be a string of 1 to {MAX_NAME} characters", f"names.{name}"
            )
    note = "" if doc.get("note") is None else doc["note"]
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise RouteTableError(f"'note' must be a string of at most {MAX_NOTE} characters", "note")
    return RouteTableDoc(
        dict(routes), centroids, note, dict(names), parse_sampling(doc.get("sampling"), routes)
    )

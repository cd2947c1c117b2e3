"""The route-table document: what the admin API accepts and a store keeps, validated.

{"routes": {"billing": "student", "code": "ta"},        domain -> cheapest tier proven good enough
 "centroids": {"billing": [0.01, ...]},                  optional: unit vectors naming the domains
 "names": {"d3": "invoice / refund / card"},             optional: readable names of domain ids
 "note": "promote billing after replay #12"}             optional

`names` is kept by `tiergate promote` for every domain id it has ever issued, retired ones included, so
that names survive re-clustering and an id is never handed out twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiergate.policies.tiers import TIERS, is_tier

MAX_DOMAINS = 10_000
MAX_NAME = 200
MAX_NOTE = 20_000  # a promote run's changelog: a line per decision, up to a few hundred


class RouteTableError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class RouteTableDoc:
    routes: Mapping[str, str]
    centroids: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    note: str = ""
    names: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "routes": dict(self.routes),
            "centroids": {k: list(v) for k, v in self.centroids.items()},
            "note": self.note,
            "names": dict(self.names),
        }


def parse_route_table(doc: Any, dimensions: int) -> RouteTableDoc:
    """Validate a document; raises RouteTableError naming the offending field."""
    if not isinstance(doc, dict):
        raise RouteTableError("the route table must be a JSON object", "body")
    unknown = set(doc) - {"routes", "centroids", "names", "note", "base_version"}
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
    centroids_raw = doc.get("centroids") or {}
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
    names = doc.get("names") or {}
    if not isinstance(names, dict) or len(names) > MAX_DOMAINS:
        raise RouteTableError(f"'names' must be an object of at most {MAX_DOMAINS} domain names", "names")
    for name, readable in names.items():
        if not isinstance(readable, str) or not 0 < len(readable) <= MAX_NAME:
            raise RouteTableError(
                f"names.{name} must be a string of 1 to {MAX_NAME} characters", f"names.{name}"
            )
    note = doc.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise RouteTableError(f"'note' must be a string of at most {MAX_NOTE} characters", "note")
    return RouteTableDoc(dict(routes), centroids, note, dict(names))

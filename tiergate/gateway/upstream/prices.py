"""Fill in prices and output limits that the config leaves out, from litellm's bundled price map."""

from __future__ import annotations

from dataclasses import replace

from tiergate.gateway.config.settings import Deployment, Settings
from tiergate.gateway.upstream.litellm_data import price_map
from tiergate.policies.pricing import Price


def _lookup(deployment: Deployment) -> dict[str, object] | None:
    table = price_map()
    for key in (f"{deployment.provider}/{deployment.model}", deployment.model):
        entry = table.get(key)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return entry
    return None


def _per_mtok(value: object) -> float:
    return float(value) * 1_000_000 if isinstance(value, int | float) else 0.0


def with_known_prices(settings: Settings) -> Settings:
    """Settings whose deployments all carry a price (from the config, else the price map) and output limit.

    A deployment with no price anywhere is recorded as free and named in `notices`, so the operator knows
    its budgets cannot bind.
    """
    if all(d.price.known and d.max_output_tokens for d in settings.deployments):
        return settings
    notices = list(settings.notices)
    deployments = []
    for d in settings.deployments:
        entry = _lookup(d)
        if entry is not None:
            if not d.price.known:
                d = replace(
                    d,
                    price=Price(
                        _per_mtok(entry.get("input_cost_per_token")),
                        _per_mtok(entry.get("output_cost_per_token")),
                    ),
                    price_source="litellm price map",
                )
            limit = entry.get("max_output_tokens")
            if d.max_output_tokens is None and isinstance(limit, int) and limit > 0:
                d = replace(d, max_output_tokens=limit)
        if not d.price.known:
            notices.append(
                f"no price for {d.model} ({d.id}): its calls are recorded at $0; set input_cost_per_mtok and "
                "output_cost_per_mtok"
            )
        deployments.append(d)
    return replace(settings, deployments=tuple(deployments), notices=tuple(notices))

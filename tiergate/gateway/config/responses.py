"""The `responses:` section: what the Responses door keeps of the responses it stores, and for how long."""

from __future__ import annotations

from pydantic import Field

from tiergate.gateway.config.fieldtypes import Positive, PositiveSeconds, settings_dataclass


@settings_dataclass
class ResponsesPolicy:
    """Stored responses (`store`, `previous_response_id`, `GET` and `DELETE /v1/responses/{id}`)."""

    retention_days: Positive = Field(
        default=30,
        description="stored responses older than this are deleted (by every replica, in the background)",
    )
    prune_interval_s: PositiveSeconds = Field(
        default=3600.0, description="how often each replica deletes the stored responses past their retention"
    )
    max_chain: Positive = Field(
        default=100,
        description="the most stored responses a `previous_response_id` may bring in (its chain, read at once)",
    )

"""Deployments: the entries of `tiers:` and `models:`, LiteLLM's `model_list:` entries, and `Deployment`, the
upstream endpoint the gateway calls, which both become.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field

from tiergate.gateway.config.fieldtypes import (
    EnvStr,
    FileModel,
    NonEmpty,
    Positive,
    PositiveSeconds,
    Tier,
    settings_dataclass,
)
from tiergate.policies.pricing import Price

OPENAI_API_BASE = "https://api.openai.com/v1"
ANTHROPIC_API_BASE = "https://api.anthropic.com"

PerMillion = Annotated[float, Field(ge=0.0)]
ApiBase = Annotated[EnvStr, AfterValidator(lambda url: url.rstrip("/"))]
Provider = Annotated[str, AfterValidator(str.lower)]


@settings_dataclass
class Endpoint:
    """How to call one upstream model: the fields a config entry and a `Deployment` share."""

    model: Annotated[EnvStr, Field(min_length=1)] = Field(description="the model name sent upstream")
    provider: Provider = Field(
        default="openai",
        description="`openai` is any OpenAI-compatible server (the byte-level fast path); other providers "
        "(anthropic, bedrock, vertex_ai, ...) are translated by litellm",
    )
    api_base: ApiBase = Field(default=OPENAI_API_BASE, description="the upstream's base URL")
    api_key: EnvStr | None = Field(
        default=None, repr=False, description="the upstream's key (write `env:NAME`)"
    )
    timeout_s: PositiveSeconds = Field(default=60.0, description="seconds a call may take")
    max_output_tokens: Positive | None = Field(
        default=None,
        description="the model's output limit, the largest max_tokens a request for it may ask (default: from"
        " litellm's price map, else 1000000)",
    )
    extra_headers: Mapping[str, EnvStr] = Field(
        default_factory=dict,
        repr=False,
        description="headers sent with every call (values may be `env:NAME`)",
    )
    candidate: bool = Field(default=False, description="registered but serving no traffic until promoted")


@settings_dataclass
class DeploymentEntry(Endpoint):
    """One entry of `tiers.<tier>` or `models`."""

    name: str | None = Field(
        default=None, description="what clients put in `model` to address it (default: model)"
    )
    input_cost_per_mtok: PerMillion | None = Field(
        default=None, description="USD per million prompt tokens (default: from litellm's price map)"
    )
    output_cost_per_mtok: PerMillion | None = Field(
        default=None, description="USD per million completion tokens (default: from litellm's price map)"
    )

    def deployment(self, tier: str | None, index: int) -> Deployment:
        name = self.name or self.model
        priced = self.input_cost_per_mtok is not None or self.output_cost_per_mtok is not None
        return Deployment(
            id=f"{tier or 'untiered'}/{name}#{index}",
            name=name,
            tier=tier,
            price=Price(self.input_cost_per_mtok or 0.0, self.output_cost_per_mtok or 0.0)
            if priced
            else Price(),
            **{f: getattr(self, f) for f in Endpoint.__dataclass_fields__},
        )


@settings_dataclass
class Deployment(Endpoint):
    """One upstream model endpoint, as the gateway calls it."""

    id: str  # unique within the config, e.g. "student/gpt-4o-mini#0"
    name: str  # what clients put in `model` to address it
    tier: Tier | None
    price: Price = field(default_factory=Price)
    price_source: str = "config"

    @property
    def fast_path(self) -> bool:
        return self.provider == "openai"


# LiteLLM's entries carry many keys of its own (rpm, api_version, ...) that tiergate does not use: they are
# ignored, so that a LiteLLM config loads unchanged.
class _LiteLLMPart(FileModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    input_cost_per_token: PerMillion | None = Field(default=None, description="USD per prompt token")
    output_cost_per_token: PerMillion | None = Field(default=None, description="USD per completion token")


class LiteLLMParams(_LiteLLMPart):
    model: NonEmpty = Field(description="`provider/model`; a model without a provider is OpenAI's")
    api_base: EnvStr | None = Field(default=None, description="the upstream's base URL")
    api_key: EnvStr | None = Field(
        default=None, repr=False, description="the upstream's key (write `env:NAME`)"
    )
    timeout: PositiveSeconds | None = Field(default=None, description="seconds a call may take")


class LiteLLMInfo(_LiteLLMPart):
    tier: Tier | None = Field(default=None, description="the tier it serves (none: addressed by name only)")
    max_tokens: Positive | None = Field(default=None, description="the model's output limit")


class LiteLLMEntry(FileModel):
    """One entry of LiteLLM's `model_list`."""

    model_name: str = Field(description="what clients put in `model` to address it")
    litellm_params: LiteLLMParams
    model_info: LiteLLMInfo = LiteLLMInfo()

    def entry(self) -> DeploymentEntry:
        params, info = self.litellm_params, self.model_info
        provider, _, bare = params.model.partition("/")
        if not bare:  # LiteLLM treats an unprefixed model as OpenAI's
            provider, bare = "openai", params.model
        costs = {
            ours: None if per_token is None else per_token * 1_000_000
            for ours, per_token in (
                ("input_cost_per_mtok", _first(params.input_cost_per_token, info.input_cost_per_token)),
                ("output_cost_per_mtok", _first(params.output_cost_per_token, info.output_cost_per_token)),
            )
        }
        given: dict[str, Any] = {
            "api_base": params.api_base or (ANTHROPIC_API_BASE if provider == "anthropic" else None),
            "api_key": params.api_key,
            "timeout_s": params.timeout,
            "max_output_tokens": info.max_tokens,
            **costs,
        }
        return DeploymentEntry(
            name=self.model_name,
            model=bare,
            provider=provider,
            **{name: value for name, value in given.items() if value is not None},
        )


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)

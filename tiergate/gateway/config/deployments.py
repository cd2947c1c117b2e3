"""The deployment entries of the config (`tiers:`, `models:`, LiteLLM's `model_list:`) and the field checks
that `settings.py` shares with them. Errors name the offending field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tiergate.gateway.config.fields import ConfigError
from tiergate.policies.pricing import Price
from tiergate.policies.tiers import TIERS, is_tier

OPENAI_API_BASE = "https://api.openai.com/v1"


def env_value(value: Any, where: str, env: Mapping[str, str]) -> Any:
    """A value written `env:NAME` read from the environment (secrets never sit in the file); others as is."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:].strip()
        if name not in env or env[name] == "":
            raise ConfigError(f"{where} refers to env:{name}, which is not set")
        return env[name]
    return value


def typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if (
        isinstance(value, bool)
        and kind is not bool
        and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise ConfigError(f"{where} must be {kind_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise ConfigError(f"{where} must be {kind_name(kind)}, got {type(value).__name__}")
    return value


def kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "a mapping",
        list: "a list",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def number(value: Any, where: str, *, minimum: float = 0.0) -> float:
    number = float(typed(value, (int, float), where))
    if number < minimum:
        raise ConfigError(f"{where} must be >= {minimum}")
    return number


DEPLOYMENT_KEYS = {
    "model", "name", "api_base", "api_key", "provider", "input_cost_per_mtok", "output_cost_per_mtok",
    "timeout_s", "max_output_tokens", "extra_headers", "candidate",
}  # fmt: skip


def deployment(raw: Any, where: str, tier: str | None, index: int, env: Mapping[str, str]) -> dict[str, Any]:
    raw = typed(raw, dict, where)
    unknown = set(raw) - DEPLOYMENT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    model = typed(env_value(raw.get("model"), f"{where}.model", env), str, f"{where}.model")
    if not model:
        raise ConfigError(f"{where}.model must not be empty")
    name = typed(raw.get("name", model), str, f"{where}.name")
    out: dict[str, Any] = {
        "id": f"{tier or 'untiered'}/{name}#{index}",
        "name": name,
        "model": model,
        "tier": tier,
        "provider": typed(raw.get("provider", "openai"), str, f"{where}.provider").lower(),
        "api_base": typed(
            env_value(raw.get("api_base", OPENAI_API_BASE), f"{where}.api_base", env),
            str,
            f"{where}.api_base",
        ).rstrip("/"),
        "api_key": env_value(raw.get("api_key"), f"{where}.api_key", env),
        "timeout_s": number(raw.get("timeout_s", 60), f"{where}.timeout_s", minimum=0.001),
        "candidate": typed(raw.get("candidate", False), bool, f"{where}.candidate"),
    }
    if out["api_key"] is not None:
        typed(out["api_key"], str, f"{where}.api_key")
    if "max_output_tokens" in raw:
        out["max_output_tokens"] = int(
            number(raw["max_output_tokens"], f"{where}.max_output_tokens", minimum=1)
        )
    headers = typed(raw.get("extra_headers", {}), dict, f"{where}.extra_headers")
    out["extra_headers"] = {
        str(k): str(env_value(v, f"{where}.extra_headers.{k}", env)) for k, v in headers.items()
    }
    if "input_cost_per_mtok" in raw or "output_cost_per_mtok" in raw:
        out["price"] = Price(
            number(raw.get("input_cost_per_mtok", 0), f"{where}.input_cost_per_mtok"),
            number(raw.get("output_cost_per_mtok", 0), f"{where}.output_cost_per_mtok"),
        )
    return out


def from_litellm(entry: Any, where: str, env: Mapping[str, str]) -> tuple[str | None, dict[str, Any]]:
    """One `model_list` entry in LiteLLM's format, as a tiergate deployment mapping."""
    entry = typed(entry, dict, where)
    name = typed(entry.get("model_name"), str, f"{where}.model_name")
    params = typed(entry.get("litellm_params"), dict, f"{where}.litellm_params")
    info = typed(entry.get("model_info") or {}, dict, f"{where}.model_info")
    model = typed(params.get("model"), str, f"{where}.litellm_params.model")
    provider, _, bare = model.partition("/")
    if not bare:  # LiteLLM treats an unprefixed model as OpenAI's
        provider, bare = "openai", model
    raw: dict[str, Any] = {"name": name, "model": bare, "provider": provider}
    if "api_base" in params:
        raw["api_base"] = params["api_base"]
    elif provider == "anthropic":
        raw["api_base"] = "https://api.anthropic.com"
    if "api_key" in params:
        raw["api_key"] = params["api_key"]
    if "timeout" in params:
        raw["timeout_s"] = params["timeout"]
    if "max_tokens" in info:
        raw["max_output_tokens"] = info["max_tokens"]
    for ours, theirs in (
        ("input_cost_per_mtok", "input_cost_per_token"),
        ("output_cost_per_mtok", "output_cost_per_token"),
    ):
        value = params.get(theirs, info.get(theirs))
        if value is not None:
            raw[ours] = number(value, f"{where}.{theirs}") * 1_000_000
    tier = info.get("tier")
    if tier is not None and (not isinstance(tier, str) or not is_tier(tier)):
        raise ConfigError(f"{where}.model_info.tier must be one of {', '.join(TIERS)}")
    return tier, raw

"""Typed, frozen settings loaded once from a YAML file plus the environment.

The file is `ConfigFile`; `parse_settings` validates a document against it and converts it, once, into
`Settings`, which the gateway reads. Values written `env:NAME` are read from the environment, so secrets never
sit in the file. Two shapes of deployment list are accepted: tiergate's own `tiers:` mapping and LiteLLM's
`model_list:` (each entry's `model_name` becomes a deployment clients can ask for by that name;
`model_info.tier` puts it on a tier). Every field is listed in docs/configuration.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from tiergate.gateway.config import litellm
from tiergate.gateway.config.cache import CacheSection, CacheSettings
from tiergate.gateway.config.deployments import OPENAI_API_BASE, Deployment, DeploymentEntry, LiteLLMEntry
from tiergate.gateway.config.errors import OWN, ConfigError, shown_value
from tiergate.gateway.config.fieldtypes import (
    DatabaseUrl,
    EnvStr,
    FileModel,
    OneOf,
    Positive,
    PositiveSeconds,
    Tier,
    settings_dataclass,
    validate,
)
from tiergate.gateway.config.learning import LearningSection, LearningSettings
from tiergate.gateway.config.master_key import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE,
    local_master_key,
    master_key_in_force,
)
from tiergate.gateway.config.responses import ResponsesPolicy
from tiergate.gateway.config.routing import RoutingSection, RoutingSettings
from tiergate.policies.routing import EscalationPolicy

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_OPENAI_TIERS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MASTER_KEY_FILE",
    "AccountingPolicy",
    "ConfigFile",
    "Deployment",
    "GatewayOptions",
    "Settings",
    "UpstreamPolicy",
    "embedded_default",
    "load_settings",
    "parse_settings",
]

# What the embedded default puts on each tier when OPENAI_API_KEY is set.
DEFAULT_OPENAI_TIERS = {
    "student": "gpt-4o-mini",
    "ta": "gpt-4.1-mini",
    "teacher": "gpt-4o",
    "supervisor": "o1",
}
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
_ESCALATION = EscalationPolicy()
# The config a command finds in its working directory when neither --config nor $TIERGATE_CONFIG names one.
CONFIG_FILE = "tiergate.yaml"

Seconds = Annotated[float, Field(ge=0.0)]


@settings_dataclass
class UpstreamPolicy:
    """Retries, cooldowns and load balancing of the calls to deployments."""

    max_retries: Annotated[int, Field(ge=0)] = Field(
        default=2, description="retries per deployment, after the first attempt"
    )
    backoff_base_s: Seconds = Field(
        default=0.25, description="the first retry's backoff; it doubles with each retry"
    )
    backoff_max_s: Seconds = Field(default=4.0, description="the longest backoff")
    cooldown_failures: Positive = Field(
        default=3, description="failures in a row that put a deployment in cooldown"
    )
    cooldown_s: Seconds = Field(default=30.0, description="how long a deployment in cooldown is skipped")
    connect_timeout_s: PositiveSeconds = Field(
        default=10.0, description="seconds to open a connection upstream"
    )
    load_balance: Annotated[str, OneOf(("round_robin", "ordered"))] = Field(
        default="round_robin",
        description="round_robin: deployments of a tier share the load; ordered: the first is primary, the rest "
        "fallbacks",
    )


@settings_dataclass
class AccountingPolicy:
    """Virtual keys, limits, budgets and the ledger (the `accounting:` section of the config)."""

    key_refresh_s: PositiveSeconds = Field(
        default=1.0, description="how often changed keys and tenants are re-read (revocation without Redis)"
    )
    key_cache_ttl_s: PositiveSeconds = Field(
        default=60.0, description="a cached key is re-read from the database at least this often"
    )
    reservation_ttl_s: PositiveSeconds = Field(
        default=900.0,
        description="the longest a request holds a budget reservation: one whose settlement never came expires",
    )
    reservation_lease_s: PositiveSeconds = Field(
        default=30.0,
        description="with Redis, a replica renews the budget reservations it holds every third of this; a"
        " replica that died has its reservations released within it",
    )
    default_max_output_tokens: Positive = Field(
        default=4096, description="reserved when neither the request nor the model bounds the output"
    )
    prompt_token_margin: Annotated[float, Field(ge=0, le=10)] = Field(
        default=0.35,
        description="share added to the counted prompt tokens when a budget reservation is made for a model"
        " whose tokenizer the gateway does not have (not an OpenAI model); OpenAI models get 0.05. Both add"
        " 16 tokens",
    )
    ledger_batch_size: Positive = Field(default=500, description="ledger rows per insert")
    ledger_flush_s: PositiveSeconds = Field(
        default=0.05, description="a partial ledger batch waits at most this long"
    )
    ledger_fsync_s: PositiveSeconds = Field(
        default=0.05,
        description="how often the ledger's write-ahead file (in spill_dir) is fsync'd: a killed process loses no"
        " answered request's row, a machine crash at most those of this last interval",
    )
    ledger_retries: Positive = Field(
        default=3, description="attempts per batch before it goes to the spill file"
    )
    ledger_queue_size: Positive = Field(
        default=10_000,
        description="ledger rows waiting in memory (~0.6 KB each); more wait in a write-ahead file on disk",
    )
    spill_dir: str = Field(
        default=".",
        description="where the ledger's write-ahead file lives and batches that could not be written wait for"
        " the next start (give it a persistent volume; worker processes may share it)",
    )
    admin_max_body_bytes: Positive = Field(
        default=64 * 1024, description="the largest admin API request body"
    )
    rotation_grace_s: PositiveSeconds = Field(
        default=86_400.0, description="default time an old key keeps working after a rotation"
    )


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


@settings_dataclass
class GatewayOptions:
    """The top-level fields the file and `Settings` share."""

    master_key: EnvStr | None = Field(
        default=None,
        repr=False,
        description="the admin key (write `env:NAME`); $TIERGATE_MASTER_KEY, when set, overrides it",
    )
    database_url: DatabaseUrl = Field(
        default="sqlite:///./tiergate.db",
        description="tenants, keys, ledger, traces: sqlite:///FILE or postgresql://...",
    )
    redis_url: EnvStr | None = Field(
        default=None,
        repr=False,
        description="limits, budgets, revocations and the exact cache shared by replicas",
    )
    redis_prefix: str = Field(default="tiergate:", description="every Redis key and channel starts with it")
    chroma_url: EnvStr | None = Field(
        default=None, description="a Chroma server for the semantic cache (none: embedded)"
    )
    chroma_path: str = Field(default="./tiergate-chroma", description="the embedded Chroma's directory")
    upstream: UpstreamPolicy = UpstreamPolicy()
    accounting: AccountingPolicy = AccountingPolicy()
    responses: ResponsesPolicy = ResponsesPolicy()
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=10 * 1024 * 1024, description="the largest request body"
    )
    access_log: bool = Field(default=False, description="one structured line per request")
    drain_timeout_s: Seconds = Field(default=30.0, description="seconds requests in flight get at shutdown")
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        default=None,
        description="also serve /metrics without a key on this port (for scrapers in the cluster network)",
    )
    metrics_host: str = Field(default="127.0.0.1", description="the metrics port's address")
    metrics_tenant_label: bool = Field(default=True, description="label request metrics by tenant")
    log_level: Annotated[str, OneOf(LOG_LEVELS), BeforeValidator(_lower)] = Field(
        default="info", description="any case"
    )
    log_format: Annotated[str, OneOf(LOG_FORMATS)] = Field(default="text", description="text or json lines")
    log_prompts: bool = Field(
        default=False, description="prompt and answer text in the access log: debugging only"
    )


class EscalationSection(FileModel):
    """Which requests climb to a more capable tier when their tier fails."""

    tier_aliases: bool = Field(
        default=_ESCALATION.tier_aliases, description="requests for `auto` or a tier name"
    )
    deployments: bool = Field(default=_ESCALATION.deployments, description="requests naming a deployment")

    def policy(self) -> EscalationPolicy:
        return EscalationPolicy(tier_aliases=self.tier_aliases, deployments=self.deployments)


@settings_dataclass
class ConfigFile(GatewayOptions):
    """The config file (tiergate.yaml)."""

    tiers: Mapping[Tier, tuple[DeploymentEntry, ...]] = Field(
        default_factory=dict, description="the deployments of each tier"
    )
    models: tuple[DeploymentEntry, ...] = Field(
        default=(),
        description="deployments on no tier (embedding models, specialised models): addressed by name only",
    )
    model_list: tuple[LiteLLMEntry, ...] = Field(default=(), description="deployments in LiteLLM's format")
    # LiteLLM's sections, read by `litellm.translate` before validation; kept here so that they validate.
    litellm_settings: Mapping[str, Any] = Field(
        default_factory=dict, description="LiteLLM's: num_retries and request_timeout are read (see above)"
    )
    router_settings: Mapping[str, Any] = Field(
        default_factory=dict,
        description="LiteLLM's: num_retries, timeout, retry_after, cooldown_time, allowed_fails and "
        "routing_strategy: simple-shuffle are read (see above)",
    )
    general_settings: Mapping[str, Any] = Field(
        default_factory=dict, description="LiteLLM's: master_key is read (see above)"
    )
    environment_variables: Mapping[str, Any] = Field(
        default_factory=dict, description="LiteLLM's: not read (set the variables in the environment)"
    )
    escalation: EscalationSection = EscalationSection()
    routing: RoutingSection = RoutingSection()
    cache: CacheSection = CacheSection()
    learning: LearningSection = LearningSection()

    def deployments(self) -> tuple[Deployment, ...]:
        entries: list[tuple[str | None, DeploymentEntry]] = [
            (tier, entry) for tier, listed in self.tiers.items() for entry in listed
        ]
        entries += [(None, entry) for entry in self.models]
        entries += [(item.model_info.tier, item.entry()) for item in self.model_list]
        return tuple(entry.deployment(tier, index) for index, (tier, entry) in enumerate(entries))

    @model_validator(mode="after")
    def _embeddings_deployment_exists(self) -> Self:
        embeddings = self.routing.domains.embeddings
        if embeddings is not None and not any(
            embeddings.deployment in (d.name, d.tier) for d in self.deployments()
        ):
            raise PydanticCustomError(
                OWN + "embeddings",
                "{value} is neither a configured model name nor a configured tier",
                {
                    "field": "routing.domains.embeddings.deployment",
                    "value": shown_value(embeddings.deployment),
                },
            )
        return self

    def settings(self, source: str) -> Settings:
        shared = {f.name: getattr(self, f.name) for f in fields(GatewayOptions)}
        return Settings(
            **shared,
            deployments=self.deployments(),
            escalation=self.escalation.policy(),
            routing=self.routing.settings(),
            cache=self.cache.settings(),
            learning=self.learning.settings(),
            source=source,
        )


@settings_dataclass
class Settings(GatewayOptions):
    """What the gateway reads: the config file converted once, at start-up."""

    deployments: tuple[Deployment, ...] = ()
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    routing: RoutingSettings = Field(default_factory=lambda: RoutingSection().settings())
    cache: CacheSettings = Field(default_factory=lambda: CacheSection().settings())
    learning: LearningSettings = Field(default_factory=lambda: LearningSection().settings())
    source: str = "embedded default"
    master_key_source: str = ""  # where master_key came from, for the start-up line (empty: no master key)
    # Problems worth telling the operator at startup that do not stop the gateway.
    notices: tuple[str, ...] = ()
    # Files made while loading (a new master key): every command that loads settings says so.
    created: tuple[str, ...] = ()

    def deployment(self, deployment_id: str) -> Deployment:
        for d in self.deployments:
            if d.id == deployment_id:
                return d
        raise KeyError(deployment_id)


def parse_settings(doc: Any, *, env: Mapping[str, str] | None = None, source: str = "<config>") -> Settings:
    """Settings from a parsed YAML document; raises ConfigError naming the first bad field."""
    env = os.environ if env is None else env
    field, ignored = "master_key", list[str]()
    if litellm.is_litellm(doc):
        if "master_key" not in doc and "master_key" in (doc.get("general_settings") or {}):
            field = "general_settings.master_key"
        doc, ignored = litellm.translate(doc)
    try:
        settings = validate(ConfigFile, {} if doc is None else doc, env=env).settings(source)
    except ConfigError as exc:
        if exc.where != "master_key" or field == "master_key":
            raise
        raise ConfigError(f"{field}{str(exc)[len('master_key') :]}", field) from None
    spelled = doc.get("master_key") if isinstance(doc, dict) else None
    key, origin = master_key_in_force(settings.master_key, spelled, source, env, field)
    notices = (*settings.notices, *([litellm.ignored_notice(ignored)] if ignored else []))
    return replace(settings, master_key=key, master_key_source=origin, notices=notices)


def load_settings(path: str | os.PathLike[str] | None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `path`, else $TIERGATE_CONFIG, else ./tiergate.yaml when the working directory has one
    (what `tiergate demo` writes), else the embedded default."""
    env = os.environ if env is None else env
    path = path or env.get("TIERGATE_CONFIG") or None
    if path is None and Path(CONFIG_FILE).is_file():
        path = f"./{CONFIG_FILE}"
    if path is None:
        return embedded_default(env)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML's message spans lines (the offending line, a caret); the error is one line.
        raise ConfigError(f"{file} is not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_settings(doc, env=env, source=str(file))


def embedded_default(env: Mapping[str, str]) -> Settings:
    """No config file: SQLite in the working directory, OpenAI tiers when OPENAI_API_KEY is set."""
    notices: list[str] = []
    made: list[str] = []
    doc: dict[str, Any] = {}
    origin = None
    if not env.get(MASTER_KEY_ENV):
        doc["master_key"], created = local_master_key(Path(MASTER_KEY_FILE))
        origin = f"./{MASTER_KEY_FILE}" + (", created now" if created else "")
        if created:
            made.append(
                f"created a new master key in ./{MASTER_KEY_FILE} (no config file found; set {MASTER_KEY_ENV} "
                "to choose your own)"
            )
    if env.get("OPENAI_API_KEY"):
        doc["tiers"] = {
            tier: [
                {
                    "model": model,
                    "api_key": "env:OPENAI_API_KEY",
                    "api_base": env.get("OPENAI_BASE_URL", OPENAI_API_BASE),
                }
            ]
            for tier, model in DEFAULT_OPENAI_TIERS.items()
        }
    else:
        notices.append(
            "no upstream is configured: set OPENAI_API_KEY (OpenAI tiers gpt-4o-mini < gpt-4.1-mini < gpt-4o < o1), "
            "or pass --config FILE with your own tiers; `tiergate demo` runs with local stand-in models"
        )
    settings = parse_settings(doc, env=env, source="embedded default")
    return replace(
        settings,
        master_key_source=origin or settings.master_key_source,
        notices=(*settings.notices, *notices),
        created=tuple(made),
    )

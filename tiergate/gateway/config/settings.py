"""Typed, frozen settings loaded once from a YAML file plus the environment.

Values written `env:NAME` are read from the environment, so secrets never sit in the file. Two shapes of
deployment list are accepted: tiergate's own `tiers:` mapping and LiteLLM's `model_list:` (each entry's
`model_name` becomes a deployment clients can ask for by that name; `model_info.tier` puts it on a tier).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tiergate.gateway.config.cache import CacheSettings, parse_cache
from tiergate.gateway.config.deployments import (
    OPENAI_API_BASE,
    deployment,
    env_value,
    from_litellm,
    number,
    typed,
)
from tiergate.gateway.config.fields import ConfigError, SectionError
from tiergate.gateway.config.learning import LearningSettings, parse_learning
from tiergate.gateway.config.routing import DomainEmbeddings, RoutingSettings, parse_routing
from tiergate.policies.pricing import Price
from tiergate.policies.routing import EscalationPolicy
from tiergate.policies.tiers import TIERS, is_tier

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MASTER_KEY_FILE = "tiergate.master_key"
DEFAULT_DATABASE_URL = "sqlite:///./tiergate.db"
# What the embedded default puts on each tier when OPENAI_API_KEY is set.
DEFAULT_OPENAI_TIERS = {
    "student": "gpt-4o-mini",
    "ta": "gpt-4.1-mini",
    "teacher": "gpt-4o",
    "supervisor": "o1",
}


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream model endpoint."""

    id: str  # unique within the config, e.g. "student/gpt-4o-mini#0"
    name: str  # what clients put in `model` to address it
    model: str  # what is sent upstream
    tier: str | None
    provider: str = "openai"  # "openai" = any OpenAI-compatible server, taken on the byte-level fast path
    api_base: str = OPENAI_API_BASE
    api_key: str | None = field(default=None, repr=False)
    price: Price = field(default_factory=Price)
    price_source: str = "config"
    timeout_s: float = 60.0
    max_output_tokens: int | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    candidate: bool = False  # registered but serving no traffic until promoted

    @property
    def fast_path(self) -> bool:
        return self.provider == "openai"


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    max_retries: int = 2  # per deployment, after the first attempt
    backoff_base_s: float = 0.25
    backoff_max_s: float = 4.0
    cooldown_failures: int = 3
    cooldown_s: float = 30.0
    connect_timeout_s: float = 10.0
    # round_robin: deployments of a tier share the load; ordered: the first is primary, the rest fallbacks.
    load_balance: str = "round_robin"


@dataclass(frozen=True, slots=True)
class AccountingPolicy:
    """Virtual keys, limits, budgets and the ledger (the `accounting:` section of the config)."""

    key_refresh_s: float = 1.0  # how often changed keys and tenants are re-read (revocation without Redis)
    key_cache_ttl_s: float = 60.0  # a cached key is re-read from the database at least this often
    reservation_ttl_s: float = 900.0  # a reservation whose settlement never came (crashed replica) expires
    default_max_output_tokens: int = 4096  # reserved when neither the request nor the model bounds the output
    ledger_batch_size: int = 500
    ledger_flush_s: float = 0.05
    ledger_retries: int = 3  # attempts per batch before it goes to the spill file
    ledger_queue_size: int = 100_000
    spill_dir: str = "."  # where ledger batches that could not be written wait for the next start
    admin_max_body_bytes: int = 64 * 1024
    rotation_grace_s: float = 86_400.0  # default time an old key keeps working after a rotation


@dataclass(frozen=True, slots=True)
class Settings:
    master_key: str | None = field(default=None, repr=False)
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "tiergate:"  # every Redis key and channel starts with it (tests isolate themselves)
    accounting: AccountingPolicy = field(default_factory=AccountingPolicy)
    chroma_url: str | None = None
    chroma_path: str = "./tiergate-chroma"  # the embedded Chroma's directory when chroma_url is not set
    deployments: tuple[Deployment, ...] = ()
    upstream: UpstreamPolicy = field(default_factory=UpstreamPolicy)
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    learning: LearningSettings = field(default_factory=LearningSettings)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    access_log: bool = False
    drain_timeout_s: float = 30.0
    # Observability (docs/production.md): /metrics needs the master key on the main port; `metrics_port`
    # also serves it without a key on its own listener, for scrapers inside the cluster network.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_tenant_label: bool = True
    log_level: str = "info"
    log_format: str = "text"  # text | json
    log_prompts: bool = False  # prompt and answer text in the access log: debugging only
    source: str = "embedded default"
    # Problems worth telling the operator at startup that do not stop the gateway.
    notices: tuple[str, ...] = ()

    def deployment(self, deployment_id: str) -> Deployment:
        for d in self.deployments:
            if d.id == deployment_id:
                return d
        raise KeyError(deployment_id)


def _choice(value: Any, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        raise ConfigError(f"{where} must be one of {', '.join(options)}")
    return str(value)


def _port(value: Any, where: str) -> int | None:
    if value is None:
        return None
    port = typed(value, int, where)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where} must be a TCP port (1-65535)")
    return int(port)


_TOP_KEYS = {
    "master_key", "database_url", "redis_url", "chroma_url", "tiers", "models", "model_list", "upstream", "escalation",
    "max_body_bytes", "access_log", "drain_timeout_s", "metrics_port", "metrics_host", "metrics_tenant_label",
    "log_level", "log_format", "log_prompts", "redis_prefix", "chroma_path", "routing", "cache", "accounting",
    "learning",
}  # fmt: skip
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


def parse_settings(doc: Any, *, env: Mapping[str, str] | None = None, source: str = "<config>") -> Settings:
    """Build settings from a parsed YAML document; raises ConfigError naming the first bad field."""
    env = os.environ if env is None else env
    doc = typed(doc if doc is not None else {}, dict, "the config")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level field(s) {', '.join(sorted(unknown))}")

    raws: list[tuple[str | None, dict[str, Any], str]] = []
    tiers = typed(doc.get("tiers") or {}, dict, "tiers")
    for tier, entries in tiers.items():
        if not is_tier(tier):
            raise ConfigError(f"tiers.{tier}: not a tier (use {', '.join(TIERS)})")
        for i, entry in enumerate(typed(entries or [], list, f"tiers.{tier}")):
            raws.append((tier, entry, f"tiers.{tier}[{i}]"))
    # Deployments on no tier (embedding models, specialised models): addressed by name only.
    for i, entry in enumerate(typed(doc.get("models") or [], list, "models")):
        raws.append((None, entry, f"models[{i}]"))
    for i, entry in enumerate(typed(doc.get("model_list") or [], list, "model_list")):
        tier, raw = from_litellm(entry, f"model_list[{i}]", env)
        raws.append((tier, raw, f"model_list[{i}]"))

    deployments = []
    for index, (tier, raw, where) in enumerate(raws):
        deployments.append(deployment(raw, where, tier, index, env))

    upstream_raw = typed(doc.get("upstream") or {}, dict, "upstream")
    defaults = UpstreamPolicy()
    upstream = UpstreamPolicy(
        max_retries=int(
            number(upstream_raw.get("max_retries", defaults.max_retries), "upstream.max_retries")
        ),
        backoff_base_s=number(
            upstream_raw.get("backoff_base_s", defaults.backoff_base_s), "upstream.backoff_base_s"
        ),
        backoff_max_s=number(
            upstream_raw.get("backoff_max_s", defaults.backoff_max_s), "upstream.backoff_max_s"
        ),
        cooldown_failures=int(
            number(
                upstream_raw.get("cooldown_failures", defaults.cooldown_failures),
                "upstream.cooldown_failures",
                minimum=1,
            )
        ),
        cooldown_s=number(upstream_raw.get("cooldown_s", defaults.cooldown_s), "upstream.cooldown_s"),
        connect_timeout_s=number(
            upstream_raw.get("connect_timeout_s", defaults.connect_timeout_s),
            "upstream.connect_timeout_s",
            minimum=0.001,
        ),
        load_balance=_choice(
            upstream_raw.get("load_balance", defaults.load_balance),
            ("round_robin", "ordered"),
            "upstream.load_balance",
        ),
    )
    esc_raw = typed(doc.get("escalation") or {}, dict, "escalation")
    escalation = EscalationPolicy(
        tier_aliases=typed(esc_raw.get("tier_aliases", True), bool, "escalation.tier_aliases"),
        deployments=typed(esc_raw.get("deployments", False), bool, "escalation.deployments"),
    )
    try:
        routing, cache = parse_routing(doc.get("routing")), parse_cache(doc.get("cache"))
        learning = parse_learning(doc.get("learning"))
    except SectionError as exc:
        raise ConfigError(str(exc)) from None
    _check_domain_embeddings(routing.domains.embeddings, deployments)
    accounting = _accounting(typed(doc.get("accounting") or {}, dict, "accounting"))
    master_key = env_value(doc.get("master_key"), "master_key", env)
    if master_key is not None:
        typed(master_key, str, "master_key")
    return Settings(
        master_key=master_key,
        database_url=typed(
            env_value(doc.get("database_url", DEFAULT_DATABASE_URL), "database_url", env), str, "database_url"
        ),
        redis_url=env_value(doc.get("redis_url"), "redis_url", env),
        redis_prefix=typed(doc.get("redis_prefix", "tiergate:"), str, "redis_prefix"),
        accounting=accounting,
        chroma_url=env_value(doc.get("chroma_url"), "chroma_url", env),
        chroma_path=typed(doc.get("chroma_path", "./tiergate-chroma"), str, "chroma_path"),
        deployments=tuple(Deployment(**d) for d in deployments),
        upstream=upstream,
        escalation=escalation,
        routing=routing,
        cache=cache,
        learning=learning,
        max_body_bytes=int(
            number(doc.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES), "max_body_bytes", minimum=1024)
        ),
        access_log=typed(doc.get("access_log", False), bool, "access_log"),
        drain_timeout_s=number(doc.get("drain_timeout_s", 30.0), "drain_timeout_s"),
        metrics_port=_port(doc.get("metrics_port"), "metrics_port"),
        metrics_host=typed(doc.get("metrics_host", "127.0.0.1"), str, "metrics_host"),
        metrics_tenant_label=typed(doc.get("metrics_tenant_label", True), bool, "metrics_tenant_label"),
        log_level=_choice(str(doc.get("log_level", "info")).lower(), LOG_LEVELS, "log_level"),
        log_format=_choice(doc.get("log_format", "text"), LOG_FORMATS, "log_format"),
        log_prompts=typed(doc.get("log_prompts", False), bool, "log_prompts"),
        source=source,
    )


def _check_domain_embeddings(config: DomainEmbeddings | None, deployments: list[dict[str, Any]]) -> None:
    if config is None:
        return
    if not any(config.deployment in (d["name"], d["tier"]) for d in deployments):
        raise ConfigError(
            f"routing.domains.embeddings.deployment: {config.deployment!r} is neither a configured model name "
            "nor a configured tier"
        )


def _accounting(raw: dict[str, Any]) -> AccountingPolicy:
    defaults = AccountingPolicy()
    unknown = set(raw) - set(AccountingPolicy.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"accounting: unknown field(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        default = getattr(defaults, name)
        where = f"accounting.{name}"
        if isinstance(default, str):
            values[name] = typed(value, str, where)
        elif isinstance(default, int):
            values[name] = int(number(value, where, minimum=1))
        else:
            values[name] = number(value, where, minimum=0.001)
    return AccountingPolicy(**values)


def load_settings(path: str | os.PathLike[str] | None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `path`, or from $TIERGATE_CONFIG, or the embedded default when neither is given."""
    env = os.environ if env is None else env
    path = path or env.get("TIERGATE_CONFIG") or None
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
        raise ConfigError(f"{file} is not valid YAML: {exc}") from None
    return parse_settings(doc, env=env, source=str(file))


def embedded_default(env: Mapping[str, str]) -> Settings:
    """No config file: SQLite in the working directory, OpenAI tiers when OPENAI_API_KEY is set."""
    notices: list[str] = []
    master_key = env.get("TIERGATE_MASTER_KEY")
    if not master_key:
        master_key, created = _local_master_key(Path(MASTER_KEY_FILE))
        verb = "created" if created else "read"
        notices.append(
            f"master key {verb} in ./{MASTER_KEY_FILE} (set TIERGATE_MASTER_KEY to choose your own)"
        )
    doc: dict[str, Any] = {"master_key": master_key}
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
    return Settings(**{**_fields(settings), "notices": (*settings.notices, *notices)})


def _local_master_key(path: Path) -> tuple[str, bool]:
    """The embedded default's master key: kept in a file only its owner can read, made on first run."""
    try:
        return path.read_text(encoding="utf-8").strip(), False
    except FileNotFoundError:
        pass
    key = "sk-tg-master-" + secrets.token_urlsafe(24)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first
        return path.read_text(encoding="utf-8").strip(), False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    return key, True


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in Settings.__dataclass_fields__}

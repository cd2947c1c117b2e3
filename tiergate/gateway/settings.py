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

from tiergate.gateway.cache_settings import CacheSettings, parse_cache
from tiergate.gateway.config_fields import SectionError
from tiergate.gateway.learning_settings import LearningSettings, parse_learning
from tiergate.gateway.routing_settings import DomainEmbeddings, RoutingSettings, parse_routing
from tiergate.policies.pricing import Price
from tiergate.policies.routing import EscalationPolicy
from tiergate.policies.tiers import TIERS, is_tier

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MASTER_KEY_FILE = "tiergate.master_key"
DEFAULT_DATABASE_URL = "sqlite:///./tiergate.db"
OPENAI_API_BASE = "https://api.openai.com/v1"
# What the embedded default puts on each tier when OPENAI_API_KEY is set.
DEFAULT_OPENAI_TIERS = {
    "student": "gpt-4o-mini",
    "ta": "gpt-4.1-mini",
    "teacher": "gpt-4o",
    "supervisor": "o1",
}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending field."""


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


def _resolve(value: Any, where: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:].strip()
        if name not in env or env[name] == "":
            raise ConfigError(f"{where} refers to env:{name}, which is not set")
        return env[name]
    return value


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if (
        isinstance(value, bool)
        and kind is not bool
        and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise ConfigError(f"{where} must be {_kind_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise ConfigError(f"{where} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
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


def _number(value: Any, where: str, *, minimum: float = 0.0) -> float:
    number = float(_typed(value, (int, float), where))
    if number < minimum:
        raise ConfigError(f"{where} must be >= {minimum}")
    return number


def _choice(value: Any, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        raise ConfigError(f"{where} must be one of {', '.join(options)}")
    return str(value)


def _port(value: Any, where: str) -> int | None:
    if value is None:
        return None
    port = _typed(value, int, where)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where} must be a TCP port (1-65535)")
    return int(port)


_DEPLOYMENT_KEYS = {
    "model", "name", "api_base", "api_key", "provider", "input_cost_per_mtok", "output_cost_per_mtok",
    "timeout_s", "max_output_tokens", "extra_headers", "candidate",
}  # fmt: skip


def _deployment(raw: Any, where: str, tier: str | None, index: int, env: Mapping[str, str]) -> dict[str, Any]:
    raw = _typed(raw, dict, where)
    unknown = set(raw) - _DEPLOYMENT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    model = _typed(_resolve(raw.get("model"), f"{where}.model", env), str, f"{where}.model")
    if not model:
        raise ConfigError(f"{where}.model must not be empty")
    name = _typed(raw.get("name", model), str, f"{where}.name")
    out: dict[str, Any] = {
        "id": f"{tier or 'untiered'}/{name}#{index}",
        "name": name,
        "model": model,
        "tier": tier,
        "provider": _typed(raw.get("provider", "openai"), str, f"{where}.provider").lower(),
        "api_base": _typed(
            _resolve(raw.get("api_base", OPENAI_API_BASE), f"{where}.api_base", env), str, f"{where}.api_base"
        ).rstrip("/"),
        "api_key": _resolve(raw.get("api_key"), f"{where}.api_key", env),
        "timeout_s": _number(raw.get("timeout_s", 60), f"{where}.timeout_s", minimum=0.001),
        "candidate": _typed(raw.get("candidate", False), bool, f"{where}.candidate"),
    }
    if out["api_key"] is not None:
        _typed(out["api_key"], str, f"{where}.api_key")
    if "max_output_tokens" in raw:
        out["max_output_tokens"] = int(
            _number(raw["max_output_tokens"], f"{where}.max_output_tokens", minimum=1)
        )
    headers = _typed(raw.get("extra_headers", {}), dict, f"{where}.extra_headers")
    out["extra_headers"] = {
        str(k): str(_resolve(v, f"{where}.extra_headers.{k}", env)) for k, v in headers.items()
    }
    if "input_cost_per_mtok" in raw or "output_cost_per_mtok" in raw:
        out["price"] = Price(
            _number(raw.get("input_cost_per_mtok", 0), f"{where}.input_cost_per_mtok"),
            _number(raw.get("output_cost_per_mtok", 0), f"{where}.output_cost_per_mtok"),
        )
    return out


def _from_litellm(entry: Any, where: str, env: Mapping[str, str]) -> tuple[str | None, dict[str, Any]]:
    """One `model_list` entry in LiteLLM's format, as a tiergate deployment mapping."""
    entry = _typed(entry, dict, where)
    name = _typed(entry.get("model_name"), str, f"{where}.model_name")
    params = _typed(entry.get("litellm_params"), dict, f"{where}.litellm_params")
    info = _typed(entry.get("model_info") or {}, dict, f"{where}.model_info")
    model = _typed(params.get("model"), str, f"{where}.litellm_params.model")
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
            raw[ours] = _number(value, f"{where}.{theirs}") * 1_000_000
    tier = info.get("tier")
    if tier is not None and (not isinstance(tier, str) or not is_tier(tier)):
        raise ConfigError(f"{where}.model_info.tier must be one of {', '.join(TIERS)}")
    return tier, raw


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
    doc = _typed(doc if doc is not None else {}, dict, "the config")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level field(s) {', '.join(sorted(unknown))}")

    raws: list[tuple[str | None, dict[str, Any], str]] = []
    tiers = _typed(doc.get("tiers") or {}, dict, "tiers")
    for tier, entries in tiers.items():
        if not is_tier(tier):
            raise ConfigError(f"tiers.{tier}: not a tier (use {', '.join(TIERS)})")
        for i, entry in enumerate(_typed(entries or [], list, f"tiers.{tier}")):
            raws.append((tier, entry, f"tiers.{tier}[{i}]"))
    # Deployments on no tier (embedding models, specialised models): addressed by name only.
    for i, entry in enumerate(_typed(doc.get("models") or [], list, "models")):
        raws.append((None, entry, f"models[{i}]"))
    for i, entry in enumerate(_typed(doc.get("model_list") or [], list, "model_list")):
        tier, raw = _from_litellm(entry, f"model_list[{i}]", env)
        raws.append((tier, raw, f"model_list[{i}]"))

    deployments = []
    for index, (tier, raw, where) in enumerate(raws):
        deployments.append(_deployment(raw, where, tier, index, env))

    upstream_raw = _typed(doc.get("upstream") or {}, dict, "upstream")
    defaults = UpstreamPolicy()
    upstream = UpstreamPolicy(
        max_retries=int(
            _number(upstream_raw.get("max_retries", defaults.max_retries), "upstream.max_retries")
        ),
        backoff_base_s=_number(
            upstream_raw.get("backoff_base_s", defaults.backoff_base_s), "upstream.backoff_base_s"
        ),
        backoff_max_s=_number(
            upstream_raw.get("backoff_max_s", defaults.backoff_max_s), "upstream.backoff_max_s"
        ),
        cooldown_failures=int(
            _number(
                upstream_raw.get("cooldown_failures", defaults.cooldown_failures),
                "upstream.cooldown_failures",
                minimum=1,
            )
        ),
        cooldown_s=_number(upstream_raw.get("cooldown_s", defaults.cooldown_s), "upstream.cooldown_s"),
        connect_timeout_s=_number(
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
    esc_raw = _typed(doc.get("escalation") or {}, dict, "escalation")
    escalation = EscalationPolicy(
        tier_aliases=_typed(esc_raw.get("tier_aliases", True), bool, "escalation.tier_aliases"),
        deployments=_typed(esc_raw.get("deployments", False), bool, "escalation.deployments"),
    )
    try:
        routing, cache = parse_routing(doc.get("routing")), parse_cache(doc.get("cache"))
        learning = parse_learning(doc.get("learning"))
    except SectionError as exc:
        raise ConfigError(str(exc)) from None
    _check_domain_embeddings(routing.domains.embeddings, deployments)
    accounting = _accounting(_typed(doc.get("accounting") or {}, dict, "accounting"))
    master_key = _resolve(doc.get("master_key"), "master_key", env)
    if master_key is not None:
        _typed(master_key, str, "master_key")
    return Settings(
        master_key=master_key,
        database_url=_typed(
            _resolve(doc.get("database_url", DEFAULT_DATABASE_URL), "database_url", env), str, "database_url"
        ),
        redis_url=_resolve(doc.get("redis_url"), "redis_url", env),
        redis_prefix=_typed(doc.get("redis_prefix", "tiergate:"), str, "redis_prefix"),
        accounting=accounting,
        chroma_url=_resolve(doc.get("chroma_url"), "chroma_url", env),
        chroma_path=_typed(doc.get("chroma_path", "./tiergate-chroma"), str, "chroma_path"),
        deployments=tuple(Deployment(**d) for d in deployments),
        upstream=upstream,
        escalation=escalation,
        routing=routing,
        cache=cache,
        learning=learning,
        max_body_bytes=int(
            _number(doc.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES), "max_body_bytes", minimum=1024)
        ),
        access_log=_typed(doc.get("access_log", False), bool, "access_log"),
        drain_timeout_s=_number(doc.get("drain_timeout_s", 30.0), "drain_timeout_s"),
        metrics_port=_port(doc.get("metrics_port"), "metrics_port"),
        metrics_host=_typed(doc.get("metrics_host", "127.0.0.1"), str, "metrics_host"),
        metrics_tenant_label=_typed(doc.get("metrics_tenant_label", True), bool, "metrics_tenant_label"),
        log_level=_choice(str(doc.get("log_level", "info")).lower(), LOG_LEVELS, "log_level"),
        log_format=_choice(doc.get("log_format", "text"), LOG_FORMATS, "log_format"),
        log_prompts=_typed(doc.get("log_prompts", False), bool, "log_prompts"),
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
            values[name] = _typed(value, str, where)
        elif isinstance(default, int):
            values[name] = int(_number(value, where, minimum=1))
        else:
            values[name] = _number(value, where, minimum=0.001)
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

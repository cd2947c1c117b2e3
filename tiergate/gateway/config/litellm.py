"""LiteLLM proxy configs: what of `litellm_settings`, `router_settings` and `general_settings` tiergate reads.

A LiteLLM user's config should start tiergate as it is. The settings tiergate has an equivalent for are
written as tiergate's before the document is validated (so their values are checked like tiergate's own);
a setting also written the tiergate way keeps tiergate's value. Every other key of these sections is ignored
and named, all in one start-up warning: nothing LiteLLM would have done is dropped silently.

    router_settings.num_retries (or litellm_settings.num_retries)  -> upstream.max_retries
    router_settings.timeout (or litellm_settings.request_timeout)  -> each model_list entry's timeout
    router_settings.retry_after                                    -> upstream.backoff_base_s
    router_settings.cooldown_time                                  -> upstream.cooldown_s
    router_settings.allowed_fails (N)                              -> upstream.cooldown_failures (N + 1)
    router_settings.routing_strategy: simple-shuffle               -> upstream.load_balance: round_robin
    general_settings.master_key                                    -> master_key
"""

from __future__ import annotations

from typing import Any

SECTIONS = ("litellm_settings", "router_settings", "general_settings", "environment_variables")

# (section, key) -> the `upstream:` field it sets; later entries win (the router's own over litellm's).
_UPSTREAM = (
    (("litellm_settings", "num_retries"), "max_retries"),
    (("router_settings", "num_retries"), "max_retries"),
    (("router_settings", "retry_after"), "backoff_base_s"),
    (("router_settings", "cooldown_time"), "cooldown_s"),
)
_TIMEOUTS = (("litellm_settings", "request_timeout"), ("router_settings", "timeout"))
_SHUFFLE = "simple-shuffle"
_READ = {
    *(where for where, _ in _UPSTREAM),
    *_TIMEOUTS,
    ("router_settings", "allowed_fails"),
    ("general_settings", "master_key"),
}


def is_litellm(doc: Any) -> bool:
    return isinstance(doc, dict) and any(section in doc for section in SECTIONS)


def translate(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`doc` with the LiteLLM settings tiergate has an equivalent for written as tiergate's, and the
    `section.key` of every one it has none for (ignored)."""
    sections = {name: doc.get(name) or {} for name in SECTIONS}
    out = dict(doc)
    if not all(isinstance(value, dict) for value in sections.values()):
        return out, []  # not a mapping: validation names the section
    upstream: dict[str, Any] = {}
    for (section, key), field in _UPSTREAM:
        if key in sections[section]:
            upstream[field] = sections[section][key]
    fails = sections["router_settings"].get("allowed_fails")
    if fails is not None:
        # LiteLLM cools a deployment down once it has failed more than allowed_fails times.
        upstream["cooldown_failures"] = fails + 1 if isinstance(fails, int) else fails
    if sections["router_settings"].get("routing_strategy") == _SHUFFLE:
        upstream["load_balance"] = "round_robin"  # both spread calls evenly over a group's deployments
    read = _READ | ({("router_settings", "routing_strategy")} if "load_balance" in upstream else set())
    ignored = [f"{s}.{key}" for s in SECTIONS for key in sections[s] if (s, key) not in read]
    if upstream:
        written = doc.get("upstream")
        out["upstream"] = {**upstream, **(written if isinstance(written, dict) else {})}
    timeout = next((sections[s][k] for s, k in reversed(_TIMEOUTS) if sections[s].get(k) is not None), None)
    if timeout is not None and isinstance(doc.get("model_list"), list):
        out["model_list"] = [_with_timeout(entry, timeout) for entry in doc["model_list"]]
    if "master_key" not in doc and "master_key" in sections["general_settings"]:
        out["master_key"] = sections["general_settings"]["master_key"]
    return out, ignored


def _with_timeout(entry: Any, timeout: Any) -> Any:
    params = entry.get("litellm_params") if isinstance(entry, dict) else None
    if not isinstance(params, dict) or params.get("timeout") is not None:
        return entry
    return {**entry, "litellm_params": {**params, "timeout": timeout}}


def ignored_notice(ignored: list[str]) -> str:
    return (
        "LiteLLM settings tiergate has no equivalent for, ignored: "
        + ", ".join(ignored)
        + " (docs/configuration.md says what is read)"
    )

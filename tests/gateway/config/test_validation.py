"""One validation style for the whole file: unknown fields refused in every section with a suggestion,
strict types, and one line naming the path, the value and what is allowed."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.reference import json_schema
from tiergate.gateway.config.settings import parse_settings

# What a section needs to be valid apart from the field under test; `<...>` and `[]` as in the reference.
NEEDS: dict[str, dict[str, Any]] = {
    "tiers.<tier>[]": {"model": "m"},
    "models[]": {"model": "m"},
    "model_list[]": {"model_name": "n", "litellm_params": {"model": "m"}},
    "model_list[].litellm_params": {"model": "m"},
    "routing.rules[]": {"tier": "ta"},
    "routing.tenants.<tenant>.rules[]": {"tier": "ta"},
    "routing.rules[].when.header": {"name": "x-h"},
    "routing.tenants.<tenant>.rules[].when.header": {"name": "x-h"},
    "routing.domains.embeddings": {"deployment": "m", "dimensions": 4},
    "cache.semantic.domains.<domain>": {"threshold": 0.9},
    "cache.tenants.<tenant>.semantic.domains.<domain>": {"threshold": 0.9},
}
# LiteLLM's own keys are ignored so that a LiteLLM config loads unchanged (test below).
FOREIGN = {"model_list[].litellm_params", "model_list[].model_info"}
KEYS = {"tier": "student", "tenant": "acme", "domain": "billing", "name": "x"}


def sections(node: dict[str, Any], path: str, root: dict[str, Any]) -> set[str]:
    """Every path of the schema that holds fields of its own (a model), with the reference's placeholders."""
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    found: set[str] = set()
    for branch in node.get("anyOf", []):
        found |= sections(branch, path, root)
    if "properties" in node:
        found.add(path)
        for name, child in node["properties"].items():
            found |= sections(child, f"{path}.{name}" if path else name, root)
    if isinstance(node.get("items"), dict):
        found |= sections(node["items"], f"{path}[]", root)
    if isinstance(node.get("additionalProperties"), dict):
        last = path.rsplit(".", 1)[-1]
        found |= sections(
            node["additionalProperties"], f"{path}.<{last[:-1] if last.endswith('s') else 'name'}>", root
        )
    return found


def document(section: str, fields: dict[str, Any]) -> tuple[Any, str]:
    """A config whose only flaw can be `fields` at `section`, and the concrete path of that section."""
    parts = re.findall(r"[^.\[\]]+|\[\]", section)

    def build(i: int, spot: str) -> tuple[Any, str]:
        needs = NEEDS.get(spot, {})
        if i == len(parts):
            return {**needs, **fields}, ""
        if parts[i] == "[]":
            item, rest = build(i + 1, spot + "[]")
            return [item], "[0]" + rest
        key = KEYS[parts[i][1:-1]] if parts[i].startswith("<") else parts[i]
        value, rest = build(i + 1, f"{spot}.{parts[i]}" if spot else parts[i])
        return {**needs, key: value}, f".{key}{rest}"

    doc, concrete = build(0, "")
    return doc, concrete.removeprefix(".")


SECTIONS = sorted(sections(json_schema(), "", json_schema()) - FOREIGN)


def test_the_sections_under_test_are_every_section_of_the_schema() -> None:
    assert "" in SECTIONS and "routing.tenants.<tenant>.rules[].when" in SECTIONS
    assert set(NEEDS) - FOREIGN <= set(SECTIONS)  # no stale entry


@pytest.mark.parametrize("section", SECTIONS)
def test_an_unknown_field_is_refused_in_every_section_with_its_full_path(section: str) -> None:
    doc, concrete = document(section, {"colour": "red"})
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, env={})
    path = f"{concrete}.colour" if concrete else "colour"
    assert str(info.value).startswith(f"{path}: unknown field (allowed: "), str(info.value)
    assert info.value.where == path


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"upstream": {"max_retrys": 9}}, "upstream.max_retrys: unknown field; did you mean max_retries?"),
        (
            {"escalation": {"tier_alias": False}},
            "escalation.tier_alias: unknown field; did you mean tier_aliases?",
        ),
        ({"cache": {"exact": {"ttl": 5}}}, "cache.exact.ttl: unknown field; did you mean ttl_s?"),
        (
            {"routing": {"tenants": {"acme": {"stratgy": "rules"}}}},
            "routing.tenants.acme.stratgy: unknown field; did you mean strategy?",
        ),
    ],
)
def test_a_misspelt_field_gets_a_suggestion(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message) + "$"):
        parse_settings(doc, env={})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"upstream": {"max_retries": 2.7}}, "upstream.max_retries: 2.7 is not an integer >= 0"),
        ({"upstream": {"max_retries": 2.0}}, "upstream.max_retries: 2.0 is not an integer >= 0"),
        (
            {"accounting": {"ledger_batch_size": 1.5}},
            "accounting.ledger_batch_size: 1.5 is not an integer >= 1",
        ),
        ({"escalation": {"deployments": "yes"}}, 'escalation.deployments: "yes" is not true or false'),
        ({"redis_prefix": 7}, "redis_prefix: 7 is not a string"),
        ({"cache": {"exact": []}}, "cache.exact: [] is not a mapping"),
        (
            {"routing": {"rules": {"tier": "ta"}}},
            'routing.rules: {"tier": "ta"} is not a list (each a mapping)',
        ),
        (
            {"tiers": {"student": [{"model": "m", "extra_headers": {"x-v": 2}}]}},
            "tiers.student[0].extra_headers.x-v: 2 is not a string",
        ),
        (
            {"learning": {"shadow": {"tenants": {"acme": {"fraction": "half"}}}}},
            'learning.shadow.tenants.acme.fraction: "half" is not a number from 0.0 to 1.0',
        ),
    ],
)
def test_a_wrong_type_names_the_path_the_value_and_what_is_allowed(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message) + "$"):
        parse_settings(doc, env={})


def test_a_valid_integer_stays_an_integer_and_a_number_may_be_written_without_a_point() -> None:
    s = parse_settings({"upstream": {"max_retries": 5, "cooldown_s": 3}}, env={})
    assert s.upstream.max_retries == 5 and type(s.upstream.max_retries) is int
    assert s.upstream.cooldown_s == 3.0


def test_null_or_an_empty_section_means_the_defaults() -> None:
    s = parse_settings({"upstream": None, "routing": {"tier": None}, "tiers": {"student": None}}, env={})
    assert s == parse_settings({}, env={})


def test_litellm_keys_tiergate_does_not_use_are_ignored() -> None:
    entry = {"model_name": "a", "litellm_params": {"model": "x", "rpm": 60}, "model_info": {"mode": "chat"}}
    assert parse_settings({"model_list": [entry]}, env={}).deployments[0].name == "a"
    with pytest.raises(ConfigError, match=r"^model_list\[0\]\.colour: unknown field"):
        parse_settings({"model_list": [{**entry, "colour": 1}]}, env={})


def test_env_values_are_resolved_and_their_secrets_stay_out_of_repr() -> None:
    doc = {
        "master_key": "env:MK",
        "redis_url": "env:R",
        "tiers": {"ta": [{"model": "env:M", "api_key": "env:K"}]},
    }
    s = parse_settings(doc, env={"MK": "sk-m", "R": "redis://:pw@h", "M": "gpt-x", "K": "sk-k"})
    assert (s.master_key, s.redis_url, s.deployments[0].model, s.deployments[0].api_key) == (
        "sk-m",
        "redis://:pw@h",
        "gpt-x",
        "sk-k",
    )
    assert not any(secret in repr(s) for secret in ("sk-m", "pw@h", "sk-k"))

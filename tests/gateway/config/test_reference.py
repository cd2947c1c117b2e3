"""The config's JSON Schema and docs/configuration.md come from the models, and the doc is kept current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tiergate.gateway.config.reference import json_schema, markdown

DOC = Path(__file__).parents[3] / "docs" / "configuration.md"
VALID: dict[str, Any] = {
    "master_key": "env:TIERGATE_MASTER_KEY",
    "tiers": {
        "student": [{"model": "gpt-4o-mini", "input_cost_per_mtok": 0.15}],
        "teacher": [{"model": "gpt-4o"}],
    },
    "upstream": {"max_retries": 3, "load_balance": "ordered"},
    "routing": {"strategy": "rules", "rules": [{"tier": "teacher", "when": {"header": "x-vip"}}]},
    "cache": {"semantic": {"enabled": True}, "tenants": {"acme": {"exact": {"enabled": False}}}},
    "learning": {"shadow": {"fraction": 0.05}},
}


def test_the_committed_reference_is_the_one_the_models_make() -> None:
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/configuration.md is stale: run `tiergate config docs > docs/configuration.md`"
    )


def test_the_reference_lists_every_field_with_its_type_default_and_meaning() -> None:
    text = markdown()
    assert "| `upstream.max_retries` | an integer >= 0 | `2` | retries per deployment" in text
    assert "| `routing.tenants.<tenant>.strategy` |" in text and "| `tiers.<tier>[].model` |" in text
    assert "| `routing.domains.embeddings.dimensions` | an integer >= 1 | *required* |" in text


def test_the_schema_is_a_json_schema_that_accepts_a_valid_config() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(VALID, schema)


@pytest.mark.parametrize(
    "bad",
    [
        {"upstream": {"max_retrys": 9}},
        {"upstream": {"max_retries": 2.7}},
        {"tiers": {"junior": []}},
        {"routing": {"tenants": {"acme": {"domains": {}}}}},
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**VALID, **bad}, json_schema())

"""`docker-compose.yml`, checked offline (no engine here): the Compose specification's JSON Schema (bundled with
check-jsonschema), the start order (stores healthy, migrations done, then the gateway) and the gateway config
it embeds, read by tiergate's own loader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, check_builtin_schema
from tiergate import load_settings
from tiergate.admin.cli import build_parser

COMPOSE = ROOT / "docker-compose.yml"
HELM_VALUES = ROOT / "helm" / "tiergate" / "values.yaml"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return doc


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` (the forms this file uses)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg
        raise AssertionError(f"{name} is required: {arg}")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_the_file_matches_the_compose_specification() -> None:
    proc = check_builtin_schema("vendor.compose-spec", COMPOSE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("condition: service_completed_successfully", "condition: service_finished"),
        ("      interval: 5s\n", "      intervall: 5s\n"),
        ('      - "4000:4000"\n', "      4000: 4000\n"),
    ],
    ids=["unknown-condition", "misspelt-healthcheck-key", "ports-not-a-list"],
)
def test_the_schema_check_refuses_a_broken_copy(tmp_path: Path, old: str, new: str) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    proc = check_builtin_schema("vendor.compose-spec", broken)
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_the_stores_have_health_checks_and_the_gateway_waits_for_them_and_the_migrations() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "chroma", "migrate", "gateway"}
    for store in ("postgres", "redis", "chroma"):
        assert services[store]["healthcheck"]["test"], store
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["gateway"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
        "chroma": {"condition": "service_healthy"},
    }
    assert services["migrate"]["restart"] == "no"
    assert "/readyz" in " ".join(services["gateway"]["healthcheck"]["test"])


def test_the_commands_are_tiergate_commands_run_by_the_images_entrypoint() -> None:
    services = _compose()["services"]
    parser = build_parser()
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["gateway"]["command"] == ["serve"]
    for name in ("migrate", "gateway"):
        assert services[name]["build"] == "."
        parser.parse_args(services[name]["command"])


def test_the_store_images_are_the_ones_the_helm_chart_runs() -> None:
    services = _compose()["services"]
    values = yaml.safe_load(HELM_VALUES.read_text(encoding="utf-8"))
    assert services["postgres"]["image"] == values["postgresql"]["image"]
    assert services["redis"]["image"] == values["redisBundled"]["image"]
    assert services["chroma"]["image"] == values["chromaBundled"]["image"]


def test_the_embedded_config_is_valid_and_points_at_the_composed_stores(tmp_path: Path) -> None:
    compose = _compose()
    gateway = compose["services"]["gateway"]
    outside = {"TIERGATE_MASTER_KEY": "sk-tg-master-compose-test-0123456789", "OPENAI_API_KEY": "sk-test"}
    env = {name: _interpolate(str(value), outside) for name, value in gateway["environment"].items()}
    (mount,) = gateway["configs"]
    assert env["TIERGATE_CONFIG"] == mount["target"]
    config = tmp_path / "tiergate.yaml"
    config.write_text(compose["configs"][mount["source"]]["content"], encoding="utf-8")

    settings = load_settings(config, env=env)

    assert settings.database_url == "postgresql://tiergate:tiergate@postgres:5432/tiergate"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.chroma_url == "http://chroma:8000"
    assert settings.cache.policy.semantic


def test_the_gateway_refuses_to_start_without_the_secrets_it_needs() -> None:
    environment = _compose()["services"]["gateway"]["environment"]
    with pytest.raises(AssertionError, match="TIERGATE_MASTER_KEY is required"):
        _interpolate(environment["TIERGATE_MASTER_KEY"], {})
    with pytest.raises(AssertionError, match="OPENAI_API_KEY is required"):
        _interpolate(environment["OPENAI_API_KEY"], {"TIERGATE_MASTER_KEY": "x"})

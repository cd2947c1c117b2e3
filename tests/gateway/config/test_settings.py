from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.settings import MASTER_KEY_FILE, load_settings, parse_settings
from tiergate.gateway.upstream.prices import with_known_prices
from tiergate.policies.pricing import Price

ENV = {"TIERGATE_MASTER_KEY": "sk-master", "OPENAI_API_KEY": "sk-openai", "GROQ_KEY": "gsk"}


def test_issue_example_config(tmp_path: Path) -> None:
    path = tmp_path / "tiergate.yaml"
    path.write_text(
        """
master_key: env:TIERGATE_MASTER_KEY
database_url: sqlite:///./tiergate.db
tiers:
  student:
    - model: gpt-4o-mini
      api_base: https://api.openai.com/v1/
      api_key: env:OPENAI_API_KEY
      provider: openai
      input_cost_per_mtok: 0.15
      output_cost_per_mtok: 0.60
      timeout_s: 60
    - model: llama-3.1-8b-instant
      api_base: https://api.groq.com/openai/v1
      api_key: env:GROQ_KEY
  teacher:
    - model: gpt-4o
      api_key: env:OPENAI_API_KEY
"""
    )
    s = load_settings(path, env=ENV)
    assert s.master_key == "sk-master"
    student = [d for d in s.deployments if d.tier == "student"]
    assert [d.model for d in student] == ["gpt-4o-mini", "llama-3.1-8b-instant"]
    assert student[0].api_base == "https://api.openai.com/v1"  # trailing slash dropped
    assert student[0].api_key == "sk-openai" and student[1].api_key == "gsk"
    assert student[0].price == Price(0.15, 0.60)
    assert len({d.id for d in s.deployments}) == 3
    assert "sk-openai" not in repr(s) and "sk-master" not in repr(s)  # secrets stay out of logs


def test_prices_and_output_limits_come_from_the_bundled_price_map() -> None:
    s = with_known_prices(parse_settings({"tiers": {"teacher": [{"model": "gpt-4o"}]}}, env={}))
    (teacher,) = s.deployments
    assert teacher.price == Price(2.5, 10.0)
    assert teacher.price_source == "litellm price map"
    assert teacher.max_output_tokens == 16384


def test_unknown_price_is_a_notice_not_a_crash() -> None:
    s = with_known_prices(parse_settings({"tiers": {"student": [{"model": "my-local-llama"}]}}, env={}))
    assert s.deployments[0].price == Price()
    assert any("my-local-llama" in n and "$0" in n for n in s.notices)


def test_litellm_model_list_is_accepted() -> None:
    doc: dict[str, Any] = {
        "model_list": [
            {"model_name": "fast", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "env:OPENAI_API_KEY"},
             "model_info": {"tier": "student"}},
            {"model_name": "fast", "litellm_params": {"model": "gpt-4o-mini", "api_base": "http://backup/v1"},
             "model_info": {"tier": "student"}},
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-haiku-4-5", "api_key": "sk-ant",
             "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000005}},
        ]
    }  # fmt: skip
    s = parse_settings(doc, env=ENV)
    fast = [d for d in s.deployments if d.name == "fast"]
    assert [(d.model, d.provider, d.tier) for d in fast] == [("gpt-4o-mini", "openai", "student")] * 2
    assert fast[1].api_base == "http://backup/v1"
    (claude,) = [d for d in s.deployments if d.name == "claude"]
    assert (claude.provider, claude.model, claude.tier) == ("anthropic", "claude-haiku-4-5", None)
    assert claude.price == Price(pytest.approx(1.0), pytest.approx(5.0))  # type: ignore[arg-type]
    assert not claude.fast_path


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"tiers": {"junior": [{"model": "x"}]}},
            'tiers.junior: "junior" is not one of student, ta, teacher, supervisor',
        ),
        (
            {"tiers": {"student": [{"model": "x", "api_key": "env:MISSING"}]}},
            "tiers.student[0].api_key: refers to env:MISSING, which is not set",
        ),
        ({"tiers": {"student": [{"model": ""}]}}, 'tiers.student[0].model: "" is not a non-empty string'),
        (
            {"tiers": {"student": [{"model": "x", "timeout_s": "soon"}]}},
            'tiers.student[0].timeout_s: "soon" is not a number >= 0.001',
        ),
        (
            {"tiers": {"student": [{"model": "x", "input_cost_per_mtok": -1}]}},
            "tiers.student[0].input_cost_per_mtok: -1 is not a number >= 0.0",
        ),
        (
            {"tiers": {"student": [{"model": "x", "colour": "red"}]}},
            "tiers.student[0].colour: unknown field (allowed: api_base, api_key,",
        ),
        ({"tierz": {}}, "tierz: unknown field; did you mean tiers?"),
        ({"upstream": {"max_retries": True}}, "upstream.max_retries: true is not an integer >= 0"),
        (
            {
                "model_list": [
                    {"model_name": "a", "litellm_params": {"model": "x"}, "model_info": {"tier": "boss"}}
                ]
            },
            'model_list[0].model_info.tier: "boss" is not one of student,',
        ),
        (["not", "a", "mapping"], 'the config: ["not", "a", "mapping"] is not a mapping'),
        ({"metrics_port": 70000}, "metrics_port: 70000 is not an integer from 1 to 65535"),
        ({"metrics_port": "9464"}, 'metrics_port: "9464" is not an integer from 1 to 65535'),
        ({"log_format": "xml"}, 'log_format: "xml" is not one of text, json'),
        ({"log_level": "chatty"}, 'log_level: "chatty" is not one of debug, info,'),
        ({"log_prompts": "yes"}, 'log_prompts: "yes" is not true or false'),
    ],
)
def test_bad_configs_name_the_field(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, env={})
    assert str(info.value).startswith(message)


def test_unreadable_or_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, env={})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("master_key: abc\n")
    assert load_settings(None, env={"TIERGATE_CONFIG": str(path)}).master_key == "abc"


def test_embedded_default_without_openai_key_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, env={})
    assert s.deployments == ()
    assert any("OPENAI_API_KEY" in n for n in s.notices)
    key_file = tmp_path / MASTER_KEY_FILE
    assert key_file.stat().st_mode & 0o077 == 0  # only the owner can read the master key
    assert s.master_key == key_file.read_text().strip()
    assert load_settings(None, env={}).master_key == s.master_key  # stable across restarts


def test_embedded_default_with_openai_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, env={"OPENAI_API_KEY": "sk-x", "TIERGATE_MASTER_KEY": "m"})
    assert [d.tier for d in s.deployments] == ["student", "ta", "teacher", "supervisor"]
    assert all(d.api_key == "sk-x" for d in s.deployments)
    assert s.database_url == "sqlite:///./tiergate.db"
    assert not (tmp_path / MASTER_KEY_FILE).exists()


def test_observability_settings_and_their_defaults() -> None:
    default = parse_settings({}, env={})
    assert (default.metrics_port, default.metrics_host, default.metrics_tenant_label) == (
        None,
        "127.0.0.1",
        True,
    )
    assert (default.log_level, default.log_format, default.log_prompts) == ("info", "text", False)
    doc = {"metrics_port": 9464, "metrics_host": "0.0.0.0", "metrics_tenant_label": False, "log_level": "DEBUG",
           "log_format": "json", "log_prompts": True}  # fmt: skip
    custom = parse_settings(doc, env={})
    assert (custom.metrics_port, custom.metrics_host, custom.metrics_tenant_label) == (9464, "0.0.0.0", False)
    assert (custom.log_level, custom.log_format, custom.log_prompts) == ("debug", "json", True)


def test_the_exported_master_key_overrides_the_file_and_each_source_is_named() -> None:
    both = parse_settings(
        {"master_key": "from-file"}, env={"TIERGATE_MASTER_KEY": "from-env"}, source="c.yaml"
    )
    assert both.master_key == "from-env"
    assert both.master_key_source == "$TIERGATE_MASTER_KEY (it overrides the master_key of c.yaml)"
    only_env = parse_settings({}, env={"TIERGATE_MASTER_KEY": "from-env"}, source="c.yaml")
    assert (only_env.master_key, only_env.master_key_source) == ("from-env", "$TIERGATE_MASTER_KEY")
    written = parse_settings({"master_key": "env:ADMIN"}, env={"ADMIN": "a"}, source="c.yaml")
    assert (written.master_key, written.master_key_source) == ("a", "the master_key of c.yaml (env:ADMIN)")
    none = parse_settings({}, env={}, source="c.yaml")
    assert (none.master_key, none.master_key_source) == (None, "")


def test_the_start_up_line_shows_at_most_a_short_prefix_of_the_key() -> None:
    from tiergate.gateway.config.master_key import master_key_line

    # A made key (as long as tiergate makes them): its kind and two characters; a short one: a third.
    assert master_key_line("sk-tg-master-" + "ab" * 16, "x") == "master key from x (sk-tg-master-ab...)"
    assert master_key_line("sk-my-master", "x") == "master key from x (sk-m...)"
    assert master_key_line(None, "").startswith("no master key")


def test_a_tiergate_yaml_in_the_working_directory_is_the_default_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiergate.yaml").write_text("master_key: here\n")
    found = load_settings(None, env={})
    assert (found.master_key, found.source) == ("here", "tiergate.yaml")
    other = tmp_path / "other.yaml"
    other.write_text("master_key: there\n")
    assert load_settings(None, env={"TIERGATE_CONFIG": str(other)}).master_key == "there"
    assert load_settings(str(other), env={}).master_key == "there"
    assert not (tmp_path / MASTER_KEY_FILE).exists()

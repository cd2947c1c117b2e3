"""A LiteLLM proxy config starts tiergate as it is: `os.environ/NAME` secrets, `general_settings.master_key`,
the router settings tiergate has an equivalent for, and one warning naming every key it ignores."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.support import fake_upstream, free_port, running
from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.settings import load_settings, parse_settings

# A LiteLLM proxy config as its docs write them (proxy/configs.md), with keys tiergate maps and keys it does not.
LITELLM = """\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      rpm: 480
    model_info:
      tier: teacher
  - model_name: gpt-4o-mini
    litellm_params:
      model: gpt-4o-mini
      api_key: os.environ/OPENAI_API_KEY
      timeout: 20
    model_info:
      tier: student
  - model_name: claude-sonnet
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20240620
      api_key: "os.environ/ANTHROPIC_API_KEY"
litellm_settings:
  drop_params: true
  num_retries: 3
  request_timeout: 600
  success_callback: ["langfuse"]
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  timeout: 30
  retry_after: 1
  allowed_fails: 3
  cooldown_time: 60
  fallbacks: [{"gpt-4o": ["claude-sonnet"]}]
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  database_url: os.environ/DATABASE_URL
  alerting: ["slack"]
"""
ENV = {
    "OPENAI_API_KEY": "sk-openai",
    "ANTHROPIC_API_KEY": "sk-ant",
    "LITELLM_MASTER_KEY": "sk-litellm-master",
}


def test_a_litellm_proxy_config_maps_what_has_an_equivalent_and_names_the_rest() -> None:
    s = parse_settings(yaml.safe_load(LITELLM), env=ENV, source="litellm.yaml")
    assert [(d.name, d.provider, d.api_key, d.timeout_s) for d in s.deployments] == [
        ("gpt-4o", "openai", "sk-openai", 30.0),  # router_settings.timeout over request_timeout
        ("gpt-4o-mini", "openai", "sk-openai", 20.0),  # its own timeout wins
        ("claude-sonnet", "anthropic", "sk-ant", 30.0),
    ]
    u = s.upstream
    assert (u.max_retries, u.backoff_base_s, u.cooldown_s, u.cooldown_failures, u.load_balance) == (
        2, 1.0, 60.0, 4, "round_robin",
    )  # fmt: skip
    assert s.master_key == "sk-litellm-master"
    assert (
        s.master_key_source
        == "the general_settings.master_key of litellm.yaml (os.environ/LITELLM_MASTER_KEY)"
    )
    assert s.notices == (
        "LiteLLM settings tiergate has no equivalent for, ignored: litellm_settings.drop_params, "
        "litellm_settings.success_callback, router_settings.fallbacks, general_settings.database_url, "
        "general_settings.alerting (docs/configuration.md says what is read)",
    )


def test_tiergates_own_spelling_wins_and_another_strategy_is_named() -> None:
    doc: dict[str, Any] = yaml.safe_load(LITELLM)
    doc["upstream"] = {"max_retries": 0}
    doc["master_key"] = "own"
    doc["router_settings"]["routing_strategy"] = "latency-based-routing"
    s = parse_settings(doc, env=ENV)
    assert (s.upstream.max_retries, s.upstream.load_balance, s.master_key) == (0, "round_robin", "own")
    assert "router_settings.routing_strategy" in s.notices[0]


@pytest.mark.parametrize(
    ("missing", "line"),
    [
        (
            "OPENAI_API_KEY",
            "model_list[0].litellm_params.api_key: refers to os.environ/OPENAI_API_KEY, which is not set",
        ),
        (
            "LITELLM_MASTER_KEY",
            "general_settings.master_key: refers to os.environ/LITELLM_MASTER_KEY, which is not set",
        ),
    ],
)
def test_a_secret_whose_variable_is_not_set_is_an_error_naming_it(missing: str, line: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_settings(yaml.safe_load(LITELLM), env={k: v for k, v in ENV.items() if k != missing})
    assert str(refused.value) == line


def test_a_mapped_value_is_validated_like_tiergates_own() -> None:
    doc = yaml.safe_load(LITELLM)
    doc["router_settings"]["num_retries"] = -1
    with pytest.raises(ConfigError) as refused:
        parse_settings(doc, env=ENV)
    assert str(refused.value) == "upstream.max_retries: -1 is not an integer >= 0"


def test_serve_on_a_litellm_config_sends_the_resolved_key_upstream(tmp_path: Path) -> None:
    with fake_upstream() as upstream:
        config = tmp_path / "litellm.yaml"
        doc = yaml.safe_load(LITELLM)
        doc["model_list"] = [
            {"model_name": "fast", "litellm_params": {"model": "openai/small", "api_base": upstream,
                                                     "api_key": "os.environ/UPSTREAM_KEY"}},
        ]  # fmt: skip
        config.write_text(yaml.safe_dump({**doc, "database_url": f"sqlite:///{tmp_path}/t.db"}))
        port, log = free_port(), tmp_path / "serve.log"
        env = {"UPSTREAM_KEY": "sk-upstream-resolved", "LITELLM_MASTER_KEY": "sk-litellm-master-0123"}
        args = [sys.executable, "-m", "tiergate", "serve", "--config", str(config), "--port", str(port)]
        with running(args, url=f"http://127.0.0.1:{port}/healthz", env={**env, "TIERGATE_MASTER_KEY": ""},
                     cwd=tmp_path, output=log):  # fmt: skip
            with openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key=env["LITELLM_MASTER_KEY"]
            ) as c:
                reply = c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "echo: hi"
            seen = httpx.get(upstream.removesuffix("/v1") + "/_requests").json()
        text = log.read_text()
    assert [r["authorization"] for r in seen] == ["Bearer sk-upstream-resolved"]
    assert "WARNING" in text and "LiteLLM settings tiergate has no equivalent for, ignored:" in text
    assert "master key from the general_settings.master_key of" in text


def test_config_check_names_the_ignored_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tiergate.admin.cli import main

    path = tmp_path / "litellm.yaml"
    path.write_text(LITELLM)
    with pytest.MonkeyPatch.context() as env:
        for name, value in ENV.items():
            env.setenv(name, value)
        env.delenv("TIERGATE_MASTER_KEY", raising=False)
        assert load_settings(str(path)).master_key == "sk-litellm-master"
        assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out == f"{path}: OK (3 deployments)\n"
    assert out.err.startswith("tiergate: warning: LiteLLM settings tiergate has no equivalent for, ignored: ")

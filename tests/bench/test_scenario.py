from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from bench.harness.load import request_body
from bench.harness.runner import run_setup
from bench.harness.scenario import CONFIG_DIR, ScenarioError, fill, load_scenarios, parse_scenario
from tiergate.gateway.config.settings import parse_settings
from tiergate.gateway.doors.messages import chat_from_messages
from tiergate.gateway.doors.responses import responses_chat_request

MINIMAL = """
bench:
  command: ["${PYTHON}", "server.py", "--port", "${PORT}"]
  workloads:
    - {name: chat}
    - {name: stream, stream: true, ttft: true, connections: [1, 8]}
  targets: {min_rps: {chat: 1000}, max_startup_s: 3}
listen: ${PORT}
upstream: ${UPSTREAM}/v1
"""


def test_bench_section_is_read_and_the_rest_is_the_process_config() -> None:
    s = parse_scenario(MINIMAL, Path("example.yaml"))
    assert s.name == "example"
    assert s.command == ("${PYTHON}", "server.py", "--port", "${PORT}")
    assert [w.name for w in s.workloads] == ["chat", "stream"]
    assert s.workloads[0].connections == (8,) and s.workloads[0].path == "/v1/chat/completions"
    assert s.workloads[1].stream and s.workloads[1].ttft and s.workloads[1].connections == (1, 8)
    assert s.targets.min_rps == {"chat": 1000.0} and s.targets.max_startup_s == 3
    assert s.process_config is not None
    config = yaml.safe_load(fill(s.process_config, {"PORT": "9", "UPSTREAM": "http://u"}, "example"))
    assert config == {"listen": 9, "upstream": "http://u/v1"}


def test_a_file_without_process_config_measures_the_upstream_itself() -> None:
    s = parse_scenario("bench:\n  workloads: [{name: chat}]\n", Path("direct.yaml"))
    assert s.command is None and s.process_config is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\n", "needs a 'bench:' mapping"),
        ("bench: {workloads: []}\n", "at least one workload"),
        ("bench: {workloads: [{name: a}], colour: red}\n", "unknown bench field(s) colour"),
        ("bench: {workloads: [{name: a, ttft: true}]}\n", "ttft needs stream: true"),
        ("bench: {workloads: [{name: a, connections: [0]}]}\n", "positive integers"),
        ("bench: {workloads: [{name: a}, {name: a}]}\n", "unique"),
        ("bench: {workloads: [{name: a, speed: 3}]}\n", "unknown field(s) speed"),
        ("bench: {workloads: [{name: a}], targets: {max_rss_mb: big}}\n", "max_rss_mb has the wrong type"),
        ("bench: {workloads: [{name: a}], setup: [[]]}\n", "bench.setup must be a list of commands"),
        ("bench: [\n", "not valid YAML"),
    ],
)
def test_bad_scenarios_are_refused_with_the_field_named(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_scenario(text, Path("bad.yaml"))


def test_an_unknown_placeholder_is_an_error_not_left_in() -> None:
    with pytest.raises(ScenarioError, match=r"\$\{NOPE\} is not available"):
        fill("x ${NOPE}", {"PORT": "1"}, "f.yaml")


def test_every_shipped_scenario_loads_and_the_direct_floor_comes_first() -> None:
    scenarios = load_scenarios(CONFIG_DIR)
    names = [s.name for s in scenarios]
    assert names[0] == "direct" and {"passthrough", "gateway"} <= set(names)


def test_the_gateway_scenario_is_a_valid_tiergate_config() -> None:
    gateway = next(s for s in load_scenarios(CONFIG_DIR) if s.name == "gateway")
    assert gateway.process_config is not None
    values = {"UPSTREAM": "http://127.0.0.1:1", "WORKDIR": "/tmp"}
    settings = parse_settings(
        yaml.safe_load(fill(gateway.process_config, values, "gateway.yaml")), env=gateway.env
    )
    assert settings.master_key == gateway.key
    assert not settings.access_log
    assert {d.tier for d in settings.deployments} >= {w.model for w in gateway.workloads}


def test_the_doors_scenario_sends_each_door_the_chat_workloads_question() -> None:
    doors = next(s for s in load_scenarios(CONFIG_DIR) if s.name == "gateway-doors")
    assert {(w.api, w.path) for w in doors.workloads} == {
        ("chat", "/v1/chat/completions"), ("messages", "/v1/messages"), ("responses", "/v1/responses")
    }  # fmt: skip
    chat = json.loads(request_body("chat", "student", stream=True))
    for translated in (
        chat_from_messages(json.loads(request_body("messages", "student", stream=True))),
        responses_chat_request(json.loads(request_body("responses", "student", stream=True))),
    ):
        assert translated["messages"] == chat["messages"] and translated["max_tokens"] == chat["max_tokens"]
        assert translated["temperature"] == chat["temperature"] and translated["stream"] is True


def test_a_workloads_fields_are_set_on_its_body() -> None:
    doors = next(s for s in load_scenarios(CONFIG_DIR) if s.name == "gateway-doors")
    unstored = [w for w in doors.workloads if dict(w.fields).get("store") is False]
    assert {w.stream for w in unstored} == {False, True}  # the Responses door measured with store off too
    for w in unstored:
        body = json.loads(request_body(w.api, w.model, stream=w.stream, fields=w.fields))
        assert body["store"] is False and body["input"]
    chat = json.loads(request_body("chat", "student", stream=False, fields=[("user", "u1")]))
    assert chat["user"] == "u1" and chat["messages"]
    with pytest.raises(ScenarioError, match=r"fields has the wrong type \(list\)"):
        parse_scenario("bench:\n  workloads: [{name: x, fields: [1]}]\n", Path("bad.yaml"))


def test_an_unknown_api_or_a_ttft_on_another_door_is_refused() -> None:
    with pytest.raises(ScenarioError, match="api must be one of chat, messages, responses"):
        parse_scenario("bench:\n  workloads: [{name: x, api: soap}]\n", Path("bad.yaml"))
    with pytest.raises(ScenarioError, match="ttft is measured on chat streams only"):
        parse_scenario(
            "bench:\n  workloads: [{name: x, api: messages, stream: true, ttft: true}]\n", Path("bad.yaml")
        )


def _with_setup(*commands: list[str]) -> str:
    return yaml.safe_dump({"bench": {"workloads": [{"name": "chat"}], "setup": list(commands)}})


def test_setup_commands_run_in_order_and_their_json_fields_become_placeholders(tmp_path: Path) -> None:
    text = _with_setup(
        ["${PYTHON}", "-c", 'print(\'{"id": "ten_1", "n": 3, "ok": true}\')'],
        [
            "${PYTHON}",
            "-c",
            "import sys, json; print(json.dumps({'key': 'k-' + sys.argv[1]}))",
            "${SETUP1_ID}",
        ],
    )
    values = {"PYTHON": sys.executable}
    run_setup(parse_scenario(text, Path("s.yaml")), values, tmp_path)
    assert values["SETUP1_ID"] == "ten_1" and values["SETUP1_N"] == "3" and "SETUP1_OK" not in values
    assert values["SETUP2_KEY"] == "k-ten_1"


def test_a_failing_setup_command_stops_the_scenario_with_its_output(tmp_path: Path) -> None:
    text = _with_setup(["${PYTHON}", "-c", "import sys; sys.exit('no tenant with id x')"])
    with pytest.raises(ScenarioError, match="setup command 1 failed: no tenant with id x"):
        run_setup(parse_scenario(text, Path("s.yaml")), {"PYTHON": sys.executable}, tmp_path)


@pytest.mark.parametrize("name", ["gateway-keys-sqlite", "gateway-keys-redis"])
def test_the_key_scenarios_create_a_virtual_key_with_every_limit_on(name: str, tmp_path: Path) -> None:
    scenario = next(s for s in load_scenarios(CONFIG_DIR) if s.name == name)
    assert scenario.process_config is not None and scenario.key == "${SETUP2_KEY}"
    config = tmp_path / "config.yaml"
    values = {
        "UPSTREAM": "http://127.0.0.1:1", "WORKDIR": str(tmp_path), "PORT": "1", "PYTHON": sys.executable,
        "REPO": str(CONFIG_DIR.parent.parent), "CONFIG": str(config),
    }  # fmt: skip
    config.write_text(fill(scenario.process_config, values, name))
    # Setup talks to the database only (SQLite here), never to Redis: it runs before the gateway starts.
    run_setup(scenario, values, tmp_path)
    key = fill(scenario.key, values, name)
    assert key.startswith("sk-tg-") and values["SETUP2_TENANT_ID"] == values["SETUP1_ID"]
    assert all(values.get(f"SETUP2_{limit}") for limit in ("RPM", "TPM", "BUDGET_USD"))
    settings = parse_settings(yaml.safe_load(config.read_text()), env=scenario.env)
    assert (settings.redis_url is not None) == name.endswith("redis")

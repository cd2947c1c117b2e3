from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.harness.scenario import CONFIG_DIR, ScenarioError, fill, load_scenarios, parse_scenario
from tiergate.gateway.settings import parse_settings

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

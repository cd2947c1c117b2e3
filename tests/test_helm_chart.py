"""The Helm chart, rendered with the values a user would give (no `helm` binary here: tests/helm_render.py)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.helm_render import Renderer, TemplateError, render_chart
from tests.support import ROOT
from tiergate.admin.cli import build_parser
from tiergate.gateway.config.settings import parse_settings

CHART = ROOT / "helm" / "tiergate"
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")
KINDS = {
    "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount",
    "Job", "CronJob", "StatefulSet", "PodMonitor",
}  # fmt: skip
EVERYTHING_ON = {
    "postgresql": {"enabled": True},
    "redisBundled": {"enabled": True},
    "chromaBundled": {"enabled": True},
    "autoscaling": {"requestRate": {"enabled": True}},
    "metrics": {"podMonitor": {"enabled": True}},
    "tracing": {"otlpEndpoint": "http://otel-collector:4318"},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}],
}  # fmt: skip


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def render(overrides: dict[str, Any] | None = None, release: str = "demo") -> list[dict[str, Any]]:
    rendered = render_chart(CHART, _merge(DEFAULTS, overrides or {}), release=release)
    return [doc for docs in rendered.values() for doc in docs]


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    (found,) = of(docs, kind, component)
    return found


def of(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs
        if d["kind"] == kind and (component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]  # fmt: skip


def main_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The release's ConfigMap (the migration hook has its own copy)."""
    (found,) = [d for d in of(docs, "ConfigMap") if "annotations" not in d["metadata"]]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    return spec["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def tiergate_containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container running the tiergate image."""
    return [
        (w, c)
        for w in docs
        if w["kind"] in WORKLOADS
        for c in pod_spec(w)["containers"]
        if c["image"].startswith(DEFAULTS["image"]["repository"] + ":")
    ]


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    return render(EVERYTHING_ON)


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])


@pytest.mark.parametrize("variant", ["default", "everything"])
def test_every_document_is_a_named_labelled_known_resource(
    variant: str, request: pytest.FixtureRequest
) -> None:
    docs = request.getfixturevalue(variant)
    for doc in docs:
        assert doc["kind"] in KINDS and doc["apiVersion"]
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
        labels = doc["metadata"]["labels"]
        assert (
            labels["app.kubernetes.io/managed-by"] == "Helm"
            and labels["app.kubernetes.io/instance"] == "demo"
        )
    assert not [d for d in docs if d["kind"] == "Secret"]  # the chart references Secrets, never makes them


# The oldest Kubernetes the chart supports (autoscaling/v2, policy/v1 and batch/v1 CronJob are GA there) and
# the newest the schemas know.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", ["default", "everything"])
def test_every_resource_matches_the_kubernetes_schema(
    variant: str, version: str, request: pytest.FixtureRequest
) -> None:
    for doc in request.getfixturevalue(variant):
        if doc["kind"] == "PodMonitor":  # a Prometheus Operator resource: not in Kubernetes' schemas
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        # Strict: a misspelt field (readynessProbe) or a string where a number belongs fails too.
        kubernetes_validate.validate(doc, version, strict=True)


def test_names_stay_within_kubernetes_limits_for_a_long_release_name() -> None:
    for doc in render(EVERYTHING_ON, release="an-unusually-long-release-name-for-a-gateway-of-many-tiers"):
        limit = 52 if doc["kind"] == "CronJob" else 63  # a CronJob appends 11 characters to its jobs' names
        assert len(doc["metadata"]["name"]) <= limit, doc["metadata"]["name"]


def test_the_gateway_probes_ports_and_resources(default: list[dict[str, Any]]) -> None:
    deployment = one(default, "Deployment")
    (container,) = pod_spec(deployment)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": DEFAULTS["gateway"]["port"], "metrics": DEFAULTS["metrics"]["port"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container[
        "resources"
    ]["limits"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TIERGATE_HOST"] == "0.0.0.0" and env["TIERGATE_WORKERS"] == str(
        DEFAULTS["gateway"]["workers"]
    )
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    drain = DEFAULTS["gateway"]["drainTimeoutSeconds"] + DEFAULTS["gateway"]["preStopSleepSeconds"]
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > drain


@pytest.mark.parametrize("variant", ["default", "everything"])
def test_tiergate_pods_run_as_non_root_on_a_read_only_root(
    variant: str, request: pytest.FixtureRequest
) -> None:
    pairs = tiergate_containers(request.getfixturevalue(variant))
    assert {w["kind"] for w, _ in pairs} == {"Deployment", "Job", "CronJob"}
    dockerfile_user = next(
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")
    )
    for workload, container in pairs:
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == dockerfile_user.split(":")[0]
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert set(mounts.values()) <= set(volumes)
        assert "emptyDir" in volumes[mounts["/tmp"]]  # writable /tmp: multiprocess metrics, temporary files
        assert "configMap" in volumes[mounts["/etc/tiergate"]]
        assert container["resources"]["requests"]


def test_service_pdb_hpa_and_podmonitor_select_exactly_the_gateway_pods(
    everything: list[dict[str, Any]],
) -> None:
    deployment = one(everything, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels(deployment).items()
    assert one(everything, "Service", "gateway")["spec"]["selector"] == selector
    assert one(everything, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert one(everything, "PodMonitor")["spec"]["selector"]["matchLabels"] == selector
    hpa = one(everything, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    spread = pod_spec(deployment)["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"] == selector and spread["maxSkew"] == 1
    for workload in everything:
        if workload["kind"] in WORKLOADS and workload is not deployment:
            # Job and database pods must never receive the gateway's traffic.
            assert not selector.items() <= pod_labels(workload).items(), workload["metadata"]["name"]
    for service in of(everything, "Service"):
        targets = [
            w
            for w in everything
            if w["kind"] in WORKLOADS and service["spec"]["selector"].items() <= pod_labels(w).items()
        ]
        assert len(targets) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in pod_spec(targets[0])["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_without_autoscaling_the_deployment_sets_replicas(default: list[dict[str, Any]]) -> None:
    docs = render({"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}})
    assert not of(docs, "HorizontalPodAutoscaler") and not of(docs, "PodDisruptionBudget")
    assert one(docs, "Deployment")["spec"]["replicas"] == DEFAULTS["replicaCount"]
    assert [m["type"] for m in one(default, "HorizontalPodAutoscaler")["spec"]["metrics"]] == ["Resource"]


_SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|_URL$")


@pytest.mark.parametrize("variant", ["default", "everything"])
def test_secrets_are_referenced_never_inlined(variant: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(variant)
    for workload in (d for d in docs if d["kind"] in WORKLOADS):
        env = [e for c in pod_spec(workload)["containers"] for e in c.get("env", [])]
        for var in env:
            if not _SECRET_NAME.search(var["name"]) or var["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT":
                continue
            if "valueFrom" in var:
                assert set(var["valueFrom"]) == {"secretKeyRef"}, var
                continue
            # A URL to a bundled service: no credentials in it, or a reference to a secret variable.
            password = urlsplit(var["value"]).password
            assert password in (None, "$(POSTGRES_PASSWORD)"), var
            if password:
                names = [e["name"] for e in env]
                assert names.index("POSTGRES_PASSWORD") < names.index(
                    var["name"]
                )  # expanded only if defined first
    config = yaml.safe_load(main_config(docs)["data"]["tiergate.yaml"])
    assert config["master_key"].startswith("env:") and config["database_url"].startswith("env:")
    for tier in config["tiers"].values():
        assert all(d["api_key"].startswith("env:") for d in tier)


@pytest.mark.parametrize("variant", ["default", "everything"])
def test_the_config_map_is_a_valid_tiergate_config_with_every_env_reference_provided(
    variant: str, request: pytest.FixtureRequest
) -> None:
    docs = request.getfixturevalue(variant)
    deployment = one(docs, "Deployment")
    (container,) = pod_spec(deployment)["containers"]
    # Values of the kind Kubernetes would supply: the URLs are checked as URLs at load time.
    urls = {"DATABASE_URL": "postgresql://tiergate@db:5432/tiergate", "REDIS_URL": "redis://redis:6379/0",
            "CHROMA_URL": "http://chroma:8000"}  # fmt: skip
    env = {e["name"]: urls.get(e["name"], "from-kubernetes") for e in container["env"]}
    for config_map in of(docs, "ConfigMap"):
        settings = parse_settings(yaml.safe_load(config_map["data"]["tiergate.yaml"]), env=env)
        assert settings.metrics_port == DEFAULTS["metrics"]["port"] and settings.metrics_host == "0.0.0.0"
        assert settings.log_format == "json" and settings.access_log is True
        assert {d.tier for d in settings.deployments} == {"student", "ta", "teacher", "supervisor"}
        assert (settings.redis_url is not None) and (settings.chroma_url is not None) == (
            variant == "everything"
        )
    mounted = {v["configMap"]["name"] for v in pod_spec(deployment)["volumes"] if "configMap" in v}
    assert mounted == {main_config(docs)["metadata"]["name"]}


def test_the_migration_runs_as_a_hook_before_install_and_upgrade(default: list[dict[str, Any]]) -> None:
    job = one(default, "Job", "migrations")
    hook_config = one(default, "ConfigMap", "migrations")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    # The release's ConfigMap does not exist before install: the Job reads a hook ConfigMap created first.
    assert hook_config["metadata"]["annotations"]["helm.sh/hook"] == annotations["helm.sh/hook"]
    assert int(hook_config["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == hook_config["metadata"]["name"]
    assert pod_spec(job)["containers"][0]["args"] == ["db", "upgrade"]
    assert pod_spec(job)["restartPolicy"] == "Never" and job["spec"]["activeDeadlineSeconds"] > 0


def test_with_the_bundled_database_the_migration_waits_for_the_install(
    everything: list[dict[str, Any]],
) -> None:
    hook = one(everything, "Job", "migrations")["metadata"]["annotations"]["helm.sh/hook"]
    assert set(hook.split(",")) == {"post-install", "pre-upgrade"}


def test_cron_jobs_run_promote_and_the_trace_purge_one_at_a_time(default: list[dict[str, Any]]) -> None:
    for component, args in (("promote", ["promote"]), ("traces-purge", ["traces", "purge"])):
        cron = one(default, "CronJob", component)
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert len(cron["spec"]["schedule"].split()) == 5
        assert pod_spec(cron)["containers"][0]["args"] == args
        assert pod_spec(cron)["restartPolicy"] == "Never"
    extra = render({"promote": {"args": ["--dry-run"]}, "tracesPurge": {"enabled": False}})
    assert pod_spec(one(extra, "CronJob", "promote"))["containers"][0]["args"] == ["promote", "--dry-run"]
    assert not of(extra, "CronJob", "traces-purge")


def _subcommands() -> set[str]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return set(action.choices)  # type: ignore[arg-type]


_RUN = sorted({tuple(c["args"]) for _, c in tiergate_containers(render(EVERYTHING_ON))})


@pytest.mark.parametrize("args", _RUN, ids=" ".join)
def test_every_command_the_chart_runs_is_a_real_tiergate_command(args: tuple[str, ...]) -> None:
    assert args[0] in _subcommands()
    parsed = build_parser().parse_args(list(args))
    assert parsed.command == args[0]


def test_bundled_services_wire_their_urls(everything: list[dict[str, Any]]) -> None:
    (container,) = pod_spec(one(everything, "Deployment"))["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert (
        env["DATABASE_URL"]["value"]
        == "postgresql://tiergate:$(POSTGRES_PASSWORD)@demo-tiergate-postgresql:5432/tiergate"
    )
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "tiergate-postgresql"
    assert env["REDIS_URL"]["value"] == "redis://demo-tiergate-redis:6379/0"
    assert env["CHROMA_URL"]["value"] == "http://demo-tiergate-chroma:8000"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector:4318"
    services = {s["metadata"]["name"] for s in of(everything, "Service")}
    assert {"demo-tiergate-postgresql", "demo-tiergate-redis", "demo-tiergate-chroma"} <= services
    for stateful in of(everything, "StatefulSet"):
        assert stateful["spec"]["serviceName"] in services
        assert stateful["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]


def test_every_top_level_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"[A-Za-z]\w*:", line):
            above = next(previous for previous in reversed(lines[:i]) if previous.strip())
            assert above.lstrip().startswith("#"), f"values.yaml: {line.split(':')[0]} has no comment"


def _tiny_chart(tmp_path: Path, template: str) -> Path:
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 0.1.0\n")
    (tmp_path / "templates" / "t.yaml").write_text(template)
    return tmp_path


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("a: {{ .Values.typo }}", "not declared"),
        ("{{ if .Values.nope }}x{{ end }}", "not declared"),
        ("a: {{ .Values.x | frobnicate }}", "unknown function"),
        ("{{ $a := 1 }}{{ $a = 2 }}", "reassigning"),
        ("{{ if .Values.x }}unclosed", "not closed"),
        ('a: {{ include "missing" . }}', "no template"),
        ('a: {{ required "x is needed" .Values.empty }}', "x is needed"),
    ],
)
def test_the_renderer_refuses_what_helm_would_render_as_nothing(
    tmp_path: Path, template: str, error: str
) -> None:
    chart = _tiny_chart(tmp_path, template)
    with pytest.raises(TemplateError, match=error):
        Renderer(chart, {"x": 1, "empty": ""}).render_all()


def test_the_renderer_follows_go_template_semantics(tmp_path: Path) -> None:
    template = """{{- define "t.greet" -}}hi {{ .who }}{{- end -}}
a: {{ include "t.greet" (dict "who" .Values.name) | quote }}
b: {{- range $k, $v := .Values.map }} {{ $k }}={{ $v }}{{ end }}
c: {{ if and .Values.on (not .Values.off) }}on-not-off{{ else if .Values.off }}no{{ else }}never{{ end }}
d: {{ default "fallback" .Values.blank }}
e:
  {{- toYaml .Values.list | nindent 2 }}
f: {{ ternary "x" "y" .Values.off }}
"""
    rendered = Renderer(
        _tiny_chart(tmp_path, template),
        {"name": "bob", "map": {"z": 1, "a": 2}, "on": True, "off": False, "blank": "", "list": [1, 2]},
    ).render_all()
    assert yaml.safe_load(rendered["t.yaml"]) == {
        "a": "hi bob",
        "b": "a=2 z=1",
        "c": "on-not-off",
        "d": "fallback",
        "e": [1, 2],
        "f": "y",
    }

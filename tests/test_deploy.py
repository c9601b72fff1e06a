"""The deployment files in ``deploy/``: valid for the tools that read them, and consistent
with each other and with the service they deploy.

No Docker engine, cluster or systemd runs here, so each file is checked by the tool or
schema its consumer uses: the compose-spec JSON schema (as shipped by check-jsonschema),
Kubernetes' OpenAPI schemas (kubernetes-validate), ``promtool`` (check config, check
rules, the alert unit tests), ``systemd-analyze verify``. Every PromQL expression of the
dashboard and the alerts is checked against the metrics ``onfh_dlr.metrics`` defines, and
every deployment's ``ONFH_*`` environment against the service's own ``Settings``.
"""

from __future__ import annotations

import functools
import http.server
import importlib.resources
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from onfh_dlr import metrics
from onfh_dlr.errors import ConfigurationError
from onfh_dlr.settings import Destination, Settings, load_settings
from onfh_dlr.state import JOB_STATES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
K8S_DIR = DEPLOY / "k8s"
SYSTEMD_DIR = DEPLOY / "systemd"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "onfh-dlr.json"

LISTENER_HTTP_PORT = 9480
WORKER_HTTP_PORT = 9481
DICOM_PORT = 11112
DICOMWEB_PORT = 8180
SCRAPE_JOBS = ("onfh-listener", "onfh-worker")
# Oldest Kubernetes minor the manifests promise to work on, and the newest schema known.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


def _tool(name: str, package: str) -> str:
    """Path of a required test tool; a missing one fails the test, it never skips."""
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} (Debian package {package}) is required: run `make system-deps`")
    return exe


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _yaml_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


# --- the metrics the service exports -------------------------------------------------------

# Labels every scraped series carries (target labels), or that the Kubernetes scrape
# config adds (namespace).
TARGET_LABELS = frozenset({"job", "instance", "namespace"})
# Info labels are set at run time (BUNDLE.info({...})), not declared on the object.
INFO_LABELS = {"onfh_bundle_info": frozenset({"name", "version", "device_uid"})}
# Label values the expressions may select on, per (exported series, label).
_FINISHED_STATES = frozenset({"done", "failed", "dead_letter"})
KNOWN_VALUES: dict[tuple[str, str], frozenset[str]] = {
    (metrics.JOBS, "state"): frozenset(JOB_STATES),
    ("onfh_jobs_finished_total", "state"): _FINISHED_STATES,
    ("onfh_deliveries_total", "outcome"): frozenset({"delivered", "retry", "dead_letter"}),
    ("onfh_associations_total", "transport"): frozenset({"dimse", "stow-rs"}),
    ("onfh_associations_total", "outcome"): frozenset({"accepted", "rejected"}),
    ("onfh_series_closed_total", "trigger"): frozenset({"release", "timeout"}),
    ("onfh_instances_received_total", "transport"): frozenset({"dimse", "stow-rs"}),
    ("onfh_instances_received_total", "outcome"): frozenset(
        {
            "stored",
            "duplicate",
            "refused_bad_dataset",
            "refused_out_of_resources",
            "refused_other",
        }
    ),
    **{
        (f"onfh_stage_seconds_{part}", "stage"): frozenset(metrics.STAGES)
        for part in ("bucket", "sum", "count")
    },
}


@functools.cache
def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the service exports, with the labels it may carry.

    Derived from the prometheus_client objects in ``onfh_dlr.metrics`` as the exposition
    format names them (a Counter ``x`` is ``x_total``, a Histogram ``x_bucket/_sum/_count``
    with ``le`` on buckets, an Info ``x_info``), plus the two gauges the listener computes
    at scrape time (the jobs, the queue, and the drift window's).
    """
    series: dict[str, frozenset[str]] = {
        metrics.JOBS: frozenset({"state"}),
        metrics.QUEUE_DEPTH: frozenset(),
        # The drift window's gauges, read from the state DB at scrape time (issue 15).
        metrics.DRIFT_SCORE: frozenset(),
        metrics.DRIFT_INPUT_PSI: frozenset({"input"}),
        metrics.DRIFT_WINDOW_HIPS: frozenset(),
        metrics.POSITIVE_RATE_WINDOW: frozenset(),
        metrics.POSITIVE_RATE_EXPECTED: frozenset(),
        metrics.POSITIVE_RATE_PVALUE: frozenset(),
    }
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        labels = frozenset(obj._labelnames)
        for family in obj.describe():
            if family.type == "counter":
                series[f"{family.name}_total"] = labels
            elif family.type == "histogram":
                series[f"{family.name}_bucket"] = labels | {"le"}
                series[f"{family.name}_sum"] = labels
                series[f"{family.name}_count"] = labels
            elif family.type == "info":
                name = f"{family.name}_info"
                series[name] = labels | INFO_LABELS.get(name, frozenset())
            else:
                series[family.name] = labels
    return series


_SELECTOR = re.compile(r"\b(onfh_[a-z_]+|up)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def promql_problems(expr: str) -> list[str]:
    """What in a PromQL expression does not exist among the exported metrics.

    Checks metric names, the labels of each selector and of every grouping clause, and
    label values selected on where the values are a known, closed set.
    """
    known = exported_series()
    problems: list[str] = []
    used: list[str] = []
    for match in _SELECTOR.finditer(expr):
        name, braces = match.group(1), match.group(2)
        if name != "up" and name not in known:
            problems.append(f"unknown metric {name}")
            continue
        used.append(name)
        labels = (known.get(name, frozenset()) if name != "up" else frozenset()) | TARGET_LABELS
        for label, op, value in _MATCHER.findall(braces or ""):
            if label not in labels:
                problems.append(f"{name} has no label {label!r}")
                continue
            values = KNOWN_VALUES.get((name, label))
            if name == "up" and label == "job":
                values = frozenset(SCRAPE_JOBS)
            if values is None or op in ("!=", "!~"):
                continue
            if op == "=" and value not in values:
                problems.append(f'{name}{{{label}="{value}"}}: not one of {sorted(values)}')
            if op == "=~":
                for alternative in value.split("|"):
                    if not any(re.fullmatch(alternative, v) for v in values):
                        problems.append(
                            f"{name}{{{label}=~{value!r}}}: {alternative!r} matches none"
                        )
    in_scope = set(TARGET_LABELS)
    for name in used:
        in_scope |= known.get(name, frozenset())
    for group in _GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",")):
            if label and label not in in_scope:
                problems.append(f"grouping label {label!r} is on none of {sorted(set(used))}")
    if "histogram_quantile" in expr and not re.search(r"by\s*\([^)]*\ble\b", expr):
        problems.append("histogram_quantile over an aggregation that drops le")
    return problems


def test_promql_checker_catches_wrong_names_labels_and_values() -> None:
    # The checker itself: the expressions below each have one mistake it must report.
    assert promql_problems('sum by (state) (onfh_jobs{state="dead_letter"})') == []
    assert promql_problems("onfh_queue_lenght") == ["unknown metric onfh_queue_lenght"]
    assert promql_problems('onfh_jobs{status="failed"}')
    assert promql_problems('onfh_jobs{state="dead"}')
    assert promql_problems("sum by (destination) (onfh_jobs)")
    assert promql_problems('up{job="onfh-listner"}')
    assert promql_problems("histogram_quantile(0.9, sum(rate(onfh_stage_seconds_bucket[5m])))")


def test_every_service_metric_is_exported_under_the_expected_series_names() -> None:
    series = exported_series()
    for name in (
        "onfh_associations_total",
        "onfh_instances_received_total",
        "onfh_series_closed_total",
        "onfh_series_admitted_total",
        "onfh_series_skipped_total",
        "onfh_jobs",
        "onfh_queue_depth",
        "onfh_stage_seconds_bucket",
        "onfh_jobs_finished_total",
        "onfh_deliveries_total",
        "onfh_bundle_info",
    ):
        assert name in series, name
    assert series["onfh_deliveries_total"] == {"destination", "outcome"}
    assert series["onfh_stage_seconds_bucket"] == {"stage", "le"}


# --- Dockerfile ------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_builds_a_non_root_cpu_image_from_python_311_slim() -> None:
    instructions = _dockerfile_instructions()
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for keyword, rest in instructions
        if keyword == "ARG" and "=" in rest
    }
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for keyword, rest in instructions
        if keyword == "FROM"
    ]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases

    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    torch_step = next(i for i, run in enumerate(runs) if "torch==2.14.1" in run)
    assert "--index-url" in runs[torch_step] and "torchvision==0.29.1" in runs[torch_step]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    install_step = next(i for i, run in enumerate(runs) if re.search(r"pip install \.(\s|$)", run))
    assert torch_step < install_step, "torch must come from the CPU index before `pip install .`"
    assert "psycopg[binary]" in runs[install_step] and "flower" in runs[install_step]

    final = _final_stage(instructions)
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage must drop root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric UID lets Kubernetes' runAsNonRoot verify it"
    assert any(keyword == "HEALTHCHECK" and "healthcheck.py" in rest for keyword, rest in final)
    exposed = {p for keyword, rest in final if keyword == "EXPOSE" for p in rest.split()}
    ports = (DICOM_PORT, DICOMWEB_PORT, LISTENER_HTTP_PORT, WORKER_HTTP_PORT)
    assert {str(p) for p in ports} <= exposed
    entrypoint = [json.loads(rest) for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entrypoint == [["onfh-dlr"]]


def test_docker_build_context_holds_every_file_the_image_copies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "the repository root holds gigabytes of data: exclude by default"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = {
        source
        for keyword, rest in _dockerfile_instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    for package in packages:
        assert package in included, f"{package} is excluded from the build context"
        assert any(src == package for src in sources), f"{package} is not copied into the image"
    for src in sources:
        assert (ROOT / src).exists(), src
        assert src in included or src.split("/")[0] in included, f"{src} is not in the context"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that nothing listens on: the 'process is down' case."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _healthcheck(path: str, **env: str) -> int:
    script = DEPLOY / "healthcheck.py"
    run = subprocess.run(
        [sys.executable, str(script), path], env=env, capture_output=True, timeout=30, check=False
    )
    return run.returncode


def test_container_healthcheck_passes_when_either_role_answers_and_fails_otherwise(
    health_server: int, closed_port: int
) -> None:
    up, down = str(health_server), str(closed_port)
    # A listener container (its port answers) and a worker container (only the worker's).
    assert _healthcheck("/healthz", ONFH_METRICS_PORT=up) == 0
    assert _healthcheck("/healthz", ONFH_METRICS_PORT=down, ONFH_WORKER_METRICS_PORT=up) == 0
    assert _healthcheck("/healthz", ONFH_METRICS_PORT=down, ONFH_WORKER_METRICS_PORT=down) == 1
    # 503 from /readyz (not ready) fails the readiness check compose gates on.
    assert _healthcheck("/readyz", ONFH_METRICS_PORT=up) == 1
    assert _healthcheck("/healthz") == 1


def test_container_healthcheck_speaks_https_to_the_listener_when_tls_is_set(
    tmp_path: Path, closed_port: int
) -> None:
    from prometheus_client import CollectorRegistry

    from onfh_dlr.web import HttpServer, server_tls_context

    openssl = _tool("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=onfh-listener", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = HttpServer(
        "127.0.0.1",
        0,
        registry=CollectorRegistry(),
        checks={},
        ssl_context=server_tls_context(cert, key),
    ).start()
    try:
        port = str(server.port)
        tls = {"ONFH_TLS_CERT": str(cert), "ONFH_TLS_KEY": str(key)}
        assert _healthcheck("/readyz", ONFH_METRICS_PORT=port, **tls) == 0
        assert _healthcheck("/readyz", ONFH_METRICS_PORT=port) == 1  # plain HTTP: refused
        # The worker's port stays plain HTTP in the same (TLS) environment.
        assert (
            _healthcheck(
                "/healthz", ONFH_METRICS_PORT=str(closed_port), ONFH_WORKER_METRICS_PORT=port, **tls
            )
            == 1
        )
    finally:
        server.stop()


# --- settings of every deployment ------------------------------------------------------------


# What an administrator puts in deploy/.env (README): the secrets compose requires.
DOTENV = {
    "ONFH_REDIS_PASSWORD": "0123456789abcdef0123456789abcdef",
    "ONFH_STATUS_TOKEN": "fedcba9876543210fedcba9876543210",
}
_REQUIRED = re.compile(r"\$\{(\w+):\?([^}]*)\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default; ``${VAR:?message}``
    (required): the value from :data:`DOTENV`."""
    value = _REQUIRED.sub(lambda m: DOTENV[m.group(1)], value)
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def _settings(env: dict[str, Any], where: str) -> Settings:
    environ = {k: _interpolate(str(v)) for k, v in env.items() if k.startswith("ONFH_")}
    try:
        return load_settings(environ=environ)
    except ConfigurationError as exc:
        raise AssertionError(f"{where}: the service rejects its settings: {exc}") from exc


# --- Docker Compose --------------------------------------------------------------------------


@functools.cache
def _compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(DEPLOY / "compose.yaml")
    return data


def _compose_schema() -> dict[str, Any]:
    # check-jsonschema vendors the compose-spec schema (Apache-2.0, compose-spec/compose-spec).
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "check-jsonschema (dev dependency, ships the compose-spec schema) is required"
        ) from exc
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text("utf-8"))
    return schema


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    schema = _compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_class(schema).iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_schema_check_rejects_a_misspelt_key() -> None:
    schema = _compose_schema()
    broken = json.loads(json.dumps(_compose()))
    broken["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_up"
    broken["services"]["listener"]["healtcheck"] = {}
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert len(list(validator.iter_errors(broken))) >= 2


def test_compose_services_have_images_volumes_and_healthy_dependencies() -> None:
    compose = _compose()
    services: dict[str, dict[str, Any]] = compose["services"]
    assert {
        "redis",
        "postgres",
        "listener",
        "worker",
        "flower",
        "prometheus",
        "grafana",
        "orthanc",
    } <= set(services)
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            build = service["build"]
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )


def test_compose_listener_and_workers_share_broker_database_and_data_volume() -> None:
    services = _compose()["services"]
    postgres = services["postgres"]["environment"]
    settings = {}
    for role in ("listener", "worker"):
        service = services[role]
        env = service["environment"]
        assert "ONFH_BROKER_URL" in env and "ONFH_DATABASE_URL" in env, role
        settings[role] = _settings(env, f"compose {role}")
        assert service["command"] == [role]
        mounts = dict(m.split(":")[:2][::-1] for m in service["volumes"])
        assert mounts[str(settings[role].data_dir)] == "onfh-data", role
        assert service["healthcheck"]["test"][-1] == "/readyz", role
    listener, worker = settings["listener"], settings["worker"]
    password = DOTENV["ONFH_REDIS_PASSWORD"]
    assert listener.broker_url == worker.broker_url == f"redis://:{password}@redis:6379/0"
    assert listener.database_url == worker.database_url
    assert listener.database_url == (
        f"postgresql+psycopg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert listener.metrics_port == LISTENER_HTTP_PORT
    assert worker.worker_metrics_port == WORKER_HTTP_PORT
    assert f"{DICOM_PORT}:{listener.port}" in services["listener"]["ports"]
    assert f"{LISTENER_HTTP_PORT}:{LISTENER_HTTP_PORT}" in services["listener"]["ports"]
    # STOW-RS is on (it is off without a token) and published.
    assert listener.dicomweb_token is not None
    assert listener.dicomweb_port == DICOMWEB_PORT
    assert f"{DICOMWEB_PORT}:{listener.dicomweb_port}" in services["listener"]["ports"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["worker"], "published worker ports collide between replicas"


def test_compose_orthanc_and_listener_are_wired_both_ways() -> None:
    services = _compose()["services"]
    orthanc = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text(encoding="utf-8"))
    listener = _settings(services["listener"]["environment"], "compose listener")
    worker = _settings(services["worker"]["environment"], "compose worker")
    # Orthanc -> listener: its modality entry is the listener's AE, service name and port.
    assert orthanc["DicomModalities"]["ONFH"] == [listener.ae_title, "listener", listener.port]
    assert orthanc["DicomAet"] in listener.allowed_calling_aes
    # listener/worker -> Orthanc: results go to Orthanc's AE at its service name and port.
    pacs = Destination(ae_title=orthanc["DicomAet"], host="orthanc", port=orthanc["DicomPort"])
    assert pacs in worker.destinations
    assert any(f"{orthanc['DicomPort']}:" in p for p in services["orthanc"]["ports"])
    assert "./orthanc/orthanc.json:/etc/orthanc/orthanc.json:ro" in services["orthanc"]["volumes"]


def test_compose_orthanc_sends_by_stow_rs_to_the_listener_with_its_token() -> None:
    services = _compose()["services"]
    orthanc = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text(encoding="utf-8"))
    listener_env = services["listener"]["environment"]
    listener = _settings(listener_env, "compose listener")
    # The plugin image, and the configuration loads its plugins (ours replaces the image's).
    assert services["orthanc"]["image"].startswith("jodogne/orthanc-plugins:")
    assert orthanc["Plugins"] == ["/usr/local/share/orthanc/plugins"]
    assert orthanc["DicomWeb"]["Enable"] is True
    server = orthanc["DicomWeb"]["Servers"]["ONFH"]
    assert server["Url"] == f"http://listener:{listener.dicomweb_port}/"
    # Orthanc substitutes ${ONFH_DICOMWEB_TOKEN} from its environment, which compose fills
    # from the same expression as the listener's token.
    assert server["HttpHeaders"] == {"Authorization": "Bearer ${ONFH_DICOMWEB_TOKEN}"}
    orthanc_env = services["orthanc"]["environment"]
    assert orthanc_env["ONFH_DICOMWEB_TOKEN"] == listener_env["ONFH_DICOMWEB_TOKEN"]
    assert _interpolate(orthanc_env["ONFH_DICOMWEB_TOKEN"]) == listener.dicomweb_token


def test_compose_monitoring_is_wired_to_the_listener_workers_and_dashboards() -> None:
    services = _compose()["services"]
    prometheus = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    flower = services["flower"]
    assert flower["entrypoint"] == ["celery"]
    broker = _settings(services["listener"]["environment"], "compose listener").broker_url
    command = [_interpolate(part) for part in flower["command"]]
    assert f"--broker={broker}" in command and "flower" in command
    grafana = services["grafana"]
    provisioning = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "onfh.yaml")
    dashboards_path = provisioning["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{dashboards_path}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    datasource = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert datasource["datasources"][0]["type"] == "prometheus"


def test_compose_redis_requires_the_password_every_broker_client_gets_from_the_secret() -> None:
    compose = _compose()
    services = compose["services"]
    # One source: ONFH_REDIS_PASSWORD, required (compose refuses to start without it).
    assert compose["secrets"]["redis-password"] == {"environment": "ONFH_REDIS_PASSWORD"}
    redis = services["redis"]
    assert redis["secrets"] == ["redis-password"]
    (script,) = redis["command"]
    assert "/run/secrets/redis-password" in script and "requirepass" in script
    assert "ONFH_REDIS_PASSWORD" not in json.dumps(redis), "not in its environment or command"
    assert "REDISCLI_AUTH" in redis["healthcheck"]["test"][-1]
    # Every service that talks to the broker: the password from that same variable.
    clients = {
        name: json.dumps(service)
        for name, service in services.items()
        if "redis:6379" in json.dumps(service) or "ONFH_BROKER_URL" in json.dumps(service)
    }
    assert set(clients) == {"listener", "worker", "flower"}
    for name, text in clients.items():
        urls = re.findall(r"redis://[^\"]*@redis:6379", text) or [
            str(compose["x-onfh-environment"]["ONFH_BROKER_URL"])
        ]
        for url in urls:
            match = _REQUIRED.search(url)
            assert match is not None and match.group(1) == "ONFH_REDIS_PASSWORD", (name, url)
    assert "redis://redis:" not in (DEPLOY / "compose.yaml").read_text(encoding="utf-8")


def test_compose_listener_reads_the_status_token_from_its_secret() -> None:
    compose = _compose()
    listener = compose["services"]["listener"]
    assert compose["secrets"]["status-token"] == {"environment": "ONFH_STATUS_TOKEN"}
    assert listener["secrets"] == ["status-token"]
    settings = _settings(listener["environment"], "compose listener")
    assert settings.status_token_file == Path("/run/secrets/status-token")
    assert settings.status_token is None


# --- Prometheus ------------------------------------------------------------------------------


def _promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    exe = _tool("promtool", "prometheus")
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_prometheus_config_passes_promtool_and_scrapes_the_stable_job_names(config: str) -> None:
    run = _promtool("check", "config", config)
    assert run.returncode == 0, run.stdout + run.stderr
    data = _yaml(PROMETHEUS_DIR / config)
    jobs = {job["job_name"]: job for job in data["scrape_configs"]}
    assert set(SCRAPE_JOBS) <= set(jobs)
    assert data["global"]["scrape_interval"] == "15s"
    assert data["rule_files"] == ["alerts.yml"]
    listener_targets = jobs["onfh-listener"]["static_configs"][0]["targets"]
    assert [t.rsplit(":", 1)[1] for t in listener_targets] == [str(LISTENER_HTTP_PORT)]
    worker_sd = jobs["onfh-worker"]["dns_sd_configs"][0]
    assert worker_sd["type"] == "A" and worker_sd["port"] == WORKER_HTTP_PORT


def test_prometheus_compose_targets_are_the_compose_services() -> None:
    jobs = {j["job_name"]: j for j in _yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]}
    services = _compose()["services"]
    assert jobs["onfh-listener"]["static_configs"][0]["targets"] == [
        f"listener:{LISTENER_HTTP_PORT}"
    ]
    assert jobs["onfh-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert "listener" in services and "worker" in services


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    check = _promtool("check", "rules", "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    unit = _promtool("test", "rules", "alerts_test.yml")
    assert unit.returncode == 0, unit.stdout + unit.stderr


def _alert_rules() -> list[dict[str, Any]]:
    groups = _yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_expressions_use_only_exported_metrics_and_labels() -> None:
    rules = _alert_rules()
    problems = {rule["alert"]: promql_problems(rule["expr"]) for rule in rules}
    assert not {name: p for name, p in problems.items() if p}
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_alerts_cover_what_on_call_must_hear_about() -> None:
    names = {rule["alert"] for rule in _alert_rules()}
    assert {
        "OnfhListenerDown",
        "OnfhNoWorkers",
        "OnfhQueueGrowing",
        "OnfhDeadLetters",
        "OnfhJobFailureRate",
        "OnfhNoResultsDelivered",
    } <= names
    unit_tests = _yaml(PROMETHEUS_DIR / "alerts_test.yml")["tests"]
    tested = {case["alertname"] for test in unit_tests for case in test["alert_rule_test"]}
    firing = {
        case["alertname"]
        for test in unit_tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested <= names
    assert {
        "OnfhListenerDown",
        "OnfhNoWorkers",
        "OnfhDeadLetters",
        "OnfhJobFailureRate",
        "OnfhNoResultsDelivered",
    } <= firing


# --- Grafana ---------------------------------------------------------------------------------


@functools.cache
def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _query_panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _query_panels() for t in p["targets"]]


def test_grafana_dashboard_loads_with_uid_title_datasource_variable_and_targets() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "onfh-dlr" and dashboard["title"] == "onfh-dlr"
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    panels = _query_panels()
    assert len(panels) >= 12
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_grafana_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_grafana_queries_use_only_exported_metrics_and_labels() -> None:
    problems = [(title, promql_problems(expr)) for title, expr in _dashboard_exprs()]
    assert not [(title, p) for title, p in problems if p]


def test_grafana_dashboard_shows_every_exported_metric() -> None:
    text = " ".join(expr for _, expr in _dashboard_exprs())
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported_series()}
    missing = [name for name in sorted(families) if name not in text]
    assert not missing, f"no panel shows {missing}"
    for job in SCRAPE_JOBS:
        assert job in text, f"no panel shows whether {job} is up"


def test_grafana_dead_letters_stat_turns_red_above_zero() -> None:
    panel = next(p for p in _query_panels() if p["title"] == "Dead letters")
    assert panel["type"] == "stat"
    assert 'onfh_jobs{state="dead_letter"}' in panel["targets"][0]["expr"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0]["color"] == "green" and steps[0]["value"] is None
    red = [s for s in steps if s["color"] == "red"]
    assert red and 0 < red[0]["value"] <= 1


def test_grafana_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses every expression as a recording rule; Grafana's interval variables
    # become a plain duration first.
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr),
        }
        for i, (_, expr) in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = _promtool("check", "rules", str(path), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


# --- Kubernetes ------------------------------------------------------------------------------

K8S_NOT_APPLIED = {"kustomization.yaml"}  # kustomize's own file, no API object


@functools.cache
def _k8s_docs() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: _yaml_all(path)
        for path in sorted(K8S_DIR.glob("*.yaml"))
        if path.name not in K8S_NOT_APPLIED
    }


def _k8s(kind: str, name: str) -> dict[str, Any]:
    for docs in _k8s_docs().values():
        for doc in docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_against_the_api_schemas(version: str) -> None:
    failures = []
    for name, docs in _k8s_docs().items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                failures.append(f"{name} {doc['kind']}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_kubernetes_validation_is_strict_about_unknown_fields() -> None:
    worker = json.loads(json.dumps(_k8s("Deployment", "onfh-worker")))
    worker["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_but_the_examples() -> None:
    kustomization = _yaml(K8S_DIR / "kustomization.yaml")
    assert set(kustomization["resources"]) == set(_k8s_docs()) - {
        "secret.example.yaml",  # real secrets are created out of band
        "prometheus-adapter-rules.yaml",  # belongs to the monitoring namespace
    }
    for docs in _k8s_docs().values():
        for doc in docs:
            if doc["kind"] != "Namespace" and doc["metadata"].get("namespace") != "monitoring":
                assert doc["metadata"]["namespace"] == "onfh-dlr", doc["metadata"]["name"]


def _container_env(deployment: str) -> dict[str, str]:
    """The environment Kubernetes gives a Deployment's container: ``envFrom`` (ConfigMap,
    Secret), then ``env`` with ``secretKeyRef`` and ``$(VAR)`` expanded as the kubelet does."""
    (container,) = _pod(_k8s("Deployment", deployment))["containers"]
    sources = {
        "configMapRef": lambda name: _k8s("ConfigMap", name)["data"],
        "secretRef": lambda name: _k8s("Secret", name)["stringData"],
    }
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        ((kind, target),) = ref.items()
        env.update(sources[kind](target["name"]))
    for item in container.get("env", []):
        if "valueFrom" in item:
            key = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = _k8s("Secret", key["name"])["stringData"][key["key"]]
        else:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
    return env


def test_kubernetes_settings_are_valid_for_the_service() -> None:
    secret = _k8s("Secret", "onfh-dlr-secrets")["stringData"]
    settings = _settings(_container_env("onfh-listener"), "k8s listener")
    assert settings.broker_url == f"redis://:{secret['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.database_url is not None and "@postgres:" in settings.database_url
    assert settings.allowed_calling_aes, "an empty allow-list accepts any sender"
    assert settings.metrics_port == LISTENER_HTTP_PORT
    assert settings.worker_metrics_port == WORKER_HTTP_PORT
    assert settings.dicomweb_port == DICOMWEB_PORT
    assert settings.dicomweb_token is not None, "STOW-RS is off without a token"
    assert settings.status_token is not None, "the status page is off without a token"


def test_kubernetes_redis_requires_the_password_every_broker_client_gets_from_the_secret() -> None:
    secret = _k8s("Secret", "onfh-dlr-secrets")["stringData"]
    assert "ONFH_BROKER_URL" not in _k8s("ConfigMap", "onfh-dlr-config")["data"]
    for deployment in ("onfh-listener", "onfh-worker"):
        url = _container_env(deployment)["ONFH_BROKER_URL"]
        assert url == f"redis://:{secret['REDIS_PASSWORD']}@redis:6379/0", deployment
    redis = _k8s("Deployment", "redis")
    pod = _pod(redis)
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (password,) = [n for n, v in volumes.items() if "secret" in v]
    assert volumes[password]["secret"]["secretName"] == "onfh-dlr-secrets"
    (item,) = volumes[password]["secret"]["items"]
    assert item["key"] == "REDIS_PASSWORD"
    path = f"{mounts[password]}/{item['path']}"
    assert path in container["args"][0] and "requirepass" in container["args"][0]
    probe = container["readinessProbe"]["exec"]["command"][-1]
    assert path in probe and "REDISCLI_AUTH" in probe
    assert "env" not in container, "the password stays out of Redis's environment"


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize(
    ("deployment", "role", "port"),
    [
        ("onfh-listener", "listener", LISTENER_HTTP_PORT),
        ("onfh-worker", "worker", WORKER_HTTP_PORT),
    ],
)
def test_kubernetes_workloads_probe_health_and_readiness_on_their_http_port(
    deployment: str, role: str, port: int
) -> None:
    workload = _k8s("Deployment", deployment)
    selector = workload["spec"]["selector"]["matchLabels"]
    assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    pod = _pod(workload)
    (container,) = pod["containers"]
    assert container["args"] == [role]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert refs == {"onfh-dlr-config", "onfh-dlr-secrets"}
    config = _k8s("ConfigMap", "onfh-dlr-config")["data"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = next(n for n, path in mounts.items() if path == config["ONFH_DATA_DIR"])
    assert volumes[data]["persistentVolumeClaim"]["claimName"] == "onfh-data"


def test_kubernetes_pods_run_as_the_image_user_without_privileges() -> None:
    image_user = next(
        rest for keyword, rest in reversed(_dockerfile_instructions()) if keyword == "USER"
    ).split(":")[0]
    for name in ("onfh-listener", "onfh-worker"):
        pod = _pod(_k8s("Deployment", name))
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == image_user
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


def test_kubernetes_listener_is_a_single_replica_behind_a_dicom_service() -> None:
    listener = _k8s("Deployment", "onfh-listener")
    assert listener["spec"]["replicas"] == 1
    assert listener["spec"]["strategy"]["type"] == "Recreate"
    pod_labels = listener["spec"]["template"]["metadata"]["labels"]
    dicom = _k8s("Service", "onfh-listener-dicom")
    assert dicom["spec"]["type"] in ("LoadBalancer", "NodePort")
    assert dicom["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["port"], p["targetPort"]) for p in dicom["spec"]["ports"]] == [
        (DICOM_PORT, "dicom"),
        (DICOMWEB_PORT, "dicomweb"),
    ]
    (container,) = _pod(listener)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["dicom"], ports["dicomweb"]) == (DICOM_PORT, DICOMWEB_PORT)
    metrics_service = _k8s("Service", "onfh-listener")
    assert metrics_service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert metrics_service["spec"]["ports"][0]["port"] == LISTENER_HTTP_PORT


def test_kubernetes_worker_resources_and_shared_spool() -> None:
    (container,) = _pod(_k8s("Deployment", "onfh-worker"))["containers"]
    resources = container["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "3Gi"
    assert resources["requests"]["cpu"] == "1"
    claim = _k8s("PersistentVolumeClaim", "onfh-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kubernetes_worker_autoscaler_follows_the_queue_depth_metric() -> None:
    hpa = _k8s("HorizontalPodAutoscaler", "onfh-worker")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "onfh-worker")
    _k8s(target["kind"], target["name"])
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == metrics.QUEUE_DEPTH
    adapter = yaml.safe_load(_k8s("ConfigMap", "prometheus-adapter")["data"]["config.yaml"])
    (rule,) = adapter["externalRules"]
    assert rule["name"]["as"] == metrics.QUEUE_DEPTH
    assert rule["seriesQuery"].startswith(metrics.QUEUE_DEPTH + "{")
    assert not promql_problems(rule["metricsQuery"].replace("<<.Series>>", metrics.QUEUE_DEPTH))
    assert rule["resources"]["overrides"]["namespace"]["resource"] == "namespace"


def test_kubernetes_services_select_existing_pods() -> None:
    pod_labels = [
        doc["spec"]["template"]["metadata"]["labels"]
        for docs in _k8s_docs().values()
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet")
    ]
    for docs in _k8s_docs().values():
        for doc in docs:
            if doc["kind"] == "Service":
                selector = doc["spec"]["selector"]
                assert any(selector.items() <= labels.items() for labels in pod_labels), doc[
                    "metadata"
                ]["name"]


# --- systemd ---------------------------------------------------------------------------------

UNITS = ("onfh-dlr-listener.service", "onfh-dlr-worker@.service", "onfh-dlr.target")


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (keys may repeat in systemd units)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (SYSTEMD_DIR / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = _tool("systemd-analyze", "systemd")
    # An image of the target host: the system's own units (for the dependencies every
    # service gets), our units, and stand-ins for the executables they start.
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    unit_dir = tmp_path / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(SYSTEMD_DIR / name, unit_dir / name)
    for executable in ("opt/onfh-dlr/bin/onfh-dlr", "usr/bin/env"):
        path = tmp_path / executable
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    instances = ["onfh-dlr-listener.service", "onfh-dlr-worker@1.service", "onfh-dlr.target"]
    run = subprocess.run(
        [exe, "verify", f"--root={tmp_path}", *(f"/etc/systemd/system/{u}" for u in instances)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys and only warns: any output is a finding.
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr


@pytest.mark.parametrize("name", ["onfh-dlr-listener.service", "onfh-dlr-worker@.service"])
def test_systemd_services_run_unprivileged_and_hardened(name: str) -> None:
    service = _unit(name)["Service"]
    expected = {
        "User": "onfh",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/onfh-dlr",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "EnvironmentFile": "/etc/onfh-dlr/onfh-dlr.env",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], f"{name}: {key}"
    assert _unit(name)["Install"]["WantedBy"] == ["onfh-dlr.target"]


def test_systemd_worker_instances_get_distinct_metrics_ports() -> None:
    (exec_start,) = _unit("onfh-dlr-worker@.service")["Service"]["ExecStart"]
    ports = {re.sub(r"%i", str(i), exec_start) for i in range(1, 10)}
    assert len(ports) == 9
    assert f"ONFH_WORKER_METRICS_PORT={WORKER_HTTP_PORT}" in exec_start.replace("%i", "1")
    assert exec_start.endswith("onfh-dlr worker")
    listener = _unit("onfh-dlr-listener.service")["Service"]["ExecStart"]
    assert listener == ["/opt/onfh-dlr/bin/onfh-dlr listener"]
    wants = _unit("onfh-dlr.target")["Unit"]["Wants"][0].split()
    assert "onfh-dlr-listener.service" in wants and "onfh-dlr-worker@1.service" in wants


def test_systemd_environment_file_is_valid_for_the_service() -> None:
    env = {}
    for raw in (SYSTEMD_DIR / "onfh-dlr.env").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    assert "ONFH_WORKER_METRICS_PORT" not in env, "each worker unit sets its own port"
    settings = _settings(env, "systemd onfh-dlr.env")
    assert settings.data_dir == Path("/var/lib/onfh-dlr")
    assert settings.broker_url is not None and settings.database_url is not None
    assert settings.broker_url.startswith("redis://:CHANGE-ME@"), "Redis with a password"
    assert settings.status_token_file == Path("/etc/onfh-dlr/status-token")
    assert settings.metrics_port == LISTENER_HTTP_PORT
    assert settings.dicomweb_port == DICOMWEB_PORT


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_the_redis_start_script_serves_only_clients_with_the_password(
    where: str, tmp_path: Path
) -> None:
    import redis

    from onfh_dlr.broker import free_port, redis_executable

    if where == "compose":
        (script,) = _compose()["services"]["redis"]["command"]
        script = script.replace("$$", "$")  # compose's escape of a literal $
        secret = "/run/secrets/redis-password"
        # The image's entrypoint only drops to the redis user; not ours to run here.
        script = script.replace("chown redis:redis /tmp/redis.conf", "true")
        script = script.replace("exec docker-entrypoint.sh redis-server", "exec redis-server")
    else:
        (container,) = _pod(_k8s("Deployment", "redis"))["containers"]
        script = container["args"][0].replace("$$", "$")  # the kubelet's escape of a literal $
        secret = "/run/secrets/redis/password"
    password = DOTENV["ONFH_REDIS_PASSWORD"]
    (tmp_path / "password").write_text(password + "\n")  # as a mounted secret may end
    port = free_port()
    script = (
        script.replace(secret, str(tmp_path / "password"))
        .replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
        .replace("exec redis-server", f"exec {redis_executable()}")
        + f" --port {port} --bind 127.0.0.1 --dir {tmp_path}"
    )
    server = subprocess.Popen(["/bin/sh", "-c", script], cwd=tmp_path)
    try:
        client = redis.Redis(port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong", socket_timeout=2).ping()
        assert (tmp_path / "redis.conf").stat().st_mode & 0o077 == 0  # private to its user
    finally:
        server.terminate()
        server.wait(10)

"""A real Prometheus scrapes a live service with the scrape config from ``deploy/``, and
every query of the Grafana dashboard and every alert rule is evaluated through its HTTP API.

The config is ``deploy/prometheus/prometheus.yml`` with only the targets pointed at
localhost (the worker's DNS discovery becomes a static target) and a 1 s scrape interval.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import yaml
from service_harness import Cohort, CohortMaker, Service, wait_until

from onfh_dlr.broker import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
FINISHED = {"done", "failed", "dead_letter"}
# Grafana's interval variables, as Grafana would expand them for a 1 h dashboard.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError("Prometheus (Debian package prometheus) is required: make system-deps")
    return found


def local_config(listener: int, worker: int, prometheus: int) -> dict[str, Any]:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
    targets = {
        "onfh-listener": f"127.0.0.1:{listener}",
        "onfh-worker": f"127.0.0.1:{worker}",
        "prometheus": f"127.0.0.1:{prometheus}",
    }
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"onfh-listener", "onfh-worker"} <= jobs
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        job.pop("scrape_timeout", None)
    return config


class Prometheus:
    def __init__(self, root: Path, config: dict[str, Any], port: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = port
        self.log = (root / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        wait_until(self._ready, 60, "Prometheus to be ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def service_settings() -> dict[str, str]:
    return {"metrics_port": str(free_port()), "worker_metrics_port": str(free_port())}


@pytest.fixture(scope="module")
def observed(
    service: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Prometheus]]:
    listener = int(service.env["ONFH_METRICS_PORT"])
    worker = int(service.env["ONFH_WORKER_METRICS_PORT"])
    prometheus = free_port()
    server = Prometheus(
        tmp_path_factory.mktemp("prometheus"),
        local_config(listener, worker, prometheus),
        prometheus,
    )
    try:
        yield service, server
    finally:
        server.stop()


# The drift window's gauges (issue 15) exist only once a window holds ONFH_DRIFT_MIN_HIPS
# hips (20 by default; this service scores fewer), and the shadow metrics only with
# ONFH_SHADOW_BUNDLES; this service serves the demo bundle alone.
# tests/test_drift_service.py checks the drift gauges and their alert rules,
# tests/test_shadow_service.py the shadow metrics, each on a live service that has them.
_DRIFT_METRICS = re.compile(r"\bonfh_(drift|positive_rate|shadow)_[a-z_]+")


def _drift_only(expr: str) -> bool:
    """Whether every metric ``expr`` reads is a drift gauge or a shadow metric."""
    names = set(re.findall(r"\bonfh_[a-z_]+", expr))
    return bool(names) and all(_DRIFT_METRICS.fullmatch(n) for n in names)


def _push_variants(service: Service, shared: Cohort, root: Path) -> list[str]:
    """A scored study, one that fails (no femoral head) and one the rules skip (the last two
    changed in a copy of the shared cohort)."""
    shutil.copytree(shared.root, root)
    cohort = root / "cohort.csv"
    series_dirs = sorted({p.parent for p in root.glob("*/series/*.dcm")})
    uids = []
    rng = np.random.default_rng(1)
    for kind, directory in zip(("scored", "failed", "skipped"), series_dirs, strict=True):
        files = sorted(directory.glob("*.dcm"))
        if kind != "scored":
            for path in files:
                ds = pydicom.dcmread(path)
                if kind == "failed":
                    noise = rng.integers(100, 400, size=ds.pixel_array.shape)
                    ds.PixelData = noise.astype(ds.pixel_array.dtype).tobytes()
                else:
                    ds.SeriesDescription, ds.EchoTime, ds.RepetitionTime = "T1 COR", 10, 500
                    ds.ScanOptions = ""
                ds.save_as(path)
        service.push(files)
        uids.append(str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID))
    assert cohort.exists()
    return uids


def test_every_dashboard_query_and_alert_rule_returns_data_from_a_live_service(
    observed: tuple[Service, Prometheus], phantom_cohort: CohortMaker, tmp_path: Path
) -> None:
    service, prometheus = observed
    scored, failed, skipped = _push_variants(
        service, phantom_cohort(3, 43, onfh_fraction=70 / 150), tmp_path / "phantom"
    )
    assert service.wait_for_job(scored, FINISHED).state == "done"
    assert service.wait_for_job(failed, FINISHED).state == "failed"
    wait_until(
        lambda: (row := service.db.series(skipped)) is not None and row.state == "skipped",
        60,
        "the skipped series",
    )
    time.sleep(5)  # a few scrapes after the last change

    targets = prometheus.api("targets")["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets}
    assert health["onfh-listener"] == "up" and health["onfh-worker"] == "up", targets

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "onfh-dlr.json").read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    for row in dashboard["panels"]:
        panels += row.get("panels", [])
    empty = []
    queries = 0
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unexpanded variable in {panel['title']}: {expr}"
            queries += 1
            if _drift_only(expr):
                continue
            result = prometheus.api("query", query=expr)["result"]
            if not result:
                empty.append(f"{panel['title']}: {expr}")
    assert queries >= 10
    assert empty == [], "dashboard queries without data:\n" + "\n".join(empty)

    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules and all(rule["health"] == "ok" for rule in rules), rules
    for rule in rules:
        # Each alert's expression must at least select series that exist (no typo'd
        # metric or label); its threshold part may rightly be false now.
        names = set(re.findall(r"\bonfh_[a-z_]+", rule["query"]))
        if _drift_only(rule["query"]):
            continue
        for name in names:
            series = prometheus.api("series", **{"match[]": name})
            assert series, f"alert {rule['name']} uses {name}, which has no series"

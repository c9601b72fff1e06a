"""Flower, the Celery queue dashboard of deploy/compose.yaml, against a live service.

Started as compose starts it (``celery --broker=$ONFH_BROKER_URL flower``), it must see
the service's worker and the scoring and delivery tasks of a study (the worker sends task
events for it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from service_harness import CohortMaker, Service, wait_until

from onfh_dlr.broker import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_flower_shows_the_worker_and_the_tasks_of_a_study(
    service: Service, phantom_cohort: CohortMaker, tmp_path: Path
) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["flower"]
    assert compose["entrypoint"] == ["celery"] and "flower" in compose["command"]
    port = free_port()
    log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [
            sys.executable, "-m", "celery", f"--broker={service.redis.url}", "flower",
            f"--port={port}", "--address=127.0.0.1",
        ],
        env={**service.env, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=log,
    )  # fmt: skip

    def api(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def answers(path: str) -> bool:
        try:
            return bool(api(path))
        except OSError:
            return False

    try:
        (study,) = phantom_cohort(1, 71).studies
        wait_until(lambda: answers("/api/workers"), 90, "Flower to see the worker")
        assert set(service.push(study.slices)) == {0}
        job = service.wait_for_job(study.series_uid, {"done", "failed"})
        assert job.state == "done", job.reason

        def tasks() -> dict[str, Any]:
            found: dict[str, Any] = api("/api/tasks")
            return found

        wait_until(
            lambda: (
                {"onfh.score_job", "onfh.deliver_job"} <= {t.get("name") for t in tasks().values()}
            ),
            60,
            "the study's tasks in Flower",
        )
        succeeded = {t["name"] for t in tasks().values() if t.get("state") == "SUCCESS"}
        assert {"onfh.score_job", "onfh.deliver_job"} <= succeeded
        assert any(job.id in str(t.get("args")) for t in tasks().values())
    finally:
        flower.terminate()
        flower.wait(20)
        log.close()

"""Task routing on a real (embedded) Redis: scoring and delivery in their own queues, and
the order a worker polls them in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from onfh_dlr.broker import EmbeddedRedis
from onfh_dlr.queue import (
    DELIVER_TASK,
    DELIVERY_QUEUE,
    QUEUE,
    SCORE_TASK,
    make_celery,
    queue_depth,
    send,
)
from worker.main import WorkerRole


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "broker").start()
    try:
        yield server
    finally:
        server.stop()


def test_delivery_tasks_wait_in_their_own_queue_and_scoring_depth_counts_only_scoring(
    broker: EmbeddedRedis,
) -> None:
    app = make_celery(broker.url)
    for job in ("a", "b", "c"):
        send(app, SCORE_TASK, job)
    send(app, DELIVER_TASK, "a")
    client = redis.Redis.from_url(broker.url)
    assert (client.llen(QUEUE), client.llen(DELIVERY_QUEUE)) == (3, 1)
    assert queue_depth(broker.url) == 3  # what autoscaling watches: studies to score


def test_a_scoring_worker_polls_delivery_first_and_a_delivery_worker_only_delivery() -> None:
    assert WorkerRole.SCORING.queues == (DELIVERY_QUEUE, QUEUE)
    assert WorkerRole.DELIVERY.queues == (DELIVERY_QUEUE,)
    options = make_celery("redis://127.0.0.1:1/0").conf.broker_transport_options
    assert options["queue_order_strategy"] == "priority"  # in that order, not round-robin

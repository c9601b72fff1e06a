"""The Celery application shared by listener (sender) and workers (consumers).

The listener only sends task *names* with JSON arguments (a job id), so it never imports
the worker's code, torch or the bundle; the worker registers the tasks under the same
names (:mod:`worker.tasks`).

Two queues: scoring (:data:`QUEUE`) and delivery (:data:`DELIVERY_QUEUE`). A worker
consumes delivery first (:data:`WORKER_QUEUES`, in priority order), so a finished study's
results never wait behind studies still to be scored; ``onfh-dlr serve`` also runs a
small delivery-only worker, so delivery does not even wait for a scoring slot.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from celery import Celery

from onfh_dlr.errors import BrokerError
from onfh_dlr.logs import redacted_url

log = logging.getLogger(__name__)

QUEUE: Final = "onfh"  # scoring; its depth is what autoscaling watches
DELIVERY_QUEUE: Final = "onfh.deliver"
SCORE_TASK: Final = "onfh.score_job"
DELIVER_TASK: Final = "onfh.deliver_job"
#: The queue of each task.
TASK_QUEUES: Final = {SCORE_TASK: QUEUE, DELIVER_TASK: DELIVERY_QUEUE}
#: What a scoring worker consumes, highest priority first.
WORKER_QUEUES: Final = (DELIVERY_QUEUE, QUEUE)


def make_celery(broker_url: str, *, visibility_timeout: float = 900.0) -> Celery:
    """A Celery app configured as the service needs it.

    JSON only (no pickle can ever be accepted), late acknowledgement with one message
    prefetched, and redelivery of a task whose worker process died: together with
    idempotent tasks, a crash loses no job and produces no second result.

    Parameters
    ----------
    broker_url
        ``redis://host:port/db`` (or any URL Celery supports).
    visibility_timeout
        Seconds after which Redis hands an unacknowledged message to another worker;
        must exceed the longest task.
    """
    app = Celery("onfh-dlr", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_routes={task: {"queue": queue} for task, queue in TASK_QUEUES.items()},
        task_ignore_result=True,
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            # Poll the consumed queues in the order given (WORKER_QUEUES: delivery
            # first), not round-robin: a free slot takes a waiting delivery first.
            "queue_order_strategy": "priority",
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # The listener must not block a DICOM association for long when the broker is
        # down: a job that cannot be sent stays "pending" and the sweeper sends it later.
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
    )
    return app


def send(app: Celery, task: str, *args: Any, countdown: float | None = None) -> None:
    """Send a task by name; raises :class:`BrokerError` when the broker is unreachable."""
    try:
        app.send_task(task, args=list(args), queue=TASK_QUEUES[task], countdown=countdown)
    except Exception as exc:  # kombu/redis raise many types; all mean "not sent"
        raise BrokerError(f"cannot send {task} to the broker: {exc}") from exc


def queue_depth(broker_url: str) -> int:
    """Messages waiting in the service's queue (Redis list length)."""
    import redis

    try:
        client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
        return int(client.llen(QUEUE))
    except (redis.RedisError, OSError) as exc:
        raise BrokerError(
            f"cannot read the queue depth from {redacted_url(broker_url)}: {exc}"
        ) from exc


__all__ = [
    "DELIVERY_QUEUE",
    "DELIVER_TASK",
    "QUEUE",
    "SCORE_TASK",
    "TASK_QUEUES",
    "WORKER_QUEUES",
    "make_celery",
    "queue_depth",
    "send",
]

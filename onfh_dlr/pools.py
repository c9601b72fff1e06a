"""Worker processes for the heavy batch commands (phantom, features, train, evaluate)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def process_pool(
    workers: int, initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A pool of ``workers`` fresh ("spawn") processes.

    Forking a process in which torch, OpenMP or BLAS have started their thread pools
    copies locked mutexes into the children, which then hang for ever; spawned
    workers start clean at the cost of importing their modules once.
    """
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )


__all__ = ["process_pool"]

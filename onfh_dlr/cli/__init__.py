"""The ``onfh-dlr`` command line and process supervision: the top of the layering.

What lives here: the Typer ``app`` (:mod:`onfh_dlr.cli.root`), the command modules
(:mod:`~onfh_dlr.cli.service` — ``serve``, ``listener``, ``worker``, ``status``,
``retry``; :mod:`~onfh_dlr.cli.model` — ``features``, ``score``, ``train``, ``evaluate``,
``bundle verify``; :mod:`~onfh_dlr.cli.feedback` — ``feedback send``, ``feedback
export``; :mod:`~onfh_dlr.cli.rescore` — ``rescore``; :mod:`~onfh_dlr.cli.phantom`;
:mod:`~onfh_dlr.cli.demo`), the ``serve``
supervisor (:mod:`~onfh_dlr.cli.supervisor`) and the demo's stand-in PACS
(:mod:`~onfh_dlr.cli.receiver`).

Layering of the repository, imports pointing one way (``tests/test_layering.py`` checks it)::

    onfh_dlr (kernel: errors, settings, logs, state, queue, metrics, web, broker, pools)
      <- model_bundle (only onfh_dlr.errors, onfh_dlr.pools), phantom
      <- listener (never worker, model_bundle or torch), worker
      <- onfh_dlr.cli

Who may import this package: nobody but itself, ``onfh_dlr.__main__`` (``python -m
onfh_dlr``), the ``onfh-dlr`` entry point, tests and benchmarks.
"""

from onfh_dlr.cli import demo, feedback, model, phantom, rescore, service  # noqa: F401  (they register commands)
from onfh_dlr.cli.root import app

__all__ = ["app"]

"""The documents of a model: the training report, the model card and the evaluation report.

Lives here: :func:`render_report` (``report.html`` of a training run), :func:`model_card`
(``MODEL_CARD.md``), :func:`render_evaluation_report` (the page of ``onfh-dlr evaluate``),
:func:`render_calibration_report` and :func:`site_calibration_markdown` (what
``onfh-dlr calibrate`` adds to a bundle),
and what they are built from (``html``: an escaping HTML builder; ``markdown``: the card's
Markdown converter; ``figures``: matplotlib Agg figures as inline PNG; ``text``: wording and
number formatting; ``cohort``, ``model_details``: what the documents count and say).

The documents render what training and evaluation recorded; they compute no metric.
Every HTML file is self-contained (inline CSS, base64 figures, nothing fetched), because
it travels inside a bundle and is opened offline at hospitals.

Who may import it: ``model_bundle.training`` (publishing writes the documents),
``model_bundle.calibration`` and the command line. Import the public names from this
package, not from its modules.
"""

from model_bundle.reporting.calibration_report import (
    render_calibration_report,
    site_calibration_markdown,
)
from model_bundle.reporting.evaluation_report import render_evaluation_report
from model_bundle.reporting.model_card import model_card
from model_bundle.reporting.text import NAMES, ROI_PROTOCOLS, SYNTHETIC_WARNING
from model_bundle.reporting.training_report import render_report

__all__ = [
    "NAMES",
    "ROI_PROTOCOLS",
    "SYNTHETIC_WARNING",
    "model_card",
    "render_calibration_report",
    "render_evaluation_report",
    "render_report",
    "site_calibration_markdown",
]

"""Prometheus metrics of the listener and the worker (prometheus-client).

Every metric the service exports is defined here, so the Grafana dashboard and the alert
rules in ``deploy/`` have one place to check names and labels against. The listener
exports the counters of what it receives and, read from the state DB and the broker at
each scrape, the jobs by state and the queue depth; the worker exports stage durations,
deliveries and the bundle it serves. Worker pool processes write to a multiprocess
directory (``PROMETHEUS_MULTIPROC_DIR``), aggregated by the worker's HTTP endpoint.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

NAMESPACE: Final = "onfh"

# Stage durations span seconds (scoring) to days (a destination down over a weekend).
STAGE_BUCKETS: Final = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)
STAGES: Final = ("receive", "queue", "score", "deliver", "total")

# --- listener ----------------------------------------------------------------------------

ASSOCIATIONS = Counter(
    "associations",
    "Associations requested of the listener, by transport (dimse: a DICOM association; "
    "stow-rs: a STOW-RS request, accepted once its address and token pass) and outcome "
    "(accepted, rejected).",
    ["transport", "outcome"],
    namespace=NAMESPACE,
)
INSTANCES = Counter(
    "instances_received",
    "Instances answered by the listener, by transport (dimse: C-STORE, stow-rs: a STOW-RS "
    "part) and outcome (stored, duplicate, refused_bad_dataset, refused_out_of_resources, "
    "refused_other).",
    ["transport", "outcome"],
    namespace=NAMESPACE,
)
SERIES_CLOSED = Counter(
    "series_closed",
    "Series closed by the listener, by trigger (release: complete at association "
    "release; timeout: quiet for the series timeout).",
    ["trigger"],
    namespace=NAMESPACE,
)
SERIES_ADMITTED = Counter(
    "series_admitted", "Closed series admitted for scoring.", namespace=NAMESPACE
)
SERIES_SKIPPED = Counter(
    "series_skipped",
    "Closed series the admission rules refused, by rule (modality, coronal, t2, "
    "fat_suppression, other).",
    ["reason"],
    namespace=NAMESPACE,
)
JOBS: Final = "onfh_jobs"  # gauge by state, from the state DB at scrape time
QUEUE_DEPTH: Final = "onfh_queue_depth"  # gauge, from the broker at scrape time

# --- worker ------------------------------------------------------------------------------

STAGE_SECONDS = Histogram(
    "stage_seconds",
    "Time spent per stage of a study: receive (first instance to close), queue (close "
    "to start), score (start to SR/SEG written), deliver (written to delivered "
    "everywhere), total (close to delivered).",
    ["stage"],
    namespace=NAMESPACE,
    buckets=STAGE_BUCKETS,
)
JOBS_FINISHED = Counter(
    "jobs_finished",
    "Jobs that reached a final state in a worker, by state (done, failed, dead_letter).",
    ["state"],
    namespace=NAMESPACE,
)
DELIVERIES = Counter(
    "deliveries",
    "Delivery attempts of results, by destination and outcome (delivered, retry, dead_letter).",
    ["destination", "outcome"],
    namespace=NAMESPACE,
)
# A gauge set to 1 rather than an Info: Info does not work in multiprocess mode.
BUNDLE = Gauge(
    "bundle_info",
    "The model bundle a worker serves (name, version, device UID); always 1.",
    ["name", "version", "device_uid"],
    namespace=NAMESPACE,
    multiprocess_mode="max",
)

# --- shadow bundles (issue 15 item 5) ----------------------------------------------------
# Labelled by bundle only (name, version, Device UID): never a study, series or patient.

SHADOW_HIPS = Counter(
    "shadow_hips",
    "Hips a shadow bundle scored beside the deployed one, by bundle and outcome (agree: "
    "same call; disagree: another call; failed: the shadow could not score the hip).",
    ["name", "version", "device_uid", "outcome"],
    namespace=NAMESPACE,
)
SHADOW_AGREEMENT = Gauge(
    "shadow_agreement",
    "Fraction of the last SHADOW_WINDOW hips both bundles scored on which a shadow "
    "bundle's call equals the deployed bundle's, read from the state DB after each study.",
    ["name", "version", "device_uid"],
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",
)
#: How many of a shadow bundle's newest hips its agreement gauge covers.
SHADOW_WINDOW: Final = 50

# --- end of shadow bundles ---------------------------------------------------------------

# --- drift (issue 15): gauges the listener reads from the state DB at scrape time ---------
# (onfh_dlr.drift_store.DriftCollector). Labels are feature names only, never identifiers.

DRIFT_SCORE: Final = "onfh_drift_score"  # combined score, 0-1; absent without enough hips
DRIFT_INPUT_PSI: Final = "onfh_drift_input_psi"  # PSI per model input, label ``input``
DRIFT_WINDOW_HIPS: Final = "onfh_drift_window_hips"  # hips in the rolling window
POSITIVE_RATE_WINDOW: Final = "onfh_positive_rate_window"  # share of positive calls
POSITIVE_RATE_EXPECTED: Final = "onfh_positive_rate_expected"  # the reference's rate
POSITIVE_RATE_PVALUE: Final = "onfh_positive_rate_pvalue"  # binomial test of the two

# --- end of drift ------------------------------------------------------------------------


def skip_reason_label(reason: str) -> str:
    """The rule behind an admission rule's reason text, as a bounded label value."""
    text = reason.lower()
    for key, label in (
        ("modality", "modality"),
        ("not coronal", "coronal"),
        ("not t2", "t2"),
        ("fat-suppressed", "fat_suppression"),
        ("fat suppress", "fat_suppression"),
    ):
        if key in text:
            return label
    return "other"


__all__ = [
    "ASSOCIATIONS",
    "BUNDLE",
    "DELIVERIES",
    "DRIFT_INPUT_PSI",
    "DRIFT_SCORE",
    "DRIFT_WINDOW_HIPS",
    "INSTANCES",
    "JOBS",
    "JOBS_FINISHED",
    "NAMESPACE",
    "POSITIVE_RATE_EXPECTED",
    "POSITIVE_RATE_PVALUE",
    "POSITIVE_RATE_WINDOW",
    "QUEUE_DEPTH",
    "SERIES_ADMITTED",
    "SERIES_CLOSED",
    "SERIES_SKIPPED",
    "SHADOW_AGREEMENT",
    "SHADOW_HIPS",
    "SHADOW_WINDOW",
    "STAGES",
    "STAGE_BUCKETS",
    "STAGE_SECONDS",
    "skip_reason_label",
]

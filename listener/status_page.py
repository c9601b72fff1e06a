"""The listener's read-only status page, rendered on the server from the state DB.

Recent studies with their state, per-stage timings, skip and failure reasons and delivery
outcomes; one series' timeline from first instance to delivered SR; the dead-letter list
with a retry action (POST, protected by ``ONFH_ADMIN_TOKEN``); the radiologists'
verdicts (IHE AIRA) per model version, and the assessment SRs that were not recorded
with the reason; per shadow bundle its agreement with the deployed one and the hips on
which they differ (``/shadow``). It shows UIDs, accession
numbers and series descriptions; the state DB holds no patient names or IDs at all.

Accession numbers lead to a patient, so every route here needs the status token
(``ONFH_STATUS_TOKEN`` or ``ONFH_STATUS_TOKEN_FILE``: a bearer token or a signed session
cookie, checked by :class:`onfh_dlr.web.TokenAuth` before a handler runs); without one
configured the page is off. Imported by ``listener.main`` only.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

from listener.drift_page import drift_body
from listener.verdicts import summarise
from onfh_dlr.drift_store import snapshots
from onfh_dlr.settings import Settings, Transport
from onfh_dlr.state import (
    AssessmentState,
    Job,
    SeriesRow,
    ShadowBundleId,
    ShadowResult,
    StateDB,
    Verdict,
)
from onfh_dlr.web import Handler, Request, Response, TokenAuth, read_token

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2530}
h1{font-size:1.3rem} h2{font-size:1.1rem;margin-top:1.5rem}
nav a{margin-right:1rem}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{border-bottom:1px solid #dde3ea;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f6f9}
code{font-size:.8rem}
.s-done{color:#17683a}.s-failed,.s-dead_letter{color:#b3261e;font-weight:600}
.s-skipped,.s-not_recorded{color:#7a5b00}.s-recorded{color:#17683a}.s-running,.s-queued,.s-pending,.s-scored,.s-receiving{color:#1a4f9c}
.banner{background:#fff4e5;border:1px solid #f0c36d;padding:.5rem;margin-bottom:1rem}
nav form{display:inline;float:right}
"""

RetrySender = Callable[[str], None]


def _page(title: str, body: str) -> Response:
    return Response.html(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)} · onfh-dlr</title><style>{_STYLE}</style></head><body>"
        "<nav><a href='/'>Studies</a><a href='/dead-letters'>Dead letters</a>"
        "<a href='/verdicts'>Verdicts</a><a href='/shadow'>Shadow bundles</a>"
        "<a href='/drift'>Drift</a>"
        "<a href='/metrics'>Metrics</a><a href='/readyz'>Readiness</a>"
        "<form method='post' action='/sign-out'><button type='submit'>Sign out</button></form>"
        "</nav>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"


def _seconds(start: float | None, end: float | None) -> str:
    return f"{end - start:.1f} s" if start is not None and end is not None else "-"


def _state(state: str) -> str:
    return f"<span class='s-{escape(state)}'>{escape(state.replace('_', ' '))}</span>"


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_VERB: Final = {Transport.DIMSE: "C-STORE", Transport.STOW_RS: "STOW-RS"}


def _received_by(row: SeriesRow) -> str:
    """How and from whom a series came: ``C-STORE from AE`` or ``STOW-RS from address``."""
    peer = row.peer_address if row.transport is Transport.STOW_RS else row.calling_ae
    return escape(f"{_VERB[row.transport]} from {peer or '?'}")


def _short(uid: str) -> str:
    return f"<code title='{escape(uid)}'>…{escape(uid[-12:])}</code>"


def status_auth(settings: Settings, *, tls: bool) -> TokenAuth:
    """Who may read the status page, from ``status_token``/``status_token_file``.

    Raises
    ------
    ConfigurationError
        If both are set, the file cannot be read, or the token is too short.
    """
    token = read_token(settings.status_token, settings.status_token_file, "ONFH_STATUS_TOKEN")
    return TokenAuth(
        token, secure_cookie=tls, session_seconds=settings.status_session_hours * 3600.0
    )


class StatusPage:
    """Route handlers of the status page.

    Parameters
    ----------
    db
        The state database.
    admin_token
        The token the retry action requires; ``None`` disables the action.
    send_retry
        Sends a job's deliveries to the broker again (after the DB says so).
    """

    def __init__(self, db: StateDB, admin_token: str | None, send_retry: RetrySender) -> None:
        self.db = db
        self.admin_token = admin_token
        self.send_retry = send_retry

    @property
    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/"): self.studies,
            ("GET", "/series"): self.series,
            ("GET", "/dead-letters"): self.dead_letters,
            ("GET", "/verdicts"): self.verdicts,
            ("GET", "/shadow"): self.shadow,
            ("GET", "/drift"): self.drift,
            ("POST", "/jobs"): self.retry,
        }

    def studies(self, request: Request) -> Response:
        if request.path != "/":
            return Response.text(404, "not found\n")
        series = self.db.recent_series(limit=100)
        jobs = self._newest_jobs(s.series_uid for s in series)
        deliveries_of = self.db.deliveries_of(job.id for job in jobs.values())
        rows = []
        for s in series:
            job = jobs.get(s.series_uid)
            state = job.state if job is not None and s.state != "skipped" else s.state
            reason = (job.reason if job is not None and job.reason else s.reason) or ""
            deliveries = (
                ", ".join(
                    f"{escape(d.destination)}: {_state(d.state)}"
                    for d in deliveries_of.get(job.id, [])
                )
                if job is not None
                else ""
            )
            rows.append(
                [
                    f"<a href='/series/{escape(s.series_uid)}'>{_short(s.series_uid)}</a>",
                    escape(s.accession_number or "-"),
                    escape(s.description or "-"),
                    _received_by(s),
                    str(s.instances),
                    _state(state),
                    _when(s.last_received),
                    _seconds(s.first_received, s.closed_at),
                    _seconds(job.created_at, job.started_at) if job else "-",
                    _seconds(job.started_at, job.scored_at) if job else "-",
                    _seconds(job.scored_at, job.finished_at)
                    if job and job.state == "done"
                    else "-",
                    escape(reason),
                    deliveries,
                ]
            )
        counts = self.db.job_counts()
        summary = ", ".join(f"{_state(k)} {v}" for k, v in sorted(counts.items())) or "no jobs yet"
        return _page(
            "Recent studies",
            f"<p>Jobs: {summary}</p>"
            + _table(
                [
                    "Series",
                    "Accession",
                    "Description",
                    "Received by",
                    "Instances",
                    "State",
                    "Last received",
                    "Receive",
                    "Queue",
                    "Score",
                    "Deliver",
                    "Reason",
                    "Deliveries",
                ],
                rows,
            ),
        )

    def series(self, request: Request) -> Response:
        uid = request.path.removeprefix("/series/").strip("/")
        row = self.db.series(uid)
        if row is None:
            return Response.text(404, "no such series\n")
        events = self.db.events(uid)
        start = events[0].at if events else row.first_received
        timeline = _table(
            ["Time", "+ s", "Stage", "Job", "Detail"],
            (
                [
                    _when(e.at),
                    f"{e.at - start:.1f}",
                    _state(e.stage),
                    _short(e.job_id) if e.job_id else "",
                    escape(e.detail),
                ]
                for e in events
            ),
        )
        jobs = sorted(self.db.jobs_of_series([uid]), key=lambda j: j.generation)
        deliveries_of = self.db.deliveries_of(j.id for j in jobs)
        job_rows = [
            [
                escape(j.id),
                str(j.generation),
                _state(j.state),
                escape(j.reason),
                escape(j.sr_uid or "-"),
                # What the SR and the card told the reader beside the calls: a failed
                # left/right check, inputs outside the model's training range.
                "<br>".join(escape(str(note)) for note in j.result.get("notes", [])) or "-",
                ", ".join(
                    f"{escape(d.destination)}: {_state(d.state)} ({d.attempts})"
                    for d in deliveries_of.get(j.id, [])
                ),
            ]
            for j in jobs
        ]
        return _page(
            f"Series {uid}",
            _table(
                [
                    "Study",
                    "Accession",
                    "Description",
                    "Received by",
                    "State",
                    "Instances",
                    "Reason",
                ],
                [
                    [
                        escape(row.study_uid),
                        escape(row.accession_number or "-"),
                        escape(row.description or "-"),
                        _received_by(row),
                        _state(row.state),
                        str(row.instances),
                        escape(row.reason),
                    ]
                ],
            )
            + "<h2>Timeline</h2>"
            + timeline
            + "<h2>Jobs</h2>"
            + _table(
                ["Job", "Generation", "State", "Reason", "SR", "Notes", "Deliveries"], job_rows
            ),
        )

    def dead_letters(self, request: Request) -> Response:
        jobs = self.db.jobs(states=["dead_letter"], limit=200)
        banner = (
            ""
            if self.admin_token
            else "<p class='banner'>Retry is disabled: set ONFH_ADMIN_TOKEN to enable it.</p>"
        )
        note = request.query.get("note", [""])[0]
        if note:
            banner += f"<p class='banner'>{escape(note)}</p>"
        deliveries_of = self.db.deliveries_of(job.id for job in jobs)
        rows = []
        for job in jobs:
            failures = "; ".join(
                f"{escape(d.destination)}: {escape(d.last_error)} ({d.attempts} attempts)"
                for d in deliveries_of.get(job.id, [])
                if d.state == "dead_letter"
            )
            form = (
                f"<form method='post' action='/jobs/{escape(job.id)}/retry'>"
                "<input type='password' name='token' placeholder='admin token' required>"
                "<button type='submit'>Retry delivery</button></form>"
                if self.admin_token
                else ""
            )
            rows.append(
                [
                    f"<a href='/series/{escape(job.series_uid)}'>{_short(job.series_uid)}</a>",
                    escape(job.id),
                    _when(job.scored_at),
                    failures,
                    form,
                ]
            )
        return _page(
            "Dead letters",
            banner
            + (
                _table(["Series", "Job", "Scored", "Failed deliveries", "Action"], rows)
                if rows
                else "<p>No dead-lettered jobs.</p>"
            ),
        )

    def verdicts(self, request: Request) -> Response:
        """Per model version: verdict counts, agreement, real-world PPV and NPV (Wilson
        95 % intervals, newest verdict per hip); then the assessment SRs received."""
        if request.path.rstrip("/") != "/verdicts":
            return Response.text(404, "not found\n")
        summaries = summarise(self.db.verdicts())
        table = _table(
            [
                "Model",
                "Version",
                "Device UID",
                *(v.value for v in Verdict),
                "Agreement",
                "PPV",
                "NPV",
            ],
            (
                [
                    escape(m.model.name),
                    escape(m.model.version),
                    _short(m.model.device_uid) if m.model.device_uid else "-",
                    *(str(m.counts[v]) for v in Verdict),
                    escape(m.agreement.text()),
                    escape(m.ppv.text()),
                    escape(m.npv.text()),
                ]
                for m in summaries
            ),
        )
        assessments = self.db.assessments(limit=100)
        received = _table(
            ["Received", "Assessment SR", "From", "Assessed SR", "State", "Reason"],
            (
                [
                    _when(a.received_at),
                    _short(a.sop_instance_uid),
                    escape(a.calling_ae or "-"),
                    _short(a.referenced_sr_uid) if a.referenced_sr_uid else "-",
                    _state(a.state.value),
                    escape(a.reason),
                ]
                for a in assessments
            ),
        )
        not_recorded = sum(a.state is AssessmentState.NOT_RECORDED for a in assessments)
        note = (
            "<p>PPV: the radiologist's call was positive among hips the model called "
            "positive; NPV likewise for negative calls. Each counts the newest verdict of a "
            "hip; 95 % Wilson intervals in brackets.</p>"
        )
        banner = (
            f"<p class='banner'>{not_recorded} of the latest assessment SRs were stored but "
            "not recorded as verdicts (reason below).</p>"
            if not_recorded
            else ""
        )
        return _page(
            "Radiologists' verdicts",
            banner
            + note
            + (table if summaries else "<p>No verdicts recorded yet.</p>")
            + "<h2>Assessment SRs received</h2>"
            + received,
        )

    def drift(self, request: Request) -> Response:
        """The drift window's score and positive-call rate over time (issue 15)."""
        if request.path.rstrip("/") != "/drift":
            return Response.text(404, "not found\n")
        return _page("Drift", drift_body(snapshots(self.db, limit=200)))

    def retry(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "jobs" or parts[2] != "retry":
            return Response.text(404, "not found\n")
        if not self.admin_token:
            return Response.text(403, "retry is disabled (no ONFH_ADMIN_TOKEN)\n")
        token = request.form.get("token", [""])[0]
        if not hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return Response.text(403, "wrong token\n")
        job_id = parts[1]
        if not self.db.retry_dead_letter(job_id):
            return Response.redirect(f"/dead-letters?note=job+{job_id}+is+not+dead-lettered")
        self.send_retry(job_id)
        return Response.redirect(f"/dead-letters?note=job+{job_id}+queued+for+delivery")

    # --- shadow bundles (issue 15 item 5) -------------------------------------------------

    def shadow(self, request: Request) -> Response:
        """Per shadow bundle: hips, agreement with the deployed calls, Cohen's kappa, mean
        |Δp|, failures; then the hips on which the calls differ, linked to their series."""
        if request.path.rstrip("/") != "/shadow":
            return Response.text(404, "not found\n")
        results = self.db.shadow_results()
        summaries = [
            shadow_summary(b, [r for r in results if r.bundle == b])
            for b in sorted({r.bundle for r in results})
        ]
        table = _table(
            [
                "Bundle",
                "Version",
                "Device UID",
                "Hips",
                "Agreement",
                "Cohen's κ",
                "Mean |Δp|",
                "Failed",
            ],
            (
                [
                    escape(m.bundle.name),
                    escape(m.bundle.version),
                    _short(m.bundle.device_uid),
                    str(m.hips),
                    f"{m.agree}/{m.hips} ({m.agree / m.hips:.0%})" if m.hips else "-",
                    "-" if m.kappa is None else f"{m.kappa:.2f}",
                    "-" if m.mean_abs_delta is None else f"{m.mean_abs_delta:.3f}",
                    str(m.failed),
                ]
                for m in summaries
            ),
        )
        differ = [r for r in results if r.agrees is False or r.probability is None]
        rows = _table(
            ["Scored", "Bundle", "Series", "Job", "Hip", "Deployed", "Shadow"],
            (
                [
                    _when(r.scored_at),
                    escape(f"{r.bundle.name} {r.bundle.version}"),
                    f"<a href='/series/{escape(r.series_uid)}'>{_short(r.series_uid)}</a>",
                    _short(r.job_id),
                    escape(r.side),
                    escape(_shadow_call(r.deployed_probability, r.deployed_call)),
                    escape(
                        _shadow_call(r.probability, r.call)
                        if r.probability is not None
                        else f"failed: {r.error}"
                    ),
                ]
                for r in differ[:200]
            ),
        )
        note = (
            "<p>Shadow bundles (<code>ONFH_SHADOW_BUNDLES</code>) score every study's ROIs "
            "beside the deployed bundle and deliver nothing. Agreement and κ count hips both "
            "bundles scored.</p>"
        )
        return _page(
            "Shadow bundles",
            note
            + (table if summaries else "<p>No shadow results recorded yet.</p>")
            + "<h2>Hips on which the calls differ, or the shadow failed</h2>"
            + (rows if differ else "<p>None.</p>"),
        )

    # --- end of shadow bundles ------------------------------------------------------------

    def _newest_jobs(self, series_uids: Iterable[str]) -> dict[str, Job]:
        newest: dict[str, Job] = {}
        for job in self.db.jobs_of_series(series_uids):
            current = newest.get(job.series_uid)
            if current is None or job.generation > current.generation:
                newest[job.series_uid] = job
        return newest


# --- shadow bundles (issue 15 item 5) ---------------------------------------------------


@dataclass(frozen=True)
class ShadowSummary:
    """One shadow bundle against the deployed one, over the hips both scored."""

    bundle: ShadowBundleId
    hips: int  # scored by both bundles
    agree: int
    failed: int  # hips the shadow could not score
    kappa: float | None  # Cohen's kappa of the two calls; None when undefined
    mean_abs_delta: float | None  # mean |shadow p - deployed p|


def shadow_summary(bundle: ShadowBundleId, results: Sequence[ShadowResult]) -> ShadowSummary:
    """Agreement, Cohen's kappa and mean |Δp| of one shadow bundle's ``results``."""
    both = [r for r in results if r.agrees is not None]
    n = len(both)
    agree = sum(bool(r.agrees) for r in both)
    kappa = None
    deltas = [
        abs(r.probability - r.deployed_probability)
        for r in both
        if r.probability is not None and r.deployed_probability is not None
    ]
    if n:
        shadow_pos = sum(bool(r.call) for r in both) / n
        deployed_pos = sum(bool(r.deployed_call) for r in both) / n
        chance = shadow_pos * deployed_pos + (1 - shadow_pos) * (1 - deployed_pos)
        # Every call the same for both bundles: kappa is 0/0, said as "-".
        kappa = None if chance >= 1.0 else (agree / n - chance) / (1.0 - chance)
    return ShadowSummary(
        bundle=bundle,
        hips=n,
        agree=agree,
        failed=sum(r.probability is None for r in results),
        kappa=kappa,
        mean_abs_delta=sum(deltas) / len(deltas) if deltas else None,
    )


def _shadow_call(probability: float | None, call: int | None) -> str:
    if probability is None or call is None:
        return "-"
    return f"p={probability:.3f} {'positive' if call else 'negative'}"


# --- end of shadow bundles --------------------------------------------------------------


__all__ = ["ShadowSummary", "StatusPage", "shadow_summary", "status_auth"]

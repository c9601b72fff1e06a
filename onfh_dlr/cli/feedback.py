"""``onfh-dlr feedback``: write and send a radiologist's verdict, export the verdicts.

``feedback send SR_FILE --hip right --reject [--call absent] --to HOST:PORT`` writes an
assessment SR (IHE AIRA; the encoding and the choice of codes are in
:mod:`listener.verdicts`) that cites SR_FILE, one of our reports, and sends it by C-STORE
(``worker.scu``), so that a site without an AIRA-capable viewer can still send verdicts.
``--out FILE`` only writes it. ``feedback export`` prints the verdicts recorded in the
state database and, per model version, the counts, agreement, real-world PPV and NPV
with Wilson 95 % intervals.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from onfh_dlr.cli.root import ConfigOption, app, console, err_console, load_cli_settings
from onfh_dlr.state import Verdict

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from listener.verdicts import ModelSummary
    from onfh_dlr.state import RecordedVerdict

feedback_app = typer.Typer(
    no_args_is_help=True,
    help="Radiologists' verdicts on our results (IHE AIRA): send one, export them all.",
)
app.add_typer(feedback_app, name="feedback")


class HipChoice(StrEnum):
    LEFT = "left"
    RIGHT = "right"

    @property
    def side(self) -> str:
        return "L" if self is HipChoice.LEFT else "R"


class CallChoice(StrEnum):
    PRESENT = "present"
    ABSENT = "absent"


def build_assessment(
    report: Dataset,
    verdicts: Sequence[tuple[str, Verdict, bool | None]],
    *,
    observer: str,
    series_number: int = 901,
) -> Dataset:
    """An assessment SR (Comprehensive SR) of ``report``'s hips.

    ``verdicts``: (side "L"/"R", verdict, the radiologist's call or None) per hip. The
    hips' Tracking Unique Identifiers are copied from ``report`` so the verdict names
    the exact result it judges.

    Raises
    ------
    ValueError
        If a hip is modified without a call, or ``report`` is not one of our reports.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    from listener import verdicts as codes
    from model_bundle.imaging import Side
    from worker.sr_output import read_report

    reported = {side.value: hip for side, hip in read_report(report).items()}
    wanted = [Side.LEFT.value, Side.RIGHT.value]
    assert sorted(codes.SIDES) == sorted(wanted)

    def code(c: Any) -> hd.sr.CodedConcept:
        return hd.sr.CodedConcept(c.value, c.scheme_designator, c.meaning)

    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(
            name=hd.sr.CodedConcept("121005", "DCM", "Observer Type"),
            value=hd.sr.CodedConcept("121006", "DCM", "Person"),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT,
        ),
        hd.sr.PnameContentItem(
            name=code(codes.PERSON_OBSERVER_NAME),
            value=observer,
            relationship_type=hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT,
        ),
        hd.sr.CompositeContentItem(
            name=code(codes.ASSESSED_RESULT),
            referenced_sop_class_uid=report.SOPClassUID,
            referenced_sop_instance_uid=report.SOPInstanceUID,
            relationship_type=contains,
        ),
    ]
    for side, verdict, call in verdicts:
        if verdict is Verdict.MODIFY and call is None:
            raise ValueError("a modified result needs the radiologist's call (--call)")
        hip = reported.get(side)
        group = hd.sr.ContainerContentItem(
            name=code(codes.MEASUREMENT_GROUP), relationship_type=contains
        )
        laterality = hd.sr.CodeContentItem(
            name=code(codes.LATERALITY),
            value=code(codes.SIDES[side]),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
        site = hd.sr.CodeContentItem(
            name=code(codes.FINDING_SITE),
            value=code(codes.HEAD_OF_FEMUR),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
        site.ContentSequence = hd.sr.ContentSequence([laterality])
        content: list[hd.sr.ContentItem] = [
            hd.sr.TextContentItem(
                name=code(codes.TRACKING_ID),
                value=codes.SIDE_LABELS[side],
                relationship_type=hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT,
            )
        ]
        if hip is not None:
            content.append(
                hd.sr.UIDRefContentItem(
                    name=code(codes.TRACKING_UID),
                    value=hip.tracking_uid,
                    relationship_type=hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT,
                )
            )
        content += [
            site,
            hd.sr.CodeContentItem(
                name=code(codes.ASSESSMENT),
                value=code(codes.VERDICT_CODES[verdict]),
                relationship_type=contains,
            ),
        ]
        if call is not None:
            content.append(
                hd.sr.CodeContentItem(
                    name=code(codes.NECROSIS),
                    value=code(codes.PRESENT if call else codes.ABSENT),
                    relationship_type=contains,
                )
            )
        group.ContentSequence = hd.sr.ContentSequence(content)
        group.ContinuityOfContent = "SEPARATE"  # renderers then label each item
        items.append(group)
    root = hd.sr.ContainerContentItem(name=code(codes.ASSESSMENT_TITLE))
    root.ContentSequence = hd.sr.ContentSequence(items)
    root.ContinuityOfContent = "SEPARATE"
    sr = hd.sr.ComprehensiveSR(
        evidence=[report],  # patient and study are copied from the assessed report
        content=root,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="onfh-dlr",
        is_complete=True,
        is_final=True,
        is_verified=False,
        series_description="AI result assessment",
    )
    return sr


def _endpoint(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise typer.BadParameter(f"{value!r} is not HOST:PORT")
    return host, int(port)


@feedback_app.command("send")
def send(
    sr_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, resolve_path=True, help="Our SR.")
    ],
    hip: Annotated[
        list[HipChoice], typer.Option("--hip", help="The hip assessed (repeat for both).")
    ],
    accept: Annotated[bool, typer.Option("--accept", help="The result is right.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="The result is wrong.")] = False,
    modify: Annotated[
        bool, typer.Option("--modify", help="The result was changed (needs --call).")
    ] = False,
    call: Annotated[
        CallChoice | None,
        typer.Option("--call", help="The radiologist's call: early ONFH present or absent."),
    ] = None,
    observer: Annotated[
        str, typer.Option("--observer", help="The radiologist's name (DICOM PN, Last^First).")
    ] = "Radiologist^",
    to: Annotated[
        str | None, typer.Option("--to", help="HOST:PORT of the onfh-dlr listener.")
    ] = None,
    ae: Annotated[str, typer.Option("--ae", help="The listener's AE title.")] = "ONFH_DLR",
    calling_ae: Annotated[
        str, typer.Option("--calling-ae", help="Our AE title.")
    ] = "ONFH_FEEDBACK",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the SR here (and send only with --to).")
    ] = None,
) -> None:
    """Write an assessment SR of SR_FILE's hips and send it by C-STORE (or only --out)."""
    import pydicom

    from onfh_dlr.errors import OnfhError

    chosen = [
        v
        for v, on in ((Verdict.ACCEPT, accept), (Verdict.REJECT, reject), (Verdict.MODIFY, modify))
        if on
    ]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --accept, --reject, --modify")
    if to is None and out is None:
        raise typer.BadParameter("give --to HOST:PORT to send, or --out FILE to write")
    endpoint = _endpoint(to) if to is not None else None
    stated = None if call is None else call is CallChoice.PRESENT
    try:
        report = pydicom.dcmread(sr_file)
        sr = build_assessment(
            report, [(h.side, chosen[0], stated) for h in dict.fromkeys(hip)], observer=observer
        )
    except (OnfhError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    with tempfile.TemporaryDirectory() as scratch:
        path = out.resolve() if out is not None else Path(scratch) / "assessment.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        sr.save_as(path, enforce_file_format=True)
        console.print(f"assessment SR {sr.SOPInstanceUID} written to {path}")
        if endpoint is None:
            return
        _send(path, endpoint, called_ae=ae, calling_ae=calling_ae)


def _send(path: Path, endpoint: tuple[str, int], *, called_ae: str, calling_ae: str) -> None:
    from onfh_dlr.errors import OnfhError
    from worker.scu import STORED_STATUSES, store_files

    host, port = endpoint
    try:
        statuses = store_files(
            [path], host=host, port=port, called_ae=called_ae, calling_ae=calling_ae
        )
    except OnfhError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if statuses[0] not in STORED_STATUSES:
        err_console.print(f"[red]error:[/red] C-STORE answered 0x{statuses[0] & 0xFFFF:04X}")
        raise typer.Exit(1)
    console.print(f"sent to {called_ae}@{host}:{port}")


def _verdict_record(v: RecordedVerdict) -> dict[str, Any]:
    return {
        "assessment_uid": v.assessment_uid,
        "job_id": v.job_id,
        "sr_uid": v.sr_uid,
        "hip": "left" if v.hip.side == "L" else "right",
        "verdict": v.hip.verdict.value,
        "radiologist_call": "present" if v.hip.radiologist_call else "absent",
        "model_call": "present" if v.hip.model_call else "absent",
        "agrees": v.hip.agrees,
        "model_name": v.model.name,
        "model_version": v.model.version,
        "device_uid": v.model.device_uid,
        "observer": v.observer,
        "assessed_at": datetime.fromtimestamp(v.assessed_at).astimezone().isoformat(),
    }


def _summary_record(s: ModelSummary) -> dict[str, Any]:
    def proportion(p: Any) -> dict[str, Any]:
        interval = p.interval
        return {
            "successes": p.successes,
            "total": p.total,
            "value": p.value,
            "ci95": list(interval) if interval is not None else None,
        }

    return {
        "model_name": s.model.name,
        "model_version": s.model.version,
        "device_uid": s.model.device_uid,
        "hips": s.hips,
        "counts": {k.value: n for k, n in s.counts.items()},
        "agreement": proportion(s.agreement),
        "ppv": proportion(s.ppv),
        "npv": proportion(s.npv),
    }


@feedback_app.command("export")
def export(
    as_json: Annotated[bool, typer.Option("--json", help="JSON: verdicts and summary.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: one row per verdict.")] = False,
    config: ConfigOption = None,
) -> None:
    """Print the recorded verdicts and, per model version, agreement, PPV and NPV.

    The summary counts the newest verdict of each hip; PPV is the share of hips the
    model called positive that the radiologist called positive, NPV likewise for
    negative calls, each with a Wilson 95 % interval.
    """
    from rich.table import Table

    from listener.verdicts import summarise
    from onfh_dlr.state import StateDB

    if as_json and as_csv:
        raise typer.BadParameter("give one of --json, --csv")
    settings = load_cli_settings(config)
    db = StateDB.for_settings(settings.database_url, settings.data_dir)
    try:
        verdicts = db.verdicts()
    finally:
        db.dispose()
    summaries = summarise(verdicts)
    rows = [_verdict_record(v) for v in verdicts]
    if as_json:
        out = {"verdicts": rows, "summary": [_summary_record(s) for s in summaries]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    if as_csv:
        fields = list(rows[0]) if rows else list(_VERDICT_FIELDS)
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table(title="Verdicts per model version (newest verdict per hip)")
    for heading in (
        "model",
        "version",
        "Device UID",
        "accept",
        "reject",
        "modify",
        "agreement",
        "PPV",
        "NPV",
    ):
        table.add_column(heading)
    for s in summaries:
        table.add_row(
            s.model.name,
            s.model.version,
            s.model.device_uid,
            *(str(s.counts[k]) for k in Verdict),
            s.agreement.text(),
            s.ppv.text(),
            s.npv.text(),
        )
    console.print(table)
    console.print(f"{len(rows)} verdicts recorded")


_VERDICT_FIELDS = (
    "assessment_uid",
    "job_id",
    "sr_uid",
    "hip",
    "verdict",
    "radiologist_call",
    "model_call",
    "agrees",
    "model_name",
    "model_version",
    "device_uid",
    "observer",
    "assessed_at",
)

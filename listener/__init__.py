"""The DICOM listener: receives series (C-STORE, STOW-RS), stores them durably, admits them.

This package is imported by the listener process, which must stay light: it uses
pynetdicom, pydicom, pydantic, PyYAML and (STOW-RS) Starlette, uvicorn and
python-multipart only, never torch, SimpleITK, PyRadiomics, highdicom or the model bundle.

What lives here: the SCP (``scp``: what is accepted and refused, the spool writes, the
``Listener``), its seam into pynetdicom's internals (``transport``: reactors, guards
against malformed PDUs, the association server; imported by ``scp`` only), who may
connect (``peers``: peer-address allow-list, TLS context, shared by the SCP and
STOW-RS), the STOW-RS endpoint (``dicomweb``), spool, admission rules, series tracking
and completeness, radiologists' verdicts on our results (``verdicts``,
IHE AIRA assessment SRs), the listener's status page (``status_page``) and data
retention (``retention``). It imports the kernel ``onfh_dlr`` and nothing else of the
project (never ``worker``, ``model_bundle`` or torch); only ``onfh_dlr.cli`` and tests
import it.
"""

from listener.completeness import Completeness, assess
from listener.peers import build_ssl_context
from listener.rules import Admission, AdmissionRules
from listener.scp import Intake, Listener, StoreHandler, build_ae
from listener.spool import Spool, StoredInstance, StoreResult
from listener.tracker import SeriesTracker
from listener.uids import check_uid, is_valid_uid

__all__ = [
    "Admission",
    "AdmissionRules",
    "Completeness",
    "Intake",
    "Listener",
    "SeriesTracker",
    "Spool",
    "StoreHandler",
    "StoreResult",
    "StoredInstance",
    "assess",
    "build_ae",
    "build_ssl_context",
    "check_uid",
    "is_valid_uid",
]

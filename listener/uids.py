"""DICOM UID validation: a UID from the network is checked before it becomes part of a path.

A valid UID (PS3.5 §9.1) is at most 64 characters of dot-separated components made of
digits, no component empty or with a leading zero (except the component ``0`` itself).
Such a string cannot hold ``/``, ``..`` or anything else a file system interprets, so
spool paths built from checked UIDs stay inside the spool.
"""

from __future__ import annotations

import re

from onfh_dlr.errors import InvalidUIDError

#: Longest UID PS3.5 allows.
MAX_UID_LENGTH = 64

_UID_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def _unpad(value: object) -> str:
    # UI values are padded to even length with NUL; some senders pad with a space.
    return str(value).rstrip("\x00 ")


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` (after removing trailing NUL/space padding) is a valid DICOM UID."""
    if value is None:
        return False
    text = _unpad(value)
    return 0 < len(text) <= MAX_UID_LENGTH and _UID_RE.fullmatch(text) is not None


def check_uid(value: object, name: str = "UID") -> str:
    """Return ``value`` as a valid UID string (padding removed).

    Parameters
    ----------
    value
        The value to check (``str``, ``pydicom.uid.UID``...).
    name
        What the value is (``"SOPInstanceUID"``), for the error message.

    Raises
    ------
    InvalidUIDError
        If the value is missing, empty, too long or not digits-and-dots.
    """
    if not is_valid_uid(value):
        # repr() and a cut: the value came from the network and goes into a log line.
        shown = repr(str(value)[: MAX_UID_LENGTH + 8]) if value is not None else "None"
        raise InvalidUIDError(f"{name} {shown} is not a valid DICOM UID")
    return _unpad(value)


__all__ = ["MAX_UID_LENGTH", "check_uid", "is_valid_uid"]

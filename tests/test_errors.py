"""The error tree: one base class, exported from the package, permanent or transient."""

from __future__ import annotations

import onfh_dlr
from onfh_dlr import errors
from onfh_dlr.errors import OnfhError, PermanentError, TransientError


def _defined() -> dict[str, type[OnfhError]]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, OnfhError)
    }


def test_every_error_is_exported_by_its_module_and_the_package() -> None:
    defined = _defined()
    assert set(errors.__all__) == set(defined)
    for name, cls in defined.items():
        assert getattr(onfh_dlr, name) is cls, name
        assert name in onfh_dlr.__all__, name


def test_every_error_says_whether_a_retry_can_help() -> None:
    # DemoError ends an interactive command; nothing retries it.
    unclassified = {OnfhError, PermanentError, TransientError, errors.DemoError}
    for name, cls in _defined().items():
        if cls in unclassified:
            continue
        assert issubclass(cls, PermanentError) != issubclass(cls, TransientError), name
    transient = {"StateDBError", "BrokerError", "DeliveryError", "SpoolError", "SpoolFullError"}
    assert {n for n, c in _defined().items() if issubclass(c, TransientError)} - {
        "TransientError"
    } == transient

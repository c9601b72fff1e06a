"""The project's error tree.

Every error raised on purpose by onfh-dlr derives from :class:`OnfhError`.
Third-party exceptions are translated into this tree at the boundary where they
occur. :class:`PermanentError` means "retrying will not help" (a bad study, a
bad bundle); :class:`TransientError` means "retry later" (network, broker).
"""

from __future__ import annotations


class OnfhError(Exception):
    """Base class of every error onfh-dlr raises on purpose."""


class PermanentError(OnfhError):
    """An error that a retry cannot fix (bad input, bad configuration)."""


class TransientError(OnfhError):
    """An error that may go away on retry (network, broker, busy peer)."""


class ConfigurationError(PermanentError):
    """Settings or a configuration file are invalid."""


class PhantomError(PermanentError):
    """The phantom generator was asked for something it cannot make."""


class SeriesError(PermanentError):
    """A DICOM series cannot be trusted or used (geometry, modality, size)."""


class SegmentationError(PermanentError):
    """A region of interest cannot be found or read."""


__all__ = [
    "ConfigurationError",
    "OnfhError",
    "PermanentError",
    "PhantomError",
    "SegmentationError",
    "SeriesError",
    "TransientError",
]

"""Cross-cutting pieces of onfh-dlr: settings, the error tree and the command line."""

from onfh_dlr.errors import (
    ConfigurationError,
    OnfhError,
    PermanentError,
    PhantomError,
    SegmentationError,
    SeriesError,
    TransientError,
)
from onfh_dlr.settings import Destination, Settings, load_settings

__all__ = [
    "ConfigurationError",
    "Destination",
    "OnfhError",
    "PermanentError",
    "PhantomError",
    "SegmentationError",
    "SeriesError",
    "Settings",
    "TransientError",
    "load_settings",
]

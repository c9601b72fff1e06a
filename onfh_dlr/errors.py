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


class StateDBError(TransientError):
    """The state database cannot be reached or refused a statement."""


class BrokerError(TransientError):
    """The message broker (Redis) cannot be reached."""


class DeliveryError(TransientError):
    """A destination did not accept a result (down, refused, or failed the C-STORE)."""


class PhantomError(PermanentError):
    """The phantom generator was asked for something it cannot make."""


class SeriesError(PermanentError):
    """A DICOM series cannot be trusted or used (geometry, modality, size)."""


class SegmentationError(PermanentError):
    """A region of interest cannot be found or read."""


# --- Series loading (model_bundle.imaging.series): one class per reason a series is refused,
# so the listener and the worker can record *why* without parsing messages.


class UnreadableFileError(SeriesError):
    """A DICOM file or its pixel data cannot be read (truncated, corrupt, no pixel data)."""


class MissingDecoderError(SeriesError):
    """No installed pixel-data plugin can decode the instance's transfer syntax."""


class SeriesNotFoundError(SeriesError):
    """The source holds no DICOM image instances, or none of the requested series."""


class MultipleSeriesError(SeriesError):
    """The source holds image instances of several series and none was selected."""


class MissingAttributeError(SeriesError):
    """A required identifying attribute (a UID) is missing or empty."""


class ModalityError(SeriesError):
    """The series is not MR (Modality) or not an MR image storage SOP class."""


class UnsupportedPixelDataError(SeriesError):
    """The pixel data are not single-sample greyscale (colour, or other layouts)."""


class MissingGeometryError(SeriesError):
    """Position, orientation or pixel spacing is missing or unusable."""


class ImageSizeError(SeriesError):
    """Rows, columns, slice count or pixel spacing are outside plausible bounds."""


class InconsistentSlicesError(SeriesError):
    """Slices differ in rows, columns, pixel spacing, study or frame of reference."""


class MixedOrientationError(SeriesError):
    """Slices of one series have different orientations."""


class TooFewSlicesError(SeriesError):
    """The series has too few slices to form a volume."""


class DuplicateSliceError(SeriesError):
    """Two slices (or one instance twice) sit at the same position."""


class MissingSliceError(SeriesError):
    """A gap in the stack: one slice step is about a multiple of the usual spacing."""


class UnevenSpacingError(SeriesError):
    """Slice steps differ from their median by more than the tolerance."""


class SkewedStackError(SeriesError):
    """Slice positions do not advance along the slice normal (sheared stack)."""


class ConstantImageError(SeriesError):
    """The intensities to normalise have zero (or no) variance."""


# --- SEG reading (model_bundle.imaging.seg_roi): one class per reason a DICOM-SEG is not used.


class NotASegmentationError(SegmentationError):
    """The object is not readable DICOM, or not a DICOM Segmentation."""


class SegmentationReferenceError(SegmentationError):
    """The SEG references another series, or lies in another frame of reference."""


class SegmentationGeometryError(SegmentationError):
    """A segment's frames cannot be placed on the series grid."""


class AmbiguousSegmentError(SegmentationError):
    """Several segments qualify as the femoral head of one side."""


class FemoralHeadNotFoundError(SegmentationError):
    """The SEG holds no (non-empty) femoral-head segment of either side."""


# --- Features (model_bundle.features.radiomics).


class FeatureError(PermanentError):
    """Features cannot be computed for an image and ROI, or a feature name is unknown."""


# --- Network weights (model_bundle.features.deep).


class WeightsError(PermanentError):
    """A network weights file is missing, unreadable, or does not fit the network."""


# --- Model bundles (model_bundle.bundle): one class per reason a bundle is refused.


class BundleError(PermanentError):
    """A model bundle cannot be written, or cannot be trusted and is refused.

    ``path`` is the bundle-relative file the (first) problem is about, if any;
    ``problems`` lists every problem found, one line each, file first.
    """

    def __init__(
        self, message: str, *, path: str | None = None, problems: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.path = path
        self.problems = problems or (message,)


class BundleManifestError(BundleError):
    """manifest.json is missing, not strict JSON, or fails the manifest schema."""


class BundleFormatVersionError(BundleManifestError):
    """The manifest's format_version is not one this onfh-dlr reads."""


class BundlePathError(BundleError):
    """A listed path is unsafe (absolute, '..', odd characters), or a symlink or special file."""


class BundleIntegrityError(BundleError):
    """The bundle's files do not match its manifest."""


class BundleFileMissingError(BundleIntegrityError):
    """A file the manifest lists is not in the bundle."""


class BundleFileModifiedError(BundleIntegrityError):
    """A file's size or sha256 differs from the manifest."""


class BundleExtraFileError(BundleIntegrityError):
    """The bundle holds a file its manifest does not list."""


class BundleContentError(BundleError):
    """A file's content is not what its type says (JSON, YAML or safetensors do not parse)."""


class UnsafeBundleFileError(BundleContentError):
    """A file can carry code: a pickle-capable or unknown type, or pickle-like content."""


# --- Feature selection and classifiers (model_bundle.models).


class SelectionError(PermanentError):
    """Feature selection cannot be fitted or applied, or a stored selector is invalid."""


class NoSignificantFeatureError(SelectionError):
    """No feature differs between the classes (Mann-Whitney U): there is nothing to select."""


class ClassifierError(PermanentError):
    """A classifier is unknown or cannot be fitted, or its stored parameters are invalid."""


# --- Outputs (worker.outputs): building and checking the SEG and SR sent back to the PACS.


class OutputError(PermanentError):
    """The DICOM SEG or SR of a scored study cannot be built from its inputs."""


class OutputValidationError(OutputError):
    """A built SEG or SR, read back from its bytes, does not say what was intended."""


# --- Listener (listener/): the spool, UIDs and admission rules.


class SpoolError(TransientError):
    """The spool cannot store an instance (I/O error, permissions)."""


class SpoolFullError(SpoolError):
    """The spool's file system has no space (ENOSPC) or quota (EDQUOT) left."""


class InvalidUIDError(PermanentError):
    """A value is not a valid DICOM UID (and so must never become part of a path)."""


class AdmissionRulesError(ConfigurationError):
    """The admission-rules file cannot be read or holds invalid rules."""


# --- The demo (onfh_dlr.cli.demo).


class DemoError(OnfhError):
    """The demo could not complete (service did not start, no result in time)."""


__all__ = [
    "AdmissionRulesError",
    "AmbiguousSegmentError",
    "BrokerError",
    "BundleContentError",
    "BundleError",
    "BundleExtraFileError",
    "BundleFileMissingError",
    "BundleFileModifiedError",
    "BundleFormatVersionError",
    "BundleIntegrityError",
    "BundleManifestError",
    "BundlePathError",
    "ClassifierError",
    "ConfigurationError",
    "ConstantImageError",
    "DeliveryError",
    "DemoError",
    "DuplicateSliceError",
    "FeatureError",
    "FemoralHeadNotFoundError",
    "ImageSizeError",
    "InconsistentSlicesError",
    "InvalidUIDError",
    "MissingAttributeError",
    "MissingDecoderError",
    "MissingGeometryError",
    "MissingSliceError",
    "MixedOrientationError",
    "ModalityError",
    "MultipleSeriesError",
    "NoSignificantFeatureError",
    "NotASegmentationError",
    "OnfhError",
    "OutputError",
    "OutputValidationError",
    "PermanentError",
    "PhantomError",
    "SegmentationError",
    "SegmentationGeometryError",
    "SegmentationReferenceError",
    "SelectionError",
    "SeriesError",
    "SeriesNotFoundError",
    "SkewedStackError",
    "SpoolError",
    "SpoolFullError",
    "StateDBError",
    "TooFewSlicesError",
    "TransientError",
    "UnevenSpacingError",
    "UnreadableFileError",
    "UnsafeBundleFileError",
    "UnsupportedPixelDataError",
    "WeightsError",
]

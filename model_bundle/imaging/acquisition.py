"""What a series' acquisition was: field strength, timing, slice and pixel geometry, vendor.

The values the model's reference statistics describe and the per-study input check
compares (:mod:`model_bundle.monitoring`). They are read from the headers a
:class:`~model_bundle.imaging.LoadedSeries` already keeps, so training and serving read
them from the same place the volume came from. Classic MR instances carry them at the
top level; Enhanced MR ones in functional groups (shared first, then the first frame's),
which is where they are looked for next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Final

from pydicom.dataset import Dataset

from model_bundle.imaging.series import LoadedSeries

__all__ = ["Acquisition", "AcquisitionField", "acquisition_from_dataset", "acquisition_of"]


class AcquisitionField(StrEnum):
    """One acquisition parameter the reference describes (value: its JSON key)."""

    FIELD_STRENGTH = "field_strength"
    ECHO_TIME = "echo_time"
    REPETITION_TIME = "repetition_time"
    INVERSION_TIME = "inversion_time"
    SLICE_THICKNESS = "slice_thickness"
    PIXEL_SPACING_ROW = "pixel_spacing_row"
    PIXEL_SPACING_COLUMN = "pixel_spacing_column"
    ROWS = "rows"
    COLUMNS = "columns"
    MANUFACTURER = "manufacturer"

    @property
    def label(self) -> str:
        """How a person names it ("field strength")."""
        return _LABELS[self][0]

    @property
    def unit(self) -> str:
        """Its unit as written after a value ("T", "ms", "mm"; empty for counts and text)."""
        return _LABELS[self][1]

    @property
    def categorical(self) -> bool:
        """Whether its values are categories (compared as a set), not numbers."""
        return self is AcquisitionField.MANUFACTURER


_LABELS: Final[Mapping[AcquisitionField, tuple[str, str]]] = {
    AcquisitionField.FIELD_STRENGTH: ("field strength", "T"),
    AcquisitionField.ECHO_TIME: ("echo time", "ms"),
    AcquisitionField.REPETITION_TIME: ("repetition time", "ms"),
    AcquisitionField.INVERSION_TIME: ("inversion time", "ms"),
    AcquisitionField.SLICE_THICKNESS: ("slice thickness", "mm"),
    AcquisitionField.PIXEL_SPACING_ROW: ("pixel spacing (between rows)", "mm"),
    AcquisitionField.PIXEL_SPACING_COLUMN: ("pixel spacing (between columns)", "mm"),
    AcquisitionField.ROWS: ("matrix rows", ""),
    AcquisitionField.COLUMNS: ("matrix columns", ""),
    AcquisitionField.MANUFACTURER: ("manufacturer", ""),
}


@dataclass(frozen=True)
class Acquisition:
    """One series' acquisition; ``None`` where the headers do not say.

    Attributes
    ----------
    field_strength
        Magnetic Field Strength (T).
    echo_time, repetition_time, inversion_time
        Effective echo time, repetition time and inversion time (ms).
    slice_thickness
        Slice Thickness (mm).
    pixel_spacing_row, pixel_spacing_column
        Pixel Spacing: between rows, between columns (mm).
    rows, columns
        The image matrix.
    manufacturer
        Manufacturer, as the scanner writes it.
    """

    field_strength: float | None = None
    echo_time: float | None = None
    repetition_time: float | None = None
    inversion_time: float | None = None
    slice_thickness: float | None = None
    pixel_spacing_row: float | None = None
    pixel_spacing_column: float | None = None
    rows: float | None = None
    columns: float | None = None
    manufacturer: str | None = None

    def numeric(self) -> dict[AcquisitionField, float | None]:
        """The numeric parameters by field."""
        return {f: getattr(self, f.value) for f in AcquisitionField if not f.categorical}

    def categorical(self) -> dict[AcquisitionField, str | None]:
        """The categorical parameters by field."""
        return {f: getattr(self, f.value) for f in AcquisitionField if f.categorical}

    def to_json(self) -> dict[str, float | str | None]:
        """A JSON object (what the feature cache stores)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, value: object) -> Acquisition:
        """Read :meth:`to_json`'s object back.

        Raises
        ------
        ValueError
            Not an object of this class' fields with numbers (or text) or nulls.
        """
        if not isinstance(value, dict) or set(value) != {f.name for f in fields(cls)}:
            raise ValueError(f"not an acquisition: {value!r}")
        out: dict[str, float | str | None] = {}
        for field in AcquisitionField:
            item = value[field.value]
            if item is None:
                out[field.value] = None
            elif field.categorical and isinstance(item, str):
                out[field.value] = item
            elif (
                not field.categorical
                and isinstance(item, int | float)
                and not isinstance(item, bool)
                and math.isfinite(item)
            ):
                out[field.value] = float(item)
            else:
                raise ValueError(f"acquisition {field.value}: not a valid value: {item!r}")
        return cls(**out)  # type: ignore[arg-type]


def _number(value: object, index: int = 0) -> float | None:
    """A DS/IS/FD value (or the ``index``-th of a multi-valued one) as a float."""
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        items = list(value)  # type: ignore[call-overload]
        if len(items) <= index:
            return None
        value = items[index]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _functional(ds: Dataset, sequence: str, keyword: str) -> object:
    """``keyword`` inside functional group ``sequence``: shared groups, else frame 1's."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        outer = ds.get(groups)
        if not outer:
            continue
        item = outer[0].get(sequence)
        if item:
            value = item[0].get(keyword)
            if value is not None and value != "":
                return value
    return None


def _first(ds: Dataset, keyword: str, sequence: str, nested: str, index: int = 0) -> float | None:
    top = _number(ds.get(keyword), index)
    return top if top is not None else _number(_functional(ds, sequence, nested), index)


def acquisition_from_dataset(ds: Dataset) -> Acquisition:
    """The acquisition an MR instance's header states (classic or Enhanced MR).

    Parameters
    ----------
    ds
        One instance's header (pixel data need not be there).

    Returns
    -------
    Acquisition
        ``None`` for each value the header does not state.
    """
    manufacturer = ds.get("Manufacturer")
    text = str(manufacturer).strip() if manufacturer is not None else ""
    return Acquisition(
        field_strength=_number(ds.get("MagneticFieldStrength")),
        echo_time=_first(ds, "EchoTime", "MREchoSequence", "EffectiveEchoTime"),
        repetition_time=_first(
            ds, "RepetitionTime", "MRTimingAndRelatedParametersSequence", "RepetitionTime"
        ),
        inversion_time=_first(ds, "InversionTime", "MRModifierSequence", "InversionTimes"),
        slice_thickness=_first(ds, "SliceThickness", "PixelMeasuresSequence", "SliceThickness"),
        pixel_spacing_row=_first(ds, "PixelSpacing", "PixelMeasuresSequence", "PixelSpacing", 0),
        pixel_spacing_column=_first(ds, "PixelSpacing", "PixelMeasuresSequence", "PixelSpacing", 1),
        rows=_number(ds.get("Rows")),
        columns=_number(ds.get("Columns")),
        manufacturer=text or None,
    )


def acquisition_of(series: LoadedSeries) -> Acquisition:
    """The acquisition of a loaded series, from its first instance's header.

    A series is one acquisition: the loader has already refused series whose slices
    disagree in orientation or pixel spacing, and the other parameters are per series.
    """
    return acquisition_from_dataset(series.datasets[0])

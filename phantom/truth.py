"""Ground truth read back from a phantom study: where each SEG segment lies and how big it is."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom


def segment_centroids(
    seg: hd.seg.Segmentation, series: list[pydicom.Dataset]
) -> dict[str, tuple[float, ...]]:
    """Centroid (patient mm) and volume (ml) of each segment of ``seg`` on ``series``' grid."""
    series = sorted(series, key=lambda ds: int(ds.InstanceNumber))
    uids = [ds.SOPInstanceUID for ds in series]
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=list(seg.segment_numbers),
        assert_missing_frames_are_empty=True,
    )
    first = series[0]
    row_dir = np.array(first.ImageOrientationPatient[:3], dtype=float)
    col_dir = np.array(first.ImageOrientationPatient[3:], dtype=float)
    dr, dc = (float(v) for v in first.PixelSpacing)
    out: dict[str, tuple[float, ...]] = {}
    for i, number in enumerate(seg.segment_numbers):
        k, r, c = np.nonzero(masks[..., i])
        if len(k) == 0:
            continue
        origins = np.array([series[j].ImagePositionPatient for j in k], dtype=float)
        points = origins + r[:, None] * dr * col_dir + c[:, None] * dc * row_dir
        spacing = float(first.SpacingBetweenSlices)
        label = seg.get_segment_description(number).segment_label
        out[label] = (*points.mean(axis=0), len(k) * dr * dc * spacing / 1000.0)
    return out


__all__ = ["segment_centroids"]
